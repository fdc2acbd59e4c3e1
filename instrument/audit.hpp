// The audit log's record format and hash chain, without storage: the store
// chains records as it appends them, and anyone holding exported records (the
// host, the cloud reconciling usage) verifies them with the same functions.
//
// Chain rule (docs/PROTOCOL.md "Audit log"):
//   record.seq       1, 2, 3, ... with no gaps
//   record.prev_hash the previous record's hash; 32 zero bytes for seq 1
//   record.hash      SHA-256(prev_hash || record serialized with `hash` empty)
// Serialization is protobuf's (fields in number order, no unknown fields), which
// any conforming implementation reproduces from the parsed record.
//
// The chain proves order and integrity relative to a trusted head: editing,
// deleting, inserting or reordering a record breaks every later link. Cutting
// off the tail is only visible against a head seen earlier (the store keeps its
// head beside the log; an exporter signs the head it reports).
#pragma once

#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <string_view>

#include "gateway/result.hpp"
#include "gateway/storage.hpp"

namespace tollgate::instrument {

constexpr std::size_t kAuditHashSize = 32;
constexpr std::size_t kAuditRequestHashSize = 16;  // first bytes of AuditEvent::object_hash

// The newest record of a log: seq 0 and a zero hash for an empty log.
struct AuditHead {
  std::uint64_t seq = 0;
  Sha256 hash{};
  bool operator==(const AuditHead&) const = default;
};

// The audit record of a gateway decision (not yet chained: seq, prev_hash and
// hash are left empty). Mapping:
//   kInstallAuthorization -> KIND_INSTALL_AUTHORIZATION
//   kOfferToken           -> KIND_OFFER_TOKEN
//   kAuthorizeCommand     -> KIND_COMMAND
//   kReplay               -> KIND_COMMAND, accepted, uses_charged 0 (a retry
//                            answered from the idempotency cache; no charge)
//   kAuditEventsDropped   -> KIND_UNSPECIFIED, not accepted, reason ERROR_STORAGE
//                            (`count` has no field in the wire record yet)
// time = at; request_hash = first 16 bytes of object_hash (empty when the hash is
// all zero); user_key_id = signer_key_id (the object's signer: master key for an
// authorization, cloud key for a token, user key for a command).
v1::AuditRecord audit_record_from_event(const AuditEvent& event);

// SHA-256(prev_hash || record serialized with `hash` empty), over the record's
// own prev_hash field.
Sha256 audit_record_hash(const v1::AuditRecord& record);

// Gives `record` its place after `prev`: seq = prev.seq + 1, prev_hash =
// prev.hash, hash computed. Returns the new head.
AuditHead chain_audit_record(v1::AuditRecord& record, const AuditHead& prev);

// True when `record` is the valid successor of `prev`: its seq, prev_hash and
// hash hold. Otherwise false, and `why` names the seq and the field.
bool audit_record_follows(const v1::AuditRecord& record, const AuditHead& prev,
                          std::string* why = nullptr);

// Checks a run of consecutive records (e.g. one export page). With `start`, the
// first record must follow it; without, the first record's own seq and
// prev_hash are taken on trust and only the links inside the run are checked.
// Returns the head after the last record, or ERROR_BAD_SIGNATURE (why says where).
Result<AuditHead> verify_audit_run(std::span<const v1::AuditRecord> records,
                                   std::optional<AuditHead> start = std::nullopt,
                                   std::string* why = nullptr);

// "install-authorization" | "offer-token" | "command" | "rate-limit" | "boot" |
// "execution" | "unspecified"
std::string_view audit_kind_name(v1::AuditRecord::Kind kind);

// One human-readable line: seq, time, kind, accepted/rejected (reason), command,
// uses, token and key ids (hex), hash prefix. For `tollgate-instrument audit`.
std::string describe_audit_record(const v1::AuditRecord& record);

}  // namespace tollgate::instrument
