#include "cli.h"

#include <chrono>
#include <cstdio>
#include <exception>
#include <functional>
#include <limits>
#include <new>
#include <optional>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_replace.h"
#include "args.h"
#include "atp/cli/layer_file.h"
#include "atp/cli/npy.h"
#include "atp/kernels/backend.h"
#include "executor.h"
#include "generate.h"
#include "worker_commands.h"

namespace atp::cli {
namespace {

using kernels::DType;
using kernels::LayerSpec;
using kernels::RankPolicy;
using kernels::Tensor;

constexpr int64_t kMaxRankArg = int64_t{1} << 40;
constexpr int64_t kMaxSeed = std::numeric_limits<int64_t>::max();

constexpr char kTopHelp[] =
    R"(atp - ATP attention ("attention on top principal keys") from the command line

Usage:
  atp run <op> [options]          compute one op on files
  atp generate <what> [options]   write a random layer or input, for demos and tests
  atp info --target HOST:PORT     an atp worker's server info and limits
  atp health --target HOST:PORT   exit 0 only when an atp worker is ready
  atp <command> --help            every option of a command
  atp --version

Ops (atp run):
  atp-attention     ATP attention of an attention layer on one sequence
  exact-attention   exact softmax attention over all keys, optionally causal
  lowrank-linear    one linear map of a layer applied through a low-rank factorisation of the input
  decompose         the principal bases of an input (top-r SVD with the sign rule)

Generators (atp generate):
  layer             a random attention layer (.safetensors)
  linear            a random linear layer (.safetensors)
  input             a random input sequence with low-rank structure (.npy)

Files:
  Tensors are .npy files holding float32 or float16 in C order. A layer is a .safetensors file
  (F32, F16 or BF16 tensors): q_proj.weight, k_proj.weight, v_proj.weight, o_proj.weight and
  optionally the .bias of each for an attention layer, or weight and optionally bias for a linear
  layer; weights are [out_features, in_features] as in PyTorch. Its __metadata__ holds num_heads,
  num_kv_heads (default num_heads), head_dim (default rows of q_proj.weight / num_heads), key_scale
  (none or inv_sqrt_len; default none) and optionally scale and default_rank ("energy 0.99").

Output:
  atp run prints one line of key=value pairs, for example
    rank=64 energy=0.973100 shape=[512,256] dtype=f32 compute_ms=3.104 output=Y.npy
  (rank and energy where a decomposition is made; compute_ms includes loading the layer).

Remote:
  Every `atp run` op takes --target HOST:PORT (with --tls-ca FILE, --token-file FILE) to compute on
  an atp-worker instead of in-process; on the same backend the result is the same bit for bit.

Exit status: 0 on success, 1 when the work fails (a bad file, a failed computation), 2 for a bad
command line. Errors are one line on stderr.

Example:
  atp generate layer --d-model 256 --heads 8 --kv-heads 2 --output layer.safetensors
  atp generate input --length 1024 --d-model 256 --output x.npy
  atp run atp-attention --layer layer.safetensors --input x.npy --rank-energy 0.95 --output y.npy
)";

constexpr char kRunHelp[] = R"(atp run - compute one op on files

Usage:
  atp run <op> [options]

Ops:
  atp-attention     ATP attention of an attention layer on one sequence
  exact-attention   exact softmax attention over all keys, optionally causal
  lowrank-linear    one linear map of a layer applied through a low-rank factorisation of the input
  decompose         the principal bases of an input (top-r SVD with the sign rule)

`atp run <op> --help` lists the options of an op.
)";

constexpr char kGenerateHelp[] =
    R"(atp generate - write random layers and inputs for demos and tests

Usage:
  atp generate <what> [options]

What:
  layer             a random attention layer (.safetensors)
  linear            a random linear layer (.safetensors)
  input             a random input sequence with low-rank structure (.npy)

`atp generate <what> --help` lists the options. The same options and seed give the same file.
)";

// Where a command writes: results to `out`, progress (only when `interactive`) to `err`.
struct Io {
  std::ostream& out;
  std::ostream& err;
  bool interactive;
};

// Elapsed time of a long computation on one line of an interactive stderr, redrawn at most ten
// times a second from the backend's between-steps checks, and erased when done. Shows nothing for
// computations under half a second or when stderr is not a terminal.
class ProgressLine {
 public:
  ProgressLine(const Io& io, std::string label)
      : err_(io.interactive ? &io.err : nullptr), label_(std::move(label)) {}
  ProgressLine(const ProgressLine&) = delete;
  ProgressLine& operator=(const ProgressLine&) = delete;
  ~ProgressLine() { Done(); }

  // Erases the line; call before printing results to the same terminal.
  void Done() {
    if (shown_) *err_ << "\r\033[K" << std::flush;
    shown_ = false;
    err_ = nullptr;
  }

  // For ExecutorOptions::on_step; `this` must outlive the executor's calls.
  std::function<void()> Callback() {
    if (err_ == nullptr) return nullptr;
    return [this]() { Tick(); };
  }

 private:
  void Tick() {
    const auto now = std::chrono::steady_clock::now();
    const double seconds = std::chrono::duration<double>(now - start_).count();
    if (err_ == nullptr || seconds < 0.5 || now - last_ < std::chrono::milliseconds(100)) return;
    last_ = now;
    char buf[32];
    std::snprintf(buf, sizeof buf, "%.1f s", seconds);
    *err_ << "\ratp: " << label_ << " ... " << buf << std::flush;
    shown_ = true;
  }

  std::ostream* err_;
  std::string label_;
  const std::chrono::steady_clock::time_point start_ = std::chrono::steady_clock::now();
  std::chrono::steady_clock::time_point last_;
  bool shown_ = false;
};

// ---------------------------------------------------------------------------------------------
// Shared option groups.

void AddRankOptions(ArgParser& p, absl::string_view default_text) {
  p.AddSection(absl::StrCat("Rank (at most one of --rank, --rank-fraction, --rank-energy; default ",
                            default_text, "):"));
  p.AddOption("rank", "N", "keep exactly N principal bases (clipped to min(L, d))");
  p.AddOption("rank-fraction", "F", "keep ceil(F*L) bases, 0<F<=1");
  p.AddOption("rank-energy", "T",
              "keep the fewest bases whose energy sum(s_i^2) reaches T*||X||_F^2, 0<T<=1");
  p.AddOption("max-rank", "N", "never keep more than N bases");
  p.AddOption("seed", "S", "seed of the randomized basis used for large inputs");
}

// The explicit rank policy of the command line (without --max-rank), or nullopt for none.
absl::StatusOr<std::optional<RankPolicy>> ExplicitRankPolicy(const ArgParser& p) {
  std::vector<std::string> given;
  for (const char* name : {"rank", "rank-fraction", "rank-energy"}) {
    if (p.Has(name)) given.push_back(absl::StrCat("--", name));
  }
  if (given.size() > 1) {
    return p.Error(absl::StrCat(absl::StrJoin(given, " and "), " conflict, give at most one"));
  }
  if (p.Has("rank")) {
    absl::StatusOr<int64_t> r = p.GetInt("rank", 0, 1, kMaxRankArg);
    if (!r.ok()) return r.status();
    return RankPolicy::Fixed(*r);
  }
  if (p.Has("rank-fraction")) {
    absl::StatusOr<double> f = p.GetDouble("rank-fraction", 0, 0, 1, false);
    if (!f.ok()) return f.status();
    return RankPolicy::Fraction(*f);
  }
  if (p.Has("rank-energy")) {
    absl::StatusOr<double> t = p.GetDouble("rank-energy", 0, 0, 1, false);
    if (!t.ok()) return t.status();
    return RankPolicy::Energy(*t);
  }
  return std::optional<RankPolicy>();
}

// The rank options of a command: the policy to send (nullopt = the layer's default), with
// --max-rank applied to the explicit policy or, without one, to `layer_default`.
struct RankOptions {
  std::optional<RankPolicy> policy;
  std::optional<uint64_t> seed;
};

absl::StatusOr<RankOptions> ParseRankOptions(const ArgParser& p, const RankPolicy& layer_default) {
  RankOptions options;
  absl::StatusOr<std::optional<RankPolicy>> policy = ExplicitRankPolicy(p);
  if (!policy.ok()) return policy.status();
  absl::StatusOr<int64_t> max_rank = p.GetInt("max-rank", 0, 1, kMaxRankArg);
  if (!max_rank.ok()) return max_rank.status();
  options.policy = *policy;
  if (*max_rank > 0) {
    if (!options.policy.has_value()) options.policy = layer_default;
    options.policy->max_rank = *max_rank;
  }
  if (p.Has("seed")) {
    absl::StatusOr<int64_t> seed = p.GetInt("seed", 0, 0, kMaxSeed);
    if (!seed.ok()) return seed.status();
    options.seed = static_cast<uint64_t>(*seed);
  }
  return options;
}

void AddExecutionOptions(ArgParser& p) {
  p.AddSection("Execution:");
  p.AddOption("backend", "KIND",
              "cpu (default), cuda, or auto (cuda when a device is usable, else cpu)");
  AddRemoteOptions(p, /*for_run=*/true);
}

absl::StatusOr<ExecutorOptions> ParseExecutionOptions(const ArgParser& p) {
  ExecutorOptions options;
  absl::StatusOr<std::string> backend = p.GetChoice("backend", "cpu", {"cpu", "cuda", "auto"});
  if (!backend.ok()) return backend.status();
  options.backend = *backend;
  absl::StatusOr<RemoteOptions> remote = ParseRemoteOptions(p);
  if (!remote.ok()) return remote.status();
  if (!remote->target.empty() && p.Has("backend")) {
    return p.Error("--backend applies to local runs: with --target the worker's backend computes");
  }
  options.target = remote->target;
  options.tls_ca = remote->tls_ca;
  options.tls_server_name = remote->tls_server_name;
  options.token_file = remote->token_file;
  options.timeout = remote->timeout;
  return options;
}

void AddOutputDTypeOption(ArgParser& p) {
  p.AddOption("output-dtype", "T", "f32 (default) or f16: the dtype of the written .npy files");
}

absl::StatusOr<DType> ParseOutputDType(const ArgParser& p) {
  absl::StatusOr<std::string> name = p.GetChoice("output-dtype", "f32", {"f32", "f16"});
  if (!name.ok()) return name.status();
  return *name == "f16" ? DType::kF16 : DType::kF32;
}

// ---------------------------------------------------------------------------------------------
// Files.

absl::StatusOr<LayerSpec> LoadLayer(const std::string& path, LayerSpec::Kind want) {
  absl::StatusOr<LayerSpec> layer = ReadLayerFile(path);
  if (!layer.ok()) return layer.status();
  if (want == LayerSpec::Kind::kAttention && layer->kind != LayerSpec::Kind::kAttention) {
    return absl::InvalidArgumentError(absl::StrCat(
        path,
        " is a linear layer (weight, bias), want an attention layer (q_proj, k_proj, v_proj, "
        "o_proj)"));
  }
  return layer;
}

// Reads a sequence [L, d] from `path`; `want_width` > 0 also checks d.
absl::StatusOr<Tensor> LoadSequence(const std::string& path, int64_t want_width,
                                    absl::string_view width_source) {
  absl::StatusOr<Tensor> x = ReadNpy(path);
  if (!x.ok()) return x.status();
  if (x->rank() != 2 || x->dim(0) < 1 || x->dim(1) < 1) {
    return absl::InvalidArgumentError(absl::StrCat(
        path, " has shape ", kernels::ShapeString(x->shape()), ", want a sequence [L, ",
        want_width > 0 ? absl::StrCat(want_width) : std::string("d"), "] with L, d >= 1"));
  }
  if (want_width > 0 && x->dim(1) != want_width) {
    return absl::InvalidArgumentError(
        absl::StrCat(path, " has shape ", kernels::ShapeString(x->shape()), ", want [", x->dim(0),
                     ",", want_width, "] (", width_source, ")"));
  }
  if (auto s = kernels::CheckFinite(x->view(), path); !s.ok()) return s;
  return x;
}

// ---------------------------------------------------------------------------------------------
// Result lines.

double MillisecondsSince(std::chrono::steady_clock::time_point start) {
  return std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - start)
      .count();
}

std::string Fixed(double v, int digits) {
  char buf[64];
  std::snprintf(buf, sizeof buf, "%.*f", digits, v);
  return buf;
}

std::string RankFields(int64_t rank, double energy) {
  return absl::StrCat("rank=", rank, " energy=", Fixed(energy, 6), " ");
}

std::string TensorFields(const Tensor& t) {
  return absl::StrCat("shape=", kernels::ShapeString(t.shape()),
                      " dtype=", kernels::DTypeName(t.dtype()));
}

// Converts a result to the requested dtype if the backend returned another one.
Tensor AsDType(Tensor t, DType dtype) {
  if (t.dtype() == dtype) return t;
  return Tensor::CopyOf(t.view(), dtype);
}

// ---------------------------------------------------------------------------------------------
// atp run <op>.

void DeclareAtpAttention(ArgParser& p) {
  p.AddUsage("--layer L.safetensors --input X.npy [rank options] --output Y.npy");
  p.AddOption("layer", "FILE", "attention layer (.safetensors) (required)");
  p.AddOption("input", "FILE", "input sequence X [L, d_model] (.npy) (required)");
  p.AddOption("output", "FILE", "where to write Y [L, d_model] (.npy) (required)");
  AddOutputDTypeOption(p);
  AddRankOptions(p, "the layer's default_rank, energy 0.99 unless the file sets it");
  AddExecutionOptions(p);
  p.AddNotes(
      "Computes Y = concat_h softmax(s Q_h K~_g^T) V~_g W_O^T + b_O with Q from every token and "
      "K~, "
      "V~ from the r principal tokens c U_r^T X (DESIGN.md section 1). Prints rank, captured "
      "energy, output shape and time.");
}

absl::Status RunAtpAttention(const ArgParser& p, const Io& io) {
  std::ostream& out = io.out;
  absl::StatusOr<std::string> layer_path = p.GetRequired("layer");
  if (!layer_path.ok()) return layer_path.status();
  absl::StatusOr<std::string> input_path = p.GetRequired("input");
  if (!input_path.ok()) return input_path.status();
  absl::StatusOr<std::string> output_path = p.GetRequired("output");
  if (!output_path.ok()) return output_path.status();
  absl::StatusOr<DType> output_dtype = ParseOutputDType(p);
  if (!output_dtype.ok()) return output_dtype.status();
  // Rank options are checked before any file is read; the layer default is known only later.
  if (auto s = ParseRankOptions(p, RankPolicy()).status(); !s.ok()) return s;
  absl::StatusOr<ExecutorOptions> exec_options = ParseExecutionOptions(p);
  if (!exec_options.ok()) return exec_options.status();

  absl::StatusOr<LayerSpec> layer = LoadLayer(*layer_path, LayerSpec::Kind::kAttention);
  if (!layer.ok()) return layer.status();
  absl::StatusOr<RankOptions> rank = ParseRankOptions(p, layer->attention.default_rank);
  if (!rank.ok()) return rank.status();
  absl::StatusOr<Tensor> x =
      LoadSequence(*input_path, layer->attention.d_model, absl::StrCat("d_model of ", *layer_path));
  if (!x.ok()) return x.status();
  ProgressLine progress(io, absl::StrCat("atp-attention of ", kernels::ShapeString(x->shape())));
  exec_options->on_step = progress.Callback();
  absl::StatusOr<std::unique_ptr<Executor>> executor = CreateExecutor(*exec_options);
  if (!executor.ok()) return executor.status();

  kernels::AtpAttentionArgs args;
  args.x = x->view();
  args.rank = rank->policy;
  if (rank->seed.has_value()) args.seed = *rank->seed;
  args.output_dtype = *output_dtype;
  const auto start = std::chrono::steady_clock::now();
  absl::StatusOr<kernels::AtpAttentionResult> result =
      (*executor)->AtpAttention(*std::move(layer), args);
  const double ms = MillisecondsSince(start);
  progress.Done();
  if (!result.ok()) return result.status();
  Tensor y = AsDType(std::move(result->y), *output_dtype);
  if (auto s = WriteNpy(*output_path, y.view()); !s.ok()) return s;
  out << RankFields(result->rank, result->captured_energy) << TensorFields(y)
      << " compute_ms=" << Fixed(ms, 3) << " output=" << *output_path << "\n";
  return absl::OkStatus();
}

void DeclareExactAttention(ArgParser& p) {
  p.AddUsage("--layer L.safetensors --input X.npy [--causal] --output Y.npy");
  p.AddOption("layer", "FILE", "attention layer (.safetensors) (required)");
  p.AddOption("input", "FILE", "input sequence X [L, d_model] (.npy) (required)");
  p.AddOption("output", "FILE", "where to write Y [L, d_model] (.npy) (required)");
  p.AddFlag("causal", "token i attends to tokens 0..i only");
  AddOutputDTypeOption(p);
  AddExecutionOptions(p);
  p.AddNotes(
      "Exact softmax attention over all L keys of the same layer: the reference ATP attention "
      "approximates, and what causal layers use.");
}

absl::Status RunExactAttention(const ArgParser& p, const Io& io) {
  std::ostream& out = io.out;
  absl::StatusOr<std::string> layer_path = p.GetRequired("layer");
  if (!layer_path.ok()) return layer_path.status();
  absl::StatusOr<std::string> input_path = p.GetRequired("input");
  if (!input_path.ok()) return input_path.status();
  absl::StatusOr<std::string> output_path = p.GetRequired("output");
  if (!output_path.ok()) return output_path.status();
  absl::StatusOr<DType> output_dtype = ParseOutputDType(p);
  if (!output_dtype.ok()) return output_dtype.status();
  absl::StatusOr<ExecutorOptions> exec_options = ParseExecutionOptions(p);
  if (!exec_options.ok()) return exec_options.status();

  absl::StatusOr<LayerSpec> layer = LoadLayer(*layer_path, LayerSpec::Kind::kAttention);
  if (!layer.ok()) return layer.status();
  absl::StatusOr<Tensor> x =
      LoadSequence(*input_path, layer->attention.d_model, absl::StrCat("d_model of ", *layer_path));
  if (!x.ok()) return x.status();
  ProgressLine progress(io, absl::StrCat("exact-attention of ", kernels::ShapeString(x->shape())));
  exec_options->on_step = progress.Callback();
  absl::StatusOr<std::unique_ptr<Executor>> executor = CreateExecutor(*exec_options);
  if (!executor.ok()) return executor.status();

  kernels::ExactAttentionArgs args;
  args.x = x->view();
  args.causal = p.Has("causal");
  args.output_dtype = *output_dtype;
  const auto start = std::chrono::steady_clock::now();
  absl::StatusOr<Tensor> result = (*executor)->ExactAttention(*std::move(layer), args);
  const double ms = MillisecondsSince(start);
  progress.Done();
  if (!result.ok()) return result.status();
  Tensor y = AsDType(*std::move(result), *output_dtype);
  if (auto s = WriteNpy(*output_path, y.view()); !s.ok()) return s;
  out << TensorFields(y) << " causal=" << (args.causal ? 1 : 0) << " compute_ms=" << Fixed(ms, 3)
      << " output=" << *output_path << "\n";
  return absl::OkStatus();
}

void DeclareLowRankLinear(ArgParser& p) {
  p.AddUsage("--layer L.safetensors [--weight NAME] --input X.npy [rank options] --output Y.npy");
  p.AddUsage(
      "--layer L.safetensors [--weight NAME] --input-u U.npy --input-c C.npy --output-prefix P");
  p.AddOption("layer", "FILE", "a linear or attention layer (.safetensors) (required)");
  p.AddOption("weight", "NAME",
              "which map of the layer: q_proj, k_proj, v_proj or o_proj of an attention layer "
              "(required there); omit for a linear layer");
  p.AddOption("input", "FILE",
              "input X [L, in_features] (.npy), decomposed with the rank options (this or "
              "--input-u with --input-c is required)");
  p.AddOption("input-u", "FILE",
              "factored input X = U·C: U [L, r] (.npy), used as given (no decomposition; the rank "
              "options do not apply)");
  p.AddOption("input-c", "FILE", "factored input X = U·C: C [r, in_features] (.npy)");
  p.AddOption("output", "FILE",
              "where to write Y [L, out_features] (.npy) (this or --output-prefix is required)");
  p.AddOption("output-prefix", "P",
              "factored output Y = U'·C': writes P.u.npy [L, r'] and P.c.npy [r', out_features], "
              "with U' = [U, 1] and C' = [C·W^T; b^T] (r' = r + 1) when the map has a bias, else "
              "U' = U and C' = C·W^T");
  AddOutputDTypeOption(p);
  AddRankOptions(p, "the layer's default_rank, energy 0.99 unless the file sets it");
  AddExecutionOptions(p);
  p.AddNotes(
      "Computes Y = U_r ((S_r V_r^T) W^T) + 1 b^T from the top-r SVD X ~ U_r S_r V_r^T, which "
      "costs O(r d n + L r n) instead of O(L d n). A factored input and output let a chain of "
      "low-rank layers pass U and C along without forming L x d matrices.");
}

absl::Status RunLowRankLinear(const ArgParser& p, const Io& io) {
  std::ostream& out = io.out;
  absl::StatusOr<std::string> layer_path = p.GetRequired("layer");
  if (!layer_path.ok()) return layer_path.status();
  const std::optional<std::string> input_path = p.Get("input");
  const std::optional<std::string> u_path = p.Get("input-u");
  const std::optional<std::string> c_path = p.Get("input-c");
  const bool factored_input = u_path.has_value() || c_path.has_value();
  if (factored_input && input_path.has_value()) {
    return p.Error("give --input or --input-u with --input-c, not both");
  }
  if (factored_input && !(u_path.has_value() && c_path.has_value())) {
    return p.Error(absl::StrCat("a factored input needs both --input-u and --input-c, got only --",
                                u_path.has_value() ? "input-u" : "input-c"));
  }
  if (!factored_input && !input_path.has_value()) {
    return p.Error("missing --input (or --input-u with --input-c)");
  }
  const std::optional<std::string> output_path = p.Get("output");
  const std::optional<std::string> prefix = p.Get("output-prefix");
  if (output_path.has_value() == prefix.has_value()) {
    return p.Error(output_path.has_value() ? "give --output or --output-prefix, not both"
                                           : "missing --output (or --output-prefix)");
  }
  absl::StatusOr<DType> output_dtype = ParseOutputDType(p);
  if (!output_dtype.ok()) return output_dtype.status();
  if (auto s = ParseRankOptions(p, RankPolicy()).status(); !s.ok()) return s;
  absl::StatusOr<ExecutorOptions> exec_options = ParseExecutionOptions(p);
  if (!exec_options.ok()) return exec_options.status();
  const std::string weight = p.Get("weight").value_or("");

  absl::StatusOr<LayerSpec> layer = LoadLayer(*layer_path, LayerSpec::Kind::kLinear);
  if (!layer.ok()) return layer.status();
  const bool attention = layer->kind == LayerSpec::Kind::kAttention;
  if (attention && weight.empty()) {
    return p.Error(absl::StrCat(*layer_path,
                                " is an attention layer: give --weight q_proj, k_proj, v_proj or "
                                "o_proj"));
  }
  if (!attention && !weight.empty()) {
    return absl::InvalidArgumentError(absl::StrCat(
        *layer_path, " is a linear layer with one map (weight): omit --weight ", weight));
  }
  absl::StatusOr<kernels::LinearWeightNames> names = kernels::FindLinearWeight(*layer, weight);
  if (!names.ok()) {
    return absl::InvalidArgumentError(
        absl::StrCat(*layer_path, " has no ", weight,
                     ".weight, want --weight q_proj, k_proj, v_proj or o_proj"));
  }
  const int64_t in_features = layer->weights.find(names->weight)->second.dim(1);
  absl::StatusOr<RankOptions> rank =
      ParseRankOptions(p, attention ? layer->attention.default_rank : layer->linear_default_rank);
  if (!rank.ok()) return rank.status();
  const std::string width_source =
      absl::StrCat("in_features of ", names->weight, " in ", *layer_path);
  Tensor x, u, c;
  if (factored_input) {
    absl::StatusOr<Tensor> loaded_u = LoadSequence(*u_path, 0, "");
    if (!loaded_u.ok()) return loaded_u.status();
    u = *std::move(loaded_u);
    absl::StatusOr<Tensor> loaded_c = LoadSequence(*c_path, in_features, width_source);
    if (!loaded_c.ok()) return loaded_c.status();
    c = *std::move(loaded_c);
    if (c.dim(0) != u.dim(1)) {
      return absl::InvalidArgumentError(absl::StrCat(
          *c_path, " has shape ", kernels::ShapeString(c.shape()), ", want [", u.dim(1), ",",
          in_features, "] (the columns of ", *u_path, " ", kernels::ShapeString(u.shape()), ")"));
    }
  } else {
    absl::StatusOr<Tensor> loaded = LoadSequence(*input_path, in_features, width_source);
    if (!loaded.ok()) return loaded.status();
    x = *std::move(loaded);
  }
  ProgressLine progress(
      io, absl::StrCat("lowrank-linear of ",
                       factored_input ? absl::StrCat(kernels::ShapeString(u.shape()), " x ",
                                                     kernels::ShapeString(c.shape()))
                                      : kernels::ShapeString(x.shape())));
  exec_options->on_step = progress.Callback();
  absl::StatusOr<std::unique_ptr<Executor>> executor = CreateExecutor(*exec_options);
  if (!executor.ok()) return executor.status();

  kernels::LowRankLinearArgs args;
  args.weight = weight;
  args.factored_input = factored_input;
  if (factored_input) {
    args.u = u.view();
    args.c = c.view();
  } else {
    args.x = x.view();
  }
  args.rank = rank->policy;
  if (rank->seed.has_value()) args.seed = *rank->seed;
  args.factored_output = prefix.has_value();
  args.output_dtype = *output_dtype;
  const auto start = std::chrono::steady_clock::now();
  absl::StatusOr<kernels::LowRankLinearResult> result =
      (*executor)->LowRankLinear(*std::move(layer), args);
  const double ms = MillisecondsSince(start);
  progress.Done();
  if (!result.ok()) return result.status();
  // A factored input carries its own rank and no energy figure.
  const std::string rank_fields = factored_input
                                      ? absl::StrCat("rank=", result->rank, " ")
                                      : RankFields(result->rank, result->captured_energy);
  if (!result->factored) {
    Tensor y = AsDType(std::move(result->y), *output_dtype);
    if (auto s = WriteNpy(*output_path, y.view()); !s.ok()) return s;
    out << rank_fields << TensorFields(y) << " compute_ms=" << Fixed(ms, 3)
        << " output=" << *output_path << "\n";
    return absl::OkStatus();
  }
  Tensor yu = AsDType(std::move(result->u), *output_dtype);
  Tensor yc = AsDType(std::move(result->c), *output_dtype);
  const std::string yu_path = absl::StrCat(*prefix, ".u.npy");
  const std::string yc_path = absl::StrCat(*prefix, ".c.npy");
  if (auto s = WriteNpy(yu_path, yu.view()); !s.ok()) return s;
  if (auto s = WriteNpy(yc_path, yc.view()); !s.ok()) return s;
  out << rank_fields << "u=" << kernels::ShapeString(yu.shape())
      << " c=" << kernels::ShapeString(yc.shape()) << " dtype=" << kernels::DTypeName(yu.dtype())
      << " compute_ms=" << Fixed(ms, 3) << " output=" << yu_path << "," << yc_path << "\n";
  return absl::OkStatus();
}

void DeclareDecompose(ArgParser& p) {
  p.AddUsage("--input X.npy [rank options] --output-prefix P");
  p.AddOption("input", "FILE", "input X [L, d] (.npy) (required)");
  p.AddOption("output-prefix", "P",
              "writes P.u.npy [L, r], P.s.npy [r] (always f32) and P.vt.npy [r, d] (required)");
  p.AddOption("method", "M",
              "auto (default: exact where cheap, randomized otherwise), exact or randomized");
  AddOutputDTypeOption(p);
  AddRankOptions(p, "--rank-energy 0.99");
  AddExecutionOptions(p);
  p.AddNotes(
      "The principal bases X ~ U_r S_r V_r^T with the sign rule of DESIGN.md section 1: each u_i "
      "is oriented so that sum_j U[j,i] >= 0 (its largest entry decides when that sum is ~0).");
}

absl::Status RunDecompose(const ArgParser& p, const Io& io) {
  std::ostream& out = io.out;
  absl::StatusOr<std::string> input_path = p.GetRequired("input");
  if (!input_path.ok()) return input_path.status();
  absl::StatusOr<std::string> prefix = p.GetRequired("output-prefix");
  if (!prefix.ok()) return prefix.status();
  absl::StatusOr<DType> output_dtype = ParseOutputDType(p);
  if (!output_dtype.ok()) return output_dtype.status();
  absl::StatusOr<RankOptions> rank = ParseRankOptions(p, RankPolicy());
  if (!rank.ok()) return rank.status();
  absl::StatusOr<std::string> method =
      p.GetChoice("method", "auto", {"auto", "exact", "randomized"});
  if (!method.ok()) return method.status();
  absl::StatusOr<ExecutorOptions> exec_options = ParseExecutionOptions(p);
  if (!exec_options.ok()) return exec_options.status();

  absl::StatusOr<Tensor> x = LoadSequence(*input_path, 0, "");
  if (!x.ok()) return x.status();
  ProgressLine progress(io, absl::StrCat("decompose of ", kernels::ShapeString(x->shape())));
  exec_options->on_step = progress.Callback();
  absl::StatusOr<std::unique_ptr<Executor>> executor = CreateExecutor(*exec_options);
  if (!executor.ok()) return executor.status();

  kernels::PrincipalBasesArgs args;
  args.x = x->view();
  args.rank = rank->policy.value_or(RankPolicy());
  if (rank->seed.has_value()) args.seed = *rank->seed;
  args.method = *method == "exact"        ? kernels::DecomposeMethod::kExact
                : *method == "randomized" ? kernels::DecomposeMethod::kRandomized
                                          : kernels::DecomposeMethod::kAuto;
  args.output_dtype = *output_dtype;
  const auto start = std::chrono::steady_clock::now();
  absl::StatusOr<kernels::PrincipalBases> result = (*executor)->Decompose(args);
  const double ms = MillisecondsSince(start);
  progress.Done();
  if (!result.ok()) return result.status();
  Tensor u = AsDType(std::move(result->u), *output_dtype);
  Tensor s = AsDType(std::move(result->s), DType::kF32);
  Tensor vt = AsDType(std::move(result->vt), *output_dtype);
  const std::string u_path = absl::StrCat(*prefix, ".u.npy");
  const std::string s_path = absl::StrCat(*prefix, ".s.npy");
  const std::string vt_path = absl::StrCat(*prefix, ".vt.npy");
  if (auto st = WriteNpy(u_path, u.view()); !st.ok()) return st;
  if (auto st = WriteNpy(s_path, s.view()); !st.ok()) return st;
  if (auto st = WriteNpy(vt_path, vt.view()); !st.ok()) return st;
  out << RankFields(result->rank, result->captured_energy)
      << "u=" << kernels::ShapeString(u.shape()) << " s=" << kernels::ShapeString(s.shape())
      << " vt=" << kernels::ShapeString(vt.shape()) << " dtype=" << kernels::DTypeName(u.dtype())
      << " compute_ms=" << Fixed(ms, 3) << " output=" << u_path << "," << s_path << "," << vt_path
      << "\n";
  return absl::OkStatus();
}

// ---------------------------------------------------------------------------------------------
// atp generate <what>.

absl::StatusOr<uint64_t> ParseSeed(const ArgParser& p) {
  absl::StatusOr<int64_t> seed = p.GetInt("seed", 1, 0, kMaxSeed);
  if (!seed.ok()) return seed.status();
  return static_cast<uint64_t>(*seed);
}

absl::StatusOr<RankPolicy> ParseDefaultRank(const ArgParser& p) {
  std::optional<std::string> text = p.Get("default-rank");
  if (!text.has_value()) return RankPolicy();
  absl::StatusOr<RankPolicy> policy = ParseRankPolicy(*text);
  if (!policy.ok()) return p.Error(absl::StrCat("--default-rank: ", policy.status().message()));
  return policy;
}

absl::StatusOr<DType> ParseWeightDType(const ArgParser& p) {
  absl::StatusOr<std::string> name = p.GetChoice("dtype", "f32", {"f32", "f16", "bf16"});
  if (!name.ok()) return name.status();
  return kernels::ParseDType(*name);
}

void DeclareGenerateLayer(ArgParser& p) {
  p.AddUsage(
      "--d-model D --heads H [--kv-heads G] [--head-dim Dh] [--bias] [--key-scale S] "
      "[--dtype T] [--seed S] --output L.safetensors");
  p.AddOption("d-model", "D", "model width d (required)");
  p.AddOption("heads", "H", "query heads (required)");
  p.AddOption("kv-heads", "G", "key/value heads, a divisor of H (default H)");
  p.AddOption("head-dim", "Dh", "width of a head (default D / H)");
  p.AddFlag("bias", "give every projection a bias");
  p.AddOption("key-scale", "S", "none (default) or inv_sqrt_len");
  p.AddOption("default-rank", "POLICY",
              "the layer's default rank policy, e.g. \"energy 0.99\" (default), \"fixed 64\", "
              "\"fraction 0.25 max 128\"");
  p.AddOption("dtype", "T", "weight dtype: f32 (default), f16 or bf16");
  p.AddOption("seed", "S", "random seed (default 1)");
  p.AddOption("output", "FILE", "where to write the layer (.safetensors) (required)");
  p.AddNotes("Weights are N(0, 1/in_features), biases N(0, 0.1^2).");
}

absl::Status RunGenerateLayer(const ArgParser& p, const Io& io) {
  std::ostream& out = io.out;
  AttentionLayerOptions o;
  absl::StatusOr<std::string> output_path = p.GetRequired("output");
  if (!output_path.ok()) return output_path.status();
  if (!p.Has("d-model")) return p.GetRequired("d-model").status();
  if (!p.Has("heads")) return p.GetRequired("heads").status();
  absl::StatusOr<int64_t> d = p.GetInt("d-model", 0, 1, 1 << 20);
  if (!d.ok()) return d.status();
  absl::StatusOr<int64_t> h = p.GetInt("heads", 0, 1, 1 << 16);
  if (!h.ok()) return h.status();
  absl::StatusOr<int64_t> g = p.GetInt("kv-heads", *h, 1, 1 << 16);
  if (!g.ok()) return g.status();
  absl::StatusOr<int64_t> dh = p.GetInt("head-dim", 0, 1, 1 << 20);
  if (!dh.ok()) return dh.status();
  absl::StatusOr<std::string> key_scale =
      p.GetChoice("key-scale", "none", {"none", "inv_sqrt_len"});
  if (!key_scale.ok()) return key_scale.status();
  absl::StatusOr<RankPolicy> default_rank = ParseDefaultRank(p);
  if (!default_rank.ok()) return default_rank.status();
  absl::StatusOr<DType> dtype = ParseWeightDType(p);
  if (!dtype.ok()) return dtype.status();
  absl::StatusOr<uint64_t> seed = ParseSeed(p);
  if (!seed.ok()) return seed.status();
  if (*h % *g != 0) {
    return p.Error(absl::StrCat("--kv-heads ", *g, " does not divide --heads ", *h));
  }
  if (*dh == 0 && *d % *h != 0) {
    return p.Error(
        absl::StrCat("--d-model ", *d, " is not a multiple of --heads ", *h, "; give --head-dim"));
  }
  o.d_model = *d;
  o.num_heads = *h;
  o.num_kv_heads = *g;
  o.head_dim = *dh;
  o.bias = p.Has("bias");
  o.key_scale =
      *key_scale == "inv_sqrt_len" ? kernels::KeyScale::kInvSqrtLen : kernels::KeyScale::kNone;
  o.default_rank = *default_rank;
  o.dtype = *dtype;
  o.seed = *seed;
  absl::StatusOr<LayerSpec> layer = GenerateAttentionLayer(o);
  if (!layer.ok()) return p.Error(layer.status().message());
  if (auto s = WriteLayerFile(*output_path, *layer); !s.ok()) return s;
  const kernels::AttentionConfig& c = layer->attention;
  out << "layer=attention d_model=" << c.d_model << " heads=" << c.num_heads
      << " kv_heads=" << c.kv_heads() << " head_dim=" << c.head_dim << " bias=" << (o.bias ? 1 : 0)
      << " key_scale=" << kernels::KeyScaleName(c.key_scale)
      << " dtype=" << kernels::DTypeName(o.dtype) << " output=" << *output_path << "\n";
  return absl::OkStatus();
}

void DeclareGenerateLinear(ArgParser& p) {
  p.AddUsage(
      "--in-features D --out-features N [--bias] [--dtype T] [--seed S] --output L.safetensors");
  p.AddOption("in-features", "D", "input width d (required)");
  p.AddOption("out-features", "N", "output width n (required)");
  p.AddFlag("bias", "add a bias");
  p.AddOption("default-rank", "POLICY",
              "the layer's default rank policy (default \"energy 0.99\")");
  p.AddOption("dtype", "T", "weight dtype: f32 (default), f16 or bf16");
  p.AddOption("seed", "S", "random seed (default 1)");
  p.AddOption("output", "FILE", "where to write the layer (.safetensors) (required)");
  p.AddNotes("The weight is N(0, 1/in_features) and is stored [out_features, in_features].");
}

absl::Status RunGenerateLinear(const ArgParser& p, const Io& io) {
  std::ostream& out = io.out;
  LinearLayerOptions o;
  absl::StatusOr<std::string> output_path = p.GetRequired("output");
  if (!output_path.ok()) return output_path.status();
  if (!p.Has("in-features")) return p.GetRequired("in-features").status();
  if (!p.Has("out-features")) return p.GetRequired("out-features").status();
  absl::StatusOr<int64_t> d = p.GetInt("in-features", 0, 1, 1 << 20);
  if (!d.ok()) return d.status();
  absl::StatusOr<int64_t> n = p.GetInt("out-features", 0, 1, 1 << 20);
  if (!n.ok()) return n.status();
  absl::StatusOr<RankPolicy> default_rank = ParseDefaultRank(p);
  if (!default_rank.ok()) return default_rank.status();
  absl::StatusOr<DType> dtype = ParseWeightDType(p);
  if (!dtype.ok()) return dtype.status();
  absl::StatusOr<uint64_t> seed = ParseSeed(p);
  if (!seed.ok()) return seed.status();
  o.in_features = *d;
  o.out_features = *n;
  o.bias = p.Has("bias");
  o.default_rank = *default_rank;
  o.dtype = *dtype;
  o.seed = *seed;
  absl::StatusOr<LayerSpec> layer = GenerateLinearLayer(o);
  if (!layer.ok()) return p.Error(layer.status().message());
  if (auto s = WriteLayerFile(*output_path, *layer); !s.ok()) return s;
  out << "layer=linear in_features=" << o.in_features << " out_features=" << o.out_features
      << " bias=" << (o.bias ? 1 : 0) << " dtype=" << kernels::DTypeName(o.dtype)
      << " output=" << *output_path << "\n";
  return absl::OkStatus();
}

void DeclareGenerateInput(ArgParser& p) {
  p.AddUsage(
      "--length L --d-model D [--rank-profile P] [--components K] [--noise S] [--dtype T] "
      "[--seed S] --output X.npy");
  p.AddOption("length", "L", "tokens (required)");
  p.AddOption("d-model", "D", "features per token (required)");
  p.AddOption("rank-profile", "P",
              "lowrank (default): an offset shared by all tokens plus K directions of strength "
              "0.7^k plus noise, like real activations; exact: exactly rank K; flat: i.i.d. "
              "N(0,1), no low-rank structure");
  p.AddOption("components", "K", "number of strong directions (default min(8, L, D))");
  p.AddOption("noise", "S", "standard deviation of added noise (default 0.01 for lowrank, else 0)");
  p.AddOption("dtype", "T", "f32 (default) or f16");
  p.AddOption("seed", "S", "random seed (default 1)");
  p.AddOption("output", "FILE", "where to write X [L, D] (.npy) (required)");
  p.AddNotes("The structured part is scaled to a root-mean-square entry of 1.");
}

absl::Status RunGenerateInput(const ArgParser& p, const Io& io) {
  std::ostream& out = io.out;
  InputOptions o;
  absl::StatusOr<std::string> output_path = p.GetRequired("output");
  if (!output_path.ok()) return output_path.status();
  if (!p.Has("length")) return p.GetRequired("length").status();
  if (!p.Has("d-model")) return p.GetRequired("d-model").status();
  absl::StatusOr<int64_t> length = p.GetInt("length", 0, 1, 1 << 24);
  if (!length.ok()) return length.status();
  absl::StatusOr<int64_t> d = p.GetInt("d-model", 0, 1, 1 << 20);
  if (!d.ok()) return d.status();
  absl::StatusOr<std::string> profile =
      p.GetChoice("rank-profile", "lowrank", {"lowrank", "exact", "flat"});
  if (!profile.ok()) return profile.status();
  absl::StatusOr<int64_t> k = p.GetInt("components", 0, 1, 1 << 20);
  if (!k.ok()) return k.status();
  absl::StatusOr<double> noise = p.GetDouble("noise", -1, 0, 1e6, true);
  if (!noise.ok()) return noise.status();
  absl::StatusOr<std::string> dtype = p.GetChoice("dtype", "f32", {"f32", "f16"});
  if (!dtype.ok()) return dtype.status();
  absl::StatusOr<uint64_t> seed = ParseSeed(p);
  if (!seed.ok()) return seed.status();
  if (*k > std::min(*length, *d)) {
    return p.Error(absl::StrCat("--components ", *k,
                                " exceeds min(--length, --d-model) = ", std::min(*length, *d)));
  }
  o.length = *length;
  o.d_model = *d;
  o.profile = *profile == "exact"  ? InputOptions::Profile::kExact
              : *profile == "flat" ? InputOptions::Profile::kFlat
                                   : InputOptions::Profile::kLowRank;
  o.components = *k;
  o.noise = *noise;
  o.dtype = *dtype == "f16" ? DType::kF16 : DType::kF32;
  o.seed = *seed;
  absl::StatusOr<Tensor> x = GenerateInput(o);
  if (!x.ok()) return p.Error(x.status().message());
  if (auto s = WriteNpy(*output_path, x->view()); !s.ok()) return s;
  out << "input " << TensorFields(*x) << " profile=" << *profile << " output=" << *output_path
      << "\n";
  return absl::OkStatus();
}

// ---------------------------------------------------------------------------------------------
// Dispatch.

struct Command {
  const char* group;
  const char* name;
  const char* summary;
  void (*declare)(ArgParser&);
  absl::Status (*run)(const ArgParser&, const Io&);
};

constexpr Command kCommands[] = {
    {"run", "atp-attention", "ATP attention of an attention layer on one sequence",
     DeclareAtpAttention, RunAtpAttention},
    {"run", "exact-attention", "exact softmax attention over all keys, optionally causal",
     DeclareExactAttention, RunExactAttention},
    {"run", "lowrank-linear", "a linear map applied through a low-rank factorisation of the input",
     DeclareLowRankLinear, RunLowRankLinear},
    {"run", "decompose", "principal bases of an input: top-r SVD with the sign rule",
     DeclareDecompose, RunDecompose},
    {"generate", "layer", "write a random attention layer (.safetensors)", DeclareGenerateLayer,
     RunGenerateLayer},
    {"generate", "linear", "write a random linear layer (.safetensors)", DeclareGenerateLinear,
     RunGenerateLinear},
    {"generate", "input", "write a random input sequence with low-rank structure (.npy)",
     DeclareGenerateInput, RunGenerateInput},
};

// One line: a message that contains newlines is joined.
std::string OneLine(absl::string_view message) {
  return absl::StrReplaceAll(message, {{"\r\n", " "}, {"\n", " "}, {"\r", " "}});
}

int Fail(std::ostream& err, const absl::Status& status, absl::string_view help_command) {
  if (IsUsageError(status)) {
    err << OneLine(status.message()) << " (see '" << help_command << " --help')" << std::endl;
    return kExitUsageError;
  }
  err << "atp: error: " << OneLine(status.message()) << std::endl;
  return kExitRuntimeError;
}

int RunGroup(absl::string_view group, absl::Span<const std::string> args, const Io& io) {
  std::ostream& out = io.out;
  std::ostream& err = io.err;
  const std::string group_command = absl::StrCat("atp ", group);
  const char* group_help = group == "run" ? kRunHelp : kGenerateHelp;
  std::vector<std::string> names;
  for (const Command& c : kCommands) {
    if (group == c.group) names.push_back(c.name);
  }
  if (args.empty()) {
    return Fail(
        err, UsageError(absl::StrCat(group_command, ": want one of ", absl::StrJoin(names, ", "))),
        group_command);
  }
  if (args[0] == "--help" || args[0] == "-h" || args[0] == "help") {
    out << group_help;
    return kExitOk;
  }
  for (const Command& c : kCommands) {
    if (group != c.group || args[0] != c.name) continue;
    ArgParser parser(absl::StrCat(group_command, " ", c.name), c.summary);
    c.declare(parser);
    absl::Status status = parser.Parse(args.subspan(1));
    if (status.ok() && parser.help_requested()) {
      out << parser.Help();
      return kExitOk;
    }
    if (status.ok()) status = c.run(parser, io);
    if (!status.ok()) return Fail(err, status, parser.command());
    return kExitOk;
  }
  return Fail(
      err,
      UsageError(absl::StrCat(group_command, ": unknown ", group == "run" ? "op" : "kind", " \"",
                              args[0], "\", want one of ", absl::StrJoin(names, ", "))),
      group_command);
}

int RunCliUnguarded(absl::Span<const std::string> args, const Io& io) {
  std::ostream& out = io.out;
  std::ostream& err = io.err;
  if (args.empty()) {
    return Fail(err, UsageError("atp: want a command: run, generate, info or health"), "atp");
  }
  const std::string& first = args[0];
  if (first == "--help" || first == "-h" || first == "help") {
    if (args.size() > 1 && (args[1] == "run" || args[1] == "generate")) {
      const std::vector<std::string> help = {"--help"};
      return RunGroup(args[1], help, io);
    }
    out << kTopHelp;
    return kExitOk;
  }
  if (first == "--version" || first == "version") {
    out << "atp " << ATP_VERSION << "\n";
    return kExitOk;
  }
  if (first == "run" || first == "generate") return RunGroup(first, args.subspan(1), io);
  if (IsWorkerCommand(first)) return RunWorkerCommand(first, args.subspan(1), out, err);
  return Fail(err,
              UsageError(absl::StrCat("atp: unknown command \"", first,
                                      "\", want run, generate, info or health")),
              "atp");
}

}  // namespace

int RunCli(absl::Span<const std::string> args, std::ostream& out, std::ostream& err,
           bool interactive) {
  // Input errors never abort: allocation failures and stray exceptions become one line too.
  try {
    return RunCliUnguarded(args, Io{out, err, interactive});
  } catch (const std::bad_alloc&) {
    err << "atp: error: out of memory" << std::endl;
  } catch (const std::exception& e) {
    err << "atp: error: " << OneLine(e.what()) << std::endl;
  }
  return kExitRuntimeError;
}

}  // namespace atp::cli
