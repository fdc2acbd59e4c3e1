#include "gateway/memory_storage.hpp"

namespace tollgate {

Result<DeviceState> MemoryStorage::load() {
  if (fail_load_) return v1::ERROR_STORAGE;
  return state_;
}

Status MemoryStorage::commit(const StateDelta& delta) {
  if (fail_all_) return v1::ERROR_STORAGE;
  if (fail_countdown_ > 0 && --fail_countdown_ == 0) return v1::ERROR_STORAGE;
  apply(state_, delta);
  audit_.insert(audit_.end(), delta.audit.begin(), delta.audit.end());
  last_ = delta;
  ++commits_;
  return {};
}

}  // namespace tollgate
