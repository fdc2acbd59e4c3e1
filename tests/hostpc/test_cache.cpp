// The host token cache: import, ordering, dead marking, device pins, and the
// 100 000-token lookup (a bench hook: TOLLGATE_BENCH_CACHE=1 runs the full size;
// by default a smaller cache proves the lookup is index-backed, without timing).
#include <chrono>
#include <cstdlib>
#include <iostream>

#include "tests/hostpc/host_testkit.hpp"

using namespace tollgate;
using namespace tollgate::host;
using namespace tollgate::hosttest;

namespace {

struct Fixture {
  TempDir dir;
  std::unique_ptr<TokenCache> cache;
  crypto::PrivateKey cloud = make_key();
  crypto::PrivateKey user_key = make_key();
  Bytes device = uuid(1, 0xDE);
  Bytes user = uuid(1, 0x05);
  Fixture() {
    auto c = TokenCache::open(dir.str("cache.db"));
    REQUIRE(c.ok());
    cache = std::move(*c);
  }
  Bytes token(std::uint8_t tag, std::int64_t expires, std::uint32_t uses = 3,
              const Bytes* dev = nullptr) {
    return make_token(cloud, uuid(tag), dev ? *dev : device, user, user_key, uses, expires);
  }
};

}  // namespace

TEST_CASE("imported token is listed with its fields and uses left equal to authorized uses") {
  Fixture f;
  const Bytes tok = f.token(7, kT0 + kDay, 5);
  auto r = f.cache->import_token(tok);
  REQUIRE(r.ok());
  CHECK(*r == ImportResult::kAdded);
  auto list = f.cache->list();
  REQUIRE(list.ok());
  REQUIRE(list->size() == 1);
  const auto& t = (*list)[0];
  CHECK(t.token_id == uuid(7));
  CHECK(t.device_id == f.device);
  CHECK(t.user_id == f.user);
  CHECK(t.expires_at == kT0 + kDay);
  CHECK(t.authorized_uses == 5);
  CHECK(t.uses_left == 5);
  CHECK_FALSE(t.dead);
  CHECK(t.bytes == tok);  // stored exactly as received
}

TEST_CASE("re-importing a cached token is a no-op that keeps the device's uses and dead flag") {
  Fixture f;
  const Bytes tok = f.token(7, kT0 + kDay, 5);
  REQUIRE(f.cache->import_token(tok).ok());
  REQUIRE(f.cache->set_uses_left(uuid(7), 1).ok());
  REQUIRE(f.cache->mark_dead(uuid(7), v1::ERROR_REVOKED).ok());
  auto again = f.cache->import_token(tok);
  REQUIRE(again.ok());
  CHECK(*again == ImportResult::kDuplicate);
  auto t = f.cache->token(uuid(7));
  REQUIRE(t.ok());
  REQUIRE(t->has_value());
  CHECK((*t)->uses_left == 1);
  CHECK((*t)->dead);
  CHECK((*t)->dead_reason == v1::ERROR_REVOKED);
  CHECK((*t)->bytes == tok);
}

TEST_CASE("import refuses junk, other object types and tokens with impossible fields") {
  Fixture f;
  const Bytes junk = {1, 2, 3, 4};
  CHECK(f.cache->import_token(junk).error() == v1::ERROR_MALFORMED);
  const Bytes auth = make_authorization(f.cloud, f.cloud, 1);
  CHECK(f.cache->import_token(auth).error() == v1::ERROR_WRONG_TYPE);
  // expires before it was issued
  CHECK(f.cache->import_token(f.token(1, kT0 - 2 * kDay)).error() == v1::ERROR_MALFORMED);
  CHECK(f.cache->import_authorization(f.token(1, kT0 + kDay)).error() == v1::ERROR_WRONG_TYPE);
  auto list = f.cache->list();
  REQUIRE(list.ok());
  CHECK(list->empty());
}

TEST_CASE("tokens are listed soonest-expiring first and filtered by device") {
  Fixture f;
  const Bytes other = uuid(2, 0xDE);
  REQUIRE(f.cache->import_token(f.token(1, kT0 + 3 * kDay)).ok());
  REQUIRE(f.cache->import_token(f.token(2, kT0 + 1 * kDay)).ok());
  REQUIRE(f.cache->import_token(f.token(3, kT0 + 2 * kDay, 3, &other)).ok());
  auto all = f.cache->list();
  REQUIRE(all.ok());
  REQUIRE(all->size() == 3);
  CHECK((*all)[0].token_id == uuid(2));
  CHECK((*all)[1].token_id == uuid(3));
  CHECK((*all)[2].token_id == uuid(1));
  auto mine = f.cache->list(f.device);
  REQUIRE(mine.ok());
  REQUIRE(mine->size() == 2);
  CHECK((*mine)[0].token_id == uuid(2));
  CHECK((*mine)[1].token_id == uuid(1));
}

TEST_CASE("dead, exhausted and expired tokens are never offered again") {
  Fixture f;
  REQUIRE(f.cache->import_token(f.token(1, kT0 + 1 * kDay)).ok());
  REQUIRE(f.cache->import_token(f.token(2, kT0 + 2 * kDay)).ok());
  REQUIRE(f.cache->import_token(f.token(3, kT0 + 3 * kDay)).ok());
  REQUIRE(f.cache->import_token(f.token(4, kT0 + 4 * kDay)).ok());
  REQUIRE(f.cache->mark_dead(uuid(1), v1::ERROR_REVOKED).ok());
  REQUIRE(f.cache->set_uses_left(uuid(2), 0).ok());
  auto usable = f.cache->usable(f.device, f.user, kT0 + 3 * kDay, 10);  // token 3 expired by then
  REQUIRE(usable.ok());
  REQUIRE(usable->size() == 1);
  CHECK((*usable)[0].token_id == uuid(4));
  auto now = f.cache->usable(f.device, f.user, kT0, 10);
  REQUIRE(now.ok());
  REQUIRE(now->size() == 2);
  CHECK((*now)[0].token_id == uuid(3));
}

TEST_CASE("the charged token is the soonest-expiring one the device accepted") {
  Fixture f;
  REQUIRE(f.cache->import_token(f.token(1, kT0 + 1 * kDay)).ok());
  REQUIRE(f.cache->import_token(f.token(2, kT0 + 2 * kDay)).ok());
  REQUIRE(f.cache->import_token(f.token(3, kT0 + 3 * kDay)).ok());
  auto none = f.cache->first_accepted(f.device, f.user, kT0);
  REQUIRE(none.ok());
  CHECK_FALSE(none->has_value());
  REQUIRE(f.cache->mark_accepted(uuid(3), 2).ok());
  REQUIRE(f.cache->mark_accepted(uuid(2), 1).ok());
  auto first = f.cache->first_accepted(f.device, f.user, kT0);
  REQUIRE(first.ok());
  REQUIRE(first->has_value());
  CHECK((*first)->token_id == uuid(2));
  CHECK((*first)->uses_left == 1);
}

TEST_CASE("authorizations import once and are found by id") {
  Fixture f;
  crypto::PrivateKey master = make_key();
  const Bytes a = make_authorization(master, f.cloud, 42);
  REQUIRE(f.cache->import_authorization(a).ok());
  auto again = f.cache->import_authorization(a);
  REQUIRE(again.ok());
  CHECK(*again == ImportResult::kDuplicate);
  auto got = f.cache->authorization(42);
  REQUIRE(got.ok());
  REQUIRE(got->has_value());
  CHECK((*got)->bytes == a);
  auto missing = f.cache->authorization(43);
  REQUIRE(missing.ok());
  CHECK_FALSE(missing->has_value());
}

TEST_CASE("device records keep the pin and one device per endpoint") {
  Fixture f;
  DeviceRecord a{uuid(1, 0xDE), {1, 2, 3}, "fw", "vbus:/x?tx=1&rx=2", {9, 9}, kT0};
  REQUIRE(f.cache->put_device(a).ok());
  DeviceRecord b{uuid(2, 0xDE), {4, 5, 6}, "fw", "vbus:/x?tx=1&rx=2", {}, kT0};
  REQUIRE(f.cache->put_device(b).ok());
  auto on = f.cache->device_by_endpoint("vbus:/x?tx=1&rx=2");
  REQUIRE(on.ok());
  REQUIRE(on->has_value());
  CHECK((*on)->device_id == uuid(2, 0xDE));
  auto old = f.cache->device(uuid(1, 0xDE));
  REQUIRE(old.ok());
  REQUIRE(old->has_value());
  CHECK((*old)->public_key == Bytes{1, 2, 3});
  CHECK((*old)->endpoint.empty());
  REQUIRE(f.cache->set_nonce(uuid(1, 0xDE), Bytes{7}, kT0 + 5).ok());
  old = f.cache->device(uuid(1, 0xDE));
  CHECK((*old)->last_nonce == Bytes{7});
  CHECK((*old)->nonce_time == kT0 + 5);
}

TEST_CASE("the cache survives a reopen") {
  TempDir dir;
  crypto::PrivateKey cloud = make_key(), user_key = make_key();
  {
    auto c = TokenCache::open(dir.str("cache.db"));
    REQUIRE(c.ok());
    REQUIRE((*c)->import_token(
                    make_token(cloud, uuid(1), uuid(1, 0xDE), uuid(1, 5), user_key, 2, kT0 + kDay))
                .ok());
  }
  auto c = TokenCache::open(dir.str("cache.db"));
  REQUIRE(c.ok());
  auto list = (*c)->list();
  REQUIRE(list.ok());
  CHECK(list->size() == 1);
}

TEST_CASE("token lookup among many cached tokens is index-backed (bench hook: 100 000)") {
  Fixture f;
  const char* env = std::getenv("TOLLGATE_BENCH_CACHE");
  const bool bench = env != nullptr && std::string(env) == "1";
  const int n = bench ? 100'000 : 3'000;
  // Cheap stand-ins: the cache checks shape, not the cloud signature, so one
  // real signature is reused under many token ids.
  const Bytes real = f.token(0, kT0 + kDay);
  auto envelope = parse_signed(real);
  REQUIRE(envelope.ok());
  v1::DeviceToken body;
  REQUIRE(body.ParseFromString(envelope->body()));
  std::vector<Bytes> devices;
  for (int d = 0; d < 50; ++d) devices.push_back(uuid(static_cast<std::uint8_t>(d), 0xDE));
  REQUIRE(f.cache->begin_bulk().ok());
  for (int i = 0; i < n; ++i) {
    Bytes id = uuid(0);
    id[1] = static_cast<std::uint8_t>(i >> 16);
    id[2] = static_cast<std::uint8_t>(i >> 8);
    id[3] = static_cast<std::uint8_t>(i);
    body.set_token_id(str(id));
    body.set_device_id(str(devices[static_cast<std::size_t>(i) % devices.size()]));
    body.set_expires_at(kT0 + 1000 + (i * 7919) % 100'000);
    envelope->set_body(body.SerializeAsString());
    const std::string b = envelope->SerializeAsString();
    REQUIRE(f.cache->import_token(as_bytes(b)).ok());
  }
  REQUIRE(f.cache->end_bulk().ok());

  auto plan = f.cache->usable_query_plan();
  REQUIRE(plan.ok());
  INFO("plan: " << *plan);
  CHECK(plan->find("tokens_lookup") != std::string::npos);
  CHECK(plan->find("TEMP B-TREE") == std::string::npos);  // no sort of a scan

  const auto start = std::chrono::steady_clock::now();
  const int lookups = 1000;
  for (int i = 0; i < lookups; ++i) {
    auto u = f.cache->usable(devices[static_cast<std::size_t>(i) % devices.size()], f.user, kT0, 1);
    REQUIRE(u.ok());
    REQUIRE(u->size() == 1);
  }
  const auto per =
      std::chrono::duration<double, std::micro>(std::chrono::steady_clock::now() - start) / lookups;
  if (bench) std::cout << n << " cached tokens: lookup " << per.count() << " us mean\n";
}
