#include "instrument/audit.hpp"

#include <google/protobuf/io/coded_stream.h>
#include <google/protobuf/io/zero_copy_stream_impl_lite.h>

#include <algorithm>
#include <string>

#include "gateway/crypto.hpp"

namespace tollgate::instrument {
namespace {

std::string bytes_of(ByteView b) {
  return std::string(as_chars(b));
}

bool all_zero(const Sha256& h) {
  return std::all_of(h.begin(), h.end(), [](std::uint8_t b) { return b == 0; });
}

void explain(std::string* why, std::string text) {
  if (why) *why = std::move(text);
}

}  // namespace

v1::AuditRecord audit_record_from_event(const AuditEvent& event) {
  v1::AuditRecord r;
  switch (event.kind) {
    case AuditEvent::Kind::kInstallAuthorization:
      r.set_kind(v1::AuditRecord::KIND_INSTALL_AUTHORIZATION);
      break;
    case AuditEvent::Kind::kOfferToken:
      r.set_kind(v1::AuditRecord::KIND_OFFER_TOKEN);
      break;
    case AuditEvent::Kind::kAuthorizeCommand:
      r.set_kind(v1::AuditRecord::KIND_COMMAND);
      break;
    case AuditEvent::Kind::kReplay:
      r.set_kind(v1::AuditRecord::KIND_REPLAY);
      break;
    case AuditEvent::Kind::kAuditEventsDropped:
      r.set_kind(v1::AuditRecord::KIND_AUDIT_EVENTS_DROPPED);
      break;
  }
  r.set_time(event.at);
  if (event.kind == AuditEvent::Kind::kAuditEventsDropped) {
    // The gap in the log is itself logged: how many rejections storage lost.
    r.set_accepted(false);
    r.set_reason(v1::ERROR_STORAGE);
    r.set_count(event.count);
    return r;
  }
  r.set_accepted(event.accepted);
  r.set_reason(event.reason);
  r.set_token_id(bytes_of(event.token_id));
  if (!all_zero(event.object_hash)) {
    r.set_request_hash(bytes_of(ByteView(event.object_hash.data(), kAuditRequestHashSize)));
  }
  r.set_command(event.command);
  // A replay is answered from the cache: it never charges, whatever was charged
  // the first time.
  r.set_uses_charged(event.kind == AuditEvent::Kind::kReplay ? 0 : event.uses_charged);
  r.set_uses_left(event.uses_left);
  r.set_authorization_id(event.authorization_id);
  r.set_user_key_id(bytes_of(event.signer_key_id));
  return r;
}

Sha256 audit_record_hash(const v1::AuditRecord& record) {
  v1::AuditRecord body = record;
  body.clear_hash();
  std::string input = record.prev_hash();
  std::string serialized;
  // Deterministic serialization keeps the bytes reproducible by any verifier
  // (the record has no maps, so this is the canonical field order).
  {
    serialized.resize(body.ByteSizeLong());
    google::protobuf::io::ArrayOutputStream array(serialized.data(),
                                                  static_cast<int>(serialized.size()));
    google::protobuf::io::CodedOutputStream out(&array);
    out.SetSerializationDeterministic(true);
    body.SerializeWithCachedSizes(&out);
  }
  input += serialized;
  return crypto::sha256(as_bytes(input));
}

AuditHead chain_audit_record(v1::AuditRecord& record, const AuditHead& prev) {
  record.set_seq(prev.seq + 1);
  record.set_prev_hash(bytes_of(prev.hash));
  record.clear_hash();
  AuditHead head{record.seq(), audit_record_hash(record)};
  record.set_hash(bytes_of(head.hash));
  return head;
}

bool audit_record_follows(const v1::AuditRecord& record, const AuditHead& prev, std::string* why) {
  const std::string seq = std::to_string(record.seq());
  if (record.seq() != prev.seq + 1) {
    explain(why, "record " + seq + " follows record " + std::to_string(prev.seq) + " (expected " +
                     std::to_string(prev.seq + 1) + ")");
    return false;
  }
  if (record.prev_hash() != bytes_of(prev.hash)) {
    explain(why, "record " + seq + ": prev_hash is not the previous record's hash");
    return false;
  }
  const Sha256 h = audit_record_hash(record);
  if (record.hash() != bytes_of(h)) {
    explain(why, "record " + seq + ": hash does not match its contents");
    return false;
  }
  return true;
}

Result<AuditHead> verify_audit_run(std::span<const v1::AuditRecord> records,
                                   std::optional<AuditHead> start, std::string* why) {
  AuditHead head;
  std::size_t i = 0;
  if (start) {
    head = *start;
  } else if (!records.empty()) {
    // The first record's position is taken on trust; its own hash is not.
    const v1::AuditRecord& first = records.front();
    if (first.seq() == 0 || first.prev_hash().size() != kAuditHashSize) {
      explain(why, "record " + std::to_string(first.seq()) + ": bad seq or prev_hash");
      return v1::ERROR_BAD_SIGNATURE;
    }
    head.seq = first.seq() - 1;
    std::copy(first.prev_hash().begin(), first.prev_hash().end(), head.hash.begin());
  }
  for (; i < records.size(); ++i) {
    if (!audit_record_follows(records[i], head, why)) return v1::ERROR_BAD_SIGNATURE;
    head.seq = records[i].seq();
    std::copy(records[i].hash().begin(), records[i].hash().end(), head.hash.begin());
  }
  return head;
}

std::string_view audit_kind_name(v1::AuditRecord::Kind kind) {
  switch (kind) {
    case v1::AuditRecord::KIND_INSTALL_AUTHORIZATION:
      return "install-authorization";
    case v1::AuditRecord::KIND_OFFER_TOKEN:
      return "offer-token";
    case v1::AuditRecord::KIND_COMMAND:
      return "command";
    case v1::AuditRecord::KIND_RATE_LIMIT:
      return "rate-limit";
    case v1::AuditRecord::KIND_BOOT:
      return "boot";
    case v1::AuditRecord::KIND_EXECUTION:
      return "execution";
    case v1::AuditRecord::KIND_REPLAY:
      return "replay";
    case v1::AuditRecord::KIND_AUDIT_EVENTS_DROPPED:
      return "audit-events-dropped";
    default:
      return "unspecified";
  }
}

std::string describe_audit_record(const v1::AuditRecord& r) {
  std::string line = std::to_string(r.seq()) + " t=" + std::to_string(r.time()) + " " +
                     std::string(audit_kind_name(r.kind()));
  if (r.accepted()) {
    line += " accepted";
  } else {
    line += " rejected";
    if (r.reason() != v1::ERROR_UNSPECIFIED)
      line += " (" + std::string(error_name(r.reason())) + ")";
  }
  if (!r.command().empty()) line += " command=" + r.command();
  if (r.authorization_id() != 0) line += " authorization=" + std::to_string(r.authorization_id());
  if (!r.token_id().empty()) {
    line += " token=";
    line += r.token_id().size() == 16 ? uuid_to_string(as_bytes(r.token_id()))
                                      : to_hex(as_bytes(r.token_id()));
  }
  if (r.uses_charged() != 0 || r.uses_left() != 0) {
    line +=
        " charged=" + std::to_string(r.uses_charged()) + " left=" + std::to_string(r.uses_left());
  }
  if (!r.user_key_id().empty()) line += " key=" + to_hex(as_bytes(r.user_key_id()));
  if (!r.request_hash().empty()) line += " request=" + to_hex(as_bytes(r.request_hash()));
  line += " hash=" + to_hex(as_bytes(r.hash())).substr(0, 16);
  return line;
}

}  // namespace tollgate::instrument
