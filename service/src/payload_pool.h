// Buffers for request payloads, reused across requests.
//
// A fresh multi-megabyte allocation is an mmap whose every page faults in (and is zeroed by the
// kernel) on first touch; a profile of a 256 MiB round trip showed that as a quarter of the
// worker's time. The pool keeps released buffers by power-of-two size class (up to a cap of cached
// bytes) and hands them out again; large buffers are mapped with transparent huge pages when the
// kernel allows it. Contents of a buffer from Acquire() are undefined. Thread-safe.
#ifndef ATP_SERVICE_PAYLOAD_POOL_H_
#define ATP_SERVICE_PAYLOAD_POOL_H_

#include <cstddef>
#include <cstdint>
#include <map>
#include <memory>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/synchronization/mutex.h"

namespace atp::service {

class PayloadPool;

// A buffer of at least size() bytes; returned to its pool when destroyed. Move-only.
class PooledBuffer {
 public:
  PooledBuffer() = default;
  PooledBuffer(PooledBuffer&& other) noexcept;
  PooledBuffer& operator=(PooledBuffer&& other) noexcept;
  ~PooledBuffer();

  uint8_t* data() const { return data_; }
  size_t size() const { return size_; }

 private:
  friend class PayloadPool;
  PooledBuffer(PayloadPool* pool, uint8_t* data, size_t size, size_t capacity)
      : pool_(pool), data_(data), size_(size), capacity_(capacity) {}
  void Release();

  PayloadPool* pool_ = nullptr;
  uint8_t* data_ = nullptr;
  size_t size_ = 0;
  size_t capacity_ = 0;
};

class PayloadPool {
 public:
  // Keeps at most `max_cached_bytes` of released buffers.
  explicit PayloadPool(uint64_t max_cached_bytes) : max_cached_(max_cached_bytes) {}
  // Frees the cached buffers; every PooledBuffer must be gone by then.
  ~PayloadPool();
  PayloadPool(const PayloadPool&) = delete;
  PayloadPool& operator=(const PayloadPool&) = delete;

  PooledBuffer Acquire(size_t size);

  uint64_t cached_bytes() const;

 private:
  friend class PooledBuffer;
  void Return(uint8_t* data, size_t capacity);

  const uint64_t max_cached_;
  mutable absl::Mutex mu_;
  std::map<size_t, std::vector<uint8_t*>> free_ ABSL_GUARDED_BY(mu_);
  uint64_t cached_ ABSL_GUARDED_BY(mu_) = 0;
};

}  // namespace atp::service

#endif  // ATP_SERVICE_PAYLOAD_POOL_H_
