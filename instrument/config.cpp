#include "instrument/config.hpp"

#include <charconv>
#include <ctime>
#include <fstream>
#include <set>
#include <sstream>
#include <toml.hpp>

namespace tollgate::instrument {
namespace {

using Table = toml::value;

struct Reader {
  const std::string& origin;
  std::optional<ConfigError> error;

  void fail(const std::string& key, const std::string& what) {
    if (!error) error = ConfigError{origin + ": " + key + ": " + what};
  }

  // Checks that `table` has no keys outside `allowed`.
  void only(const toml::value& table, const std::string& where,
            const std::set<std::string>& allowed) {
    for (const auto& [k, v] : table.as_table()) {
      if (!allowed.contains(k)) fail(where.empty() ? k : where + "." + k, "unknown key");
    }
  }

  template <class T>
  void integer(const toml::value& table, const std::string& where, const std::string& key,
               std::int64_t min, std::int64_t max, T& out, std::int64_t scale = 1) {
    if (!table.contains(key)) return;
    const auto& v = table.at(key);
    if (!v.is_integer()) return fail(where + key, "must be an integer");
    std::int64_t x = v.as_integer();
    if (x < min || x > max) {
      return fail(where + key, "must be in " + std::to_string(min) + ".." + std::to_string(max));
    }
    out = static_cast<T>(x * scale);
  }
};

}  // namespace

std::optional<std::string> check_clock_source(const std::string& source) {
  if (source == "system") return std::nullopt;
  if (source.rfind("file:", 0) == 0 && source.size() > 5) return std::nullopt;
  return "clock source must be \"system\" or \"file:PATH\", not \"" + source + "\"";
}

std::variant<InstrumentConfig, ConfigError> parse_config(const std::string& text,
                                                         const std::string& origin) {
  InstrumentConfig c;
  toml::value root;
  try {
    std::istringstream in(text);
    root = toml::parse(in, origin);
  } catch (const std::exception& e) {
    return ConfigError{origin + ": " + e.what()};
  }
  Reader r{origin, std::nullopt};
  r.only(root, "", {"firmware_version", "clock", "backoff", "policy", "link"});
  if (root.contains("firmware_version")) {
    const auto& v = root.at("firmware_version");
    if (!v.is_string() || v.as_string().str.empty() || v.as_string().str.size() > 64) {
      r.fail("firmware_version", "must be a string of 1..64 characters");
    } else {
      c.firmware_version = v.as_string().str;
    }
  }
  auto section = [&](const char* name) -> const toml::value* {
    if (!root.contains(name)) return nullptr;
    const auto& t = root.at(name);
    if (!t.is_table()) {
      r.fail(name, "must be a table");
      return nullptr;
    }
    return &t;
  };
  if (const auto* t = section("clock")) {
    r.only(*t, "clock", {"source"});
    if (t->contains("source")) {
      const auto& v = t->at("source");
      if (!v.is_string()) {
        r.fail("clock.source", "must be a string");
      } else if (auto why = check_clock_source(v.as_string().str)) {
        r.fail("clock.source", *why);
      } else {
        c.clock_source = v.as_string().str;
      }
    }
  }
  if (const auto* t = section("backoff")) {
    r.only(*t, "backoff", {"threshold", "initial_ms", "max_ms", "forget_after_s"});
    r.integer(*t, "backoff.", "threshold", 0, 1000, c.backoff.threshold);
    r.integer(*t, "backoff.", "initial_ms", 0, 60'000, c.backoff.initial_us, 1000);
    r.integer(*t, "backoff.", "max_ms", 0, 600'000, c.backoff.max_us, 1000);
    r.integer(*t, "backoff.", "forget_after_s", 1, 86'400, c.backoff.forget_after_us, 1'000'000);
    if (c.backoff.max_us < c.backoff.initial_us) r.fail("backoff.max_ms", "must be >= initial_ms");
  }
  if (const auto* t = section("policy")) {
    r.only(*t, "policy",
           {"nonce_lifetime_s", "max_nonces_in_flight", "clock_skew_s", "max_authorizations",
            "max_revoked_ids", "max_tokens", "idempotency_cache_size"});
    auto& p = c.policy;
    r.integer(*t, "policy.", "nonce_lifetime_s", 1, 86'400, p.nonce_lifetime_seconds);
    r.integer(*t, "policy.", "max_nonces_in_flight", 1, 4096, p.max_nonces_in_flight);
    r.integer(*t, "policy.", "clock_skew_s", 0, 86'400, p.clock_skew_seconds);
    r.integer(*t, "policy.", "max_authorizations", 1, 1024, p.max_authorizations);
    r.integer(*t, "policy.", "max_revoked_ids", 1, 1'000'000, p.max_revoked_ids);
    r.integer(*t, "policy.", "max_tokens", 1, 1'000'000, p.max_tokens);
    r.integer(*t, "policy.", "idempotency_cache_size", 1, 100'000, p.idempotency_cache_size);
  }
  if (const auto* t = section("link")) {
    r.only(*t, "link", {"send_timeout_ms", "idle_flush_ms", "verifier_threads"});
    std::int64_t send_ms = c.send_timeout.count(), idle_ms = c.idle_flush.count();
    r.integer(*t, "link.", "send_timeout_ms", 10, 600'000, send_ms);
    r.integer(*t, "link.", "idle_flush_ms", 10, 600'000, idle_ms);
    r.integer(*t, "link.", "verifier_threads", -1, 64, c.verifier_threads);
    c.send_timeout = std::chrono::milliseconds(send_ms);
    c.idle_flush = std::chrono::milliseconds(idle_ms);
  }
  if (r.error) return *r.error;
  return c;
}

std::variant<InstrumentConfig, ConfigError> load_config(const std::filesystem::path& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return ConfigError{path.string() + ": cannot read"};
  std::ostringstream ss;
  ss << in.rdbuf();
  return parse_config(ss.str(), path.string());
}

ClockSource::ClockSource(std::string source) : source_(std::move(source)) {
  if (source_.rfind("file:", 0) == 0) file_ = source_.substr(5);
}

UnixTime ClockSource::now() {
  if (!file_) return static_cast<UnixTime>(std::time(nullptr));
  std::ifstream in(*file_);
  std::string text;
  if (in >> text) {
    UnixTime v = 0;
    auto [p, ec] = std::from_chars(text.data(), text.data() + text.size(), v);
    if (ec == std::errc() && p == text.data() + text.size()) last_ = v;
  }
  if (last_) return *last_;
  return static_cast<UnixTime>(std::time(nullptr));
}

}  // namespace tollgate::instrument
