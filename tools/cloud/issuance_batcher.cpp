#include "tools/cloud/issuance_batcher.hpp"

namespace tollgate::cloud {

IssueOutcome IssuanceBatcher::submit(const std::vector<IssuanceRecord>& tokens,
                                     const IssuanceGuard& guard, const CommitFn& commit) {
  if (tokens.empty()) return IssueOutcome::kRecorded;
  for (const auto& t : tokens) {
    if (t.user_id != tokens.front().user_id || t.device_id != tokens.front().device_id) {
      throw StoreError("mixed issuance batch");
    }
  }
  Pending me;
  me.tokens = &tokens;
  me.guard = &guard;
  std::unique_lock lk(mu_);
  queue_.push_back(&me);
  while (!me.done) {
    if (leader_active_) {
      cv_.wait(lk);
      continue;
    }
    leader_active_ = true;
    std::vector<Pending*> batch;
    batch.swap(queue_);
    lk.unlock();
    commit(batch);
    lk.lock();
    for (Pending* p : batch) p->done = true;
    leader_active_ = false;
    cv_.notify_all();
  }
  if (me.error) std::rethrow_exception(me.error);
  return me.outcome;
}

}  // namespace tollgate::cloud
