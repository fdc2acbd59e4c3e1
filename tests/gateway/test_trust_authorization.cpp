// Installing cloud key authorizations: the master signature, the grow-only
// revocation set, validity windows and algorithm policy (THREATS A5, A6, A7,
// A9, A10, A11, A17 at the gateway level).
#include "tests/gateway/testkit.hpp"

using namespace tollgate;
using namespace tollgate::testkit;

TEST_CASE("authorization signed by the master installs, and installing it again changes nothing") {
  World w;
  auto first = w.g().install_authorization(w.authorization(), kT0);
  REQUIRE(first.ok());
  CHECK(first->id == 1);
  CHECK(first->cloud_key_id == w.cloud.public_key().id());
  CHECK_FALSE(first->already_installed);
  CHECK(w.storage.state().authorizations.count(1) == 1);
  const auto commits = w.storage.commits();

  auto again = w.g().install_authorization(w.authorization(), kT0);
  REQUIRE(again.ok());
  CHECK(again->already_installed);
  CHECK(w.storage.commits() == commits);
}

TEST_CASE("authorization signed by an unknown key is rejected as unknown signer (A17)") {
  World w;
  auto stranger = make_key();
  auto bytes = sign_authorization(stranger, authorization_body(1, w.cloud.public_key()));
  auto r = w.g().install_authorization(bytes, kT0);
  CHECK(r.error() == v1::ERROR_UNKNOWN_SIGNER);
  CHECK(w.g().state().authorizations.empty());
}

TEST_CASE("unknown signer's revocation list is not merged (A17)") {
  World w;
  auto stranger = make_key();
  auto bytes = sign_authorization(
      stranger, authorization_body(2, w.cloud.public_key(), kT0 - kDay, kT0 + kDay, {1}));
  CHECK(w.g().install_authorization(bytes, kT0).error() == v1::ERROR_UNKNOWN_SIGNER);
  CHECK(w.g().state().revoked_ids.empty());
}

TEST_CASE("authorization with any byte flipped is rejected and changes nothing (A5)") {
  World w;
  const Bytes good = w.authorization(1, {5});
  const DeviceState before = w.g().state();
  std::size_t tried = 0;
  for_each_byte_flip(good, [&](const Bytes& flipped, std::size_t i) {
    auto r = w.g().install_authorization(flipped, kT0);
    INFO("byte " << i);
    CHECK_FALSE(r.ok());
    ++tried;
  });
  CHECK(tried == 3 * good.size());
  CHECK(w.g().state().authorizations == before.authorizations);
  CHECK(w.g().state().revoked_ids.empty());
  REQUIRE(w.g().install_authorization(good, kT0).ok());
}

TEST_CASE("older authorization lacking a newer revocation does not revive the revoked id (A6)") {
  World w;
  auto cloud2 = make_key();
  const Bytes old_one = w.authorization(1);
  const Bytes new_one = sign_authorization(
      w.master, authorization_body(2, cloud2.public_key(), kT0 - kDay, kT0 + 365 * kDay, {1}));
  REQUIRE(w.g().install_authorization(old_one, kT0).ok());
  REQUIRE(w.g().install_authorization(new_one, kT0).ok());
  CHECK(w.g().state().authorizations.count(1) == 0);

  CHECK(w.g().install_authorization(old_one, kT0).error() == v1::ERROR_REVOKED);
  CHECK(w.g().state().revoked_ids.count(1) == 1);
  CHECK(w.g().state().authorizations.count(1) == 0);
  CHECK(w.g().offer_token(w.token(), kT0).error() == v1::ERROR_REVOKED);
}

TEST_CASE(
    "authorization that revokes an installed one drops it and the tokens minted under it (A7)") {
  World w;
  w.ready();
  REQUIRE(w.g().state().tokens.size() == 1);
  auto cloud2 = make_key();
  auto revoking = sign_authorization(
      w.master, authorization_body(2, cloud2.public_key(), kT0 - kDay, kT0 + kDay, {1}));
  auto r = w.g().install_authorization(revoking, kT0);
  REQUIRE(r.ok());
  CHECK(r->revocations_added == 1);
  CHECK(w.storage.state().authorizations.count(1) == 0);
  CHECK(w.storage.state().tokens.empty());
  CHECK(w.storage.state().revoked_ids == std::set<std::uint64_t>{1});
  CHECK(w.run().error() == v1::ERROR_NO_VALID_TOKEN);
  CHECK(w.g().offer_token(w.token(), kT0).error() == v1::ERROR_REVOKED);
}

TEST_CASE("refused authorization still merges its revocation list durably") {
  World w;
  SUBCASE("expired") {
    auto expired = sign_authorization(
        w.master, authorization_body(3, w.cloud.public_key(), kT0 - 10 * kDay, kT0 - kDay, {1, 2}));
    CHECK(w.g().install_authorization(expired, kT0).error() == v1::ERROR_EXPIRED);
  }
  SUBCASE("revoking itself") {
    auto self = sign_authorization(
        w.master, authorization_body(3, w.cloud.public_key(), kT0 - kDay, kT0 + kDay, {1, 2, 3}));
    CHECK(w.g().install_authorization(self, kT0).error() == v1::ERROR_REVOKED);
  }
  CHECK(w.storage.state().revoked_ids.count(1) == 1);
  CHECK(w.storage.state().revoked_ids.count(2) == 1);
  CHECK(w.storage.state().authorizations.empty());
  CHECK(w.g().install_authorization(w.authorization(1), kT0).error() == v1::ERROR_REVOKED);
}

TEST_CASE("expired authorization is refused, also after the clock is set back (A9)") {
  World w;
  auto short_lived = w.authorization(1, {}, kT0 + 100);
  CHECK(w.g().install_authorization(short_lived, kT0 + 101).error() == v1::ERROR_EXPIRED);
  CHECK(w.g().install_authorization(short_lived, kT0).error() == v1::ERROR_EXPIRED);
  CHECK(w.g().install_authorization(short_lived, 0).error() == v1::ERROR_EXPIRED);
  CHECK(w.g().state().authorizations.empty());
}

TEST_CASE("authorization valid in the future is refused beyond the skew and accepted within it") {
  World w;
  const auto skew = w.policy.clock_skew_seconds;
  auto later = sign_authorization(
      w.master, authorization_body(1, w.cloud.public_key(), kT0 + skew + 1, kT0 + kDay));
  CHECK(w.g().install_authorization(later, kT0).error() == v1::ERROR_NOT_YET_VALID);
  auto soon = sign_authorization(
      w.master, authorization_body(2, w.cloud.public_key(), kT0 + skew, kT0 + kDay));
  CHECK(w.g().install_authorization(soon, kT0).ok());
}

TEST_CASE("authorization whose algorithm label differs from the master key is rejected (A10)") {
  World w;
  const auto& rsa_master = shared_key(crypto::KeyType::kRsa2048);
  MemoryStorage storage;
  std::vector<crypto::PublicKey> masters;
  masters.push_back(rsa_master.public_key().clone());
  auto g = Gateway::open(w.device, std::move(masters), w.policy, storage);
  REQUIRE(g.ok());

  auto s = sign_object(
      v1::Signed::TYPE_CLOUD_KEY_AUTHORIZATION,
      [&] {
        std::string raw;
        authorization_body(1, w.cloud.public_key()).SerializeToString(&raw);
        return Bytes(raw.begin(), raw.end());
      }(),
      rsa_master);
  REQUIRE(s.ok());
  REQUIRE(g->install_authorization(serialize(*s), kT0).ok());

  v1::Signed relabelled = *s;
  relabelled.set_algorithm(v1::Signed::ALGORITHM_ED25519);
  CHECK(g->install_authorization(serialize(relabelled), kT0 + 1).error() ==
        v1::ERROR_ALGORITHM_MISMATCH);
  relabelled.set_algorithm(v1::Signed::ALGORITHM_ECDSA_P256_SHA256);
  CHECK(g->install_authorization(serialize(relabelled), kT0 + 1).error() ==
        v1::ERROR_ALGORITHM_MISMATCH);
}

TEST_CASE("master key outside the master allow-list is refused (A10)") {
  World w;
  w.policy.master_algorithms.allowed = {v1::Signed::ALGORITHM_RSA_PSS_SHA256};
  w.open();
  CHECK(w.g().install_authorization(w.authorization(), kT0).error() ==
        v1::ERROR_ALGORITHM_NOT_ALLOWED);
}

TEST_CASE("master RSA key below the policy minimum is refused as too weak (A10)") {
  World w;
  w.policy.master_algorithms.min_rsa_bits = 3072;
  const auto& weak = shared_key(crypto::KeyType::kRsa2048);
  MemoryStorage storage;
  std::vector<crypto::PublicKey> masters;
  masters.push_back(weak.public_key().clone());
  auto g = Gateway::open(w.device, std::move(masters), w.policy, storage);
  REQUIRE(g.ok());
  auto bytes = sign_authorization(weak, authorization_body(1, w.cloud.public_key()));
  CHECK(g->install_authorization(bytes, kT0).error() == v1::ERROR_KEY_TOO_WEAK);
}

TEST_CASE("cloud key outside the cloud allow-list is refused (A10)") {
  World w;
  w.policy.cloud_algorithms.allowed = {v1::Signed::ALGORITHM_ECDSA_P256_SHA256};
  w.open();
  CHECK(w.g().install_authorization(w.authorization(), kT0).error() ==
        v1::ERROR_ALGORITHM_NOT_ALLOWED);
  auto p256 = make_key(crypto::KeyType::kP256);
  auto ok = sign_authorization(w.master, authorization_body(2, p256.public_key()));
  CHECK(w.g().install_authorization(ok, kT0).ok());
}

TEST_CASE("master signature over another object type does not pass as an authorization (A11)") {
  World w;
  std::string raw;
  authorization_body(1, w.cloud.public_key()).SerializeToString(&raw);
  for (auto other : {v1::Signed::TYPE_DEVICE_TOKEN, v1::Signed::TYPE_COMMAND_REQUEST,
                     v1::Signed::TYPE_COMMAND_RESPONSE, v1::Signed::TYPE_AUDIT_EXPORT,
                     v1::Signed::TYPE_STATUS_RESPONSE}) {
    auto s = sign_object(other, as_bytes(raw), w.master);
    REQUIRE(s.ok());
    CHECK(w.g().install_authorization(serialize(*s), kT0).error() == v1::ERROR_WRONG_TYPE);
    v1::Signed relabelled = *s;
    relabelled.set_type(v1::Signed::TYPE_CLOUD_KEY_AUTHORIZATION);
    CHECK(w.g().install_authorization(serialize(relabelled), kT0).error() ==
          v1::ERROR_BAD_SIGNATURE);
  }
  CHECK(w.g().state().authorizations.empty());
}

TEST_CASE("junk, oversized and body-less inputs are rejected with specific reasons") {
  World w;
  CHECK(w.g().install_authorization(Bytes{0xFF, 0x01, 0x02}, kT0).error() == v1::ERROR_MALFORMED);
  CHECK(w.g().install_authorization(Bytes(kMaxSignedObjectSize + 1, 0), kT0).error() ==
        v1::ERROR_TOO_LARGE);
  CHECK(w.g().install_authorization(Bytes{}, kT0).error() == v1::ERROR_MALFORMED);
  // A master-signed body that is not an authorization.
  auto junk =
      sign_object(v1::Signed::TYPE_CLOUD_KEY_AUTHORIZATION, Bytes{0xFF, 0xFF, 0xFF}, w.master);
  REQUIRE(junk.ok());
  CHECK(w.g().install_authorization(serialize(*junk), kT0).error() == v1::ERROR_MALFORMED);
  auto zero_id = sign_authorization(w.master, authorization_body(0, w.cloud.public_key()));
  CHECK(w.g().install_authorization(zero_id, kT0).error() == v1::ERROR_MALFORMED);
  auto bad_key = authorization_body(1, w.cloud.public_key());
  bad_key.set_cloud_public_key("not a key");
  CHECK(w.g().install_authorization(sign_authorization(w.master, bad_key), kT0).error() ==
        v1::ERROR_MALFORMED);
  // A token is not an authorization.
  CHECK(w.g().install_authorization(w.token(), kT0).error() == v1::ERROR_WRONG_TYPE);
}

TEST_CASE("full authorization table refuses a new one; expired ones make room") {
  World w;
  w.policy.max_authorizations = 2;
  w.open();
  REQUIRE(w.g().install_authorization(w.authorization(1, {}, kT0 + 100), kT0).ok());
  REQUIRE(w.g().install_authorization(w.authorization(2), kT0).ok());
  CHECK(w.g().install_authorization(w.authorization(3), kT0).error() == v1::ERROR_LIMIT_REACHED);
  CHECK(w.g().install_authorization(w.authorization(3), kT0 + 101).ok());
  CHECK(w.g().state().authorizations.count(1) == 0);
  CHECK(w.g().state().authorizations.count(3) == 1);
}

TEST_CASE("full revocation set refuses an authorization and merges nothing") {
  World w;
  w.policy.max_revoked_ids = 3;
  w.open();
  REQUIRE(w.g().install_authorization(w.authorization(10, {1, 2}), kT0).ok());
  CHECK(w.g().install_authorization(w.authorization(11, {3, 4}), kT0).error() ==
        v1::ERROR_LIMIT_REACHED);
  CHECK(w.g().state().revoked_ids == std::set<std::uint64_t>{1, 2});
  CHECK(w.g().install_authorization(w.authorization(12, {2, 3}), kT0).ok());
  CHECK(w.g().install_authorization(w.authorization(13, {1, 2, 3, 4, 5}), kT0).error() ==
        v1::ERROR_TOO_LARGE);
}

TEST_CASE("another version of an installed id replaces it only when it lasts longer") {
  World w;
  auto cloud2 = make_key();
  auto longer = sign_authorization(
      w.master, authorization_body(1, cloud2.public_key(), kT0 - kDay, kT0 + 400 * kDay));
  auto shorter = sign_authorization(
      w.master, authorization_body(1, cloud2.public_key(), kT0 - kDay, kT0 + 10 * kDay));
  REQUIRE(w.g().install_authorization(w.authorization(1), kT0).ok());
  auto r = w.g().install_authorization(shorter, kT0);
  REQUIRE(r.ok());
  CHECK(r->already_installed);
  CHECK(w.g().state().authorizations.at(1) == w.authorization(1));
  REQUIRE(w.g().install_authorization(longer, kT0).ok());
  CHECK(w.g().state().authorizations.at(1) == longer);
  // Tokens of the replaced cloud key no longer chain to the installed authorization.
  CHECK(w.g().offer_token(w.token(), kT0).error() == v1::ERROR_UNKNOWN_SIGNER);
}

TEST_CASE("every install decision is audited with its reason") {
  World w;
  REQUIRE(w.g().install_authorization(w.authorization(), kT0).ok());
  CHECK(w.g().install_authorization(Bytes{1, 2, 3}, kT0).error() == v1::ERROR_MALFORMED);
  REQUIRE(w.g().flush(kT0));
  const auto& log = w.storage.audit_log();
  REQUIRE(log.size() == 2);
  CHECK(log[0].kind == AuditEvent::Kind::kInstallAuthorization);
  CHECK(log[0].accepted);
  CHECK(log[0].authorization_id == 1);
  CHECK_FALSE(log[1].accepted);
  CHECK(log[1].reason == v1::ERROR_MALFORMED);
}
