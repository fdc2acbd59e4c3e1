#include "instrument/service.hpp"

#include <algorithm>
#include <utility>

#include "gateway/signed.hpp"

namespace tollgate::instrument {
namespace {

std::string str(ByteView b) {
  return std::string(as_chars(b));
}

Bytes hash16(ByteView bytes) {
  auto h = crypto::sha256(bytes);
  return Bytes(h.begin(), h.begin() + kRequestHashSize);
}

Bytes to_bytes(const std::string& s) {
  return Bytes(s.begin(), s.end());
}

// Rejections that happen before a signature is checked (or for reasons that
// say nothing about the signer): they neither count against the link nor
// prove the sender holds a key.
bool is_neutral(Error e) {
  switch (e) {
    case v1::ERROR_MALFORMED:
    case v1::ERROR_TOO_LARGE:
    case v1::ERROR_WRONG_TYPE:
    case v1::ERROR_STORAGE:
    case v1::ERROR_INTERNAL:
    case v1::ERROR_LIMIT_REACHED:
      return true;
    default:
      return false;
  }
}

}  // namespace

Bytes device_message(DeviceMessageKind kind, ByteView signed_bytes) {
  v1::DeviceMessage m;
  switch (kind) {
    case DeviceMessageKind::kStatus:
      m.set_status(str(signed_bytes));
      break;
    case DeviceMessageKind::kResponse:
      m.set_response(str(signed_bytes));
      break;
    case DeviceMessageKind::kAuditExport:
      m.set_audit_export(str(signed_bytes));
      break;
  }
  return to_bytes(m.SerializeAsString());
}

Bytes device_error_message(Error error) {
  v1::DeviceMessage m;
  m.set_error(error);
  return to_bytes(m.SerializeAsString());
}

InstrumentService::InstrumentService(SqliteStore& store, GatewaySetup setup,
                                     const crypto::PrivateKey& device_key,
                                     std::string firmware_version, CommandRegistry registry)
    : store_(store),
      setup_(std::move(setup)),
      group_(store),
      device_key_(device_key),
      firmware_version_(std::move(firmware_version)),
      registry_(std::move(registry)) {}

InstrumentService::~InstrumentService() = default;

Result<std::unique_ptr<InstrumentService>> InstrumentService::open(
    SqliteStore& store, GatewaySetup setup, const crypto::PrivateKey& device_key,
    std::string firmware_version, CommandRegistry registry) {
  std::unique_ptr<InstrumentService> s(new InstrumentService(
      store, std::move(setup), device_key, std::move(firmware_version), std::move(registry)));
  auto g = s->open_gateway();
  if (!g) return g.error();
  s->gateway_.emplace(std::move(*g));
  return s;
}

Result<Gateway> InstrumentService::open_gateway() {
  std::vector<crypto::PublicKey> masters;
  for (const auto& m : setup_.master_keys) masters.push_back(m.clone());
  auto g =
      Gateway::open(setup_.device_id, std::move(masters), setup_.policy, group_, setup_.random);
  if (g) g->use_verified_signatures(&verified_);
  return g;
}

std::optional<InstrumentService::Preverify> InstrumentService::preverify(
    ByteView host_message) const {
  if (host_message.size() > kMaxHostMessageSize) return std::nullopt;
  v1::HostMessage m;
  if (!m.ParseFromArray(host_message.data(), static_cast<int>(host_message.size())) ||
      m.kind_case() != v1::HostMessage::kCommand) {
    return std::nullopt;
  }
  auto env = parse_signed(as_bytes(m.command()));
  if (!env || env->type() != v1::Signed::TYPE_COMMAND_REQUEST ||
      env->signer_key_id().size() != crypto::KeyId{}.size()) {
    return std::nullopt;
  }
  crypto::KeyId signer{};
  std::copy(env->signer_key_id().begin(), env->signer_key_id().end(), signer.begin());
  auto key = gateway_->user_key(signer);
  if (!key) return std::nullopt;
  return Preverify{std::move(*env), std::move(*key), gateway_->policy().user_algorithms,
                   &verified_};
}

Status InstrumentService::recover() {
  auto g = open_gateway();
  if (!g) {
    // The old gateway's memory is ahead of the disk: refuse every commit (so
    // every command) until a later recover() succeeds.
    group_.mark_failed();
    return g.error();
  }
  *gateway_ = std::move(*g);
  return {};
}

Status InstrumentService::boot(UnixTime clock) {
  v1::AuditRecord r;
  r.set_time(gateway_->now(clock));
  r.set_kind(v1::AuditRecord::KIND_BOOT);
  r.set_accepted(true);
  r.set_command(firmware_version_);
  auto head = store_.append_audit({std::move(r)});
  if (!head) return head.error();
  return {};
}

Status InstrumentService::idle(UnixTime clock) {
  if (group_.failed()) {
    if (Status st = recover(); !st) return st;
  }
  Status flushed = gateway_->flush(clock);
  if (flushed) flushed = write_group();
  Status synced = store_.sync();
  return flushed ? synced : flushed;
}

Bytes InstrumentService::sign(v1::Signed::Type type, const google::protobuf::MessageLite& body) {
  std::string raw = body.SerializeAsString();
  auto s = sign_object(type, as_bytes(raw), device_key_);
  if (!s) return {};
  return to_bytes(s->SerializeAsString());
}

Bytes InstrumentService::response_message(const v1::CommandResponse& response) {
  Bytes signed_bytes = sign(v1::Signed::TYPE_COMMAND_RESPONSE, response);
  if (signed_bytes.empty()) return device_error_message(v1::ERROR_INTERNAL);
  return device_message(DeviceMessageKind::kResponse, signed_bytes);
}

Bytes InstrumentService::rejection(ByteView request_hash16, Error error, UnixTime clock) {
  ++stats_.rejections;
  v1::CommandResponse r;
  r.set_request_hash(str(request_hash16));
  r.set_status(v1::CommandResponse::STATUS_REJECTED);
  r.set_error(error);
  r.set_next_nonce(str(gateway_->issue_nonce(clock)));
  return response_message(r);
}

void InstrumentService::note_auth_outcome(Turn& turn, Error error, bool verified, UnixTime clock,
                                          LinkContext& link) {
  if (verified) {
    link.backoff.on_verified();
    return;
  }
  if (!counts_as_auth_failure(error)) return;
  auto step = link.backoff.on_failure(link.monotonic_us);
  link.reply_delay_us = step.delay_us;
  if (step.delay_us > 0) ++stats_.delayed_replies;
  if (!step.escalated) return;
  v1::AuditRecord r;
  r.set_time(gateway_->now(clock));
  r.set_kind(v1::AuditRecord::KIND_RATE_LIMIT);
  r.set_accepted(false);
  r.set_reason(error);
  r.set_command("delay_ms=" + std::to_string(step.delay_us / 1000) +
                " failures=" + std::to_string(step.failures) + " link=" + link.name);
  turn.audit.push_back(std::move(r));
}

Bytes InstrumentService::handle(ByteView host_message, UnixTime clock, LinkContext& link) {
  Turn turn = begin(host_message, clock, link);
  const bool durable = write_group().ok();
  return finish(std::move(turn), clock, durable);
}

Status InstrumentService::write_group() {
  Status st = group_.sync();
  if (!st && group_.failed()) (void)recover();
  return st;
}

InstrumentService::Turn InstrumentService::begin(ByteView host_message, UnixTime clock,
                                                 LinkContext& link) {
  ++stats_.messages;
  link.reply_delay_us = 0;
  Turn turn;
  if (host_message.size() > kMaxHostMessageSize) {
    turn.reply = device_error_message(v1::ERROR_TOO_LARGE);
    return turn;
  }
  v1::HostMessage m;
  if (!m.ParseFromArray(host_message.data(), static_cast<int>(host_message.size()))) {
    turn.reply = device_error_message(v1::ERROR_MALFORMED);
    return turn;
  }
  switch (m.kind_case()) {
    case v1::HostMessage::kGetStatus:
      turn.reply = on_status(m.get_status(), clock);
      return turn;
    case v1::HostMessage::kInstallAuthorization:
      on_install(turn, m.install_authorization(), clock, link);
      return turn;
    case v1::HostMessage::kOfferTokens:
      on_offer(turn, m.offer_tokens(), clock, link);
      return turn;
    case v1::HostMessage::kCommand:
      on_command(turn, m.command(), clock, link);
      return turn;
    case v1::HostMessage::kExportAudit:
      turn.export_audit = m.export_audit();
      return turn;
    case v1::HostMessage::KIND_NOT_SET:
      break;
  }
  turn.reply = device_error_message(v1::ERROR_MALFORMED);
  return turn;
}

Bytes InstrumentService::finish(Turn turn, UnixTime clock, bool durable) {
  // Rate-limit records: a failed append only loses the record of the slowdown;
  // the slowdown holds.
  if (!turn.audit.empty()) (void)store_.append_audit(std::move(turn.audit));
  if (turn.export_audit) return on_export(*turn.export_audit, clock);
  if (!durable && turn.changes_state) {
    // Its charge (or install, or offer) was never written: nothing ran, and the
    // host may send the same bytes again.
    return rejection(turn.request_hash, v1::ERROR_STORAGE, clock);
  }
  if (turn.execute) return execute(*turn.execute, clock);
  return std::move(turn.reply);
}

Bytes InstrumentService::on_status(const v1::HostMessage::GetStatus& g, UnixTime clock) {
  // The challenge only proves freshness; a long one would just make us sign junk.
  if (g.challenge().size() > 64) return device_error_message(v1::ERROR_TOO_LARGE);
  v1::StatusReport r;
  r.set_device_id(str(gateway_->device_id()));
  r.set_device_public_key(str(device_key_.public_key().spki_der()));
  r.set_firmware_version(firmware_version_);
  for (const auto& [id, bytes] : gateway_->state().authorizations) {
    auto* a = r.add_authorizations();
    a->set_id(id);
    // Installed authorizations verified on the way in; parsing them again only
    // recovers their fields.
    auto s = parse_signed(bytes);
    v1::CloudKeyAuthorization body;
    if (s && body.ParseFromString(s->body())) {
      a->set_not_after(body.not_after());
      if (auto key = crypto::PublicKey::from_spki_der(as_bytes(body.cloud_public_key())); key) {
        a->set_cloud_key_id(std::string(key->id().begin(), key->id().end()));
      }
    }
  }
  for (auto id : gateway_->state().revoked_ids) r.add_revoked_ids(id);
  r.set_device_time(gateway_->now(clock));
  r.set_nonce(str(gateway_->issue_nonce(clock)));
  r.set_challenge(g.challenge());
  Bytes signed_bytes = sign(v1::Signed::TYPE_STATUS_RESPONSE, r);
  if (signed_bytes.empty()) return device_error_message(v1::ERROR_INTERNAL);
  return device_message(DeviceMessageKind::kStatus, signed_bytes);
}

void InstrumentService::on_install(Turn& turn, const std::string& signed_auth, UnixTime clock,
                                   LinkContext& link) {
  ByteView bytes = as_bytes(signed_auth);
  turn.request_hash = hash16(bytes);
  turn.changes_state = true;
  auto result = gateway_->install_authorization(bytes, clock);
  Error e = result.error();
  // Past the master signature: these reasons are only reached with a genuine object.
  bool verified = result.ok() || e == v1::ERROR_REVOKED || e == v1::ERROR_EXPIRED ||
                  e == v1::ERROR_NOT_YET_VALID;
  note_auth_outcome(turn, e, verified, clock, link);
  if (!result) {
    turn.reply = rejection(turn.request_hash, e, clock);
    return;
  }
  v1::CommandResponse r;
  r.set_request_hash(str(turn.request_hash));
  r.set_status(v1::CommandResponse::STATUS_OK);
  r.set_next_nonce(str(gateway_->issue_nonce(clock)));
  turn.reply = response_message(r);
}

void InstrumentService::on_offer(Turn& turn, const v1::HostMessage::OfferTokens& offer,
                                 UnixTime clock, LinkContext& link) {
  Bytes h = hash16(as_bytes(offer.SerializeAsString()));
  turn.request_hash = h;
  if (offer.tokens_size() == 0) {
    turn.reply = rejection(h, v1::ERROR_MALFORMED, clock);
    return;
  }
  if (static_cast<std::size_t>(offer.tokens_size()) > kMaxTokensPerOffer) {
    turn.reply = rejection(h, v1::ERROR_TOO_LARGE, clock);
    return;
  }
  turn.changes_state = true;
  v1::TokenOfferResult outcomes;
  Error first_error = v1::ERROR_UNSPECIFIED;
  bool any_accepted = false;
  for (const auto& token : offer.tokens()) {
    auto* o = outcomes.add_outcomes();
    auto info = gateway_->offer_token(as_bytes(token), clock);
    if (info) {
      any_accepted = true;
      o->set_token_id(info->token.token_id());
      o->set_uses_left(info->uses_left);
      continue;
    }
    o->set_error(info.error());
    if (first_error == v1::ERROR_UNSPECIFIED) first_error = info.error();
    // Echo the id the token claims, so the host can tell its outcomes apart;
    // nothing else of an unverified token is used.
    if (auto s = parse_signed(as_bytes(token)); s) {
      v1::DeviceToken body;
      if (body.ParseFromString(s->body()) && body.token_id().size() == kUuidSize) {
        o->set_token_id(body.token_id());
      }
    }
  }
  note_auth_outcome(turn, first_error, any_accepted, clock, link);
  v1::CommandResponse r;
  r.set_request_hash(str(h));
  if (any_accepted) {
    r.set_status(v1::CommandResponse::STATUS_OK);
  } else {
    ++stats_.rejections;
    r.set_status(v1::CommandResponse::STATUS_REJECTED);
    r.set_error(first_error);
  }
  r.set_result(outcomes.SerializeAsString());
  r.set_next_nonce(str(gateway_->issue_nonce(clock)));
  turn.reply = response_message(r);
}

void InstrumentService::on_command(Turn& turn, const std::string& signed_request, UnixTime clock,
                                   LinkContext& link) {
  ByteView bytes = as_bytes(signed_request);
  turn.request_hash = hash16(bytes);
  turn.changes_state = true;
  auto decision = gateway_->authorize_command(bytes, clock, registry_.rules());
  if (!decision) {
    Error e = decision.error();
    note_auth_outcome(turn, e, !counts_as_auth_failure(e) && !is_neutral(e), clock, link);
    turn.reply = rejection(turn.request_hash, e, clock);
    return;
  }
  note_auth_outcome(turn, v1::ERROR_UNSPECIFIED, true, clock, link);
  Decision& d = *decision;
  ByteView request_hash(d.request_hash.data(), kRequestHashSize);

  if (d.kind == Decision::Kind::kReplay) {
    turn.reply = device_message(DeviceMessageKind::kResponse, d.stored_response);
    return;
  }

  if (d.kind == Decision::Kind::kInterrupted) {
    // Charged before a power cut, never answered: it may or may not have run,
    // and it must not run twice. Say so, and keep saying it on every retry.
    v1::CommandResponse r;
    r.set_request_hash(str(request_hash));
    r.set_uses_left(d.uses_left);
    r.set_status(v1::CommandResponse::STATUS_FAILED);
    r.set_error(v1::ERROR_COMMAND_FAILED);
    r.set_result("interrupted");
    r.set_next_nonce(str(gateway_->issue_nonce(clock)));
    Bytes signed_bytes = sign(v1::Signed::TYPE_COMMAND_RESPONSE, r);
    if (signed_bytes.empty()) {
      turn.reply = device_error_message(v1::ERROR_INTERNAL);
      return;
    }
    (void)gateway_->complete_request(d.key, signed_bytes);
    turn.reply = device_message(DeviceMessageKind::kResponse, signed_bytes);
    return;
  }
  // kExecute: charged, but only staged; it runs in finish() once durable.
  turn.execute = std::move(d);
}

Bytes InstrumentService::execute(Decision& d, UnixTime clock) {
  ByteView request_hash(d.request_hash.data(), kRequestHashSize);
  v1::CommandResponse r;
  r.set_request_hash(str(request_hash));
  r.set_uses_left(d.uses_left);

  // The charge and its audit record are durable (the group was written): run it.
  UnixTime now = gateway_->now(clock);
  v1::AuditRecord execution;
  execution.set_time(now);
  execution.set_kind(v1::AuditRecord::KIND_EXECUTION);
  execution.set_accepted(true);
  execution.set_token_id(str(d.token_id));
  execution.set_request_hash(str(request_hash));
  execution.set_command(d.request.command());
  execution.set_uses_charged(d.cost);
  execution.set_uses_left(d.uses_left);
  execution.set_user_key_id(std::string(d.key.signer.begin(), d.key.signer.end()));

  CommandOutcome outcome;
  const CommandSpec* spec = registry_.find(d.request.command());
  CommandContext ctx{now, d, gateway_->state(), &store_, instrument_, execution, false};
  if (spec == nullptr) {
    outcome = CommandOutcome::failed(v1::ERROR_COMMAND_FAILED, "no handler");
  } else {
    outcome = spec->handler(ctx, d.request.arguments());
  }
  ++stats_.executions;
  if (!ctx.execution_recorded) {
    execution.set_accepted(outcome.error == v1::ERROR_UNSPECIFIED);
    if (outcome.error != v1::ERROR_UNSPECIFIED) execution.set_reason(outcome.error);
    // Lazy: made durable by the next charge, the idle flush or an export. The
    // charge is already durable; a power cut losing this record only under-reports.
    (void)store_.append_audit({std::move(execution)}, Durability::kLazy);
  }

  if (outcome.error == v1::ERROR_UNSPECIFIED) {
    r.set_status(v1::CommandResponse::STATUS_OK);
  } else {
    r.set_status(v1::CommandResponse::STATUS_FAILED);
    r.set_error(outcome.error);
  }
  r.set_result(std::move(outcome.result));
  r.set_next_nonce(str(d.next_nonce));
  Bytes signed_bytes = sign(v1::Signed::TYPE_COMMAND_RESPONSE, r);
  if (signed_bytes.empty()) return device_error_message(v1::ERROR_INTERNAL);
  // A retry with the same bytes gets exactly this answer, never a second run.
  (void)gateway_->complete_request(d.key, signed_bytes);
  return device_message(DeviceMessageKind::kResponse, signed_bytes);
}

Bytes InstrumentService::on_export(const v1::HostMessage::ExportAudit& m, UnixTime clock) {
  // Events of rejections still waiting in memory belong in the export: write
  // them (and whatever else is staged) now.
  if (gateway_->flush(clock).ok()) (void)write_group();
  std::size_t max = m.max_records() == 0
                        ? kMaxAuditRecordsPerExport
                        : std::min<std::size_t>(m.max_records(), kMaxAuditRecordsPerExport);
  auto records = store_.audit_records(m.from_seq(), max);
  if (!records) return device_error_message(records.error());
  v1::AuditExport e;
  e.set_device_id(str(gateway_->device_id()));
  for (auto& r : *records) *e.add_records() = std::move(r);
  auto head = store_.audit_head();
  e.set_head_hash(std::string(head.hash.begin(), head.hash.end()));
  // Leave room for the envelope: drop records from the end until it fits.
  while (e.records_size() > 0 && e.ByteSizeLong() > kMaxSignedObjectSize - 512) {
    e.mutable_records()->RemoveLast();
  }
  e.set_next_seq(e.records_size() > 0 ? e.records(e.records_size() - 1).seq() + 1
                                      : std::max<std::uint64_t>(m.from_seq(), 1));
  Bytes signed_bytes = sign(v1::Signed::TYPE_AUDIT_EXPORT, e);
  if (signed_bytes.empty()) return device_error_message(v1::ERROR_INTERNAL);
  return device_message(DeviceMessageKind::kAuditExport, signed_bytes);
}

}  // namespace tollgate::instrument
