// CLI11 wiring for `tollgate-bus hub`: header-only so tollgate_bus_lib needs no
// CLI11. Usage in main.cpp:
//   tollgate::bus::HubOptions hub_options;
//   auto* hub = app.add_subcommand("hub", "Run the user-space virtual CAN bus");
//   tollgate::bus::add_hub_options(*hub, hub_options);
//   ... if (*hub) return tollgate::bus::run_hub(hub_options);
#pragma once

#include <CLI/CLI.hpp>

#include "tools/bus/hub.hpp"

namespace tollgate::bus {

inline void add_hub_options(CLI::App& cmd, HubOptions& o) {
  cmd.description(
      "Run the user-space virtual CAN bus: relays CAN / CAN FD frames between nodes connected to "
      "a Unix socket, one frame at a time, lowest identifier first, each delivered after its "
      "airtime. Counters are printed on exit (SIGINT/SIGTERM) and on SIGUSR1.");
  cmd.add_option("--socket", o.socket_path, "Unix-domain socket path the nodes connect to")
      ->required();
  cmd.add_option("--bitrate", o.bitrate, "Nominal (arbitration) bit rate, bit/s")
      ->capture_default_str()
      ->check(CLI::Range(1000U, 1000000U));
  cmd.add_option("--fd-data-bitrate", o.fd_data_bitrate,
                 "CAN FD data-phase bit rate for frames with BRS, bit/s (default: --bitrate)")
      ->check(CLI::Range(0U, 16000000U));
  cmd.add_flag("--no-airtime", o.no_airtime, "Frames take no time on the bus (fast tests)");
  auto probability = CLI::Range(0.0, 1.0);
  cmd.add_option("--drop", o.drop, "Probability a frame is lost for all receivers")
      ->check(probability);
  cmd.add_option("--duplicate", o.duplicate, "Probability a frame goes on the bus twice")
      ->check(probability);
  cmd.add_option("--reorder", o.reorder, "Probability a frame arrives after the next frame")
      ->check(probability);
  cmd.add_option("--corrupt", o.corrupt,
                 "Probability of a bit error: error frame, sender retransmits, airtime counted")
      ->check(probability);
  cmd.add_option("--tamper", o.tamper,
                 "Probability a frame's data is altered behind a valid CAN CRC (MITM)")
      ->check(probability);
  cmd.add_option("--delay-us", o.delay_us, "Extra latency before receivers get each frame, us");
  cmd.add_option("--seed", o.seed, "Fault RNG seed (0: random, printed at start)");
  cmd.add_option("--candump-log", o.candump_log, "Write delivered frames as a candump -l log");
  cmd.add_option("--pcap", o.pcap, "Write delivered frames as pcap (LINKTYPE_CAN_SOCKETCAN)");
  cmd.add_option("--interface", o.interface_name, "Interface name written into captures")
      ->capture_default_str();
  cmd.add_option("--max-nodes", o.max_nodes, "Most nodes connected at once")->capture_default_str();
  cmd.add_option("--spin-us", o.spin_us,
                 "Busy-wait this long around the moments the bus goes idle, so turnarounds "
                 "lose no wake-up latency; 0: sleep on timers only (default: " +
                     std::to_string(kDefaultSpinUs) +
                     " under a real-time policy, e.g. chrt -f 20, else 0)")
      ->check(CLI::Range(0U, 100000U));
  cmd.add_flag("--quiet", o.quiet, "No per-node connect/disconnect lines on stderr");
}

}  // namespace tollgate::bus
