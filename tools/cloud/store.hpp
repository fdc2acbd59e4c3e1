// The cloud authority's durable state, behind one backend-neutral interface.
//
// Every method is one transaction: it either commits completely or changes
// nothing. Methods that guard an invariant (single-use challenges, the cap on
// outstanding tokens, a pay-per-use balance, the receipt chain head) check and
// update in the SAME transaction, so concurrent server threads or several
// server processes sharing one database can never overdraw or replay.
// Issuances are committed (durably: WAL + synchronous=FULL on SQLite) before
// the method returns, i.e. before a token leaves the server.
//
// The policy (which model allows what) lives in Authority; the store only
// enforces the guards it is handed. PgCloudStore (pg_store.hpp) implements the same
// interface on PostgreSQL; the tests run against the interface on both.
//
// Errors: business outcomes are return values; a database failure throws
// StoreError (the server answers 503 and nothing was decided).
//
// Thread safety: implementations are safe to call from several threads.
#pragma once

#include <cstdint>
#include <limits>
#include <optional>
#include <stdexcept>
#include <string>
#include <vector>

#include "gateway/bytes.hpp"

namespace tollgate::cloud {

using UnixTime = std::int64_t;

class StoreError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

// Both backends store unsigned counters in signed 64-bit columns.
inline std::int64_t to_i64(std::uint64_t v) {
  if (v > static_cast<std::uint64_t>(std::numeric_limits<std::int64_t>::max())) {
    throw StoreError("value out of the database's range");
  }
  return static_cast<std::int64_t>(v);
}

struct UserRecord {
  Bytes id;  // UUID, 16 bytes
  std::string name;
  std::string password_hash;  // Argon2id encoded string
  bool revoked = false;
  UnixTime created_at = 0;
};

struct SessionRecord {
  Bytes user_id;
  UnixTime expires_at = 0;
};

struct ChallengeRecord {
  Bytes id;  // 16 random bytes
  Bytes user_id;
  Bytes challenge;   // 32 random bytes the user signs
  Bytes public_key;  // SPKI DER the user claims to hold
  UnixTime expires_at = 0;
  bool used = false;
};

struct UserKeyRecord {
  Bytes key_id;      // 16 bytes (crypto::KeyId)
  Bytes public_key;  // SPKI DER
  UnixTime enrolled_at = 0;
};

struct DeviceRecord {
  Bytes id;          // UUID
  Bytes public_key;  // SPKI DER (from provisioning)
  Bytes key_id;      // 16 bytes
  std::string name;
  UnixTime added_at = 0;
};

enum class Model { kSubscription, kPayPerUse, kRentToOwn };
const char* model_name(Model m);  // "subscription" | "pay-per-use" | "rent-to-own"
std::optional<Model> model_from_name(const std::string& name);

struct EntitlementRecord {
  Bytes user_id;
  Bytes device_id;
  Model model = Model::kSubscription;
  // subscription: tokens only inside [window_start, window_end)
  UnixTime window_start = 0;
  UnixTime window_end = 0;
  std::uint32_t uses_per_token = 1;   // upper bound of one token's uses
  std::uint32_t max_outstanding = 0;  // unexpired tokens at once; 0 = no cap
  // pay-per-use: uses still available to mint (minting reserves from it)
  std::uint64_t balance = 0;
  // rent-to-own, in the smallest currency unit
  std::uint64_t price = 0;
  std::uint64_t paid = 0;
};

struct IssuanceRecord {
  Bytes token_id;
  Bytes user_id;
  Bytes device_id;
  Bytes user_key_id;
  std::uint32_t uses = 0;
  UnixTime issued_at = 0;
  UnixTime expires_at = 0;
  std::uint64_t authorization_id = 0;
};

// The guards record_issuances applies atomically with the insert.
struct IssuanceGuard {
  // Unexpired tokens of (user, device) at `now` + the new ones must stay <= this (0 = no cap).
  std::uint32_t max_outstanding = 0;
  // Reserve the sum of the new tokens' uses from the pay-per-use balance.
  bool reserve_from_balance = false;
  UnixTime now = 0;
};

enum class IssueOutcome { kRecorded, kNoEntitlement, kOutstandingCap, kInsufficientBalance };

struct ReceiptHead {
  std::uint64_t seq = 0;  // last audit record reconciled; 0 = none yet
  Bytes hash;             // its hash (empty when seq == 0)
};

struct ReceiptCharge {
  Bytes token_id;
  std::uint32_t uses = 0;
};

enum class ReceiptOutcome { kApplied, kHeadMoved };

struct UsageRow {
  Bytes user_id;
  std::string user_name;
  Bytes device_id;
  Model model = Model::kSubscription;
  std::uint64_t tokens = 0;         // tokens minted
  std::uint64_t uses_minted = 0;    // uses in those tokens (reserved)
  std::uint64_t uses_consumed = 0;  // uses the device reported charging (receipts)
  std::uint64_t balance = 0;        // pay-per-use: still available to mint
  std::uint64_t price = 0;          // rent-to-own
  std::uint64_t paid = 0;
};

// Row counts and sums for monitoring, and for tests proving a rejected request
// changed nothing.
struct StoreCounts {
  std::uint64_t users = 0;
  std::uint64_t revoked_users = 0;
  std::uint64_t sessions = 0;
  std::uint64_t challenges = 0;
  std::uint64_t used_challenges = 0;
  std::uint64_t user_keys = 0;
  std::uint64_t devices = 0;
  std::uint64_t issuances = 0;
  std::uint64_t uses_issued = 0;
  std::uint64_t uses_consumed = 0;
  std::uint64_t balance = 0;      // sum of pay-per-use balances
  std::uint64_t receipt_seq = 0;  // sum of receipt heads
  bool operator==(const StoreCounts&) const = default;
};

class CloudStore {
 public:
  virtual ~CloudStore() = default;

  // Users. add_user: false when the name is taken.
  virtual bool add_user(const UserRecord& user) = 0;
  virtual std::optional<UserRecord> user_by_name(const std::string& name) = 0;
  virtual std::optional<UserRecord> user_by_id(ByteView id) = 0;
  // Marks the user revoked and deletes their sessions. false: no such user.
  virtual bool revoke_user(const std::string& name) = 0;

  // Sessions are stored by the SHA-256 of the bearer secret, never the secret.
  // add_session also drops the user's sessions expired at `now` and, beyond
  // kMaxSessionsPerUser live ones, the oldest: a password holder cannot grow
  // the table without bound.
  static constexpr std::uint64_t kMaxSessionsPerUser = 64;
  virtual void add_session(ByteView secret_hash, ByteView user_id, UnixTime expires_at,
                           UnixTime now) = 0;
  virtual std::optional<SessionRecord> session(ByteView secret_hash) = 0;

  // Enrollment. consume_challenge_and_enroll marks the challenge used and adds the
  // key in one transaction; false when the challenge was already used (a replay
  // or a lost race), in which case nothing changed.
  // add_challenge drops the user's challenges expired at `now`; false (nothing
  // added) when the user already has kMaxOpenChallenges unused live ones.
  static constexpr std::uint64_t kMaxOpenChallenges = 16;
  virtual bool add_challenge(const ChallengeRecord& c, UnixTime now) = 0;
  virtual std::optional<ChallengeRecord> challenge(ByteView id) = 0;
  virtual bool consume_challenge_and_enroll(ByteView challenge_id, ByteView user_id,
                                            const UserKeyRecord& key) = 0;
  virtual std::vector<UserKeyRecord> user_keys(ByteView user_id) = 0;

  // Devices. add_device: false when the id is taken.
  virtual bool add_device(const DeviceRecord& d) = 0;
  virtual std::optional<DeviceRecord> device(ByteView id) = 0;
  virtual std::optional<DeviceRecord> device_by_key_id(ByteView key_id) = 0;

  // Entitlements: one per (user, device); put replaces it.
  virtual void put_entitlement(const EntitlementRecord& e) = 0;
  virtual std::optional<EntitlementRecord> entitlement(ByteView user_id, ByteView device_id) = 0;
  // Adds to the pay-per-use balance and to the rent-to-own payments atomically
  // (safe against concurrent minting). false: no such entitlement.
  virtual bool credit_entitlement(ByteView user_id, ByteView device_id, std::uint64_t balance_delta,
                                  std::uint64_t paid_delta) = 0;

  // Records the tokens (all of one user and device) under `guard`, atomically.
  virtual IssueOutcome record_issuances(const std::vector<IssuanceRecord>& tokens,
                                        const IssuanceGuard& guard) = 0;
  virtual std::optional<IssuanceRecord> issuance(ByteView token_id) = 0;

  // The current cloud key authorization (serialized Signed object).
  virtual void set_authorization(ByteView signed_bytes) = 0;
  virtual std::optional<Bytes> authorization() = 0;

  // Receipts: applies `charges` and moves the device's head from `expected` to
  // `next` if (and only if) the stored head still equals `expected`. Charges
  // naming tokens of other devices or unknown tokens are ignored.
  virtual ReceiptHead receipt_head(ByteView device_id) = 0;
  virtual ReceiptOutcome apply_receipt(ByteView device_id, const ReceiptHead& expected,
                                       const ReceiptHead& next,
                                       const std::vector<ReceiptCharge>& charges) = 0;

  virtual std::vector<UsageRow> usage() = 0;
  virtual StoreCounts counts() = 0;

  // A counter that grows with every committed change, by any process, to what
  // callers may cache: users, ended sessions, user keys, devices, entitlements
  // other than their balance, and the authorization. Issuances, new sessions,
  // challenges, receipts and balance changes do not move it. A value read
  // BEFORE some reads vouches for them as long as the counter still has it.
  // nullopt: the backend keeps no counter, so nothing may be cached.
  virtual std::optional<std::uint64_t> change_version() { return std::nullopt; }
};

}  // namespace tollgate::cloud
