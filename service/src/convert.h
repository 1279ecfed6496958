// The one place where atp.v1 protobuf messages become plain service and kernel structs and back.
// Header-level validation happens here, so that every message names the offending field.
// Thread-safe: pure functions.
#ifndef ATP_SERVICE_CONVERT_H_
#define ATP_SERVICE_CONVERT_H_

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "atp/kernels/layer.h"
#include "atp/v1/worker.pb.h"
#include "atp/wire/tensor_header.h"
#include "compute_plan.h"
#include "layer_registry.h"
#include "stats.h"

namespace atp::service {

// RequestHeader → ComputePlan: op, layer id, rank policy, input headers (checked against
// max_tensor_bytes), output dtype and form. INVALID_ARGUMENT / RESOURCE_EXHAUSTED naming the field.
absl::StatusOr<ComputePlan> ToComputePlan(const atp::v1::RequestHeader& header,
                                          const WorkerLimits& limits);

// A layer upload's header in plain terms.
struct LayerPlan {
  std::string layer_id;
  // Kind and configuration; weights are filled as the payload arrives.
  kernels::LayerSpec spec;
  // Checked tensor headers, in upload order.
  std::vector<wire::TensorLayout> tensors;
  // The digest the client claims ("" when it sent none).
  std::string claimed_digest;
  bool replace = false;
  // The configuration text of the digest (wire::AttentionDigestConfig or "linear").
  std::string digest_config;
  // Sum of the tensors' byte sizes.
  uint64_t payload_bytes = 0;
};

// LayerHeader → LayerPlan, with every check that needs no payload: id, configuration, tensor
// names, shapes and sizes, digest syntax.
absl::StatusOr<LayerPlan> ToLayerPlan(const atp::v1::LayerHeader& header,
                                      const WorkerLimits& limits);

struct TimingRecord {
  uint64_t receive_us = 0;
  uint64_t queue_us = 0;
  uint64_t compute_us = 0;
};

// The response header of a request: its status and, when OK, the output headers (with their
// CRC-32C in `crcs`, one per output).
atp::v1::ResponseHeader MakeResponseHeader(uint64_t request_id, const absl::Status& status,
                                           const ComputeOutput* output,
                                           const std::vector<uint32_t>& crcs,
                                           const TimingRecord& timing);

atp::v1::LayerInfo ToLayerInfo(const LayerEntry& entry);

struct ServerDescription {
  std::string version;
  std::string backend;
  std::string device;
  bool requires_token = false;
};

atp::v1::ServerInfo ToServerInfo(const ServerDescription& description, const WorkerLimits& limits);

atp::v1::Statistics ToStatistics(const StatsSnapshot& snapshot);

}  // namespace atp::service

#endif  // ATP_SERVICE_CONVERT_H_
