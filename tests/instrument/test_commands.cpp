// The command registry: one declaration per command drives both the gateway's
// rules (cost, roles, argument checks before any charge) and the handler.
#include <doctest/doctest.h>

#include "instrument/commands.hpp"

using namespace tollgate;
using namespace tollgate::instrument;

namespace {

CommandArguments args(std::initializer_list<std::pair<const char*, const char*>> kv) {
  CommandArguments a;
  for (const auto& [k, v] : kv) a[k] = v;
  return a;
}

Status check(const CommandRegistry& r, const char* command, const CommandArguments& a) {
  const auto& rule = r.rules().at(command);
  return rule.validator ? rule.validator(a) : Status{};
}

}  // namespace

TEST_CASE("the simulated instrument declares its five commands with cost and roles") {
  auto r = simulated_instrument_commands();
  const auto& rules = r.rules();
  REQUIRE(rules.size() == 5);
  CHECK(rules.at("status").cost == 0);
  CHECK(rules.at("status").roles.empty());
  CHECK(rules.at("run-assay").cost == 1);
  CHECK(rules.at("get-result").cost == 0);
  CHECK(rules.at("calibrate").cost == 1);
  CHECK(rules.at("calibrate").roles == std::set<std::string, std::less<>>{"service"});
  CHECK(rules.at("set-temperature").cost == 0);
  CHECK(rules.at("set-temperature").roles == std::set<std::string, std::less<>>{"operator"});
  for (const auto& [name, spec] : r.commands()) {
    CHECK(rules.at(name).cost == spec.cost);
    CHECK(rules.at(name).roles == spec.roles);
    CHECK(static_cast<bool>(spec.handler));
  }
}

TEST_CASE("run-assay needs exactly a protocol and a sample of safe characters") {
  auto r = simulated_instrument_commands();
  CHECK(check(r, "run-assay", args({{"protocol", "elisa"}, {"sample", "S-1.a"}})).ok());
  CHECK(check(r, "run-assay", args({{"protocol", "elisa"}})).error() == v1::ERROR_BAD_ARGUMENT);
  CHECK(
      check(r, "run-assay", args({{"protocol", "elisa"}, {"sample", "S1"}, {"x", "1"}})).error() ==
      v1::ERROR_BAD_ARGUMENT);
  CHECK(check(r, "run-assay", args({{"protocol", "el isa"}, {"sample", "S1"}})).error() ==
        v1::ERROR_BAD_ARGUMENT);
  CHECK(check(r, "run-assay", args({{"protocol", ""}, {"sample", "S1"}})).error() ==
        v1::ERROR_BAD_ARGUMENT);
  std::string long_name(33, 'a');
  CHECK(check(r, "run-assay", args({{"protocol", long_name.c_str()}, {"sample", "S1"}})).error() ==
        v1::ERROR_BAD_ARGUMENT);
}

TEST_CASE("set-temperature accepts 4 to 95 degrees and nothing else") {
  auto r = simulated_instrument_commands();
  for (const char* ok : {"4", "4.0", "37.5", "95", "+20"}) {
    CAPTURE(ok);
    CHECK(check(r, "set-temperature", args({{"celsius", ok}})).ok());
  }
  for (const char* bad : {"3.99", "95.01", "-10", "nan", "inf", "1e2", "", "37,5", "0x20", " 37"}) {
    CAPTURE(bad);
    CHECK(check(r, "set-temperature", args({{"celsius", bad}})).error() == v1::ERROR_BAD_ARGUMENT);
  }
  CHECK(check(r, "set-temperature", {}).error() == v1::ERROR_BAD_ARGUMENT);
}

TEST_CASE("get-result takes a positive decimal id") {
  auto r = simulated_instrument_commands();
  CHECK(check(r, "get-result", args({{"id", "12"}})).ok());
  for (const char* bad : {"0", "012", "-1", "abc", "1.5", "99999999999999999999"}) {
    CAPTURE(bad);
    CHECK(check(r, "get-result", args({{"id", bad}})).error() == v1::ERROR_BAD_ARGUMENT);
  }
}

TEST_CASE("commands without arguments refuse any argument") {
  auto r = simulated_instrument_commands();
  CHECK(check(r, "status", {}).ok());
  CHECK(check(r, "calibrate", args({{"force", "1"}})).error() == v1::ERROR_BAD_ARGUMENT);
}

TEST_CASE("a vendor command added in one place is charged and checked as declared") {
  auto r = simulated_instrument_commands();
  CommandSpec flush{.name = "flush-lines",
                    .summary = "flush the fluid lines",
                    .cost = 2,
                    .roles = {"service"},
                    .args = {ArgSpec::decimal("ml", 0.5, 50)},
                    .handler = [](CommandContext&, const CommandArguments&) {
                      return CommandOutcome::ok("flushed");
                    }};
  REQUIRE(r.add(std::move(flush)).ok());
  CHECK(r.rules().at("flush-lines").cost == 2);
  CHECK(check(r, "flush-lines", args({{"ml", "10"}})).ok());
  CHECK(check(r, "flush-lines", args({{"ml", "60"}})).error() == v1::ERROR_BAD_ARGUMENT);
  // Validators still point at the right specs after the registry moves.
  CommandRegistry moved = std::move(r);
  CHECK(check(moved, "flush-lines", args({{"ml", "0.1"}})).error() == v1::ERROR_BAD_ARGUMENT);
  CHECK(check(moved, "set-temperature", args({{"celsius", "20"}})).ok());
}

TEST_CASE("a duplicate name or a missing handler is refused") {
  auto r = simulated_instrument_commands();
  CommandSpec dup;
  dup.name = "status";
  dup.handler = [](CommandContext&, const CommandArguments&) { return CommandOutcome::ok(""); };
  CHECK(r.add(std::move(dup)).error() == v1::ERROR_MALFORMED);
  CommandSpec no_handler;
  no_handler.name = "no-handler";
  CHECK(r.add(std::move(no_handler)).error() == v1::ERROR_MALFORMED);
  CHECK(r.add(CommandSpec{}).error() == v1::ERROR_MALFORMED);
}
