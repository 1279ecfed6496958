#include "payload_pool.h"

#include <sys/mman.h>

#include <cstdlib>
#include <new>
#include <utility>

namespace atp::service {
namespace {

// Below this, plain heap memory (malloc's arenas already reuse it).
constexpr size_t kMinPooled = size_t{1} << 20;
constexpr size_t kHugePage = size_t{2} << 20;

size_t SizeClass(size_t size) {
  size_t c = kMinPooled;
  while (c < size) c <<= 1;
  return c;
}

uint8_t* MapBuffer(size_t capacity) {
  void* p = ::mmap(nullptr, capacity, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (p == MAP_FAILED) throw std::bad_alloc();
  if (capacity >= kHugePage) ::madvise(p, capacity, MADV_HUGEPAGE);  // advisory; may be off
  return static_cast<uint8_t*>(p);
}

void UnmapBuffer(uint8_t* data, size_t capacity) { ::munmap(data, capacity); }

}  // namespace

PooledBuffer::PooledBuffer(PooledBuffer&& other) noexcept
    : pool_(std::exchange(other.pool_, nullptr)),
      data_(std::exchange(other.data_, nullptr)),
      size_(std::exchange(other.size_, 0)),
      capacity_(std::exchange(other.capacity_, 0)) {}

PooledBuffer& PooledBuffer::operator=(PooledBuffer&& other) noexcept {
  if (this != &other) {
    Release();
    pool_ = std::exchange(other.pool_, nullptr);
    data_ = std::exchange(other.data_, nullptr);
    size_ = std::exchange(other.size_, 0);
    capacity_ = std::exchange(other.capacity_, 0);
  }
  return *this;
}

PooledBuffer::~PooledBuffer() { Release(); }

void PooledBuffer::Release() {
  if (data_ == nullptr) return;
  if (capacity_ == 0) {
    delete[] data_;
  } else {
    pool_->Return(data_, capacity_);
  }
  data_ = nullptr;
}

PayloadPool::~PayloadPool() {
  for (auto& [capacity, buffers] : free_) {
    for (uint8_t* p : buffers) UnmapBuffer(p, capacity);
  }
}

PooledBuffer PayloadPool::Acquire(size_t size) {
  if (size < kMinPooled) return PooledBuffer(this, new uint8_t[size == 0 ? 1 : size], size, 0);
  const size_t capacity = SizeClass(size);
  {
    absl::MutexLock lock(&mu_);
    auto it = free_.find(capacity);
    if (it != free_.end() && !it->second.empty()) {
      uint8_t* p = it->second.back();
      it->second.pop_back();
      cached_ -= capacity;
      return PooledBuffer(this, p, size, capacity);
    }
  }
  return PooledBuffer(this, MapBuffer(capacity), size, capacity);
}

void PayloadPool::Return(uint8_t* data, size_t capacity) {
  {
    absl::MutexLock lock(&mu_);
    if (cached_ + capacity <= max_cached_) {
      free_[capacity].push_back(data);
      cached_ += capacity;
      return;
    }
  }
  UnmapBuffer(data, capacity);
}

uint64_t PayloadPool::cached_bytes() const {
  absl::MutexLock lock(&mu_);
  return cached_;
}

}  // namespace atp::service
