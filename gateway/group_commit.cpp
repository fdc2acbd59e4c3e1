#include "gateway/group_commit.hpp"

#include <utility>

namespace tollgate {

Result<DeviceState> GroupCommitStorage::load() {
  staged_ = StateDelta{};
  staged_commits_ = 0;
  failed_ = false;
  writing_ = false;
  auto state = durable_.load();
  // Without the durable state the caller's memory cannot be trusted either.
  failed_ = !state.ok();
  return state;
}

Status GroupCommitStorage::commit(const StateDelta& delta) {
  if (failed_) return v1::ERROR_STORAGE;
  if (delta.empty()) return {};
  if (staged_commits_ == 0) {
    staged_ = delta;
  } else {
    staged_.then(delta);
  }
  ++staged_commits_;
  return {};
}

Status GroupCommitStorage::sync() {
  if (failed_) return v1::ERROR_STORAGE;
  if (writing_) return v1::ERROR_INTERNAL;  // the caller's sealed group is still being written
  auto sealed = seal();
  if (!sealed) return {};
  Status st = write(*sealed);
  finish(*sealed, st);
  return st;
}

std::optional<GroupCommitStorage::Sealed> GroupCommitStorage::seal() {
  if (failed_ || writing_ || staged_commits_ == 0) return std::nullopt;
  Sealed out{std::move(staged_), staged_commits_};
  staged_ = StateDelta{};
  staged_commits_ = 0;
  writing_ = true;
  return out;
}

void GroupCommitStorage::finish(const Sealed& sealed, Status written) {
  writing_ = false;
  if (!written) {
    // What was staged since was decided on top of the lost group: gone too.
    failed_ = true;
    staged_ = StateDelta{};
    staged_commits_ = 0;
    return;
  }
  ++syncs_;
  synced_commits_ += sealed.commits;
}

}  // namespace tollgate
