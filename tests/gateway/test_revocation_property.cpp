// Property: installing any sequence of master-signed authorizations, in any
// order and with repeats, leaves the revocation set equal to the union of all
// their lists, never revives a revoked id, and ends in the same state whatever
// the order (THREATS A6, A7).
#include <algorithm>
#include <random>

#include "tests/gateway/testkit.hpp"

using namespace tollgate;
using namespace tollgate::testkit;

namespace {

struct Candidate {
  Bytes bytes;
  std::uint64_t id;
  std::vector<std::uint64_t> revoked;
};

// A pool of authorizations over a small id space so that ids collide, revoke
// each other and come in several versions; some are expired or not yet valid.
std::vector<Candidate> make_pool(std::mt19937_64& rng, const World& w,
                                 const std::vector<crypto::PrivateKey>& clouds) {
  std::uniform_int_distribution<std::uint64_t> id(1, 10);
  std::uniform_int_distribution<int> n_revoked(0, 3);
  std::uniform_int_distribution<int> window(0, 9);
  std::uniform_int_distribution<std::size_t> which_cloud(0, clouds.size() - 1);
  std::vector<Candidate> pool;
  const int size = std::uniform_int_distribution<int>(3, 8)(rng);
  for (int i = 0; i < size; ++i) {
    Candidate c;
    c.id = id(rng);
    for (int k = n_revoked(rng); k > 0; --k) {
      // Id 0 names nothing and must be ignored.
      c.revoked.push_back(rng() % 8 == 0 ? 0 : id(rng));
    }
    UnixTime not_before = kT0 - kDay;
    UnixTime not_after = kT0 + (3 + window(rng)) * kDay;
    const int w_kind = window(rng);
    if (w_kind == 0) not_after = kT0 - 1;          // expired
    if (w_kind == 1) not_before = kT0 + 2 * kDay;  // not yet valid (beyond the skew)
    c.bytes =
        sign_authorization(w.master, authorization_body(c.id, clouds[which_cloud(rng)].public_key(),
                                                        not_before, not_after, c.revoked));
    pool.push_back(std::move(c));
  }
  return pool;
}

}  // namespace

TEST_CASE("any sequence of authorizations leaves the union of revocations and revives nothing") {
  World w;
  std::vector<crypto::PrivateKey> clouds;
  for (int i = 0; i < 3; ++i) clouds.push_back(make_key());
  std::mt19937_64 rng(0x7011'6a7e);
  constexpr int kCases = 400;

  for (int n = 0; n < kCases; ++n) {
    CAPTURE(n);
    const auto pool = make_pool(rng, w, clouds);
    // A random sequence over the pool, with repeats.
    std::vector<std::size_t> sequence;
    const int length = std::uniform_int_distribution<int>(1, 12)(rng);
    for (int i = 0; i < length; ++i) sequence.push_back(rng() % pool.size());

    std::set<std::uint64_t> expected_union;
    for (auto i : sequence) {
      for (auto r : pool[i].revoked) {
        if (r != 0) expected_union.insert(r);
      }
    }

    std::optional<DeviceState> first_outcome;
    for (int order = 0; order < 3; ++order) {
      CAPTURE(order);
      auto run = sequence;
      if (order == 1) std::reverse(run.begin(), run.end());
      if (order == 2) std::shuffle(run.begin(), run.end(), rng);

      MemoryStorage storage;
      std::vector<crypto::PublicKey> masters;
      masters.push_back(w.master.public_key().clone());
      auto g = Gateway::open(w.device, std::move(masters), w.policy, storage);
      REQUIRE(g.ok());
      std::set<std::uint64_t> seen_revoked;
      for (auto i : run) {
        auto r = g->install_authorization(pool[i].bytes, kT0);
        const auto& s = g->state();
        // Grow-only, and no revoked id is ever installed.
        CHECK(std::includes(s.revoked_ids.begin(), s.revoked_ids.end(), seen_revoked.begin(),
                            seen_revoked.end()));
        seen_revoked = s.revoked_ids;
        for (const auto& [id, bytes] : s.authorizations) CHECK(s.revoked_ids.count(id) == 0);
        if (expected_union.count(pool[i].id) && s.revoked_ids.count(pool[i].id)) {
          CHECK(r.error() == v1::ERROR_REVOKED);
        }
      }
      const DeviceState& end = g->state();
      CHECK(end.revoked_ids == expected_union);
      CHECK(storage.state().revoked_ids == expected_union);
      // Every valid, unrevoked authorization seen is installed, in its longest-lived version.
      for (auto i : run) {
        if (!expected_union.count(pool[i].id)) {
          auto parsed = v1::CloudKeyAuthorization();
          auto env = parse_signed(pool[i].bytes);
          REQUIRE(env.ok());
          REQUIRE(parsed.ParseFromString(env->body()));
          const bool valid = parsed.not_after() >= kT0 && parsed.not_before() <= kT0 + 300;
          if (valid) CHECK(end.authorizations.count(pool[i].id) == 1);
        }
      }
      // The outcome does not depend on the order.
      DeviceState comparable = end;
      comparable.time_floor = 0;
      if (!first_outcome) {
        first_outcome = comparable;
      } else {
        CHECK(comparable.authorizations == first_outcome->authorizations);
        CHECK(comparable.revoked_ids == first_outcome->revoked_ids);
      }
    }
  }
}
