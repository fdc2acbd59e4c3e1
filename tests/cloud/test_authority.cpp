// The authority's API logic without sockets (Authority::handle), the codecs and
// the password hashing. it_api.cpp repeats the attack cases over real TLS.
#include <doctest/doctest.h>

#include <thread>
#include <vector>

#include "tests/cloud/cloud_testkit.hpp"

using namespace tollgate;
using namespace tollgate::cloud;
using namespace tollgate::cloud::testkit;

TEST_CASE("base64 accepts only canonical padded text") {
  CHECK(base64_encode(as_bytes("foob")) == "Zm9vYg==");
  CHECK(base64_decode("Zm9vYg==") == Bytes{'f', 'o', 'o', 'b'});
  CHECK(base64_decode("") == Bytes{});
  CHECK_FALSE(base64_decode("Zm9vYg="));    // length not a multiple of 4
  CHECK_FALSE(base64_decode("Zm9vYh=="));   // stray low bits: not canonical
  CHECK_FALSE(base64_decode("Zm9v Yg=="));  // whitespace
  CHECK_FALSE(base64_decode("Zm9vY==="));   // three pads
  CHECK_FALSE(base64_decode("Zm=vYg=="));   // pad in the middle
}

TEST_CASE("a password verifies only against its own Argon2id hash") {
  Argon2Params p{1, 1024, 1};
  const std::string h = hash_password("s3cret-pass", p);
  CHECK(h.rfind("$argon2id$", 0) == 0);
  CHECK(verify_password("s3cret-pass", h));
  CHECK_FALSE(verify_password("s3cret-pasS", h));
  CHECK_FALSE(verify_password("s3cret-pass", "$argon2i$" + h.substr(10)));
  CHECK_FALSE(verify_password("s3cret-pass", "garbage"));
  CHECK(hash_password("s3cret-pass", p) != h);  // fresh salt each time
}

TEST_CASE_TEMPLATE("requests outside the API get 404, 405 and 415", B, OnSqlite, OnPostgres) {
  TOLLGATE_CLOUD_FIXTURE(CloudFixture, c, B);
  CHECK(c.call("GET", "/v2/tokens").status == 404);
  CHECK(c.call("DELETE", "/v1/login").status == 405);
  CHECK(c.call("POST", "/v1/devices/" + uuid_to_string(c.device1), "{}").status == 405);
  ApiRequest r{"POST", "/v1/login", "", "text/plain", "{}"};
  auto out = c.authority->handle(r);
  CHECK(out.status == 415);
  r.content_type = "application/json; charset=utf-8";
  CHECK(c.authority->handle(r).status == 400);  // accepted type; the body lacks fields
}

TEST_CASE_TEMPLATE("a subscription mints only inside its window, capped at the window's end", B,
                   OnSqlite, OnPostgres) {
  TOLLGATE_CLOUD_FIXTURE(CloudFixture, c, B);
  const std::string bob = c.login("bob", "bob-password");
  crypto::PrivateKey key = new_key();
  REQUIRE(c.enroll(bob, key, c.bob_id).status == 200);
  c.now = kStart + 30 * 86400 - 100;  // 100 s before the end
  const std::string late = c.login("bob", "bob-password");
  auto r = c.mint(late, c.device2, 1);
  REQUIRE(r.status == 200);
  CHECK(r.obj().at("tokens").as_array()[0].at("expires_at").to_number<UnixTime>() ==
        kStart + 30 * 86400);
  c.now = kStart + 30 * 86400;
  const auto before = c.store->counts();
  auto after = c.mint(late, c.device2, 1);
  CHECK(after.status == 403);
  CHECK(after.error() == "outside_window");
  CHECK(c.store->counts() == before);
}

TEST_CASE_TEMPLATE("rent-to-own tokens are short-lived until the price is paid", B, OnSqlite,
                   OnPostgres) {
  TOLLGATE_CLOUD_FIXTURE(CloudFixture, c, B);
  EntitlementRecord e;
  e.user_id = c.alice_id;
  e.device_id = c.device2;
  e.model = Model::kRentToOwn;
  e.uses_per_token = 50;
  e.price = 1000;
  e.paid = 400;
  c.store->put_entitlement(e);
  const std::string alice = c.login("alice", "alice-password");
  REQUIRE(c.enroll(alice, c.alice_key, c.alice_id).status == 200);
  auto unpaid = c.mint(alice, c.device2, 50);
  REQUIRE(unpaid.status == 200);
  CHECK(unpaid.obj().at("tokens").as_array()[0].at("expires_at").to_number<UnixTime>() ==
        kStart + 86400);
  REQUIRE(c.store->credit_entitlement(c.alice_id, c.device2, 0, 600));
  auto paid = c.mint(alice, c.device2, 50);
  REQUIRE(paid.status == 200);
  // Capped by the authorization's end (365 days after kStart), like every token.
  CHECK(paid.obj().at("tokens").as_array()[0].at("expires_at").to_number<UnixTime>() ==
        kStart + 365 * 86400);
}

TEST_CASE_TEMPLATE("without a valid authorization for its key the authority mints nothing (503)", B,
                   OnSqlite, OnPostgres) {
  TOLLGATE_CLOUD_FIXTURE(CloudFixture, c, B);
  const std::string alice = c.login("alice", "alice-password");
  REQUIRE(c.enroll(alice, c.alice_key, c.alice_id).status == 200);
  c.now = kStart + 365 * 86400;  // the authorization's not_after
  const std::string late = c.login("alice", "alice-password");
  const auto before = c.store->counts();
  auto r = c.mint(late, c.device1, 1);
  CHECK(r.status == 503);
  CHECK(r.error() == "no_authorization");
  CHECK(c.store->counts() == before);
}

TEST_CASE_TEMPLATE("minting needs an enrolled key, and an expired challenge enrolls nothing", B,
                   OnSqlite, OnPostgres) {
  TOLLGATE_CLOUD_FIXTURE(CloudFixture, c, B);
  const std::string alice = c.login("alice", "alice-password");
  auto none = c.mint(alice, c.device1, 1);
  CHECK(none.status == 409);
  CHECK(none.error() == "no_enrolled_key");

  const auto& der = c.alice_key.public_key().spki_der();
  auto ch = c.post("/v1/enroll/challenge", json::object{{"public_key", base64_encode(der)}}, alice);
  REQUIRE(ch.status == 200);
  auto challenge = *base64_decode(std::string(ch.obj().at("challenge").as_string()));
  auto sig = *c.alice_key.sign(enrollment_signing_input(challenge, c.alice_id, der));
  c.now += 300;
  const auto before = c.store->counts();
  auto r = c.post("/v1/enroll",
                  json::object{{"challenge_id", ch.obj().at("challenge_id")},
                               {"signature", base64_encode(sig)}},
                  alice);
  CHECK(r.status == 410);
  CHECK(r.error() == "challenge_expired");
  CHECK(c.store->counts() == before);
}

TEST_CASE_TEMPLATE("token requests beyond the per-user rate get 429 and mint nothing", B, OnSqlite,
                   OnPostgres) {
  AuthorityOptions o = CloudFixture::cheap_options();
  o.mint_requests_per_minute = 3;
  TOLLGATE_CLOUD_FIXTURE(CloudFixture, c, B, o);
  const std::string alice = c.login("alice", "alice-password");
  REQUIRE(c.enroll(alice, c.alice_key, c.alice_id).status == 200);
  for (int i = 0; i < 3; ++i) REQUIRE(c.mint(alice, c.device1, 1).status == 200);
  const auto before = c.store->counts();
  auto r = c.mint(alice, c.device1, 1);
  CHECK(r.status == 429);
  CHECK(r.error() == "rate_limited");
  CHECK(c.store->counts() == before);
  c.now += 60;
  CHECK(c.mint(alice, c.device1, 1).status == 200);
}

TEST_CASE_TEMPLATE(
    "receipts that do not continue the reconciled chain are refused and change nothing", B,
    OnSqlite, OnPostgres) {
  TOLLGATE_CLOUD_FIXTURE(CloudFixture, c, B);
  const std::string alice = c.login("alice", "alice-password");
  REQUIRE(c.enroll(alice, c.alice_key, c.alice_id).status == 200);
  auto m = c.mint(alice, c.device1, 5);
  REQUIRE(m.status == 200);
  const std::string token = s(*uuid_from_string(
      std::string(m.obj().at("tokens").as_array()[0].at("token_id").as_string())));
  auto upload = [&](const Bytes& exported) {
    return c.post("/v1/receipts", json::object{{"export", base64_encode(exported)}}, alice);
  };

  // Records 1..2 first.
  std::vector<v1::AuditRecord> recs{command_record(token, 1), command_record(token, 1)};
  REQUIRE(upload(c.audit_export(c.device1_key, c.device1, recs)).status == 200);
  instrument::AuditHead head;
  for (auto r : recs) head = instrument::chain_audit_record(r, head);
  const auto before = c.store->counts();

  SUBCASE("a gap") {
    instrument::AuditHead skipped = head;
    auto lost = command_record(token, 1);
    skipped = instrument::chain_audit_record(lost, skipped);  // record 3 never uploaded
    auto r = upload(c.audit_export(c.device1_key, c.device1, {command_record(token, 1)}, skipped));
    CHECK(r.status == 409);
    CHECK(r.error() == "chain_gap");
  }
  SUBCASE("a rewritten history") {
    auto r = upload(c.audit_export(
        c.device1_key, c.device1,
        {command_record(token, 2), command_record(token, 2), command_record(token, 2)}));
    CHECK(r.status == 409);
    CHECK(r.error() == "chain_mismatch");
  }
  SUBCASE("a broken link") {
    v1::AuditExport e;
    e.set_device_id(s(c.device1));
    auto rec = command_record(token, 1);
    (void)instrument::chain_audit_record(rec, head);
    rec.set_uses_charged(0);  // edited after chaining: the hash no longer holds
    *e.add_records() = rec;
    auto sig =
        *sign_object(v1::Signed::TYPE_AUDIT_EXPORT, as_bytes(e.SerializeAsString()), c.device1_key);
    const std::string bytes = sig.SerializeAsString();
    auto r = upload(Bytes(bytes.begin(), bytes.end()));
    CHECK(r.status == 422);
    CHECK(r.error() == "chain_broken");
  }
  SUBCASE("another signer") {
    crypto::PrivateKey rogue = new_key();
    auto r = upload(c.audit_export(rogue, c.device1, {command_record(token, 1)}, head));
    CHECK(r.status == 422);
    CHECK(r.error() == "unknown_signer");
  }
  SUBCASE("a device signing for another") {
    auto r = upload(c.audit_export(c.device2_key, c.device1, {command_record(token, 1)}, head));
    CHECK(r.status == 422);
    CHECK(r.error() == "wrong_device");
  }
  SUBCASE("a flipped bit in the signed bytes") {
    Bytes exported = c.audit_export(c.device1_key, c.device1, {command_record(token, 1)}, head);
    exported[exported.size() / 3] ^= 0x01;
    auto r = upload(exported);
    CHECK(r.status >= 400);
    CHECK(r.status < 500);
  }
  CHECK(c.store->counts() == before);
}

TEST_CASE_TEMPLATE("receipts never count more uses against a token than it carries", B, OnSqlite,
                   OnPostgres) {
  TOLLGATE_CLOUD_FIXTURE(CloudFixture, c, B);
  const std::string alice = c.login("alice", "alice-password");
  REQUIRE(c.enroll(alice, c.alice_key, c.alice_id).status == 200);
  auto m = c.mint(alice, c.device1, 2);
  REQUIRE(m.status == 200);
  const std::string token = s(*uuid_from_string(
      std::string(m.obj().at("tokens").as_array()[0].at("token_id").as_string())));
  auto r = c.post("/v1/receipts",
                  json::object{{"export", base64_encode(c.audit_export(
                                              c.device1_key, c.device1,
                                              {command_record(token, 2), command_record(token, 2),
                                               command_record("unknown-token-id", 4)}))}},
                  alice);
  REQUIRE(r.status == 200);
  CHECK(c.store->counts().uses_consumed == 2);
}

TEST_CASE_TEMPLATE("logins keep at most 64 live sessions per user, ending the oldest", B, OnSqlite,
                   OnPostgres) {
  TOLLGATE_CLOUD_FIXTURE(CloudFixture, c, B);
  std::vector<std::string> sessions;
  for (int i = 0; i < 65; ++i) {
    sessions.push_back(c.login("alice", "alice-password"));
    c.now += 1;
  }
  CHECK(c.store->counts().sessions == 64);
  auto oldest = c.call("GET", "/v1/devices/" + uuid_to_string(c.device1), {}, sessions.front());
  CHECK(oldest.status == 401);
  CHECK(c.call("GET", "/v1/devices/" + uuid_to_string(c.device1), {}, sessions.back()).status ==
        200);
}

TEST_CASE_TEMPLATE("open enrollment challenges are capped per user and expired ones are dropped", B,
                   OnSqlite, OnPostgres) {
  TOLLGATE_CLOUD_FIXTURE(CloudFixture, c, B);
  const std::string alice = c.login("alice", "alice-password");
  const json::object req{{"public_key", base64_encode(c.alice_key.public_key().spki_der())}};
  for (int i = 0; i < 16; ++i) REQUIRE(c.post("/v1/enroll/challenge", req, alice).status == 200);
  const auto before = c.store->counts();
  auto r = c.post("/v1/enroll/challenge", req, alice);
  CHECK(r.status == 429);
  CHECK(r.error() == "too_many_challenges");
  CHECK(c.store->counts() == before);
  c.now += 300;
  CHECK(c.post("/v1/enroll/challenge", req, alice).status == 200);
  CHECK(c.store->counts().challenges == 1);
}

TEST_CASE_TEMPLATE(
    "group-committed issuances never overdraw a balance, and a refused one undoes only itself", B,
    OnSqlite, OnPostgres) {
  TOLLGATE_CLOUD_FIXTURE(CloudFixture, c, B);
  auto e = *c.store->entitlement(c.alice_id, c.device1);
  e.balance = 50;
  c.store->put_entitlement(e);
  std::atomic<int> recorded{0}, refused{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < 16; ++t) {
    threads.emplace_back([&, t] {
      for (int i = 0; i < 8; ++i) {
        IssuanceRecord r;
        r.token_id = crypto::random_bytes(16);
        r.user_id = c.alice_id;
        r.device_id = c.device1;
        r.user_key_id = Bytes(16, 1);
        r.uses = static_cast<std::uint32_t>(1 + (t + i) % 3);  // mixed sizes: some refused
        r.issued_at = kStart;
        r.expires_at = kStart + 10;
        IssuanceGuard g;
        g.reserve_from_balance = true;
        g.now = kStart;
        auto out = c.store->record_issuances({r}, g);
        if (out == IssueOutcome::kRecorded) {
          ++recorded;
        } else {
          CHECK(out == IssueOutcome::kInsufficientBalance);
          ++refused;
        }
      }
    });
  }
  for (auto& t : threads) t.join();
  const auto counts = c.store->counts();
  CHECK(counts.issuances == static_cast<std::uint64_t>(recorded.load()));
  CHECK(counts.uses_issued + counts.balance == 50);
  CHECK(counts.uses_issued >= 48);  // refusals only once fewer than 3 uses remained
  CHECK(recorded + refused == 128);
}

TEST_CASE_TEMPLATE("two server processes sharing one database never overdraw a balance", B,
                   OnSqlite, OnPostgres) {
  TOLLGATE_CLOUD_FIXTURE(CloudFixture, c, B);
  auto e = *c.store->entitlement(c.alice_id, c.device1);
  e.balance = 40;
  c.store->put_entitlement(e);
  auto other = c.open_another_store();
  std::atomic<std::uint64_t> minted{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < 8; ++t) {
    threads.emplace_back([&, t] {
      CloudStore& store = t % 2 ? *other : *c.store;
      for (int i = 0; i < 10; ++i) {
        IssuanceRecord r;
        r.token_id = crypto::random_bytes(16);
        r.user_id = c.alice_id;
        r.device_id = c.device1;
        r.user_key_id = Bytes(16, 1);
        r.uses = 3;
        r.issued_at = kStart;
        r.expires_at = kStart + 10;
        IssuanceGuard g;
        g.reserve_from_balance = true;
        g.now = kStart;
        if (store.record_issuances({r}, g) == IssueOutcome::kRecorded) minted += 3;
      }
    });
  }
  for (auto& t : threads) t.join();
  CHECK(minted.load() == 39);  // 13 tokens of 3; the last use can never be minted
  CHECK(c.store->counts().uses_issued == 39);
  CHECK(other->entitlement(c.alice_id, c.device1)->balance == 1);
}

TEST_CASE_TEMPLATE("the outstanding-token cap holds across two stores on one database", B, OnSqlite,
                   OnPostgres) {
  TOLLGATE_CLOUD_FIXTURE(CloudFixture, c, B);
  auto other = c.open_another_store();
  std::atomic<int> recorded{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < 8; ++t) {
    threads.emplace_back([&, t] {
      CloudStore& store = t % 2 ? *other : *c.store;
      IssuanceRecord r;
      r.token_id = crypto::random_bytes(16);
      r.user_id = c.bob_id;
      r.device_id = c.device2;
      r.user_key_id = Bytes(16, 2);
      r.uses = 1;
      r.issued_at = kStart;
      r.expires_at = kStart + 100;
      IssuanceGuard g;
      g.max_outstanding = 2;
      g.now = kStart;
      const auto out = store.record_issuances({r}, g);
      if (out == IssueOutcome::kRecorded) {
        ++recorded;
      } else {
        CHECK(out == IssueOutcome::kOutstandingCap);
      }
    });
  }
  for (auto& t : threads) t.join();
  CHECK(recorded.load() == 2);
  CHECK(c.store->counts().issuances == 2);
}

TEST_CASE("an unreachable PostgreSQL server is a StoreError naming the cause") {
  try {
    open_store("postgresql:///tollgate?host=/nonexistent-tollgate-socket-dir&connect_timeout=2");
    FAIL("opened a store without a server");
  } catch (const StoreError& e) {
    CHECK(std::string(e.what()).find("cannot connect to PostgreSQL") != std::string::npos);
  }
}

TEST_CASE_TEMPLATE("open_store picks the backend from the --db value", B, OnSqlite, OnPostgres) {
  TOLLGATE_CLOUD_FIXTURE(CloudFixture, c, B);
  const std::string db = B::kBackend == Backend::kPostgres
                             ? c.pg_schema->url()
                             : "sqlite:" + (c.dir / "cloud.db").string();
  auto store = open_store(db);
  REQUIRE(store);
  CHECK(store->user_by_name("alice")->id == c.alice_id);
  CHECK(store->counts() == c.store->counts());
}

TEST_CASE("a PostgreSQL database with a newer schema is refused") {
  if (!backend_available(Backend::kPostgres)) return;
  CloudFixture c(Backend::kPostgres);
  pg_exec(c.pg_schema->url(), "UPDATE meta SET value = '99'::bytea WHERE key = 'schema_version'");
  try {
    c.open_another_store();
    FAIL("opened a database with a newer schema");
  } catch (const StoreError& e) {
    CHECK(std::string(e.what()).find("newer than this build") != std::string::npos);
  }
}

TEST_CASE_TEMPLATE("recording a token id twice is a StoreError and reserves nothing", B, OnSqlite,
                   OnPostgres) {
  TOLLGATE_CLOUD_FIXTURE(CloudFixture, c, B);
  IssuanceRecord r;
  r.token_id = crypto::random_bytes(16);
  r.user_id = c.alice_id;
  r.device_id = c.device1;
  r.user_key_id = Bytes(16, 1);
  r.uses = 2;
  r.issued_at = kStart;
  r.expires_at = kStart + 10;
  IssuanceGuard g;
  g.reserve_from_balance = true;
  g.now = kStart;
  REQUIRE(c.store->record_issuances({r}, g) == IssueOutcome::kRecorded);
  const auto before = c.store->counts();
  CHECK_THROWS_AS(c.store->record_issuances({r}, g), StoreError);
  CHECK(c.store->counts() == before);
  // The store still works afterwards.
  r.token_id = crypto::random_bytes(16);
  CHECK(c.store->record_issuances({r}, g) == IssueOutcome::kRecorded);
}
