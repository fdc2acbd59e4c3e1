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
#pragma once

#include <cstdint>
#include <string>

#include "gateway/bytes.hpp"
#include "gateway/crypto.hpp"
#include "gateway/gateway.hpp"
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

class InstrumentService {
 public:
  // All references must outlive the service. `store` is the storage `gateway`
  // commits to (results and instrument-only audit records go there too).
  InstrumentService(Gateway& gateway, SqliteStore& store, const crypto::PrivateKey& device_key,
                    std::string firmware_version, CommandRegistry registry);

  // Answers one serialized HostMessage. Never fails: every problem becomes a
  // signed rejection or, for an unusable envelope, DeviceMessage.error.
  Bytes handle(ByteView host_message, UnixTime clock, LinkContext& link);

  // Appends the KIND_BOOT record (firmware version in `command`).
  Status boot(UnixTime clock);
  // Commits what the gateway holds in memory (responses, queued audit events)
  // and makes the store's lazy writes (execution records, results) durable.
  // The server calls it when idle and before shutdown.
  Status idle(UnixTime clock);

  const ServiceStats& stats() const { return stats_; }
  const SimulatedInstrument& instrument() const { return instrument_; }
  const CommandRegistry& registry() const { return registry_; }

 private:
  Bytes on_status(const v1::HostMessage::GetStatus& m, UnixTime clock);
  Bytes on_install(const std::string& signed_auth, UnixTime clock, LinkContext& link);
  Bytes on_offer(const v1::HostMessage::OfferTokens& m, UnixTime clock, LinkContext& link);
  Bytes on_command(const std::string& signed_request, UnixTime clock, LinkContext& link);
  Bytes on_export(const v1::HostMessage::ExportAudit& m, UnixTime clock);

  // Signs `response` and returns the serialized Signed bytes (empty on failure).
  Bytes sign(v1::Signed::Type type, const google::protobuf::MessageLite& body);
  Bytes response_message(const v1::CommandResponse& response);
  Bytes rejection(ByteView request_hash16, Error error, UnixTime clock);
  // Feeds the link's back-off: `verified` resets it, an auth failure counts.
  void note_auth_outcome(Error error, bool verified, UnixTime clock, LinkContext& link);

  Gateway& gateway_;
  SqliteStore& store_;
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
