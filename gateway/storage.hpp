// The gateway's durable state and the one way it changes: an atomic StateDelta.
//
// The gateway keeps its whole state in memory and persists every decision as
// ONE StateDelta through Storage::commit. A commit is all or nothing: after a
// failed commit the durable state is as before, and the gateway leaves its
// in-memory state as before too and rejects the decision with ERROR_STORAGE.
// The instrument backs Storage with SQLite (and hash-chains the audit events);
// MemoryStorage serves the tests.
//
// Master public keys are not part of the state: they come with the firmware.
#pragma once

#include <array>
#include <compare>
#include <cstdint>
#include <map>
#include <optional>
#include <set>
#include <string>
#include <vector>

#include "gateway/bytes.hpp"
#include "gateway/crypto.hpp"
#include "gateway/policy.hpp"
#include "gateway/result.hpp"

namespace tollgate {

using Sha256 = std::array<std::uint8_t, 32>;

// Idempotency key of a command request: who signed it and the id they gave it.
struct RequestKey {
  crypto::KeyId signer{};
  std::uint64_t request_id = 0;
  auto operator<=>(const RequestKey&) const = default;
};

struct StoredToken {
  Bytes signed_bytes;           // the serialized Signed DeviceToken, as received
  std::uint32_t uses_left = 0;  // > 0; an exhausted token becomes a tombstone
  bool operator==(const StoredToken&) const = default;
};

struct NonceRecord {
  UnixTime expires_at = 0;  // dead at and after this time
  bool operator==(const NonceRecord&) const = default;
};

struct IdempotencyRecord {
  Sha256 request_hash{};  // SHA-256 over the received Signed request bytes
  // Order of creation; the smallest is evicted first when the cache is full.
  std::uint64_t sequence = 0;
  Bytes token_id;               // token charged
  std::uint32_t uses_left = 0;  // of that token after the charge
  // The response the device sent, once the caller reported it. Empty optional =
  // "charged, response pending": the command was authorized (and charged) but no
  // response was recorded - it was executing, or a power cut lost the response.
  // Such a request is never executed again.
  std::optional<Bytes> response;
  bool operator==(const IdempotencyRecord&) const = default;
};

// One audited decision. The instrument appends these to its hash-chained log.
struct AuditEvent {
  enum class Kind {
    kInstallAuthorization,
    kOfferToken,
    kAuthorizeCommand,
    kReplay,              // a retried request answered from the idempotency cache
    kAuditEventsDropped,  // `count` rejections were not logged (storage kept failing)
  };
  Kind kind = Kind::kAuthorizeCommand;
  bool accepted = false;
  Error reason = v1::ERROR_UNSPECIFIED;  // why it was rejected; UNSPECIFIED when accepted
  UnixTime at = 0;                       // the device's now (clock combined with the floor)
  Sha256 object_hash{};                  // SHA-256 of the received bytes (zero if none)
  std::uint64_t authorization_id = 0;    // the authorization installed or named by the token
  Bytes token_id;                        // the token offered or charged
  Bytes signer_key_id;                   // the object's signer key id as received
  std::uint64_t request_id = 0;
  std::string command;
  std::uint32_t uses_charged = 0;
  std::uint32_t uses_left = 0;
  std::uint64_t count = 0;  // kAuditEventsDropped only
  bool operator==(const AuditEvent&) const = default;
};

// Everything the gateway must find again after a restart.
struct DeviceState {
  std::map<std::uint64_t, Bytes> authorizations;  // id -> serialized Signed authorization
  std::set<std::uint64_t> revoked_ids;            // grow-only
  std::map<Bytes, StoredToken> tokens;            // token id -> token
  std::map<Bytes, UnixTime> tombstones;           // exhausted token id -> its expires_at
  UnixTime time_floor = 0;                        // the device's now never goes below this
  std::map<Bytes, NonceRecord> nonces;            // nonces in flight
  std::map<RequestKey, IdempotencyRecord> idempotency;
  std::uint64_t next_sequence = 1;  // for IdempotencyRecord::sequence
  bool operator==(const DeviceState&) const = default;
};

// A change of DeviceState plus the audit events to append, committed atomically.
// Within one delta a key never appears both among the puts and the removals of
// the same table, so the order a storage applies them in does not matter.
struct StateDelta {
  std::map<std::uint64_t, Bytes> authorizations_put;
  std::set<std::uint64_t> authorizations_removed;
  std::set<std::uint64_t> revoked_added;
  std::map<Bytes, StoredToken> tokens_put;  // new tokens and changed uses_left
  std::set<Bytes> tokens_removed;
  std::map<Bytes, UnixTime> tombstones_put;
  std::set<Bytes> tombstones_removed;
  std::optional<UnixTime> time_floor;  // the new floor, when raised
  std::map<Bytes, NonceRecord> nonces_put;
  std::set<Bytes> nonces_removed;
  std::map<RequestKey, IdempotencyRecord> idempotency_put;
  std::set<RequestKey> idempotency_removed;
  std::optional<std::uint64_t> next_sequence;
  std::vector<AuditEvent> audit;

  // True when the delta changes no state (it may still carry audit events).
  bool changes_state() const;
  bool empty() const { return !changes_state() && audit.empty(); }

  // Folds `later` into this delta, as if this one were applied first and then
  // `later`; keeps the "no key both put and removed" property.
  void then(const StateDelta& later);

  // Edits that keep the property above (a removal cancels a pending put).
  void put_authorization(std::uint64_t id, Bytes signed_bytes);
  void remove_authorization(std::uint64_t id);
  void put_token(const Bytes& id, StoredToken token);
  void remove_token(const Bytes& id);
  void put_tombstone(const Bytes& id, UnixTime expires_at);
  void remove_tombstone(const Bytes& id);
  void put_nonce(const Bytes& nonce, NonceRecord record);
  void remove_nonce(const Bytes& nonce);
  void put_idempotency(const RequestKey& key, IdempotencyRecord record);
  void remove_idempotency(const RequestKey& key);
  void raise_floor(UnixTime t);
};

// Applies `delta` to `state` (audit events are not state and are ignored).
// Storage implementations and the gateway share this one definition.
void apply(DeviceState& state, const StateDelta& delta);

class Storage {
 public:
  virtual ~Storage() = default;
  // The state as last committed (an empty DeviceState on first start).
  virtual Result<DeviceState> load() = 0;
  // Persists `delta` atomically: all of it or, on failure, none of it.
  // Returns ERROR_STORAGE on failure.
  virtual Status commit(const StateDelta& delta) = 0;
};

}  // namespace tollgate
