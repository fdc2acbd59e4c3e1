// The instrument's SQLite store: the gateway's state survives a restart table by
// table, a write that fails mid-way changes nothing durable, and databases the
// build does not understand are refused rather than misread.
#include <doctest/doctest.h>
#include <sqlite3.h>
#include <stdlib.h>

#include <filesystem>
#include <memory>
#include <string>

#include "instrument/store.hpp"
#include "tests/gateway/testkit.hpp"

using namespace tollgate;
using namespace tollgate::testkit;
using tollgate::instrument::AssayResult;
using tollgate::instrument::SqliteStore;

namespace {

struct TempDir {
  std::filesystem::path path;
  TempDir() {
    std::string tmpl = (std::filesystem::temp_directory_path() / "tollgate-store-XXXXXX").string();
    REQUIRE(mkdtemp(tmpl.data()) != nullptr);
    path = tmpl;
  }
  ~TempDir() {
    std::error_code ec;
    std::filesystem::remove_all(path, ec);
  }
  std::string db() const { return (path / "state.db").string(); }
};

std::unique_ptr<SqliteStore> open_store(const std::string& path, SqliteStore::Options o = {}) {
  std::string why;
  auto s = SqliteStore::open(path, o, &why);
  INFO(why);
  REQUIRE(s.ok());
  return std::move(*s);
}

DeviceState load(SqliteStore& s) {
  auto st = s.load();
  REQUIRE(st.ok());
  return std::move(*st);
}

// Runs SQL on the database file behind the store's back.
void raw_exec(const std::string& path, const std::string& sql) {
  sqlite3* db = nullptr;
  REQUIRE(sqlite3_open(path.c_str(), &db) == SQLITE_OK);
  char* err = nullptr;
  const int rc = sqlite3_exec(db, sql.c_str(), nullptr, nullptr, &err);
  std::string msg = err ? err : "";
  sqlite3_free(err);
  sqlite3_close(db);
  INFO(msg);
  REQUIRE(rc == SQLITE_OK);
}

[[gnu::noinline]] Bytes blob(std::initializer_list<std::uint8_t> b) {
  return Bytes(b);
}

crypto::KeyId key_id(std::uint8_t tag) {
  crypto::KeyId k{};
  k.fill(tag);
  return k;
}

Sha256 hash_of(std::uint8_t tag) {
  Sha256 h{};
  h.fill(tag);
  return h;
}

AuditEvent event(AuditEvent::Kind kind, bool accepted, Error reason = v1::ERROR_UNSPECIFIED) {
  AuditEvent e;
  e.kind = kind;
  e.accepted = accepted;
  e.reason = reason;
  e.at = kT0;
  return e;
}

// A delta that touches every table of DeviceState, with the awkward values:
// ids above INT64_MAX, empty blobs, a pending and an empty stored response.
StateDelta everything_delta() {
  StateDelta d;
  d.put_authorization(1, blob({1, 2, 3}));
  d.put_authorization(0xFFFF'FFFF'FFFF'FFF0ull, blob({9}));
  d.revoked_added = {5, 7, 0x8000'0000'0000'0001ull};
  d.put_token(uuid(1), StoredToken{blob({0xA1, 0xA2}), 3});
  d.put_token(uuid(2), StoredToken{blob({0xB1}), 4'000'000'000u});
  d.put_tombstone(uuid(3), kT0 + kDay);
  d.put_tombstone(uuid(4), -5);
  d.raise_floor(kT0 - 10);
  d.put_nonce(blob({0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11}), NonceRecord{kT0 + 120});
  d.put_nonce(blob({0xFF}), NonceRecord{kT0 + 60});
  IdempotencyRecord pending;
  pending.request_hash = hash_of(0x11);
  pending.sequence = 1;
  pending.token_id = uuid(1);
  pending.uses_left = 2;
  d.put_idempotency(RequestKey{key_id(0x21), 42}, pending);
  IdempotencyRecord done = pending;
  done.sequence = 2;
  done.response = blob({0xC0, 0xC1, 0xC2});
  d.put_idempotency(RequestKey{key_id(0x21), 0xFFFF'FFFF'FFFF'FFFFull}, done);
  IdempotencyRecord empty_response = pending;
  empty_response.sequence = 3;
  empty_response.response = Bytes{};
  d.put_idempotency(RequestKey{key_id(0x22), 1}, empty_response);
  d.next_sequence = 4;
  d.audit.push_back(event(AuditEvent::Kind::kInstallAuthorization, true));
  return d;
}

}  // namespace

TEST_CASE("a new database loads the empty state") {
  TempDir dir;
  auto store = open_store(dir.db());
  CHECK(load(*store) == DeviceState{});
  CHECK(store->audit_head() == instrument::AuditHead{});
  CHECK(store->verify_audit_chain().ok());
  CHECK(store->integrity_check().ok());
}

TEST_CASE("every DeviceState table survives a reopen") {
  TempDir dir;
  DeviceState expected;
  {
    auto store = open_store(dir.db());
    const StateDelta d = everything_delta();
    REQUIRE(store->commit(d).ok());
    apply(expected, d);
    CHECK(load(*store) == expected);
  }
  {
    auto store = open_store(dir.db());
    CHECK(load(*store) == expected);
    const auto& idem = expected.idempotency;
    REQUIRE(idem.size() == 3);
    // NULL and an empty blob are different things: pending vs an empty response.
    CHECK_FALSE(idem.at(RequestKey{key_id(0x21), 42}).response.has_value());
    CHECK(idem.at(RequestKey{key_id(0x22), 1}).response == Bytes{});

    // Removals and updates of every table, then another restart.
    StateDelta d;
    d.remove_authorization(1);
    d.revoked_added = {8};
    d.put_token(uuid(1), StoredToken{blob({0xA1, 0xA2}), 1});
    d.remove_token(uuid(2));
    d.put_tombstone(uuid(2), kT0 + 2 * kDay);
    d.remove_tombstone(uuid(4));
    d.raise_floor(kT0);
    d.remove_nonce(blob({0xFF}));
    d.remove_idempotency(RequestKey{key_id(0x22), 1});
    IdempotencyRecord now_done = idem.at(RequestKey{key_id(0x21), 42});
    now_done.response = blob({0x01});
    d.put_idempotency(RequestKey{key_id(0x21), 42}, now_done);
    d.next_sequence = 5;
    REQUIRE(store->commit(d).ok());
    apply(expected, d);
  }
  auto store = open_store(dir.db());
  CHECK(load(*store) == expected);
  CHECK(store->audit_head().seq == 1);
  CHECK(store->integrity_check().ok());
}

TEST_CASE("a commit that fails after writing every row leaves the durable state as before") {
  TempDir dir;
  auto store = open_store(dir.db());
  REQUIRE(store->commit(everything_delta()).ok());
  const DeviceState before = load(*store);
  const auto head_before = store->audit_head();

  StateDelta d;
  d.remove_authorization(1);
  d.put_token(uuid(1), StoredToken{blob({0xA1, 0xA2}), 2});
  d.put_tombstone(uuid(9), kT0);
  d.remove_nonce(blob({0xFF}));
  d.raise_floor(kT0 + 100);
  d.next_sequence = 9;
  d.audit.push_back(event(AuditEvent::Kind::kAuthorizeCommand, true));
  d.audit.push_back(event(AuditEvent::Kind::kOfferToken, false, v1::ERROR_EXPIRED));

  store->fail_write(1);
  CHECK(store->commit(d).error() == v1::ERROR_STORAGE);
  CHECK(load(*store) == before);
  CHECK(store->audit_head() == head_before);
  CHECK(store->verify_audit_chain().ok());
  {
    auto reopened = open_store(dir.db());
    CHECK(load(*reopened) == before);
    CHECK(reopened->audit_head() == head_before);
  }

  // The failure was one-shot: the same delta then commits, and the log goes on
  // without a gap where the failed records would have been.
  REQUIRE(store->commit(d).ok());
  DeviceState after = before;
  apply(after, d);
  CHECK(load(*store) == after);
  CHECK(store->audit_head().seq == head_before.seq + 2);
  CHECK(store->verify_audit_chain().ok());
}

TEST_CASE("the fault hook fails only the nth write and every write while armed") {
  TempDir dir;
  auto store = open_store(dir.db());
  StateDelta d;
  d.raise_floor(kT0);
  store->fail_write(2);
  CHECK(store->commit(d).ok());
  CHECK(store->append_audit({v1::AuditRecord{}}).error() == v1::ERROR_STORAGE);
  CHECK(store->commit(d).ok());
  CHECK(store->writes() == 2);

  store->fail_all_writes(true);
  CHECK(store->commit(d).error() == v1::ERROR_STORAGE);
  CHECK(store->put_result(AssayResult{}).error() == v1::ERROR_STORAGE);
  CHECK(store->count_results().value() == 0);
  store->fail_all_writes(false);
  CHECK(store->put_result(AssayResult{}).ok());
}

TEST_CASE("an empty delta writes nothing") {
  TempDir dir;
  auto store = open_store(dir.db());
  CHECK(store->commit(StateDelta{}).ok());
  CHECK(store->writes() == 0);
}

TEST_CASE(
    "a gateway over the store resumes after a restart: charges, nonces and stored responses") {
  TempDir dir;
  const auto master = make_key();
  const auto cloud = make_key();
  const auto user = make_key();
  const Bytes device = uuid(0xD1);
  const CommandRules rules = default_rules();
  auto open_gateway = [&](SqliteStore& s, std::uint64_t seed) {
    auto g = Gateway::open(device, masters_of(master), DevicePolicy{}, s, seeded_random(seed));
    REQUIRE(g.ok());
    return std::move(*g);
  };

  Bytes request;
  Bytes response = blob({0x5E, 0x5E});
  DeviceState state_before_restart;
  {
    auto store = open_store(dir.db());
    Gateway g = open_gateway(*store, 1);
    REQUIRE(g.install_authorization(
                 sign_authorization(master, authorization_body(1, cloud.public_key())), kT0)
                .ok());
    REQUIRE(
        g.offer_token(sign_token(cloud, token_body(1, device, user.public_key(), 1, 3)), kT0).ok());
    Bytes nonce = g.issue_nonce(kT0);
    request = sign_request(user, request_body(device, nonce, 77));
    auto d = g.authorize_command(request, kT0, rules);
    REQUIRE(d.ok());
    REQUIRE(d->kind == Decision::Kind::kExecute);
    REQUIRE(g.complete_request(d->key, response).ok());
    REQUIRE(g.flush(kT0).ok());
    state_before_restart = g.state();
    CHECK(load(*store) == state_before_restart);
    CHECK(store->verify_audit_chain().ok());
    CHECK(store->audit_head().seq >= 3);
  }
  auto store = open_store(dir.db());
  Gateway g = open_gateway(*store, 2);
  CHECK(g.state() == state_before_restart);
  CHECK(g.state().tokens.at(uuid(1)).uses_left == 2);
  // The retried request gets the stored bytes, no second charge.
  auto again = g.authorize_command(request, kT0 + 1, rules);
  REQUIRE(again.ok());
  CHECK(again->kind == Decision::Kind::kReplay);
  CHECK(again->stored_response == response);
  CHECK(g.state().tokens.at(uuid(1)).uses_left == 2);
}

TEST_CASE("a charge whose response was lost in a restart is never executed again") {
  TempDir dir;
  const auto master = make_key();
  const auto cloud = make_key();
  const auto user = make_key();
  const Bytes device = uuid(0xD2);
  const CommandRules rules = default_rules();
  Bytes request;
  {
    auto store = open_store(dir.db());
    auto g = Gateway::open(device, masters_of(master), DevicePolicy{}, *store, seeded_random(1));
    REQUIRE(g.ok());
    REQUIRE(g->install_authorization(
                 sign_authorization(master, authorization_body(1, cloud.public_key())), kT0)
                .ok());
    REQUIRE(g->offer_token(sign_token(cloud, token_body(1, device, user.public_key(), 1, 3)), kT0)
                .ok());
    request = sign_request(user, request_body(device, g->issue_nonce(kT0), 5));
    REQUIRE(g->authorize_command(request, kT0, rules)->kind == Decision::Kind::kExecute);
    // Power cut: neither complete_request nor flush happens.
  }
  auto store = open_store(dir.db());
  auto g = Gateway::open(device, masters_of(master), DevicePolicy{}, *store, seeded_random(2));
  REQUIRE(g.ok());
  CHECK(g->state().tokens.at(uuid(1)).uses_left == 2);
  auto again = g->authorize_command(request, kT0, rules);
  REQUIRE(again.ok());
  CHECK(again->kind == Decision::Kind::kInterrupted);
  CHECK(g->state().tokens.at(uuid(1)).uses_left == 2);
}

TEST_CASE("a database written by a newer schema is refused, not misread") {
  TempDir dir;
  { open_store(dir.db()); }
  raw_exec(dir.db(), "UPDATE schema_version SET version = 99");
  std::string why;
  auto s = SqliteStore::open(dir.db(), {}, &why);
  CHECK(s.error() == v1::ERROR_UNSUPPORTED_VERSION);
  CHECK(why.find("99") != std::string::npos);
  SqliteStore::Options ro;
  ro.read_only = true;
  CHECK(SqliteStore::open(dir.db(), ro).error() == v1::ERROR_UNSUPPORTED_VERSION);
}

TEST_CASE("a file that is not a Tollgate database is refused") {
  TempDir dir;
  SUBCASE("junk bytes") {
    std::FILE* f = std::fopen(dir.db().c_str(), "wb");
    REQUIRE(f);
    std::fputs("this is not an SQLite database, not even close; padding padding padding", f);
    std::fclose(f);
  }
  SUBCASE("another application's database") {
    raw_exec(dir.db(), "CREATE TABLE customers (name TEXT)");
  }
  std::string why;
  auto s = SqliteStore::open(dir.db(), {}, &why);
  CHECK(s.error() == v1::ERROR_STORAGE);
  CHECK_FALSE(why.empty());
}

TEST_CASE("a read-only store reads what the writer committed and cannot write") {
  TempDir dir;
  auto writer = open_store(dir.db());
  SqliteStore::Options ro;
  ro.read_only = true;
  CHECK(SqliteStore::open((dir.path / "absent.db").string(), ro).error() == v1::ERROR_STORAGE);

  REQUIRE(writer->commit(everything_delta()).ok());
  auto reader = open_store(dir.db(), ro);
  CHECK(load(*reader) == load(*writer));
  CHECK(reader->audit_head() == writer->audit_head());
  CHECK(reader->verify_audit_chain().ok());
  CHECK(reader->commit(everything_delta()).error() == v1::ERROR_STORAGE);
  CHECK(reader->append_audit({v1::AuditRecord{}}).error() == v1::ERROR_STORAGE);
}

TEST_CASE("the database is in WAL mode and reports itself intact") {
  TempDir dir;
  auto store = open_store(dir.db());
  sqlite3* db = nullptr;
  REQUIRE(sqlite3_open(dir.db().c_str(), &db) == SQLITE_OK);
  sqlite3_stmt* s = nullptr;
  REQUIRE(sqlite3_prepare_v2(db, "PRAGMA journal_mode", -1, &s, nullptr) == SQLITE_OK);
  REQUIRE(sqlite3_step(s) == SQLITE_ROW);
  CHECK(std::string(reinterpret_cast<const char*>(sqlite3_column_text(s, 0))) == "wal");
  sqlite3_finalize(s);
  sqlite3_close(db);
  CHECK(store->integrity_check().ok());
}

TEST_CASE("commits are fsync'd (synchronous=FULL) before and after lazy writes") {
  TempDir dir;
  auto store = open_store(dir.db());
  CHECK(store->query_pragma("synchronous").value() == 2);
  CHECK(store->query_pragma("foreign_keys").value() == 1);
  CHECK(store->query_pragma("busy_timeout").value() == 5000);
  REQUIRE(store->append_audit({v1::AuditRecord{}}, instrument::Durability::kLazy).ok());
  CHECK(store->query_pragma("synchronous").value() == 2);
  store->fail_write(1);
  CHECK_FALSE(store->append_audit({v1::AuditRecord{}}, instrument::Durability::kLazy).ok());
  CHECK(store->query_pragma("synchronous").value() == 2);
  CHECK(store->query_pragma("journal_mode; DROP TABLE audit").error() == v1::ERROR_MALFORMED);

  SqliteStore::Options fast;
  fast.durable = false;
  auto other = open_store((dir.path / "fast.db").string(), fast);
  CHECK(other->query_pragma("synchronous").value() == 1);
  REQUIRE(other->append_audit({v1::AuditRecord{}}, instrument::Durability::kLazy).ok());
  CHECK(other->query_pragma("synchronous").value() == 1);
}

TEST_CASE("assay results are numbered, read back and survive a reopen") {
  TempDir dir;
  AssayResult r;
  r.created_at = kT0;
  r.protocol = "elisa";
  r.sample = "S-1";
  r.value = "0.42";
  r.token_id = uuid(1);
  r.request_hash = Bytes(16, 0xAB);
  {
    auto store = open_store(dir.db());
    CHECK(store->put_result(r).value() == 1);
    AssayResult second = r;
    second.sample = "S-2";
    second.token_id = {};
    CHECK(store->put_result(second).value() == 2);
    CHECK(store->count_results().value() == 2);
  }
  auto store = open_store(dir.db());
  auto got = store->get_result(1);
  REQUIRE(got.ok());
  REQUIRE(got->has_value());
  AssayResult want = r;
  want.id = 1;
  CHECK(**got == want);
  CHECK((*store->get_result(2))->sample == "S-2");
  CHECK_FALSE(store->get_result(3)->has_value());
  CHECK_FALSE(store->get_result(0)->has_value());
  CHECK_FALSE(store->get_result(~0ull)->has_value());
}

TEST_CASE("a result and its execution record are written together or not at all") {
  TempDir dir;
  auto store = open_store(dir.db());
  v1::AuditRecord exec;
  exec.set_kind(v1::AuditRecord::KIND_EXECUTION);
  exec.set_accepted(true);
  exec.set_command("run-assay");

  store->fail_write(1);
  CHECK(store->put_result(AssayResult{}, {exec}).error() == v1::ERROR_STORAGE);
  CHECK(store->count_results().value() == 0);
  CHECK(store->audit_head().seq == 0);

  CHECK(store->put_result(AssayResult{}, {exec}).value() == 1);
  CHECK(store->audit_head().seq == 1);
  auto records = store->audit_records(1, 10);
  REQUIRE(records.ok());
  REQUIRE(records->size() == 1);
  CHECK(records->front().kind() == v1::AuditRecord::KIND_EXECUTION);
  CHECK(store->verify_audit_chain().ok());
}

TEST_CASE("lazy writes are visible at once and made durable by the next durable write") {
  TempDir dir;
  v1::AuditRecord exec;
  exec.set_kind(v1::AuditRecord::KIND_EXECUTION);
  exec.set_accepted(true);
  {
    auto store = open_store(dir.db());
    CHECK_FALSE(store->lazy_writes_pending());
    REQUIRE(store->append_audit({exec}, instrument::Durability::kLazy).ok());
    CHECK(store->lazy_writes_pending());
    AssayResult r;
    r.id = 7;
    REQUIRE(store->put_result(r, {exec}, instrument::Durability::kLazy).value() == 7);
    CHECK(store->lazy_writes_pending());

    // A charge commit is durable and carries the lazy writes before it along.
    StateDelta d;
    d.raise_floor(kT0);
    d.audit.push_back(event(AuditEvent::Kind::kAuthorizeCommand, true));
    REQUIRE(store->commit(d).ok());
    CHECK_FALSE(store->lazy_writes_pending());

    REQUIRE(store->append_audit({exec}, instrument::Durability::kLazy).ok());
    const auto writes = store->writes();
    REQUIRE(store->sync().ok());
    CHECK(store->writes() == writes + 1);
    CHECK_FALSE(store->lazy_writes_pending());
    CHECK(store->sync().ok());  // nothing pending: no write at all
    CHECK(store->writes() == writes + 1);

    // Exporting syncs first, so no exported record can be taken back by a power cut.
    REQUIRE(store->append_audit({exec}, instrument::Durability::kLazy).ok());
    REQUIRE(store->audit_records(1, 10).ok());
    CHECK_FALSE(store->lazy_writes_pending());
  }
  // A process that dies (here: closes) keeps every lazy write.
  auto store = open_store(dir.db());
  CHECK(store->audit_head().seq == 5);
  CHECK(store->verify_audit_chain().ok());
  CHECK(store->get_result(7)->has_value());
  CHECK(load(*store).time_floor == kT0);
}

TEST_CASE("a lazy write that fails leaves the store durable and unchanged") {
  TempDir dir;
  auto store = open_store(dir.db());
  v1::AuditRecord exec;
  exec.set_kind(v1::AuditRecord::KIND_EXECUTION);
  store->fail_write(1);
  CHECK(store->append_audit({exec}, instrument::Durability::kLazy).error() == v1::ERROR_STORAGE);
  CHECK_FALSE(store->lazy_writes_pending());
  CHECK(store->audit_head().seq == 0);
  CHECK(store->append_audit({exec}).ok());
  CHECK(store->verify_audit_chain().ok());
}

TEST_CASE("a result id given by the caller is kept and never taken twice") {
  TempDir dir;
  auto store = open_store(dir.db());
  AssayResult r;
  r.id = 41;
  r.sample = "first";
  CHECK(store->put_result(r).value() == 41);
  r.sample = "second";
  CHECK(store->put_result(r, {v1::AuditRecord{}}).error() == v1::ERROR_STORAGE);
  CHECK((*store->get_result(41))->sample == "first");
  CHECK(store->audit_head().seq == 0);  // its audit record went with it
  r.id = 0;
  CHECK(store->put_result(r).value() == 42);
  r.id = ~0ull;
  CHECK(store->put_result(r).error() == v1::ERROR_STORAGE);
}
