// tollgate-keys: the offline key ceremony and the tools to check its output.
#include <CLI/CLI.hpp>
#include <exception>
#include <iostream>
#include <vector>

#include "tools/keys/cli_support.hpp"
#include "tools/keys/commands.hpp"

namespace {

// CLI11 messages can span lines; the contract is one line per error.
std::string one_line(std::string s) {
  for (char& c : s) {
    if (c == '\n' || c == '\r') c = ' ';
  }
  while (!s.empty() && s.back() == ' ') s.pop_back();
  return s;
}

}  // namespace

int main(int argc, char** argv) {
  using namespace tollgate::keys;
  CLI::App app{
      "tollgate-keys: the Tollgate key ceremony. Makes master, cloud and user keys, signs\n"
      "cloud key authorizations and device tokens, and inspects and verifies them offline\n"
      "exactly as an instrument would.",
      "tollgate-keys"};
  app.footer(
      "Times are ISO 8601 (2026-12-01, 2026-12-01T10:00:00Z, 2026-12-01T10:00:00+02:00).\n"
      "Exit status: 0 success; 1 verify found the token invalid; 2 bad arguments or input;\n"
      "3 internal error.\n"
      "Run 'tollgate-keys SUBCOMMAND --help' for each subcommand's options.");
  app.require_subcommand(1);
  app.set_help_all_flag("--help-all", "Show the help of every subcommand");

  std::vector<Command> commands{
      add_keygen(app),          add_authorize_cloud(app), add_mint(app),
      add_inspect(app),         add_verify(app),          add_export_signing_input(app),
      add_export_signature(app)};

  // CLI11 would only say "A subcommand is required" for a mistyped one.
  if (argc > 1 && argv[1][0] != '-') {
    std::string names;
    bool known = false;
    for (const Command& c : commands) {
      known = known || c.app->get_name() == argv[1];
      names += (names.empty() ? "" : ", ") + c.app->get_name();
    }
    if (!known) {
      std::cerr << "tollgate-keys: unknown subcommand '" << argv[1] << "' (one of " << names
                << "; see --help)\n";
      return kExitUsage;
    }
  }

  try {
    app.parse(argc, argv);
  } catch (const CLI::CallForHelp& e) {
    return app.exit(e);
  } catch (const CLI::CallForAllHelp& e) {
    return app.exit(e);
  } catch (const CLI::ParseError& e) {
    std::string where = "tollgate-keys";
    for (const CLI::App* sub : app.get_subcommands()) where += " " + sub->get_name();
    std::cerr << where << ": " << one_line(e.what()) << " (see --help)\n";
    return kExitUsage;
  }

  for (const Command& c : commands) {
    if (!c.app->parsed()) continue;
    const std::string where = "tollgate-keys " + c.app->get_name() + ": ";
    try {
      return c.run();
    } catch (const Failure& f) {
      std::cout.flush();
      std::cerr << where << one_line(f.what()) << '\n';
      return f.exit_code();
    } catch (const std::exception& e) {
      std::cerr << where << "unexpected error: " << one_line(e.what()) << '\n';
      return kExitInternal;
    }
  }
  return kExitUsage;
}
