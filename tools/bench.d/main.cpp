// tollgate-bench: Tollgate's in-process benchmarks (docs/BENCHMARKS.md). `tools/bench`
// runs it; it reports rates and ratios, it never judges them by its exit status.
//
//   tollgate-bench auth [--rounds N] [--memory-ms MS] [--durable-ms MS] [--quick]
//                       [--algs ed25519,p256,rsa2048] [--only memory|durable]
//                       [--db-dir DIR] [--hosts N] [--json]
//
// Exit status: 0 ran; 1 a benchmark could not run; 2 bad arguments.
#include <CLI/CLI.hpp>
#include <exception>
#include <iostream>
#include <string>
#include <vector>

#include "tools/bench.d/auth_bench.hpp"

int main(int argc, char** argv) {
  using namespace tollgate;
  CLI::App app{"tollgate-bench: Tollgate's in-process benchmarks (see docs/BENCHMARKS.md)",
               "tollgate-bench"};
  app.require_subcommand(1);

  bench::AuthOptions auth;
  int memory_ms = static_cast<int>(auth.memory_round.count());
  int durable_ms = static_cast<int>(auth.durable_round.count());
  std::vector<std::string> algs{"ed25519", "p256", "rsa2048"};
  std::string only;
  bool quick = false;
  CLI::App* cmd = app.add_subcommand(
      "auth",
      "In-memory authorization vs raw OpenSSL verify, and durable authorization vs a bare "
      "SQLite fsync'd commit loop, side by side, per algorithm");
  cmd->add_option("--rounds", auth.rounds, "Rounds; each runs every pair once (median reported)")
      ->check(CLI::Range(1, 1000))
      ->capture_default_str();
  cmd->add_option("--memory-ms", memory_ms, "Timed work per side per round, in memory")
      ->check(CLI::Range(1, 60000))
      ->capture_default_str();
  cmd->add_option("--durable-ms", durable_ms, "Timed work per side per round, durable")
      ->check(CLI::Range(1, 60000))
      ->capture_default_str();
  cmd->add_flag("--quick", quick,
                "Very short rounds (20 ms / 40 ms), no WAL warm-up: a smoke run, not a result");
  cmd->add_option("--algs", algs, "Algorithms: ed25519, p256, rsa2048, rsa3072")
      ->delimiter(',')
      ->check(CLI::IsMember({"ed25519", "p256", "rsa2048", "rsa3072"}))
      ->capture_default_str();
  cmd->add_option("--only", only, "Run only the 'memory' or the 'durable' comparison")
      ->check(CLI::IsMember({"memory", "durable"}));
  cmd->add_option("--db-dir", auth.db_dir,
                  "Directory for the SQLite files (a scratch subdirectory is made and removed; "
                  "default: the system temp directory)");
  cmd->add_flag("--json", auth.json, "One JSON object per row instead of the table");
  cmd->add_option("--hosts", auth.hosts,
                  "Durable with group commit: requests of this many hosts decided per commit "
                  "(a second durable row; 0 or 1: only one host)")
      ->check(CLI::Range(0, 64))
      ->capture_default_str();

  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return app.exit(e) == 0 ? 0 : 2;
  }

  if (quick) {
    memory_ms = 20;
    durable_ms = 40;
    auth.warm_wal = false;
  }
  auth.memory_round = std::chrono::milliseconds(memory_ms);
  auth.durable_round = std::chrono::milliseconds(durable_ms);
  auth.memory = only.empty() || only == "memory";
  auth.durable = only.empty() || only == "durable";
  auth.algs.clear();
  for (const std::string& a : algs) auth.algs.push_back(*crypto::key_type_from_name(a));

  try {
    bench::run_auth_bench(auth, std::cout, std::cerr);
  } catch (const std::exception& e) {
    std::cerr << "tollgate-bench: error: " << e.what() << "\n";
    return 1;
  }
  return 0;
}
