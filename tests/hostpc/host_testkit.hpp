// Helpers for host tests: signed tokens and authorizations, and an in-process
// fake instrument behind an in-memory MessageLink with named misbehaviour
// switches. The fake follows the issue-4 contract closely enough to drive the
// host's flows; it is not the instrument (end-to-end tests use the real one).
// Nothing here waits: a missing answer is an immediate kDeadline.
#pragma once

#include <doctest/doctest.h>

#include <unistd.h>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/io_context.hpp>
#include <deque>
#include <filesystem>
#include <map>
#include <optional>
#include <set>
#include <string>

#include "gateway/crypto.hpp"
#include "gateway/signed.hpp"
#include "hostpc/cache.hpp"
#include "hostpc/client.hpp"
#include "hostpc/protocol.hpp"
#include "transport/links/message_link.hpp"

#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic ignored "-Wmismatched-new-delete"
#endif

namespace tollgate::hosttest {

constexpr std::int64_t kT0 = 1'700'000'000;
constexpr std::int64_t kDay = 24 * 3600;

inline crypto::PrivateKey make_key() {
  auto k = crypto::PrivateKey::generate(crypto::KeyType::kEd25519);
  REQUIRE(k.ok());
  return std::move(*k);
}

inline Bytes uuid(std::uint8_t tag, std::uint8_t kind = 0x70) {
  Bytes u(16, 0);
  u[0] = kind;
  u[15] = tag;
  return u;
}
inline std::string str(ByteView b) {
  return std::string(as_chars(b));
}

inline Bytes sign_bytes(ObjectType type, const google::protobuf::MessageLite& body,
                        const crypto::PrivateKey& key) {
  auto s = sign_object(type, as_bytes(body.SerializeAsString()), key);
  REQUIRE(s.ok());
  const std::string out = s->SerializeAsString();
  return Bytes(out.begin(), out.end());
}

inline Bytes make_token(const crypto::PrivateKey& cloud, const Bytes& token_id, const Bytes& device,
                        const Bytes& user, const crypto::PrivateKey& user_key, std::uint32_t uses,
                        std::int64_t expires_at, std::uint64_t auth_id = 1) {
  v1::DeviceToken t;
  t.set_token_id(str(token_id));
  t.set_issued_at(kT0 - kDay);
  t.set_device_id(str(device));
  t.set_authorized_uses(uses);
  t.set_user_id(str(user));
  t.set_user_public_key(str(user_key.public_key().spki_der()));
  t.set_expires_at(expires_at);
  t.set_authorization_id(auth_id);
  return sign_bytes(v1::Signed::TYPE_DEVICE_TOKEN, t, cloud);
}

inline Bytes make_authorization(const crypto::PrivateKey& master, const crypto::PrivateKey& cloud,
                                std::uint64_t id) {
  v1::CloudKeyAuthorization a;
  a.set_id(id);
  a.set_cloud_public_key(str(cloud.public_key().spki_der()));
  a.set_not_before(kT0 - 10 * kDay);
  a.set_not_after(kT0 + 365 * kDay);
  return sign_bytes(v1::Signed::TYPE_CLOUD_KEY_AUTHORIZATION, a, master);
}

// A temporary folder, removed at scope exit.
struct TempDir {
  std::filesystem::path path;
  TempDir() {
    std::string tmpl = (std::filesystem::temp_directory_path() / "tollgate-host-XXXXXX").string();
    REQUIRE(::mkdtemp(tmpl.data()) != nullptr);
    path = tmpl;
  }
  ~TempDir() {
    std::error_code ec;
    std::filesystem::remove_all(path, ec);
  }
  std::string str(const std::string& leaf = "") const { return (path / leaf).string(); }
};

// The fake instrument: tokens without signature checks (the gateway's tests
// cover those), but nonces, idempotent replays, charging and signed answers
// as the contract has them.
class FakeDevice {
 public:
  // Named misbehaviour switches.
  bool silent = false;             // never answers
  int drop_replies = 0;            // answers this many messages, but the answers are lost
  bool duplicate_replies = false;  // every answer arrives twice (answered original and resend)
  bool flip_reply_bit = false;     // flips one bit of the signed body in every answer
  bool wrong_request_hash = false;
  bool sign_with_other_key = false;  // signs answers with a key that is not the pinned one
  std::set<std::uint64_t> revoked_authorizations;

  Bytes device_id = uuid(0xD1, 0xDE);
  crypto::PrivateKey key = make_key();
  crypto::PrivateKey other_key = make_key();
  std::set<std::uint64_t> installed;
  struct Held {
    Bytes user_spki;
    std::uint32_t uses_left = 0;
    std::int64_t expires_at = 0;
  };
  std::map<Bytes, Held> tokens;
  int executions = 0;
  int messages = 0;
  std::int64_t now = kT0;

  Bytes handle(ByteView in) {
    ++messages;
    v1::HostMessage m;
    REQUIRE(m.ParseFromArray(in.data(), static_cast<int>(in.size())));
    v1::DeviceMessage out;
    switch (m.kind_case()) {
      case v1::HostMessage::kGetStatus: {
        v1::StatusReport r;
        r.set_device_id(str(device_id));
        r.set_device_public_key(str(signer().public_key().spki_der()));
        r.set_firmware_version("fake-1.0");
        for (auto id : installed) r.add_authorizations()->set_id(id);
        r.set_device_time(now);
        r.set_nonce(str(fresh_nonce()));
        r.set_challenge(m.get_status().challenge());
        out.set_status(seal(v1::Signed::TYPE_STATUS_RESPONSE, r));
        break;
      }
      case v1::HostMessage::kInstallAuthorization: {
        auto s = parse_signed(as_bytes(m.install_authorization()));
        REQUIRE(s.ok());
        v1::CloudKeyAuthorization a;
        REQUIRE(a.ParseFromString(s->body()));
        v1::CommandResponse resp;
        if (revoked_authorizations.count(a.id())) {
          reject(resp, v1::ERROR_REVOKED);
        } else {
          installed.insert(a.id());
          resp.set_status(v1::CommandResponse::STATUS_OK);
        }
        out.set_response(respond(resp, as_bytes(m.install_authorization())));
        break;
      }
      case v1::HostMessage::kOfferTokens: {
        v1::TokenOfferResult result;
        bool any = false;
        v1::Error first = v1::ERROR_UNSPECIFIED;
        for (const auto& tb : m.offer_tokens().tokens()) {
          auto s = parse_signed(as_bytes(tb));
          REQUIRE(s.ok());
          v1::DeviceToken t;
          REQUIRE(t.ParseFromString(s->body()));
          auto* o = result.add_outcomes();
          o->set_token_id(t.token_id());
          const Bytes id(t.token_id().begin(), t.token_id().end());
          v1::Error e = v1::ERROR_UNSPECIFIED;
          if (t.device_id() != str(device_id)) {
            e = v1::ERROR_WRONG_DEVICE;
          } else if (revoked_authorizations.count(t.authorization_id())) {
            e = v1::ERROR_REVOKED;
          } else if (!installed.count(t.authorization_id())) {
            e = v1::ERROR_AUTHORIZATION_NOT_INSTALLED;
          } else if (t.expires_at() <= now) {
            e = v1::ERROR_EXPIRED;
          } else {
            auto [it, added] = tokens.emplace(
                id, Held{Bytes(t.user_public_key().begin(), t.user_public_key().end()),
                         t.authorized_uses(), t.expires_at()});
            if (it->second.uses_left == 0) e = v1::ERROR_USES_EXHAUSTED;
            o->set_uses_left(it->second.uses_left);
          }
          o->set_error(e);
          if (e == v1::ERROR_UNSPECIFIED) any = true;
          if (first == v1::ERROR_UNSPECIFIED) first = e;
        }
        v1::CommandResponse resp;
        if (any) {
          resp.set_status(v1::CommandResponse::STATUS_OK);
        } else {
          reject(resp, first == v1::ERROR_UNSPECIFIED ? v1::ERROR_MALFORMED : first);
        }
        resp.set_result(result.SerializeAsString());
        out.set_response(respond(resp, as_bytes(m.offer_tokens().SerializeAsString())));
        break;
      }
      case v1::HostMessage::kCommand:
        out.set_response(on_command(as_bytes(m.command())));
        break;
      default:
        out.set_error(v1::ERROR_MALFORMED);
    }
    const std::string s = out.SerializeAsString();
    return Bytes(s.begin(), s.end());
  }

 private:
  Bytes current_nonce_;
  std::map<Bytes, std::string> replies_;  // request bytes -> the signed response sent

  const crypto::PrivateKey& signer() const { return sign_with_other_key ? other_key : key; }
  Bytes fresh_nonce() {
    current_nonce_ = crypto::random_bytes(12);
    return current_nonce_;
  }
  void reject(v1::CommandResponse& r, v1::Error e) {
    r.set_status(v1::CommandResponse::STATUS_REJECTED);
    r.set_error(e);
  }
  std::string seal(ObjectType type, const google::protobuf::MessageLite& body) {
    std::string b = body.SerializeAsString();
    auto s = sign_object(type, as_bytes(b), signer());
    REQUIRE(s.ok());
    if (flip_reply_bit) {
      std::string tampered = s->body();
      tampered[tampered.size() / 2] = static_cast<char>(tampered[tampered.size() / 2] ^ 0x04);
      s->set_body(tampered);
    }
    return s->SerializeAsString();
  }
  std::string respond(v1::CommandResponse& r, ByteView request) {
    Bytes h = host::request_hash(request);
    if (wrong_request_hash) h[0] ^= 0x01;
    r.set_request_hash(str(h));
    r.set_next_nonce(str(fresh_nonce()));
    return seal(v1::Signed::TYPE_COMMAND_RESPONSE, r);
  }
  std::string on_command(ByteView bytes) {
    const Bytes key_bytes(bytes.begin(), bytes.end());
    if (auto it = replies_.find(key_bytes); it != replies_.end()) return it->second;  // replay
    auto s = parse_signed(bytes);
    REQUIRE(s.ok());
    v1::CommandRequest req;
    REQUIRE(req.ParseFromString(s->body()));
    v1::CommandResponse resp;
    const Bytes nonce(req.nonce().begin(), req.nonce().end());
    if (current_nonce_.empty() || nonce != current_nonce_) {
      reject(resp, v1::ERROR_STALE_NONCE);
      return respond(resp, bytes);
    }
    current_nonce_.clear();
    if (req.command() == "explode") {
      reject(resp, v1::ERROR_UNKNOWN_COMMAND);
      return respond(resp, bytes);
    }
    const std::uint32_t cost = req.command() == "run-assay" ? 1 : 0;
    Held* best = nullptr;
    bool any_for_user = false;
    for (auto& [id, h] : tokens) {
      auto pk = crypto::PublicKey::from_spki_der(h.user_spki);
      REQUIRE(pk.ok());
      if (!verify_signed(*s, v1::Signed::TYPE_COMMAND_REQUEST, *pk, AlgorithmPolicy{})) continue;
      any_for_user = true;
      if (h.expires_at <= now || h.uses_left < cost) continue;
      if (!best || h.expires_at < best->expires_at) best = &h;
    }
    if (!best) {
      reject(resp, any_for_user ? v1::ERROR_USES_EXHAUSTED : v1::ERROR_NO_VALID_TOKEN);
      return respond(resp, bytes);
    }
    best->uses_left -= cost;
    ++executions;
    resp.set_status(v1::CommandResponse::STATUS_OK);
    resp.set_uses_left(best->uses_left);
    std::string result = "ok " + req.command();
    const std::map<std::string, std::string> sorted(req.arguments().begin(), req.arguments().end());
    for (const auto& [k, v] : sorted) result += " " + k + "=" + v;
    resp.set_result(result);
    std::string signed_resp = respond(resp, bytes);
    replies_[key_bytes] = signed_resp;
    return signed_resp;
  }
};

// A MessageLink whose peer is a FakeDevice, answering synchronously.
class FakeLink : public transport::MessageLink {
 public:
  explicit FakeLink(FakeDevice& device) : device_(device) {}
  std::vector<Bytes> sent;
  std::vector<Bytes> replies;         // every answer the device gave
  std::optional<Bytes> late_message;  // arrives just before the next answer

  boost::asio::awaitable<transport::LinkResult<transport::Done>> send(std::vector<std::uint8_t> m,
                                                                      Duration) override {
    sent.push_back(m);
    if (late_message) {
      inbox_.push_back(std::move(*late_message));
      late_message.reset();
    }
    if (!device_.silent) {
      Bytes reply = device_.handle(m);
      replies.push_back(reply);
      if (device_.drop_replies > 0) {
        --device_.drop_replies;
      } else {
        if (device_.duplicate_replies) inbox_.push_back(reply);
        inbox_.push_back(std::move(reply));
      }
    }
    co_return transport::Done{};
  }
  boost::asio::awaitable<transport::LinkResult<std::vector<std::uint8_t>>> receive(
      Duration) override {
    if (inbox_.empty()) co_return transport::LinkError::kDeadline;
    Bytes b = std::move(inbox_.front());
    inbox_.pop_front();
    co_return b;
  }
  void close() override {}
  std::string describe() const override { return "fake:device"; }

 private:
  FakeDevice& device_;
  std::deque<Bytes> inbox_;
};

// Runs one awaitable to completion on a private io_context.
template <class T>
T run_sync(boost::asio::awaitable<T> aw) {
  boost::asio::io_context io;
  std::optional<T> out;
  boost::asio::co_spawn(io, std::move(aw), [&](std::exception_ptr e, T v) {
    REQUIRE(!e);
    out = std::move(v);
  });
  io.run();
  REQUIRE(out.has_value());
  return std::move(*out);
}

}  // namespace tollgate::hosttest
