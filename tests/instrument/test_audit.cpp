// The hash-chained audit log: gateway decisions become wire records, the chain
// verifies, and any edited, deleted, inserted or reordered record (or a cut-off
// tail) is detected. Export pages walk the whole log.
#include <doctest/doctest.h>
#include <sqlite3.h>
#include <stdlib.h>

#include <filesystem>
#include <functional>
#include <memory>
#include <string>

#include "gateway/crypto.hpp"
#include "instrument/audit.hpp"
#include "instrument/store.hpp"
#include "tests/gateway/testkit.hpp"

using namespace tollgate;
using namespace tollgate::testkit;
using namespace tollgate::instrument;

namespace {

struct TempDir {
  std::filesystem::path path;
  TempDir() {
    std::string tmpl = (std::filesystem::temp_directory_path() / "tollgate-audit-XXXXXX").string();
    REQUIRE(mkdtemp(tmpl.data()) != nullptr);
    path = tmpl;
  }
  ~TempDir() {
    std::error_code ec;
    std::filesystem::remove_all(path, ec);
  }
  std::string db() const { return (path / "state.db").string(); }
};

std::unique_ptr<SqliteStore> open_store(const std::string& path) {
  auto s = SqliteStore::open(path);
  REQUIRE(s.ok());
  return std::move(*s);
}

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

// Reads one stored record, lets `edit` change it, and writes it back with
// `rehash` deciding whether its own hash is recomputed (a careful forger) or not.
void tamper(const std::string& path, std::uint64_t seq,
            const std::function<void(v1::AuditRecord&)>& edit, bool rehash) {
  sqlite3* db = nullptr;
  REQUIRE(sqlite3_open(path.c_str(), &db) == SQLITE_OK);
  sqlite3_stmt* s = nullptr;
  REQUIRE(sqlite3_prepare_v2(db, "SELECT record FROM audit WHERE seq = ?", -1, &s, nullptr) ==
          SQLITE_OK);
  sqlite3_bind_int64(s, 1, static_cast<sqlite3_int64>(seq));
  REQUIRE(sqlite3_step(s) == SQLITE_ROW);
  v1::AuditRecord r;
  REQUIRE(r.ParseFromArray(sqlite3_column_blob(s, 0), sqlite3_column_bytes(s, 0)));
  sqlite3_finalize(s);
  edit(r);
  if (rehash) {
    const Sha256 h = audit_record_hash(r);
    r.set_hash(std::string(h.begin(), h.end()));
  }
  std::string bytes = r.SerializeAsString();
  REQUIRE(sqlite3_prepare_v2(db, "UPDATE audit SET record = ?, hash = ? WHERE seq = ?", -1, &s,
                             nullptr) == SQLITE_OK);
  sqlite3_bind_blob(s, 1, bytes.data(), static_cast<int>(bytes.size()), SQLITE_TRANSIENT);
  sqlite3_bind_blob(s, 2, r.hash().data(), static_cast<int>(r.hash().size()), SQLITE_TRANSIENT);
  sqlite3_bind_int64(s, 3, static_cast<sqlite3_int64>(seq));
  REQUIRE(sqlite3_step(s) == SQLITE_DONE);
  sqlite3_finalize(s);
  sqlite3_close(db);
}

v1::AuditRecord boot_record(std::int64_t t) {
  v1::AuditRecord r;
  r.set_kind(v1::AuditRecord::KIND_BOOT);
  r.set_accepted(true);
  r.set_time(t);
  return r;
}

// A log of `n` records written in a mix of gateway commits and instrument appends.
void fill(SqliteStore& store, int n) {
  for (int i = 0; i < n; ++i) {
    if (i % 2 == 0) {
      StateDelta d;
      AuditEvent e;
      e.kind = AuditEvent::Kind::kAuthorizeCommand;
      e.accepted = true;
      e.at = kT0 + i;
      e.command = "measure";
      e.uses_charged = 1;
      e.uses_left = static_cast<std::uint32_t>(100 - i);
      d.audit.push_back(e);
      REQUIRE(store.commit(d).ok());
    } else {
      REQUIRE(store.append_audit({boot_record(kT0 + i)}).ok());
    }
  }
}

Status verify(const std::string& path, std::string* why = nullptr) {
  auto store = open_store(path);
  return store->verify_audit_chain(why);
}

}  // namespace

TEST_CASE("gateway decisions map to audit records field by field") {
  AuditEvent e;
  e.kind = AuditEvent::Kind::kAuthorizeCommand;
  e.accepted = false;
  e.reason = v1::ERROR_USES_EXHAUSTED;
  e.at = kT0;
  for (std::size_t i = 0; i < e.object_hash.size(); ++i) {
    e.object_hash[i] = static_cast<std::uint8_t>(i);
  }
  e.authorization_id = 9;
  e.token_id = uuid(1);
  e.signer_key_id = Bytes(16, 0x5A);
  e.request_id = 1234;
  e.command = "run-assay";
  e.uses_charged = 1;
  e.uses_left = 4;
  const v1::AuditRecord r = audit_record_from_event(e);
  CHECK(r.kind() == v1::AuditRecord::KIND_COMMAND);
  CHECK_FALSE(r.accepted());
  CHECK(r.reason() == v1::ERROR_USES_EXHAUSTED);
  CHECK(r.time() == kT0);
  CHECK(r.request_hash() == str(ByteView(e.object_hash.data(), 16)));
  CHECK(r.authorization_id() == 9);
  CHECK(r.token_id() == str(uuid(1)));
  CHECK(r.user_key_id() == std::string(16, '\x5A'));
  CHECK(r.command() == "run-assay");
  CHECK(r.uses_charged() == 1);
  CHECK(r.uses_left() == 4);
  CHECK(r.seq() == 0);
  CHECK(r.hash().empty());

  AuditEvent install;
  install.kind = AuditEvent::Kind::kInstallAuthorization;
  CHECK(audit_record_from_event(install).kind() == v1::AuditRecord::KIND_INSTALL_AUTHORIZATION);
  CHECK(audit_record_from_event(install).request_hash().empty());  // no object hash
  AuditEvent offer;
  offer.kind = AuditEvent::Kind::kOfferToken;
  CHECK(audit_record_from_event(offer).kind() == v1::AuditRecord::KIND_OFFER_TOKEN);

  // A replay is answered from the cache: it must not read as a second charge.
  AuditEvent replay = e;
  replay.kind = AuditEvent::Kind::kReplay;
  replay.accepted = true;
  replay.reason = v1::ERROR_UNSPECIFIED;
  CHECK(audit_record_from_event(replay).kind() == v1::AuditRecord::KIND_REPLAY);
  CHECK(audit_record_from_event(replay).uses_charged() == 0);

  AuditEvent dropped;
  dropped.kind = AuditEvent::Kind::kAuditEventsDropped;
  dropped.count = 3;
  dropped.at = kT0;
  const auto d = audit_record_from_event(dropped);
  CHECK(d.kind() == v1::AuditRecord::KIND_AUDIT_EVENTS_DROPPED);
  CHECK(d.count() == 3);
  CHECK_FALSE(d.accepted());
  CHECK(d.reason() == v1::ERROR_STORAGE);
  CHECK(d.time() == kT0);
}

TEST_CASE("a record's hash is SHA-256 over the previous hash and the record without its hash") {
  v1::AuditRecord r = boot_record(kT0);
  AuditHead prev{7, {}};
  prev.hash.fill(0x33);
  const AuditHead head = chain_audit_record(r, prev);
  CHECK(r.seq() == 8);
  CHECK(r.prev_hash() == std::string(32, '\x33'));

  v1::AuditRecord without = r;
  without.clear_hash();
  const Sha256 expected = crypto::sha256(as_bytes(r.prev_hash() + without.SerializeAsString()));
  CHECK(head.hash == expected);
  CHECK(r.hash() == std::string(expected.begin(), expected.end()));
  CHECK(head.seq == 8);
  CHECK(audit_record_follows(r, prev));

  // The first record of a log follows 32 zero bytes.
  v1::AuditRecord first = boot_record(kT0);
  chain_audit_record(first, AuditHead{});
  CHECK(first.seq() == 1);
  CHECK(first.prev_hash() == std::string(32, '\0'));
}

TEST_CASE("the stored chain verifies across commits, appends and reopens") {
  TempDir dir;
  {
    auto store = open_store(dir.db());
    fill(*store, 10);
    CHECK(store->audit_head().seq == 10);
    CHECK(store->verify_audit_chain().ok());
  }
  auto store = open_store(dir.db());
  CHECK(store->audit_head().seq == 10);
  fill(*store, 3);
  CHECK(store->audit_head().seq == 13);
  std::string why;
  CHECK(store->verify_audit_chain(&why).ok());
  CHECK(why.empty());
}

TEST_CASE("an edited audit record is detected") {
  TempDir dir;
  {
    auto store = open_store(dir.db());
    fill(*store, 6);
  }
  SUBCASE("edited without fixing its hash") {
    tamper(
        dir.db(), 3, [](v1::AuditRecord& r) { r.set_uses_charged(0); }, false);
  }
  SUBCASE("edited and rehashed: the next record's link breaks") {
    tamper(
        dir.db(), 3, [](v1::AuditRecord& r) { r.set_accepted(false); }, true);
  }
  SUBCASE("the last record edited and rehashed: the recorded head differs") {
    tamper(
        dir.db(), 6, [](v1::AuditRecord& r) { r.set_time(0); }, true);
  }
  SUBCASE("the hash column alone changed") {
    raw_exec(dir.db(), "UPDATE audit SET hash = zeroblob(32) WHERE seq = 2");
  }
  SUBCASE("a record that no longer parses") {
    raw_exec(dir.db(), "UPDATE audit SET record = x'FFFFFFFF' WHERE seq = 4");
  }
  std::string why;
  const Status st = verify(dir.db(), &why);
  CHECK_FALSE(st.ok());
  CHECK((st.error() == v1::ERROR_BAD_SIGNATURE || st.error() == v1::ERROR_MALFORMED));
  CHECK_FALSE(why.empty());
}

TEST_CASE("a deleted, inserted or reordered audit record is detected") {
  TempDir dir;
  {
    auto store = open_store(dir.db());
    fill(*store, 6);
  }
  SUBCASE("a record in the middle deleted") {
    raw_exec(dir.db(), "DELETE FROM audit WHERE seq = 3");
  }
  SUBCASE("the first record deleted") {
    raw_exec(dir.db(), "DELETE FROM audit WHERE seq = 1");
  }
  SUBCASE("the tail cut off") {
    raw_exec(dir.db(), "DELETE FROM audit WHERE seq >= 5");
  }
  SUBCASE("the whole log emptied") {
    raw_exec(dir.db(), "DELETE FROM audit");
  }
  SUBCASE("two records swapped") {
    raw_exec(dir.db(),
             "UPDATE audit SET seq = -1 WHERE seq = 2; UPDATE audit SET seq = 2 WHERE seq = 3;"
             " UPDATE audit SET seq = 3 WHERE seq = -1");
  }
  SUBCASE("a copy of a record inserted") {
    raw_exec(dir.db(),
             "INSERT INTO audit (seq, record, hash) SELECT 7, record, hash FROM audit"
             " WHERE seq = 6");
  }
  std::string why;
  CHECK(verify(dir.db(), &why).error() == v1::ERROR_BAD_SIGNATURE);
  CHECK_FALSE(why.empty());
}

TEST_CASE("audit export pages walk the whole log and verify page by page") {
  TempDir dir;
  auto store = open_store(dir.db());
  fill(*store, 23);

  std::uint64_t from = 1;
  AuditHead head;  // a verifier starting from the beginning trusts the zero head
  std::size_t pages = 0;
  while (true) {
    auto page = store->audit_records(from, 5);
    REQUIRE(page.ok());
    if (page->empty()) break;
    ++pages;
    CHECK(page->size() <= 5);
    CHECK(page->front().seq() == from);
    auto next = verify_audit_run(*page, head);
    REQUIRE(next.ok());
    head = *next;
    from = head.seq + 1;
  }
  CHECK(pages == 5);
  CHECK(head == store->audit_head());

  // from_seq 0 reads from the start; past the head reads nothing.
  CHECK(store->audit_records(0, 2)->front().seq() == 1);
  CHECK(store->audit_records(24, 10)->empty());
  CHECK(store->audit_records(~0ull, 10)->empty());
  CHECK(store->audit_records(1, 0)->empty());
}

TEST_CASE("a page verified without a trusted start still catches broken links inside it") {
  TempDir dir;
  auto store = open_store(dir.db());
  fill(*store, 8);
  auto page = store->audit_records(4, 4);
  REQUIRE(page.ok());
  auto head = verify_audit_run(*page);
  REQUIRE(head.ok());
  CHECK(head->seq == 7);

  auto edited = *page;
  edited[2].set_uses_left(999);
  CHECK(verify_audit_run(edited).error() == v1::ERROR_BAD_SIGNATURE);

  auto gap = *page;
  gap.erase(gap.begin() + 1);
  std::string why;
  CHECK(verify_audit_run(gap, std::nullopt, &why).error() == v1::ERROR_BAD_SIGNATURE);
  CHECK(why.find("record 6") != std::string::npos);

  // With a start that is not this page's predecessor, the first link fails.
  CHECK(verify_audit_run(*page, AuditHead{}).error() == v1::ERROR_BAD_SIGNATURE);
}

TEST_CASE("records read as one line each for people") {
  v1::AuditRecord r;
  r.set_kind(v1::AuditRecord::KIND_COMMAND);
  r.set_accepted(false);
  r.set_reason(v1::ERROR_STALE_NONCE);
  r.set_command("run-assay");
  chain_audit_record(r, AuditHead{});
  const std::string line = describe_audit_record(r);
  CHECK(line.find("command") != std::string::npos);
  CHECK(line.find("rejected") != std::string::npos);
  CHECK(line.find("run-assay") != std::string::npos);
  CHECK(line.rfind("1 ", 0) == 0);
  CHECK(audit_kind_name(v1::AuditRecord::KIND_EXECUTION) == "execution");
  CHECK(audit_kind_name(v1::AuditRecord::KIND_RATE_LIMIT) == "rate-limit");
}
