// Shared helpers for gateway tests: keys, signed authorizations, tokens and
// command requests, and a World holding a device's trust setup and gateway.
// Everything is deterministic except key generation (tests never depend on key
// values) and time is simulated: tests pass clocks by hand.
#pragma once

#include <doctest/doctest.h>

#include <cstdint>
#include <map>
#include <memory>
#include <optional>
#include <random>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "gateway/crypto.hpp"
#include "gateway/gateway.hpp"
#include "gateway/memory_storage.hpp"
#include "gateway/signed.hpp"

namespace tollgate::testkit {

constexpr UnixTime kT0 = 1'700'000'000;  // 2023-11-14, the tests' "now"
constexpr std::int64_t kDay = 24 * 3600;

inline crypto::PrivateKey make_key(crypto::KeyType type = crypto::KeyType::kEd25519) {
  auto k = crypto::PrivateKey::generate(type);
  REQUIRE(k.ok());
  return std::move(*k);
}

// RSA keys take a while to generate; tests share one of each size.
inline const crypto::PrivateKey& shared_key(crypto::KeyType type) {
  static std::map<crypto::KeyType, crypto::PrivateKey> keys;
  auto it = keys.find(type);
  if (it == keys.end()) it = keys.emplace(type, make_key(type)).first;
  return it->second;
}

// A master key list (PublicKey is move-only, so no initializer lists).
inline std::vector<crypto::PublicKey> masters_of(const crypto::PrivateKey& key) {
  std::vector<crypto::PublicKey> out;
  out.push_back(key.public_key().clone());
  return out;
}

inline Bytes uuid(std::uint8_t tag) {
  Bytes u(16, 0);
  u[0] = 0x70;
  u[15] = tag;
  return u;
}

inline std::string str(ByteView b) {
  return std::string(as_chars(b));
}
inline std::string str(const crypto::KeyId& id) {
  return std::string(id.begin(), id.end());
}

inline Bytes serialize(const v1::Signed& s) {
  std::string out;
  REQUIRE(s.SerializeToString(&out));
  return Bytes(out.begin(), out.end());
}

template <class Message>
Bytes sign_message(ObjectType type, const Message& body, const crypto::PrivateKey& key) {
  std::string raw;
  REQUIRE(body.SerializeToString(&raw));
  auto s = sign_object(type, as_bytes(raw), key);
  REQUIRE(s.ok());
  return serialize(*s);
}

inline v1::CloudKeyAuthorization authorization_body(std::uint64_t id,
                                                    const crypto::PublicKey& cloud,
                                                    UnixTime not_before = kT0 - kDay,
                                                    UnixTime not_after = kT0 + 365 * kDay,
                                                    std::vector<std::uint64_t> revoked = {}) {
  v1::CloudKeyAuthorization a;
  a.set_id(id);
  a.set_cloud_public_key(str(cloud.spki_der()));
  a.set_not_before(not_before);
  a.set_not_after(not_after);
  for (auto r : revoked) a.add_revoked_ids(r);
  return a;
}

inline Bytes sign_authorization(const crypto::PrivateKey& master,
                                const v1::CloudKeyAuthorization& a) {
  return sign_message(v1::Signed::TYPE_CLOUD_KEY_AUTHORIZATION, a, master);
}

inline v1::DeviceToken token_body(std::uint8_t token_tag, ByteView device,
                                  const crypto::PublicKey& user, std::uint64_t authorization_id = 1,
                                  std::uint32_t uses = 3, UnixTime issued_at = kT0 - 60,
                                  UnixTime expires_at = kT0 + 7 * kDay) {
  v1::DeviceToken t;
  t.set_token_id(str(uuid(token_tag)));
  t.set_issued_at(issued_at);
  t.set_device_id(str(device));
  t.set_authorized_uses(uses);
  t.set_user_id(str(uuid(0xEE)));
  t.set_user_public_key(str(user.spki_der()));
  t.set_expires_at(expires_at);
  t.set_authorization_id(authorization_id);
  return t;
}

// GCC 12 warns falsely (-Wrestrict) on the generated add_roles(const char*) at -O2.
[[gnu::noinline]] inline void add_role(v1::DeviceToken& t, std::string_view role) {
  t.add_roles()->assign(role.begin(), role.end());
}

inline Bytes sign_token(const crypto::PrivateKey& cloud, const v1::DeviceToken& t) {
  return sign_message(v1::Signed::TYPE_DEVICE_TOKEN, t, cloud);
}

inline v1::CommandRequest request_body(ByteView device, ByteView nonce, std::uint64_t request_id,
                                       std::string command = "measure",
                                       std::map<std::string, std::string> args = {}) {
  v1::CommandRequest r;
  r.set_device_id(str(device));
  r.set_nonce(str(nonce));
  r.set_request_id(request_id);
  r.set_command(std::move(command));
  for (auto& [k, v] : args) (*r.mutable_arguments())[k] = v;
  return r;
}

inline Bytes sign_request(const crypto::PrivateKey& user, const v1::CommandRequest& r) {
  return sign_message(v1::Signed::TYPE_COMMAND_REQUEST, r, user);
}

// Deterministic nonce bytes from a seeded PRNG.
inline RandomSource seeded_random(std::uint64_t seed) {
  auto rng = std::make_shared<std::mt19937_64>(seed);
  return [rng](std::size_t n) {
    Bytes out(n);
    for (auto& b : out) b = static_cast<std::uint8_t>((*rng)() & 0xFF);
    return out;
  };
}

// Rules most tests use: "measure" costs 1, "calibrate" costs 2 and needs the
// "service" role, "status" is free, "dose" validates its argument.
inline CommandRules default_rules() {
  CommandRules rules;
  rules["measure"] = CommandRule{1, {}, {}};
  rules["calibrate"] = CommandRule{2, {"service"}, {}};
  rules["status"] = CommandRule{0, {}, {}};
  rules["dose"] =
      CommandRule{1, {}, [](const CommandArguments& args) -> Status {
                    auto it = args.find("ml");
                    if (it == args.end() || it->second.empty() || it->second.size() > 3) {
                      return v1::ERROR_BAD_ARGUMENT;
                    }
                    return {};
                  }};
  return rules;
}

// One device with its trust setup: a master key, a cloud key authorized as id 1
// and a user key, an in-memory storage and the gateway over it.
struct World {
  crypto::PrivateKey master = make_key();
  crypto::PrivateKey cloud = make_key();
  crypto::PrivateKey user = make_key();
  Bytes device = uuid(0xD1);
  DevicePolicy policy;
  MemoryStorage storage;
  std::optional<Gateway> gw;
  CommandRules rules = default_rules();
  std::uint64_t seed = 1;
  std::uint64_t next_request_id = 100;

  World() { open(); }

  // (Re)starts the gateway from what the storage holds, as after a power cycle.
  void open() {
    gw.reset();
    auto g = Gateway::open(device, masters_of(master), policy, storage, seeded_random(seed++));
    REQUIRE(g.ok());
    gw.emplace(std::move(*g));
  }

  Gateway& g() { return *gw; }

  Bytes authorization(std::uint64_t id = 1, std::vector<std::uint64_t> revoked = {},
                      UnixTime not_after = kT0 + 365 * kDay) const {
    return sign_authorization(master, authorization_body(id, cloud.public_key(), kT0 - kDay,
                                                         not_after, std::move(revoked)));
  }

  Bytes token(std::uint8_t tag = 1, std::uint32_t uses = 3, UnixTime expires_at = kT0 + 7 * kDay,
              std::uint64_t authorization_id = 1) const {
    return sign_token(cloud, token_body(tag, device, user.public_key(), authorization_id, uses,
                                        kT0 - 60, expires_at));
  }

  // Installs authorization 1 and offers one token (3 uses by default).
  void ready(std::uint32_t uses = 3, UnixTime t = kT0) {
    REQUIRE(g().install_authorization(authorization(), t).ok());
    auto offered = g().offer_token(token(1, uses), t);
    REQUIRE(offered.ok());
  }

  Bytes request(ByteView nonce, std::string command = "measure",
                std::map<std::string, std::string> args = {}) {
    return sign_request(
        user, request_body(device, nonce, next_request_id++, std::move(command), std::move(args)));
  }

  // Fetches a nonce and sends a fresh signed request for `command`.
  Result<Decision> run(std::string command = "measure", UnixTime t = kT0,
                       std::map<std::string, std::string> args = {}) {
    Bytes nonce = g().issue_nonce(t);
    return g().authorize_command(request(nonce, std::move(command), std::move(args)), t, rules);
  }

  std::uint32_t uses_left(std::uint8_t tag = 1) {
    auto it = g().state().tokens.find(uuid(tag));
    return it == g().state().tokens.end() ? 0 : it->second.uses_left;
  }
};

// Every single-byte change of `bytes` (each byte XOR 0x01, 0x80 and 0xFF).
template <class F>
void for_each_byte_flip(const Bytes& bytes, F&& f) {
  for (std::size_t i = 0; i < bytes.size(); ++i) {
    for (std::uint8_t mask : {std::uint8_t{0x01}, std::uint8_t{0x80}, std::uint8_t{0xFF}}) {
      Bytes flipped = bytes;
      flipped[i] = static_cast<std::uint8_t>(flipped[i] ^ mask);
      f(flipped, i);
    }
  }
}

}  // namespace tollgate::testkit
