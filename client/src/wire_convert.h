// Conversions between the SDK's plain types and the generated atp.v1 messages: the one place
// where the client's vocabulary meets the wire's (no gRPC here). Thread-safe: pure functions.
#ifndef ATP_CLIENT_SRC_WIRE_CONVERT_H_
#define ATP_CLIENT_SRC_WIRE_CONVERT_H_

#include "atp/client/layer.h"
#include "atp/client/ops.h"
#include "atp/client/tensor.h"
#include "atp/v1/worker.pb.h"

namespace atp::client::internal {

atp::v1::DType ToWireDType(DType dtype);
atp::v1::RankPolicy ToWireRankPolicy(const RankPolicy& policy);
// A header for `view` (CRC-32C computed over its bytes).
atp::v1::TensorHeader ToTensorHeader(absl::string_view name, const TensorView& view);
// The header of a layer upload: id, configuration, tensor headers in the order of
// spec.weights() (by name), digest.
atp::v1::LayerHeader ToLayerHeader(const LayerSpec& spec);

ServerInfo FromServerInfo(const atp::v1::ServerInfo& info);
WorkerStatistics FromStatistics(const atp::v1::Statistics& stats);

}  // namespace atp::client::internal

#endif  // ATP_CLIENT_SRC_WIRE_CONVERT_H_
