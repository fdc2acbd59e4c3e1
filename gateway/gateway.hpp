// The trust core of a device: decides, offline, whether a signed object is
// trusted and whether a user may run a command. Pure: the caller passes the
// device clock in, state lives in memory and every decision that changes state
// is persisted as ONE atomic StateDelta through Storage before it takes effect.
//
// Trust chain: master key (firmware) -> CloudKeyAuthorization -> DeviceToken ->
// CommandRequest. Rules (docs/PROTOCOL.md "Trust state and decisions"):
//  - now = max(clock, floor). The floor only rises: with the clock and with the
//    issued_at of every valid token; it is persisted with the next commit. A
//    clock set back never makes an expired object valid again.
//  - The revocation set only grows: every authorization that verifies under a
//    master key merges its revoked ids, even one that is itself refused. A revoked
//    id kills that authorization and every token minted under it.
//  - A token is charged at most its authorized uses, ever: a known token keeps
//    its stored uses when re-offered, an exhausted one is remembered (tombstone)
//    until it expires.
//  - A command carries a single-use, short-lived device nonce; a retried request
//    (same signer, same request id, same bytes) gets the stored response, never a
//    second execution or charge.
//  - Charge before execute: authorize_command returns a kExecute decision only
//    after the charge is durably committed; the caller executes after that.
//
// Failure contract: every operation returns the specific Error. A rejection
// changes no decision state, except where stated (revocations merged, nonces
// consumed). Rejections with nothing to persist queue their audit event in
// memory; it is committed with the next delta (or by flush()). A failed commit
// leaves state() exactly as before and yields ERROR_STORAGE.
//
// Not thread-safe: one Gateway per device, driven by one loop.
#pragma once

#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <vector>

#include "gateway/bytes.hpp"
#include "gateway/crypto.hpp"
#include "gateway/policy.hpp"
#include "gateway/result.hpp"
#include "gateway/storage.hpp"
#include "gateway/verified_signatures.hpp"

namespace tollgate {

// Source of nonce bytes. Defaults to crypto::random_bytes; tests inject a
// deterministic one. Must return exactly n bytes.
using RandomSource = std::function<Bytes(std::size_t n)>;

constexpr std::size_t kNonceSize = 12;  // CommandRequest.nonce (proto/tollgate.proto)
constexpr std::size_t kUuidSize = 16;

struct AuthorizationInfo {
  std::uint64_t id = 0;
  crypto::KeyId cloud_key_id{};
  UnixTime not_before = 0;
  UnixTime not_after = 0;
  std::size_t revocations_added = 0;  // ids newly merged into the revocation set
  bool already_installed = false;     // that id was installed and stays as it was
};

struct TokenInfo {
  v1::DeviceToken token;  // the verified body
  crypto::KeyId cloud_key_id{};
  crypto::KeyId user_key_id{};
  // Uses left as the device counts them: the stored count for a token it already
  // knows, else authorized_uses.
  std::uint32_t uses_left = 0;
  bool already_known = false;
};

struct Decision {
  enum class Kind {
    kExecute,      // verified and charged: run the command, then complete_request()
    kReplay,       // retry of a completed request: send `stored_response` again
    kInterrupted,  // retry of a request charged earlier whose response was never
                   // recorded (power cut): it is NOT executed again
  };
  Kind kind = Kind::kExecute;
  RequestKey key;
  Sha256 request_hash{};  // SHA-256 over the received Signed request bytes
  Bytes token_id;         // token charged (kExecute; kInterrupted: as recorded)
  std::uint32_t cost = 0;
  std::uint32_t uses_left = 0;  // of that token after the charge
  // kExecute only:
  v1::CommandRequest request;  // the verified, parsed request
  Bytes next_nonce;            // issued with the charge; goes into the response
  // kReplay only: the response bytes recorded by complete_request().
  Bytes stored_response;
};

class Gateway {
 public:
  // Loads the state from `storage` and rebuilds the in-memory indexes. Stored
  // authorizations are verified again under `master_keys` (a firmware update may
  // have retired a master key); ones that no longer verify are ignored.
  //   ERROR_MALFORMED  device_id is not 16 bytes, or no master key
  //   ERROR_STORAGE    load() failed
  // `storage` must outlive the Gateway.
  static Result<Gateway> open(ByteView device_id, std::vector<crypto::PublicKey> master_keys,
                              DevicePolicy policy, Storage& storage, RandomSource random = {});

  Gateway(Gateway&&) noexcept;
  Gateway& operator=(Gateway&&) noexcept;
  ~Gateway();

  // Verifies a serialized Signed CloudKeyAuthorization under a master key, merges
  // its revoked ids into the revocation set (always, once the master signature
  // holds), then installs it unless it is refused. Installing drops every
  // installed authorization (and stored token) whose id is now revoked.
  // Re-installing the same authorization succeeds and changes nothing. Another
  // version of an installed id replaces it only if its not_after is later (ties:
  // the larger serialized bytes), so the result does not depend on arrival
  // order; otherwise nothing changes and already_installed is true.
  //   ERROR_MALFORMED / ERROR_TOO_LARGE      bad envelope or body (id 0, bad cloud key)
  //   ERROR_WRONG_TYPE                       not an authorization
  //   ERROR_UNKNOWN_SIGNER                   signer is no master key
  //   ERROR_ALGORITHM_NOT_ALLOWED / _MISMATCH / ERROR_KEY_TOO_WEAK / ERROR_BAD_SIGNATURE
  //                                          master signature or cloud key policy
  //   ERROR_REVOKED                          its own id is revoked (now or earlier)
  //   ERROR_EXPIRED                          now > not_after
  //   ERROR_NOT_YET_VALID                    not_before > now + skew
  //   ERROR_LIMIT_REACHED                    authorization table or revocation set full
  //   ERROR_STORAGE                          the commit failed; nothing changed
  Result<AuthorizationInfo> install_authorization(ByteView signed_bytes, UnixTime clock);

  // Verifies a serialized Signed DeviceToken and stores it (a known token keeps
  // its stored uses). A valid token raises the time floor to its issued_at.
  //   ERROR_MALFORMED / ERROR_TOO_LARGE / ERROR_WRONG_TYPE
  //   ERROR_REVOKED                      the authorization it names is revoked
  //   ERROR_AUTHORIZATION_NOT_INSTALLED  it names no installed authorization
  //   ERROR_UNKNOWN_SIGNER               its signer is not that authorization's cloud key
  //   ERROR_ALGORITHM_* / ERROR_KEY_TOO_WEAK / ERROR_BAD_SIGNATURE
  //   ERROR_EXPIRED                      its authorization or the token itself expired
  //   ERROR_NOT_YET_VALID                issued_at > now + skew
  //   ERROR_WRONG_DEVICE                 bound to another device
  //   ERROR_USES_EXHAUSTED               all its uses were charged before
  //   ERROR_LIMIT_REACHED                token table full (of unexpired tokens)
  //   ERROR_STORAGE
  // When the signer is no installed cloud key the body cannot be verified; it is
  // then parsed only to name the reason (REVOKED, AUTHORIZATION_NOT_INSTALLED,
  // else UNKNOWN_SIGNER) and nothing in it is trusted or stored.
  Result<TokenInfo> offer_token(ByteView signed_bytes, UnixTime clock);

  // The same checks and reasons as offer_token, with no state change and no
  // audit event (for `tollgate-keys verify` and diagnostics).
  Result<TokenInfo> check_token(ByteView signed_bytes, UnixTime clock) const;

  // Issues a fresh kNonceSize-byte nonce for the next command: single use, dies after the
  // policy's nonce lifetime; beyond max_nonces_in_flight the oldest is evicted.
  // Not committed on its own (a lost nonce only costs the host a round trip);
  // it rides on the next commit.
  Bytes issue_nonce(UnixTime clock);

  // Decides a serialized Signed CommandRequest. Order of checks:
  //   envelope (MALFORMED/TOO_LARGE/WRONG_TYPE); identical bytes seen before ->
  //   kReplay / kInterrupted (no charge, no nonce needed); the signer's tokens
  //   (NO_VALID_TOKEN if none); the signature under their user key (BAD_SIGNATURE,
  //   ALGORITHM_*); body (MALFORMED); same request id with other bytes
  //   (REQUEST_ID_REUSED); device (WRONG_DEVICE); nonce (STALE_NONCE); command
  //   (UNKNOWN_COMMAND); arguments (BAD_ARGUMENT); roles (ROLE_NOT_ALLOWED); a
  //   token valid now with uses >= cost, soonest-expiring first (else
  //   USES_EXHAUSTED / EXPIRED / REVOKED / AUTHORIZATION_NOT_INSTALLED naming why
  //   the best candidate failed). Then ONE commit: charge, consume the nonce,
  //   issue the next nonce, idempotency entry "charged, pending", audit event.
  // A verified request consumes its nonce even when it is rejected, so the same
  // nonce cannot be tried again with other bytes. After ERROR_STORAGE nothing
  // changed (the nonce is still in flight; the same bytes may be retried).
  Result<Decision> authorize_command(ByteView signed_request_bytes, UnixTime clock,
                                     const CommandRules& rules);

  // Records the response sent for a kExecute decision, so a retry gets it again.
  // Kept in memory and persisted with the next commit (or flush()): no extra
  // commit per command. After a power cut before that, a retry gets kInterrupted.
  //   ERROR_TOO_LARGE  response above policy.max_response_size
  //   ERROR_INTERNAL   no pending request with that key (evicted, or never authorized)
  Status complete_request(const RequestKey& key, ByteView response_bytes);

  // Commits whatever waits in memory (queued audit events, floor, nonces,
  // responses). The instrument calls this when idle and before shutdown.
  Status flush(UnixTime clock);

  // Command signatures verified ahead on other threads (see
  // gateway/verified_signatures.hpp); authorize_command then skips verifying a
  // request whose exact signature is found there. Null = none. Must outlive the
  // Gateway (or be reset to null first).
  void use_verified_signatures(VerifiedSignatures* verified);
  // A copy of the public key a command signed by `signer` is verified under,
  // if a stored token names that user key; for verifying it ahead.
  std::optional<crypto::PublicKey> user_key(const crypto::KeyId& signer) const;

  // The device's now for this clock: max(clock, floor).
  UnixTime now(UnixTime clock) const;
  UnixTime time_floor() const;
  // The state as the gateway holds it, including changes still waiting for the
  // next commit (see pending()).
  const DeviceState& state() const;
  // Changes and audit events not yet committed.
  const StateDelta& pending() const;
  ByteView device_id() const;
  const DevicePolicy& policy() const;

 private:
  struct Impl;
  explicit Gateway(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace tollgate
