// Group commit of issuances, shared by the store backends: concurrent
// record_issuances callers queue their request; whichever finds no batch in
// progress becomes the leader, takes every queued request and hands them to the
// backend's commit function as one batch (one transaction, one flush); the others
// wait for their outcome. A request's outcome or error is its own.
#pragma once

#include <condition_variable>
#include <exception>
#include <functional>
#include <memory>
#include <mutex>
#include <vector>

#include "tools/cloud/store.hpp"

namespace tollgate::cloud {

class IssuanceBatcher {
 public:
  struct Pending {
    const std::vector<IssuanceRecord>* tokens = nullptr;
    const IssuanceGuard* guard = nullptr;
    IssueOutcome outcome = IssueOutcome::kRecorded;
    std::exception_ptr error;
    bool done = false;
    // Its own wake-up: a finished batch wakes only its members (and the next
    // leader), not every caller queued behind it.
    std::condition_variable wake;
  };
  // Commits a batch: sets each request's outcome, or its error (a failed
  // commit sets every request's error). Must not throw.
  using CommitFn = std::function<void(std::vector<Pending*>& batch)>;

  // Records `tokens` (all for one user and device, else StoreError) through a
  // batch committed by `commit`; returns the request's outcome or rethrows its error.
  IssueOutcome submit(const std::vector<IssuanceRecord>& tokens, const IssuanceGuard& guard,
                      const CommitFn& commit);

 private:
  std::mutex mu_;
  // Shared with the leader, which wakes a batch after letting go of mu_ (so
  // the woken do not block on it) while the woken may already have returned.
  std::vector<std::shared_ptr<Pending>> queue_;
  bool leader_active_ = false;
};

}  // namespace tollgate::cloud
