// Authorizing signed commands: user signature, nonce, command rules, token
// choice and charge-before-execute (THREATS A1, A3, A4, A5, A8, A10, A11 at the
// gateway level).
#include "tests/gateway/testkit.hpp"

using namespace tollgate;
using namespace tollgate::testkit;

TEST_CASE("valid command is charged durably before the decision is returned") {
  World w;
  w.ready(3);
  Bytes nonce = w.g().issue_nonce(kT0);
  CHECK(nonce.size() == kNonceSize);
  Bytes req = w.request(nonce);
  auto d = w.g().authorize_command(req, kT0, w.rules);
  REQUIRE(d.ok());
  CHECK(d->kind == Decision::Kind::kExecute);
  CHECK(d->cost == 1);
  CHECK(d->uses_left == 2);
  CHECK(d->token_id == uuid(1));
  CHECK(d->request.command() == "measure");
  CHECK(d->request_hash == crypto::sha256(req));
  CHECK(d->key.signer == w.user.public_key().id());
  CHECK(d->next_nonce.size() == kNonceSize);
  // Already durable: the storage holds the charge, the consumed nonce is gone,
  // the next nonce is in flight and the request is "charged, pending".
  const DeviceState& s = w.storage.state();
  CHECK(s.tokens.at(uuid(1)).uses_left == 2);
  CHECK(s.nonces.count(nonce) == 0);
  CHECK(s.nonces.count(d->next_nonce) == 1);
  REQUIRE(s.idempotency.count(d->key) == 1);
  CHECK_FALSE(s.idempotency.at(d->key).response.has_value());
  const AuditEvent& ev = w.storage.audit_log().back();
  CHECK(ev.accepted);
  CHECK(ev.uses_charged == 1);
  CHECK(ev.command == "measure");
}

TEST_CASE("the next nonce from a decision authorizes the following command") {
  World w;
  w.ready(3);
  auto first = w.run();
  REQUIRE(first.ok());
  auto second = w.g().authorize_command(w.request(first->next_nonce), kT0 + 1, w.rules);
  REQUIRE(second.ok());
  CHECK(second->uses_left == 1);
}

TEST_CASE("command from a user without tokens gets NO_VALID_TOKEN") {
  World w;
  REQUIRE(w.g().install_authorization(w.authorization(), kT0).ok());
  CHECK(w.run().error() == v1::ERROR_NO_VALID_TOKEN);
}

TEST_CASE("command signed by another key than the token's user key is rejected (A4)") {
  World w;
  w.ready(3);
  auto mallory = make_key();
  Bytes nonce = w.g().issue_nonce(kT0);
  auto body = request_body(w.device, nonce, 1);
  // Signed as Mallory, she has no token.
  CHECK(w.g().authorize_command(sign_request(mallory, body), kT0, w.rules).error() ==
        v1::ERROR_NO_VALID_TOKEN);
  // Mallory's signature presented under the user's key id.
  auto env = parse_signed(sign_request(mallory, body));
  REQUIRE(env.ok());
  env->set_signer_key_id(str(w.user.public_key().id()));
  CHECK(w.g().authorize_command(serialize(*env), kT0, w.rules).error() == v1::ERROR_BAD_SIGNATURE);
  CHECK(w.uses_left() == 3);
  // The nonce was not consumed by unverified requests.
  CHECK(w.g().authorize_command(sign_request(w.user, body), kT0, w.rules).ok());
}

TEST_CASE("command with any byte flipped is rejected and charges nothing (A5)") {
  World w;
  w.ready(3);
  Bytes nonce = w.g().issue_nonce(kT0);
  const Bytes good = w.request(nonce, "measure", {{"channel", "2"}});
  for_each_byte_flip(good, [&](const Bytes& flipped, std::size_t i) {
    INFO("byte " << i);
    auto r = w.g().authorize_command(flipped, kT0, w.rules);
    CHECK_FALSE(r.ok());
  });
  CHECK(w.uses_left() == 3);
  CHECK(w.g().state().idempotency.empty());
  CHECK(w.g().authorize_command(good, kT0, w.rules).ok());
}

TEST_CASE("replayed command is not executed or charged again (A1)") {
  World w;
  w.ready(3);
  Bytes nonce = w.g().issue_nonce(kT0);
  Bytes req = w.request(nonce);
  auto first = w.g().authorize_command(req, kT0, w.rules);
  REQUIRE(first.ok());
  REQUIRE(first->kind == Decision::Kind::kExecute);
  auto replay = w.g().authorize_command(req, kT0 + 5, w.rules);
  REQUIRE(replay.ok());
  CHECK(replay->kind != Decision::Kind::kExecute);
  CHECK(w.uses_left() == 2);
  // The same nonce in freshly signed bytes is stale.
  auto resigned = w.g().authorize_command(w.request(nonce), kT0 + 5, w.rules);
  CHECK(resigned.error() == v1::ERROR_STALE_NONCE);
  CHECK(w.uses_left() == 2);
}

TEST_CASE("command for another device is rejected as wrong device (A3)") {
  World w;
  w.ready(3);
  Bytes nonce = w.g().issue_nonce(kT0);
  auto req = sign_request(w.user, request_body(uuid(0xD2), nonce, 1));
  CHECK(w.g().authorize_command(req, kT0, w.rules).error() == v1::ERROR_WRONG_DEVICE);
  CHECK(w.uses_left() == 3);
}

TEST_CASE("nonce that is unknown, used or expired is stale") {
  World w;
  w.ready(5);
  SUBCASE("unknown") {
    Bytes made_up(kNonceSize, 0x42);
    CHECK(w.g().authorize_command(w.request(made_up), kT0, w.rules).error() ==
          v1::ERROR_STALE_NONCE);
  }
  SUBCASE("used") {
    Bytes nonce = w.g().issue_nonce(kT0);
    REQUIRE(w.g().authorize_command(w.request(nonce), kT0, w.rules).ok());
    CHECK(w.g().authorize_command(w.request(nonce), kT0, w.rules).error() == v1::ERROR_STALE_NONCE);
  }
  SUBCASE("expired") {
    Bytes nonce = w.g().issue_nonce(kT0);
    const UnixTime dead = kT0 + w.policy.nonce_lifetime_seconds;
    CHECK(w.g().authorize_command(w.request(nonce), dead, w.rules).error() ==
          v1::ERROR_STALE_NONCE);
  }
  SUBCASE("just before expiry is fine") {
    Bytes nonce = w.g().issue_nonce(kT0);
    const UnixTime last = kT0 + w.policy.nonce_lifetime_seconds - 1;
    CHECK(w.g().authorize_command(w.request(nonce), last, w.rules).ok());
  }
  CHECK(w.uses_left() >= 4);
}

TEST_CASE("nonces beyond the in-flight bound evict the oldest") {
  World w;
  w.policy.max_nonces_in_flight = 4;
  w.open();
  w.ready(10);
  std::vector<Bytes> nonces;
  for (int i = 0; i < 6; ++i) nonces.push_back(w.g().issue_nonce(kT0 + i));
  CHECK(w.g().state().nonces.size() == 4);
  CHECK(w.g().authorize_command(w.request(nonces[0]), kT0 + 6, w.rules).error() ==
        v1::ERROR_STALE_NONCE);
  CHECK(w.g().authorize_command(w.request(nonces[1]), kT0 + 6, w.rules).error() ==
        v1::ERROR_STALE_NONCE);
  CHECK(w.g().authorize_command(w.request(nonces[2]), kT0 + 6, w.rules).ok());
  CHECK(w.g().authorize_command(w.request(nonces[5]), kT0 + 6, w.rules).ok());
  CHECK(w.g().state().nonces.size() <= 4);
}

TEST_CASE("nonces issued within one second are evicted in issue order, never the newest") {
  World w;
  w.policy.max_nonces_in_flight = 4;
  w.open();
  w.ready(10);
  // A frozen clock: every nonce shares one expiry, so only the issue order can
  // tell old from new (byte order would sooner or later evict the newest).
  std::vector<Bytes> nonces;
  for (int i = 0; i < 40; ++i) nonces.push_back(w.g().issue_nonce(kT0));
  CHECK(w.g().state().nonces.size() == 4);
  for (int i = 0; i < 36; ++i)
    CHECK_FALSE(w.g().state().nonces.count(nonces[static_cast<std::size_t>(i)]));
  CHECK(w.g().authorize_command(w.request(nonces.back()), kT0, w.rules).ok());
  CHECK(w.g().authorize_command(w.request(nonces[36]), kT0, w.rules).ok());
}

TEST_CASE("verified command consumes its nonce even when it is rejected") {
  World w;
  w.ready(3);
  Bytes nonce = w.g().issue_nonce(kT0);
  CHECK(w.g().authorize_command(w.request(nonce, "self-destruct"), kT0, w.rules).error() ==
        v1::ERROR_UNKNOWN_COMMAND);
  CHECK(w.g().authorize_command(w.request(nonce, "measure"), kT0, w.rules).error() ==
        v1::ERROR_STALE_NONCE);
  CHECK(w.uses_left() == 3);
}

TEST_CASE("unknown command, bad argument and missing role are rejected without a charge") {
  World w;
  w.ready(3);
  CHECK(w.run("self-destruct").error() == v1::ERROR_UNKNOWN_COMMAND);
  CHECK(w.run("dose", kT0, {{"ml", "10000"}}).error() == v1::ERROR_BAD_ARGUMENT);
  CHECK(w.run("dose", kT0).error() == v1::ERROR_BAD_ARGUMENT);
  CHECK(w.run("calibrate").error() == v1::ERROR_ROLE_NOT_ALLOWED);
  CHECK(w.uses_left() == 3);
  auto ok = w.run("dose", kT0, {{"ml", "5"}});
  REQUIRE(ok.ok());
  CHECK(ok->request.arguments().at("ml") == "5");
}

TEST_CASE("token granting the role allows the command and pays its cost") {
  World w;
  REQUIRE(w.g().install_authorization(w.authorization(), kT0).ok());
  auto t = token_body(7, w.device, w.user.public_key(), 1, 5);
  add_role(t, "service");
  REQUIRE(w.g().offer_token(sign_token(w.cloud, t), kT0).ok());
  REQUIRE(w.g().offer_token(w.token(1, 5, kT0 + kDay), kT0).ok());  // no roles, expires sooner
  auto d = w.run("calibrate");
  REQUIRE(d.ok());
  CHECK(d->token_id == uuid(7));
  CHECK(d->cost == 2);
  CHECK(w.uses_left(7) == 3);
  CHECK(w.uses_left(1) == 5);
}

TEST_CASE("token used beyond its uses is rejected as exhausted (A8)") {
  World w;
  w.ready(2);
  REQUIRE(w.run().ok());
  // One use left: a command costing 2 cannot be paid.
  auto t = token_body(7, w.device, w.user.public_key(), 1, 1);
  add_role(t, "service");
  REQUIRE(w.g().offer_token(sign_token(w.cloud, t), kT0).ok());
  CHECK(w.run("calibrate").error() == v1::ERROR_USES_EXHAUSTED);
  REQUIRE(w.run().ok());
  REQUIRE(w.run().ok());  // token 7 pays the last one
  CHECK(w.run().error() == v1::ERROR_NO_VALID_TOKEN);
  CHECK(w.storage.state().tombstones.size() == 2);
}

TEST_CASE("soonest-expiring valid token pays first") {
  World w;
  REQUIRE(w.g().install_authorization(w.authorization(), kT0).ok());
  REQUIRE(w.g().offer_token(w.token(1, 3, kT0 + 5 * kDay), kT0).ok());
  REQUIRE(w.g().offer_token(w.token(2, 3, kT0 + 2 * kDay), kT0).ok());
  REQUIRE(w.g().offer_token(w.token(3, 3, kT0 + 9 * kDay), kT0).ok());
  auto d = w.run();
  REQUIRE(d.ok());
  CHECK(d->token_id == uuid(2));
  // Once it expired the next soonest pays.
  auto later = w.run("measure", kT0 + 2 * kDay);
  REQUIRE(later.ok());
  CHECK(later->token_id == uuid(1));
}

TEST_CASE("free command needs a valid token but charges nothing") {
  World w;
  REQUIRE(w.g().install_authorization(w.authorization(), kT0).ok());
  CHECK(w.run("status").error() == v1::ERROR_NO_VALID_TOKEN);
  REQUIRE(w.g().offer_token(w.token(1, 1), kT0).ok());
  auto d = w.run("status");
  REQUIRE(d.ok());
  CHECK(d->cost == 0);
  CHECK(w.uses_left() == 1);
}

TEST_CASE("user signature over another object type does not pass as a command (A11)") {
  World w;
  w.ready(3);
  Bytes nonce = w.g().issue_nonce(kT0);
  std::string raw;
  request_body(w.device, nonce, 1).SerializeToString(&raw);
  for (auto other : {v1::Signed::TYPE_COMMAND_RESPONSE, v1::Signed::TYPE_DEVICE_TOKEN,
                     v1::Signed::TYPE_STATUS_RESPONSE}) {
    auto s = sign_object(other, as_bytes(raw), w.user);
    REQUIRE(s.ok());
    CHECK(w.g().authorize_command(serialize(*s), kT0, w.rules).error() == v1::ERROR_WRONG_TYPE);
    v1::Signed relabelled = *s;
    relabelled.set_type(v1::Signed::TYPE_COMMAND_REQUEST);
    CHECK(w.g().authorize_command(serialize(relabelled), kT0, w.rules).error() ==
          v1::ERROR_BAD_SIGNATURE);
  }
  CHECK(w.uses_left() == 3);
}

TEST_CASE("command whose algorithm label differs from the user key is rejected (A10)") {
  World w;
  w.ready(3);
  Bytes nonce = w.g().issue_nonce(kT0);
  auto env = parse_signed(w.request(nonce));
  REQUIRE(env.ok());
  env->set_algorithm(v1::Signed::ALGORITHM_RSA_PSS_SHA256);
  CHECK(w.g().authorize_command(serialize(*env), kT0, w.rules).error() ==
        v1::ERROR_ALGORITHM_MISMATCH);
  CHECK(w.uses_left() == 3);
}

TEST_CASE("commands signed with P-256 and RSA user keys are authorized") {
  for (auto type : {crypto::KeyType::kP256, crypto::KeyType::kRsa2048}) {
    World w;
    if (type == crypto::KeyType::kP256) {
      w.user = make_key(type);
    } else {
      auto copy = crypto::PrivateKey::from_pem(*shared_key(type).pem());
      REQUIRE(copy.ok());
      w.user = std::move(*copy);
    }
    w.ready(2);
    auto d = w.run();
    REQUIRE(d.ok());
    CHECK(d->uses_left == 1);
  }
}

TEST_CASE("every command rejection is audited with its reason") {
  World w;
  w.ready(3);
  CHECK(w.run("self-destruct").error() == v1::ERROR_UNKNOWN_COMMAND);
  REQUIRE(w.g().flush(kT0));
  const auto& log = w.storage.audit_log();
  REQUIRE_FALSE(log.empty());
  CHECK(log.back().kind == AuditEvent::Kind::kAuthorizeCommand);
  CHECK_FALSE(log.back().accepted);
  CHECK(log.back().reason == v1::ERROR_UNKNOWN_COMMAND);
  CHECK(log.back().command == "self-destruct");
}
