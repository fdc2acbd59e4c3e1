// Group commit: decisions staged by GroupCommitStorage reach the durable storage
// only with sync(), all in one commit, exactly as if committed one by one; a
// failed sync writes nothing and a reopened gateway takes the same requests again.
#include "gateway/group_commit.hpp"

#include "tests/gateway/testkit.hpp"

using namespace tollgate;
using namespace tollgate::testkit;

namespace {

// A World whose gateway commits through a GroupCommitStorage over its MemoryStorage.
struct GroupWorld {
  World w;
  GroupCommitStorage group{w.storage};

  GroupWorld() {
    w.ready(10);
    reopen();
  }
  void reopen() {
    w.gw.reset();
    auto g =
        Gateway::open(w.device, masters_of(w.master), w.policy, group, seeded_random(w.seed++));
    REQUIRE(g.ok());
    w.gw.emplace(std::move(*g));
  }
  Gateway& g() { return w.g(); }
};

}  // namespace

TEST_CASE("a group of decisions reaches the durable storage in one commit, only at sync") {
  GroupWorld gw;
  const DeviceState before = gw.w.storage.state();
  const std::size_t commits_before = gw.w.storage.commits();
  const std::size_t audit_before = gw.w.storage.audit_log().size();

  std::vector<Bytes> nonces;
  for (int i = 0; i < 4; ++i) nonces.push_back(gw.g().issue_nonce(kT0));
  std::vector<Decision> decisions;
  for (const Bytes& n : nonces) {
    auto d = gw.g().authorize_command(gw.w.request(n), kT0, gw.w.rules);
    REQUIRE(d.ok());
    CHECK(d->kind == Decision::Kind::kExecute);
    decisions.push_back(*d);
  }
  // Decided on top of each other in memory: four uses gone, four nonces spent.
  CHECK(gw.w.uses_left() == 6);
  CHECK(decisions.back().uses_left == 6);
  // ... and nothing on "disk" yet.
  CHECK(gw.w.storage.state() == before);
  CHECK(gw.w.storage.commits() == commits_before);
  CHECK(gw.group.staged_commits() == 4);

  REQUIRE(gw.group.sync().ok());
  CHECK(gw.w.storage.commits() == commits_before + 1);
  CHECK(gw.group.syncs() == 1);
  CHECK(gw.group.synced_commits() == 4);
  CHECK_FALSE(gw.group.staged());
  // The durable state is the gateway's, and the audit log holds the four
  // decisions in the order they were made.
  REQUIRE(gw.g().flush(kT0).ok());
  REQUIRE(gw.group.sync().ok());
  CHECK(gw.w.storage.state() == gw.g().state());
  const auto& log = gw.w.storage.audit_log();
  REQUIRE(log.size() == audit_before + 4);
  for (std::size_t i = 0; i < 4; ++i) {
    const AuditEvent& e = log[audit_before + i];
    CHECK(e.kind == AuditEvent::Kind::kAuthorizeCommand);
    CHECK(e.accepted);
    CHECK(e.request_id == decisions[i].key.request_id);
    CHECK(e.uses_left == 9 - i);
  }
  // A restart finds exactly that.
  const DeviceState mine = gw.g().state();
  gw.reopen();
  CHECK(gw.g().state() == mine);
}

TEST_CASE("a failed group sync writes nothing and the reopened gateway takes the same requests") {
  GroupWorld gw;
  const DeviceState before = gw.w.storage.state();
  const Bytes n1 = gw.g().issue_nonce(kT0);
  const Bytes n2 = gw.g().issue_nonce(kT0);
  REQUIRE(gw.g().flush(kT0).ok());  // the nonces are durable, as a host would have them
  REQUIRE(gw.group.sync().ok());
  const DeviceState with_nonces = gw.w.storage.state();
  CHECK(with_nonces != before);

  const Bytes r1 = gw.w.request(n1);
  const Bytes r2 = gw.w.request(n2);
  REQUIRE(gw.g().authorize_command(r1, kT0, gw.w.rules).ok());
  REQUIRE(gw.g().authorize_command(r2, kT0, gw.w.rules).ok());
  CHECK(gw.w.uses_left() == 8);

  gw.w.storage.fail_commit(1);
  CHECK(gw.group.sync().error() == v1::ERROR_STORAGE);
  CHECK(gw.w.storage.state() == with_nonces);
  CHECK(gw.group.failed());
  // Building on a state that is gone is refused until the gateway reloads.
  CHECK(gw.g().authorize_command(gw.w.request(gw.g().issue_nonce(kT0)), kT0, gw.w.rules).error() ==
        v1::ERROR_STORAGE);

  gw.reopen();
  CHECK_FALSE(gw.group.failed());
  CHECK(gw.g().state() == with_nonces);
  CHECK(gw.w.uses_left() == 10);
  // The hosts retry the same bytes: decided and charged once, now durably.
  auto d1 = gw.g().authorize_command(r1, kT0, gw.w.rules);
  auto d2 = gw.g().authorize_command(r2, kT0, gw.w.rules);
  REQUIRE(d1.ok());
  REQUIRE(d2.ok());
  CHECK(d1->kind == Decision::Kind::kExecute);
  CHECK(d2->kind == Decision::Kind::kExecute);
  REQUIRE(gw.group.sync().ok());
  CHECK(gw.w.storage.state().tokens.at(uuid(1)).uses_left == 8);
}

TEST_CASE("a sync with nothing staged touches nothing") {
  GroupWorld gw;
  const std::size_t commits = gw.w.storage.commits();
  CHECK(gw.group.sync().ok());
  CHECK(gw.w.storage.commits() == commits);
  CHECK(gw.group.syncs() == 0);
}

TEST_CASE("pipelined: the next group is decided while the sealed one is written") {
  GroupWorld gw;
  std::vector<Bytes> nonces;
  for (int i = 0; i < 4; ++i) nonces.push_back(gw.g().issue_nonce(kT0));
  REQUIRE(gw.g().flush(kT0).ok());
  REQUIRE(gw.group.sync().ok());

  REQUIRE(gw.g().authorize_command(gw.w.request(nonces[0]), kT0, gw.w.rules).ok());
  REQUIRE(gw.g().authorize_command(gw.w.request(nonces[1]), kT0, gw.w.rules).ok());
  auto first = gw.group.seal();
  REQUIRE(first.has_value());
  CHECK(first->commits == 2);
  CHECK(gw.group.writing());
  CHECK_FALSE(gw.group.seal().has_value());              // one group in flight at a time
  CHECK(gw.group.sync().error() == v1::ERROR_INTERNAL);  // not while it is written
  REQUIRE(gw.g().authorize_command(gw.w.request(nonces[2]), kT0, gw.w.rules).ok());
  CHECK(gw.group.staged_commits() == 1);

  const Status written = gw.group.write(*first);
  REQUIRE(written.ok());
  gw.group.finish(*first, written);
  CHECK(gw.w.storage.state().tokens.at(uuid(1)).uses_left == 8);  // the first group only
  REQUIRE(gw.group.sync().ok());
  CHECK(gw.w.storage.state().tokens.at(uuid(1)).uses_left == 7);
  CHECK(gw.group.synced_commits() == 3 + 1);  // and the nonces' flush before
}

TEST_CASE("pipelined: a failed write voids the group decided on top of it") {
  GroupWorld gw;
  std::vector<Bytes> nonces;
  for (int i = 0; i < 2; ++i) nonces.push_back(gw.g().issue_nonce(kT0));
  REQUIRE(gw.g().flush(kT0).ok());
  REQUIRE(gw.group.sync().ok());
  const DeviceState durable = gw.w.storage.state();

  REQUIRE(gw.g().authorize_command(gw.w.request(nonces[0]), kT0, gw.w.rules).ok());
  auto sealed = gw.group.seal();
  REQUIRE(sealed.has_value());
  REQUIRE(gw.g().authorize_command(gw.w.request(nonces[1]), kT0, gw.w.rules).ok());
  gw.w.storage.fail_commit(1);
  const Status written = gw.group.write(*sealed);
  CHECK(written.error() == v1::ERROR_STORAGE);
  gw.group.finish(*sealed, written);
  CHECK(gw.group.failed());
  CHECK_FALSE(gw.group.staged());
  CHECK(gw.group.sync().error() == v1::ERROR_STORAGE);
  CHECK(gw.w.storage.state() == durable);
  gw.reopen();
  CHECK(gw.g().state() == durable);
  CHECK(gw.w.uses_left() == 10);
}
