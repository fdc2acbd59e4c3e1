// A token authority in a temporary directory with a hand-driven clock: two
// users (alice, bob), two registered devices, a master key and the cloud key's
// authorization, and helpers to log in, enroll and mint through the API.
// `call` goes straight to Authority::handle; it_api.cpp sends the same
// requests over real TLS.
//
// Every store-backed test runs once per backend (TEST_CASE_TEMPLATE over
// OnSqlite, OnPostgres): SQLite always; PostgreSQL when TOLLGATE_PG_URL names
// a server (tools/pg start prints one), each fixture in a scratch schema that
// it drops again. Without TOLLGATE_PG_URL the PostgreSQL runs log a SKIP
// message and pass.
#pragma once

#include <doctest/doctest.h>
#include <stdlib.h>

#include <cstdlib>

#include <atomic>
#include <boost/json.hpp>
#include <filesystem>
#include <functional>
#include <memory>
#include <string>

#include "gateway/signed.hpp"
#include "instrument/audit.hpp"
#include "tools/cloud/authority.hpp"
#include "tools/cloud/codec.hpp"
#include "tools/cloud/pg_store.hpp"
#include "tools/cloud/sqlite_store.hpp"

namespace tollgate::cloud::testkit {

namespace json = boost::json;

inline constexpr UnixTime kStart = 1'800'000'000;  // 2027-01-15

enum class Backend { kSqlite, kPostgres };
struct OnSqlite {
  static constexpr Backend kBackend = Backend::kSqlite;
};
struct OnPostgres {
  static constexpr Backend kBackend = Backend::kPostgres;
};

// The PostgreSQL server for the tests, or "" when there is none.
inline std::string pg_test_url() {
  const char* url = std::getenv("TOLLGATE_PG_URL");
  return url ? url : "";
}

// false (after logging a SKIP line) when the backend has no server here.
inline bool backend_available(Backend b) {
  if (b == Backend::kPostgres && pg_test_url().empty()) {
    MESSAGE("SKIP PostgreSQL run: TOLLGATE_PG_URL is not set (tools/pg start DIR prints one)");
    return false;
  }
  return true;
}

struct Reply {
  int status = 0;
  json::value body;
  std::string error() const {
    const auto* o = body.if_object();
    const auto* e = o ? o->if_contains("error") : nullptr;
    return e && e->is_string() ? std::string(e->get_string()) : "";
  }
  const json::object& obj() const { return body.as_object(); }
};

inline crypto::PrivateKey new_key() {
  return std::move(crypto::PrivateKey::generate(crypto::KeyType::kEd25519)).value();
}

inline std::string s(ByteView b) {
  return std::string(as_chars(b));
}

struct CloudFixture {
  // The transport: method, target, body, bearer -> (status, body).
  using Transport = std::function<std::pair<int, std::string>(
      const std::string&, const std::string&, const std::string&, const std::string&)>;

  std::filesystem::path dir;
  Backend backend;
  std::unique_ptr<PgScratchSchema> pg_schema;  // a PostgreSQL run's own schema
  std::unique_ptr<CloudStore> store;
  std::atomic<UnixTime> now{kStart};
  crypto::PrivateKey master = new_key();
  crypto::PrivateKey cloud_key = new_key();
  crypto::PrivateKey alice_key = new_key();
  crypto::PrivateKey device1_key = new_key();
  crypto::PrivateKey device2_key = new_key();
  Bytes alice_id, bob_id, device1, device2;
  std::unique_ptr<Authority> authority;
  Transport transport;

  explicit CloudFixture(Backend backend = Backend::kSqlite,
                        AuthorityOptions options = cheap_options())
      : backend(backend) {
    std::string tmpl = (std::filesystem::temp_directory_path() / "tollgate-cloud-XXXXXX").string();
    REQUIRE(::mkdtemp(tmpl.data()) != nullptr);
    dir = tmpl;
    if (backend == Backend::kPostgres) pg_schema = std::make_unique<PgScratchSchema>(pg_test_url());
    store = open_another_store();

    v1::CloudKeyAuthorization auth;
    auth.set_id(7);
    auth.set_cloud_public_key(s(cloud_key.public_key().spki_der()));
    auth.set_not_before(kStart - 86400);
    auth.set_not_after(kStart + 365 * 86400);
    auto signed_auth = sign_object(v1::Signed::TYPE_CLOUD_KEY_AUTHORIZATION,
                                   as_bytes(auth.SerializeAsString()), master);
    REQUIRE(signed_auth.ok());
    store->set_authorization(as_bytes(signed_auth->SerializeAsString()));

    alice_id = add_user("alice", "alice-password", options.argon2);
    bob_id = add_user("bob", "bob-password", options.argon2);
    device1 = *uuid_from_string("d1000000-0000-4000-8000-000000000001");
    device2 = *uuid_from_string("d2000000-0000-4000-8000-000000000002");
    add_device(device1, device1_key);
    add_device(device2, device2_key);
    // alice: pay-per-use on device1; bob: subscription on device2.
    EntitlementRecord e;
    e.user_id = alice_id;
    e.device_id = device1;
    e.model = Model::kPayPerUse;
    e.uses_per_token = 5;
    e.balance = 20;
    store->put_entitlement(e);
    EntitlementRecord b;
    b.user_id = bob_id;
    b.device_id = device2;
    b.model = Model::kSubscription;
    b.window_start = kStart - 10;
    b.window_end = kStart + 30 * 86400;
    b.uses_per_token = 10;
    b.max_outstanding = 2;
    store->put_entitlement(b);

    authority = std::make_unique<Authority>(
        *store, cloud_key_copy(), [this] { return now.load(); }, options);
    transport = [this](const std::string& method, const std::string& target,
                       const std::string& body, const std::string& bearer) {
      ApiRequest r{method, target, bearer.empty() ? "" : "Bearer " + bearer,
                   method == "POST" ? "application/json" : "", body};
      auto out = authority->handle(r);
      return std::make_pair(out.status, out.body);
    };
  }
  ~CloudFixture() {
    authority.reset();
    store.reset();
    pg_schema.reset();  // drops the schema
    std::error_code ec;
    std::filesystem::remove_all(dir, ec);
  }

  // Another store on the same database, as a second server process would open it.
  std::unique_ptr<CloudStore> open_another_store() const {
    if (backend == Backend::kPostgres) {
      return std::make_unique<PgCloudStore>(pg_schema->url());
    }
    return std::make_unique<SqliteCloudStore>((dir / "cloud.db").string());
  }

  // Tests run Argon2 for real but small: the cost parameters are not under test.
  static AuthorityOptions cheap_options() {
    AuthorityOptions o;
    o.argon2.t_cost = 1;
    o.argon2.m_cost_kib = 1024;
    o.mint_requests_per_minute = 1'000'000;
    return o;
  }

  crypto::PrivateKey cloud_key_copy() {
    return std::move(crypto::PrivateKey::from_pem(*cloud_key.pem())).value();
  }

  Bytes add_user(const std::string& name, const std::string& password, const Argon2Params& p) {
    UserRecord u;
    u.id = crypto::random_bytes(16);
    u.name = name;
    u.password_hash = hash_password(password, p);
    u.created_at = kStart;
    REQUIRE(store->add_user(u));
    return u.id;
  }

  void add_device(const Bytes& id, const crypto::PrivateKey& key) {
    const auto& pub = key.public_key();
    REQUIRE(store->add_device(
        DeviceRecord{id, pub.spki_der(), Bytes(pub.id().begin(), pub.id().end()), "dev", kStart}));
  }

  Reply call(const std::string& method, const std::string& target, const std::string& body = {},
             const std::string& bearer = {}) {
    auto [status, text] = transport(method, target, body, bearer);
    Reply r;
    r.status = status;
    boost::system::error_code ec;
    r.body = json::parse(text, ec);
    if (ec) FAIL("response is not JSON: " << text);
    return r;
  }
  Reply post(const std::string& target, const json::value& body, const std::string& bearer = {}) {
    return call("POST", target, json::serialize(body), bearer);
  }

  std::string login(const std::string& user, const std::string& password) {
    auto r = post("/v1/login", json::object{{"user", user}, {"password", password}});
    REQUIRE(r.status == 200);
    return std::string(r.obj().at("session").as_string());
  }

  // Enrolls `key` for the session's user; returns the enroll reply.
  Reply enroll(const std::string& session, const crypto::PrivateKey& key, const Bytes& user_id,
               json::object* challenge_out = nullptr) {
    const auto& der = key.public_key().spki_der();
    auto c =
        post("/v1/enroll/challenge", json::object{{"public_key", base64_encode(der)}}, session);
    REQUIRE(c.status == 200);
    if (challenge_out) *challenge_out = c.obj();
    auto challenge = base64_decode(std::string(c.obj().at("challenge").as_string()));
    REQUIRE(challenge);
    auto sig = key.sign(enrollment_signing_input(*challenge, user_id, der));
    REQUIRE(sig.ok());
    return post("/v1/enroll",
                json::object{{"challenge_id", c.obj().at("challenge_id")},
                             {"signature", base64_encode(*sig)}},
                session);
  }

  Reply mint(const std::string& session, const Bytes& device, std::uint32_t uses,
             std::uint32_t count = 1) {
    return post(
        "/v1/tokens",
        json::object{{"device_id", uuid_to_string(device)}, {"uses", uses}, {"count", count}},
        session);
  }

  // A device-signed audit export of `records` (chained from `start`).
  Bytes audit_export(const crypto::PrivateKey& key, const Bytes& device,
                     std::vector<v1::AuditRecord> records, instrument::AuditHead start = {}) {
    v1::AuditExport e;
    e.set_device_id(s(device));
    instrument::AuditHead head = start;
    for (auto& r : records) {
      head = instrument::chain_audit_record(r, head);
      *e.add_records() = r;
    }
    e.set_next_seq(head.seq + 1);
    e.set_head_hash(std::string(head.hash.begin(), head.hash.end()));
    auto sig = sign_object(v1::Signed::TYPE_AUDIT_EXPORT, as_bytes(e.SerializeAsString()), key);
    REQUIRE(sig.ok());
    const std::string out = sig->SerializeAsString();
    return Bytes(out.begin(), out.end());
  }
};

inline v1::AuditRecord command_record(const std::string& token_id, std::uint32_t uses) {
  v1::AuditRecord r;
  r.set_time(kStart);
  r.set_kind(v1::AuditRecord::KIND_COMMAND);
  r.set_accepted(true);
  r.set_token_id(token_id);
  r.set_command("run-assay");
  r.set_uses_charged(uses);
  return r;
}

}  // namespace tollgate::cloud::testkit

TYPE_TO_STRING_AS("sqlite", tollgate::cloud::testkit::OnSqlite);
TYPE_TO_STRING_AS("postgresql", tollgate::cloud::testkit::OnPostgres);

// Declares `var` as a `Fixture` on backend B (a TEST_CASE_TEMPLATE parameter),
// or ends the test with a SKIP message when that backend has no server here.
#define TOLLGATE_CLOUD_FIXTURE(Fixture, var, B, ...)                       \
  if (!::tollgate::cloud::testkit::backend_available(B::kBackend)) return; \
  Fixture var(B::kBackend __VA_OPT__(, ) __VA_ARGS__)
