// Per-link brute-force back-off (THREATS A15): after repeated requests whose
// signature could not be verified, the instrument waits before replying, so a
// flood of guesses on one link runs at a bounded rate, while a legitimate user
// is served at full speed again as soon as one of its requests verifies.
//
// Pure: no clock, no I/O. The caller passes a monotonic time in microseconds
// and applies the returned delay itself (the server waits on a timer).
//
// Rule: the first `threshold - 1` consecutive failures cost nothing; the
// threshold-th failure is delayed `initial`, each further one twice the
// previous, capped at `max`. A verified request resets the count, and so does
// a quiet period of `forget_after` with no failure (the flood stopped).
#pragma once

#include <cstdint>

#include "gateway/result.hpp"

namespace tollgate::instrument {

struct BackoffConfig {
  std::uint32_t threshold = 3;                // consecutive failures before the first delay
  std::int64_t initial_us = 50'000;           // first delay
  std::int64_t max_us = 2'000'000;            // cap
  std::int64_t forget_after_us = 60'000'000;  // no failure for this long -> count reset
};

// True for the rejections that say "this signer could not be verified": the
// ones a key-guessing flood produces (bad signature, unknown signer, a signer
// with no token on the device, algorithm or key-size refusals).
bool counts_as_auth_failure(Error e);

class Backoff {
 public:
  struct Step {
    std::int64_t delay_us = 0;   // wait this long before sending the reply
    std::uint32_t failures = 0;  // consecutive failures so far, this one included
    // True when the delay just started or grew: the caller records it in the audit log
    // (once per doubling, so a flood adds a bounded number of records).
    bool escalated = false;
  };

  Backoff() = default;
  explicit Backoff(BackoffConfig config) : config_(config) {}

  // A request failed verification at `now_us`.
  Step on_failure(std::int64_t now_us);
  // A request verified: back to full speed.
  void on_verified();

  std::uint32_t failures() const { return failures_; }
  // The delay of the `failures`-th consecutive failure (0 below the threshold).
  std::int64_t delay_for(std::uint32_t failures) const;
  const BackoffConfig& config() const { return config_; }

 private:
  BackoffConfig config_;
  std::uint32_t failures_ = 0;
  std::int64_t last_failure_us_ = 0;
  std::int64_t last_delay_us_ = 0;
};

}  // namespace tollgate::instrument
