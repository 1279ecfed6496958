// A small transformer encoder on the host (embedding, pre-LayerNorm blocks of attention and FFN
// with residuals, final LayerNorm) whose heavy layers run through `LayerOps`: offloaded to atp
// workers through the client SDK (RemoteOps), or in-process on the CPU backend of atp::kernels
// (LocalOps, the reference). Per block:
//
//   x = x + ATP-attention(LN1(x))                       offloaded: atp_attention
//   u, c = FFN-up(LN2(x)), factored output U'·C'          offloaded: lowrank_linear, factored out
//   x = x + FFN-down(GELU(U'·C'))                       offloaded: lowrank_linear, dense
//
// The up-projection returns its output factored (L·(r+1) + (r+1)·d_ff numbers instead of
// L·d_ff), which the host expands for the GELU; the GELU between the two FFN maps is what keeps
// the factored output from feeding the down-projection directly. Weights are generated from a
// seed. Not thread-safe: one encoder run at a time.
#ifndef ATP_EXAMPLES_ENCODER_ENCODER_H_
#define ATP_EXAMPLES_ENCODER_ENCODER_H_

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "atp/client/layer.h"
#include "atp/client/offloader.h"
#include "atp/client/tensor.h"
#include "atp/kernels/backend.h"

namespace atp::examples {

struct EncoderConfig {
  int64_t blocks = 4;
  int64_t d_model = 256;
  int64_t heads = 8;
  int64_t kv_heads = 2;
  int64_t d_ff = 1024;
  int64_t vocab = 2048;
  // Rank policies the layers are registered with (their default_rank).
  client::RankPolicy attention_rank = client::RankPolicy::Energy(0.99, 64);
  client::RankPolicy ffn_up_rank = client::RankPolicy::Energy(0.99, 64);
  client::RankPolicy ffn_down_rank = client::RankPolicy::Energy(0.95, 128);
  uint64_t seed = 1;
};

// Host-side weights (LayerNorms, embeddings) and the offloaded layers' specs, all generated.
struct EncoderWeights {
  EncoderConfig config;
  std::vector<float> embedding;  // [vocab, d]
  struct Block {
    std::vector<float> ln1_gamma, ln1_beta, ln2_gamma, ln2_beta;  // [d]
    client::LayerSpec attention;                                  // "encoder.<i>.attn"
    client::LayerSpec ffn_up;                                     // "encoder.<i>.ffn_up"
    client::LayerSpec ffn_down;                                   // "encoder.<i>.ffn_down"
  };
  std::vector<Block> blocks;
  std::vector<float> final_gamma, final_beta;
};

absl::StatusOr<EncoderWeights> GenerateWeights(const EncoderConfig& config);

// A batch of token sequences whose embeddings are low-rank (each sequence draws its tokens from a
// few related ones), as activations of real text tend to be.
std::vector<std::vector<int32_t>> GenerateTokens(const EncoderConfig& config, int64_t batch,
                                                 int64_t length, uint64_t seed);

// What the heavy layers of the encoder compute on, for a whole batch at once.
class LayerOps {
 public:
  struct Result {
    client::Tensor y;           // dense output
    client::FactoredTensor yf;  // factored output (FFN up)
    int64_t rank = 0;
    uint64_t bytes_sent = 0;
    uint64_t bytes_received = 0;
    double worker_compute_ms = 0;  // 0 in-process
  };
  virtual ~LayerOps() = default;
  virtual absl::StatusOr<std::vector<Result>> Attention(
      const client::LayerSpec& layer, const std::vector<client::TensorView>& x) = 0;
  // Factored output when `factored`.
  virtual absl::StatusOr<std::vector<Result>> Linear(const client::LayerSpec& layer,
                                                     const std::vector<client::TensorView>& x,
                                                     bool factored) = 0;
};

// Offloads to workers through an Offloader (a Pool, or one Client): one batch call per layer,
// every sequence in flight at once. `on_request_done` runs (on an SDK thread) as each request
// completes, `on_wait` about ten times a second while waiting (progress).
std::unique_ptr<LayerOps> RemoteOps(client::Offloader* offloader,
                                    std::function<void()> on_request_done,
                                    std::function<void()> on_wait);

// Computes in this process on `backend` (the reference). `dense`: exact attention and full-rank
// linear maps instead of ATP and low-rank ones (RunDenseEncoder).
absl::StatusOr<std::unique_ptr<LayerOps>> LocalOps(kernels::Backend* backend,
                                                   const EncoderWeights& weights,
                                                   bool dense = false);

// One row of the per-layer table.
struct LayerStats {
  std::string name;  // "encoder.0.attn"
  std::string op;    // "atp_attention", "lowrank_linear (factored out)", "lowrank_linear"
  double ms = 0;     // wall time of the whole batch through this layer
  uint64_t bytes_sent = 0;
  uint64_t bytes_received = 0;
  // What a dense transfer of the same inputs and outputs would have moved.
  uint64_t dense_bytes = 0;
  double worker_compute_ms = 0;  // summed over the batch
  std::vector<int64_t> ranks;    // per sequence
};

// Sees each offloaded layer's outputs (index in stats order; per sequence, dense, f32; the
// factored up-projection expanded) as the run goes.
using LayerObserver =
    std::function<void(size_t layer, const std::vector<std::vector<float>>& outputs)>;

// Runs the encoder on `tokens`; outputs [L, d] per sequence. `stats` (may be null) gets one row
// per offloaded layer (3 per block), in order.
absl::StatusOr<std::vector<client::Tensor>> RunEncoder(
    const EncoderWeights& weights, const std::vector<std::vector<int32_t>>& tokens, LayerOps& ops,
    std::vector<LayerStats>* stats, const LayerObserver& observe = nullptr);

// The same encoder with exact attention and dense FFN maps, in-process and in f32 (for scale: ATP
// is its own function, models are fine-tuned with it).
absl::StatusOr<std::vector<client::Tensor>> RunDenseEncoder(
    kernels::Backend* backend, const EncoderWeights& weights,
    const std::vector<std::vector<int32_t>>& tokens);

// ||a - b||_F / ||b||_F over a batch.
double RelativeError(const std::vector<client::Tensor>& a, const std::vector<client::Tensor>& b);
double RelativeError(const std::vector<std::vector<float>>& a,
                     const std::vector<std::vector<float>>& b);

}  // namespace atp::examples

#endif  // ATP_EXAMPLES_ENCODER_ENCODER_H_
