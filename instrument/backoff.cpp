#include "instrument/backoff.hpp"

#include <algorithm>

namespace tollgate::instrument {

bool counts_as_auth_failure(Error e) {
  switch (e) {
    case v1::ERROR_BAD_SIGNATURE:
    case v1::ERROR_UNKNOWN_SIGNER:
    case v1::ERROR_NO_VALID_TOKEN:
    case v1::ERROR_ALGORITHM_NOT_ALLOWED:
    case v1::ERROR_ALGORITHM_MISMATCH:
    case v1::ERROR_KEY_TOO_WEAK:
      return true;
    default:
      return false;
  }
}

std::int64_t Backoff::delay_for(std::uint32_t failures) const {
  if (config_.threshold == 0 || failures < config_.threshold) return 0;
  std::int64_t delay = std::max<std::int64_t>(config_.initial_us, 0);
  // Doubling stops at the cap, so the loop is short and never overflows.
  for (std::uint32_t i = config_.threshold; i < failures && delay < config_.max_us; ++i) {
    delay *= 2;
    if (delay == 0) break;
  }
  return std::min(delay, config_.max_us);
}

Backoff::Step Backoff::on_failure(std::int64_t now_us) {
  // Compared as a difference so a wrapped or restarted monotonic clock only
  // ever resets the count, never extends it.
  if (failures_ > 0 &&
      (now_us - last_failure_us_ > config_.forget_after_us || now_us < last_failure_us_)) {
    on_verified();
  }
  if (failures_ < UINT32_MAX) ++failures_;
  last_failure_us_ = now_us;
  Step step;
  step.failures = failures_;
  step.delay_us = delay_for(failures_);
  step.escalated = step.delay_us > last_delay_us_;
  last_delay_us_ = step.delay_us;
  return step;
}

void Backoff::on_verified() {
  failures_ = 0;
  last_delay_us_ = 0;
}

}  // namespace tollgate::instrument
