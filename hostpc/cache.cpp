#include "hostpc/cache.hpp"

#include <sqlite3.h>

#include <string>

#include "gateway/signed.hpp"

namespace tollgate::host {
namespace {

constexpr std::size_t kUuidSize = 16;

// One prepared statement, finalized on scope exit. Bind helpers number from 1.
class Stmt {
 public:
  Stmt(sqlite3* db, const char* sql) {
    ok_ = sqlite3_prepare_v2(db, sql, -1, &s_, nullptr) == SQLITE_OK;
  }
  ~Stmt() { sqlite3_finalize(s_); }
  Stmt(const Stmt&) = delete;
  Stmt& operator=(const Stmt&) = delete;
  bool ok() const { return ok_; }
  Stmt& bind(int i, ByteView b) {
    ok_ = ok_ && sqlite3_bind_blob(s_, i, b.data(), static_cast<int>(b.size()), SQLITE_TRANSIENT) ==
                     SQLITE_OK;
    return *this;
  }
  Stmt& bind(int i, std::int64_t v) {
    ok_ = ok_ && sqlite3_bind_int64(s_, i, v) == SQLITE_OK;
    return *this;
  }
  Stmt& bind(int i, const std::string& t) {
    ok_ = ok_ && sqlite3_bind_text(s_, i, t.data(), static_cast<int>(t.size()), SQLITE_TRANSIENT) ==
                     SQLITE_OK;
    return *this;
  }
  // SQLITE_ROW, SQLITE_DONE or an error code.
  int step() { return ok_ ? sqlite3_step(s_) : SQLITE_ERROR; }
  Bytes blob(int c) const {
    auto* p = static_cast<const std::uint8_t*>(sqlite3_column_blob(s_, c));
    return p ? Bytes(p, p + sqlite3_column_bytes(s_, c)) : Bytes{};
  }
  std::int64_t i64(int c) const { return sqlite3_column_int64(s_, c); }
  std::string text(int c) const {
    auto* p = reinterpret_cast<const char*>(sqlite3_column_text(s_, c));
    return p ? std::string(p, static_cast<std::size_t>(sqlite3_column_bytes(s_, c)))
             : std::string{};
  }

 private:
  sqlite3_stmt* s_ = nullptr;
  bool ok_ = false;
};

constexpr const char* kSchema = R"sql(
CREATE TABLE IF NOT EXISTS tokens(
  token_id BLOB PRIMARY KEY,
  device_id BLOB NOT NULL,
  user_id BLOB NOT NULL,
  issued_at INTEGER NOT NULL,
  expires_at INTEGER NOT NULL,
  authorization_id INTEGER NOT NULL,
  authorized_uses INTEGER NOT NULL,
  uses_left INTEGER NOT NULL,
  accepted INTEGER NOT NULL DEFAULT 0,
  dead INTEGER NOT NULL DEFAULT 0,
  dead_reason INTEGER NOT NULL DEFAULT 0,
  bytes BLOB NOT NULL);
CREATE INDEX IF NOT EXISTS tokens_lookup ON tokens(device_id, user_id, expires_at);
CREATE INDEX IF NOT EXISTS tokens_by_expiry ON tokens(expires_at, token_id);
CREATE TABLE IF NOT EXISTS authorizations(
  id INTEGER PRIMARY KEY,
  not_after INTEGER NOT NULL,
  bytes BLOB NOT NULL);
CREATE TABLE IF NOT EXISTS devices(
  device_id BLOB PRIMARY KEY,
  public_key BLOB NOT NULL,
  firmware TEXT NOT NULL DEFAULT '',
  endpoint TEXT NOT NULL DEFAULT '',
  last_nonce BLOB,
  nonce_time INTEGER NOT NULL DEFAULT 0);
)sql";

constexpr const char* kTokenColumns =
    "token_id, device_id, user_id, issued_at, expires_at, authorization_id, authorized_uses, "
    "uses_left, accepted, dead, dead_reason, bytes";

// The hot lookup: served by tokens_lookup (device, user, expires_at), which
// also yields the rows already in expiry order.
constexpr const char* kUsableQuery =
    "SELECT token_id, device_id, user_id, issued_at, expires_at, authorization_id, "
    "authorized_uses, uses_left, accepted, dead, dead_reason, bytes"
    " FROM tokens WHERE device_id = ? AND user_id = ? AND expires_at > ?"
    " AND dead = 0 AND uses_left > 0 ORDER BY expires_at LIMIT ?";

CachedToken read_token(const Stmt& s) {
  CachedToken t;
  t.token_id = s.blob(0);
  t.device_id = s.blob(1);
  t.user_id = s.blob(2);
  t.issued_at = s.i64(3);
  t.expires_at = s.i64(4);
  t.authorization_id = static_cast<std::uint64_t>(s.i64(5));
  t.authorized_uses = static_cast<std::uint32_t>(s.i64(6));
  t.uses_left = static_cast<std::uint32_t>(s.i64(7));
  t.accepted = s.i64(8) != 0;
  t.dead = s.i64(9) != 0;
  const auto reason = static_cast<int>(s.i64(10));
  t.dead_reason = v1::Error_IsValid(reason) ? static_cast<Error>(reason) : v1::ERROR_INTERNAL;
  t.bytes = s.blob(11);
  return t;
}

DeviceRecord read_device(const Stmt& s) {
  DeviceRecord d;
  d.device_id = s.blob(0);
  d.public_key = s.blob(1);
  d.firmware = s.text(2);
  d.endpoint = s.text(3);
  d.last_nonce = s.blob(4);
  d.nonce_time = s.i64(5);
  return d;
}

constexpr const char* kDeviceColumns =
    "device_id, public_key, firmware, endpoint, last_nonce, nonce_time";

}  // namespace

Result<CachedToken> parse_token(ByteView signed_token) {
  auto s = parse_signed(signed_token);
  if (!s) return s.error();
  if (s->type() != v1::Signed::TYPE_DEVICE_TOKEN) return v1::ERROR_WRONG_TYPE;
  v1::DeviceToken body;
  if (!body.ParseFromString(s->body())) return v1::ERROR_MALFORMED;
  if (body.token_id().size() != kUuidSize || body.device_id().size() != kUuidSize ||
      body.user_id().size() != kUuidSize || body.authorized_uses() == 0 ||
      body.expires_at() <= body.issued_at() || body.authorization_id() == 0 ||
      body.user_public_key().empty()) {
    return v1::ERROR_MALFORMED;
  }
  CachedToken t;
  t.token_id = Bytes(body.token_id().begin(), body.token_id().end());
  t.device_id = Bytes(body.device_id().begin(), body.device_id().end());
  t.user_id = Bytes(body.user_id().begin(), body.user_id().end());
  t.issued_at = body.issued_at();
  t.expires_at = body.expires_at();
  t.authorization_id = body.authorization_id();
  t.authorized_uses = body.authorized_uses();
  t.uses_left = body.authorized_uses();
  t.bytes = Bytes(signed_token.begin(), signed_token.end());
  return t;
}

Result<CachedAuthorization> parse_authorization(ByteView signed_authorization) {
  auto s = parse_signed(signed_authorization);
  if (!s) return s.error();
  if (s->type() != v1::Signed::TYPE_CLOUD_KEY_AUTHORIZATION) return v1::ERROR_WRONG_TYPE;
  v1::CloudKeyAuthorization body;
  if (!body.ParseFromString(s->body())) return v1::ERROR_MALFORMED;
  if (body.id() == 0 || body.cloud_public_key().empty() || body.not_after() <= body.not_before()) {
    return v1::ERROR_MALFORMED;
  }
  CachedAuthorization a;
  a.id = body.id();
  a.not_after = body.not_after();
  a.bytes = Bytes(signed_authorization.begin(), signed_authorization.end());
  return a;
}

Result<std::unique_ptr<TokenCache>> TokenCache::open(const std::string& path) {
  sqlite3* db = nullptr;
  if (sqlite3_open_v2(path.c_str(), &db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE, nullptr) !=
      SQLITE_OK) {
    sqlite3_close(db);
    return v1::ERROR_STORAGE;
  }
  std::unique_ptr<TokenCache> cache(new TokenCache(db));
  sqlite3_busy_timeout(db, 5000);
  for (const char* sql : {"PRAGMA journal_mode=WAL", "PRAGMA synchronous=NORMAL", kSchema}) {
    if (auto st = cache->exec(sql); !st) return st.error();
  }
  return cache;
}

TokenCache::~TokenCache() {
  sqlite3_close(db_);
}

Status TokenCache::exec(const char* sql) const {
  char* msg = nullptr;
  if (sqlite3_exec(db_, sql, nullptr, nullptr, &msg) != SQLITE_OK) {
    last_error_ = msg ? msg : "sqlite error";
    sqlite3_free(msg);
    return v1::ERROR_STORAGE;
  }
  return {};
}

Status TokenCache::fail() const {
  last_error_ = sqlite3_errmsg(db_);
  return v1::ERROR_STORAGE;
}

Result<ImportResult> TokenCache::import_token(ByteView signed_token) {
  auto t = parse_token(signed_token);
  if (!t) return t.error();
  Stmt s(db_, (std::string("INSERT OR IGNORE INTO tokens(") + kTokenColumns +
               ") VALUES(?,?,?,?,?,?,?,?,0,0,0,?)")
                  .c_str());
  s.bind(1, t->token_id)
      .bind(2, t->device_id)
      .bind(3, t->user_id)
      .bind(4, t->issued_at)
      .bind(5, t->expires_at)
      .bind(6, static_cast<std::int64_t>(t->authorization_id))
      .bind(7, static_cast<std::int64_t>(t->authorized_uses))
      .bind(8, static_cast<std::int64_t>(t->uses_left))
      .bind(9, t->bytes);
  if (s.step() != SQLITE_DONE) return fail().error();
  return sqlite3_changes(db_) == 1 ? ImportResult::kAdded : ImportResult::kDuplicate;
}

Result<ImportResult> TokenCache::import_authorization(ByteView signed_authorization) {
  auto a = parse_authorization(signed_authorization);
  if (!a) return a.error();
  Stmt s(db_, "INSERT OR IGNORE INTO authorizations(id, not_after, bytes) VALUES(?,?,?)");
  s.bind(1, static_cast<std::int64_t>(a->id)).bind(2, a->not_after).bind(3, a->bytes);
  if (s.step() != SQLITE_DONE) return fail().error();
  return sqlite3_changes(db_) == 1 ? ImportResult::kAdded : ImportResult::kDuplicate;
}

Result<std::vector<CachedToken>> TokenCache::list(const std::optional<Bytes>& device) const {
  std::string sql = std::string("SELECT ") + kTokenColumns + " FROM tokens";
  if (device) sql += " WHERE device_id = ?";
  sql += " ORDER BY expires_at, token_id";
  Stmt s(db_, sql.c_str());
  if (device) s.bind(1, *device);
  std::vector<CachedToken> out;
  int rc;
  while ((rc = s.step()) == SQLITE_ROW) out.push_back(read_token(s));
  if (rc != SQLITE_DONE) return fail().error();
  return out;
}

Result<std::optional<CachedToken>> TokenCache::token(ByteView token_id) const {
  Stmt s(db_, (std::string("SELECT ") + kTokenColumns + " FROM tokens WHERE token_id = ?").c_str());
  s.bind(1, token_id);
  const int rc = s.step();
  if (rc == SQLITE_ROW) return std::optional<CachedToken>(read_token(s));
  if (rc == SQLITE_DONE) return std::optional<CachedToken>();
  return fail().error();
}

Result<std::vector<CachedToken>> TokenCache::usable(ByteView device, ByteView user, UnixSeconds now,
                                                    std::size_t limit) const {
  Stmt s(db_, kUsableQuery);
  s.bind(1, device).bind(2, user).bind(3, now).bind(4, static_cast<std::int64_t>(limit));
  std::vector<CachedToken> out;
  int rc;
  while ((rc = s.step()) == SQLITE_ROW) out.push_back(read_token(s));
  if (rc != SQLITE_DONE) return fail().error();
  return out;
}

Result<std::optional<CachedToken>> TokenCache::first_accepted(ByteView device, ByteView user,
                                                              UnixSeconds now) const {
  Stmt s(db_, (std::string("SELECT ") + kTokenColumns +
               " FROM tokens WHERE device_id = ? AND user_id = ? AND expires_at > ?"
               " AND dead = 0 AND accepted = 1 AND uses_left > 0"
               " ORDER BY expires_at, token_id LIMIT 1")
                  .c_str());
  s.bind(1, device).bind(2, user).bind(3, now);
  const int rc = s.step();
  if (rc == SQLITE_ROW) return std::optional<CachedToken>(read_token(s));
  if (rc == SQLITE_DONE) return std::optional<CachedToken>();
  return fail().error();
}

Status TokenCache::begin_bulk() {
  return exec("BEGIN IMMEDIATE");
}
Status TokenCache::end_bulk() {
  return exec("COMMIT");
}

Result<std::string> TokenCache::usable_query_plan() const {
  Stmt s(db_, (std::string("EXPLAIN QUERY PLAN ") + kUsableQuery).c_str());
  std::string plan;
  int rc;
  while ((rc = s.step()) == SQLITE_ROW) plan += s.text(3) + "\n";
  if (rc != SQLITE_DONE) return fail().error();
  return plan;
}

Status TokenCache::set_uses_left(ByteView token_id, std::uint32_t uses_left) {
  Stmt s(db_, "UPDATE tokens SET uses_left = ? WHERE token_id = ?");
  s.bind(1, static_cast<std::int64_t>(uses_left)).bind(2, token_id);
  return s.step() == SQLITE_DONE ? Status{} : fail();
}

Status TokenCache::mark_accepted(ByteView token_id, std::uint32_t uses_left) {
  Stmt s(db_, "UPDATE tokens SET uses_left = ?, accepted = 1 WHERE token_id = ?");
  s.bind(1, static_cast<std::int64_t>(uses_left)).bind(2, token_id);
  return s.step() == SQLITE_DONE ? Status{} : fail();
}

Status TokenCache::mark_dead(ByteView token_id, Error reason) {
  Stmt s(db_, "UPDATE tokens SET dead = 1, dead_reason = ? WHERE token_id = ?");
  s.bind(1, static_cast<std::int64_t>(reason)).bind(2, token_id);
  return s.step() == SQLITE_DONE ? Status{} : fail();
}

Result<std::optional<CachedAuthorization>> TokenCache::authorization(std::uint64_t id) const {
  Stmt s(db_, "SELECT id, not_after, bytes FROM authorizations WHERE id = ?");
  s.bind(1, static_cast<std::int64_t>(id));
  const int rc = s.step();
  if (rc == SQLITE_ROW) {
    return std::optional<CachedAuthorization>(
        CachedAuthorization{static_cast<std::uint64_t>(s.i64(0)), s.i64(1), s.blob(2)});
  }
  if (rc == SQLITE_DONE) return std::optional<CachedAuthorization>();
  return fail().error();
}

Result<std::vector<CachedAuthorization>> TokenCache::authorizations() const {
  Stmt s(db_, "SELECT id, not_after, bytes FROM authorizations ORDER BY id");
  std::vector<CachedAuthorization> out;
  int rc;
  while ((rc = s.step()) == SQLITE_ROW) {
    out.push_back({static_cast<std::uint64_t>(s.i64(0)), s.i64(1), s.blob(2)});
  }
  if (rc != SQLITE_DONE) return fail().error();
  return out;
}

Result<std::optional<DeviceRecord>> TokenCache::device(ByteView device_id) const {
  Stmt s(db_,
         (std::string("SELECT ") + kDeviceColumns + " FROM devices WHERE device_id = ?").c_str());
  s.bind(1, device_id);
  const int rc = s.step();
  if (rc == SQLITE_ROW) return std::optional<DeviceRecord>(read_device(s));
  if (rc == SQLITE_DONE) return std::optional<DeviceRecord>();
  return fail().error();
}

Result<std::optional<DeviceRecord>> TokenCache::device_by_endpoint(
    const std::string& endpoint) const {
  Stmt s(db_, (std::string("SELECT ") + kDeviceColumns +
               " FROM devices WHERE endpoint = ? ORDER BY rowid DESC LIMIT 1")
                  .c_str());
  s.bind(1, endpoint);
  const int rc = s.step();
  if (rc == SQLITE_ROW) return std::optional<DeviceRecord>(read_device(s));
  if (rc == SQLITE_DONE) return std::optional<DeviceRecord>();
  return fail().error();
}

Status TokenCache::put_device(const DeviceRecord& r) {
  // A device seen on a new link takes that link over: one device per endpoint.
  Stmt clear(db_, "UPDATE devices SET endpoint = '' WHERE endpoint = ? AND device_id <> ?");
  clear.bind(1, r.endpoint).bind(2, r.device_id);
  if (clear.step() != SQLITE_DONE) return fail();
  Stmt s(db_,
         (std::string("INSERT OR REPLACE INTO devices(") + kDeviceColumns + ") VALUES(?,?,?,?,?,?)")
             .c_str());
  s.bind(1, r.device_id)
      .bind(2, r.public_key)
      .bind(3, r.firmware)
      .bind(4, r.endpoint)
      .bind(5, r.last_nonce)
      .bind(6, r.nonce_time);
  return s.step() == SQLITE_DONE ? Status{} : fail();
}

Status TokenCache::set_nonce(ByteView device_id, ByteView nonce, UnixSeconds when) {
  Stmt s(db_, "UPDATE devices SET last_nonce = ?, nonce_time = ? WHERE device_id = ?");
  s.bind(1, nonce).bind(2, when).bind(3, device_id);
  return s.step() == SQLITE_DONE ? Status{} : fail();
}

}  // namespace tollgate::host
