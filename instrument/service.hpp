// The instrument's protocol service: one HostMessage in, one DeviceMessage out
// (docs/PROTOCOL.md; the host side follows the same contract). No I/O of its
// own besides the store: the server hands it whole messages, the device clock
// and the link's context, and sends back what it returns after the delay it
// asks for. Not thread-safe: driven by the instrument's one io_context thread.
//
// Message -> answer:
//   get_status            Signed(TYPE_STATUS_RESPONSE) StatusReport (needs no token)
//   install_authorization Signed(TYPE_COMMAND_RESPONSE) CommandResponse OK | REJECTED
//   offer_tokens (<= 8)   CommandResponse, result = TokenOfferResult (one outcome per token)
//   command               CommandResponse: OK / FAILED after execution (charged first),
//                         the identical stored bytes for a retried request, FAILED
//                         "interrupted" for a request charged before a power cut,
//                         REJECTED with the gateway's reason otherwise
//   export_audit          Signed(TYPE_AUDIT_EXPORT) AuditExport (<= 64 records)
//   anything unparseable  DeviceMessage.error (unsigned; nothing changes)
// Every CommandResponse binds the first 16 bytes of SHA-256 over the request
// and carries the nonce for the next command. After each execution a
// KIND_EXECUTION record is appended to the audit log.
//
// Group commit (gateway/group_commit.hpp): the service owns the Gateway, which
// commits through a GroupCommitStorage over the SqliteStore. A message is
// answered in two phases: begin() decides it (signature checks, charge, nonce -
// all staged in memory), then, once the group it belongs to is durable,
// finish() executes an authorized command and signs the answer. handle() does
// both around one sync(); the Server decides the messages of several links while
// the previous group is written (docs/PROTOCOL.md "Group commit"). If a group
// cannot be written, recover() reloads the gateway from the database and every
// message of the group (and any decided on top of it) is answered
// REJECTED / ERROR_STORAGE, executing nothing: the hosts retry the same bytes.
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "gateway/bytes.hpp"
#include "gateway/crypto.hpp"
#include "gateway/gateway.hpp"
#include "gateway/group_commit.hpp"
#include "instrument/backoff.hpp"
#include "instrument/commands.hpp"
#include "instrument/store.hpp"

namespace tollgate::instrument {

constexpr std::size_t kMaxHostMessageSize = 16 * 1024;
constexpr std::size_t kMaxTokensPerOffer = 8;
constexpr std::size_t kMaxAuditRecordsPerExport = 64;
constexpr std::size_t kRequestHashSize = 16;

// Per-link state the service keeps between messages (brute-force back-off).
struct LinkContext {
  std::string name;  // the endpoint, for logs and audit records
  Backoff backoff;
  // In: the caller's monotonic time in microseconds, set before each handle().
  std::int64_t monotonic_us = 0;
  // Out: how long the caller waits before sending the reply (0 = at once).
  std::int64_t reply_delay_us = 0;
};

struct ServiceStats {
  std::uint64_t messages = 0;
  std::uint64_t executions = 0;
  std::uint64_t rejections = 0;
  std::uint64_t delayed_replies = 0;
};

// What the service opens its Gateway with (again after a failed group).
struct GatewaySetup {
  Bytes device_id;
  std::vector<crypto::PublicKey> master_keys;
  DevicePolicy policy;
  RandomSource random;  // empty = crypto::random_bytes
};

class InstrumentService {
 public:
  // Opens the gateway over a GroupCommitStorage on `store` (Gateway::open's
  // errors). `store` and `device_key` must outlive the service; results and
  // instrument-only audit records go to `store` too.
  static Result<std::unique_ptr<InstrumentService>> open(SqliteStore& store, GatewaySetup setup,
                                                         const crypto::PrivateKey& device_key,
                                                         std::string firmware_version,
                                                         CommandRegistry registry);
  ~InstrumentService();
  InstrumentService(const InstrumentService&) = delete;
  InstrumentService& operator=(const InstrumentService&) = delete;

  // Answers one serialized HostMessage: begin(), sync, finish(). Never fails:
  // every problem becomes a signed rejection or, for an unusable envelope,
  // DeviceMessage.error.
  Bytes handle(ByteView host_message, UnixTime clock, LinkContext& link);

  // A message between its two phases. Opaque to callers: they keep it and hand
  // it to finish().
  struct Turn {
    Bytes reply;                                               // the answer, unless one below
    std::optional<Decision> execute;                           // authorized: runs in finish()
    std::optional<v1::HostMessage::ExportAudit> export_audit;  // answered in finish()
    Bytes request_hash;                                        // 16 bytes, for a failure answer
    bool changes_state = false;          // install / offer / command: fails with its group
    std::vector<v1::AuditRecord> audit;  // instrument records, appended in finish()
  };
  // Phase 1: parses and decides; everything it changes is staged in the group.
  // Touches no database (the previous group may be being written meanwhile).
  Turn begin(ByteView host_message, UnixTime clock, LinkContext& link);
  // Phase 2, once the group holding `turn` was written (`durable`) or failed:
  // executes an authorized command and returns the answer to send. Only while no
  // group is being written (it uses the database).
  Bytes finish(Turn turn, UnixTime clock, bool durable);
  // Verifying a command's signature ahead, on another thread, while this loop
  // does other work (the gateway then skips that check: VerifiedSignatures).
  // preverify() picks out a command from a known user (on the loop's thread);
  // run() may then run on any thread. Nothing else: a miss only means the
  // gateway verifies the request itself.
  struct Preverify {
    v1::Signed envelope;
    crypto::PublicKey key;
    AlgorithmPolicy policy;
    VerifiedSignatures* into = nullptr;
    void run() { (void)into->verify(envelope, v1::Signed::TYPE_COMMAND_REQUEST, key, policy); }
  };
  std::optional<Preverify> preverify(ByteView host_message) const;

  // After a failed group: reloads the gateway from the database (dropping all it
  // decided since the last durable group). ERROR_STORAGE if that fails too (then
  // every command keeps failing with ERROR_STORAGE until a later recover()).
  Status recover();
  // Writes what is staged now (group_.sync()), recovering on failure: for
  // callers that need it on disk at once. Never while a group is being written.
  Status write_group();

  Gateway& gateway() { return *gateway_; }
  const Gateway& gateway() const { return *gateway_; }
  GroupCommitStorage& group() { return group_; }

  // Appends the KIND_BOOT record (firmware version in `command`).
  Status boot(UnixTime clock);
  // Commits what the gateway holds in memory (responses, queued audit events)
  // and makes the store's lazy writes (execution records, results) durable.
  // The server calls it when idle and before shutdown, never while a group is
  // being written.
  Status idle(UnixTime clock);

  const ServiceStats& stats() const { return stats_; }
  const SimulatedInstrument& instrument() const { return instrument_; }
  const CommandRegistry& registry() const { return registry_; }

 private:
  InstrumentService(SqliteStore& store, GatewaySetup setup, const crypto::PrivateKey& device_key,
                    std::string firmware_version, CommandRegistry registry);
  Result<Gateway> open_gateway();

  Bytes on_status(const v1::HostMessage::GetStatus& m, UnixTime clock);
  void on_install(Turn& turn, const std::string& signed_auth, UnixTime clock, LinkContext& link);
  void on_offer(Turn& turn, const v1::HostMessage::OfferTokens& m, UnixTime clock,
                LinkContext& link);
  void on_command(Turn& turn, const std::string& signed_request, UnixTime clock, LinkContext& link);
  Bytes on_export(const v1::HostMessage::ExportAudit& m, UnixTime clock);
  Bytes execute(Decision& d, UnixTime clock);

  // Signs `response` and returns the serialized Signed bytes (empty on failure).
  Bytes sign(v1::Signed::Type type, const google::protobuf::MessageLite& body);
  Bytes response_message(const v1::CommandResponse& response);
  Bytes rejection(ByteView request_hash16, Error error, UnixTime clock);
  // Feeds the link's back-off: `verified` resets it, an auth failure counts.
  // A KIND_RATE_LIMIT record, when the delay escalates, goes into turn.audit.
  void note_auth_outcome(Turn& turn, Error error, bool verified, UnixTime clock, LinkContext& link);

  SqliteStore& store_;
  GatewaySetup setup_;
  GroupCommitStorage group_;
  // Before gateway_: the gateway points at it.
  mutable VerifiedSignatures verified_;
  std::optional<Gateway> gateway_;
  const crypto::PrivateKey& device_key_;
  std::string firmware_version_;
  CommandRegistry registry_;
  SimulatedInstrument instrument_;
  ServiceStats stats_;
};

// DeviceMessage wrappers (also used by tests and tools).
enum class DeviceMessageKind { kStatus, kResponse, kAuditExport };
Bytes device_message(DeviceMessageKind kind, ByteView signed_bytes);
Bytes device_error_message(Error error);

}  // namespace tollgate::instrument
