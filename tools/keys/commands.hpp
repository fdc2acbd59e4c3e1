// The tollgate-keys subcommands. Each add_* registers its options on `root`
// and returns the subcommand with the function main() runs when it was chosen;
// that function returns the exit status or throws Failure.
#pragma once

#include <CLI/CLI.hpp>
#include <functional>

namespace tollgate::keys {

struct Command {
  CLI::App* app;
  std::function<int()> run;
};

Command add_keygen(CLI::App& root);
Command add_authorize_cloud(CLI::App& root);
Command add_mint(CLI::App& root);
Command add_inspect(CLI::App& root);
Command add_verify(CLI::App& root);
Command add_export_signing_input(CLI::App& root);
Command add_export_signature(CLI::App& root);

}  // namespace tollgate::keys
