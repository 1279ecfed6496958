// TLS, mutual TLS and the bearer token: accept and reject cases, with certificates generated at
// test time by the openssl command-line tool.
#include <cstdlib>
#include <fstream>
#include <sstream>

#include "absl/strings/str_cat.h"
#include "gmock/gmock.h"
#include "grpc/health/v1/health.grpc.pb.h"
#include "gtest/gtest.h"
#include "worker_harness.h"

namespace atp::service::testing {
namespace {

using ::testing::HasSubstr;

std::string ReadAll(const std::string& path) {
  std::ifstream in(path);
  std::stringstream s;
  s << in.rdbuf();
  return s.str();
}

class SecurityTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    dir_ = new std::string(absl::StrCat(::testing::TempDir(), "/atp-security-", ::getpid()));
    const std::string d = *dir_;
    const std::string ec = "-newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes";
    const std::string script = absl::StrCat(
        "set -e; mkdir -p ", d, "; cd ", d, "\n", "openssl req -x509 ", ec,
        " -keyout ca.key -out ca.pem -days 2 -subj '/CN=atp test CA'\n", "openssl req -x509 ", ec,
        " -keyout rogue.key -out rogue.pem -days 2 -subj '/CN=rogue'\n",
        "printf 'subjectAltName=DNS:localhost,IP:127.0.0.1\\n' > san.ext\n", "openssl req ", ec,
        " -keyout server.key -out server.csr -subj '/CN=localhost'\n",
        "openssl x509 -req -in server.csr -CA ca.pem -CAkey ca.key -CAcreateserial -days 2 ",
        "-extfile san.ext -out server.pem\n", "openssl req ", ec,
        " -keyout client.key -out client.csr -subj '/CN=client'\n",
        "openssl x509 -req -in client.csr -CA ca.pem -CAkey ca.key -CAcreateserial -days 2 ",
        "-out client.pem\n", "openssl req ", ec,
        " -keyout evil.key -out evil.csr -subj '/CN=evil'\n",
        "openssl x509 -req -in evil.csr -CA rogue.pem -CAkey rogue.key -CAcreateserial -days 2 ",
        "-out evil.pem\n", "printf 'sesame-42\\n' > token\n");
    const std::string path = absl::StrCat(d, ".sh");
    std::ofstream(path) << script;
    ASSERT_EQ(std::system(absl::StrCat("bash ", path, " >", d, ".log 2>&1").c_str()), 0)
        << ReadAll(absl::StrCat(d, ".log"));
  }

  static std::string File(const std::string& name) { return absl::StrCat(*dir_, "/", name); }

  static WorkerOptions TlsOptions(bool mutual) {
    WorkerOptions o = LoopbackOptions();
    o.tls_cert = File("server.pem");
    o.tls_key = File("server.key");
    if (mutual) o.tls_client_ca = File("ca.pem");
    return o;
  }

  // A stub over TLS that trusts `root` and presents `client` (a name in the directory) if set.
  static std::unique_ptr<atp::v1::Worker::Stub> TlsStub(int port, const std::string& root,
                                                        const std::string& client = "") {
    grpc::SslCredentialsOptions ssl;
    ssl.pem_root_certs = ReadAll(File(root));
    if (!client.empty()) {
      ssl.pem_cert_chain = ReadAll(File(client + ".pem"));
      ssl.pem_private_key = ReadAll(File(client + ".key"));
    }
    grpc::ChannelArguments args;
    args.SetSslTargetNameOverride("localhost");
    auto channel = grpc::CreateCustomChannel(absl::StrCat("127.0.0.1:", port),
                                             grpc::SslCredentials(ssl), args);
    return atp::v1::Worker::NewStub(channel);
  }

  static std::unique_ptr<atp::v1::Worker::Stub> PlainStub(int port) {
    return atp::v1::Worker::NewStub(
        grpc::CreateChannel(absl::StrCat("127.0.0.1:", port), grpc::InsecureChannelCredentials()));
  }

  static grpc::Status Info(atp::v1::Worker::Stub& stub, const std::string& token = "",
                           atp::v1::ServerInfo* out = nullptr) {
    grpc::ClientContext context;
    Prepare(&context, absl::Seconds(10), token);
    atp::v1::ServerInfo info;
    grpc::Status s = stub.GetServerInfo(&context, {}, &info);
    if (out != nullptr) *out = info;
    return s;
  }

  static std::string* dir_;
};

std::string* SecurityTest::dir_ = nullptr;

TEST_F(SecurityTest, TlsServesClientsThatTrustItsCaAndRefusesOthers) {
  auto worker = TestWorker::Start(TlsOptions(/*mutual=*/false));
  ASSERT_NE(worker, nullptr);
  const int port = worker->server().port();
  auto good = TlsStub(port, "ca.pem");
  EXPECT_TRUE(Info(*good).ok());
  const kernels::Tensor x = RandomTensor(kernels::DType::kF32, {8, 4}, 1);
  auto got = RunOne(*good, DecomposeRequest(1, x, 2), {&x});
  ASSERT_TRUE(got.ok()) << got.status();
  EXPECT_TRUE(got->status.ok());

  EXPECT_EQ(Info(*PlainStub(port)).error_code(), grpc::StatusCode::UNAVAILABLE);
  EXPECT_EQ(Info(*TlsStub(port, "rogue.pem")).error_code(), grpc::StatusCode::UNAVAILABLE);
}

TEST_F(SecurityTest, MutualTlsRequiresAClientCertificateSignedByTheClientCa) {
  auto worker = TestWorker::Start(TlsOptions(/*mutual=*/true));
  ASSERT_NE(worker, nullptr);
  const int port = worker->server().port();
  EXPECT_TRUE(Info(*TlsStub(port, "ca.pem", "client")).ok());
  EXPECT_EQ(Info(*TlsStub(port, "ca.pem")).error_code(), grpc::StatusCode::UNAVAILABLE);
  EXPECT_EQ(Info(*TlsStub(port, "ca.pem", "evil")).error_code(), grpc::StatusCode::UNAVAILABLE);
  EXPECT_EQ(Info(*PlainStub(port)).error_code(), grpc::StatusCode::UNAVAILABLE);
}

TEST_F(SecurityTest, BearerTokenIsRequiredOnEveryWorkerMethodBeforeAnyPayload) {
  WorkerOptions o = LoopbackOptions();
  o.token_file = File("token");
  o.health_listen = "127.0.0.1:0";
  auto worker = TestWorker::Start(o);
  ASSERT_NE(worker, nullptr);
  auto& stub = worker->stub();

  atp::v1::ServerInfo info;
  ASSERT_TRUE(Info(stub, "sesame-42", &info).ok());
  EXPECT_TRUE(info.requires_token());
  grpc::Status missing = Info(stub);
  EXPECT_EQ(missing.error_code(), grpc::StatusCode::UNAUTHENTICATED);
  EXPECT_THAT(missing.error_message(), HasSubstr("missing"));
  EXPECT_EQ(Info(stub, "sesame-43").error_code(), grpc::StatusCode::UNAUTHENTICATED);

  for (const char* method : {"/atp.v1.Worker/ListLayers", "/atp.v1.Worker/RemoveLayer",
                             "/atp.v1.Worker/GetStatistics"}) {
    EXPECT_EQ(CallWithBytes(worker->channel(), method, "", false).status.error_code(),
              grpc::StatusCode::UNAUTHENTICATED)
        << method;
  }
  const auto spec = RandomLinearLayer(4, 4, false, 2);
  EXPECT_EQ(RegisterLayer(stub, "lin", spec).status().code(), absl::StatusCode::kUnauthenticated);
  ASSERT_TRUE(RegisterLayer(stub, "lin", spec, {.token = "sesame-42"}).ok());

  // A Compute stream without the token ends before its payload is read.
  const kernels::Tensor x = RandomTensor(kernels::DType::kF32, {64, 64}, 3);
  {
    ComputeSession session(stub, absl::Seconds(10));
    session.SendRequest(DecomposeRequest(1, x, 2), {&x}, 1024);
    EXPECT_FALSE(session.Read().ok());
    EXPECT_EQ(session.Finish().error_code(), grpc::StatusCode::UNAUTHENTICATED);
  }
  {
    ComputeSession session(stub, absl::Seconds(10), "sesame-42");
    ASSERT_TRUE(session.SendRequest(DecomposeRequest(2, x, 2), {&x}));
    auto got = session.Read();
    ASSERT_TRUE(got.ok());
    EXPECT_TRUE(got->status.ok());
  }
  grpc::ClientContext context;
  Prepare(&context, absl::Seconds(10), "sesame-42");
  atp::v1::Statistics stats;
  ASSERT_TRUE(stub.GetStatistics(&context, {}, &stats).ok());
  for (const auto& op : stats.ops()) {
    if (op.op() == "decompose") {
      EXPECT_EQ(op.bytes_in(), x.byte_size());  // one request only
    }
  }

  // Health needs no token, on the API port and on the probe port (Kubernetes sends none).
  for (int port : {worker->server().port(), worker->server().health_port()}) {
    auto health = grpc::health::v1::Health::NewStub(
        grpc::CreateChannel(absl::StrCat("127.0.0.1:", port), grpc::InsecureChannelCredentials()));
    grpc::ClientContext hc;
    Prepare(&hc, absl::Seconds(10));
    grpc::health::v1::HealthCheckRequest req;
    req.set_service("atp.v1.Worker");
    grpc::health::v1::HealthCheckResponse resp;
    ASSERT_TRUE(health->Check(&hc, req, &resp).ok());
    EXPECT_EQ(resp.status(), grpc::health::v1::HealthCheckResponse::SERVING);
  }
}

TEST_F(SecurityTest, TlsWorkerServesPlaintextHealthOnTheProbeListener) {
  WorkerOptions o = TlsOptions(/*mutual=*/true);
  o.health_listen = "127.0.0.1:0";
  auto worker = TestWorker::Start(o);
  ASSERT_NE(worker, nullptr);
  auto health = grpc::health::v1::Health::NewStub(
      grpc::CreateChannel(absl::StrCat("127.0.0.1:", worker->server().health_port()),
                          grpc::InsecureChannelCredentials()));
  grpc::ClientContext context;
  Prepare(&context, absl::Seconds(10));
  grpc::health::v1::HealthCheckRequest req;
  grpc::health::v1::HealthCheckResponse resp;
  ASSERT_TRUE(health->Check(&context, req, &resp).ok());
  EXPECT_EQ(resp.status(), grpc::health::v1::HealthCheckResponse::SERVING);
}

TEST_F(SecurityTest, UnusableTlsAndTokenFilesStopTheStartNamingTheFlag) {
  WorkerOptions o = TlsOptions(false);
  o.tls_key = "";
  EXPECT_THAT(WorkerServer::Start(o).status().message(),
              HasSubstr("--tls-cert and --tls-key must be given together"));
  o = TlsOptions(false);
  o.tls_key = File("client.key");
  EXPECT_THAT(WorkerServer::Start(o).status().message(), HasSubstr("is not the key of --tls-cert"));
  o = TlsOptions(false);
  o.tls_cert = File("missing.pem");
  EXPECT_THAT(WorkerServer::Start(o).status().message(), HasSubstr("cannot read --tls-cert file"));
  o = TlsOptions(false);
  o.tls_cert = File("token");
  EXPECT_THAT(WorkerServer::Start(o).status().message(), HasSubstr("holds no PEM certificate"));
  o = LoopbackOptions();
  o.tls_client_ca = File("ca.pem");
  EXPECT_THAT(WorkerServer::Start(o).status().message(), HasSubstr("needs --tls-cert"));
  o = LoopbackOptions();
  o.token_file = File("no-token-here");
  EXPECT_THAT(WorkerServer::Start(o).status().message(), HasSubstr("cannot read token file"));
}

}  // namespace
}  // namespace atp::service::testing
