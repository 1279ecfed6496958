#include "compute_stream.h"

#include <grpcpp/grpcpp.h>

#include <algorithm>
#include <atomic>
#include <cmath>
#include <optional>
#include <utility>

#include "absl/base/thread_annotations.h"
#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "atp/wire/chunking.h"
#include "atp/wire/status.h"
#include "atp/wire/stream_codec.h"
#include "atp/wire/tensor_header.h"

namespace atp::client::internal {
namespace {

class ComputeStream final : public grpc::ClientBidiReactor<grpc::ByteBuffer, grpc::ByteBuffer>,
                            public CancellableCall,
                            public std::enable_shared_from_this<ComputeStream> {
 public:
  ComputeStream(std::shared_ptr<TimerQueue> timer, ComputeStreamConfig config,
                std::vector<std::unique_ptr<OpCall>> calls,
                std::function<void(std::unique_ptr<OpCall>, OpOutcome)> on_item)
      : timer_(std::move(timer)), config_(std::move(config)), on_item_(std::move(on_item)) {
    items_.reserve(calls.size());
    uint64_t id = 1;
    for (auto& call : calls) {
      auto item = std::make_unique<Item>();
      item->call = std::move(call);
      item->id = id++;
      items_.push_back(std::move(item));
    }
    config_.window = std::max(config_.window, 1);
    config_.chunk_bytes = std::max<uint32_t>(config_.chunk_bytes, 1);
  }

  void Start(grpc::GenericStub* stub, LiveCalls* live) {
    self_ = shared_from_this();
    live_ = live;
    live_id_ = live->Add(weak_from_this());
    if (live_id_ == 0) {
      std::vector<Item*> done;
      {
        absl::MutexLock lock(&mu_);
        broken_ = true;
        for (auto& item : items_) {
          AnswerLocked(*item, absl::CancelledError("the client is shut down"), false, &done);
        }
      }
      for (Item* item : done) DropItemRef(item, /*from_release=*/false);
      DropStreamRef(/*from_release=*/false);
      return;
    }
    if (config_.deadline != absl::InfiniteFuture()) {
      context_->set_deadline(absl::ToChronoTime(config_.deadline));
    }
    context_->set_wait_for_ready(config_.wait_for_ready);
    if (!config_.authorization.empty()) {
      context_->AddMetadata("authorization", config_.authorization);
    }
    stub->PrepareBidiStreamingCall(context_.get(), kComputeMethod, grpc::StubOptions(), this);
    StartRead(&read_buf_);
    PumpWrites();
    StartCall();
  }

  ~ComputeStream() override {
    context_.reset();
    if (live_id_ != 0) live_->Remove(live_id_);
  }

  void Cancel() override { context_->TryCancel(); }

  void OnWriteDone(bool ok) override {
    {
      absl::MutexLock lock(&mu_);
      write_in_flight_ = false;
      write_buf_.Clear();
      if (!ok) broken_ = true;  // the stream is going away; OnDone says why
    }
    PumpWrites();
  }

  void OnWritesDoneDone(bool /*ok*/) override {}

  void OnReadDone(bool ok) override {
    if (!ok) return;  // the stream ended; OnDone follows
    std::vector<Item*> done;
    bool cancel = false;
    {
      absl::MutexLock lock(&mu_);
      absl::Status s = HandleMessageLocked(&done);
      read_buf_.Clear();
      if (!s.ok()) {
        broken_ = true;
        cancel = true;
        for (auto& item : items_) {
          AnswerLocked(*item,
                       absl::InternalError(absl::StrCat(
                           "worker ", config_.target, " sent an invalid response: ", s.message())),
                       /*in_band=*/false, &done);
        }
      }
    }
    for (Item* item : done) DropItemRef(item, /*from_release=*/false);
    if (cancel) {
      context_->TryCancel();
      return;
    }
    StartRead(&read_buf_);
    PumpWrites();
  }

  void OnDone(const grpc::Status& status) override {
    std::vector<Item*> done;
    {
      absl::MutexLock lock(&mu_);
      broken_ = true;
      absl::Status end;
      if (status.ok()) {
        end = absl::InternalError(
            absl::StrCat("worker ", config_.target, " ended the stream without answering"));
      } else {
        end = absl::Status(wire::FromGrpcStatus(status).code(),
                           absl::StrCat("worker ", config_.target, ": ", status.error_message()));
      }
      for (auto& item : items_) AnswerLocked(*item, end, /*in_band=*/false, &done);
    }
    for (Item* item : done) DropItemRef(item, /*from_release=*/false);
    DropStreamRef(/*from_release=*/false);  // last: may destroy this
  }

 private:
  struct Item {
    std::unique_ptr<OpCall> call;
    uint64_t id = 0;
    // Guarded by the stream's mu_.
    bool answered = false;
    OpOutcome outcome;
    bool header_seen = false;
    std::optional<wire::TensorAssembler> assembler;
    uint64_t bytes_sent = 0;
    uint64_t bytes_received = 0;
    // One reference for the answer and one per input slice gRPC still holds; the outcome is
    // handed back when the last goes.
    std::atomic<int64_t> refs{1};
  };

  // What a data slice's release callback needs.
  struct SliceRef {
    ComputeStream* stream;
    Item* item;
  };

  enum class Action { kNone, kWrite, kWritesDone };

  // Chooses the next message under the lock, starts it outside (gRPC may run reactions inline).
  void PumpWrites() {
    Action action;
    {
      absl::MutexLock lock(&mu_);
      action = NextWriteLocked();
    }
    if (action == Action::kWrite) {
      StartWrite(&write_buf_);
    } else if (action == Action::kWritesDone) {
      StartWritesDone();
    }
  }

  Action NextWriteLocked() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    while (true) {
      if (broken_ || writes_done_ || write_in_flight_) return Action::kNone;
      if (send_index_ == items_.size()) {
        writes_done_ = true;
        return Action::kWritesDone;
      }
      Item& item = *items_[send_index_];
      if (item.answered) {  // refused before its payload was all sent: the worker drops the rest
        NextItemLocked();
        continue;
      }
      if (send_tensor_ < 0) {
        if (send_index_ - recv_index_ >= static_cast<size_t>(config_.window)) {
          return Action::kNone;  // wait for an answer
        }
        atp::v1::ComputeRequest request;
        atp::v1::RequestHeader* header = request.mutable_header();
        *header = item.call->header;
        header->set_request_id(item.id);
        if (item.call->deadline != absl::InfiniteFuture()) {
          const double ms =
              std::ceil(absl::ToDoubleMilliseconds(item.call->deadline - absl::Now()));
          header->set_timeout_ms(static_cast<uint32_t>(std::clamp(ms, 1.0, 4294967295.0)));
        }
        grpc::Slice slice(request.SerializeAsString());
        write_buf_ = grpc::ByteBuffer(&slice, 1);
        send_tensor_ = 0;
        send_offset_ = 0;
        if (item.call->inputs.empty()) NextItemLocked();
        write_in_flight_ = true;
        return Action::kWrite;
      }
      const TensorView& view = item.call->inputs[send_tensor_];
      const uint64_t size = view.byte_size();
      const uint64_t len = std::min<uint64_t>(config_.chunk_bytes, size - send_offset_);
      const std::string prefix =
          wire::EncodeChunkPrefix(item.id, static_cast<uint32_t>(send_tensor_), send_offset_, len);
      item.refs.fetch_add(1);
      stream_refs_.fetch_add(1);
      grpc::Slice slices[2] = {
          grpc::Slice(prefix),
          grpc::Slice(const_cast<uint8_t*>(static_cast<const uint8_t*>(view.data)) + send_offset_,
                      len, &ComputeStream::ReleaseSlice, new SliceRef{this, &item})};
      write_buf_ = grpc::ByteBuffer(slices, 2);
      item.bytes_sent += len;
      send_offset_ += len;
      if (send_offset_ == size) {
        ++send_tensor_;
        send_offset_ = 0;
        if (send_tensor_ == static_cast<int>(item.call->inputs.size())) NextItemLocked();
      }
      write_in_flight_ = true;
      return Action::kWrite;
    }
  }

  void NextItemLocked() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    ++send_index_;
    send_tensor_ = -1;
    send_offset_ = 0;
  }

  // Reads read_buf_ as the next ComputeResponse message.
  absl::Status HandleMessageLocked(std::vector<Item*>* done) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    std::vector<grpc::Slice> slices;
    std::vector<absl::Span<const uint8_t>> pieces;
    if (read_buf_.Valid()) {
      grpc::Status dumped = read_buf_.Dump(&slices);
      if (!dumped.ok()) return absl::InternalError(dumped.error_message());
    }
    for (const grpc::Slice& s : slices) pieces.emplace_back(s.begin(), s.size());
    wire::DecodedStreamMessage msg;
    if (absl::Status s = wire::DecodeStreamMessage(pieces, &msg); !s.ok()) return s;
    while (recv_index_ < items_.size() && items_[recv_index_]->answered) ++recv_index_;
    if (recv_index_ >= items_.size()) {
      return absl::InternalError("a message after every request was answered");
    }
    Item& item = *items_[recv_index_];
    if (msg.kind == wire::DecodedStreamMessage::Kind::kHeader) {
      atp::v1::ResponseHeader header;
      if (!header.ParseFromString(msg.header)) {
        return absl::InternalError("a header that is not an atp.v1.ResponseHeader");
      }
      if (header.request_id() != item.id || item.header_seen) {
        return absl::InternalError(absl::StrCat("a response header for request ",
                                                header.request_id(), " while request ", item.id,
                                                " was expected"));
      }
      item.header_seen = true;
      if (header.code() != 0) {
        AnswerLocked(item, wire::StatusFromCode(header.code(), header.message()),
                     /*in_band=*/true, done);
        return absl::OkStatus();
      }
      OpOutcome& out = item.outcome;
      out.factored = header.factored();
      out.rank = header.rank();
      out.captured_energy = header.captured_energy();
      out.info.receive_time = absl::Microseconds(header.timing().receive_us());
      out.info.queue_time = absl::Microseconds(header.timing().queue_us());
      out.info.compute_time = absl::Microseconds(header.timing().compute_us());
      std::vector<wire::TensorAssembler::Target> targets;
      for (int i = 0; i < header.outputs_size(); ++i) {
        absl::StatusOr<wire::TensorLayout> layout = wire::CheckTensorHeader(
            header.outputs(i), config_.max_result_bytes, absl::StrCat("output ", i));
        if (!layout.ok()) return layout.status();
        out.outputs.emplace_back(static_cast<DType>(layout->dtype), layout->shape);
        Tensor& t = out.outputs.back();
        targets.push_back({layout->name, t.mutable_bytes(), layout->crc32c});
      }
      if (targets.empty()) {
        AnswerLocked(item, absl::OkStatus(), /*in_band=*/true, done);
      } else {
        item.assembler.emplace(std::move(targets), /*max_chunk_bytes=*/0);
      }
      return absl::OkStatus();
    }
    if (msg.kind != wire::DecodedStreamMessage::Kind::kChunk) {
      return absl::InternalError("a message that sets neither header nor chunk");
    }
    if (msg.chunk.request_id != item.id || !item.assembler.has_value()) {
      return absl::InternalError(absl::StrCat("a chunk for request ", msg.chunk.request_id,
                                              " while request ", item.id, " was expected"));
    }
    if (absl::Status s =
            item.assembler->Add(msg.chunk.tensor_index, msg.chunk.offset, msg.chunk.data);
        !s.ok()) {
      return s;
    }
    item.bytes_received += msg.chunk.size;
    if (item.assembler->complete()) {
      item.assembler.reset();
      AnswerLocked(item, absl::OkStatus(), /*in_band=*/true, done);
    }
    return absl::OkStatus();
  }

  // Records an item's answer (once); `done` collects items whose answer reference must be dropped
  // outside the lock.
  void AnswerLocked(Item& item, absl::Status status, bool in_band, std::vector<Item*>* done)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    if (item.answered) return;
    item.answered = true;
    item.assembler.reset();
    item.outcome.status = std::move(status);
    item.outcome.in_band = in_band;
    if (!item.outcome.status.ok()) item.outcome.outputs.clear();
    while (recv_index_ < items_.size() && items_[recv_index_]->answered) ++recv_index_;
    item.outcome.info.worker = config_.target;
    item.outcome.info.bytes_sent = item.bytes_sent;
    item.outcome.info.bytes_received = item.bytes_received;
    done->push_back(&item);
  }

  // Drops one reference of `item`; the last hands the outcome back. From a slice release
  // (inside gRPC's transport), the hand-back moves to the timer thread.
  void DropItemRef(Item* item, bool from_release) {
    if (item->refs.fetch_sub(1) != 1) {
      if (from_release) DropStreamRef(/*from_release=*/true);
      return;
    }
    if (from_release) {
      // The stream reference of this slice moves into the task.
      timer_->Schedule(absl::Now(), [this, item] {
        Deliver(item);
        DropStreamRef(/*from_release=*/false);
      });
      return;
    }
    Deliver(item);
  }

  void Deliver(Item* item) {
    std::unique_ptr<OpCall> call = std::move(item->call);
    OpOutcome outcome = std::move(item->outcome);
    on_item_(std::move(call), std::move(outcome));
  }

  // Drops one reference of the stream (OnDone's, or a slice's); the last destroys it, on the
  // timer thread when it comes from a slice release.
  void DropStreamRef(bool from_release) {
    if (stream_refs_.fetch_sub(1) != 1) return;
    std::shared_ptr<ComputeStream> self = std::move(self_);
    if (from_release) {
      std::shared_ptr<TimerQueue> timer = timer_;
      timer->Schedule(absl::Now(), [self = std::move(self)] {});
    }
    // Otherwise `self` is released on return, destroying this.
  }

  static void ReleaseSlice(void* arg) {
    SliceRef* ref = static_cast<SliceRef*>(arg);
    ComputeStream* stream = ref->stream;
    Item* item = ref->item;
    delete ref;
    stream->DropItemRef(item, /*from_release=*/true);
  }

  const std::shared_ptr<TimerQueue> timer_;
  ComputeStreamConfig config_;
  const std::function<void(std::unique_ptr<OpCall>, OpOutcome)> on_item_;
  std::vector<std::unique_ptr<Item>> items_;

  // Reset before the stream leaves `live`: the context holds the channel, whose last reference
  // must not go on a gRPC thread (the core releases it once every call has gone).
  std::unique_ptr<grpc::ClientContext> context_ = std::make_unique<grpc::ClientContext>();
  LiveCalls* live_ = nullptr;
  uint64_t live_id_ = 0;
  // Keeps this alive until OnDone has run and gRPC has released every input slice.
  std::shared_ptr<ComputeStream> self_;
  std::atomic<int64_t> stream_refs_{1};

  // Only the reading side touches read_buf_ (one read at a time).
  grpc::ByteBuffer read_buf_;

  absl::Mutex mu_;
  grpc::ByteBuffer write_buf_ ABSL_GUARDED_BY(mu_);
  bool write_in_flight_ ABSL_GUARDED_BY(mu_) = false;
  bool writes_done_ ABSL_GUARDED_BY(mu_) = false;
  bool broken_ ABSL_GUARDED_BY(mu_) = false;
  size_t send_index_ ABSL_GUARDED_BY(mu_) = 0;
  int send_tensor_ ABSL_GUARDED_BY(mu_) = -1;  // -1: the header is next
  uint64_t send_offset_ ABSL_GUARDED_BY(mu_) = 0;
  size_t recv_index_ ABSL_GUARDED_BY(mu_) = 0;
};

}  // namespace

void StartComputeStream(grpc::GenericStub* stub, LiveCalls* live, std::shared_ptr<TimerQueue> timer,
                        const ComputeStreamConfig& config,
                        std::vector<std::unique_ptr<OpCall>> calls,
                        std::function<void(std::unique_ptr<OpCall>, OpOutcome)> on_item) {
  auto stream = std::make_shared<ComputeStream>(std::move(timer), config, std::move(calls),
                                                std::move(on_item));
  stream->Start(stub, live);
}

}  // namespace atp::client::internal
