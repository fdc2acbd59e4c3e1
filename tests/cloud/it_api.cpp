// The authority's API over real TLS on loopback (Beast server, Beast client
// verifying the development CA): each attack gets its specific 4xx and leaves
// the database exactly as it was; pay-per-use holds under 32 concurrent clients.
#include <doctest/doctest.h>

#include <thread>
#include <vector>

#include "tests/cloud/cloud_testkit.hpp"
#include "tools/cloud/dev_pki.hpp"
#include "tools/cloud/https_client.hpp"
#include "tools/cloud/server.hpp"

using namespace tollgate;
using namespace tollgate::cloud;
using namespace tollgate::cloud::testkit;

namespace {

struct TlsCloud : CloudFixture {
  DevPki pki = make_dev_pki({"localhost"}, {"127.0.0.1"}, 2);
  std::unique_ptr<HttpsServer> server;
  std::unique_ptr<HttpsClient> client;

  explicit TlsCloud(Backend b = Backend::kSqlite, AuthorityOptions o = cheap_options())
      : CloudFixture(b, o) {
    ServerOptions so;
    so.port = 0;
    so.cert_chain_pem = pki.server_cert_pem;
    so.private_key_pem = pki.server_key_pem;
    so.threads = 4;
    server = std::make_unique<HttpsServer>(*authority, so);
    server->start();
    client = std::make_unique<HttpsClient>(client_options());
    transport = [this](const std::string& method, const std::string& target,
                       const std::string& body, const std::string& bearer) {
      auto r = client->request(method, target, body, bearer);
      return std::make_pair(r.status, r.body);
    };
  }
  ~TlsCloud() {
    client.reset();
    server.reset();
  }
  HttpsClientOptions client_options() const {
    HttpsClientOptions o;
    o.port = server->port();
    o.ca_pem = pki.ca_cert_pem;
    return o;
  }
};

}  // namespace

TEST_CASE_TEMPLATE("a wrong password is 401 bad_credentials and opens no session", B, OnSqlite,
                   OnPostgres) {
  TOLLGATE_CLOUD_FIXTURE(TlsCloud, c, B);
  const auto before = c.store->counts();
  auto r = c.post("/v1/login", json::object{{"user", "alice"}, {"password", "not-hers"}});
  CHECK(r.status == 401);
  CHECK(r.error() == "bad_credentials");
  auto u = c.post("/v1/login", json::object{{"user", "mallory"}, {"password", "whatever"}});
  CHECK(u.status == 401);
  CHECK(u.error() == "bad_credentials");  // unknown users look the same
  CHECK(c.store->counts() == before);
}

TEST_CASE_TEMPLATE("repeated failed logins are rate limited, and the right password is refused too",
                   B, OnSqlite, OnPostgres) {
  TOLLGATE_CLOUD_FIXTURE(TlsCloud, c, B);
  for (int i = 0; i < 10; ++i) {
    CHECK(c.post("/v1/login", json::object{{"user", "alice"}, {"password", "guess"}}).status ==
          401);
  }
  auto r = c.post("/v1/login", json::object{{"user", "alice"}, {"password", "alice-password"}});
  CHECK(r.status == 429);
  CHECK(r.error() == "rate_limited");
  c.now += 60;  // the next window
  CHECK(
      c.post("/v1/login", json::object{{"user", "alice"}, {"password", "alice-password"}}).status ==
      200);
}

TEST_CASE_TEMPLATE("a token for another user's device is 403 not_entitled and mints nothing", B,
                   OnSqlite, OnPostgres) {
  TOLLGATE_CLOUD_FIXTURE(TlsCloud, c, B);
  const std::string alice = c.login("alice", "alice-password");
  REQUIRE(c.enroll(alice, c.alice_key, c.alice_id).status == 200);
  const auto before = c.store->counts();
  auto r = c.mint(alice, c.device2, 1);  // bob's device
  CHECK(r.status == 403);
  CHECK(r.error() == "not_entitled");
  auto unknown = c.mint(alice, *uuid_from_string("00000000-0000-4000-8000-00000000dead"), 1);
  CHECK(unknown.status == 403);
  CHECK(unknown.error() == "not_entitled");  // unknown devices look the same
  auto g = c.call("GET", "/v1/devices/" + uuid_to_string(c.device2), {}, alice);
  CHECK(g.status == 403);
  CHECK(c.store->counts() == before);
}

TEST_CASE_TEMPLATE("over-entitlement is refused with its specific code and reserves nothing", B,
                   OnSqlite, OnPostgres) {
  TOLLGATE_CLOUD_FIXTURE(TlsCloud, c, B);
  const std::string alice = c.login("alice", "alice-password");
  REQUIRE(c.enroll(alice, c.alice_key, c.alice_id).status == 200);
  const auto before = c.store->counts();

  auto too_many_uses = c.mint(alice, c.device1, 6);  // 5 per token
  CHECK(too_many_uses.status == 403);
  CHECK(too_many_uses.error() == "entitlement_exceeded");

  auto over_balance = c.mint(alice, c.device1, 5, 5);  // 25 > 20
  CHECK(over_balance.status == 402);
  CHECK(over_balance.error() == "insufficient_balance");
  CHECK(c.store->counts() == before);

  // bob's subscription caps outstanding tokens at 2.
  const std::string bob = c.login("bob", "bob-password");
  crypto::PrivateKey bob_key = new_key();
  REQUIRE(c.enroll(bob, bob_key, c.bob_id).status == 200);
  REQUIRE(c.mint(bob, c.device2, 10, 2).status == 200);
  const auto capped = c.store->counts();
  auto third = c.mint(bob, c.device2, 1);
  CHECK(third.status == 409);
  CHECK(third.error() == "outstanding_cap");
  CHECK(c.store->counts() == capped);
}

TEST_CASE_TEMPLATE("a replayed enrollment is 409 challenge_used and enrolls nothing", B, OnSqlite,
                   OnPostgres) {
  TOLLGATE_CLOUD_FIXTURE(TlsCloud, c, B);
  const std::string alice = c.login("alice", "alice-password");
  const auto& der = c.alice_key.public_key().spki_der();
  auto ch = c.post("/v1/enroll/challenge", json::object{{"public_key", base64_encode(der)}}, alice);
  REQUIRE(ch.status == 200);
  auto challenge = *base64_decode(std::string(ch.obj().at("challenge").as_string()));
  auto sig = *c.alice_key.sign(enrollment_signing_input(challenge, c.alice_id, der));
  json::object req{{"challenge_id", ch.obj().at("challenge_id")},
                   {"signature", base64_encode(sig)}};
  REQUIRE(c.post("/v1/enroll", req, alice).status == 200);
  const auto before = c.store->counts();
  auto replay = c.post("/v1/enroll", req, alice);
  CHECK(replay.status == 409);
  CHECK(replay.error() == "challenge_used");
  // Bob replaying alice's proof with his own session learns nothing either.
  const std::string bob = c.login("bob", "bob-password");
  const auto after_login = c.store->counts();
  auto stolen = c.post("/v1/enroll", req, bob);
  CHECK(stolen.status == 404);
  CHECK(stolen.error() == "unknown_challenge");
  CHECK(c.store->counts() == after_login);
  CHECK(after_login.user_keys == before.user_keys);
}

TEST_CASE_TEMPLATE("an enrollment signed by another key is 403 proof_failed and enrolls nothing", B,
                   OnSqlite, OnPostgres) {
  TOLLGATE_CLOUD_FIXTURE(TlsCloud, c, B);
  const std::string alice = c.login("alice", "alice-password");
  const auto& der = c.alice_key.public_key().spki_der();
  auto ch = c.post("/v1/enroll/challenge", json::object{{"public_key", base64_encode(der)}}, alice);
  REQUIRE(ch.status == 200);
  const auto before = c.store->counts();
  auto challenge = *base64_decode(std::string(ch.obj().at("challenge").as_string()));
  crypto::PrivateKey other = new_key();
  auto sig = *other.sign(enrollment_signing_input(challenge, c.alice_id, der));
  auto r = c.post("/v1/enroll",
                  json::object{{"challenge_id", ch.obj().at("challenge_id")},
                               {"signature", base64_encode(sig)}},
                  alice);
  CHECK(r.status == 403);
  CHECK(r.error() == "proof_failed");
  CHECK(c.store->counts() == before);
}

TEST_CASE_TEMPLATE("malformed and oversized requests get 400, 413 and 431 and change nothing", B,
                   OnSqlite, OnPostgres) {
  TOLLGATE_CLOUD_FIXTURE(TlsCloud, c, B);
  const std::string alice = c.login("alice", "alice-password");
  const auto before = c.store->counts();

  auto bad = c.call("POST", "/v1/tokens", "{\"device_id\": ", alice);
  CHECK(bad.status == 400);
  CHECK(bad.error() == "malformed_json");
  auto not_object = c.call("POST", "/v1/tokens", "[1,2,3]", alice);
  CHECK(not_object.status == 400);
  CHECK(not_object.error() == "malformed_json");
  auto deep = c.call("POST", "/v1/tokens", std::string(64, '[') + std::string(64, ']'), alice);
  CHECK(deep.status == 400);
  auto wrong_type = c.post("/v1/tokens", json::object{{"device_id", 42}}, alice);
  CHECK(wrong_type.status == 400);
  CHECK(wrong_type.error() == "bad_field");
  auto extra =
      c.post("/v1/login", json::object{{"user", "alice"}, {"password", "x"}, {"admin", true}});
  CHECK(extra.status == 400);
  CHECK(extra.error() == "unknown_field");
  auto bad_b64 = c.post("/v1/enroll/challenge", json::object{{"public_key", "not base64!"}}, alice);
  CHECK(bad_b64.status == 400);
  CHECK(bad_b64.error() == "bad_field");

  auto big =
      c.client->request("POST", "/v1/login", "{\"user\":\"" + std::string(70 * 1024, 'a') + "\"}");
  CHECK(big.status == 413);
  CHECK(big.body.find("body_too_large") != std::string::npos);
  auto huge_header = c.client->request("GET", "/v1/authorization", {}, {},
                                       {{"X-Padding", std::string(9 * 1024, 'b')}});
  CHECK(huge_header.status == 431);
  CHECK(huge_header.body.find("header_too_large") != std::string::npos);
  auto not_json = c.client->request("POST", "/v1/login", "user=alice", {},
                                    {{"Content-Type", "application/x-www-form-urlencoded"}});
  CHECK(not_json.status == 415);
  CHECK(c.call("GET", "/v1/nothing-here").status == 404);
  CHECK(c.call("GET", "/v1/tokens", {}, alice).status == 405);
  CHECK(c.store->counts() == before);

  // The server is still fine afterwards.
  CHECK(c.call("GET", "/v1/authorization").status == 200);
}

TEST_CASE_TEMPLATE("an expired session is 401 session_expired and mints nothing", B, OnSqlite,
                   OnPostgres) {
  TOLLGATE_CLOUD_FIXTURE(TlsCloud, c, B);
  const std::string alice = c.login("alice", "alice-password");
  REQUIRE(c.enroll(alice, c.alice_key, c.alice_id).status == 200);
  c.now += 3600;  // the default session lifetime
  const auto before = c.store->counts();
  auto r = c.mint(alice, c.device1, 1);
  CHECK(r.status == 401);
  CHECK(r.error() == "session_expired");
  auto none = c.mint("", c.device1, 1);
  CHECK(none.status == 401);
  CHECK(none.error() == "unauthenticated");
  auto forged = c.mint(std::string(64, 'a'), c.device1, 1);
  CHECK(forged.status == 401);
  CHECK(forged.error() == "invalid_session");
  CHECK(c.store->counts() == before);
}

TEST_CASE_TEMPLATE("a revoked user's session ends and the user cannot log in again", B, OnSqlite,
                   OnPostgres) {
  TOLLGATE_CLOUD_FIXTURE(TlsCloud, c, B);
  const std::string alice = c.login("alice", "alice-password");
  REQUIRE(c.store->revoke_user("alice"));
  CHECK(c.mint(alice, c.device1, 1).status == 401);
  auto r = c.post("/v1/login", json::object{{"user", "alice"}, {"password", "alice-password"}});
  CHECK(r.status == 403);
  CHECK(r.error() == "user_revoked");
}

TEST_CASE_TEMPLATE(
    "a minted token verifies under the authorized cloud key and binds device, user and key", B,
    OnSqlite, OnPostgres) {
  TOLLGATE_CLOUD_FIXTURE(TlsCloud, c, B);
  const std::string alice = c.login("alice", "alice-password");
  REQUIRE(c.enroll(alice, c.alice_key, c.alice_id).status == 200);
  auto r = c.mint(alice, c.device1, 3, 2);
  REQUIRE(r.status == 200);
  CHECK(r.obj().at("authorization_id").to_number<std::uint64_t>() == 7);
  const auto& tokens = r.obj().at("tokens").as_array();
  REQUIRE(tokens.size() == 2);
  for (const auto& t : tokens) {
    auto bytes = base64_decode(std::string(t.at("token").as_string()));
    REQUIRE(bytes);
    auto env = parse_signed(*bytes);
    REQUIRE(env.ok());
    auto body = verify_and_parse<v1::DeviceToken>(*env, v1::Signed::TYPE_DEVICE_TOKEN,
                                                  c.cloud_key.public_key(), AlgorithmPolicy{});
    REQUIRE(body.ok());
    CHECK(body->device_id() == s(c.device1));
    CHECK(body->user_id() == s(c.alice_id));
    CHECK(body->user_public_key() == s(c.alice_key.public_key().spki_der()));
    CHECK(body->authorized_uses() == 3);
    CHECK(body->authorization_id() == 7);
    CHECK(body->issued_at() == kStart);
    CHECK(body->expires_at() == kStart + 7 * 86400);
    // Recorded durably before the answer.
    auto rec = c.store->issuance(as_bytes(body->token_id()));
    REQUIRE(rec);
    CHECK(rec->uses == 3);
  }
  CHECK(c.store->entitlement(c.alice_id, c.device1)->balance == 20 - 6);
}

TEST_CASE_TEMPLATE("the device key and the authorization are served for pinning and installing", B,
                   OnSqlite, OnPostgres) {
  TOLLGATE_CLOUD_FIXTURE(TlsCloud, c, B);
  const std::string alice = c.login("alice", "alice-password");
  auto d = c.call("GET", "/v1/devices/" + uuid_to_string(c.device1), {}, alice);
  REQUIRE(d.status == 200);
  CHECK(std::string(d.obj().at("public_key").as_string()) == c.device1_key.public_key().pem());
  auto a = c.call("GET", "/v1/authorization");
  REQUIRE(a.status == 200);
  CHECK(a.obj().at("id").to_number<std::uint64_t>() == 7);
  CHECK(base64_decode(std::string(a.obj().at("authorization").as_string())) ==
        c.store->authorization());
}

TEST_CASE_TEMPLATE("receipts reconcile the uses a device charged, once", B, OnSqlite, OnPostgres) {
  TOLLGATE_CLOUD_FIXTURE(TlsCloud, c, B);
  const std::string alice = c.login("alice", "alice-password");
  REQUIRE(c.enroll(alice, c.alice_key, c.alice_id).status == 200);
  auto m = c.mint(alice, c.device1, 5);
  REQUIRE(m.status == 200);
  const Bytes token =
      *uuid_from_string(std::string(m.obj().at("tokens").as_array()[0].at("token_id").as_string()));
  // A token this cloud never issued (minted by hand) is charged too: not on its books.
  const Bytes foreign(16, 0x5A);
  auto exported = c.audit_export(
      c.device1_key, c.device1,
      {command_record(s(token), 1), command_record(s(foreign), 4), command_record(s(token), 2)});
  auto r = c.post("/v1/receipts", json::object{{"export", base64_encode(exported)}}, alice);
  REQUIRE(r.status == 200);
  CHECK(r.obj().at("records_applied").to_number<std::uint64_t>() == 3);
  CHECK(r.obj().at("uses_reconciled").to_number<std::uint64_t>() == 3);
  CHECK(c.store->counts().uses_consumed == 3);
  // The same export again applies nothing new.
  auto again = c.post("/v1/receipts", json::object{{"export", base64_encode(exported)}}, alice);
  CHECK(again.status == 200);
  CHECK(again.obj().at("records_applied").to_number<std::uint64_t>() == 0);
  CHECK(c.store->counts().uses_consumed == 3);
}

TEST_CASE_TEMPLATE("pay-per-use never mints more uses than the balance under 32 concurrent clients",
                   B, OnSqlite, OnPostgres) {
  TOLLGATE_CLOUD_FIXTURE(TlsCloud, c, B);
  constexpr std::uint64_t kBalance = 100;
  constexpr std::uint32_t kUsesPerToken = 3;
  auto e = *c.store->entitlement(c.alice_id, c.device1);
  e.balance = kBalance;
  c.store->put_entitlement(e);
  const std::string alice = c.login("alice", "alice-password");
  REQUIRE(c.enroll(alice, c.alice_key, c.alice_id).status == 200);

  constexpr int kClients = 32;
  std::atomic<std::uint64_t> minted_uses{0};
  std::atomic<int> unexpected{0};
  std::vector<std::thread> clients;
  for (int i = 0; i < kClients; ++i) {
    clients.emplace_back([&] {
      try {
        HttpsClient client(c.client_options());
        const std::string body = json::serialize(
            json::object{{"device_id", uuid_to_string(c.device1)}, {"uses", kUsesPerToken}});
        for (;;) {
          auto r = client.request("POST", "/v1/tokens", body, alice);
          if (r.status == 402) break;  // the balance is spent
          if (r.status != 200) {
            ++unexpected;
            break;
          }
          auto v = json::parse(r.body);
          for (const auto& t : v.at("tokens").as_array()) {
            minted_uses += t.at("uses").to_number<std::uint64_t>();
          }
        }
      } catch (const std::exception&) {
        ++unexpected;
      }
    });
  }
  for (auto& t : clients) t.join();
  CHECK(unexpected.load() == 0);
  // Every use handed out was reserved, and no more than the balance.
  CHECK(minted_uses.load() == kBalance / kUsesPerToken * kUsesPerToken);
  const auto counts = c.store->counts();
  CHECK(counts.uses_issued == minted_uses.load());
  CHECK(c.store->entitlement(c.alice_id, c.device1)->balance == kBalance - minted_uses.load());
}
