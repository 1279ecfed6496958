// What a backend call may ask its caller while it runs: whether to stop.
//
// Backends call Check() before and between compute steps (never inside a kernel) and return its
// status when it is not OK. Thread-safe if `check` is.
#ifndef ATP_KERNELS_EXEC_CONTEXT_H_
#define ATP_KERNELS_EXEC_CONTEXT_H_

#include <functional>

#include "absl/status/status.h"

namespace atp::kernels {

struct ExecContext {
  // Returns CANCELLED or DEADLINE_EXCEEDED (with a message) when the work is no longer wanted. Empty
  // means never stop.
  std::function<absl::Status()> check;

  absl::Status Check() const { return check ? check() : absl::OkStatus(); }
};

}  // namespace atp::kernels

#endif  // ATP_KERNELS_EXEC_CONTEXT_H_
