#include "tools/cloud/sqlite_store.hpp"

#include "tools/cloud/pg_store.hpp"

#include <sqlite3.h>

#include <cstring>
#include <limits>

namespace tollgate::cloud {

const char* model_name(Model m) {
  switch (m) {
    case Model::kSubscription:
      return "subscription";
    case Model::kPayPerUse:
      return "pay-per-use";
    case Model::kRentToOwn:
      return "rent-to-own";
  }
  return "?";
}

std::optional<Model> model_from_name(const std::string& name) {
  if (name == "subscription") return Model::kSubscription;
  if (name == "pay-per-use") return Model::kPayPerUse;
  if (name == "rent-to-own") return Model::kRentToOwn;
  return std::nullopt;
}

namespace {

const char* const kSchema = R"sql(
CREATE TABLE IF NOT EXISTS users (
  id BLOB PRIMARY KEY, name TEXT NOT NULL UNIQUE, password_hash TEXT NOT NULL,
  revoked INTEGER NOT NULL DEFAULT 0, created_at INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS sessions (
  hash BLOB PRIMARY KEY, user_id BLOB NOT NULL, expires_at INTEGER NOT NULL);
CREATE INDEX IF NOT EXISTS sessions_user ON sessions(user_id);
CREATE TABLE IF NOT EXISTS challenges (
  id BLOB PRIMARY KEY, user_id BLOB NOT NULL, challenge BLOB NOT NULL, public_key BLOB NOT NULL,
  expires_at INTEGER NOT NULL, used INTEGER NOT NULL DEFAULT 0);
CREATE TABLE IF NOT EXISTS user_keys (
  user_id BLOB NOT NULL, key_id BLOB NOT NULL, public_key BLOB NOT NULL,
  enrolled_at INTEGER NOT NULL, PRIMARY KEY (user_id, key_id));
CREATE TABLE IF NOT EXISTS devices (
  id BLOB PRIMARY KEY, public_key BLOB NOT NULL, key_id BLOB NOT NULL UNIQUE,
  name TEXT NOT NULL, added_at INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS entitlements (
  user_id BLOB NOT NULL, device_id BLOB NOT NULL, model INTEGER NOT NULL,
  window_start INTEGER NOT NULL, window_end INTEGER NOT NULL,
  uses_per_token INTEGER NOT NULL, max_outstanding INTEGER NOT NULL,
  balance INTEGER NOT NULL, price INTEGER NOT NULL, paid INTEGER NOT NULL,
  PRIMARY KEY (user_id, device_id));
CREATE TABLE IF NOT EXISTS issuances (
  token_id BLOB PRIMARY KEY, user_id BLOB NOT NULL, device_id BLOB NOT NULL,
  user_key_id BLOB NOT NULL, uses INTEGER NOT NULL, issued_at INTEGER NOT NULL,
  expires_at INTEGER NOT NULL, authorization_id INTEGER NOT NULL,
  consumed INTEGER NOT NULL DEFAULT 0);
CREATE INDEX IF NOT EXISTS issuances_pair ON issuances(user_id, device_id, expires_at);
CREATE TABLE IF NOT EXISTS receipt_heads (
  device_id BLOB PRIMARY KEY, seq INTEGER NOT NULL, hash BLOB NOT NULL);
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value BLOB NOT NULL);
CREATE TABLE IF NOT EXISTS change_version (
  id INTEGER PRIMARY KEY CHECK (id = 1), n INTEGER NOT NULL);
INSERT OR IGNORE INTO change_version(id, n) VALUES (1, 0);
)sql";

// change_version() is kept by triggers, so writers that know nothing of it
// (another process, an older build, the sqlite3 shell) still move it. Mints
// change only issuances and entitlement balances, which fire none of these.
const char* const kChangeTriggers = R"sql(
CREATE TRIGGER IF NOT EXISTS cv_users_i AFTER INSERT ON users
  BEGIN UPDATE change_version SET n = n + 1; END;
CREATE TRIGGER IF NOT EXISTS cv_users_u AFTER UPDATE ON users
  BEGIN UPDATE change_version SET n = n + 1; END;
CREATE TRIGGER IF NOT EXISTS cv_users_d AFTER DELETE ON users
  BEGIN UPDATE change_version SET n = n + 1; END;
CREATE TRIGGER IF NOT EXISTS cv_sessions_u AFTER UPDATE ON sessions
  BEGIN UPDATE change_version SET n = n + 1; END;
CREATE TRIGGER IF NOT EXISTS cv_sessions_d AFTER DELETE ON sessions
  BEGIN UPDATE change_version SET n = n + 1; END;
CREATE TRIGGER IF NOT EXISTS cv_user_keys_i AFTER INSERT ON user_keys
  BEGIN UPDATE change_version SET n = n + 1; END;
CREATE TRIGGER IF NOT EXISTS cv_user_keys_u AFTER UPDATE ON user_keys
  BEGIN UPDATE change_version SET n = n + 1; END;
CREATE TRIGGER IF NOT EXISTS cv_user_keys_d AFTER DELETE ON user_keys
  BEGIN UPDATE change_version SET n = n + 1; END;
CREATE TRIGGER IF NOT EXISTS cv_devices_i AFTER INSERT ON devices
  BEGIN UPDATE change_version SET n = n + 1; END;
CREATE TRIGGER IF NOT EXISTS cv_devices_u AFTER UPDATE ON devices
  BEGIN UPDATE change_version SET n = n + 1; END;
CREATE TRIGGER IF NOT EXISTS cv_devices_d AFTER DELETE ON devices
  BEGIN UPDATE change_version SET n = n + 1; END;
CREATE TRIGGER IF NOT EXISTS cv_entitlements_i AFTER INSERT ON entitlements
  BEGIN UPDATE change_version SET n = n + 1; END;
CREATE TRIGGER IF NOT EXISTS cv_entitlements_u AFTER UPDATE OF
  user_id, device_id, model, window_start, window_end, uses_per_token, max_outstanding, price, paid
  ON entitlements BEGIN UPDATE change_version SET n = n + 1; END;
CREATE TRIGGER IF NOT EXISTS cv_entitlements_d AFTER DELETE ON entitlements
  BEGIN UPDATE change_version SET n = n + 1; END;
CREATE TRIGGER IF NOT EXISTS cv_meta_i AFTER INSERT ON meta
  BEGIN UPDATE change_version SET n = n + 1; END;
CREATE TRIGGER IF NOT EXISTS cv_meta_u AFTER UPDATE ON meta
  BEGIN UPDATE change_version SET n = n + 1; END;
CREATE TRIGGER IF NOT EXISTS cv_meta_d AFTER DELETE ON meta
  BEGIN UPDATE change_version SET n = n + 1; END;
)sql";

}  // namespace

// A prepared statement with bind-by-position and typed column getters.
// The statement is prepared once per connection and kept; the destructor
// resets it (ending its read transaction) and clears its bindings.
class SqliteCloudStore::Stmt {
 public:
  Stmt(Conn& c, const char* sql) : db_(c.db) {
    auto it = c.statements.find(sql);
    if (it == c.statements.end()) {
      sqlite3_stmt* st = nullptr;
      if (sqlite3_prepare_v3(db_, sql, -1, SQLITE_PREPARE_PERSISTENT, &st, nullptr) != SQLITE_OK) {
        fail("prepare");
      }
      it = c.statements.emplace(sql, st).first;
    }
    st_ = it->second;
  }
  ~Stmt() {
    sqlite3_reset(st_);
    sqlite3_clear_bindings(st_);
  }
  Stmt(const Stmt&) = delete;
  Stmt& operator=(const Stmt&) = delete;

  Stmt& bind(ByteView b) {
    // A zero-length blob must still be a blob, not NULL.
    static const std::uint8_t empty = 0;
    check(sqlite3_bind_blob(st_, ++n_, b.empty() ? &empty : b.data(), static_cast<int>(b.size()),
                            SQLITE_TRANSIENT));
    return *this;
  }
  Stmt& bind(const Bytes& b) { return bind(ByteView(b)); }
  Stmt& bind(const std::string& s) {
    check(sqlite3_bind_text(st_, ++n_, s.data(), static_cast<int>(s.size()), SQLITE_TRANSIENT));
    return *this;
  }
  Stmt& bind(std::int64_t v) {
    check(sqlite3_bind_int64(st_, ++n_, v));
    return *this;
  }

  bool step() {
    const int rc = sqlite3_step(st_);
    if (rc == SQLITE_ROW) return true;
    if (rc == SQLITE_DONE) return false;
    fail("step");
  }
  void run() {
    while (step()) {
    }
  }

  Bytes blob(int i) const {
    const auto* p = static_cast<const std::uint8_t*>(sqlite3_column_blob(st_, i));
    return Bytes(p, p + sqlite3_column_bytes(st_, i));
  }
  std::string text(int i) const {
    const auto* p = reinterpret_cast<const char*>(sqlite3_column_text(st_, i));
    return p ? std::string(p, static_cast<std::size_t>(sqlite3_column_bytes(st_, i))) : "";
  }
  std::int64_t i64(int i) const { return sqlite3_column_int64(st_, i); }
  std::uint64_t u64(int i) const {
    const auto v = sqlite3_column_int64(st_, i);
    return v < 0 ? 0 : static_cast<std::uint64_t>(v);
  }

 private:
  void check(int rc) {
    if (rc != SQLITE_OK) fail("bind");
  }
  [[noreturn]] void fail(const char* what) {
    throw StoreError(std::string("sqlite ") + what + ": " + sqlite3_errmsg(db_));
  }
  sqlite3* db_;
  sqlite3_stmt* st_ = nullptr;
  int n_ = 0;
};

// BEGIN IMMEDIATE .. COMMIT; rolls back unless commit() ran.
class SqliteCloudStore::Tx {
 public:
  explicit Tx(SqliteCloudStore& s) : s_(s), lock_(s.mu_) { Stmt(s_.db_, "BEGIN IMMEDIATE").run(); }
  ~Tx() {
    if (!done_) sqlite3_exec(s_.db_, "ROLLBACK", nullptr, nullptr, nullptr);
  }
  void commit() {
    Stmt(s_.db_, "COMMIT").run();
    done_ = true;
  }
  Conn& db() const { return s_.db_; }

 private:
  SqliteCloudStore& s_;
  std::lock_guard<std::mutex> lock_;
  bool done_ = false;
};

// One of the read-only connections (WAL: readers never wait for the writer's
// commit, so lookups do not queue behind an fsync).
class SqliteCloudStore::Reader {
 public:
  explicit Reader(SqliteCloudStore& s) {
    for (auto& c : s.readers_) {
      if (c->mu.try_lock()) {
        c_ = c.get();
        return;
      }
    }
    c_ = s.readers_[s.next_reader_++ % s.readers_.size()].get();
    c_->mu.lock();
  }
  ~Reader() { c_->mu.unlock(); }
  Reader(const Reader&) = delete;
  Reader& operator=(const Reader&) = delete;
  Conn& db() const { return c_->db; }

 private:
  ReadConnection* c_ = nullptr;
};

void SqliteCloudStore::Conn::close() {
  for (auto& [sql, st] : statements) sqlite3_finalize(st);
  statements.clear();
  sqlite3_close(db);
  db = nullptr;
}

void SqliteCloudStore::exec(const char* sql) {
  char* err = nullptr;
  if (sqlite3_exec(db_, sql, nullptr, nullptr, &err) != SQLITE_OK) {
    std::string msg = err ? err : sqlite3_errmsg(db_);
    sqlite3_free(err);
    throw StoreError("sqlite: " + msg);
  }
}

SqliteCloudStore::SqliteCloudStore(const std::string& path) {
  // NOMUTEX: every connection is used under this class's own mutexes.
  const int flags = SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_NOMUTEX;
  if (sqlite3_open_v2(path.c_str(), &db_.db, flags, nullptr) != SQLITE_OK) {
    std::string msg = db_ ? sqlite3_errmsg(db_) : "out of memory";
    db_.close();
    throw StoreError("cannot open " + path + ": " + msg);
  }
  try {
    // Another process (the operator CLI) may hold the write lock briefly.
    sqlite3_busy_timeout(db_, 5000);
    exec("PRAGMA journal_mode=WAL");
    exec("PRAGMA synchronous=FULL");
    exec("PRAGMA wal_autocheckpoint=10000");
    exec("PRAGMA foreign_keys=ON");
    std::int64_t version = 0;
    {
      Stmt st(db_, "PRAGMA user_version");
      if (st.step()) version = st.i64(0);
    }
    if (version > kSchemaVersion) {
      throw StoreError(path + " has schema version " + std::to_string(version) +
                       ", newer than this build (" + std::to_string(kSchemaVersion) + ")");
    }
    exec("BEGIN IMMEDIATE");
    exec(kSchema);
    exec(kChangeTriggers);
    exec("PRAGMA user_version=1");
    exec("COMMIT");
    for (int i = 0; i < kReaders; ++i) {
      auto c = std::make_unique<ReadConnection>();
      if (sqlite3_open_v2(path.c_str(), &c->db.db, SQLITE_OPEN_READONLY | SQLITE_OPEN_NOMUTEX,
                          nullptr) != SQLITE_OK) {
        throw StoreError("cannot open " + path + " for reading");
      }
      sqlite3_busy_timeout(c->db, 5000);
      readers_.push_back(std::move(c));
    }
  } catch (...) {
    readers_.clear();
    db_.close();
    throw;
  }
}

SqliteCloudStore::~SqliteCloudStore() {
  readers_.clear();
  db_.close();
}

bool SqliteCloudStore::add_user(const UserRecord& u) {
  Tx tx(*this);
  Stmt st(tx.db(),
          "INSERT OR IGNORE INTO users(id, name, password_hash, revoked, created_at) "
          "VALUES (?, ?, ?, ?, ?)");
  st.bind(u.id).bind(u.name).bind(u.password_hash).bind(std::int64_t{u.revoked}).bind(u.created_at);
  st.run();
  const bool added = sqlite3_changes(tx.db()) == 1;
  tx.commit();
  return added;
}

namespace {
template <class Stmt>
UserRecord read_user(const Stmt& st) {
  return UserRecord{st.blob(0), st.text(1), st.text(2), st.i64(3) != 0, st.i64(4)};
}
}  // namespace

std::optional<UserRecord> SqliteCloudStore::user_by_name(const std::string& name) {
  Reader reader(*this);
  Stmt st(reader.db(),
          "SELECT id, name, password_hash, revoked, created_at FROM users WHERE name = ?");
  st.bind(name);
  if (!st.step()) return std::nullopt;
  return read_user(st);
}

std::optional<UserRecord> SqliteCloudStore::user_by_id(ByteView id) {
  Reader reader(*this);
  Stmt st(reader.db(),
          "SELECT id, name, password_hash, revoked, created_at FROM users WHERE id = ?");
  st.bind(id);
  if (!st.step()) return std::nullopt;
  return read_user(st);
}

bool SqliteCloudStore::revoke_user(const std::string& name) {
  Tx tx(*this);
  Bytes id;
  {
    Stmt st(tx.db(), "SELECT id FROM users WHERE name = ?");
    st.bind(name);
    if (!st.step()) return false;
    id = st.blob(0);
  }
  Stmt(tx.db(), "UPDATE users SET revoked = 1 WHERE id = ?").bind(id).run();
  Stmt(tx.db(), "DELETE FROM sessions WHERE user_id = ?").bind(id).run();
  tx.commit();
  return true;
}

void SqliteCloudStore::add_session(ByteView hash, ByteView user_id, UnixTime expires_at,
                                   UnixTime now) {
  Tx tx(*this);
  Stmt(tx.db(), "DELETE FROM sessions WHERE user_id = ? AND expires_at <= ?")
      .bind(user_id)
      .bind(now)
      .run();
  Stmt(tx.db(),
       "DELETE FROM sessions WHERE hash IN (SELECT hash FROM sessions WHERE user_id = ? "
       "ORDER BY expires_at DESC LIMIT -1 OFFSET ?)")
      .bind(user_id)
      .bind(to_i64(kMaxSessionsPerUser - 1))
      .run();
  Stmt(tx.db(), "INSERT INTO sessions(hash, user_id, expires_at) VALUES (?, ?, ?)")
      .bind(hash)
      .bind(user_id)
      .bind(expires_at)
      .run();
  tx.commit();
}

std::optional<SessionRecord> SqliteCloudStore::session(ByteView hash) {
  Reader reader(*this);
  Stmt st(reader.db(), "SELECT user_id, expires_at FROM sessions WHERE hash = ?");
  st.bind(hash);
  if (!st.step()) return std::nullopt;
  return SessionRecord{st.blob(0), st.i64(1)};
}

bool SqliteCloudStore::add_challenge(const ChallengeRecord& c, UnixTime now) {
  Tx tx(*this);
  Stmt(tx.db(), "DELETE FROM challenges WHERE user_id = ? AND expires_at <= ?")
      .bind(c.user_id)
      .bind(now)
      .run();
  {
    Stmt st(tx.db(), "SELECT COUNT(*) FROM challenges WHERE user_id = ? AND used = 0");
    st.bind(c.user_id);
    st.step();
    if (st.u64(0) >= kMaxOpenChallenges) return false;
  }
  Stmt(tx.db(),
       "INSERT INTO challenges(id, user_id, challenge, public_key, expires_at, used) "
       "VALUES (?, ?, ?, ?, ?, 0)")
      .bind(c.id)
      .bind(c.user_id)
      .bind(c.challenge)
      .bind(c.public_key)
      .bind(c.expires_at)
      .run();
  tx.commit();
  return true;
}

std::optional<ChallengeRecord> SqliteCloudStore::challenge(ByteView id) {
  Reader reader(*this);
  Stmt st(reader.db(),
          "SELECT id, user_id, challenge, public_key, expires_at, used FROM challenges "
          "WHERE id = ?");
  st.bind(id);
  if (!st.step()) return std::nullopt;
  return ChallengeRecord{st.blob(0), st.blob(1), st.blob(2), st.blob(3), st.i64(4), st.i64(5) != 0};
}

bool SqliteCloudStore::consume_challenge_and_enroll(ByteView challenge_id, ByteView user_id,
                                                    const UserKeyRecord& key) {
  Tx tx(*this);
  Stmt(tx.db(), "UPDATE challenges SET used = 1 WHERE id = ? AND user_id = ? AND used = 0")
      .bind(challenge_id)
      .bind(user_id)
      .run();
  if (sqlite3_changes(tx.db()) != 1) return false;
  Stmt(tx.db(),
       "INSERT OR IGNORE INTO user_keys(user_id, key_id, public_key, enrolled_at) "
       "VALUES (?, ?, ?, ?)")
      .bind(user_id)
      .bind(key.key_id)
      .bind(key.public_key)
      .bind(key.enrolled_at)
      .run();
  tx.commit();
  return true;
}

std::vector<UserKeyRecord> SqliteCloudStore::user_keys(ByteView user_id) {
  Reader reader(*this);
  Stmt st(reader.db(),
          "SELECT key_id, public_key, enrolled_at FROM user_keys WHERE user_id = ? "
          "ORDER BY enrolled_at, key_id");
  st.bind(user_id);
  std::vector<UserKeyRecord> out;
  while (st.step()) out.push_back({st.blob(0), st.blob(1), st.i64(2)});
  return out;
}

bool SqliteCloudStore::add_device(const DeviceRecord& d) {
  Tx tx(*this);
  Stmt(tx.db(),
       "INSERT OR IGNORE INTO devices(id, public_key, key_id, name, added_at) "
       "VALUES (?, ?, ?, ?, ?)")
      .bind(d.id)
      .bind(d.public_key)
      .bind(d.key_id)
      .bind(d.name)
      .bind(d.added_at)
      .run();
  const bool added = sqlite3_changes(tx.db()) == 1;
  tx.commit();
  return added;
}

std::optional<DeviceRecord> SqliteCloudStore::device(ByteView id) {
  Reader reader(*this);
  Stmt st(reader.db(), "SELECT id, public_key, key_id, name, added_at FROM devices WHERE id = ?");
  st.bind(id);
  if (!st.step()) return std::nullopt;
  return DeviceRecord{st.blob(0), st.blob(1), st.blob(2), st.text(3), st.i64(4)};
}

std::optional<DeviceRecord> SqliteCloudStore::device_by_key_id(ByteView key_id) {
  Reader reader(*this);
  Stmt st(reader.db(),
          "SELECT id, public_key, key_id, name, added_at FROM devices WHERE key_id = ?");
  st.bind(key_id);
  if (!st.step()) return std::nullopt;
  return DeviceRecord{st.blob(0), st.blob(1), st.blob(2), st.text(3), st.i64(4)};
}

void SqliteCloudStore::put_entitlement(const EntitlementRecord& e) {
  Tx tx(*this);
  Stmt(tx.db(),
       "INSERT OR REPLACE INTO entitlements(user_id, device_id, model, window_start, window_end, "
       "uses_per_token, max_outstanding, balance, price, paid) VALUES (?,?,?,?,?,?,?,?,?,?)")
      .bind(e.user_id)
      .bind(e.device_id)
      .bind(static_cast<std::int64_t>(e.model))
      .bind(e.window_start)
      .bind(e.window_end)
      .bind(std::int64_t{e.uses_per_token})
      .bind(std::int64_t{e.max_outstanding})
      .bind(to_i64(e.balance))
      .bind(to_i64(e.price))
      .bind(to_i64(e.paid))
      .run();
  tx.commit();
}

std::optional<EntitlementRecord> SqliteCloudStore::entitlement(ByteView user_id,
                                                               ByteView device_id) {
  Reader reader(*this);
  Stmt st(reader.db(),
          "SELECT model, window_start, window_end, uses_per_token, max_outstanding, balance, "
          "price, paid FROM entitlements WHERE user_id = ? AND device_id = ?");
  st.bind(user_id).bind(device_id);
  if (!st.step()) return std::nullopt;
  EntitlementRecord e;
  e.user_id.assign(user_id.begin(), user_id.end());
  e.device_id.assign(device_id.begin(), device_id.end());
  e.model = static_cast<Model>(st.i64(0));
  e.window_start = st.i64(1);
  e.window_end = st.i64(2);
  e.uses_per_token = static_cast<std::uint32_t>(st.u64(3));
  e.max_outstanding = static_cast<std::uint32_t>(st.u64(4));
  e.balance = st.u64(5);
  e.price = st.u64(6);
  e.paid = st.u64(7);
  return e;
}

bool SqliteCloudStore::credit_entitlement(ByteView user_id, ByteView device_id,
                                          std::uint64_t balance_delta, std::uint64_t paid_delta) {
  Tx tx(*this);
  Stmt(tx.db(),
       "UPDATE entitlements SET balance = balance + ?, paid = paid + ? "
       "WHERE user_id = ? AND device_id = ?")
      .bind(to_i64(balance_delta))
      .bind(to_i64(paid_delta))
      .bind(user_id)
      .bind(device_id)
      .run();
  const bool found = sqlite3_changes(tx.db()) == 1;
  tx.commit();
  return found;
}

// The guards and inserts of one request, inside the caller's transaction.
// Returns without writing anything when a guard refuses.
IssueOutcome SqliteCloudStore::apply_issuance(const std::vector<IssuanceRecord>& tokens,
                                              const IssuanceGuard& guard) {
  const Bytes& user = tokens.front().user_id;
  const Bytes& device = tokens.front().device_id;
  std::uint64_t total = 0;
  for (const auto& t : tokens) total += t.uses;
  auto entitled = [&] {
    Stmt st(db_, "SELECT 1 FROM entitlements WHERE user_id = ? AND device_id = ?");
    st.bind(user).bind(device);
    return st.step();
  };
  // A reservation finds the row itself; only its failure needs telling apart.
  if (!guard.reserve_from_balance && !entitled()) return IssueOutcome::kNoEntitlement;
  if (guard.max_outstanding > 0) {
    Stmt st(db_,
            "SELECT COUNT(*) FROM issuances WHERE user_id = ? AND device_id = ? AND "
            "expires_at > ?");
    st.bind(user).bind(device).bind(guard.now);
    st.step();
    if (st.u64(0) + tokens.size() > guard.max_outstanding) {
      return entitled() ? IssueOutcome::kOutstandingCap : IssueOutcome::kNoEntitlement;
    }
  }
  if (guard.reserve_from_balance) {
    Stmt(db_,
         "UPDATE entitlements SET balance = balance - ? WHERE user_id = ? AND device_id = ? "
         "AND balance >= ?")
        .bind(to_i64(total))
        .bind(user)
        .bind(device)
        .bind(to_i64(total))
        .run();
    if (sqlite3_changes(db_) != 1) {
      return entitled() ? IssueOutcome::kInsufficientBalance : IssueOutcome::kNoEntitlement;
    }
  }
  for (const auto& t : tokens) {
    Stmt(db_,
         "INSERT INTO issuances(token_id, user_id, device_id, user_key_id, uses, issued_at, "
         "expires_at, authorization_id) VALUES (?,?,?,?,?,?,?,?)")
        .bind(t.token_id)
        .bind(t.user_id)
        .bind(t.device_id)
        .bind(t.user_key_id)
        .bind(std::int64_t{t.uses})
        .bind(t.issued_at)
        .bind(t.expires_at)
        .bind(to_i64(t.authorization_id))
        .run();
  }
  return IssueOutcome::kRecorded;
}

// Group commit: concurrent callers queue their requests; whoever finds no
// batch in flight commits everything queued in ONE transaction (one fsync).
// A refused guard writes nothing (apply_issuance checks before it writes, and
// the balance reservation is its last, conditional, step), so no savepoint is
// needed to undo only that request. Guards still see every earlier request of
// the batch, so they hold exactly as if the requests had committed one by one.
// If the transaction fails, every request of the batch gets the error and none
// is recorded.
IssueOutcome SqliteCloudStore::record_issuances(const std::vector<IssuanceRecord>& tokens,
                                                const IssuanceGuard& guard) {
  return batcher_.submit(tokens, guard, [this](std::vector<IssuanceBatcher::Pending*>& batch) {
    try {
      Tx tx(*this);
      for (IssuanceBatcher::Pending* p : batch) p->outcome = apply_issuance(*p->tokens, *p->guard);
      tx.commit();
    } catch (...) {
      for (IssuanceBatcher::Pending* p : batch) p->error = std::current_exception();
    }
  });
}

std::optional<IssuanceRecord> SqliteCloudStore::issuance(ByteView token_id) {
  Reader reader(*this);
  Stmt st(reader.db(),
          "SELECT token_id, user_id, device_id, user_key_id, uses, issued_at, expires_at, "
          "authorization_id FROM issuances WHERE token_id = ?");
  st.bind(token_id);
  if (!st.step()) return std::nullopt;
  return IssuanceRecord{
      st.blob(0), st.blob(1), st.blob(2), st.blob(3), static_cast<std::uint32_t>(st.u64(4)),
      st.i64(5),  st.i64(6),  st.u64(7)};
}

StoreCounts SqliteCloudStore::counts() {
  Reader reader(*this);
  Stmt st(reader.db(),
          "SELECT (SELECT COUNT(*) FROM users), (SELECT COUNT(*) FROM users WHERE revoked = 1), "
          "(SELECT COUNT(*) FROM sessions), (SELECT COUNT(*) FROM challenges), "
          "(SELECT COUNT(*) FROM challenges WHERE used = 1), (SELECT COUNT(*) FROM user_keys), "
          "(SELECT COUNT(*) FROM devices), (SELECT COUNT(*) FROM issuances), "
          "(SELECT COALESCE(SUM(uses), 0) FROM issuances), "
          "(SELECT COALESCE(SUM(consumed), 0) FROM issuances), "
          "(SELECT COALESCE(SUM(balance), 0) FROM entitlements), "
          "(SELECT COALESCE(SUM(seq), 0) FROM receipt_heads)");
  st.step();
  StoreCounts c;
  std::uint64_t* fields[] = {&c.users,           &c.revoked_users, &c.sessions, &c.challenges,
                             &c.used_challenges, &c.user_keys,     &c.devices,  &c.issuances,
                             &c.uses_issued,     &c.uses_consumed, &c.balance,  &c.receipt_seq};
  for (int i = 0; i < 12; ++i) *fields[i] = st.u64(i);
  return c;
}

void SqliteCloudStore::set_authorization(ByteView signed_bytes) {
  Tx tx(*this);
  Stmt(tx.db(), "INSERT OR REPLACE INTO meta(key, value) VALUES ('authorization', ?)")
      .bind(signed_bytes)
      .run();
  tx.commit();
}

std::optional<Bytes> SqliteCloudStore::authorization() {
  Reader reader(*this);
  Stmt st(reader.db(), "SELECT value FROM meta WHERE key = 'authorization'");
  if (!st.step()) return std::nullopt;
  return st.blob(0);
}

std::optional<std::uint64_t> SqliteCloudStore::change_version() {
  Reader reader(*this);
  Stmt st(reader.db(), "SELECT n FROM change_version WHERE id = 1");
  if (!st.step()) throw StoreError("sqlite: the change_version row is missing");
  return st.u64(0);
}

ReceiptHead SqliteCloudStore::receipt_head(ByteView device_id) {
  Reader reader(*this);
  Stmt st(reader.db(), "SELECT seq, hash FROM receipt_heads WHERE device_id = ?");
  st.bind(device_id);
  if (!st.step()) return {};
  return ReceiptHead{st.u64(0), st.blob(1)};
}

ReceiptOutcome SqliteCloudStore::apply_receipt(ByteView device_id, const ReceiptHead& expected,
                                               const ReceiptHead& next,
                                               const std::vector<ReceiptCharge>& charges) {
  Tx tx(*this);
  ReceiptHead current;
  {
    Stmt st(tx.db(), "SELECT seq, hash FROM receipt_heads WHERE device_id = ?");
    st.bind(device_id);
    if (st.step()) current = ReceiptHead{st.u64(0), st.blob(1)};
  }
  if (current.seq != expected.seq || current.hash != expected.hash) {
    return ReceiptOutcome::kHeadMoved;
  }
  for (const auto& c : charges) {
    Stmt(tx.db(),
         "UPDATE issuances SET consumed = MIN(uses, consumed + ?) WHERE token_id = ? AND "
         "device_id = ?")
        .bind(std::int64_t{c.uses})
        .bind(c.token_id)
        .bind(device_id)
        .run();
  }
  Stmt(tx.db(), "INSERT OR REPLACE INTO receipt_heads(device_id, seq, hash) VALUES (?, ?, ?)")
      .bind(device_id)
      .bind(to_i64(next.seq))
      .bind(next.hash)
      .run();
  tx.commit();
  return ReceiptOutcome::kApplied;
}

std::vector<UsageRow> SqliteCloudStore::usage() {
  Reader reader(*this);
  Stmt st(reader.db(),
          "SELECT e.user_id, u.name, e.device_id, e.model, "
          "  COUNT(i.token_id), COALESCE(SUM(i.uses), 0), COALESCE(SUM(i.consumed), 0), "
          "  e.balance, e.price, e.paid "
          "FROM entitlements e JOIN users u ON u.id = e.user_id "
          "LEFT JOIN issuances i ON i.user_id = e.user_id AND i.device_id = e.device_id "
          "GROUP BY e.user_id, e.device_id ORDER BY u.name, e.device_id");
  std::vector<UsageRow> out;
  while (st.step()) {
    UsageRow r;
    r.user_id = st.blob(0);
    r.user_name = st.text(1);
    r.device_id = st.blob(2);
    r.model = static_cast<Model>(st.i64(3));
    r.tokens = st.u64(4);
    r.uses_minted = st.u64(5);
    r.uses_consumed = st.u64(6);
    r.balance = st.u64(7);
    r.price = st.u64(8);
    r.paid = st.u64(9);
    out.push_back(std::move(r));
  }
  return out;
}

std::unique_ptr<CloudStore> open_store(const std::string& db) {
  if (db.rfind("postgresql://", 0) == 0 || db.rfind("postgres://", 0) == 0) {
    return std::make_unique<PgCloudStore>(db);
  }
  std::string path = db.rfind("sqlite:", 0) == 0 ? db.substr(7) : db;
  if (path.empty()) throw StoreError("--db sqlite: needs a path");
  return std::make_unique<SqliteCloudStore>(path);
}

}  // namespace tollgate::cloud
