#include "instrument/commands.hpp"

#include <cassert>
#include <charconv>
#include <cmath>
#include <cstdio>
#include <utility>

#include "instrument/store.hpp"

namespace tollgate::instrument {
namespace {

bool is_text_char(char c) {
  return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '.' ||
         c == '_' || c == '-' || c == ':';
}

std::optional<double> parse_decimal(std::string_view s) {
  // Plain decimal notation only: from_chars would also take "inf", "nan" and
  // exponents, none of which a person types for a temperature.
  if (s.empty()) return std::nullopt;
  for (char c : s) {
    if (!((c >= '0' && c <= '9') || c == '.' || c == '-' || c == '+')) return std::nullopt;
  }
  if (s.front() == '+') s.remove_prefix(1);
  double v = 0;
  auto [p, ec] = std::from_chars(s.data(), s.data() + s.size(), v);
  if (ec != std::errc() || p != s.data() + s.size() || !std::isfinite(v)) return std::nullopt;
  return v;
}

std::optional<std::uint64_t> parse_unsigned(std::string_view s) {
  if (s.empty() || (s.size() > 1 && s.front() == '0')) return std::nullopt;
  std::uint64_t v = 0;
  auto [p, ec] = std::from_chars(s.data(), s.data() + s.size(), v);
  if (ec != std::errc() || p != s.data() + s.size()) return std::nullopt;
  return v;
}

std::string fixed1(double v) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.1f", v);
  return buf;
}

std::string arg(const CommandArguments& args, const std::string& name) {
  auto it = args.find(name);
  return it == args.end() ? std::string() : it->second;
}

// --- The simulated instrument's handlers -----------------------------------

CommandOutcome do_status(CommandContext& ctx, const CommandArguments&) {
  std::string out = "temp=" + fixed1(ctx.instrument.temperature_celsius);
  out += ctx.instrument.last_calibration == 0
             ? " cal=none"
             : " cal=" + std::to_string(ctx.instrument.last_calibration);
  return CommandOutcome::ok(std::move(out));
}

CommandOutcome do_run_assay(CommandContext& ctx, const CommandArguments& args) {
  if (ctx.store == nullptr) return CommandOutcome::failed(v1::ERROR_COMMAND_FAILED, "no store");
  AssayResult r;
  r.created_at = ctx.now;
  r.protocol = arg(args, "protocol");
  r.sample = arg(args, "sample");
  // A deterministic "measurement" derived from the request, so a test can
  // recompute it; a real instrument reads its detector here.
  const auto& h = ctx.decision.request_hash;
  unsigned od = ((unsigned{h[0]} << 8) | h[1]) % 3000U;
  char value[16];
  std::snprintf(value, sizeof value, "%u.%03u", od / 1000U, od % 1000U);
  r.value = value;
  r.token_id = ctx.decision.token_id;
  r.request_hash.assign(h.begin(), h.begin() + 16);
  // The result and the record of its execution land in one transaction.
  ctx.execution.set_accepted(true);
  // The id is the charge's idempotency sequence, durable since the charge: a
  // result row written lazily and lost in a power cut never has its id reused.
  if (auto it = ctx.gateway_state.idempotency.find(ctx.decision.key);
      it != ctx.gateway_state.idempotency.end()) {
    r.id = it->second.sequence;
  }
  auto id = ctx.store->put_result(r, {ctx.execution}, Durability::kLazy);
  if (!id) {
    ctx.execution.set_accepted(false);
    ctx.execution.set_reason(v1::ERROR_COMMAND_FAILED);
    return CommandOutcome::failed(v1::ERROR_COMMAND_FAILED, "result not stored");
  }
  ctx.execution_recorded = true;
  // Only the id travels back: it keeps the response within a few CAN frames.
  return CommandOutcome::ok(std::to_string(*id));
}

CommandOutcome do_get_result(CommandContext& ctx, const CommandArguments& args) {
  if (ctx.store == nullptr) return CommandOutcome::failed(v1::ERROR_COMMAND_FAILED, "no store");
  auto id = parse_unsigned(arg(args, "id"));
  if (!id) return CommandOutcome::failed(v1::ERROR_BAD_ARGUMENT, "bad id");
  auto r = ctx.store->get_result(*id);
  if (!r) return CommandOutcome::failed(v1::ERROR_COMMAND_FAILED, "store unreadable");
  if (!r->has_value()) return CommandOutcome::failed(v1::ERROR_BAD_ARGUMENT, "no such result");
  const AssayResult& a = **r;
  return CommandOutcome::ok(a.protocol + " " + a.sample + " " + a.value + " " +
                            std::to_string(a.created_at));
}

CommandOutcome do_calibrate(CommandContext& ctx, const CommandArguments&) {
  ctx.instrument.last_calibration = ctx.now;
  ++ctx.instrument.calibrations;
  return CommandOutcome::ok("calibrated");
}

CommandOutcome do_set_temperature(CommandContext& ctx, const CommandArguments& args) {
  auto v = parse_decimal(arg(args, "celsius"));
  if (!v) return CommandOutcome::failed(v1::ERROR_BAD_ARGUMENT, "bad celsius");
  ctx.instrument.temperature_celsius = *v;
  return CommandOutcome::ok(fixed1(*v));
}

}  // namespace

ArgSpec ArgSpec::text(std::string name, std::size_t max_length, bool required) {
  ArgSpec a;
  a.name = std::move(name);
  a.kind = Kind::kText;
  a.max_length = max_length;
  a.required = required;
  return a;
}

ArgSpec ArgSpec::unsigned_int(std::string name, std::uint64_t min, std::uint64_t max) {
  ArgSpec a;
  a.name = std::move(name);
  a.kind = Kind::kUnsigned;
  a.max_length = 20;
  a.min = static_cast<double>(min);
  a.max = static_cast<double>(max);
  return a;
}

ArgSpec ArgSpec::decimal(std::string name, double min, double max) {
  ArgSpec a;
  a.name = std::move(name);
  a.kind = Kind::kDecimal;
  a.max_length = 16;
  a.min = min;
  a.max = max;
  return a;
}

Status ArgSpec::check(std::string_view value) const {
  if (value.empty() || value.size() > max_length) return v1::ERROR_BAD_ARGUMENT;
  switch (kind) {
    case Kind::kText:
      for (char c : value) {
        if (!is_text_char(c)) return v1::ERROR_BAD_ARGUMENT;
      }
      return {};
    case Kind::kUnsigned: {
      auto v = parse_unsigned(value);
      if (!v || static_cast<double>(*v) < min || static_cast<double>(*v) > max) {
        return v1::ERROR_BAD_ARGUMENT;
      }
      return {};
    }
    case Kind::kDecimal: {
      auto v = parse_decimal(value);
      if (!v || *v < min || *v > max) return v1::ERROR_BAD_ARGUMENT;
      return {};
    }
  }
  return v1::ERROR_BAD_ARGUMENT;
}

Status CommandRegistry::validate(const CommandSpec& spec, const CommandArguments& args) {
  for (const auto& [name, value] : args) {
    const ArgSpec* found = nullptr;
    for (const auto& a : spec.args) {
      if (a.name == name) found = &a;
    }
    if (found == nullptr) return v1::ERROR_BAD_ARGUMENT;
    if (auto st = found->check(value); !st) return st;
  }
  for (const auto& a : spec.args) {
    if (a.required && args.find(a.name) == args.end()) return v1::ERROR_BAD_ARGUMENT;
  }
  return {};
}

Status CommandRegistry::add(CommandSpec spec) {
  if (spec.name.empty() || !spec.handler || commands_.contains(spec.name)) {
    return v1::ERROR_MALFORMED;
  }
  auto& stored = commands_.emplace(spec.name, std::move(spec)).first->second;
  CommandRule rule;
  rule.cost = stored.cost;
  rule.roles = stored.roles;
  // The map node (and so `stored`) stays put as commands are added.
  rule.validator = [&stored](const CommandArguments& args) { return validate(stored, args); };
  rules_[stored.name] = std::move(rule);
  return {};
}

const CommandSpec* CommandRegistry::find(std::string_view name) const {
  auto it = commands_.find(name);
  return it == commands_.end() ? nullptr : &it->second;
}

CommandRegistry simulated_instrument_commands() {
  CommandRegistry registry;
  std::vector<CommandSpec> specs;
  // ---- The one place the instrument's commands are declared. ----
  specs.push_back({.name = "status",
                   .summary = "temperature and last calibration",
                   .cost = 0,
                   .roles = {},
                   .args = {},
                   .handler = do_status});
  specs.push_back({.name = "run-assay",
                   .summary = "run PROTOCOL on SAMPLE; stores a result, returns its id",
                   .cost = 1,
                   .roles = {},
                   .args = {ArgSpec::text("protocol"), ArgSpec::text("sample")},
                   .handler = do_run_assay});
  specs.push_back({.name = "get-result",
                   .summary = "a stored result: protocol, sample, value, time",
                   .cost = 0,
                   .roles = {},
                   .args = {ArgSpec::unsigned_int("id", 1, (std::uint64_t{1} << 53))},
                   .handler = do_get_result});
  specs.push_back({.name = "calibrate",
                   .summary = "calibrate the detector (service engineers)",
                   .cost = 1,
                   .roles = {"service"},
                   .args = {},
                   .handler = do_calibrate});
  specs.push_back({.name = "set-temperature",
                   .summary = "set the incubator temperature, 4..95 degrees Celsius",
                   .cost = 0,
                   .roles = {"operator"},
                   .args = {ArgSpec::decimal("celsius", 4.0, 95.0)},
                   .handler = do_set_temperature});
  for (auto& s : specs) {
    [[maybe_unused]] Status st = registry.add(std::move(s));
    assert(st.ok());
  }
  return registry;
}

}  // namespace tollgate::instrument
