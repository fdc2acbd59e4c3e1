// Offering and checking device tokens: the chain to an installed authorization,
// device binding, validity window, the time floor and use accounting (THREATS
// A2, A3, A5, A7, A8, A9, A10, A11, A17 at the gateway level).
#include "tests/gateway/testkit.hpp"

using namespace tollgate;
using namespace tollgate::testkit;

TEST_CASE("valid token is stored with its authorized uses") {
  World w;
  REQUIRE(w.g().install_authorization(w.authorization(), kT0).ok());
  auto r = w.g().offer_token(w.token(1, 5), kT0);
  REQUIRE(r.ok());
  CHECK(r->uses_left == 5);
  CHECK_FALSE(r->already_known);
  CHECK(r->user_key_id == w.user.public_key().id());
  CHECK(r->cloud_key_id == w.cloud.public_key().id());
  CHECK(w.storage.state().tokens.at(uuid(1)).uses_left == 5);
}

TEST_CASE("token minted for another device is rejected as wrong device (A3)") {
  World w;
  REQUIRE(w.g().install_authorization(w.authorization(), kT0).ok());
  auto other = sign_token(w.cloud, token_body(1, uuid(0xD2), w.user.public_key()));
  CHECK(w.g().offer_token(other, kT0).error() == v1::ERROR_WRONG_DEVICE);
  CHECK(w.g().check_token(other, kT0).error() == v1::ERROR_WRONG_DEVICE);
  CHECK(w.g().state().tokens.empty());
}

TEST_CASE("re-offered token keeps the uses already charged (A2)") {
  World w;
  w.ready(3);
  REQUIRE(w.run().ok());
  CHECK(w.uses_left() == 2);
  auto again = w.g().offer_token(w.token(1, 3), kT0 + 1);
  REQUIRE(again.ok());
  CHECK(again->already_known);
  CHECK(again->uses_left == 2);
  CHECK(w.uses_left() == 2);
}

TEST_CASE("re-offered exhausted token restores no uses (A2)") {
  World w;
  w.ready(2);
  REQUIRE(w.run().ok());
  REQUIRE(w.run().ok());
  CHECK(w.g().state().tokens.empty());
  CHECK(w.storage.state().tombstones.count(uuid(1)) == 1);
  CHECK(w.g().offer_token(w.token(1, 2), kT0 + 5).error() == v1::ERROR_USES_EXHAUSTED);
  CHECK(w.run("measure", kT0 + 5).error() == v1::ERROR_NO_VALID_TOKEN);
  // Also after a restart from what was persisted.
  w.open();
  CHECK(w.g().offer_token(w.token(1, 2), kT0 + 6).error() == v1::ERROR_USES_EXHAUSTED);
  CHECK(w.g().check_token(w.token(1, 2), kT0 + 6).error() == v1::ERROR_USES_EXHAUSTED);
}

TEST_CASE("token with any byte flipped is rejected and stores nothing (A5)") {
  World w;
  REQUIRE(w.g().install_authorization(w.authorization(), kT0).ok());
  const Bytes good = w.token(1, 3);
  for_each_byte_flip(good, [&](const Bytes& flipped, std::size_t i) {
    INFO("byte " << i);
    CHECK_FALSE(w.g().offer_token(flipped, kT0).ok());
  });
  CHECK(w.g().state().tokens.empty());
  CHECK(w.g().offer_token(good, kT0).ok());
}

TEST_CASE("token minted under a revoked authorization is rejected as revoked (A7)") {
  World w;
  REQUIRE(w.g().install_authorization(w.authorization(1), kT0).ok());
  auto cloud2 = make_key();
  REQUIRE(w.g()
              .install_authorization(
                  sign_authorization(w.master, authorization_body(2, cloud2.public_key(),
                                                                  kT0 - kDay, kT0 + kDay, {1})),
                  kT0)
              .ok());
  CHECK(w.g().offer_token(w.token(), kT0).error() == v1::ERROR_REVOKED);
  CHECK(w.g().check_token(w.token(), kT0).error() == v1::ERROR_REVOKED);
}

TEST_CASE("token minted under an expired authorization is rejected as expired (A7)") {
  World w;
  REQUIRE(w.g().install_authorization(w.authorization(1, {}, kT0 + 100), kT0).ok());
  REQUIRE(w.g().offer_token(w.token(1), kT0).ok());
  CHECK(w.g().offer_token(w.token(2), kT0 + 101).error() == v1::ERROR_EXPIRED);
  CHECK(w.run("measure", kT0 + 101).error() == v1::ERROR_EXPIRED);
}

TEST_CASE("token naming an authorization the device lacks asks for that authorization") {
  World w;
  CHECK(w.g().offer_token(w.token(), kT0).error() == v1::ERROR_AUTHORIZATION_NOT_INSTALLED);
  REQUIRE(w.g().install_authorization(w.authorization(), kT0).ok());
  CHECK(w.g().offer_token(w.token(), kT0).ok());
  // Signed by the installed cloud key but naming another id.
  CHECK(w.g().offer_token(w.token(2, 3, kT0 + kDay, 9), kT0).error() ==
        v1::ERROR_AUTHORIZATION_NOT_INSTALLED);
}

TEST_CASE("token signed by an unknown key is rejected as unknown signer (A17)") {
  World w;
  REQUIRE(w.g().install_authorization(w.authorization(), kT0).ok());
  auto stranger = make_key();
  auto forged = sign_token(stranger, token_body(1, w.device, w.user.public_key()));
  CHECK(w.g().offer_token(forged, kT0).error() == v1::ERROR_UNKNOWN_SIGNER);
  // Junk signed by a stranger: nothing to explain, still unknown signer.
  auto junk = sign_object(v1::Signed::TYPE_DEVICE_TOKEN, Bytes{0xFF, 0xFF}, stranger);
  REQUIRE(junk.ok());
  CHECK(w.g().offer_token(serialize(*junk), kT0).error() == v1::ERROR_UNKNOWN_SIGNER);
  CHECK(w.g().state().tokens.empty());
}

TEST_CASE("token signed by another installed cloud key than its authorization's is refused (A17)") {
  World w;
  auto cloud2 = make_key();
  REQUIRE(w.g().install_authorization(w.authorization(1), kT0).ok());
  REQUIRE(w.g()
              .install_authorization(
                  sign_authorization(w.master, authorization_body(2, cloud2.public_key())), kT0)
              .ok());
  auto cross = sign_token(cloud2, token_body(1, w.device, w.user.public_key(), 1));
  CHECK(w.g().offer_token(cross, kT0).error() == v1::ERROR_UNKNOWN_SIGNER);
}

TEST_CASE("expired token is rejected (A8)") {
  World w;
  REQUIRE(w.g().install_authorization(w.authorization(), kT0).ok());
  auto t = w.token(1, 3, kT0 + 100);
  REQUIRE(w.g().offer_token(t, kT0 + 99).ok());
  CHECK(w.g().check_token(t, kT0 + 100).error() == v1::ERROR_EXPIRED);
  CHECK(w.g().offer_token(t, kT0 + 100).error() == v1::ERROR_EXPIRED);
  CHECK(w.run("measure", kT0 + 100).error() == v1::ERROR_EXPIRED);
  CHECK(w.uses_left() == 3);
}

TEST_CASE("clock set back after a token expired does not revive it (A9)") {
  World w;
  REQUIRE(w.g().install_authorization(w.authorization(), kT0).ok());
  auto t = w.token(1, 3, kT0 + 100);
  REQUIRE(w.g().offer_token(t, kT0).ok());
  CHECK(w.run("measure", kT0 + 200).error() == v1::ERROR_EXPIRED);
  CHECK(w.g().time_floor() == kT0 + 200);
  for (UnixTime back : {kT0 + 50, kT0, UnixTime{0}, UnixTime{-1}}) {
    CAPTURE(back);
    CHECK(w.g().now(back) == kT0 + 200);
    CHECK(w.g().check_token(t, back).error() == v1::ERROR_EXPIRED);
    CHECK(w.run("measure", back).error() == v1::ERROR_EXPIRED);
  }
  // The floor survives a restart once committed.
  REQUIRE(w.g().flush(0));
  w.open();
  CHECK(w.g().time_floor() == kT0 + 200);
  CHECK(w.g().check_token(t, 0).error() == v1::ERROR_EXPIRED);
}

TEST_CASE("valid token raises the time floor to its issued_at") {
  World w;
  REQUIRE(w.g().install_authorization(w.authorization(), kT0 - 1000).ok());
  auto t = sign_token(w.cloud, token_body(1, w.device, w.user.public_key(), 1, 3, kT0, kT0 + kDay));
  REQUIRE(w.g().offer_token(t, kT0 - 200).ok());  // within the 300 s skew
  CHECK(w.g().time_floor() == kT0);
  CHECK(w.storage.state().time_floor == kT0);
  CHECK(w.g().now(0) == kT0);
}

TEST_CASE("token issued beyond the skew allowance is not yet valid") {
  World w;
  REQUIRE(w.g().install_authorization(w.authorization(), kT0).ok());
  const auto skew = w.policy.clock_skew_seconds;
  auto future = sign_token(
      w.cloud, token_body(1, w.device, w.user.public_key(), 1, 3, kT0 + skew + 1, kT0 + kDay));
  CHECK(w.g().offer_token(future, kT0).error() == v1::ERROR_NOT_YET_VALID);
  CHECK(w.g().time_floor() == kT0);
}

TEST_CASE("token whose user key is outside the user allow-list is refused (A10)") {
  World w;
  w.policy.user_algorithms.allowed = {v1::Signed::ALGORITHM_ED25519};
  w.open();
  REQUIRE(w.g().install_authorization(w.authorization(), kT0).ok());
  auto p256_user = make_key(crypto::KeyType::kP256);
  auto t = sign_token(w.cloud, token_body(1, w.device, p256_user.public_key()));
  CHECK(w.g().offer_token(t, kT0).error() == v1::ERROR_ALGORITHM_NOT_ALLOWED);
  w.policy.user_algorithms = AlgorithmPolicy{};
  w.policy.user_algorithms.min_rsa_bits = 3072;
  w.open();
  auto rsa_user = sign_token(
      w.cloud, token_body(2, w.device, shared_key(crypto::KeyType::kRsa2048).public_key()));
  CHECK(w.g().offer_token(rsa_user, kT0).error() == v1::ERROR_KEY_TOO_WEAK);
}

TEST_CASE("token whose algorithm label differs from the cloud key is rejected (A10)") {
  World w;
  REQUIRE(w.g().install_authorization(w.authorization(), kT0).ok());
  auto env = parse_signed(w.token());
  REQUIRE(env.ok());
  for (auto alg : {v1::Signed::ALGORITHM_ECDSA_P256_SHA256, v1::Signed::ALGORITHM_RSA_PSS_SHA256}) {
    v1::Signed relabelled = *env;
    relabelled.set_algorithm(alg);
    CHECK(w.g().offer_token(serialize(relabelled), kT0).error() == v1::ERROR_ALGORITHM_MISMATCH);
  }
}

TEST_CASE("cloud signature over another object type does not pass as a token (A11)") {
  World w;
  REQUIRE(w.g().install_authorization(w.authorization(), kT0).ok());
  std::string raw;
  token_body(1, w.device, w.user.public_key()).SerializeToString(&raw);
  for (auto other : {v1::Signed::TYPE_CLOUD_KEY_AUTHORIZATION, v1::Signed::TYPE_COMMAND_REQUEST,
                     v1::Signed::TYPE_COMMAND_RESPONSE}) {
    auto s = sign_object(other, as_bytes(raw), w.cloud);
    REQUIRE(s.ok());
    CHECK(w.g().offer_token(serialize(*s), kT0).error() == v1::ERROR_WRONG_TYPE);
    v1::Signed relabelled = *s;
    relabelled.set_type(v1::Signed::TYPE_DEVICE_TOKEN);
    CHECK(w.g().offer_token(serialize(relabelled), kT0).error() == v1::ERROR_BAD_SIGNATURE);
  }
  CHECK(w.g().state().tokens.empty());
}

TEST_CASE("token fields out of range are malformed or too large") {
  World w;
  REQUIRE(w.g().install_authorization(w.authorization(), kT0).ok());
  auto base = token_body(1, w.device, w.user.public_key());
  auto zero_uses = base;
  zero_uses.set_authorized_uses(0);
  CHECK(w.g().offer_token(sign_token(w.cloud, zero_uses), kT0).error() == v1::ERROR_MALFORMED);
  auto short_id = base;
  short_id.set_token_id("abc");
  CHECK(w.g().offer_token(sign_token(w.cloud, short_id), kT0).error() == v1::ERROR_MALFORMED);
  auto bad_key = base;
  bad_key.set_user_public_key("junk");
  CHECK(w.g().offer_token(sign_token(w.cloud, bad_key), kT0).error() == v1::ERROR_MALFORMED);
  auto backwards = base;
  backwards.set_expires_at(base.issued_at());
  CHECK(w.g().offer_token(sign_token(w.cloud, backwards), kT0).error() == v1::ERROR_MALFORMED);
  auto many_roles = base;
  for (std::size_t i = 0; i <= w.policy.max_roles_per_token; ++i) add_role(many_roles, "r");
  CHECK(w.g().offer_token(sign_token(w.cloud, many_roles), kT0).error() == v1::ERROR_TOO_LARGE);
  CHECK(w.g().state().tokens.empty());
}

TEST_CASE("check_token gives the offer's answer and changes nothing") {
  World w;
  REQUIRE(w.g().install_authorization(w.authorization(), kT0).ok());
  REQUIRE(w.g().flush(kT0));
  const DeviceState before = w.g().state();
  const auto commits = w.storage.commits();
  auto r = w.g().check_token(w.token(1, 4), kT0 + 10);
  REQUIRE(r.ok());
  CHECK(r->uses_left == 4);
  CHECK(w.g().state() == before);
  CHECK(w.g().pending().empty());
  CHECK(w.storage.commits() == commits);
}

TEST_CASE("full token table refuses new tokens until expired ones can be forgotten") {
  World w;
  w.policy.max_tokens = 2;
  w.open();
  REQUIRE(w.g().install_authorization(w.authorization(), kT0).ok());
  REQUIRE(w.g().offer_token(w.token(1, 1, kT0 + 100), kT0).ok());
  REQUIRE(w.g().offer_token(w.token(2, 3), kT0).ok());
  REQUIRE(w.run("measure", kT0).ok());  // token 1 pays (soonest expiring) and becomes a tombstone
  CHECK(w.g().state().tombstones.count(uuid(1)) == 1);
  CHECK(w.g().offer_token(w.token(3), kT0 + 1).error() == v1::ERROR_LIMIT_REACHED);
  // Re-offering a known token still works when the table is full.
  CHECK(w.g().offer_token(w.token(2, 3), kT0 + 1).ok());
  // Once token 1 expired its tombstone may go.
  REQUIRE(w.g().offer_token(w.token(3), kT0 + 100).ok());
  CHECK(w.g().state().tombstones.empty());
  CHECK(w.g().state().tokens.size() == 2);
}
