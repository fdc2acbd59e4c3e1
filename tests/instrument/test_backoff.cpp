// The per-link brute-force back-off, driven with simulated microseconds.
#include <doctest/doctest.h>

#include "instrument/backoff.hpp"

using tollgate::instrument::Backoff;
using tollgate::instrument::BackoffConfig;
using tollgate::instrument::counts_as_auth_failure;
namespace v1 = tollgate::v1;

namespace {
constexpr std::int64_t kMs = 1000;
}

TEST_CASE("failures below the threshold are answered without delay") {
  Backoff b;
  CHECK(b.on_failure(0).delay_us == 0);
  CHECK(b.on_failure(1 * kMs).delay_us == 0);
  auto third = b.on_failure(2 * kMs);
  CHECK(third.delay_us == 50 * kMs);
  CHECK(third.failures == 3);
  CHECK(third.escalated);
}

TEST_CASE("delay doubles per further failure and stops at the cap") {
  Backoff b;
  std::int64_t t = 0;
  std::vector<std::int64_t> delays;
  for (int i = 0; i < 12; ++i) delays.push_back(b.on_failure(t += 10 * kMs).delay_us);
  std::vector<std::int64_t> expected{0,          0,          50 * kMs,   100 * kMs,
                                     200 * kMs,  400 * kMs,  800 * kMs,  1600 * kMs,
                                     2000 * kMs, 2000 * kMs, 2000 * kMs, 2000 * kMs};
  CHECK(delays == expected);
}

TEST_CASE("a flood escalates a bounded number of times, so it adds few audit records") {
  Backoff b;
  int escalations = 0;
  for (int i = 0; i < 10'000; ++i) escalations += b.on_failure(i * kMs).escalated ? 1 : 0;
  CHECK(escalations == 7);  // 50, 100, 200, 400, 800, 1600, 2000 ms
}

TEST_CASE("a verified request restores full speed at once") {
  Backoff b;
  for (int i = 0; i < 8; ++i) (void)b.on_failure(i * kMs);
  b.on_verified();
  CHECK(b.failures() == 0);
  CHECK(b.on_failure(9 * kMs).delay_us == 0);
}

TEST_CASE("failures are forgotten after a quiet period") {
  BackoffConfig c;
  c.forget_after_us = 60'000 * kMs;
  Backoff b(c);
  for (int i = 0; i < 5; ++i) (void)b.on_failure(i * kMs);
  CHECK(b.on_failure(10 * kMs).delay_us > 0);
  auto later = b.on_failure(10 * kMs + 60'001 * kMs);
  CHECK(later.failures == 1);
  CHECK(later.delay_us == 0);
}

TEST_CASE("a monotonic clock that goes backwards only resets the count") {
  Backoff b;
  for (int i = 0; i < 5; ++i) (void)b.on_failure(1'000'000 * kMs + i * kMs);
  CHECK(b.on_failure(5 * kMs).failures == 1);
}

TEST_CASE("configured threshold, initial delay and cap are honoured") {
  BackoffConfig c;
  c.threshold = 1;
  c.initial_us = 10 * kMs;
  c.max_us = 25 * kMs;
  Backoff b(c);
  CHECK(b.on_failure(0).delay_us == 10 * kMs);
  CHECK(b.on_failure(1).delay_us == 20 * kMs);
  CHECK(b.on_failure(2).delay_us == 25 * kMs);
}

TEST_CASE("threshold zero disables the back-off") {
  BackoffConfig c;
  c.threshold = 0;
  Backoff b(c);
  for (int i = 0; i < 20; ++i) CHECK(b.on_failure(i).delay_us == 0);
}

TEST_CASE("only unverifiable-signer rejections count as brute-force failures") {
  CHECK(counts_as_auth_failure(v1::ERROR_BAD_SIGNATURE));
  CHECK(counts_as_auth_failure(v1::ERROR_UNKNOWN_SIGNER));
  CHECK(counts_as_auth_failure(v1::ERROR_NO_VALID_TOKEN));
  CHECK(counts_as_auth_failure(v1::ERROR_ALGORITHM_MISMATCH));
  CHECK_FALSE(counts_as_auth_failure(v1::ERROR_STALE_NONCE));
  CHECK_FALSE(counts_as_auth_failure(v1::ERROR_USES_EXHAUSTED));
  CHECK_FALSE(counts_as_auth_failure(v1::ERROR_MALFORMED));
  CHECK_FALSE(counts_as_auth_failure(v1::ERROR_UNSPECIFIED));
}
