// The command line's time syntax: what operators type for validity windows.
#include <doctest/doctest.h>

#include "tools/keys/iso_time.hpp"

using tollgate::keys::format_iso8601;
using tollgate::keys::parse_duration;
using tollgate::keys::parse_iso8601;

TEST_CASE("a bare date means midnight UTC") {
  CHECK(parse_iso8601("2026-12-01") == 1796083200);
  CHECK(parse_iso8601("1970-01-01") == 0);
}

TEST_CASE("a date-time in UTC is read to the second, with or without seconds") {
  CHECK(parse_iso8601("2026-12-01T10:00:00Z") == 1796083200 + 36000);
  CHECK(parse_iso8601("2026-12-01T10:00Z") == 1796083200 + 36000);
  CHECK(parse_iso8601("2026-12-01t10:00:01z") == 1796083200 + 36001);
}

TEST_CASE("zone offsets are applied, in every written form") {
  const auto utc = parse_iso8601("2026-12-01T10:00:00Z");
  REQUIRE(utc);
  CHECK(parse_iso8601("2026-12-01T12:00:00+02:00") == utc);
  CHECK(parse_iso8601("2026-12-01T12:00:00+0200") == utc);
  CHECK(parse_iso8601("2026-12-01T12:00:00+02") == utc);
  CHECK(parse_iso8601("2026-12-01T04:30:00-05:30") == utc);
}

TEST_CASE("times before the epoch survive, including the second that timegm reports as -1") {
  CHECK(parse_iso8601("1969-12-31T23:59:59Z") == -1);
  CHECK(parse_iso8601("1969-12-31T23:59:58Z") == -2);
}

TEST_CASE("malformed or impossible times are refused, never guessed") {
  for (const char* bad : {"",
                          "2026",
                          "2026-12",
                          "2026-1-01",
                          "2026-01-1",
                          "2026-01- 1",
                          " 2026-01-01",
                          "2026/01/01",
                          "2026-13-01",
                          "2026-02-30",
                          "2026-02-29",
                          "2026-12-01T10:00:00",
                          "2026-12-01T10:00",
                          "2026-12-01T25:00:00Z",
                          "2026-12-01T10:60:00Z",
                          "2026-12-01T10:00:60Z",
                          "2026-12-01T1:00:00Z",
                          "2026-12-01T10:00:00+2",
                          "2026-12-01T10:00:00+24:00",
                          "2026-12-01T10:00:00Zjunk",
                          "2026-12-01 10:00:00Z",
                          "2026-12-01X",
                          "tomorrow",
                          "20261-01-01"}) {
    CAPTURE(bad);
    CHECK_FALSE(parse_iso8601(bad).has_value());
  }
  CHECK(parse_iso8601("2028-02-29").has_value());  // a leap year
}

TEST_CASE("formatting is ISO 8601 UTC and round-trips") {
  CHECK(format_iso8601(0) == "1970-01-01T00:00:00Z");
  CHECK(format_iso8601(1796083200 + 36000) == "2026-12-01T10:00:00Z");
  for (std::int64_t t : {std::int64_t{-86400}, std::int64_t{1}, std::int64_t{4102444799}}) {
    CHECK(parse_iso8601(format_iso8601(t)) == t);
  }
}

TEST_CASE("times beyond year 9999 are shown as raw seconds rather than misprinted") {
  CHECK(format_iso8601(INT64_MAX) == "@9223372036854775807");
  CHECK(format_iso8601(253402300800) == "@253402300800");  // 10000-01-01
}

TEST_CASE("durations take d, h, m, s, w and combinations") {
  CHECK(parse_duration("7d") == 7 * 86400);
  CHECK(parse_duration("12h") == 12 * 3600);
  CHECK(parse_duration("30m") == 1800);
  CHECK(parse_duration("90s") == 90);
  CHECK(parse_duration("1w") == 7 * 86400);
  CHECK(parse_duration("1d12h") == 36 * 3600);
}

TEST_CASE("zero, negative, unitless and overflowing durations are refused") {
  for (const char* bad : {"", "0s", "0d", "7", "d", "-1d", "7x", "7d ", " 7d", "1.5d",
                          "99999999999999999999s", "9223372036854775807d"}) {
    CAPTURE(bad);
    CHECK_FALSE(parse_duration(bad).has_value());
  }
}
