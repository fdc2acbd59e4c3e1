// The instrument's TOML configuration and its clock source.
#include <doctest/doctest.h>
#include <stdlib.h>

#include <filesystem>
#include <fstream>

#include "instrument/config.hpp"

using namespace tollgate::instrument;

namespace {

InstrumentConfig parsed(const std::string& text) {
  auto r = parse_config(text);
  if (r.index() != 0) FAIL(std::get<1>(r).message);
  return std::get<0>(r);
}

std::string error_of(const std::string& text) {
  auto r = parse_config(text, "test.toml");
  REQUIRE(r.index() == 1);
  return std::get<1>(r).message;
}

}  // namespace

TEST_CASE("an empty configuration keeps every default") {
  auto c = parsed("");
  CHECK(c.clock_source == "system");
  CHECK_FALSE(c.firmware_version.has_value());
  CHECK(c.backoff.threshold == 3);
  CHECK(c.backoff.initial_us == 50'000);
  CHECK(c.backoff.max_us == 2'000'000);
  CHECK(c.policy.nonce_lifetime_seconds == 120);
  CHECK(c.verifier_threads == -1);
}

TEST_CASE("every documented key is read with its unit") {
  auto c = parsed(R"(
firmware_version = "sim 9"
[clock]
source = "file:/tmp/clock"
[backoff]
threshold = 5
initial_ms = 20
max_ms = 500
forget_after_s = 30
[policy]
nonce_lifetime_s = 60
max_nonces_in_flight = 8
clock_skew_s = 10
max_authorizations = 4
max_revoked_ids = 100
max_tokens = 50
idempotency_cache_size = 16
[link]
send_timeout_ms = 250
idle_flush_ms = 100
verifier_threads = 0
)");
  CHECK(c.firmware_version == "sim 9");
  CHECK(c.clock_source == "file:/tmp/clock");
  CHECK(c.backoff.threshold == 5);
  CHECK(c.backoff.initial_us == 20'000);
  CHECK(c.backoff.max_us == 500'000);
  CHECK(c.backoff.forget_after_us == 30'000'000);
  CHECK(c.policy.nonce_lifetime_seconds == 60);
  CHECK(c.policy.max_nonces_in_flight == 8);
  CHECK(c.policy.clock_skew_seconds == 10);
  CHECK(c.policy.max_authorizations == 4);
  CHECK(c.policy.max_revoked_ids == 100);
  CHECK(c.policy.max_tokens == 50);
  CHECK(c.policy.idempotency_cache_size == 16);
  CHECK(c.send_timeout.count() == 250);
  CHECK(c.idle_flush.count() == 100);
  CHECK(c.verifier_threads == 0);
}

TEST_CASE("a misspelt key, a wrong type or a value out of range is an error naming the key") {
  CHECK(error_of("[backoff]\ninitial_msec = 5\n").find("backoff.initial_msec: unknown key") !=
        std::string::npos);
  CHECK(error_of("[backoff]\nmax_ms = \"2s\"\n").find("backoff.max_ms") != std::string::npos);
  CHECK(error_of("[policy]\nnonce_lifetime_s = 0\n").find("policy.nonce_lifetime_s") !=
        std::string::npos);
  CHECK(error_of("[backoff]\ninitial_ms = 100\nmax_ms = 50\n").find("backoff.max_ms") !=
        std::string::npos);
  CHECK(error_of("[clock]\nsource = \"ntp\"\n").find("clock.source") != std::string::npos);
  CHECK(error_of("colour = 1\n").find("colour: unknown key") != std::string::npos);
  CHECK(error_of("[clock\n").find("test.toml") != std::string::npos);
}

TEST_CASE("a file clock follows the file and keeps its last good value") {
  std::string t = (std::filesystem::temp_directory_path() / "tg-clock-XXXXXX").string();
  REQUIRE(mkdtemp(t.data()) != nullptr);
  std::filesystem::path file = std::filesystem::path(t) / "clock";
  auto write = [&](const std::string& text) { std::ofstream(file, std::ios::trunc) << text; };
  write("1700000000\n");
  ClockSource clock("file:" + file.string());
  CHECK(clock.now() == 1700000000);
  write("1600000000");  // set back: the device sees it (the gateway's floor holds)
  CHECK(clock.now() == 1600000000);
  write("garbage");
  CHECK(clock.now() == 1600000000);
  std::filesystem::remove_all(t);
  CHECK(clock.now() == 1600000000);
}

TEST_CASE("clock sources other than system and file:PATH are refused") {
  CHECK_FALSE(check_clock_source("system").has_value());
  CHECK_FALSE(check_clock_source("file:/x").has_value());
  CHECK(check_clock_source("file:").has_value());
  CHECK(check_clock_source("gps").has_value());
}
