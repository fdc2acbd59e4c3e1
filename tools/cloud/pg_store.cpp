#include "tools/cloud/pg_store.hpp"

#include <libpq-fe.h>

#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <limits>
#include <tuple>
#include <unordered_map>

#include "gateway/crypto.hpp"

namespace tollgate::cloud {

namespace {

// libpq type OIDs (catalog/pg_type_d.h is a server header; these are stable).
constexpr Oid kByteaOid = 17;
constexpr Oid kInt8Oid = 20;
constexpr Oid kTextOid = 25;

// Serializes the advisory lock taken while creating the schema ("TGSC").
constexpr std::int64_t kSchemaLockKey = 0x54475343;

const char* const kSchema = R"sql(
CREATE TABLE IF NOT EXISTS users (
  id BYTEA PRIMARY KEY, name TEXT NOT NULL UNIQUE, password_hash TEXT NOT NULL,
  revoked BOOLEAN NOT NULL DEFAULT FALSE, created_at BIGINT NOT NULL);
CREATE TABLE IF NOT EXISTS sessions (
  hash BYTEA PRIMARY KEY, user_id BYTEA NOT NULL, expires_at BIGINT NOT NULL);
CREATE INDEX IF NOT EXISTS sessions_user ON sessions(user_id);
CREATE TABLE IF NOT EXISTS challenges (
  id BYTEA PRIMARY KEY, user_id BYTEA NOT NULL, challenge BYTEA NOT NULL,
  public_key BYTEA NOT NULL, expires_at BIGINT NOT NULL, used BOOLEAN NOT NULL DEFAULT FALSE);
CREATE INDEX IF NOT EXISTS challenges_user ON challenges(user_id);
CREATE TABLE IF NOT EXISTS user_keys (
  user_id BYTEA NOT NULL, key_id BYTEA NOT NULL, public_key BYTEA NOT NULL,
  enrolled_at BIGINT NOT NULL, PRIMARY KEY (user_id, key_id));
CREATE TABLE IF NOT EXISTS devices (
  id BYTEA PRIMARY KEY, public_key BYTEA NOT NULL, key_id BYTEA NOT NULL UNIQUE,
  name TEXT NOT NULL, added_at BIGINT NOT NULL);
CREATE TABLE IF NOT EXISTS entitlements (
  user_id BYTEA NOT NULL, device_id BYTEA NOT NULL, model BIGINT NOT NULL,
  window_start BIGINT NOT NULL, window_end BIGINT NOT NULL,
  uses_per_token BIGINT NOT NULL, max_outstanding BIGINT NOT NULL,
  balance BIGINT NOT NULL, price BIGINT NOT NULL, paid BIGINT NOT NULL,
  PRIMARY KEY (user_id, device_id));
CREATE TABLE IF NOT EXISTS issuances (
  token_id BYTEA PRIMARY KEY, user_id BYTEA NOT NULL, device_id BYTEA NOT NULL,
  user_key_id BYTEA NOT NULL, uses BIGINT NOT NULL, issued_at BIGINT NOT NULL,
  expires_at BIGINT NOT NULL, authorization_id BIGINT NOT NULL,
  consumed BIGINT NOT NULL DEFAULT 0);
CREATE INDEX IF NOT EXISTS issuances_pair ON issuances(user_id, device_id, expires_at);
CREATE TABLE IF NOT EXISTS receipt_heads (
  device_id BYTEA PRIMARY KEY, seq BIGINT NOT NULL, hash BYTEA NOT NULL);
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value BYTEA NOT NULL);
CREATE TABLE IF NOT EXISTS change_version (
  id INTEGER PRIMARY KEY CHECK (id = 1), n BIGINT NOT NULL);
INSERT INTO change_version(id, n) VALUES (1, 0) ON CONFLICT (id) DO NOTHING;
)sql";

// change_version() is kept by row triggers, so writers that know nothing of
// it (another process, psql) still move it. Mints change only issuances and
// entitlement balances, which fire none of these. Created once (CREATE
// TRIGGER locks its table, so it is not repeated on every open).
const char* const kChangeTriggers = R"sql(
CREATE OR REPLACE FUNCTION tollgate_bump_change_version() RETURNS trigger
  LANGUAGE plpgsql AS $$ BEGIN UPDATE change_version SET n = n + 1 WHERE id = 1; RETURN NULL; END $$;
CREATE TRIGGER cv_users AFTER INSERT OR UPDATE OR DELETE ON users
  FOR EACH ROW EXECUTE FUNCTION tollgate_bump_change_version();
CREATE TRIGGER cv_sessions AFTER UPDATE OR DELETE ON sessions
  FOR EACH ROW EXECUTE FUNCTION tollgate_bump_change_version();
CREATE TRIGGER cv_user_keys AFTER INSERT OR UPDATE OR DELETE ON user_keys
  FOR EACH ROW EXECUTE FUNCTION tollgate_bump_change_version();
CREATE TRIGGER cv_devices AFTER INSERT OR UPDATE OR DELETE ON devices
  FOR EACH ROW EXECUTE FUNCTION tollgate_bump_change_version();
CREATE TRIGGER cv_entitlements AFTER INSERT OR DELETE OR UPDATE OF
  user_id, device_id, model, window_start, window_end, uses_per_token, max_outstanding, price, paid
  ON entitlements FOR EACH ROW EXECUTE FUNCTION tollgate_bump_change_version();
CREATE TRIGGER cv_meta AFTER INSERT OR UPDATE OR DELETE ON meta
  FOR EACH ROW EXECUTE FUNCTION tollgate_bump_change_version();
)sql";

// A failed statement, with its SQLSTATE so the transaction loop can tell a
// retryable conflict from a real failure.
class PgError : public StoreError {
 public:
  PgError(const std::string& what, std::string sqlstate)
      : StoreError(what), sqlstate_(std::move(sqlstate)) {}
  bool retryable() const { return sqlstate_ == "40001" || sqlstate_ == "40P01"; }

 private:
  std::string sqlstate_;
};

struct ConnDeleter {
  void operator()(PGconn* c) const { PQfinish(c); }
};
struct ResultDeleter {
  void operator()(PGresult* r) const { PQclear(r); }
};
using ConnPtr = std::unique_ptr<PGconn, ConnDeleter>;
using ResultPtr = std::unique_ptr<PGresult, ResultDeleter>;

ConnPtr open_connection(const std::string& url) {
  ConnPtr c(PQconnectdb(url.c_str()));
  if (!c) throw StoreError("postgresql: out of memory");
  if (PQstatus(c.get()) != CONNECTION_OK) {
    std::string msg = PQerrorMessage(c.get());
    while (!msg.empty() && msg.back() == '\n') msg.pop_back();
    throw StoreError("cannot connect to PostgreSQL: " + msg);
  }
  // NOTICEs ("relation already exists, skipping", "drop cascades to ...") are
  // chatter on stderr for an operator CLI; errors arrive through results.
  PQsetNoticeProcessor(
      c.get(), [](void*, const char*) {}, nullptr);
  return c;
}

// Throws unless `r` is a success; the message carries the server's text.
void check(PGconn* c, const ResultPtr& r) {
  const auto st = r ? PQresultStatus(r.get()) : PGRES_FATAL_ERROR;
  if (st == PGRES_COMMAND_OK || st == PGRES_TUPLES_OK) return;
  std::string msg = r ? PQresultErrorMessage(r.get()) : PQerrorMessage(c);
  while (!msg.empty() && msg.back() == '\n') msg.pop_back();
  const char* state = r ? PQresultErrorField(r.get(), PG_DIAG_SQLSTATE) : nullptr;
  throw PgError("postgresql: " + msg, state ? state : "");
}

// Query results in binary format: integers arrive big-endian, bytea raw.
class Rows {
 public:
  explicit Rows(ResultPtr r) : r_(std::move(r)) {}
  int size() const { return PQntuples(r_.get()); }
  bool empty() const { return size() == 0; }
  std::uint64_t affected() const {
    const char* n = PQcmdTuples(r_.get());
    return n && *n ? std::strtoull(n, nullptr, 10) : 0;
  }
  Bytes blob(int row, int col) const {
    const auto* p = reinterpret_cast<const std::uint8_t*>(PQgetvalue(r_.get(), row, col));
    return Bytes(p, p + PQgetlength(r_.get(), row, col));
  }
  std::string text(int row, int col) const {
    return std::string(PQgetvalue(r_.get(), row, col),
                       static_cast<std::size_t>(PQgetlength(r_.get(), row, col)));
  }
  // Any integer or boolean column (1, 2, 4 or 8 bytes, two's complement).
  std::int64_t i64(int row, int col) const {
    if (PQgetisnull(r_.get(), row, col)) return 0;
    const auto* p = reinterpret_cast<const std::uint8_t*>(PQgetvalue(r_.get(), row, col));
    const int n = PQgetlength(r_.get(), row, col);
    if (n != 1 && n != 2 && n != 4 && n != 8)
      throw StoreError("postgresql: unexpected column type");
    std::uint64_t v = (p[0] & 0x80) ? ~std::uint64_t{0} : 0;
    for (int i = 0; i < n; ++i) v = (v << 8) | p[i];
    return static_cast<std::int64_t>(v);
  }
  std::uint64_t u64(int row, int col) const {
    const auto v = i64(row, col);
    return v < 0 ? 0 : static_cast<std::uint64_t>(v);
  }

 private:
  ResultPtr r_;
};

struct Params {
  std::vector<Oid> types;
  std::vector<std::string> values;
  void add(ByteView b) {
    types.push_back(kByteaOid);
    values.emplace_back(reinterpret_cast<const char*>(b.data()), b.size());
  }
  void add(const Bytes& b) { add(ByteView(b)); }
  void add(const std::string& s) {
    types.push_back(kTextOid);
    values.push_back(s);
  }
  void add(std::int64_t v) {
    types.push_back(kInt8Oid);
    std::string out(8, '\0');
    auto u = static_cast<std::uint64_t>(v);
    for (int i = 7; i >= 0; --i) {
      out[static_cast<std::size_t>(i)] = static_cast<char>(u & 0xff);
      u >>= 8;
    }
    values.push_back(std::move(out));
  }
};

}  // namespace

// One connection and the statements prepared on it (prepared once per
// connection, by text: the SQL strings are the constants in this file).
class PgCloudStore::Conn {
 public:
  explicit Conn(ConnPtr c) : c_(std::move(c)) {}
  PGconn* get() const { return c_.get(); }
  bool ok() const { return PQstatus(c_.get()) == CONNECTION_OK; }

  void exec(const char* sql) {
    ResultPtr r(PQexec(c_.get(), sql));
    check(c_.get(), r);
  }

  template <class... Args>
  Rows q(const char* sql, const Args&... args) {
    Params p;
    (p.add(args), ...);
    auto it = prepared_.find(sql);
    if (it == prepared_.end()) {
      std::string name = "s" + std::to_string(prepared_.size());
      ResultPtr r(
          PQprepare(c_.get(), name.c_str(), sql, static_cast<int>(p.types.size()), p.types.data()));
      check(c_.get(), r);
      it = prepared_.emplace(sql, std::move(name)).first;
    }
    std::vector<const char*> values;
    std::vector<int> lengths, formats;
    for (const auto& v : p.values) {
      values.push_back(v.data());
      lengths.push_back(static_cast<int>(v.size()));
      formats.push_back(1);
    }
    ResultPtr r(PQexecPrepared(c_.get(), it->second.c_str(), static_cast<int>(values.size()),
                               values.data(), lengths.data(), formats.data(), 1));
    check(c_.get(), r);
    return Rows(std::move(r));
  }

 private:
  ConnPtr c_;
  std::unordered_map<std::string, std::string> prepared_;
};

// A pooled connection for the length of one call. A connection that broke is
// closed instead of being returned to the pool.
class PgCloudStore::Lease {
 public:
  explicit Lease(PgCloudStore& s) : s_(s) {
    std::unique_lock lk(s_.mu_);
    s_.cv_.wait(lk, [&] { return !s_.idle_.empty() || s_.open_ < s_.pool_size_; });
    if (!s_.idle_.empty()) {
      c_ = std::move(s_.idle_.back());
      s_.idle_.pop_back();
      return;
    }
    ++s_.open_;
    lk.unlock();
    try {
      c_ = s_.connect();
    } catch (...) {
      lk.lock();
      --s_.open_;
      s_.cv_.notify_one();
      throw;
    }
  }
  ~Lease() {
    std::lock_guard lk(s_.mu_);
    if (c_ && c_->ok()) {
      s_.idle_.push_back(std::move(c_));
    } else {
      c_.reset();
      --s_.open_;
    }
    s_.cv_.notify_one();
  }
  Lease(const Lease&) = delete;
  Lease& operator=(const Lease&) = delete;
  Conn& operator*() const { return *c_; }
  Conn* operator->() const { return c_.get(); }

 private:
  PgCloudStore& s_;
  std::unique_ptr<Conn> c_;
};

namespace {

// Runs `body(conn, commit)` as one transaction; `commit()` commits, returning
// without it rolls back. Serialization failures and deadlocks restart the
// whole transaction (a bounded number of times).
template <class MakeLease, class Body>
auto transact(MakeLease&& make_lease, Body&& body) {
  constexpr int kAttempts = 20;
  for (int attempt = 1;; ++attempt) {
    auto lease = make_lease();
    auto& conn = **lease;  // the Lease, then its connection
    bool done = false;
    auto commit = [&] {
      done = true;  // COMMIT ends the transaction even when it fails
      conn.exec("COMMIT");
    };
    try {
      conn.exec("BEGIN ISOLATION LEVEL READ COMMITTED");
      auto out = body(conn, commit);
      if (!done) conn.exec("ROLLBACK");
      return out;
    } catch (const PgError& e) {
      if (!done) {
        ResultPtr r(PQexec(conn.get(), "ROLLBACK"));
      }
      if (!e.retryable() || attempt == kAttempts) throw;
    } catch (...) {
      if (!done) {
        ResultPtr r(PQexec(conn.get(), "ROLLBACK"));
      }
      throw;
    }
  }
}

}  // namespace

#define TX(...) transact([this] { return std::make_unique<Lease>(*this); }, __VA_ARGS__)

std::unique_ptr<PgCloudStore::Conn> PgCloudStore::connect() {
  return std::make_unique<Conn>(open_connection(url_));
}

PgCloudStore::PgCloudStore(const std::string& url, std::size_t pool_size)
    : url_(url), pool_size_(pool_size == 0 ? 1 : pool_size) {
  Lease lease(*this);
  Conn& c = *lease;
  try {
    c.exec("BEGIN");
    c.q("SELECT pg_advisory_xact_lock($1)", kSchemaLockKey);
    c.exec(kSchema);
    if (c.q("SELECT 1 FROM pg_trigger WHERE tgname = 'cv_users' AND tgrelid = 'users'::regclass")
            .empty()) {
      c.exec(kChangeTriggers);
    }
    auto v = c.q("SELECT value FROM meta WHERE key = 'schema_version'");
    if (!v.empty()) {
      const std::string text = v.text(0, 0);
      const long long version = std::strtoll(text.c_str(), nullptr, 10);
      if (version > kSchemaVersion) {
        throw StoreError("the database has schema version " + text + ", newer than this build (" +
                         std::to_string(kSchemaVersion) + ")");
      }
    } else {
      c.q("INSERT INTO meta(key, value) VALUES ('schema_version', $1)",
          ByteView(as_bytes(std::to_string(kSchemaVersion))));
    }
    c.exec("COMMIT");
  } catch (...) {
    ResultPtr r(PQexec(c.get(), "ROLLBACK"));
    throw;
  }
}

PgCloudStore::~PgCloudStore() = default;

bool PgCloudStore::add_user(const UserRecord& u) {
  return TX([&](Conn& c, auto commit) {
    auto r =
        c.q("INSERT INTO users(id, name, password_hash, revoked, created_at) "
            "VALUES ($1, $2, $3, $4 <> 0, $5) ON CONFLICT DO NOTHING",
            u.id, u.name, u.password_hash, std::int64_t{u.revoked}, u.created_at);
    const bool added = r.affected() == 1;
    commit();
    return added;
  });
}

namespace {
constexpr const char* kUserColumns = "SELECT id, name, password_hash, revoked, created_at ";
UserRecord read_user(const Rows& r) {
  return UserRecord{r.blob(0, 0), r.text(0, 1), r.text(0, 2), r.i64(0, 3) != 0, r.i64(0, 4)};
}
}  // namespace

std::optional<UserRecord> PgCloudStore::user_by_name(const std::string& name) {
  Lease c(*this);
  static const std::string sql = std::string(kUserColumns) + "FROM users WHERE name = $1";
  auto r = c->q(sql.c_str(), name);
  if (r.empty()) return std::nullopt;
  return read_user(r);
}

std::optional<UserRecord> PgCloudStore::user_by_id(ByteView id) {
  Lease c(*this);
  static const std::string sql = std::string(kUserColumns) + "FROM users WHERE id = $1";
  auto r = c->q(sql.c_str(), id);
  if (r.empty()) return std::nullopt;
  return read_user(r);
}

bool PgCloudStore::revoke_user(const std::string& name) {
  return TX([&](Conn& c, auto commit) {
    auto r = c.q("SELECT id FROM users WHERE name = $1 FOR UPDATE", name);
    if (r.empty()) return false;
    const Bytes id = r.blob(0, 0);
    c.q("UPDATE users SET revoked = TRUE WHERE id = $1", id);
    c.q("DELETE FROM sessions WHERE user_id = $1", id);
    commit();
    return true;
  });
}

void PgCloudStore::add_session(ByteView hash, ByteView user_id, UnixTime expires_at, UnixTime now) {
  TX([&](Conn& c, auto commit) {
    // The user's row serializes their logins, so the cap holds under concurrency.
    c.q("SELECT 1 FROM users WHERE id = $1 FOR UPDATE", user_id);
    c.q("DELETE FROM sessions WHERE user_id = $1 AND expires_at <= $2", user_id, now);
    c.q("DELETE FROM sessions WHERE hash IN (SELECT hash FROM sessions WHERE user_id = $1 "
        "ORDER BY expires_at DESC OFFSET $2)",
        user_id, to_i64(kMaxSessionsPerUser - 1));
    c.q("INSERT INTO sessions(hash, user_id, expires_at) VALUES ($1, $2, $3)", hash, user_id,
        expires_at);
    commit();
    return 0;
  });
}

std::optional<SessionRecord> PgCloudStore::session(ByteView hash) {
  Lease c(*this);
  auto r = c->q("SELECT user_id, expires_at FROM sessions WHERE hash = $1", hash);
  if (r.empty()) return std::nullopt;
  return SessionRecord{r.blob(0, 0), r.i64(0, 1)};
}

bool PgCloudStore::add_challenge(const ChallengeRecord& ch, UnixTime now) {
  return TX([&](Conn& c, auto commit) {
    c.q("SELECT 1 FROM users WHERE id = $1 FOR UPDATE", ch.user_id);
    c.q("DELETE FROM challenges WHERE user_id = $1 AND expires_at <= $2", ch.user_id, now);
    auto n = c.q("SELECT COUNT(*) FROM challenges WHERE user_id = $1 AND NOT used", ch.user_id);
    if (n.u64(0, 0) >= kMaxOpenChallenges) return false;
    c.q("INSERT INTO challenges(id, user_id, challenge, public_key, expires_at, used) "
        "VALUES ($1, $2, $3, $4, $5, FALSE)",
        ch.id, ch.user_id, ch.challenge, ch.public_key, ch.expires_at);
    commit();
    return true;
  });
}

std::optional<ChallengeRecord> PgCloudStore::challenge(ByteView id) {
  Lease c(*this);
  auto r = c->q(
      "SELECT id, user_id, challenge, public_key, expires_at, used FROM challenges WHERE id = $1",
      id);
  if (r.empty()) return std::nullopt;
  return ChallengeRecord{r.blob(0, 0), r.blob(0, 1), r.blob(0, 2),
                         r.blob(0, 3), r.i64(0, 4),  r.i64(0, 5) != 0};
}

bool PgCloudStore::consume_challenge_and_enroll(ByteView challenge_id, ByteView user_id,
                                                const UserKeyRecord& key) {
  return TX([&](Conn& c, auto commit) {
    // The row lock taken by UPDATE re-checks `NOT used` after a concurrent
    // consumer commits: exactly one of two racing enrollments wins.
    auto r = c.q("UPDATE challenges SET used = TRUE WHERE id = $1 AND user_id = $2 AND NOT used",
                 challenge_id, user_id);
    if (r.affected() != 1) return false;
    c.q("INSERT INTO user_keys(user_id, key_id, public_key, enrolled_at) "
        "VALUES ($1, $2, $3, $4) ON CONFLICT DO NOTHING",
        user_id, key.key_id, key.public_key, key.enrolled_at);
    commit();
    return true;
  });
}

std::vector<UserKeyRecord> PgCloudStore::user_keys(ByteView user_id) {
  Lease c(*this);
  auto r = c->q(
      "SELECT key_id, public_key, enrolled_at FROM user_keys WHERE user_id = $1 "
      "ORDER BY enrolled_at, key_id",
      user_id);
  std::vector<UserKeyRecord> out;
  for (int i = 0; i < r.size(); ++i) out.push_back({r.blob(i, 0), r.blob(i, 1), r.i64(i, 2)});
  return out;
}

bool PgCloudStore::add_device(const DeviceRecord& d) {
  return TX([&](Conn& c, auto commit) {
    auto r = c.q(
        "INSERT INTO devices(id, public_key, key_id, name, added_at) VALUES ($1, $2, $3, $4, $5) "
        "ON CONFLICT DO NOTHING",
        d.id, d.public_key, d.key_id, d.name, d.added_at);
    const bool added = r.affected() == 1;
    commit();
    return added;
  });
}

namespace {
DeviceRecord read_device(const Rows& r) {
  return DeviceRecord{r.blob(0, 0), r.blob(0, 1), r.blob(0, 2), r.text(0, 3), r.i64(0, 4)};
}
}  // namespace

std::optional<DeviceRecord> PgCloudStore::device(ByteView id) {
  Lease c(*this);
  auto r = c->q("SELECT id, public_key, key_id, name, added_at FROM devices WHERE id = $1", id);
  if (r.empty()) return std::nullopt;
  return read_device(r);
}

std::optional<DeviceRecord> PgCloudStore::device_by_key_id(ByteView key_id) {
  Lease c(*this);
  auto r =
      c->q("SELECT id, public_key, key_id, name, added_at FROM devices WHERE key_id = $1", key_id);
  if (r.empty()) return std::nullopt;
  return read_device(r);
}

void PgCloudStore::put_entitlement(const EntitlementRecord& e) {
  TX([&](Conn& c, auto commit) {
    c.q("INSERT INTO entitlements(user_id, device_id, model, window_start, window_end, "
        "uses_per_token, max_outstanding, balance, price, paid) "
        "VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10) "
        "ON CONFLICT (user_id, device_id) DO UPDATE SET model = EXCLUDED.model, "
        "window_start = EXCLUDED.window_start, window_end = EXCLUDED.window_end, "
        "uses_per_token = EXCLUDED.uses_per_token, max_outstanding = EXCLUDED.max_outstanding, "
        "balance = EXCLUDED.balance, price = EXCLUDED.price, paid = EXCLUDED.paid",
        e.user_id, e.device_id, static_cast<std::int64_t>(e.model), e.window_start, e.window_end,
        std::int64_t{e.uses_per_token}, std::int64_t{e.max_outstanding}, to_i64(e.balance),
        to_i64(e.price), to_i64(e.paid));
    commit();
    return 0;
  });
}

std::optional<EntitlementRecord> PgCloudStore::entitlement(ByteView user_id, ByteView device_id) {
  Lease c(*this);
  auto r = c->q(
      "SELECT model, window_start, window_end, uses_per_token, max_outstanding, balance, price, "
      "paid FROM entitlements WHERE user_id = $1 AND device_id = $2",
      user_id, device_id);
  if (r.empty()) return std::nullopt;
  EntitlementRecord e;
  e.user_id.assign(user_id.begin(), user_id.end());
  e.device_id.assign(device_id.begin(), device_id.end());
  e.model = static_cast<Model>(r.i64(0, 0));
  e.window_start = r.i64(0, 1);
  e.window_end = r.i64(0, 2);
  e.uses_per_token = static_cast<std::uint32_t>(r.u64(0, 3));
  e.max_outstanding = static_cast<std::uint32_t>(r.u64(0, 4));
  e.balance = r.u64(0, 5);
  e.price = r.u64(0, 6);
  e.paid = r.u64(0, 7);
  return e;
}

bool PgCloudStore::credit_entitlement(ByteView user_id, ByteView device_id,
                                      std::uint64_t balance_delta, std::uint64_t paid_delta) {
  return TX([&](Conn& c, auto commit) {
    auto r =
        c.q("UPDATE entitlements SET balance = balance + $1, paid = paid + $2 "
            "WHERE user_id = $3 AND device_id = $4",
            to_i64(balance_delta), to_i64(paid_delta), user_id, device_id);
    const bool found = r.affected() == 1;
    commit();
    return found;
  });
}

namespace {

// The guards and inserts of one request inside the caller's transaction;
// writes nothing when a guard refuses. The entitlement row is the lock for
// every guard of this (user, device): whoever holds it sees every issuance
// committed before it got it, in this process or another.
IssueOutcome apply_issuance(PgCloudStore::Conn& c, const std::vector<IssuanceRecord>& tokens,
                            const IssuanceGuard& guard) {
  const Bytes& user = tokens.front().user_id;
  const Bytes& device = tokens.front().device_id;
  std::uint64_t total = 0;
  for (const auto& t : tokens) total += t.uses;
  auto e = c.q("SELECT balance FROM entitlements WHERE user_id = $1 AND device_id = $2 FOR UPDATE",
               user, device);
  if (e.empty()) return IssueOutcome::kNoEntitlement;
  if (guard.max_outstanding > 0) {
    auto n =
        c.q("SELECT COUNT(*) FROM issuances WHERE user_id = $1 AND device_id = $2 AND "
            "expires_at > $3",
            user, device, guard.now);
    if (n.u64(0, 0) + tokens.size() > guard.max_outstanding) return IssueOutcome::kOutstandingCap;
  }
  if (guard.reserve_from_balance) {
    if (e.u64(0, 0) < total) return IssueOutcome::kInsufficientBalance;
    c.q("UPDATE entitlements SET balance = balance - $1 WHERE user_id = $2 AND device_id = $3",
        to_i64(total), user, device);
  }
  for (const auto& t : tokens) {
    c.q("INSERT INTO issuances(token_id, user_id, device_id, user_key_id, uses, issued_at, "
        "expires_at, authorization_id) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
        t.token_id, t.user_id, t.device_id, t.user_key_id, std::int64_t{t.uses}, t.issued_at,
        t.expires_at, to_i64(t.authorization_id));
  }
  return IssueOutcome::kRecorded;
}

}  // namespace

// One transaction for the whole batch. Requests are applied in (user, device)
// order, so two processes' batches lock entitlement rows in the same order and
// cannot deadlock each other. A request failing with a non-retryable error
// (say a duplicate token id) is rolled back to its savepoint and gets that
// error alone; a failed commit gives every request the error.
void PgCloudStore::commit_batch(std::vector<IssuanceBatcher::Pending*>& batch) {
  std::stable_sort(batch.begin(), batch.end(),
                   [](const IssuanceBatcher::Pending* a, const IssuanceBatcher::Pending* b) {
                     const auto& x = a->tokens->front();
                     const auto& y = b->tokens->front();
                     return std::tie(x.user_id, x.device_id) < std::tie(y.user_id, y.device_id);
                   });
  try {
    TX([&](Conn& c, auto commit) {
      for (IssuanceBatcher::Pending* p : batch) {
        p->outcome = IssueOutcome::kRecorded;  // this attempt's answers only
        p->error = nullptr;
      }
      for (IssuanceBatcher::Pending* p : batch) {
        c.exec("SAVEPOINT issue");
        try {
          p->outcome = apply_issuance(c, *p->tokens, *p->guard);
          if (p->outcome != IssueOutcome::kRecorded) c.exec("ROLLBACK TO SAVEPOINT issue");
        } catch (const StoreError& e) {
          const auto* pg = dynamic_cast<const PgError*>(&e);
          if (pg && pg->retryable()) throw;  // the whole batch starts again
          c.exec("ROLLBACK TO SAVEPOINT issue");
          p->error = std::current_exception();
        }
        c.exec("RELEASE SAVEPOINT issue");
      }
      commit();
      return 0;
    });
  } catch (...) {
    for (IssuanceBatcher::Pending* p : batch) p->error = std::current_exception();
  }
}

IssueOutcome PgCloudStore::record_issuances(const std::vector<IssuanceRecord>& tokens,
                                            const IssuanceGuard& guard) {
  return batcher_.submit(tokens, guard, [this](std::vector<IssuanceBatcher::Pending*>& batch) {
    commit_batch(batch);
  });
}

std::optional<IssuanceRecord> PgCloudStore::issuance(ByteView token_id) {
  Lease c(*this);
  auto r = c->q(
      "SELECT token_id, user_id, device_id, user_key_id, uses, issued_at, expires_at, "
      "authorization_id FROM issuances WHERE token_id = $1",
      token_id);
  if (r.empty()) return std::nullopt;
  return IssuanceRecord{r.blob(0, 0),
                        r.blob(0, 1),
                        r.blob(0, 2),
                        r.blob(0, 3),
                        static_cast<std::uint32_t>(r.u64(0, 4)),
                        r.i64(0, 5),
                        r.i64(0, 6),
                        r.u64(0, 7)};
}

void PgCloudStore::set_authorization(ByteView signed_bytes) {
  TX([&](Conn& c, auto commit) {
    c.q("INSERT INTO meta(key, value) VALUES ('authorization', $1) "
        "ON CONFLICT (key) DO UPDATE SET value = EXCLUDED.value",
        signed_bytes);
    commit();
    return 0;
  });
}

std::optional<Bytes> PgCloudStore::authorization() {
  Lease c(*this);
  auto r = c->q("SELECT value FROM meta WHERE key = 'authorization'");
  if (r.empty()) return std::nullopt;
  return r.blob(0, 0);
}

std::optional<std::uint64_t> PgCloudStore::change_version() {
  Lease c(*this);
  auto r = c->q("SELECT n FROM change_version WHERE id = 1");
  if (r.empty()) throw StoreError("postgresql: the change_version row is missing");
  return r.u64(0, 0);
}

ReceiptHead PgCloudStore::receipt_head(ByteView device_id) {
  Lease c(*this);
  auto r = c->q("SELECT seq, hash FROM receipt_heads WHERE device_id = $1", device_id);
  if (r.empty()) return {};
  return ReceiptHead{r.u64(0, 0), r.blob(0, 1)};
}

ReceiptOutcome PgCloudStore::apply_receipt(ByteView device_id, const ReceiptHead& expected,
                                           const ReceiptHead& next,
                                           const std::vector<ReceiptCharge>& charges) {
  return TX([&](Conn& c, auto commit) {
    // The device row serializes receipts of one device, including the first
    // one (no head row exists yet to lock).
    c.q("SELECT 1 FROM devices WHERE id = $1 FOR UPDATE", device_id);
    ReceiptHead current;
    auto r = c.q("SELECT seq, hash FROM receipt_heads WHERE device_id = $1 FOR UPDATE", device_id);
    if (!r.empty()) current = ReceiptHead{r.u64(0, 0), r.blob(0, 1)};
    if (current.seq != expected.seq || current.hash != expected.hash) {
      return ReceiptOutcome::kHeadMoved;
    }
    for (const auto& ch : charges) {
      c.q("UPDATE issuances SET consumed = LEAST(uses, consumed + $1) WHERE token_id = $2 AND "
          "device_id = $3",
          std::int64_t{ch.uses}, ch.token_id, device_id);
    }
    c.q("INSERT INTO receipt_heads(device_id, seq, hash) VALUES ($1, $2, $3) "
        "ON CONFLICT (device_id) DO UPDATE SET seq = EXCLUDED.seq, hash = EXCLUDED.hash",
        device_id, to_i64(next.seq), next.hash);
    commit();
    return ReceiptOutcome::kApplied;
  });
}

std::vector<UsageRow> PgCloudStore::usage() {
  Lease c(*this);
  auto r = c->q(
      "SELECT e.user_id, u.name, e.device_id, e.model, "
      "  COUNT(i.token_id), COALESCE(SUM(i.uses), 0)::BIGINT, "
      "  COALESCE(SUM(i.consumed), 0)::BIGINT, e.balance, e.price, e.paid "
      "FROM entitlements e JOIN users u ON u.id = e.user_id "
      "LEFT JOIN issuances i ON i.user_id = e.user_id AND i.device_id = e.device_id "
      "GROUP BY e.user_id, e.device_id, u.name, e.model, e.balance, e.price, e.paid "
      "ORDER BY u.name, e.device_id");
  std::vector<UsageRow> out;
  for (int i = 0; i < r.size(); ++i) {
    UsageRow row;
    row.user_id = r.blob(i, 0);
    row.user_name = r.text(i, 1);
    row.device_id = r.blob(i, 2);
    row.model = static_cast<Model>(r.i64(i, 3));
    row.tokens = r.u64(i, 4);
    row.uses_minted = r.u64(i, 5);
    row.uses_consumed = r.u64(i, 6);
    row.balance = r.u64(i, 7);
    row.price = r.u64(i, 8);
    row.paid = r.u64(i, 9);
    out.push_back(std::move(row));
  }
  return out;
}

StoreCounts PgCloudStore::counts() {
  Lease c(*this);
  auto r = c->q(
      "SELECT (SELECT COUNT(*) FROM users), (SELECT COUNT(*) FROM users WHERE revoked), "
      "(SELECT COUNT(*) FROM sessions), (SELECT COUNT(*) FROM challenges), "
      "(SELECT COUNT(*) FROM challenges WHERE used), (SELECT COUNT(*) FROM user_keys), "
      "(SELECT COUNT(*) FROM devices), (SELECT COUNT(*) FROM issuances), "
      "(SELECT COALESCE(SUM(uses), 0)::BIGINT FROM issuances), "
      "(SELECT COALESCE(SUM(consumed), 0)::BIGINT FROM issuances), "
      "(SELECT COALESCE(SUM(balance), 0)::BIGINT FROM entitlements), "
      "(SELECT COALESCE(SUM(seq), 0)::BIGINT FROM receipt_heads)");
  StoreCounts out;
  std::uint64_t* fields[] = {&out.users,         &out.revoked_users,   &out.sessions,
                             &out.challenges,    &out.used_challenges, &out.user_keys,
                             &out.devices,       &out.issuances,       &out.uses_issued,
                             &out.uses_consumed, &out.balance,         &out.receipt_seq};
  for (int i = 0; i < 12; ++i) *fields[i] = r.u64(0, i);
  return out;
}

void pg_exec(const std::string& url, const std::string& sql) {
  auto c = open_connection(url);
  ResultPtr r(PQexec(c.get(), sql.c_str()));
  check(c.get(), r);
}

std::string pg_url_with_search_path(const std::string& url, const std::string& schema) {
  if (url.rfind("postgresql://", 0) == 0 || url.rfind("postgres://", 0) == 0) {
    return url + (url.find('?') == std::string::npos ? "?" : "&") + "options=-csearch_path%3D" +
           schema;
  }
  return url + " options='-csearch_path=" + schema + "'";
}

PgScratchSchema::PgScratchSchema(std::string url) : base_url_(std::move(url)) {
  static const char* digits = "0123456789abcdef";
  name_ = "tollgate_scratch_";
  for (auto b : crypto::random_bytes(8)) {
    name_ += digits[b >> 4];
    name_ += digits[b & 15];
  }
  pg_exec(base_url_, "CREATE SCHEMA " + name_);
}

PgScratchSchema::~PgScratchSchema() {
  try {
    pg_exec(base_url_, "DROP SCHEMA " + name_ + " CASCADE");
  } catch (const StoreError&) {
    // Best effort: a leftover scratch schema is harmless and visible by name.
  }
}

}  // namespace tollgate::cloud
