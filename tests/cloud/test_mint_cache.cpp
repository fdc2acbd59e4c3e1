// The authority caches what a token request reads before it signs (session,
// user, entitlement terms, device, keys, authorization) under the store's
// change_version(). These tests prove that a change made elsewhere -- through
// a second store on the same database (the operator CLI, another server) or,
// on SQLite, by hand with the sqlite3 library -- is honoured by the very next
// request, and that what the guard owns (the balance) is never cached.
#include <sqlite3.h>

#include <thread>
#include <vector>

#include "tests/cloud/cloud_testkit.hpp"
#include "tools/cloud/issuance_batcher.hpp"

using namespace tollgate;
using namespace tollgate::cloud;
using namespace tollgate::cloud::testkit;

namespace {

// The DeviceToken inside a minted token's signed bytes.
v1::DeviceToken token_of(const Reply& r) {
  const auto& t = r.obj().at("tokens").as_array().at(0).as_object();
  auto bytes = base64_decode(std::string(t.at("token").as_string()));
  REQUIRE(bytes);
  auto env = parse_signed(*bytes);
  REQUIRE(env.ok());
  v1::DeviceToken token;
  REQUIRE(token.ParseFromString(env->body()));
  return token;
}

// Runs `sql` on the fixture's SQLite file through a connection of its own, as
// the sqlite3 shell would.
void sqlite_by_hand(const CloudFixture& c, const char* sql) {
  sqlite3* db = nullptr;
  REQUIRE(sqlite3_open((c.dir / "cloud.db").string().c_str(), &db) == SQLITE_OK);
  sqlite3_busy_timeout(db, 5000);
  char* err = nullptr;
  const int rc = sqlite3_exec(db, sql, nullptr, nullptr, &err);
  const std::string message = err ? err : "";
  sqlite3_free(err);
  sqlite3_close(db);
  REQUIRE_MESSAGE(rc == SQLITE_OK, message);
}

struct Warm {
  std::string session;
};

// Alice logged in, enrolled and holding one minted token, so every cacheable
// read of a mint has been made once.
Warm warm_up(CloudFixture& c) {
  Warm w{c.login("alice", "alice-password")};
  REQUIRE(c.enroll(w.session, c.alice_key, c.alice_id).status == 200);
  REQUIRE(c.mint(w.session, c.device1, 1).status == 200);
  REQUIRE(c.mint(w.session, c.device1, 1).status == 200);
  return w;
}

}  // namespace

TEST_CASE_TEMPLATE("changes made through another store take effect on the very next mint", B,
                   OnSqlite, OnPostgres) {
  TOLLGATE_CLOUD_FIXTURE(CloudFixture, c, B);
  const Warm w = warm_up(c);
  auto other = c.open_another_store();

  SUBCASE("narrower entitlement terms") {
    auto e = *other->entitlement(c.alice_id, c.device1);
    e.uses_per_token = 2;
    other->put_entitlement(e);
    auto r = c.mint(w.session, c.device1, 5);
    CHECK(r.status == 403);
    CHECK(r.error() == "entitlement_exceeded");
    CHECK(c.mint(w.session, c.device1, 2).status == 200);
  }
  SUBCASE("a revoked user") {
    REQUIRE(other->revoke_user("alice"));
    auto r = c.mint(w.session, c.device1, 1);
    CHECK(r.status == 401);
    CHECK(r.error() == "invalid_session");
  }
  SUBCASE("a replaced authorization") {
    const Bytes original = *c.store->authorization();
    v1::CloudKeyAuthorization auth;
    auth.set_id(8);
    auth.set_cloud_public_key(s(new_key().public_key().spki_der()));
    auth.set_not_before(kStart - 10);
    auth.set_not_after(kStart + 86400);
    auto signed_auth = sign_object(v1::Signed::TYPE_CLOUD_KEY_AUTHORIZATION,
                                   as_bytes(auth.SerializeAsString()), c.master);
    REQUIRE(signed_auth.ok());
    other->set_authorization(as_bytes(signed_auth->SerializeAsString()));
    auto r = c.mint(w.session, c.device1, 1);
    CHECK(r.status == 503);
    CHECK(r.error() == "no_authorization");
    other->set_authorization(original);
    auto back = c.mint(w.session, c.device1, 1);
    REQUIRE(back.status == 200);
    CHECK(back.obj().at("authorization_id").as_int64() == 7);
  }
  SUBCASE("a newly enrolled key") {
    const auto key2 = new_key();
    const auto& der = key2.public_key().spki_der();
    ChallengeRecord ch{
        crypto::random_bytes(16), c.alice_id, crypto::random_bytes(32), der, kStart + 300, false};
    REQUIRE(other->add_challenge(ch, kStart));
    const auto id = key2.public_key().id();
    REQUIRE(other->consume_challenge_and_enroll(
        ch.id, c.alice_id, UserKeyRecord{Bytes(id.begin(), id.end()), der, kStart + 1}));
    auto r = c.mint(w.session, c.device1, 1);
    REQUIRE(r.status == 200);
    CHECK(token_of(r).user_public_key() == s(der));
  }
  SUBCASE("a payment that completes a rent-to-own price") {
    EntitlementRecord e;
    e.user_id = c.alice_id;
    e.device_id = c.device2;
    e.model = Model::kRentToOwn;
    e.uses_per_token = 1;
    e.price = 100;
    c.store->put_entitlement(e);
    auto unpaid = c.mint(w.session, c.device2, 1);
    REQUIRE(unpaid.status == 200);
    CHECK(token_of(unpaid).expires_at() == kStart + 86400);
    REQUIRE(other->credit_entitlement(c.alice_id, c.device2, 0, 100));
    auto paid = c.mint(w.session, c.device2, 1);
    REQUIRE(paid.status == 200);
    CHECK(token_of(paid).expires_at() > kStart + 300 * 86400);
  }
}

TEST_CASE_TEMPLATE("minting and logging in leave change_version alone; operator changes move it", B,
                   OnSqlite, OnPostgres) {
  TOLLGATE_CLOUD_FIXTURE(CloudFixture, c, B);
  const Warm w = warm_up(c);
  const auto before = c.store->change_version();
  REQUIRE(before.has_value());
  CHECK(c.mint(w.session, c.device1, 3, 2).status == 200);
  c.login("alice", "alice-password");
  CHECK(c.store->change_version() == before);

  auto other = c.open_another_store();
  auto e = *other->entitlement(c.bob_id, c.device2);
  e.max_outstanding = 3;
  other->put_entitlement(e);
  const auto after = c.store->change_version();
  REQUIRE(after.has_value());
  CHECK(*after > *before);
}

TEST_CASE("changes written by hand with the sqlite3 library take effect on the next mint") {
  CloudFixture c;
  const Warm w = warm_up(c);

  SUBCASE("entitlement terms") {
    sqlite_by_hand(c, "UPDATE entitlements SET uses_per_token = 1");
    auto r = c.mint(w.session, c.device1, 2);
    CHECK(r.status == 403);
    CHECK(r.error() == "entitlement_exceeded");
  }
  SUBCASE("a revocation") {
    sqlite_by_hand(c, "UPDATE users SET revoked = 1 WHERE name = 'alice'");
    CHECK(c.mint(w.session, c.device1, 1).status == 401);
  }
  SUBCASE("a deleted session") {
    sqlite_by_hand(c, "DELETE FROM sessions");
    CHECK(c.mint(w.session, c.device1, 1).status == 401);
  }
  SUBCASE("a removed device") {
    sqlite_by_hand(c, "DELETE FROM devices");
    CHECK(c.mint(w.session, c.device1, 1).status == 403);
  }
  SUBCASE("a balance, which is never cached") {
    const auto before = c.store->change_version();
    sqlite_by_hand(c, "UPDATE entitlements SET balance = 1");
    CHECK(c.store->change_version() == before);
    auto r = c.mint(w.session, c.device1, 2);
    CHECK(r.status == 402);
    CHECK(r.error() == "insufficient_balance");
    CHECK(c.mint(w.session, c.device1, 1).status == 200);
  }
}

TEST_CASE("every request of a group commit gets its own outcome, and none is left waiting") {
  IssuanceBatcher batcher;
  std::atomic<int> commits{0};
  std::atomic<int> largest{0};
  // Odd uses are "refused", uses divisible by 7 "fail": each caller must see
  // exactly the answer for its own request, whichever thread led its batch.
  const IssuanceBatcher::CommitFn commit = [&](std::vector<IssuanceBatcher::Pending*>& batch) {
    ++commits;
    int size = static_cast<int>(batch.size());
    int seen = largest.load();
    while (size > seen && !largest.compare_exchange_weak(seen, size)) {
    }
    for (auto* p : batch) {
      const auto uses = p->tokens->front().uses;
      if (uses % 7 == 0) {
        p->error = std::make_exception_ptr(StoreError("failed " + std::to_string(uses)));
      } else {
        p->outcome = uses % 2 ? IssueOutcome::kInsufficientBalance : IssueOutcome::kRecorded;
      }
    }
  };
  constexpr int kThreads = 32, kEach = 50;
  std::atomic<int> wrong{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&, t] {
      for (int i = 0; i < kEach; ++i) {
        IssuanceRecord r;
        r.user_id = Bytes(16, 1);
        r.device_id = Bytes(16, 2);
        r.uses = static_cast<std::uint32_t>(t * kEach + i + 1);
        IssuanceGuard g;
        try {
          const auto out = batcher.submit({r}, g, commit);
          const auto want =
              r.uses % 2 ? IssueOutcome::kInsufficientBalance : IssueOutcome::kRecorded;
          if (r.uses % 7 == 0 || out != want) ++wrong;
        } catch (const StoreError& e) {
          if (std::string(e.what()) != "failed " + std::to_string(r.uses)) ++wrong;
        }
      }
    });
  }
  for (auto& t : threads) t.join();
  CHECK(wrong.load() == 0);
  MESSAGE("commits: " << commits.load() << ", largest batch: " << largest.load());
}

TEST_CASE("minted token ids are RFC 9562 version 7 UUIDs, as the answer names them") {
  CloudFixture c;
  const Warm w = warm_up(c);
  auto r = c.mint(w.session, c.device1, 1, 3);
  REQUIRE(r.status == 200);
  for (const auto& t : r.obj().at("tokens").as_array()) {
    const auto id = uuid_from_string(std::string(t.as_object().at("token_id").as_string()));
    REQUIRE(id);
    CHECK(((*id)[6] >> 4) == 7);
    CHECK(((*id)[8] >> 6) == 2);
    CHECK(c.store->issuance(*id).has_value());
  }
}
