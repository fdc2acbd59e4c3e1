// `tollgate-bench auth`: the authorization pipeline against its physical limits
// (../shared/brief/LIMITS.md "Targets"), measured side by side in one run.
//
//  memory   raw  = OpenSSL alone: EVP_DigestVerify of the same algorithm with a key
//                  parsed once, over messages of exactly a signed command's size
//           ours = Gateway::authorize_command on MemoryStorage in steady state (the
//                  nonce came with the previous decision, a valid token is installed):
//                  parse, verify, checks, state delta, commit; then complete_request
//           target: ours / raw >= 0.8
//  durable  raw  = a bare SQLite loop on the same directory with the instrument's
//                  pragmas (WAL, synchronous=FULL): one INSERT per transaction
//           ours = the same decision committed through the instrument's SqliteStore
//                  (charge before execute: one durable transaction per decision)
//           target: ours / raw >= 0.9
//           With --hosts N (default 8) a second durable row: N hosts' requests decided
//           back to back and made durable by ONE commit (gateway/group_commit.hpp), as
//           the instrument does with requests that arrive together on several links
//
// Every round runs each pair back to back (alternating which side goes first) for
// a fixed time; the reported rates are medians over rounds and the ratio is the
// median of the per-round ratios, which cancels most of a shared machine's drift.
// Requests are signed ahead, outside the timed sections.
#pragma once

#include <chrono>
#include <iosfwd>
#include <string>
#include <vector>

#include "gateway/crypto.hpp"

namespace tollgate::bench {

struct AuthOptions {
  std::vector<crypto::KeyType> algs{crypto::KeyType::kEd25519, crypto::KeyType::kP256,
                                    crypto::KeyType::kRsa2048};
  int rounds = 5;
  std::chrono::milliseconds memory_round{150};  // per side, per round
  std::chrono::milliseconds durable_round{500};
  bool memory = true;
  bool durable = true;
  // Run the durable loops until their WAL files are reused before timing (a
  // few seconds; see warm_until_wal_reused). Off only for smoke runs.
  bool warm_wal = true;
  // Where the SQLite files go (a fresh subdirectory is made and removed); empty =
  // the system temp directory. Both durable loops use it, so they share a disk.
  std::string db_dir;
  bool json = false;
  // Also measure the group commit: this many hosts' requests decided back to back
  // and made durable by one commit (a second durable row per algorithm); <= 1: off.
  std::size_t hosts = 8;
};

// Runs the benchmark; the table (or one JSON object per row) goes to `out`,
// progress to `progress`. Throws std::runtime_error when a benchmark cannot run
// (not when a ratio misses its target).
void run_auth_bench(const AuthOptions& options, std::ostream& out, std::ostream& progress);

}  // namespace tollgate::bench
