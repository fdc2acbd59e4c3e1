// ISO 8601 times and short durations as typed on the command line.
//
// This is the CLI edge: the gateway only ever sees Unix seconds (UTC). Header
// only, so tests/keys/test_iso_time.cpp can exercise it without linking the tool.
#pragma once

#include <cctype>
#include <cstdint>
#include <ctime>
#include <limits>
#include <optional>
#include <string>
#include <string_view>

namespace tollgate::keys {

using UnixTime = std::int64_t;

namespace iso_detail {

// True when s[from, from + n) are all decimal digits.
inline bool all_digits(std::string_view s, std::size_t from, std::size_t n) {
  if (s.size() < from + n) return false;
  for (std::size_t i = from; i < from + n; ++i) {
    if (s[i] < '0' || s[i] > '9') return false;
  }
  return true;
}

// Parses exactly `digits` decimal digits at `pos`, advancing it.
inline std::optional<int> fixed_digits(std::string_view s, std::size_t& pos, std::size_t digits) {
  if (s.size() - pos < digits) return std::nullopt;
  int v = 0;
  for (std::size_t i = 0; i < digits; ++i) {
    const char c = s[pos + i];
    if (c < '0' || c > '9') return std::nullopt;
    v = v * 10 + (c - '0');
  }
  pos += digits;
  return v;
}

// "Z", "+hh", "+hhmm" or "+hh:mm" (and the '-' forms): seconds east of UTC.
inline std::optional<long> zone_offset(std::string_view z) {
  if (z == "Z" || z == "z") return 0L;
  if (z.empty() || (z[0] != '+' && z[0] != '-')) return std::nullopt;
  const long sign = z[0] == '-' ? -1 : 1;
  std::size_t pos = 1;
  auto hh = fixed_digits(z, pos, 2);
  if (!hh) return std::nullopt;
  int mm = 0;
  if (pos < z.size()) {
    if (z[pos] == ':') ++pos;
    auto m = fixed_digits(z, pos, 2);
    if (!m) return std::nullopt;
    mm = *m;
  }
  if (pos != z.size() || *hh > 23 || mm > 59) return std::nullopt;
  return sign * (*hh * 3600L + mm * 60L);
}

}  // namespace iso_detail

// Accepts "2026-12-01" (midnight UTC), "2026-12-01T10:00:00Z", "2026-12-01T10:00Z",
// "2026-12-01T10:00:00+02:00" / "+0200" / "-05". A date-time without a zone is
// refused rather than guessed. Calendar-invalid dates (2026-02-30) are refused:
// strptime checks ranges per field only, so the result is round-tripped through gmtime.
inline std::optional<UnixTime> parse_iso8601(std::string_view text) {
  using iso_detail::all_digits;
  const std::string s(text);
  // strptime skips blanks and accepts one-digit fields, so the canonical shape is checked first.
  if (!all_digits(s, 0, 4) || s.size() < 10 || s[4] != '-' || !all_digits(s, 5, 2) || s[7] != '-' ||
      !all_digits(s, 8, 2)) {
    return std::nullopt;
  }
  std::tm tm{};
  const char* rest = strptime(s.c_str(), "%Y-%m-%d", &tm);
  if (rest != s.c_str() + 10) return std::nullopt;
  long offset = 0;
  if (*rest != '\0') {
    if (*rest != 'T' && *rest != 't') return std::nullopt;
    const std::size_t t0 = 11;
    const bool with_seconds = s.size() >= t0 + 8 && s[t0 + 5] == ':';
    if (!all_digits(s, t0, 2) || s[t0 + 2] != ':' || !all_digits(s, t0 + 3, 2) ||
        (with_seconds && !all_digits(s, t0 + 6, 2))) {
      return std::nullopt;
    }
    const char* after = strptime(rest + 1, with_seconds ? "%H:%M:%S" : "%H:%M", &tm);
    if (after != s.c_str() + t0 + (with_seconds ? 8 : 5)) return std::nullopt;
    auto zone = iso_detail::zone_offset(after);
    if (!zone) return std::nullopt;
    offset = *zone;
  }
  const std::tm wanted = tm;
  const std::time_t t = timegm(&tm);
  std::tm check{};
  if (gmtime_r(&t, &check) == nullptr || check.tm_year != wanted.tm_year ||
      check.tm_mon != wanted.tm_mon || check.tm_mday != wanted.tm_mday ||
      check.tm_hour != wanted.tm_hour || check.tm_min != wanted.tm_min ||
      check.tm_sec != wanted.tm_sec) {
    return std::nullopt;
  }
  return static_cast<UnixTime>(t) - offset;
}

// "2026-12-01T10:00:00Z"; "@<seconds>" for values gmtime cannot represent.
inline std::string format_iso8601(UnixTime t) {
  const auto tt = static_cast<std::time_t>(t);
  std::tm tm{};
  char buf[64];
  if (gmtime_r(&tt, &tm) == nullptr || tm.tm_year + 1900 < 0 || tm.tm_year + 1900 > 9999 ||
      std::strftime(buf, sizeof buf, "%Y-%m-%dT%H:%M:%SZ", &tm) == 0) {
    return "@" + std::to_string(t);
  }
  return buf;
}

// "7d", "12h", "30m", "90s", "1w" or a concatenation such as "1d12h"; > 0.
inline std::optional<std::int64_t> parse_duration(std::string_view text) {
  if (text.empty()) return std::nullopt;
  std::int64_t total = 0;
  std::size_t pos = 0;
  constexpr std::int64_t kMax = std::numeric_limits<std::int64_t>::max();
  while (pos < text.size()) {
    std::int64_t n = 0;
    const std::size_t digits_start = pos;
    while (pos < text.size() && std::isdigit(static_cast<unsigned char>(text[pos]))) {
      const int d = text[pos] - '0';
      if (n > (kMax - d) / 10) return std::nullopt;
      n = n * 10 + d;
      ++pos;
    }
    if (pos == digits_start || pos == text.size()) return std::nullopt;
    std::int64_t unit = 0;
    switch (text[pos]) {
      case 'w':
        unit = 7 * 86400;
        break;
      case 'd':
        unit = 86400;
        break;
      case 'h':
        unit = 3600;
        break;
      case 'm':
        unit = 60;
        break;
      case 's':
        unit = 1;
        break;
      default:
        return std::nullopt;
    }
    ++pos;
    if (n > (kMax - total) / unit) return std::nullopt;
    total += n * unit;
  }
  if (total <= 0) return std::nullopt;
  return total;
}

}  // namespace tollgate::keys
