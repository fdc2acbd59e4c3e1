#include "instrument/store.hpp"

#include <sqlite3.h>

#include <algorithm>
#include <limits>
#include <string>
#include <utility>

namespace tollgate::instrument {
namespace {

// 'Tgst': marks the file as a Tollgate instrument database (PRAGMA application_id).
constexpr int kApplicationId = 0x54677374;

constexpr const char* kSchemaV1[] = {
    "CREATE TABLE schema_version (version INTEGER NOT NULL)",
    // Scalars of the state (time floor, next idempotency sequence) and the audit
    // head, kept beside the log so a truncated tail is detected.
    "CREATE TABLE meta (name TEXT PRIMARY KEY, value) WITHOUT ROWID",
    "CREATE TABLE authorizations (id INTEGER PRIMARY KEY, signed BLOB NOT NULL)",
    "CREATE TABLE revoked_ids (id INTEGER PRIMARY KEY)",
    "CREATE TABLE tokens (token_id BLOB PRIMARY KEY, signed BLOB NOT NULL,"
    " uses_left INTEGER NOT NULL) WITHOUT ROWID",
    "CREATE TABLE tombstones (token_id BLOB PRIMARY KEY, expires_at INTEGER NOT NULL)"
    " WITHOUT ROWID",
    "CREATE TABLE nonces (nonce BLOB PRIMARY KEY, expires_at INTEGER NOT NULL) WITHOUT ROWID",
    // response NULL = "charged, response pending" (IdempotencyRecord::response).
    "CREATE TABLE idempotency (signer BLOB NOT NULL, request_id INTEGER NOT NULL,"
    " request_hash BLOB NOT NULL, sequence INTEGER NOT NULL, token_id BLOB NOT NULL,"
    " uses_left INTEGER NOT NULL, response BLOB, PRIMARY KEY (signer, request_id)) WITHOUT ROWID",
    "CREATE TABLE audit (seq INTEGER PRIMARY KEY, record BLOB NOT NULL, hash BLOB NOT NULL)",
    "CREATE TABLE results (id INTEGER PRIMARY KEY, created_at INTEGER NOT NULL,"
    " protocol TEXT NOT NULL, sample TEXT NOT NULL, value TEXT NOT NULL,"
    " token_id BLOB NOT NULL, request_hash BLOB NOT NULL)",
};

struct StmtDeleter {
  void operator()(sqlite3_stmt* s) const { sqlite3_finalize(s); }
};
using StmtPtr = std::unique_ptr<sqlite3_stmt, StmtDeleter>;

// SQLite stores signed 64-bit integers; uint64 ids round-trip through the
// two's-complement bit pattern (ordering in SQL is never relied on).
sqlite3_int64 to_db(std::uint64_t v) {
  return static_cast<sqlite3_int64>(v);
}
std::uint64_t from_db_u64(sqlite3_int64 v) {
  return static_cast<std::uint64_t>(v);
}

// Resets a statement when the scope that used it ends, so a failure path never
// leaves it busy (a busy statement would keep a read transaction open).
class Use {
 public:
  explicit Use(sqlite3_stmt* s) : s_(s) {}
  ~Use() {
    sqlite3_reset(s_);
    sqlite3_clear_bindings(s_);
  }
  Use(const Use&) = delete;
  Use& operator=(const Use&) = delete;
  sqlite3_stmt* get() const { return s_; }

  bool bind(int i, std::int64_t v) { return sqlite3_bind_int64(s_, i, v) == SQLITE_OK; }
  bool bind(int i, ByteView b) {
    // A zero-length blob must stay a blob, not NULL (NULL means "absent").
    if (b.empty()) return sqlite3_bind_zeroblob(s_, i, 0) == SQLITE_OK;
    return sqlite3_bind_blob(s_, i, b.data(), static_cast<int>(b.size()), SQLITE_STATIC) ==
           SQLITE_OK;
  }
  bool bind_text(int i, std::string_view t) {
    return sqlite3_bind_text(s_, i, t.data(), static_cast<int>(t.size()), SQLITE_STATIC) ==
           SQLITE_OK;
  }
  bool bind_null(int i) { return sqlite3_bind_null(s_, i) == SQLITE_OK; }
  int step() { return sqlite3_step(s_); }
  bool run() { return step() == SQLITE_DONE; }

  std::int64_t i64(int col) const { return sqlite3_column_int64(s_, col); }
  bool is_null(int col) const { return sqlite3_column_type(s_, col) == SQLITE_NULL; }
  Bytes blob(int col) const {
    const auto* p = static_cast<const std::uint8_t*>(sqlite3_column_blob(s_, col));
    const int n = sqlite3_column_bytes(s_, col);
    if (!p || n <= 0) return {};
    return Bytes(p, p + n);
  }
  std::string text(int col) const {
    const auto* p = reinterpret_cast<const char*>(sqlite3_column_text(s_, col));
    const int n = sqlite3_column_bytes(s_, col);
    if (!p || n <= 0) return {};
    return std::string(p, static_cast<std::size_t>(n));
  }

 private:
  sqlite3_stmt* s_;
};

ByteView view(const std::string& s) {
  return as_bytes(s);
}
ByteView view(const Bytes& b) {
  return b;
}
template <std::size_t N>
ByteView view(const std::array<std::uint8_t, N>& a) {
  return ByteView(a.data(), a.size());
}

}  // namespace

struct SqliteStore::Db {
  sqlite3* handle = nullptr;
  bool read_only = false;
  bool durable = true;

  StmtPtr begin, commit, rollback;
  StmtPtr auth_put, auth_del, revoked_put;
  StmtPtr token_put, token_del, tomb_put, tomb_del, nonce_put, nonce_del;
  StmtPtr idem_put, idem_del, meta_put, meta_get;
  StmtPtr audit_put, audit_range, audit_all;
  StmtPtr result_put, result_get, result_count;

  ~Db() {
    // Statements first: sqlite3_close_v2 would otherwise defer the close.
    for (StmtPtr* s : all()) s->reset();
    if (handle) sqlite3_close_v2(handle);
  }

  std::vector<StmtPtr*> all() {
    return {&begin,     &commit,     &rollback,   &auth_put,    &auth_del,  &revoked_put,
            &token_put, &token_del,  &tomb_put,   &tomb_del,    &nonce_put, &nonce_del,
            &idem_put,  &idem_del,   &meta_put,   &meta_get,    &audit_put, &audit_range,
            &audit_all, &result_put, &result_get, &result_count};
  }

  std::string message() const { return handle ? sqlite3_errmsg(handle) : "no database"; }

  bool exec(const char* sql) {
    return sqlite3_exec(handle, sql, nullptr, nullptr, nullptr) == SQLITE_OK;
  }

  bool prepare(StmtPtr& out, const char* sql) {
    sqlite3_stmt* s = nullptr;
    if (sqlite3_prepare_v3(handle, sql, -1, SQLITE_PREPARE_PERSISTENT, &s, nullptr) != SQLITE_OK) {
      sqlite3_finalize(s);
      return false;
    }
    out.reset(s);
    return true;
  }

  // A one-shot query returning a single integer (or nullopt on error / no row).
  std::optional<std::int64_t> query_int(const char* sql) {
    sqlite3_stmt* raw = nullptr;
    if (sqlite3_prepare_v2(handle, sql, -1, &raw, nullptr) != SQLITE_OK) {
      sqlite3_finalize(raw);
      return std::nullopt;
    }
    StmtPtr s(raw);
    if (sqlite3_step(s.get()) != SQLITE_ROW) return std::nullopt;
    return sqlite3_column_int64(s.get(), 0);
  }

  bool prepare_all() {
    return prepare(begin, "BEGIN IMMEDIATE") && prepare(commit, "COMMIT") &&
           prepare(rollback, "ROLLBACK") &&
           prepare(auth_put,
                   "INSERT OR REPLACE INTO authorizations (id, signed) VALUES (?1, ?2)") &&
           prepare(auth_del, "DELETE FROM authorizations WHERE id = ?1") &&
           prepare(revoked_put, "INSERT OR IGNORE INTO revoked_ids (id) VALUES (?1)") &&
           prepare(
               token_put,
               "INSERT OR REPLACE INTO tokens (token_id, signed, uses_left) VALUES (?1, ?2, ?3)") &&
           prepare(token_del, "DELETE FROM tokens WHERE token_id = ?1") &&
           prepare(tomb_put,
                   "INSERT OR REPLACE INTO tombstones (token_id, expires_at) VALUES (?1, ?2)") &&
           prepare(tomb_del, "DELETE FROM tombstones WHERE token_id = ?1") &&
           prepare(nonce_put,
                   "INSERT OR REPLACE INTO nonces (nonce, expires_at) VALUES (?1, ?2)") &&
           prepare(nonce_del, "DELETE FROM nonces WHERE nonce = ?1") &&
           prepare(idem_put,
                   "INSERT OR REPLACE INTO idempotency (signer, request_id, request_hash, sequence,"
                   " token_id, uses_left, response) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)") &&
           prepare(idem_del, "DELETE FROM idempotency WHERE signer = ?1 AND request_id = ?2") &&
           prepare(meta_put, "INSERT OR REPLACE INTO meta (name, value) VALUES (?1, ?2)") &&
           prepare(meta_get, "SELECT value FROM meta WHERE name = ?1") &&
           prepare(audit_put, "INSERT INTO audit (seq, record, hash) VALUES (?1, ?2, ?3)") &&
           prepare(audit_range, "SELECT record FROM audit WHERE seq >= ?1 ORDER BY seq LIMIT ?2") &&
           prepare(audit_all, "SELECT seq, record, hash FROM audit ORDER BY seq") &&
           prepare(result_put,
                   "INSERT INTO results (created_at, protocol, sample, value, token_id,"
                   " request_hash, id) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)") &&
           prepare(result_get,
                   "SELECT id, created_at, protocol, sample, value, token_id, request_hash"
                   " FROM results WHERE id = ?1") &&
           prepare(result_count, "SELECT count(*) FROM results");
  }
};

SqliteStore::SqliteStore(std::string path, std::unique_ptr<Db> db)
    : path_(std::move(path)), db_(std::move(db)) {}

SqliteStore::~SqliteStore() = default;

Status SqliteStore::fail(const char* what) {
  last_error_ = std::string(what) + ": " + db_->message();
  return v1::ERROR_STORAGE;
}

Result<std::unique_ptr<SqliteStore>> SqliteStore::open(const std::string& path, Options options,
                                                       std::string* why) {
  auto refuse = [&](Error e, std::string text) -> Result<std::unique_ptr<SqliteStore>> {
    if (why) *why = path + ": " + std::move(text);
    return e;
  };

  auto db = std::make_unique<Db>();
  db->read_only = options.read_only;
  db->durable = options.durable;
  const int flags =
      (options.read_only ? SQLITE_OPEN_READONLY : SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE) |
      SQLITE_OPEN_NOMUTEX;
  if (sqlite3_open_v2(path.c_str(), &db->handle, flags, nullptr) != SQLITE_OK) {
    return refuse(v1::ERROR_STORAGE, "cannot open: " + db->message());
  }
  sqlite3_extended_result_codes(db->handle, 1);
  sqlite3_busy_timeout(db->handle, options.busy_timeout_ms);

  // Reading the header is the first touch of the file: junk fails here.
  const auto app_id = db->query_int("PRAGMA application_id");
  if (!app_id) return refuse(v1::ERROR_STORAGE, "not a database: " + db->message());

  if (!options.read_only) {
    sqlite3_stmt* raw = nullptr;
    std::string mode;
    if (sqlite3_prepare_v2(db->handle, "PRAGMA journal_mode=WAL", -1, &raw, nullptr) == SQLITE_OK &&
        sqlite3_step(raw) == SQLITE_ROW) {
      const auto* t = reinterpret_cast<const char*>(sqlite3_column_text(raw, 0));
      mode = t ? t : "";
    }
    sqlite3_finalize(raw);
    if (mode != "wal") return refuse(v1::ERROR_STORAGE, "cannot enable WAL: " + db->message());
    if (!db->exec(options.durable ? "PRAGMA synchronous=FULL" : "PRAGMA synchronous=NORMAL")) {
      return refuse(v1::ERROR_STORAGE, "cannot set synchronous: " + db->message());
    }
  }
  if (!db->exec("PRAGMA foreign_keys=ON")) {
    return refuse(v1::ERROR_STORAGE, "cannot enable foreign keys: " + db->message());
  }

  auto has_version_table = db->query_int(
      "SELECT count(*) FROM sqlite_schema WHERE type = 'table' AND name = 'schema_version'");
  if (!has_version_table) return refuse(v1::ERROR_STORAGE, "cannot read: " + db->message());

  if (*has_version_table == 0) {
    if (options.read_only) return refuse(v1::ERROR_STORAGE, "no Tollgate state in this database");
    // Creating the schema is one transaction; re-checked inside it in case another
    // process created it meanwhile.
    if (!db->exec("BEGIN IMMEDIATE")) {
      return refuse(v1::ERROR_STORAGE, "cannot lock: " + db->message());
    }
    auto tables = db->query_int("SELECT count(*) FROM sqlite_schema");
    auto version_tables = db->query_int(
        "SELECT count(*) FROM sqlite_schema WHERE type = 'table' AND name = 'schema_version'");
    bool ok = tables && version_tables;
    if (ok && *version_tables == 0) {
      if (*tables != 0) {
        db->exec("ROLLBACK");
        return refuse(v1::ERROR_STORAGE, "not a Tollgate database (it has other tables)");
      }
      for (const char* sql : kSchemaV1) ok = ok && db->exec(sql);
      ok = ok && db->exec(("INSERT INTO schema_version (version) VALUES (" +
                           std::to_string(kSchemaVersion) + ")")
                              .c_str());
      ok = ok && db->exec(("PRAGMA application_id=" + std::to_string(kApplicationId)).c_str());
    }
    if (!ok || !db->exec("COMMIT")) {
      const std::string msg = db->message();
      db->exec("ROLLBACK");
      return refuse(v1::ERROR_STORAGE, "cannot create the schema: " + msg);
    }
  } else if (db->query_int("PRAGMA application_id").value_or(0) != kApplicationId) {
    return refuse(v1::ERROR_STORAGE, "not a Tollgate database (application id differs)");
  }

  const auto version = db->query_int("SELECT max(version) FROM schema_version");
  if (!version) return refuse(v1::ERROR_STORAGE, "cannot read the schema version");
  if (*version > kSchemaVersion) {
    return refuse(v1::ERROR_UNSUPPORTED_VERSION,
                  "written by a newer firmware: schema version " + std::to_string(*version) +
                      ", this build knows up to " + std::to_string(kSchemaVersion) +
                      "; refusing to touch it");
  }
  if (*version < 1) {
    return refuse(v1::ERROR_STORAGE, "bad schema version " + std::to_string(*version));
  }
  // (Version 1 is the first schema: no migrations yet. A later version migrates
  // older databases here, in one transaction, before preparing statements.)

  if (!db->prepare_all()) {
    return refuse(v1::ERROR_STORAGE, "cannot prepare statements: " + db->message());
  }

  std::unique_ptr<SqliteStore> store(new SqliteStore(path, std::move(db)));
  // The head lives beside the log; a database whose log is empty has none.
  {
    Use get(store->db_->meta_get.get());
    get.bind_text(1, "audit_head_seq");
    if (get.step() == SQLITE_ROW) store->head_.seq = from_db_u64(get.i64(0));
  }
  {
    Use get(store->db_->meta_get.get());
    get.bind_text(1, "audit_head_hash");
    if (get.step() == SQLITE_ROW) {
      Bytes h = get.blob(0);
      if (h.size() != kAuditHashSize) {
        return refuse(v1::ERROR_STORAGE, "corrupt audit head");
      }
      std::copy(h.begin(), h.end(), store->head_.hash.begin());
    }
  }
  return store;
}

Result<DeviceState> SqliteStore::load() {
  DeviceState s;
  auto query = [&](const char* sql, auto&& row) -> bool {
    sqlite3_stmt* raw = nullptr;
    if (sqlite3_prepare_v2(db_->handle, sql, -1, &raw, nullptr) != SQLITE_OK) {
      sqlite3_finalize(raw);
      return false;
    }
    StmtPtr stmt(raw);
    Use q(stmt.get());
    int rc;
    while ((rc = q.step()) == SQLITE_ROW) row(q);
    return rc == SQLITE_DONE;
  };
  // All tables are read in one read transaction: a consistent snapshot even if
  // another connection writes meanwhile.
  if (!db_->exec("BEGIN")) return fail("load").error();
  bool ok =
      query("SELECT id, signed FROM authorizations",
            [&](Use& q) { s.authorizations[from_db_u64(q.i64(0))] = q.blob(1); }) &&
      query("SELECT id FROM revoked_ids",
            [&](Use& q) { s.revoked_ids.insert(from_db_u64(q.i64(0))); }) &&
      query("SELECT token_id, signed, uses_left FROM tokens",
            [&](Use& q) {
              s.tokens[q.blob(0)] = StoredToken{q.blob(1), static_cast<std::uint32_t>(q.i64(2))};
            }) &&
      query("SELECT token_id, expires_at FROM tombstones",
            [&](Use& q) { s.tombstones[q.blob(0)] = q.i64(1); }) &&
      query("SELECT nonce, expires_at FROM nonces",
            [&](Use& q) { s.nonces[q.blob(0)] = NonceRecord{q.i64(1)}; }) &&
      query(
          "SELECT signer, request_id, request_hash, sequence, token_id, uses_left, response"
          " FROM idempotency",
          [&](Use& q) {
            RequestKey key;
            Bytes signer = q.blob(0);
            std::copy_n(signer.begin(), std::min(signer.size(), key.signer.size()),
                        key.signer.begin());
            key.request_id = from_db_u64(q.i64(1));
            IdempotencyRecord rec;
            Bytes hash = q.blob(2);
            std::copy_n(hash.begin(), std::min(hash.size(), rec.request_hash.size()),
                        rec.request_hash.begin());
            rec.sequence = from_db_u64(q.i64(3));
            rec.token_id = q.blob(4);
            rec.uses_left = static_cast<std::uint32_t>(q.i64(5));
            if (!q.is_null(6)) rec.response = q.blob(6);
            s.idempotency[key] = std::move(rec);
          }) &&
      query("SELECT name, value FROM meta WHERE name IN ('time_floor', 'next_sequence')",
            [&](Use& q) {
              if (q.text(0) == "time_floor")
                s.time_floor = q.i64(1);
              else
                s.next_sequence = from_db_u64(q.i64(1));
            });
  if (!ok) {
    Status st = fail("load");
    db_->exec("ROLLBACK");
    return st.error();
  }
  db_->exec("COMMIT");
  return s;
}

template <class Body>
Status SqliteStore::write_transaction(std::vector<v1::AuditRecord>& audit, Durability durability,
                                      Body&& body) {
  if (db_->read_only) {
    last_error_ = "the store is open read-only";
    return v1::ERROR_STORAGE;
  }
  // synchronous is a connection setting read at COMMIT; it is switched outside
  // the transaction and always switched back, so only this one write is lazy.
  // (Not a cached statement: SQLite applies this pragma when it is prepared,
  // not when it is stepped.)
  const bool lazy = durability == Durability::kLazy;
  struct Restore {
    Db& db;
    bool active;
    ~Restore() {
      if (active) db.exec(db.durable ? "PRAGMA synchronous=FULL" : "PRAGMA synchronous=NORMAL");
    }
  } restore{*db_, lazy};
  if (lazy && !db_->exec("PRAGMA synchronous=NORMAL")) return fail("synchronous");
  {
    Use begin(db_->begin.get());
    if (!begin.run()) return fail("begin");
  }
  const AuditHead saved = head_;
  auto abort = [&](Status st) {
    if (!sqlite3_get_autocommit(db_->handle)) {
      Use rollback(db_->rollback.get());
      rollback.run();
    }
    head_ = saved;
    return st;
  };
  if (Status st = body(); !st) return abort(st);
  if (Status st = append_chained(audit); !st) return abort(st);
  // Fault injection happens after every row was written, the worst moment.
  if (fail_all_ || (fail_countdown_ > 0 && --fail_countdown_ == 0)) {
    last_error_ = "injected failure";
    return abort(v1::ERROR_STORAGE);
  }
  {
    Use commit(db_->commit.get());
    if (!commit.run()) return abort(fail("commit"));
  }
  ++writes_;
  // A durable commit syncs the whole WAL, earlier lazy frames included.
  lazy_pending_ = lazy || (lazy_pending_ && !db_->durable);
  return {};
}

Status SqliteStore::append_chained(std::vector<v1::AuditRecord>& audit) {
  if (audit.empty()) return {};
  std::string record;
  for (v1::AuditRecord& r : audit) {
    head_ = chain_audit_record(r, head_);
    record.clear();
    if (!r.SerializeToString(&record)) {
      last_error_ = "cannot serialize an audit record";
      return v1::ERROR_STORAGE;
    }
    Use put(db_->audit_put.get());
    if (!put.bind(1, to_db(head_.seq)) || !put.bind(2, view(record)) ||
        !put.bind(3, view(head_.hash)) || !put.run()) {
      return fail("audit");
    }
  }
  {
    Use put(db_->meta_put.get());
    if (!put.bind_text(1, "audit_head_seq") || !put.bind(2, to_db(head_.seq)) || !put.run()) {
      return fail("audit head");
    }
  }
  Use put(db_->meta_put.get());
  if (!put.bind_text(1, "audit_head_hash") || !put.bind(2, view(head_.hash)) || !put.run()) {
    return fail("audit head");
  }
  return {};
}

Status SqliteStore::commit(const StateDelta& delta) {
  if (delta.empty()) return {};
  std::vector<v1::AuditRecord> audit;
  audit.reserve(delta.audit.size());
  for (const AuditEvent& e : delta.audit) audit.push_back(audit_record_from_event(e));

  return write_transaction(audit, Durability::kDurable, [&]() -> Status {
    Db& d = *db_;
    for (std::uint64_t id : delta.authorizations_removed) {
      Use del(d.auth_del.get());
      if (!del.bind(1, to_db(id)) || !del.run()) return fail("authorizations");
    }
    for (const auto& [id, bytes] : delta.authorizations_put) {
      Use put(d.auth_put.get());
      if (!put.bind(1, to_db(id)) || !put.bind(2, view(bytes)) || !put.run()) {
        return fail("authorizations");
      }
    }
    for (std::uint64_t id : delta.revoked_added) {
      Use put(d.revoked_put.get());
      if (!put.bind(1, to_db(id)) || !put.run()) return fail("revoked ids");
    }
    for (const Bytes& id : delta.tokens_removed) {
      Use del(d.token_del.get());
      if (!del.bind(1, view(id)) || !del.run()) return fail("tokens");
    }
    for (const auto& [id, token] : delta.tokens_put) {
      Use put(d.token_put.get());
      if (!put.bind(1, view(id)) || !put.bind(2, view(token.signed_bytes)) ||
          !put.bind(3, std::int64_t{token.uses_left}) || !put.run()) {
        return fail("tokens");
      }
    }
    for (const Bytes& id : delta.tombstones_removed) {
      Use del(d.tomb_del.get());
      if (!del.bind(1, view(id)) || !del.run()) return fail("tombstones");
    }
    for (const auto& [id, expires_at] : delta.tombstones_put) {
      Use put(d.tomb_put.get());
      if (!put.bind(1, view(id)) || !put.bind(2, expires_at) || !put.run()) {
        return fail("tombstones");
      }
    }
    for (const Bytes& nonce : delta.nonces_removed) {
      Use del(d.nonce_del.get());
      if (!del.bind(1, view(nonce)) || !del.run()) return fail("nonces");
    }
    for (const auto& [nonce, rec] : delta.nonces_put) {
      Use put(d.nonce_put.get());
      if (!put.bind(1, view(nonce)) || !put.bind(2, rec.expires_at) || !put.run()) {
        return fail("nonces");
      }
    }
    for (const RequestKey& key : delta.idempotency_removed) {
      Use del(d.idem_del.get());
      if (!del.bind(1, view(key.signer)) || !del.bind(2, to_db(key.request_id)) || !del.run()) {
        return fail("idempotency");
      }
    }
    for (const auto& [key, rec] : delta.idempotency_put) {
      Use put(d.idem_put.get());
      bool ok = put.bind(1, view(key.signer)) && put.bind(2, to_db(key.request_id)) &&
                put.bind(3, view(rec.request_hash)) && put.bind(4, to_db(rec.sequence)) &&
                put.bind(5, view(rec.token_id)) && put.bind(6, std::int64_t{rec.uses_left}) &&
                (rec.response ? put.bind(7, view(*rec.response)) : put.bind_null(7));
      if (!ok || !put.run()) return fail("idempotency");
    }
    if (delta.time_floor) {
      Use put(d.meta_put.get());
      if (!put.bind_text(1, "time_floor") || !put.bind(2, *delta.time_floor) || !put.run()) {
        return fail("time floor");
      }
    }
    if (delta.next_sequence) {
      Use put(d.meta_put.get());
      if (!put.bind_text(1, "next_sequence") || !put.bind(2, to_db(*delta.next_sequence)) ||
          !put.run()) {
        return fail("next sequence");
      }
    }
    return {};
  });
}

Result<AuditHead> SqliteStore::append_audit(std::vector<v1::AuditRecord> records,
                                            Durability durability) {
  if (records.empty()) return head_;
  if (Status st = write_transaction(records, durability, [] { return Status{}; }); !st) {
    return st.error();
  }
  return head_;
}

Status SqliteStore::sync() {
  if (!lazy_pending_) return {};
  std::vector<v1::AuditRecord> none;
  // Rewriting one row is enough: committing it syncs every frame before it.
  return write_transaction(none, Durability::kDurable, [&]() -> Status {
    Use put(db_->meta_put.get());
    if (!put.bind_text(1, "audit_head_seq") || !put.bind(2, to_db(head_.seq)) || !put.run()) {
      return fail("sync");
    }
    return {};
  });
}

Result<std::vector<v1::AuditRecord>> SqliteStore::audit_records(std::uint64_t from_seq,
                                                                std::size_t max) {
  std::vector<v1::AuditRecord> out;
  if (max == 0) return out;
  if (Status st = sync(); !st) return st.error();
  const auto limit = static_cast<std::int64_t>(
      std::min<std::size_t>(max, static_cast<std::size_t>(std::numeric_limits<int>::max())));
  Use q(db_->audit_range.get());
  // seq is stored as a signed integer; anything beyond INT64_MAX is past the head.
  if (from_seq > static_cast<std::uint64_t>(std::numeric_limits<std::int64_t>::max())) return out;
  if (!q.bind(1, static_cast<std::int64_t>(from_seq)) || !q.bind(2, limit)) {
    return fail("audit").error();
  }
  int rc;
  while ((rc = q.step()) == SQLITE_ROW) {
    Bytes blob = q.blob(0);
    v1::AuditRecord r;
    if (!r.ParseFromArray(blob.data(), static_cast<int>(blob.size()))) {
      last_error_ = "audit record does not parse";
      return v1::ERROR_MALFORMED;
    }
    out.push_back(std::move(r));
  }
  if (rc != SQLITE_DONE) return fail("audit").error();
  return out;
}

Status SqliteStore::verify_audit_chain(std::string* why) {
  auto broken = [&](Error e, std::string text) -> Status {
    last_error_ = text;
    if (why) *why = std::move(text);
    return e;
  };
  // One read transaction: the walk and the recorded head are the same snapshot
  // even while another connection appends.
  if (!db_->exec("BEGIN")) return fail("audit");
  struct EndRead {
    Db& db;
    ~EndRead() { db.exec("COMMIT"); }
  } end_read{*db_};
  AuditHead head;
  Use q(db_->audit_all.get());
  int rc;
  while ((rc = q.step()) == SQLITE_ROW) {
    const std::uint64_t seq = from_db_u64(q.i64(0));
    Bytes blob = q.blob(1);
    Bytes hash = q.blob(2);
    v1::AuditRecord r;
    if (!r.ParseFromArray(blob.data(), static_cast<int>(blob.size()))) {
      return broken(v1::ERROR_MALFORMED, "audit row " + std::to_string(seq) + " does not parse");
    }
    if (r.seq() != seq) {
      return broken(v1::ERROR_BAD_SIGNATURE, "audit row " + std::to_string(seq) + " holds record " +
                                                 std::to_string(r.seq()));
    }
    if (r.hash() != as_chars(hash)) {
      return broken(v1::ERROR_BAD_SIGNATURE,
                    "audit row " + std::to_string(seq) + ": hash column differs from the record");
    }
    std::string text;
    if (!audit_record_follows(r, head, &text)) return broken(v1::ERROR_BAD_SIGNATURE, text);
    head.seq = seq;
    std::copy(hash.begin(), hash.end(), head.hash.begin());
  }
  if (rc != SQLITE_DONE) return fail("audit");

  // The recorded head catches a cut-off tail (or rows appended around the store).
  AuditHead recorded;
  {
    Use get(db_->meta_get.get());
    get.bind_text(1, "audit_head_seq");
    if (get.step() == SQLITE_ROW) recorded.seq = from_db_u64(get.i64(0));
  }
  {
    Use get(db_->meta_get.get());
    get.bind_text(1, "audit_head_hash");
    if (get.step() == SQLITE_ROW) {
      Bytes h = get.blob(0);
      if (h.size() == kAuditHashSize) std::copy(h.begin(), h.end(), recorded.hash.begin());
    }
  }
  if (recorded != head) {
    return broken(v1::ERROR_BAD_SIGNATURE, "the log ends at record " + std::to_string(head.seq) +
                                               " but its recorded head is record " +
                                               std::to_string(recorded.seq));
  }
  return {};
}

Result<std::uint64_t> SqliteStore::put_result(const AssayResult& result,
                                              std::vector<v1::AuditRecord> audit,
                                              Durability durability) {
  if (result.id > static_cast<std::uint64_t>(std::numeric_limits<std::int64_t>::max())) {
    last_error_ = "result id out of range";
    return v1::ERROR_STORAGE;
  }
  std::uint64_t id = 0;
  Status st = write_transaction(audit, durability, [&]() -> Status {
    Use put(db_->result_put.get());
    // NULL lets SQLite pick max(id) + 1.
    const bool bound_id = result.id == 0 ? put.bind_null(7) : put.bind(7, to_db(result.id));
    if (!bound_id || !put.bind(1, result.created_at) || !put.bind_text(2, result.protocol) ||
        !put.bind_text(3, result.sample) || !put.bind_text(4, result.value) ||
        !put.bind(5, view(result.token_id)) || !put.bind(6, view(result.request_hash)) ||
        !put.run()) {
      return fail("results");
    }
    id = from_db_u64(sqlite3_last_insert_rowid(db_->handle));
    return {};
  });
  if (!st) return st.error();
  return id;
}

Result<std::optional<AssayResult>> SqliteStore::get_result(std::uint64_t id) {
  if (id == 0 || id > static_cast<std::uint64_t>(std::numeric_limits<std::int64_t>::max())) {
    return std::optional<AssayResult>{};
  }
  Use q(db_->result_get.get());
  if (!q.bind(1, to_db(id))) return fail("results").error();
  const int rc = q.step();
  if (rc == SQLITE_DONE) return std::optional<AssayResult>{};
  if (rc != SQLITE_ROW) return fail("results").error();
  AssayResult r;
  r.id = from_db_u64(q.i64(0));
  r.created_at = q.i64(1);
  r.protocol = q.text(2);
  r.sample = q.text(3);
  r.value = q.text(4);
  r.token_id = q.blob(5);
  r.request_hash = q.blob(6);
  return std::optional<AssayResult>{std::move(r)};
}

Result<std::uint64_t> SqliteStore::count_results() {
  Use q(db_->result_count.get());
  if (q.step() != SQLITE_ROW) return fail("results").error();
  return from_db_u64(q.i64(0));
}

Result<std::int64_t> SqliteStore::query_pragma(const std::string& name) {
  const bool known = name == "synchronous" || name == "foreign_keys" || name == "busy_timeout" ||
                     name == "application_id" || name == "wal_autocheckpoint";
  if (!known) return v1::ERROR_MALFORMED;
  auto v = db_->query_int(("PRAGMA " + name).c_str());
  if (!v) return fail("pragma").error();
  return *v;
}

Status SqliteStore::integrity_check(std::string* why) {
  sqlite3_stmt* raw = nullptr;
  if (sqlite3_prepare_v2(db_->handle, "PRAGMA integrity_check", -1, &raw, nullptr) != SQLITE_OK) {
    sqlite3_finalize(raw);
    return fail("integrity check");
  }
  StmtPtr stmt(raw);
  std::string report;
  int rc;
  while ((rc = sqlite3_step(stmt.get())) == SQLITE_ROW) {
    const auto* t = reinterpret_cast<const char*>(sqlite3_column_text(stmt.get(), 0));
    if (!report.empty()) report += "; ";
    report += t ? t : "";
  }
  if (rc != SQLITE_DONE) return fail("integrity check");
  if (report != "ok") {
    last_error_ = "integrity check: " + report;
    if (why) *why = report;
    return v1::ERROR_STORAGE;
  }
  return {};
}

}  // namespace tollgate::instrument
