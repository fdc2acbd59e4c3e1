// Storage in memory, for tests and tools (tollgate-keys verify): keeps the
// committed state and the audit log, and can be told to fail a commit.
#pragma once

#include <cstddef>
#include <vector>

#include "gateway/storage.hpp"

namespace tollgate {

class MemoryStorage final : public Storage {
 public:
  MemoryStorage() = default;
  explicit MemoryStorage(DeviceState initial) : state_(std::move(initial)) {}

  Result<DeviceState> load() override;
  Status commit(const StateDelta& delta) override;

  // Makes the n-th commit from now fail (1 = the next one), leaving the state
  // untouched; 0 disarms. Only that one commit fails.
  void fail_commit(std::size_t n) { fail_countdown_ = n; }
  // Makes every commit fail (true) or succeed (false) until told otherwise.
  void fail_all_commits(bool fail) { fail_all_ = fail; }
  // Makes load() fail with ERROR_STORAGE.
  void fail_load(bool fail) { fail_load_ = fail; }

  const DeviceState& state() const { return state_; }
  const std::vector<AuditEvent>& audit_log() const { return audit_; }
  std::size_t commits() const { return commits_; }  // successful commits
  const StateDelta& last_delta() const { return last_; }

 private:
  DeviceState state_;
  std::vector<AuditEvent> audit_;
  StateDelta last_;
  std::size_t commits_ = 0;
  std::size_t fail_countdown_ = 0;
  bool fail_all_ = false;
  bool fail_load_ = false;
};

}  // namespace tollgate
