// Signatures verified ahead (on worker threads): taken once, only for the exact
// object and key, never for a failure; the gateway skips its own check only for
// such an entry and verifies everything else as before.
#include "gateway/verified_signatures.hpp"

#include <atomic>
#include <thread>

#include "tests/gateway/testkit.hpp"

using namespace tollgate;
using namespace tollgate::testkit;

namespace {

v1::Signed envelope(const Bytes& signed_bytes) {
  auto s = parse_signed(signed_bytes);
  REQUIRE(s.ok());
  return *s;
}

constexpr ObjectType kRequest = v1::Signed::TYPE_COMMAND_REQUEST;

}  // namespace

TEST_CASE("a signature verified ahead is taken once, for exactly that object and key") {
  World w;
  VerifiedSignatures v;
  const v1::Signed req = envelope(w.request(Bytes(kNonceSize, 1)));
  const auto& key = w.user.public_key();
  REQUIRE(v.verify(req, kRequest, key, w.policy.user_algorithms).ok());
  CHECK(v.size() == 1);

  v1::Signed other_body = req;
  other_body.mutable_body()->back() ^= 1;
  CHECK_FALSE(v.take(other_body, kRequest, key.id()));
  v1::Signed other_sig = req;
  other_sig.mutable_signature()->front() ^= 1;
  CHECK_FALSE(v.take(other_sig, kRequest, key.id()));
  CHECK_FALSE(v.take(req, v1::Signed::TYPE_DEVICE_TOKEN, key.id()));
  CHECK_FALSE(v.take(req, kRequest, w.cloud.public_key().id()));

  CHECK(v.take(req, kRequest, key.id()));
  CHECK_FALSE(v.take(req, kRequest, key.id()));  // once
  CHECK(v.size() == 0);
}

TEST_CASE("a signature that fails ahead is not remembered") {
  World w;
  VerifiedSignatures v;
  v1::Signed forged = envelope(w.request(Bytes(kNonceSize, 1)));
  forged.mutable_signature()->front() ^= 1;
  CHECK(v.verify(forged, kRequest, w.user.public_key(), w.policy.user_algorithms).error() ==
        v1::ERROR_BAD_SIGNATURE);
  CHECK(v.size() == 0);
  CHECK_FALSE(v.take(forged, kRequest, w.user.public_key().id()));
}

TEST_CASE("verified signatures are bounded: the oldest are forgotten") {
  World w;
  VerifiedSignatures v(4);
  std::vector<v1::Signed> reqs;
  for (std::uint8_t i = 0; i < 6; ++i) reqs.push_back(envelope(w.request(Bytes(kNonceSize, i))));
  for (const auto& r : reqs) {
    REQUIRE(v.verify(r, kRequest, w.user.public_key(), w.policy.user_algorithms).ok());
  }
  CHECK(v.size() == 4);
  CHECK_FALSE(v.take(reqs[0], kRequest, w.user.public_key().id()));
  CHECK_FALSE(v.take(reqs[1], kRequest, w.user.public_key().id()));
  CHECK(v.take(reqs[5], kRequest, w.user.public_key().id()));
}

TEST_CASE("several threads verify ahead with one key at once") {
  World w;
  VerifiedSignatures v(4096);
  std::vector<v1::Signed> reqs;
  for (std::uint8_t i = 0; i < 64; ++i) reqs.push_back(envelope(w.request(Bytes(kNonceSize, i))));
  const crypto::PublicKey key = w.user.public_key().clone();
  std::vector<std::thread> threads;
  std::atomic<int> failures{0};
  for (int t = 0; t < 4; ++t) {
    threads.emplace_back([&, t] {
      for (std::size_t i = static_cast<std::size_t>(t); i < reqs.size(); i += 4) {
        if (!v.verify(reqs[i], kRequest, key, w.policy.user_algorithms)) ++failures;
      }
    });
  }
  for (auto& t : threads) t.join();
  CHECK(failures == 0);
  CHECK(v.size() == reqs.size());
}

TEST_CASE("the gateway takes a request verified ahead, and checks a tampered one itself") {
  World w;
  w.ready(5);
  VerifiedSignatures v;
  w.g().use_verified_signatures(&v);
  auto key = w.g().user_key(w.user.public_key().id());
  REQUIRE(key.has_value());
  CHECK(key->id() == w.user.public_key().id());
  CHECK_FALSE(w.g().user_key(w.cloud.public_key().id()).has_value());

  const Bytes good = w.request(w.g().issue_nonce(kT0));
  REQUIRE(v.verify(envelope(good), kRequest, *key, w.policy.user_algorithms).ok());
  auto d = w.g().authorize_command(good, kT0, w.rules);
  REQUIRE(d.ok());
  CHECK(d->kind == Decision::Kind::kExecute);
  CHECK(v.size() == 0);  // taken

  // The same object with one signature byte changed is not in the set: the
  // gateway verifies it and refuses it.
  const Bytes next = w.request(w.g().issue_nonce(kT0));
  REQUIRE(v.verify(envelope(next), kRequest, *key, w.policy.user_algorithms).ok());
  v1::Signed tampered = envelope(next);
  tampered.mutable_signature()->front() ^= 1;
  const std::string bytes = tampered.SerializeAsString();
  auto r = w.g().authorize_command(as_bytes(bytes), kT0, w.rules);
  CHECK(r.error() == v1::ERROR_BAD_SIGNATURE);
  CHECK(w.uses_left() == 4);
  w.g().use_verified_signatures(nullptr);
}
