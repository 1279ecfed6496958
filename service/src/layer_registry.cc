#include "layer_registry.h"

#include <set>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"

namespace atp::service {
namespace {

std::string ShapeText(const std::vector<int64_t>& shape) {
  return absl::StrCat("[", absl::StrJoin(shape, ","), "]");
}

}  // namespace

absl::Status ValidateLayerId(absl::string_view id) {
  if (id.empty() || id.size() > 128) {
    return absl::InvalidArgumentError(
        absl::StrCat("layer_id has ", id.size(), " characters, want 1 to 128"));
  }
  for (char c : id) {
    const bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
                    c == '.' || c == '_' || c == ':' || c == '/' || c == '-';
    if (!ok) {
      return absl::InvalidArgumentError(absl::StrCat("layer_id contains the byte 0x",
                                                     absl::Hex(static_cast<unsigned char>(c)),
                                                     ", want only [A-Za-z0-9._:/-]"));
    }
  }
  return absl::OkStatus();
}

absl::Status ValidateLayerTensors(const kernels::LayerSpec& spec,
                                  const std::vector<wire::TensorLayout>& tensors) {
  // name -> (shape, required)
  std::map<std::string, std::pair<std::vector<int64_t>, bool>> want;
  if (spec.kind == kernels::LayerSpec::Kind::kAttention) {
    const kernels::AttentionConfig& c = spec.attention;
    const int64_t q_rows = c.num_heads * c.head_dim;
    const int64_t kv_rows = c.kv_heads() * c.head_dim;
    const std::pair<const char*, std::vector<int64_t>> projs[] = {{"q_proj", {q_rows, c.d_model}},
                                                                  {"k_proj", {kv_rows, c.d_model}},
                                                                  {"v_proj", {kv_rows, c.d_model}},
                                                                  {"o_proj", {c.d_model, q_rows}}};
    for (const auto& [name, shape] : projs) {
      want[absl::StrCat(name, ".weight")] = {shape, true};
      want[absl::StrCat(name, ".bias")] = {{shape[0]}, false};
    }
  } else {
    const wire::TensorLayout* weight = nullptr;
    for (const auto& t : tensors) {
      if (t.name == "weight") weight = &t;
    }
    if (weight == nullptr) {
      return absl::InvalidArgumentError("linear layer has no tensor \"weight\", want [n, d]");
    }
    if (weight->shape.size() != 2) {
      return absl::InvalidArgumentError(absl::StrCat("weight has shape ", ShapeText(weight->shape),
                                                     ", want 2 dimensions [n, d]"));
    }
    want["weight"] = {weight->shape, true};
    want["bias"] = {{weight->shape[0]}, false};
  }
  std::set<std::string> seen;
  for (const auto& t : tensors) {
    if (!seen.insert(t.name).second) {
      return absl::InvalidArgumentError(absl::StrCat("tensor \"", t.name, "\" appears twice"));
    }
    auto it = want.find(t.name);
    if (it == want.end()) {
      std::vector<std::string> names;
      for (const auto& [n, w] : want) names.push_back(n);
      return absl::InvalidArgumentError(absl::StrCat("layer has an unknown tensor \"", t.name,
                                                     "\", want one of ",
                                                     absl::StrJoin(names, ", ")));
    }
    if (t.shape != it->second.first) {
      return absl::InvalidArgumentError(absl::StrCat(t.name, " has shape ", ShapeText(t.shape),
                                                     ", want ", ShapeText(it->second.first)));
    }
  }
  for (const auto& [name, w] : want) {
    if (w.second && seen.count(name) == 0) {
      return absl::InvalidArgumentError(
          absl::StrCat("layer is missing ", name, ", want shape ", ShapeText(w.first)));
    }
  }
  return absl::OkStatus();
}

LayerRegistry::Reservation::Reservation(Reservation&& other) noexcept
    : registry_(std::exchange(other.registry_, nullptr)), bytes_(std::exchange(other.bytes_, 0)) {}

LayerRegistry::Reservation& LayerRegistry::Reservation::operator=(Reservation&& other) noexcept {
  if (this != &other) {
    if (registry_ != nullptr) registry_->Unreserve(bytes_);
    registry_ = std::exchange(other.registry_, nullptr);
    bytes_ = std::exchange(other.bytes_, 0);
  }
  return *this;
}

LayerRegistry::Reservation::~Reservation() {
  if (registry_ != nullptr) registry_->Unreserve(bytes_);
}

LayerRegistry::LayerRegistry(uint64_t max_resident_bytes) : max_bytes_(max_resident_bytes) {}

std::shared_ptr<const LayerEntry> LayerRegistry::Find(absl::string_view id) const {
  absl::MutexLock lock(&mu_);
  auto it = layers_.find(id);
  return it == layers_.end() ? nullptr : it->second;
}

absl::StatusOr<std::shared_ptr<const LayerEntry>> LayerRegistry::Get(absl::string_view id) const {
  auto entry = Find(id);
  if (entry == nullptr) {
    return absl::NotFoundError(absl::StrCat("layer \"", id,
                                            "\" is not registered on this worker; register it "
                                            "(again) and retry"));
  }
  return entry;
}

absl::StatusOr<LayerRegistry::Reservation> LayerRegistry::Reserve(uint64_t bytes,
                                                                  absl::string_view id) {
  absl::MutexLock lock(&mu_);
  const uint64_t used = resident_ + reserved_;
  if (bytes > max_bytes_ || used > max_bytes_ - bytes) {
    return absl::ResourceExhaustedError(absl::StrCat(
        "layer \"", id, "\" needs ", bytes, " bytes of resident memory, but ", used, " of the ",
        max_bytes_, " bytes allowed for layers are in use (--max-resident-layer-bytes)"));
  }
  reserved_ += bytes;
  return Reservation(this, bytes);
}

void LayerRegistry::Unreserve(uint64_t bytes) {
  absl::MutexLock lock(&mu_);
  reserved_ -= bytes;
}

absl::StatusOr<LayerRegistry::InsertResult> LayerRegistry::Insert(std::unique_ptr<LayerEntry> entry,
                                                                  bool replace,
                                                                  Reservation reservation) {
  InsertResult result;
  std::shared_ptr<const LayerEntry> dropped;  // destroyed outside the lock
  {
    absl::MutexLock lock(&mu_);
    auto it = layers_.find(entry->id);
    if (it != layers_.end()) {
      if (it->second->digest == entry->digest) {
        result.entry = it->second;
        result.already_registered = true;
      } else if (!replace) {
        return absl::AlreadyExistsError(absl::StrCat(
            "layer \"", entry->id, "\" is registered with digest ", it->second->digest,
            " and this upload has digest ", entry->digest, "; set replace to swap it"));
      } else {
        resident_ -= it->second->resident_bytes;
        dropped = std::move(it->second);
        layers_.erase(it);
      }
    }
    if (!result.already_registered) {
      resident_ += entry->resident_bytes;
      std::string id = entry->id;
      result.entry = std::shared_ptr<const LayerEntry>(std::move(entry));
      layers_.emplace(std::move(id), result.entry);
    }
  }
  // `reservation` is released when it goes out of scope, after the resident bytes were added.
  Notify();
  return result;
}

absl::StatusOr<uint64_t> LayerRegistry::Remove(absl::string_view id) {
  std::shared_ptr<const LayerEntry> dropped;
  {
    absl::MutexLock lock(&mu_);
    auto it = layers_.find(id);
    if (it == layers_.end()) {
      return absl::NotFoundError(
          absl::StrCat("layer \"", id, "\" is not registered on this worker"));
    }
    dropped = std::move(it->second);
    resident_ -= dropped->resident_bytes;
    layers_.erase(it);
  }
  Notify();
  return dropped->resident_bytes;
}

std::vector<std::shared_ptr<const LayerEntry>> LayerRegistry::List() const {
  absl::MutexLock lock(&mu_);
  std::vector<std::shared_ptr<const LayerEntry>> out;
  out.reserve(layers_.size());
  for (const auto& [id, entry] : layers_) out.push_back(entry);
  return out;
}

uint64_t LayerRegistry::resident_bytes() const {
  absl::MutexLock lock(&mu_);
  return resident_;
}

size_t LayerRegistry::size() const {
  absl::MutexLock lock(&mu_);
  return layers_.size();
}

void LayerRegistry::Clear() {
  std::map<std::string, std::shared_ptr<const LayerEntry>, std::less<>> dropped;
  {
    absl::MutexLock lock(&mu_);
    dropped.swap(layers_);
    resident_ = 0;
  }
  Notify();
}

void LayerRegistry::Notify() {
  if (!observer_) return;
  size_t n;
  uint64_t bytes;
  {
    absl::MutexLock lock(&mu_);
    n = layers_.size();
    bytes = resident_;
  }
  observer_(n, bytes);
}

}  // namespace atp::service
