#include "hostpc/client.hpp"

#include <utility>

#include "gateway/signed.hpp"

// GCC 12 flags coroutine frame allocation (asio's recycling allocator) as
// mismatched with its operator delete: a known false positive on coroutine ramps.
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic ignored "-Wmismatched-new-delete"
#endif

namespace tollgate::host {
namespace asio = boost::asio;
using transport::link_error_name;
using transport::LinkError;

namespace {

Failure forged(Error e, const std::string& what) {
  return Failure{Outcome::kForged, e, what + ": " + std::string(error_name(e))};
}
Failure storage(const TokenCache& cache) {
  return Failure{Outcome::kLocal, v1::ERROR_STORAGE, "token cache: " + cache.last_error()};
}
std::string short_id(ByteView id) {
  return uuid_to_string(id);
}

}  // namespace

int exit_code(Outcome o) {
  switch (o) {
    case Outcome::kOk:
      return kExitOk;
    case Outcome::kDenied:
      return kExitDenied;
    case Outcome::kNoToken:
      return kExitNoToken;
    case Outcome::kLink:
      return kExitLink;
    case Outcome::kForged:
      return kExitForged;
    case Outcome::kLocal:
      return kExitUsage;
  }
  return kExitUsage;
}

HostClient::HostClient(transport::MessageLink& link, TokenCache& cache, ClientOptions options,
                       std::function<UnixSeconds()> now)
    : link_(link), cache_(cache), options_(options), now_(std::move(now)) {}

asio::awaitable<Step<v1::DeviceMessage>> HostClient::exchange(
    const v1::HostMessage& message, const std::function<bool(const v1::DeviceMessage&)>& is_stale) {
  const std::string text = message.SerializeAsString();
  const std::vector<std::uint8_t> bytes(text.begin(), text.end());
  std::string last = "no answer";
  std::size_t stale = 0;
  for (int attempt = 0; attempt <= options_.max_resends; ++attempt) {
    auto sent = co_await link_.send(bytes, options_.timeout);
    if (sent.index() == 1) {
      const LinkError e = std::get<1>(sent);
      last = "send: " + std::string(link_error_name(e));
      if (e == LinkError::kDeadline || e == LinkError::kTimeoutAs || e == LinkError::kTimeoutBs ||
          e == LinkError::kWaitLimit || e == LinkError::kTransmitFailed) {
        continue;
      }
      co_return Failure{Outcome::kLink, v1::ERROR_UNSPECIFIED, link_.describe() + ": " + last};
    }
    for (;;) {
      auto got = co_await link_.receive(options_.timeout);
      if (got.index() == 1) {
        const LinkError e = std::get<1>(got);
        last = "receive: " + std::string(link_error_name(e));
        if (e == LinkError::kClosed || e == LinkError::kIo || e == LinkError::kInvalidArgument) {
          co_return Failure{Outcome::kLink, v1::ERROR_UNSPECIFIED, link_.describe() + ": " + last};
        }
        // Lost or damaged answer: the same bytes again make the device replay
        // its stored response rather than act twice.
        break;
      }
      const auto& reply = std::get<0>(got);
      v1::DeviceMessage dm;
      if (!dm.ParseFromArray(reply.data(), static_cast<int>(reply.size())) ||
          dm.kind_case() == v1::DeviceMessage::KIND_NOT_SET) {
        last = "unparseable answer";
        break;
      }
      // A late duplicate of an earlier answer (the device answered both the
      // original and our resend) is genuine but not ours: keep listening.
      if (is_stale && is_stale(dm) && ++stale <= kMaxStaleAnswers) continue;
      co_return dm;
    }
  }
  co_return Failure{Outcome::kLink, v1::ERROR_UNSPECIFIED,
                    link_.describe() + ": " + last + " after " +
                        std::to_string(options_.max_resends + 1) + " tries"};
}

asio::awaitable<Step<v1::CommandResponse>> HostClient::signed_exchange(
    const v1::HostMessage& message, ByteView hashed_part) {
  const Bytes hash = request_hash(hashed_part);
  const crypto::PublicKey& key = *device_key_;
  std::size_t other_requests = 0;
  auto is_stale = [&key, &hash, &other_requests](const v1::DeviceMessage& m) {
    // A status report never answers a command, offer or install: it is a
    // late duplicate of an earlier get_status.
    if (m.kind_case() == v1::DeviceMessage::kStatus) return true;
    if (m.kind_case() != v1::DeviceMessage::kResponse) return false;
    // The same request may have been sent before (an offer repeated after an
    // install): an answer that fits this request is never stale.
    if (verify_response(as_bytes(m.response()), hash, key).ok()) return false;
    // Genuinely signed by the device but for another request: a late answer to
    // one sent earlier, by this client or by an earlier run that gave up waiting
    // (a device slowed by back-off answers after the deadline). Not a forgery.
    auto envelope = parse_signed(as_bytes(m.response()));
    const bool genuine =
        envelope && verify_and_parse<v1::CommandResponse>(
                        *envelope, v1::Signed::TYPE_COMMAND_RESPONSE, key, AlgorithmPolicy{})
                        .ok();
    if (genuine) ++other_requests;
    return genuine;
  };
  auto dm = co_await exchange(message, is_stale);
  if (dm.index() == 1) {
    // Nothing answered this request, but genuine answers to other ones kept
    // coming: replayed or misrouted, and never to be taken for ours.
    if (std::get<1>(dm).outcome == Outcome::kLink && other_requests > 0) {
      co_return forged(v1::ERROR_BAD_SIGNATURE,
                       "the device's answers were all bound to other requests (replayed?)");
    }
    co_return std::get<1>(std::move(dm));
  }
  const auto& m = std::get<0>(dm);
  if (m.kind_case() == v1::DeviceMessage::kError) {
    co_return Failure{Outcome::kDenied, m.error(),
                      "device refused the message: " + std::string(error_name(m.error()))};
  }
  if (m.kind_case() != v1::DeviceMessage::kResponse) {
    co_return forged(v1::ERROR_WRONG_TYPE, "device answered with the wrong kind of message");
  }
  auto r = verify_response(as_bytes(m.response()), hash, *device_key_);
  if (!r) co_return forged(r.error(), "response refused");
  if (auto st = remember_nonce(r->next_nonce()); !st) co_return storage(cache_);
  co_return std::move(*r);
}

Status HostClient::remember_nonce(const std::string& nonce) {
  nonce_.assign(nonce.begin(), nonce.end());
  if (device_id_.empty()) return {};
  return cache_.set_nonce(device_id_, nonce_, now_());
}

asio::awaitable<Step<StatusReply>> HostClient::status() {
  const Bytes challenge = crypto::random_bytes(kChallengeSize);
  v1::HostMessage msg;
  msg.mutable_get_status()->set_challenge(std::string(as_chars(challenge)));
  auto is_stale = [&challenge](const v1::DeviceMessage& m) {
    // Earlier answers still in flight: a command response, or a report that
    // echoes another challenge. Skipping one only makes us wait longer, which
    // anyone on the bus could cause anyway; nothing here is believed.
    if (m.kind_case() == v1::DeviceMessage::kResponse) return true;
    if (m.kind_case() != v1::DeviceMessage::kStatus) return false;
    v1::Signed envelope;
    v1::StatusReport report;
    return envelope.ParseFromString(m.status()) && report.ParseFromString(envelope.body()) &&
           !constant_time_equal(as_bytes(report.challenge()), challenge);
  };
  auto dm = co_await exchange(msg, is_stale);
  if (dm.index() == 1) co_return std::get<1>(std::move(dm));
  const auto& m = std::get<0>(dm);
  if (m.kind_case() == v1::DeviceMessage::kError) {
    co_return Failure{Outcome::kDenied, m.error(),
                      "device refused get_status: " + std::string(error_name(m.error()))};
  }
  if (m.kind_case() != v1::DeviceMessage::kStatus) {
    co_return forged(v1::ERROR_WRONG_TYPE, "device answered get_status with another message");
  }
  // Self-verify first to learn which device this claims to be, then hold it
  // to the pin (if any): a report under any other key is refused.
  auto self = verify_status(as_bytes(m.status()), challenge, nullptr);
  if (!self) co_return forged(self.error(), "status report refused");
  auto pin = cache_.device(as_bytes(self->device_id()));
  if (!pin) co_return storage(cache_);
  StatusReply reply;
  if (pin->has_value()) {
    auto key = crypto::PublicKey::from_spki_der((*pin)->public_key);
    if (!key) co_return forged(key.error(), "pinned key in the cache is unreadable");
    auto r = verify_status(as_bytes(m.status()), challenge, &*key);
    if (!r) {
      co_return forged(r.error(), "device " + short_id(as_bytes(self->device_id())) +
                                      " answered under a key other than the pinned one");
    }
    reply.report = std::move(*r);
    reply.pinned = true;
  } else {
    reply.report = std::move(*self);
  }
  co_return reply;
}

asio::awaitable<Step<StatusReply>> HostClient::pair(const std::string& endpoint) {
  auto st = co_await status();
  if (st.index() == 1) co_return st;
  const auto& report = std::get<0>(st).report;
  DeviceRecord rec;
  if (auto old = cache_.device(as_bytes(report.device_id())); !old) {
    co_return storage(cache_);
  } else if (old->has_value()) {
    rec = **old;
  }
  rec.device_id = Bytes(report.device_id().begin(), report.device_id().end());
  rec.public_key = Bytes(report.device_public_key().begin(), report.device_public_key().end());
  rec.firmware = report.firmware_version();
  rec.endpoint = endpoint;
  rec.last_nonce = Bytes(report.nonce().begin(), report.nonce().end());
  rec.nonce_time = now_();
  if (auto s = cache_.put_device(rec); !s) co_return storage(cache_);
  co_return st;
}

asio::awaitable<Step<Bytes>> HostClient::fresh_nonce() {
  auto st = co_await status();
  if (st.index() == 1) co_return std::get<1>(std::move(st));
  auto& reply = std::get<0>(st);
  const Bytes reported(reply.report.device_id().begin(), reply.report.device_id().end());
  if (!reply.pinned || reported != device_id_) {
    co_return forged(
        v1::ERROR_WRONG_DEVICE,
        "the device on " + link_.describe() + " is not the paired device " + short_id(device_id_));
  }
  if (auto s = remember_nonce(reply.report.nonce()); !s) co_return storage(cache_);
  co_return nonce_;
}

asio::awaitable<Step<v1::TokenOfferResult::Outcome>> HostClient::offer(const CachedToken& token) {
  v1::HostMessage msg;
  msg.mutable_offer_tokens()->add_tokens(std::string(as_chars(token.bytes)));
  const std::string hashed = msg.offer_tokens().SerializeAsString();
  ++rounds_;
  auto r = co_await signed_exchange(msg, as_bytes(hashed));
  if (r.index() == 1) co_return std::get<1>(std::move(r));
  const auto& resp = std::get<0>(r);
  v1::TokenOfferResult result;
  if (!result.ParseFromString(resp.result()) || result.outcomes_size() != 1) {
    // Signed by the device, yet not the answer to one offered token.
    co_return forged(v1::ERROR_MALFORMED, "offer result does not match the offer");
  }
  co_return result.outcomes(0);
}

asio::awaitable<Step<bool>> HostClient::offer_next(RunReport& report) {
  while (rounds_ < options_.max_rounds) {
    auto candidates = cache_.usable(device_id_, user_id_, now_(), offered_.size() + 1);
    if (!candidates) co_return storage(cache_);
    const CachedToken* next = nullptr;
    for (const auto& t : *candidates) {
      if (!offered_.count(t.token_id)) {
        next = &t;
        break;
      }
    }
    if (next == nullptr) co_return false;
    const CachedToken token = *next;
    offered_.insert(token.token_id);
    auto o = co_await offer(token);
    if (o.index() == 1) co_return std::get<1>(std::move(o));
    auto outcome = std::get<0>(o);

    if (outcome.error() == v1::ERROR_AUTHORIZATION_NOT_INSTALLED &&
        !installed_.count(token.authorization_id)) {
      installed_.insert(token.authorization_id);
      auto auth = cache_.authorization(token.authorization_id);
      if (!auth) co_return storage(cache_);
      if (!auth->has_value()) {
        report.notes.push_back("token " + short_id(token.token_id) + ": authorization " +
                               std::to_string(token.authorization_id) + " is not cached; skipped");
        last_refusal_ = outcome.error();
        continue;
      }
      v1::HostMessage install;
      install.set_install_authorization(std::string(as_chars((*auth)->bytes)));
      ++rounds_;
      auto ir = co_await signed_exchange(install, (*auth)->bytes);
      if (ir.index() == 1) co_return std::get<1>(std::move(ir));
      const auto& iresp = std::get<0>(ir);
      if (iresp.status() != v1::CommandResponse::STATUS_OK) {
        report.notes.push_back("install authorization " + std::to_string(token.authorization_id) +
                               ": " + std::string(error_name(iresp.error())));
        last_refusal_ = iresp.error();
        if (kills_token(iresp.error())) {
          if (auto s = cache_.mark_dead(token.token_id, iresp.error()); !s) {
            co_return storage(cache_);
          }
        }
        continue;
      }
      report.notes.push_back("installed authorization " + std::to_string(token.authorization_id));
      o = co_await offer(token);
      if (o.index() == 1) co_return std::get<1>(std::move(o));
      outcome = std::get<0>(o);
    }

    if (outcome.error() == v1::ERROR_UNSPECIFIED) {
      if (auto s = cache_.mark_accepted(token.token_id, outcome.uses_left()); !s) {
        co_return storage(cache_);
      }
      last_refusal_ = v1::ERROR_UNSPECIFIED;
      report.notes.push_back("offered token " + short_id(token.token_id) + ": accepted, " +
                             std::to_string(outcome.uses_left()) + " uses left");
      co_return true;
    }
    report.notes.push_back("offered token " + short_id(token.token_id) + ": " +
                           std::string(error_name(outcome.error())));
    last_refusal_ = outcome.error();
    if (kills_token(outcome.error())) {
      if (auto s = cache_.mark_dead(token.token_id, outcome.error()); !s) co_return storage(cache_);
    }
  }
  co_return false;
}

asio::awaitable<RunReport> HostClient::run(ByteView device_id, ByteView user_id,
                                           const crypto::PrivateKey& user_key,
                                           const CommandSpec& spec) {
  RunReport report;
  auto fail = [&report](Failure f) {
    report.outcome = f.outcome;
    report.error = f.error;
    report.message = std::move(f.message);
    return std::move(report);
  };
  device_id_.assign(device_id.begin(), device_id.end());
  user_id_.assign(user_id.begin(), user_id.end());
  offered_.clear();
  installed_.clear();
  last_refusal_ = v1::ERROR_UNSPECIFIED;
  rounds_ = 0;
  nonce_.clear();

  auto dev = cache_.device(device_id);
  if (!dev) co_return fail(storage(cache_));
  if (!dev->has_value()) {
    co_return fail({Outcome::kLocal, v1::ERROR_UNSPECIFIED,
                    "device " + short_id(device_id) + " is not paired: run `tollgate-host pair`"});
  }
  auto key = crypto::PublicKey::from_spki_der((*dev)->public_key);
  if (!key) co_return fail(forged(key.error(), "pinned key in the cache is unreadable"));
  device_key_ = std::move(*key);
  if (!(*dev)->last_nonce.empty() && now_() - (*dev)->nonce_time >= 0 &&
      now_() - (*dev)->nonce_time < options_.nonce_max_age) {
    nonce_ = (*dev)->last_nonce;
  }

  int stale_retries = 0;
  while (rounds_ < options_.max_rounds) {
    if (nonce_.empty()) {
      ++rounds_;
      auto n = co_await fresh_nonce();
      if (n.index() == 1) co_return fail(std::get<1>(std::move(n)));
    }
    auto request = sign_command(spec, device_id_, nonce_, new_request_id(), user_key);
    if (!request) {
      co_return fail({Outcome::kLocal, request.error(),
                      "cannot sign the command: " + std::string(error_name(request.error()))});
    }
    // The nonce is single-use: forget it before sending, so a crash here never
    // reuses it; the answer brings the next one.
    if (auto s = remember_nonce(""); !s) co_return fail(storage(cache_));
    v1::HostMessage msg;
    msg.set_command(std::string(as_chars(*request)));
    ++rounds_;
    auto r = co_await signed_exchange(msg, *request);
    if (r.index() == 1) co_return fail(std::get<1>(std::move(r)));
    report.response = std::get<0>(std::move(r));
    const auto& resp = report.response;

    if (resp.status() == v1::CommandResponse::STATUS_OK ||
        resp.status() == v1::CommandResponse::STATUS_FAILED) {
      auto charged = cache_.first_accepted(device_id_, user_id_, now_());
      if (!charged) co_return fail(storage(cache_));
      if (charged->has_value()) {
        report.charged_token = (*charged)->token_id;
        if (auto s = cache_.set_uses_left((*charged)->token_id, resp.uses_left()); !s) {
          co_return fail(storage(cache_));
        }
      }
      if (resp.status() == v1::CommandResponse::STATUS_FAILED) {
        co_return fail({Outcome::kDenied, resp.error(),
                        "command failed on the device: " + std::string(error_name(resp.error()))});
      }
      co_return std::move(report);
    }

    const Error e = resp.error();
    report.notes.push_back("command " + spec.command + ": " + std::string(error_name(e)));
    if (e == v1::ERROR_STALE_NONCE && stale_retries < 2) {
      // First retry with the nonce the rejection brought; if that one is stale too
      // (the device restarted after answering), ask for a fresh one by status.
      if (++stale_retries == 2) nonce_.clear();
      continue;
    }
    if (!is_unauthorized(e)) {
      co_return fail({Outcome::kDenied, e, "denied: " + std::string(error_name(e))});
    }
    if (e == v1::ERROR_USES_EXHAUSTED) {
      // The token the device was spending is used up: book it so.
      if (auto charged = cache_.first_accepted(device_id_, user_id_, now_());
          charged && charged->has_value()) {
        (void)cache_.set_uses_left((*charged)->token_id, 0);
      }
    }
    auto offered = co_await offer_next(report);
    if (offered.index() == 1) co_return fail(std::get<1>(std::move(offered)));
    if (!std::get<0>(offered)) {
      // Say why plainly: the device's reason, and why the cached tokens did not help.
      const std::string tried =
          last_refusal_ != v1::ERROR_UNSPECIFIED
              ? "the last token offered was refused: " + std::string(error_name(last_refusal_))
              : "no other cached token to offer";
      co_return fail({Outcome::kNoToken, e,
                      "no usable token left for user " + short_id(user_id_) + " on device " +
                          short_id(device_id_) + " (device said: " + std::string(error_name(e)) +
                          "; " + tried + ")"});
    }
  }
  co_return fail({Outcome::kDenied, v1::ERROR_UNSPECIFIED,
                  "gave up after " + std::to_string(options_.max_rounds) + " exchanges"});
}

asio::awaitable<Step<AuditExportReply>> HostClient::audit_export(ByteView device_id,
                                                                 std::uint64_t from_seq) {
  auto pin = cache_.device(device_id);
  if (!pin) co_return storage(cache_);
  if (!pin->has_value()) {
    co_return Failure{Outcome::kLocal, v1::ERROR_UNKNOWN_SIGNER,
                      "device " + short_id(device_id) + " is not paired: no key to check with"};
  }
  auto key = crypto::PublicKey::from_spki_der((*pin)->public_key);
  if (!key) co_return forged(key.error(), "pinned key in the cache is unreadable");

  v1::HostMessage msg;
  msg.mutable_export_audit()->set_from_seq(from_seq);
  auto is_stale = [](const v1::DeviceMessage& m) {
    // Late answers to earlier exchanges; nothing in them is believed.
    return m.kind_case() == v1::DeviceMessage::kStatus ||
           m.kind_case() == v1::DeviceMessage::kResponse;
  };
  auto dm = co_await exchange(msg, is_stale);
  if (dm.index() == 1) co_return std::get<1>(std::move(dm));
  const auto& m = std::get<0>(dm);
  if (m.kind_case() == v1::DeviceMessage::kError) {
    co_return Failure{Outcome::kDenied, m.error(),
                      "device refused export_audit: " + std::string(error_name(m.error()))};
  }
  if (m.kind_case() != v1::DeviceMessage::kAuditExport) {
    co_return forged(v1::ERROR_WRONG_TYPE, "device answered export_audit with another message");
  }
  auto envelope = parse_signed(as_bytes(m.audit_export()));
  if (!envelope) co_return forged(envelope.error(), "audit export refused");
  auto content = verify_and_parse<v1::AuditExport>(*envelope, v1::Signed::TYPE_AUDIT_EXPORT, *key,
                                                   AlgorithmPolicy{});
  if (!content) {
    co_return forged(content.error(), "audit export from " + short_id(device_id) +
                                          " does not verify under the pinned key");
  }
  if (!constant_time_equal(as_bytes(content->device_id()), device_id)) {
    co_return forged(v1::ERROR_WRONG_DEVICE, "audit export names another device");
  }
  // Signed, yet it must also be the slice asked for, in one unbroken piece.
  const auto& records = content->records();
  for (int i = 0; i < records.size(); ++i) {
    const bool ordered = i == 0 ? records[i].seq() >= from_seq
                                : records[i].seq() == records[i - 1].seq() + 1 &&
                                      records[i].prev_hash() == records[i - 1].hash();
    if (!ordered) {
      co_return forged(v1::ERROR_MALFORMED, "audit export records are not one run from record " +
                                                std::to_string(from_seq));
    }
  }
  if (!records.empty() && content->next_seq() != records[records.size() - 1].seq() + 1) {
    co_return forged(v1::ERROR_MALFORMED, "audit export next_seq does not follow its records");
  }
  AuditExportReply reply;
  reply.signed_export.assign(m.audit_export().begin(), m.audit_export().end());
  reply.content = std::move(*content);
  co_return reply;
}

}  // namespace tollgate::host
