// Group commit: several gateway decisions made durable by ONE Storage::commit.
//
// A GroupCommitStorage sits between a Gateway and its durable Storage. The
// gateway's commits are staged in memory, folded into one delta in order
// (StateDelta::then; audit events keep their order), and succeed at once;
// sync() then writes everything staged as one delta, i.e. one transaction and
// one fsync for a whole group of decisions. An instrument serving several links
// decides the requests that arrived together back to back and pays one fsync for
// all of them, instead of one each.
//
// The durability contract moves to the caller: a decision made over this storage
// is durable only once sync() has succeeded. Nothing may execute and no answer
// may leave the device before that (charge before execute). With sync() right
// after every gateway call it behaves exactly like the durable storage.
//
// Failure: if sync() fails, nothing staged was written (the durable storage's
// commit is all or nothing) and the storage refuses further commits until load()
// is called. The gateway's memory is then ahead of the disk: the caller answers
// the group's requests with ERROR_STORAGE and reopens the Gateway
// (Gateway::open reloads through load(), which drops what was staged).
//
// Pure: no I/O of its own. Not thread-safe (one per gateway, one loop).
#pragma once

#include <cstddef>
#include <cstdint>
#include <optional>

#include "gateway/storage.hpp"

namespace tollgate {

class GroupCommitStorage final : public Storage {
 public:
  // `durable` must outlive this object.
  explicit GroupCommitStorage(Storage& durable) : durable_(durable) {}

  // Drops anything staged and loads the durable state; clears a failed state
  // when that load succeeds.
  Result<DeviceState> load() override;
  // Stages `delta` for the next sync(). ERROR_STORAGE only after a failed sync()
  // (until load()): the state that delta was computed from is gone.
  Status commit(const StateDelta& delta) override;

  // Writes everything staged as one delta through the durable storage. Nothing
  // staged: succeeds without touching it. On ERROR_STORAGE nothing was written
  // and the staged changes are discarded (see the failure contract above).
  // ERROR_INTERNAL while a sealed group is being written (see seal()).
  Status sync();

  // sync() in two steps, for a caller that writes on another thread so that the
  // next group can be decided meanwhile (pipelining):
  //   auto sealed = group.seal();          // loop thread: takes what is staged
  //   Status st = group.write(*sealed);    // any thread: the durable commit
  //   group.finish(st);                    // loop thread, before the next seal()
  // Between seal() and finish() new commits are staged for the next group; only
  // write() may run on the other thread, and nothing else may use the durable
  // storage meanwhile. seal() returns nullopt when nothing is staged (then no
  // write/finish), or after a failed sync (then ERROR_STORAGE is implied).
  struct Sealed {
    StateDelta delta;
    std::size_t commits = 0;
  };
  std::optional<Sealed> seal();
  Status write(const Sealed& sealed) { return durable_.commit(sealed.delta); }
  void finish(const Sealed& sealed, Status written);
  // True between seal() and finish().
  bool writing() const { return writing_; }

  // True when commits wait for sync().
  bool staged() const { return staged_commits_ > 0; }
  std::size_t staged_commits() const { return staged_commits_; }
  // True after a failed sync(), until a successful load().
  bool failed() const { return failed_; }
  // For a caller whose gateway could not be reopened after a failure: commits
  // are refused until a successful load().
  void mark_failed() { failed_ = true; }
  // Successful syncs that wrote something, and the commits they carried.
  std::uint64_t syncs() const { return syncs_; }
  std::uint64_t synced_commits() const { return synced_commits_; }

 private:
  Storage& durable_;
  StateDelta staged_;
  std::size_t staged_commits_ = 0;
  bool failed_ = false;
  bool writing_ = false;
  std::uint64_t syncs_ = 0;
  std::uint64_t synced_commits_ = 0;
};

}  // namespace tollgate
