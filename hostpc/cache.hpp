// The host's token cache: one SQLite database (cache.db under the home folder)
// holding the tokens and cloud authorizations received while online, and what
// the host knows of each device (the pinned device key, the last nonce).
//
// The cache is untrusted storage by design: the instrument re-checks every
// token. So import only sanity-checks shape (a Signed DeviceToken whose body
// parses with sane ids, uses and times); it cannot verify the cloud signature.
// `uses_left` is what the device last reported, never a host-side count.
//
// Time is passed in (Unix seconds); the cache never reads a clock.
// Errors: every database failure is ERROR_STORAGE; last_error() has the text.
// Not thread-safe: one TokenCache per thread.
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "gateway/bytes.hpp"
#include "gateway/result.hpp"

struct sqlite3;

namespace tollgate::host {

using UnixSeconds = std::int64_t;

struct CachedToken {
  Bytes token_id;  // 16 bytes
  Bytes device_id;
  Bytes user_id;
  UnixSeconds issued_at = 0;
  UnixSeconds expires_at = 0;
  std::uint64_t authorization_id = 0;
  std::uint32_t authorized_uses = 0;
  std::uint32_t uses_left = 0;  // as last reported by the device (authorized_uses until then)
  bool accepted = false;        // the device accepted it in an offer
  bool dead = false;            // the device refused it for good
  Error dead_reason = v1::ERROR_UNSPECIFIED;
  Bytes bytes;  // the serialized Signed DeviceToken exactly as received
};

struct CachedAuthorization {
  std::uint64_t id = 0;
  UnixSeconds not_after = 0;
  Bytes bytes;  // the serialized Signed CloudKeyAuthorization exactly as received
};

struct DeviceRecord {
  Bytes device_id;
  Bytes public_key;  // pinned SPKI DER
  std::string firmware;
  std::string endpoint;  // the link it was last seen on
  Bytes last_nonce;      // empty once used
  UnixSeconds nonce_time = 0;
};

// Parses and sanity-checks a token file's bytes (no signature check):
// ERROR_MALFORMED / ERROR_TOO_LARGE / ERROR_WRONG_TYPE.
Result<CachedToken> parse_token(ByteView signed_token);
Result<CachedAuthorization> parse_authorization(ByteView signed_authorization);

enum class ImportResult { kAdded, kDuplicate };

class TokenCache {
 public:
  // Opens (creating if needed) the database at `path`: WAL, synchronous=NORMAL.
  static Result<std::unique_ptr<TokenCache>> open(const std::string& path);
  ~TokenCache();
  TokenCache(const TokenCache&) = delete;
  TokenCache& operator=(const TokenCache&) = delete;

  // Importing a token or authorization already cached is a no-op (kDuplicate):
  // it never resets uses_left or the dead flag.
  Result<ImportResult> import_token(ByteView signed_token);
  Result<ImportResult> import_authorization(ByteView signed_authorization);

  // Soonest-expiring first (ties by token id). `device` filters when given.
  Result<std::vector<CachedToken>> list(const std::optional<Bytes>& device = std::nullopt) const;
  Result<std::optional<CachedToken>> token(ByteView token_id) const;
  // Tokens worth offering to `device` for `user`: not dead, uses_left > 0,
  // expires_at > now; soonest-expiring first, at most `limit`. Index-backed.
  Result<std::vector<CachedToken>> usable(ByteView device, ByteView user, UnixSeconds now,
                                          std::size_t limit) const;

  // The token the device most likely charged: it spends the soonest-expiring
  // valid token it holds, so the soonest-expiring accepted, live one.
  Result<std::optional<CachedToken>> first_accepted(ByteView device, ByteView user,
                                                    UnixSeconds now) const;

  Status set_uses_left(ByteView token_id, std::uint32_t uses_left);
  Status mark_accepted(ByteView token_id, std::uint32_t uses_left);
  Status mark_dead(ByteView token_id, Error reason);

  Result<std::optional<CachedAuthorization>> authorization(std::uint64_t id) const;
  Result<std::vector<CachedAuthorization>> authorizations() const;

  Result<std::optional<DeviceRecord>> device(ByteView device_id) const;
  Result<std::optional<DeviceRecord>> device_by_endpoint(const std::string& endpoint) const;
  // Pins (or re-records) the device: the caller has already checked the pin.
  Status put_device(const DeviceRecord& record);
  Status set_nonce(ByteView device_id, ByteView nonce, UnixSeconds when);

  // One transaction around many imports (a big `tokens import`): far fewer
  // commits. end_bulk commits; a failed import inside does not roll back others.
  Status begin_bulk();
  Status end_bulk();
  // EXPLAIN QUERY PLAN of the usable() lookup, for tests and benchmarks.
  Result<std::string> usable_query_plan() const;

  const std::string& last_error() const { return last_error_; }

 private:
  explicit TokenCache(sqlite3* db) : db_(db) {}
  Status exec(const char* sql) const;
  Status fail() const;

  sqlite3* db_;
  mutable std::string last_error_;
};

}  // namespace tollgate::host
