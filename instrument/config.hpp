// The instrument's configuration file (TOML, optional). Every key is optional
// and has the default shown; an unknown key or a value out of range is an
// error naming the key, so a typo is never silently ignored.
//
//   firmware_version = "tollgate-sim 0.1.0"   # reported in StatusReport (default:
//                                             # the one recorded at provisioning)
//   [clock]
//   source = "system"                 # or "file:PATH": Unix seconds read from PATH
//                                     # at every decision (tests set the clock back)
//   [backoff]                         # brute-force mitigation, per link
//   threshold = 3                     # consecutive failures before the first delay
//   initial_ms = 50                   # first delay, doubling per further failure
//   max_ms = 2000                     # cap
//   forget_after_s = 60               # quiet time after which failures are forgotten
//   [policy]
//   nonce_lifetime_s = 120
//   max_nonces_in_flight = 32
//   clock_skew_s = 300
//   max_authorizations = 16
//   max_revoked_ids = 4096
//   max_tokens = 1024
//   idempotency_cache_size = 64
//   [link]
//   send_timeout_ms = 5000            # a reply not sent by then is dropped (logged)
//   idle_flush_ms = 1000              # commit pending responses/audit events when idle
//   verifier_threads = -1             # verify signatures ahead while busy: -1 one per core, 0 off
#pragma once

#include <chrono>
#include <cstdint>
#include <filesystem>
#include <optional>
#include <string>
#include <variant>

#include "gateway/policy.hpp"
#include "instrument/backoff.hpp"

namespace tollgate::instrument {

struct InstrumentConfig {
  std::optional<std::string> firmware_version;
  std::string clock_source = "system";
  BackoffConfig backoff;
  DevicePolicy policy;
  std::chrono::milliseconds send_timeout{5000};
  std::chrono::milliseconds idle_flush{1000};
  int verifier_threads = -1;  // -1: one per core (ServerOptions::verifier_threads)
};

struct ConfigError {
  std::string message;  // one line: file, key and what is wrong
};

// Reads and checks a configuration file.
std::variant<InstrumentConfig, ConfigError> load_config(const std::filesystem::path& path);
// The same from TOML text (`origin` names it in errors).
std::variant<InstrumentConfig, ConfigError> parse_config(const std::string& text,
                                                         const std::string& origin = "config");

// "system" or "file:PATH" (PATH not empty); the error otherwise.
std::optional<std::string> check_clock_source(const std::string& source);

// Reads the device clock: the system clock, or the first integer in the file
// named by "file:PATH". A file that cannot be read or parsed yields the last
// value read from it (the system clock before the first good read), so a test
// rewriting the file never makes the device see garbage.
class ClockSource {
 public:
  explicit ClockSource(std::string source = "system");
  UnixTime now();
  const std::string& source() const { return source_; }

 private:
  std::string source_;
  std::optional<std::filesystem::path> file_;
  std::optional<UnixTime> last_;
};

}  // namespace tollgate::instrument
