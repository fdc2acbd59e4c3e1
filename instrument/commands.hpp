// The command registry: every command the instrument offers is declared in ONE
// place (simulated_instrument_commands() in commands.cpp) with its handler,
// argument schema, cost in uses and the roles allowed. The gateway's
// CommandRules (cost, roles, argument validation before any charge) are built
// from it, so what is charged and what runs can never disagree.
//
// To add a command, a vendor appends one CommandSpec to that list:
//   {.name = "flush-lines", .summary = "...", .cost = 1, .roles = {"service"},
//    .args = {ArgSpec::decimal("ml", 0.5, 50)},
//    .handler = [](CommandContext& ctx, const CommandArguments& args) { ... }}
//
// Arguments are the CommandRequest's string map. The schema is strict: an
// unknown name, a missing required one, a text with characters outside
// [A-Za-z0-9._:-], or a number outside its range is ERROR_BAD_ARGUMENT, found
// before anything is charged. Handlers may still fail at run time (after the
// charge): they return FAILED with ERROR_COMMAND_FAILED or ERROR_BAD_ARGUMENT.
#pragma once

#include <cstdint>
#include <functional>
#include <map>
#include <optional>
#include <set>
#include <string>
#include <string_view>
#include <vector>

#include "gateway/bytes.hpp"
#include "gateway/gateway.hpp"
#include "gateway/policy.hpp"
#include "gateway/result.hpp"

namespace tollgate::instrument {

class SqliteStore;

struct ArgSpec {
  enum class Kind { kText, kUnsigned, kDecimal };
  std::string name;
  Kind kind = Kind::kText;
  bool required = true;
  std::size_t max_length = 32;  // characters of the argument's text
  double min = 0;               // kUnsigned, kDecimal: inclusive range
  double max = 0;

  static ArgSpec text(std::string name, std::size_t max_length = 32, bool required = true);
  static ArgSpec unsigned_int(std::string name, std::uint64_t min, std::uint64_t max);
  static ArgSpec decimal(std::string name, double min, double max);

  // ERROR_BAD_ARGUMENT unless `value` is well formed for this spec.
  Status check(std::string_view value) const;
};

// The simulated instrument's own state (not part of the trust state).
struct SimulatedInstrument {
  double temperature_celsius = 37.0;
  std::int64_t last_calibration = 0;  // device time; 0 = never since boot
  std::uint64_t calibrations = 0;
};

// What a handler gets: the device's now, the decision that charged it, the
// store (results) and the simulated hardware. `execution` is the KIND_EXECUTION
// audit record the service prepared; a handler that writes to the store may
// append it in the same transaction and set `execution_recorded`, otherwise
// the service appends it after the handler returns.
struct CommandContext {
  UnixTime now = 0;
  const Decision& decision;
  const DeviceState& gateway_state;  // after the charge (idempotency sequence etc.)
  SqliteStore* store = nullptr;
  SimulatedInstrument& instrument;
  v1::AuditRecord& execution;
  bool execution_recorded = false;
};

struct CommandOutcome {
  Error error = v1::ERROR_UNSPECIFIED;  // UNSPECIFIED = success; else the command FAILED
  std::string result;                   // short: it travels in every response
  static CommandOutcome ok(std::string result) {
    return {v1::ERROR_UNSPECIFIED, std::move(result)};
  }
  static CommandOutcome failed(Error e, std::string why) { return {e, std::move(why)}; }
};

using CommandHandler = std::function<CommandOutcome(CommandContext&, const CommandArguments&)>;

struct CommandSpec {
  std::string name;
  std::string summary;  // one line, for docs and `--help`
  std::uint32_t cost = 1;
  std::set<std::string, std::less<>> roles;  // empty = any valid token of the user
  std::vector<ArgSpec> args;
  CommandHandler handler;
};

class CommandRegistry {
 public:
  CommandRegistry() = default;
  // Move only: the rules' validators refer to the specs in place (map nodes
  // move with the map; a copy would point back into the original).
  CommandRegistry(CommandRegistry&&) = default;
  CommandRegistry& operator=(CommandRegistry&&) = default;
  CommandRegistry(const CommandRegistry&) = delete;
  CommandRegistry& operator=(const CommandRegistry&) = delete;

  // ERROR_MALFORMED when the name is empty or taken, or the handler is missing.
  Status add(CommandSpec spec);
  const CommandSpec* find(std::string_view name) const;
  const std::map<std::string, CommandSpec, std::less<>>& commands() const { return commands_; }

  // The gateway's view: cost, roles and a validator enforcing the schema.
  // Rebuilt by add(); the reference stays valid until the next add().
  const CommandRules& rules() const { return rules_; }

  // Checks `args` against `spec`'s schema (ERROR_BAD_ARGUMENT).
  static Status validate(const CommandSpec& spec, const CommandArguments& args);

 private:
  std::map<std::string, CommandSpec, std::less<>> commands_;
  CommandRules rules_;
};

// The simulated instrument's commands: status, run-assay, get-result, calibrate,
// set-temperature (see commands.cpp, the one place they are declared).
CommandRegistry simulated_instrument_commands();

}  // namespace tollgate::instrument
