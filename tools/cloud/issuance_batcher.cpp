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
  auto me = std::make_shared<Pending>();
  me->tokens = &tokens;
  me->guard = &guard;
  std::unique_lock lk(mu_);
  queue_.push_back(me);
  while (!me->done) {
    if (leader_active_) {
      me->wake.wait(lk);
      continue;
    }
    leader_active_ = true;
    std::vector<std::shared_ptr<Pending>> batch;
    batch.swap(queue_);
    lk.unlock();
    std::vector<Pending*> members;
    members.reserve(batch.size());
    for (const auto& p : batch) members.push_back(p.get());
    commit(members);
    lk.lock();
    for (const auto& p : batch) p->done = true;
    leader_active_ = false;
    // Whoever queued meanwhile needs a leader: the oldest one leads next.
    std::shared_ptr<Pending> next = queue_.empty() ? nullptr : queue_.front();
    lk.unlock();
    for (const auto& p : batch) {
      if (p != me) p->wake.notify_one();
    }
    if (next) next->wake.notify_one();
    lk.lock();
  }
  if (me->error) std::rethrow_exception(me->error);
  return me->outcome;
}

}  // namespace tollgate::cloud
