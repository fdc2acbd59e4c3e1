// Request-id idempotency: a retried request gets the stored response and is
// charged once; reuse of an id with other bytes is refused; a request whose
// response a power cut lost is never executed again (THREATS A13, A12 at the
// gateway level).
#include "tests/gateway/testkit.hpp"

using namespace tollgate;
using namespace tollgate::testkit;

namespace {

Bytes response_for(const Decision& d) {
  Bytes r(d.request_hash.begin(), d.request_hash.end());
  r.push_back(0x4B);  // any bytes do: the gateway stores them opaquely
  return r;
}

}  // namespace

TEST_CASE(
    "retried request with the same bytes gets the stored response and is charged once (A13)") {
  World w;
  w.ready(3);
  Bytes nonce = w.g().issue_nonce(kT0);
  Bytes req = w.request(nonce);
  auto d = w.g().authorize_command(req, kT0, w.rules);
  REQUIRE(d.ok());
  REQUIRE(d->kind == Decision::Kind::kExecute);
  const Bytes response = response_for(*d);
  REQUIRE(w.g().complete_request(d->key, response));
  const auto commits = w.storage.commits();

  for (int retry = 0; retry < 3; ++retry) {
    auto again = w.g().authorize_command(req, kT0 + 10 + retry, w.rules);
    REQUIRE(again.ok());
    CHECK(again->kind == Decision::Kind::kReplay);
    CHECK(again->stored_response == response);
    CHECK(again->key == d->key);
    CHECK(again->request_hash == d->request_hash);
  }
  CHECK(w.uses_left() == 2);
  CHECK(w.storage.commits() == commits);  // replays commit nothing of their own
  REQUIRE(w.g().flush(kT0 + 20));
  int replays = 0;
  for (const auto& ev : w.storage.audit_log()) replays += ev.kind == AuditEvent::Kind::kReplay;
  CHECK(replays == 3);
}

TEST_CASE("same request id with other bytes is rejected as REQUEST_ID_REUSED (A13)") {
  World w;
  w.ready(3);
  Bytes nonce = w.g().issue_nonce(kT0);
  auto first = sign_request(w.user, request_body(w.device, nonce, 42, "measure"));
  REQUIRE(w.g().authorize_command(first, kT0, w.rules).ok());
  Bytes nonce2 = w.g().issue_nonce(kT0);
  auto other = sign_request(w.user, request_body(w.device, nonce2, 42, "dose", {{"ml", "1"}}));
  CHECK(w.g().authorize_command(other, kT0, w.rules).error() == v1::ERROR_REQUEST_ID_REUSED);
  CHECK(w.uses_left() == 2);
  // Another user may use the same request id: the key is (signer, id).
  auto user2 = make_key();
  REQUIRE(w.g()
              .offer_token(sign_token(w.cloud, token_body(9, w.device, user2.public_key())), kT0)
              .ok());
  Bytes nonce3 = w.g().issue_nonce(kT0);
  CHECK(
      w.g()
          .authorize_command(sign_request(user2, request_body(w.device, nonce3, 42)), kT0, w.rules)
          .ok());
}

TEST_CASE(
    "retry of a request whose response a power cut lost is interrupted, not re-executed (A12)") {
  World w;
  w.ready(3);
  Bytes nonce = w.g().issue_nonce(kT0);
  Bytes req = w.request(nonce);
  auto d = w.g().authorize_command(req, kT0, w.rules);
  REQUIRE(d.ok());
  // The response is recorded in memory only; the power goes before the next commit.
  REQUIRE(w.g().complete_request(d->key, response_for(*d)));
  w.open();
  auto retry = w.g().authorize_command(req, kT0 + 30, w.rules);
  REQUIRE(retry.ok());
  CHECK(retry->kind == Decision::Kind::kInterrupted);
  CHECK(retry->token_id == uuid(1));
  CHECK(retry->uses_left == 2);
  CHECK(w.uses_left() == 2);
}

TEST_CASE("recorded response is persisted with the next commit and survives a restart") {
  World w;
  w.ready(3);
  Bytes req = w.request(w.g().issue_nonce(kT0));
  auto d = w.g().authorize_command(req, kT0, w.rules);
  REQUIRE(d.ok());
  REQUIRE(w.g().complete_request(d->key, response_for(*d)));
  CHECK_FALSE(w.storage.state().idempotency.at(d->key).response.has_value());
  REQUIRE(w.run().ok());  // the next decision carries it
  CHECK(w.storage.state().idempotency.at(d->key).response == response_for(*d));
  w.open();
  auto replay = w.g().authorize_command(req, kT0 + 1, w.rules);
  REQUIRE(replay.ok());
  CHECK(replay->kind == Decision::Kind::kReplay);
  CHECK(replay->stored_response == response_for(*d));
}

TEST_CASE("idempotency cache keeps its bound; a retry of an evicted request finds its nonce used") {
  World w;
  w.policy.idempotency_cache_size = 3;
  w.open();
  w.ready(10);
  std::vector<Bytes> requests;
  for (int i = 0; i < 5; ++i) {
    requests.push_back(w.request(w.g().issue_nonce(kT0)));
    auto d = w.g().authorize_command(requests.back(), kT0, w.rules);
    REQUIRE(d.ok());
    REQUIRE(w.g().complete_request(d->key, response_for(*d)));
  }
  CHECK(w.g().state().idempotency.size() == 3);
  CHECK(w.g().authorize_command(requests[0], kT0, w.rules).error() == v1::ERROR_STALE_NONCE);
  auto newest = w.g().authorize_command(requests[4], kT0, w.rules);
  REQUIRE(newest.ok());
  CHECK(newest->kind == Decision::Kind::kReplay);
  CHECK(w.uses_left() == 5);
}

TEST_CASE("complete_request refuses unknown keys and oversized responses") {
  World w;
  w.ready(3);
  auto d = w.run();
  REQUIRE(d.ok());
  CHECK(w.g().complete_request(RequestKey{d->key.signer, 999}, Bytes{1}).error() ==
        v1::ERROR_INTERNAL);
  CHECK(w.g().complete_request(d->key, Bytes(w.policy.max_response_size + 1, 0)).error() ==
        v1::ERROR_TOO_LARGE);
  CHECK(w.g().complete_request(d->key, Bytes{1, 2, 3}).ok());
}
