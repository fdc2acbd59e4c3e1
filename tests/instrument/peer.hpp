// A deliberately misbehaving host for the attack tests (BoringSSL ProtocolBugs
// style): it speaks HostMessage / DeviceMessage itself over a real link,
// signs with gateway crypto, and every deviation from a well-behaved host is
// a NAMED switch in ProtocolBugs. With every switch off it is a correct host:
// it keeps the device's next nonce, verifies every answer with the host
// library (hostpc/protocol.hpp: signature under the device key pinned at
// provisioning, request hash of the exact bytes sent) and verifies audit
// exports (device signature and hash chain, instrument/audit.hpp).
#pragma once

#include <doctest/doctest.h>

#include <chrono>
#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include "gateway/crypto.hpp"
#include "gateway/signed.hpp"
#include "hostpc/protocol.hpp"
#include "instrument/audit.hpp"
#include "tests/instrument/harness.hpp"

namespace tollgate::attack {

enum class Object { kToken, kCommand, kAuthorization, kResponse };

struct BitFlip {
  Object object = Object::kCommand;
  std::size_t bit = 0;  // index into the serialized Signed bytes (modulo their length)
};

struct ProtocolBugs {
  // --- commands ---
  // command() sends the most recently recorded command bytes again, verbatim.
  bool replay_recorded_command = false;
  // CommandRequest.device_id names another device.
  bool command_for_other_device = false;
  // Commands are signed by a key no token names, while the envelope still
  // claims the token user's key id (an impersonation attempt).
  bool sign_with_other_user_key = false;
  // The envelope's algorithm field names another algorithm than the signing
  // key's (commands, and tokens / authorizations the peer makes).
  bool alg_label_mismatch = false;
  // The command body is signed under another type's domain label
  // (tollgate.v1.DeviceToken) and then labelled TYPE_COMMAND_REQUEST.
  bool reuse_signature_across_types = false;
  // The first answer to each command is lost on the way back; the peer sends
  // the same bytes (same request id and nonce) again, as a host retries.
  bool drop_response = false;
  // Before each command, this many commands with bad signatures (signed by a
  // key no token names, claiming the user's key id); their answers are kept in
  // Peer::flood_replies.
  std::uint32_t bad_signature_flood = 0;

  // --- tokens and authorizations ---
  // offer_token() offers the last token offered before again, whatever it is given.
  bool reoffer_exhausted_token = false;
  // token() mints (with the genuine cloud key) for another device.
  bool token_for_other_device = false;
  // token() signs with a cloud key no authorization names.
  bool unknown_cloud_key = false;
  // authorization() signs with a master key the device does not hold.
  bool unknown_master_key = false;

  // --- any object ---
  // Flips one bit of the next object of that kind: a token or authorization
  // as made by token() / authorization(), a command as sent, or a response as
  // received (before the host library checks it).
  std::optional<BitFlip> flip_bit;
};

inline Bytes flip(Bytes bytes, std::size_t bit) {
  REQUIRE(!bytes.empty());
  bit %= bytes.size() * 8;
  bytes[bit / 8] = static_cast<std::uint8_t>(bytes[bit / 8] ^ (1U << (bit % 8)));
  return bytes;
}

enum class Field { kBody, kSignerKeyId, kAlgorithm, kSignature, kType };

// The bit index of the middle of `field`'s value inside serialized Signed bytes.
inline std::size_t bit_in(const Bytes& signed_bytes, Field field) {
  auto s = parse_signed(signed_bytes);
  REQUIRE(s.ok());
  const std::string raw(signed_bytes.begin(), signed_bytes.end());
  // The body comes first (field 1); the other fields are searched after it.
  const std::size_t body_at = raw.find(s->body());
  REQUIRE(body_at != std::string::npos);
  auto find = [&](const std::string& value) {
    if (value == s->body()) return body_at;
    std::size_t at = raw.find(value, body_at + s->body().size());
    REQUIRE(at != std::string::npos);
    return at;
  };
  switch (field) {
    case Field::kBody:
      return (find(s->body()) + s->body().size() / 2) * 8 + 3;
    case Field::kSignerKeyId:
      return (find(s->signer_key_id()) + 8) * 8 + 3;
    case Field::kSignature:
      return (find(s->signature()) + 20) * 8 + 3;
    // Enums: one bit of the value byte after the tag that turns it into
    // another known value (1 <-> 3, 2 -> 6), so the envelope still parses.
    case Field::kAlgorithm:  // tag 0x18: field 3, varint
      return (find(std::string{'\x18', static_cast<char>(s->algorithm())}) + 1) * 8 +
             (s->algorithm() == 2 ? 2 : 1);
    case Field::kType:  // tag 0x28: field 5, varint
      return (find(std::string{'\x28', static_cast<char>(s->type())}) + 1) * 8 +
             (s->type() == 2 ? 2 : 1);
  }
  return 0;
}

// One answer of the device, as the host library sees it.
struct Reply {
  Bytes request;          // what the peer sent in the HostMessage (signed object / offer)
  Bytes message;          // the DeviceMessage as received
  Bytes signed_response;  // its `response` payload, as received
  Error unsigned_error = v1::ERROR_UNSPECIFIED;  // DeviceMessage.error
  Error verify_error = v1::ERROR_UNSPECIFIED;    // why the host library refused the answer
  std::optional<v1::CommandResponse> response;   // verified
  std::optional<v1::TokenOfferResult> offer;     // offers: the per-token outcomes
  std::vector<Bytes> lost;                       // answers lost on the way (drop_response)

  bool verified() const { return response.has_value(); }
  v1::CommandResponse::Status status() const {
    return response ? response->status() : v1::CommandResponse::STATUS_UNSPECIFIED;
  }
  bool ok() const { return status() == v1::CommandResponse::STATUS_OK; }
  Error error() const { return response ? response->error() : v1::ERROR_UNSPECIFIED; }
  std::uint32_t uses_left() const { return response ? response->uses_left() : 0; }
  std::string result() const { return response ? response->result() : std::string(); }
};

inline std::string describe(const Reply& r) {
  if (r.unsigned_error != v1::ERROR_UNSPECIFIED) {
    return "unsigned error " + std::string(error_name(r.unsigned_error));
  }
  if (!r.response) return "unverified (" + std::string(error_name(r.verify_error)) + ")";
  return std::string(v1::CommandResponse::Status_Name(r.response->status())) + " " +
         std::string(error_name(r.response->error())) +
         " uses_left=" + std::to_string(r.response->uses_left()) +
         " result=" + r.response->result();
}

// The signed, chain-verified audit log of the device.
struct AuditLog {
  std::vector<v1::AuditRecord> records;
  std::uint64_t head_seq() const { return records.empty() ? 0 : records.back().seq(); }
  // Records after `seq` of `kind`.
  std::vector<v1::AuditRecord> since(std::uint64_t seq, v1::AuditRecord::Kind kind) const {
    std::vector<v1::AuditRecord> out;
    for (const auto& r : records) {
      if (r.seq() > seq && r.kind() == kind) out.push_back(r);
    }
    return out;
  }
  // Records after `seq` of `kind` that were refused for `reason`.
  std::size_t rejections_since(std::uint64_t seq, v1::AuditRecord::Kind kind, Error reason) const {
    std::size_t n = 0;
    for (const auto& r : since(seq, kind)) {
      if (!r.accepted() && r.reason() == reason) ++n;
    }
    return n;
  }
};

// What the device had done at one moment: to show an attack added nothing.
struct Snapshot {
  std::uint64_t audit_seq = 0;
  std::uint64_t results = 0;
  std::size_t executions = 0;
};

class Peer {
 public:
  // `clean`: talk over the rig's second, fault-free link.
  explicit Peer(Rig& rig, bool clean = false) : rig_(rig), link_(rig.open_peer_link(io_, clean)) {}
  ~Peer() {
    if (link_) link_->close();
  }
  Peer(const Peer&) = delete;
  Peer& operator=(const Peer&) = delete;

  ProtocolBugs bugs;
  // The key that signs this peer's commands (the rig's user unless changed).
  const crypto::PrivateKey* user = nullptr;
  // A key nobody authorized: bad signatures, unknown cloud and master keys.
  crypto::PrivateKey rogue = testkit::make_key();
  // How long to wait for an answer, and how often to send the same bytes again
  // when none comes (0: a missing answer fails the test).
  std::chrono::milliseconds timeout{20000};
  int resends = 0;

  std::vector<Bytes> recorded_commands;  // every command sent, in order
  std::vector<Reply> flood_replies;      // answers to bad_signature_flood
  std::uint64_t stale_answers = 0;       // late answers to earlier requests, skipped
  std::uint64_t resent = 0;              // requests sent again after a missing answer

  // --- objects the peer presents -------------------------------------------

  Bytes token(std::uint8_t tag, std::uint32_t uses = 3, UnixTime expires_at = kT0 + 7 * kDay,
              std::uint64_t authorization_id = 1, const crypto::PrivateKey* cloud_key = nullptr) {
    v1::DeviceToken body = rig_.token_body(tag, uses, expires_at, authorization_id);
    if (bugs.token_for_other_device) body.set_device_id(testkit::str(rig_.other_device_id));
    const crypto::PrivateKey& signer =
        bugs.unknown_cloud_key ? rogue : (cloud_key != nullptr ? *cloud_key : rig_.cloud);
    return misbehave(Object::kToken, testkit::sign_token(signer, body));
  }
  // A token for `user_key` instead of the rig's user.
  Bytes token_for(const crypto::PublicKey& user_key, std::uint8_t tag, std::uint32_t uses = 3) {
    v1::DeviceToken body = rig_.token_body(tag, uses);
    body.set_user_public_key(testkit::str(user_key.spki_der()));
    return misbehave(Object::kToken, testkit::sign_token(rig_.cloud, body));
  }
  Bytes authorization(std::uint64_t id = 1, std::vector<std::uint64_t> revoked = {},
                      const crypto::PrivateKey* cloud_key = nullptr,
                      UnixTime not_after = kT0 + 365 * kDay) {
    return misbehave(Object::kAuthorization,
                     rig_.authorization(id, std::move(revoked), cloud_key, not_after,
                                        bugs.unknown_master_key ? &rogue : nullptr));
  }

  // --- messages --------------------------------------------------------------

  v1::StatusReport status() {
    v1::HostMessage m;
    const Bytes challenge = crypto::random_bytes(host::kChallengeSize);
    m.mutable_get_status()->set_challenge(testkit::str(challenge));
    v1::DeviceMessage answer = parse_device_message(exchange(m, {}));
    REQUIRE_MESSAGE(answer.has_status(), "no status report");
    auto report = host::verify_status(as_bytes(answer.status()), challenge, &rig_.device_key());
    REQUIRE_MESSAGE(report.ok(), "status report does not verify: " << error_name(report.error()));
    nonce_.assign(report->nonce().begin(), report->nonce().end());
    return std::move(*report);
  }

  Reply install(const Bytes& signed_authorization) {
    v1::HostMessage m;
    m.set_install_authorization(testkit::str(signed_authorization));
    return signed_exchange(m, signed_authorization);
  }

  Reply offer(const std::vector<Bytes>& tokens) {
    v1::HostMessage m;
    for (const auto& t : tokens) m.mutable_offer_tokens()->add_tokens(testkit::str(t));
    const std::string offer = m.offer_tokens().SerializeAsString();
    Reply r = signed_exchange(m, Bytes(offer.begin(), offer.end()));
    if (r.response) {
      v1::TokenOfferResult outcomes;
      REQUIRE(outcomes.ParseFromString(r.response->result()));
      r.offer = std::move(outcomes);
    }
    return r;
  }
  Reply offer_token(const Bytes& token) {
    Bytes t = bugs.reoffer_exhausted_token && last_offered_ ? *last_offered_ : token;
    last_offered_ = t;
    return offer({t});
  }
  // The device's count for `token` (re-offering never restores uses), and its verdict.
  std::pair<std::uint32_t, Error> probe_token(const Bytes& token) {
    Reply r = offer({token});
    REQUIRE_MESSAGE(r.offer.has_value(), describe(r));
    REQUIRE(r.offer->outcomes_size() == 1);
    return {r.offer->outcomes(0).uses_left(), r.offer->outcomes(0).error()};
  }

  // Signs and sends a command with the device's current nonce.
  Reply command(const std::string& name, const std::map<std::string, std::string>& args = {}) {
    for (std::uint32_t i = 0; i < bugs.bad_signature_flood; ++i) {
      ensure_nonce();
      v1::HostMessage m;
      const Bytes forged = forged_command(name, args);
      m.set_command(testkit::str(forged));
      flood_replies.push_back(signed_exchange(m, forged));
    }
    if (bugs.replay_recorded_command) {
      REQUIRE_MESSAGE(!recorded_commands.empty(), "nothing recorded to replay");
      return send_command(recorded_commands.back());
    }
    Reply r;
    // As the host contract has it: a stale nonce (device restarted, clock
    // moved) is retried once with the next nonce the rejection carries.
    for (int attempt = 0; attempt < 2; ++attempt) {
      ensure_nonce();
      Bytes request = sign_command(name, args);
      recorded_commands.push_back(request);
      r = send_command(request);
      if (r.error() != v1::ERROR_STALE_NONCE) break;
    }
    return r;
  }
  // Sends command bytes made earlier (a withheld or recorded command).
  Reply send_command(const Bytes& request) {
    v1::HostMessage m;
    m.set_command(testkit::str(request));
    std::vector<Bytes> lost;
    if (bugs.drop_response) lost.push_back(exchange(m, request));
    Reply r = signed_exchange(m, request);
    r.lost = std::move(lost);
    return r;
  }
  // A correctly signed command for the current nonce, not sent.
  Bytes prepare_command(const std::string& name,
                        const std::map<std::string, std::string>& args = {}) {
    ensure_nonce();
    return sign_command(name, args);
  }
  // The same request id as `earlier`, other bytes (other arguments).
  Bytes reuse_request_id(const Bytes& earlier, const std::string& name,
                         const std::map<std::string, std::string>& args) {
    auto s = parse_signed(earlier);
    REQUIRE(s.ok());
    v1::CommandRequest body;
    REQUIRE(body.ParseFromString(s->body()));
    ensure_nonce();
    v1::CommandRequest r = testkit::request_body(device(), nonce_, body.request_id(), name, args);
    return testkit::sign_request(signer(), r);
  }

  // Sends raw HostMessage bytes; the DeviceMessage as received.
  Bytes raw(const Bytes& host_message) {
    return run_sync(io_, roundtrip(host_message, Bytes{}, 0));
  }

  // The whole audit log: every page's device signature and the hash chain from
  // the first record to the head the device signed. Fails the test otherwise.
  AuditLog export_audit() {
    AuditLog log;
    instrument::AuditHead head;  // the empty log: the first record must follow it
    std::uint64_t from = 1;
    std::string head_hash;
    for (int page = 0; page < 10000; ++page) {
      v1::HostMessage m;
      m.mutable_export_audit()->set_from_seq(from);
      v1::DeviceMessage answer = parse_device_message(exchange(m, {}));
      REQUIRE_MESSAGE(answer.has_audit_export(), "no audit export");
      auto s = parse_signed(as_bytes(answer.audit_export()));
      REQUIRE(s.ok());
      auto e = verify_and_parse<v1::AuditExport>(*s, v1::Signed::TYPE_AUDIT_EXPORT,
                                                 rig_.device_key(), AlgorithmPolicy{});
      REQUIRE_MESSAGE(e.ok(), "audit export signature: " << error_name(e.error()));
      CHECK(e->device_id() == testkit::str(rig_.device_id));
      head_hash = e->head_hash();
      if (e->records_size() == 0) break;
      std::vector<v1::AuditRecord> records(e->records().begin(), e->records().end());
      std::string why;
      auto next = instrument::verify_audit_run(records, head, &why);
      REQUIRE_MESSAGE(next.ok(), "audit chain broken: " << why);
      head = *next;
      for (auto& r : records) log.records.push_back(std::move(r));
      from = e->next_seq();
    }
    REQUIRE_MESSAGE(head_hash == std::string(head.hash.begin(), head.hash.end()),
                    "the chain does not end at the head the device signed");
    return log;
  }

  Snapshot snapshot() {
    AuditLog log = export_audit();
    return {log.head_seq(), rig_.result_count(), executions(log)};
  }
  static std::size_t executions(const AuditLog& log) {
    return log.since(0, v1::AuditRecord::KIND_EXECUTION).size();
  }

  // Forgets the nonce (the next command fetches one with a status request).
  void forget_nonce() { nonce_.clear(); }
  const Bytes& nonce() const { return nonce_; }
  Rig& rig() { return rig_; }

 private:
  const crypto::PrivateKey& signer() const { return user != nullptr ? *user : rig_.user; }
  ByteView device() const {
    return bugs.command_for_other_device ? ByteView(rig_.other_device_id)
                                         : ByteView(rig_.device_id);
  }
  void ensure_nonce() {
    if (nonce_.empty()) status();
  }

  Bytes sign_command(const std::string& name, const std::map<std::string, std::string>& args) {
    v1::CommandRequest body =
        testkit::request_body(device(), nonce_, next_request_id_++, name, args);
    const std::string raw = body.SerializeAsString();
    Bytes out;
    if (bugs.sign_with_other_user_key) {
      out = forged_command(name, args);
    } else if (bugs.reuse_signature_across_types) {
      // A signature the user made over another kind of object (the same bytes
      // as a DeviceToken), presented as a command.
      auto s = sign_object(v1::Signed::TYPE_DEVICE_TOKEN, as_bytes(raw), signer());
      REQUIRE(s.ok());
      s->set_type(v1::Signed::TYPE_COMMAND_REQUEST);
      out = testkit::serialize(*s);
    } else {
      out = testkit::sign_request(signer(), body);
    }
    return misbehave(Object::kCommand, std::move(out));
  }
  // Signed by the rogue key, claiming the user's key id: the signature cannot verify.
  Bytes forged_command(const std::string& name, const std::map<std::string, std::string>& args) {
    v1::CommandRequest body =
        testkit::request_body(device(), nonce_, next_request_id_++, name, args);
    auto s =
        sign_object(v1::Signed::TYPE_COMMAND_REQUEST, as_bytes(body.SerializeAsString()), rogue);
    REQUIRE(s.ok());
    const auto& id = signer().public_key().id();
    s->set_signer_key_id(std::string(id.begin(), id.end()));
    return testkit::serialize(*s);
  }

  // Applies the object-level switches to a signed object the peer made.
  Bytes misbehave(Object kind, Bytes signed_bytes) {
    if (bugs.alg_label_mismatch && kind != Object::kResponse) {
      auto s = parse_signed(signed_bytes);
      REQUIRE(s.ok());
      s->set_algorithm(s->algorithm() == v1::Signed::ALGORITHM_ED25519
                           ? v1::Signed::ALGORITHM_RSA_PSS_SHA256
                           : v1::Signed::ALGORITHM_ED25519);
      signed_bytes = testkit::serialize(*s);
    }
    if (bugs.flip_bit && bugs.flip_bit->object == kind) {
      signed_bytes = flip(std::move(signed_bytes), bugs.flip_bit->bit);
    }
    return signed_bytes;
  }

  static v1::DeviceMessage parse_device_message(const Bytes& bytes) {
    v1::DeviceMessage m;
    REQUIRE_MESSAGE(m.ParseFromArray(bytes.data(), static_cast<int>(bytes.size())),
                    "the device's answer does not parse");
    return m;
  }

  // Sends `m`, returns the answer. With an expected request hash, answers to
  // other requests (late duplicates after a resend) are skipped.
  Bytes exchange(const v1::HostMessage& m, const Bytes& expected_hash_of) {
    const std::string s = m.SerializeAsString();
    Bytes hash = expected_hash_of.empty() ? Bytes{} : host::request_hash(expected_hash_of);
    return run_sync(io_, roundtrip(Bytes(s.begin(), s.end()), hash, resends));
  }

  Reply signed_exchange(const v1::HostMessage& m, const Bytes& hashed) {
    Reply r;
    r.request = hashed;
    r.message = exchange(m, hashed);
    v1::DeviceMessage answer = parse_device_message(r.message);
    if (answer.has_error()) {
      r.unsigned_error = answer.error();
      return r;
    }
    REQUIRE_MESSAGE(answer.has_response(), "answer is neither a response nor an error");
    r.signed_response.assign(answer.response().begin(), answer.response().end());
    Bytes checked = r.signed_response;
    if (bugs.flip_bit && bugs.flip_bit->object == Object::kResponse) {
      checked = flip(std::move(checked), bugs.flip_bit->bit);
    }
    auto v = host::verify_response(checked, host::request_hash(hashed), rig_.device_key());
    if (!v) {
      r.verify_error = v.error();
      nonce_.clear();  // nothing in a forged answer is believed, its nonce neither
      return r;
    }
    nonce_.assign(v->next_nonce().begin(), v->next_nonce().end());
    r.response = std::move(*v);
    return r;
  }

  // True when `message` is a response whose request hash is not `hash` (a late
  // answer to an earlier request). Only the unverified hash field is read:
  // the caller verifies what it keeps.
  static bool answers_other_request(const Bytes& message, const Bytes& hash) {
    v1::DeviceMessage m;
    if (!m.ParseFromArray(message.data(), static_cast<int>(message.size()))) return false;
    if (!m.has_response()) return false;
    auto s = parse_signed(as_bytes(m.response()));
    if (!s) return false;
    v1::CommandResponse body;
    if (!body.ParseFromString(s->body())) return false;
    return body.request_hash() != testkit::str(hash);
  }

  boost::asio::awaitable<Bytes> roundtrip(Bytes message, Bytes hash, int resends_left) {
    for (;;) {
      auto sent = co_await link_->send(message, timeout);
      if (sent.index() != 0) {
        if (resends_left-- > 0) {
          ++resent;
          continue;
        }
        FAIL("send failed: " << transport::link_error_name(std::get<1>(sent)));
      }
      for (;;) {
        auto got = co_await link_->receive(timeout);
        if (got.index() == 0) {
          Bytes answer = std::move(std::get<0>(got));
          if (!hash.empty() && answers_other_request(answer, hash)) {
            ++stale_answers;
            continue;
          }
          co_return answer;
        }
        const auto e = std::get<1>(got);
        if (e == transport::LinkError::kDeadline) break;
        // A broken reception (bad CRC, lost frame): the answer may still come
        // as a whole later, or never; keep listening until the deadline.
      }
      if (resends_left-- <= 0) {
        FAIL("no answer within " << timeout.count() << " ms on " << link_->describe()
                                 << "; instrument log:\n"
                                 << rig_.instrument_log());
      }
      ++resent;
    }
  }

  Rig& rig_;
  boost::asio::io_context io_;
  std::unique_ptr<transport::MessageLink> link_;
  Bytes nonce_;
  std::uint64_t next_request_id_ = 0x1000;
  std::optional<Bytes> last_offered_;
};

}  // namespace tollgate::attack

namespace tollgate::attack {

// The usual start: authorization 1 installed and token `tag` (with `uses`) offered.
inline Bytes ready(Peer& peer, std::uint32_t uses = 3, std::uint8_t tag = 1) {
  Reply a = peer.install(peer.rig().authorization());
  REQUIRE_MESSAGE(a.ok(), "install: " << describe(a));
  Bytes t = peer.rig().token(tag, uses);
  Reply o = peer.offer_token(t);
  REQUIRE_MESSAGE(o.ok(), "offer: " << describe(o));
  return t;
}

// Nothing ran since `before`: no new result row, no execution record, no charge.
inline void expect_nothing_executed(Rig& rig, const Snapshot& before, const AuditLog& log) {
  CHECK(rig.result_count() == before.results);
  CHECK(log.since(before.audit_seq, v1::AuditRecord::KIND_EXECUTION).empty());
  for (const auto& r : log.since(before.audit_seq, v1::AuditRecord::KIND_COMMAND)) {
    CHECK(r.uses_charged() == 0);
  }
}

// A rejection with the specific reason, signed by the device, bound to our request.
inline void expect_rejected(const Reply& r, Error reason) {
  INFO("reply: " << describe(r));
  REQUIRE(r.verified());
  CHECK(r.status() == v1::CommandResponse::STATUS_REJECTED);
  CHECK(error_name(r.error()) == error_name(reason));
}

inline const std::map<std::string, std::string>& assay_args() {
  static const std::map<std::string, std::string> args{{"protocol", "elisa"}, {"sample", "S1"}};
  return args;
}

}  // namespace tollgate::attack
