// The layer registry: the layers resident in the backend, by id, with their content digest and the
// memory they occupy, accounted against --max-resident-layer-bytes.
//
// Entries are shared: a compute request holds its layer from admission to its answer, so removing
// or replacing a layer never pulls weights from under a running request (the memory is returned
// to the budget at once and freed when the last request lets go). Uploads reserve their bytes
// before their payload arrives. Thread-safe.
#ifndef ATP_SERVICE_LAYER_REGISTRY_H_
#define ATP_SERVICE_LAYER_REGISTRY_H_

#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/synchronization/mutex.h"
#include "atp/kernels/backend.h"
#include "atp/wire/tensor_header.h"

namespace atp::service {

struct LayerEntry {
  std::string id;
  // Lowercase hex SHA-256 as defined at atp.v1.LayerHeader.
  std::string digest;
  // The tensors as registered, in upload order (CRC-32C included).
  std::vector<wire::TensorLayout> tensors;
  uint64_t resident_bytes = 0;
  std::unique_ptr<kernels::LayerHandle> handle;

  const kernels::LayerSpec& spec() const { return handle->spec(); }
};

// Checks the tensor list of a layer upload against its kind and configuration, before any payload
// arrives: every required name present with its shape, optional biases of the right shape, no
// unknown or repeated name. INVALID_ARGUMENT naming the tensor ("k_proj.weight has shape [64,32],
// want [64,48]"). `spec` carries the kind and configuration (its weights are ignored).
absl::Status ValidateLayerTensors(const kernels::LayerSpec& spec,
                                  const std::vector<wire::TensorLayout>& tensors);

// INVALID_ARGUMENT unless `id` has 1 to 128 characters of [A-Za-z0-9._:/-].
absl::Status ValidateLayerId(absl::string_view id);

class LayerRegistry {
 public:
  // Bytes held for an upload in progress; returned to the budget when destroyed. Move-only.
  class Reservation {
   public:
    Reservation() = default;
    Reservation(Reservation&& other) noexcept;
    Reservation& operator=(Reservation&& other) noexcept;
    ~Reservation();
    uint64_t bytes() const { return bytes_; }

   private:
    friend class LayerRegistry;
    Reservation(LayerRegistry* registry, uint64_t bytes) : registry_(registry), bytes_(bytes) {}
    LayerRegistry* registry_ = nullptr;
    uint64_t bytes_ = 0;
  };

  struct InsertResult {
    std::shared_ptr<const LayerEntry> entry;
    // The id was already registered with the same digest; that entry was kept.
    bool already_registered = false;
  };

  explicit LayerRegistry(uint64_t max_resident_bytes);

  // nullptr when absent.
  std::shared_ptr<const LayerEntry> Find(absl::string_view id) const;
  // NOT_FOUND naming the id when absent.
  absl::StatusOr<std::shared_ptr<const LayerEntry>> Get(absl::string_view id) const;

  // RESOURCE_EXHAUSTED when `bytes` more would exceed the limit (resident plus reserved).
  absl::StatusOr<Reservation> Reserve(uint64_t bytes, absl::string_view id);

  // Adds a loaded layer, consuming the reservation made for it. Same id and digest as a resident
  // layer: keeps that one (already_registered). Same id, other digest: ALREADY_EXISTS unless
  // `replace`, which swaps the entry.
  absl::StatusOr<InsertResult> Insert(std::unique_ptr<LayerEntry> entry, bool replace,
                                      Reservation reservation);

  // Removes a layer; returns the bytes it occupied. NOT_FOUND naming the id.
  absl::StatusOr<uint64_t> Remove(absl::string_view id);

  // Every resident layer, by id.
  std::vector<std::shared_ptr<const LayerEntry>> List() const;

  uint64_t resident_bytes() const;
  uint64_t max_resident_bytes() const { return max_bytes_; }
  size_t size() const;

  // Drops every entry (at shutdown, before the backend goes away).
  void Clear();

  // Called with (layers, resident bytes) after every change, outside the registry's lock. Set
  // before use.
  void set_observer(std::function<void(size_t, uint64_t)> observer) {
    observer_ = std::move(observer);
  }

 private:
  void Unreserve(uint64_t bytes);
  void Notify();

  const uint64_t max_bytes_;
  std::function<void(size_t, uint64_t)> observer_;
  mutable absl::Mutex mu_;
  std::map<std::string, std::shared_ptr<const LayerEntry>, std::less<>> layers_
      ABSL_GUARDED_BY(mu_);
  uint64_t resident_ ABSL_GUARDED_BY(mu_) = 0;
  uint64_t reserved_ ABSL_GUARDED_BY(mu_) = 0;
};

}  // namespace atp::service

#endif  // ATP_SERVICE_LAYER_REGISTRY_H_
