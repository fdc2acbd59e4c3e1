// The storage contract: one atomic delta per decision, a failed commit changes
// nothing, a restart resumes everything, and every decision is audited.
#include <functional>

#include "tests/gateway/testkit.hpp"

using namespace tollgate;
using namespace tollgate::testkit;

namespace {

struct Step {
  const char* what;
  std::function<Error(World&)> run;
};

// Out of line: GCC 12 reports false -Wstringop-overread on inlined comparisons
// of small constant vectors.
[[gnu::noinline]] Bytes key(std::uint8_t n) {
  return uuid(n);
}

Error error_of(const auto& result) {
  return result.ok() ? v1::ERROR_UNSPECIFIED : result.error();
}

// A device's busy day, one gateway call per step, all at the same clock so a
// retried step sees the same time.
std::vector<Step> busy_day() {
  auto nonce = std::make_shared<Bytes>();
  auto request = std::make_shared<Bytes>();
  auto decision = std::make_shared<Decision>();
  auto authorize = [=](World& w) {
    auto d = w.g().authorize_command(*request, kT0, w.rules);
    if (d.ok()) *decision = *d;
    return error_of(d);
  };
  return {
      {"install authorization 1",
       [](World& w) { return error_of(w.g().install_authorization(w.authorization(1), kT0)); }},
      {"offer token 1", [](World& w) { return error_of(w.g().offer_token(w.token(1, 3), kT0)); }},
      {"offer token 2 (service)",
       [](World& w) {
         auto t = token_body(2, w.device, w.user.public_key(), 1, 2, kT0 - 60, kT0 + 30 * kDay);
         add_role(t, "service");
         return error_of(w.g().offer_token(sign_token(w.cloud, t), kT0));
       }},
      {"issue nonce",
       [=](World& w) {
         *nonce = w.g().issue_nonce(kT0);
         *request = w.request(*nonce, "measure");
         return v1::ERROR_UNSPECIFIED;
       }},
      {"authorize measure", authorize},
      {"complete measure",
       [=](World& w) {
         Status st = w.g().complete_request(decision->key, Bytes{7, 7});
         return st.error();
       }},
      {"install authorization 2 revoking 5",
       [](World& w) {
         return error_of(w.g().install_authorization(w.authorization(2, {5}), kT0));
       }},
      {"sign calibrate with the next nonce",
       [=](World& w) {
         *request = w.request(decision->next_nonce, "calibrate");
         return v1::ERROR_UNSPECIFIED;
       }},
      {"authorize calibrate", authorize},
      {"rejected command", [](World& w) { return error_of(w.run("self-destruct", kT0)); }},
      {"flush",
       [](World& w) {
         Status st = w.g().flush(kT0);
         return st.error();
       }},
  };
}

}  // namespace

TEST_CASE("storage failure on the Nth commit leaves no partial change, and a retry completes") {
  std::size_t last_failing = 0;
  for (std::size_t n = 1; n < 50; ++n) {
    CAPTURE(n);
    World w;
    w.storage.fail_commit(n);
    std::size_t failures = 0;
    std::size_t storage_rejections = 0;
    for (const auto& step : busy_day()) {
      const std::string what = step.what;
      CAPTURE(what);
      // The floor follows the clock even when a decision fails; all else stays.
      DeviceState memory_before = w.g().state();
      memory_before.time_floor = std::max(memory_before.time_floor, kT0);
      const DeviceState durable_before = w.storage.state();
      const auto audited_before = w.storage.audit_log().size();
      Error e = step.run(w);
      if (e == v1::ERROR_STORAGE) {
        ++failures;
        // A failed decision is audited as a storage rejection; a failed flush
        // only keeps its queue for the retry.
        if (std::string_view(step.what) != "flush") ++storage_rejections;
        CHECK(w.g().state() == memory_before);
        CHECK(w.storage.state() == durable_before);
        CHECK(w.storage.audit_log().size() == audited_before);
        e = step.run(w);  // storage is back: the same call now succeeds
      }
      const bool expected_rejection = std::string_view(step.what) == "rejected command";
      CHECK(e == (expected_rejection ? v1::ERROR_UNKNOWN_COMMAND : v1::ERROR_UNSPECIFIED));
    }
    // Whatever failed on the way, the device ends where a clean run ends.
    const DeviceState& s = w.storage.state();
    CHECK(s.authorizations.size() == 2);
    CHECK(s.revoked_ids == std::set<std::uint64_t>{5});
    CHECK(s.tokens.size() == 1);
    CHECK(s.tokens.at(uuid(1)).uses_left == 2);
    CHECK(s.tombstones.count(uuid(2)) == 1);
    CHECK(s.idempotency.size() == 2);
    CHECK(w.g().state() == s);
    CHECK(w.g().pending().empty());
    // Seven audited decisions, each logged once, plus one event per storage rejection.
    CHECK(w.storage.audit_log().size() == 7 + storage_rejections);
    if (failures == 0) break;
    last_failing = n;
  }
  CHECK(last_failing >= 5);  // the loop really reached every commit of the scenario
}

TEST_CASE("restart from the persisted state resumes tokens, uses, revocations, floor and nonces") {
  World w;
  w.ready(3);
  REQUIRE(w.g().install_authorization(w.authorization(2, {9}), kT0 + 5).ok());
  auto d = w.run("measure", kT0 + 10);
  REQUIRE(d.ok());
  REQUIRE(w.g().complete_request(d->key, Bytes{1}));
  REQUIRE(w.g().flush(kT0 + 10));
  const DeviceState before = w.g().state();
  CHECK(w.storage.state() == before);

  w.open();
  CHECK(w.g().state() == before);
  CHECK(w.g().time_floor() == kT0 + 10);
  // The nonce handed out with the last decision still works after the restart.
  auto next = w.g().authorize_command(w.request(d->next_nonce), kT0 + 11, w.rules);
  REQUIRE(next.ok());
  CHECK(next->uses_left == 1);
  CHECK(w.g().install_authorization(w.authorization(9), kT0 + 12).error() == v1::ERROR_REVOKED);
}

TEST_CASE("rejection that changes nothing waits for the next commit to be audited") {
  World w;
  w.ready(3);
  const auto commits = w.storage.commits();
  CHECK(w.g().offer_token(Bytes{1, 2, 3}, kT0).error() == v1::ERROR_MALFORMED);
  CHECK(w.storage.commits() == commits);
  REQUIRE(w.g().pending().audit.size() == 1);
  REQUIRE(w.run().ok());
  CHECK(w.storage.commits() == commits + 1);
  CHECK(w.g().pending().audit.empty());
  const auto& log = w.storage.audit_log();
  REQUIRE(log.size() >= 2);
  CHECK(log[log.size() - 2].reason == v1::ERROR_MALFORMED);
  CHECK(log.back().accepted);
}

TEST_CASE("queued audit events are committed on their own when the queue is full") {
  World w;
  w.policy.max_pending_audit_events = 4;
  w.open();
  const auto commits = w.storage.commits();
  for (int i = 0; i < 4; ++i) CHECK_FALSE(w.g().offer_token(Bytes{1}, kT0).ok());
  CHECK(w.storage.commits() == commits + 1);
  CHECK(w.storage.audit_log().size() == 4);
  CHECK(w.g().pending().audit.empty());
}

TEST_CASE("audit events dropped while storage keeps failing are counted in the log") {
  World w;
  w.policy.max_pending_audit_events = 4;
  w.open();
  w.storage.fail_all_commits(true);
  for (int i = 0; i < 10; ++i) CHECK_FALSE(w.g().offer_token(Bytes{1}, kT0).ok());
  CHECK(w.g().pending().audit.size() < 4);
  w.storage.fail_all_commits(false);
  REQUIRE(w.g().flush(kT0));
  const auto& log = w.storage.audit_log();
  REQUIRE_FALSE(log.empty());
  CHECK(log.front().kind == AuditEvent::Kind::kAuditEventsDropped);
  CHECK(log.front().count + (log.size() - 1) == 10);
}

TEST_CASE("storage failure during a command leaves its nonce usable and charges nothing") {
  World w;
  w.ready(3);
  Bytes req = w.request(w.g().issue_nonce(kT0));
  w.storage.fail_commit(1);
  CHECK(w.g().authorize_command(req, kT0, w.rules).error() == v1::ERROR_STORAGE);
  CHECK(w.uses_left() == 3);
  CHECK(w.storage.state().tokens.at(uuid(1)).uses_left == 3);
  auto d = w.g().authorize_command(req, kT0, w.rules);
  REQUIRE(d.ok());
  CHECK(d->kind == Decision::Kind::kExecute);
  CHECK(d->uses_left == 2);
}

TEST_CASE("state delta folding cancels a put by a later removal and keeps the order irrelevant") {
  StateDelta a;
  a.put_nonce(key(1), NonceRecord{10});
  a.put_token(key(2), StoredToken{key(9), 3});
  StateDelta b;
  b.remove_nonce(key(1));
  b.put_token(key(2), StoredToken{key(9), 2});
  b.remove_tombstone(key(3));
  b.raise_floor(50);
  a.then(b);
  CHECK(a.nonces_put.empty());
  CHECK(a.nonces_removed == std::set<Bytes>{key(1)});
  CHECK(a.tokens_put.at(key(2)).uses_left == 2);
  StateDelta c;
  c.put_tombstone(key(3), 99);
  a.then(c);
  CHECK(a.tombstones_removed.empty());
  CHECK(a.tombstones_put.at(key(3)) == 99);

  DeviceState s;
  s.nonces[key(1)] = NonceRecord{10};
  apply(s, a);
  CHECK(s.nonces.empty());
  CHECK(s.tokens.at(key(2)).uses_left == 2);
  CHECK(s.tombstones.at(key(3)) == 99);
  CHECK(s.time_floor == 50);
  StateDelta lower;
  lower.time_floor = 10;
  apply(s, lower);
  CHECK(s.time_floor == 50);  // the floor never goes down
}

TEST_CASE("opening fails with a specific reason for bad setup or unreadable storage") {
  World w;
  MemoryStorage storage;
  std::vector<crypto::PublicKey> masters;
  masters.push_back(w.master.public_key().clone());
  CHECK(Gateway::open(Bytes(15, 0), std::move(masters), w.policy, storage).error() ==
        v1::ERROR_MALFORMED);
  CHECK(Gateway::open(w.device, {}, w.policy, storage).error() == v1::ERROR_MALFORMED);
  storage.fail_load(true);
  std::vector<crypto::PublicKey> again;
  again.push_back(w.master.public_key().clone());
  CHECK(Gateway::open(w.device, std::move(again), w.policy, storage).error() == v1::ERROR_STORAGE);
}

TEST_CASE("stored authorization no longer signed by a firmware master key is uninstalled at open") {
  World w;
  w.ready(3);
  auto new_master = make_key();
  std::vector<crypto::PublicKey> masters;
  masters.push_back(new_master.public_key().clone());
  auto g = Gateway::open(w.device, std::move(masters), w.policy, w.storage);
  REQUIRE(g.ok());
  CHECK(g->state().authorizations.empty());
  CHECK(g->state().tokens.size() == 1);  // its uses are not forgotten
  Bytes nonce = g->issue_nonce(kT0);
  CHECK(g->authorize_command(w.request(nonce), kT0, w.rules).error() ==
        v1::ERROR_AUTHORIZATION_NOT_INSTALLED);
}
