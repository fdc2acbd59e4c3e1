// The user-space virtual CAN bus: a hub process that relays CAN / CAN FD frames
// between any number of nodes connected over a Unix-domain stream socket.
//
// It models one physical bus: one frame on the wire at a time, the lowest
// identifier winning arbitration among the frames the nodes have queued; each
// frame reaches the OTHER nodes only after its airtime at the configured bit
// rates (stuff bits counted from the frame's actual bits, see
// transport/framing/airtime.hpp), and then the sender gets a transmit
// confirmation. The wire protocol is in transport/framing/hub_protocol.hpp.
//
// `tollgate-bus hub ...` (tools/bus/main.cpp) fills HubOptions (see
// hub_cli.hpp for the CLI11 wiring) and calls run_hub().
#pragma once

#include <cstddef>
#include <cstdint>
#include <functional>
#include <optional>
#include <string>

namespace tollgate::bus {

inline constexpr std::uint32_t kDefaultSpinUs = 150;

// True when this process runs under SCHED_FIFO or SCHED_RR: busy-waiting
// then costs other jobs, not our latency.
bool realtime_scheduling();

struct HubOptions {
  std::string socket_path;            // --socket PATH (required); a stale socket file is replaced
  std::uint32_t bitrate = 500000;     // --bitrate: nominal (arbitration) bit rate, bit/s
  std::uint32_t fd_data_bitrate = 0;  // --fd-data-bitrate: FD data phase with BRS; 0 = bitrate
  bool no_airtime = false;            // --no-airtime: frames take no time (fast tests)

  // Fault injection, each a probability per frame in [0, 1].
  double drop = 0;       // --drop: the receivers miss the frame; the sender sees success
  double duplicate = 0;  // --duplicate: the frame goes on the bus twice, receivers get it twice
  double reorder = 0;    // --reorder: the frame reaches receivers after the next frame
  double corrupt = 0;    // --corrupt: bit error -> receivers' CAN CRC fails, error frame, the
                       //   sender retransmits (airtime of both counted); nobody gets the bad frame
  double tamper = 0;           // --tamper: data bytes altered behind a valid CAN CRC (a MITM)
  std::uint32_t delay_us = 0;  // --delay-us: extra latency before receivers get each frame
  std::uint64_t seed = 0;      // --seed: fault RNG seed; 0 = pick one (printed at start)

  std::string candump_log;  // --candump-log FILE: every delivered frame, can-utils log format
  std::string pcap;         // --pcap FILE: every delivered frame, LINKTYPE_CAN_SOCKETCAN
  std::string interface_name = "vbus0";  // --interface: name written into captures

  // Caps on what nodes can make the hub hold.
  std::size_t max_nodes = 64;           // --max-nodes: further connections are refused
  std::size_t max_queued_frames = 256;  // per node, waiting for the bus; more are rejected
  // Per node, messages waiting behind a write it does not drain: beyond this its
  // deliveries are dropped and counted (rx overflow); when as many more are lost,
  // or twice this many messages of any kind wait, the node is disconnected.
  std::size_t max_outbound_messages = 65536;
  // Consecutive error frames before the sender gets a failed confirmation (a
  // real node goes bus-off at 32).
  unsigned max_retransmissions = 31;

  bool quiet = false;  // --quiet: no per-node connect/disconnect lines on stderr

  // --spin-us: punctuality at the turnarounds. When the frame on the bus is the
  // last one queued, the hub wakes this long before the frame completes and
  // polls (busy-waits) until it does, then polls this long again for a node's
  // answer, instead of sleeping through the tens of microseconds a timer or
  // socket wake-up costs. It only burns CPU around the moments the bus goes
  // idle; 0 sleeps always (timers only). Ignored with --no-airtime. Unset:
  // kDefaultSpinUs when the hub runs under a real-time policy (chrt), which
  // gives it a core of its own when it polls, else 0 (a polling process at
  // normal priority on a busy machine is time-sliced and only gets later).
  std::optional<std::uint32_t> spin_us;

  // Called once the socket listens (tests and parents use it as a readiness signal).
  std::function<void()> on_ready;
};

// A one-line reason why the options are unusable, or nullopt when they are fine.
std::optional<std::string> validate_hub_options(const HubOptions& options);

// Runs the hub until SIGINT or SIGTERM; prints the counters on stdout on exit
// and on SIGUSR1. Returns 0 after a clean stop, 1 (with one line on stderr) when
// the options are invalid or the socket or a capture file cannot be opened.
// Installs handlers for SIGINT, SIGTERM and SIGUSR1 and ignores SIGPIPE while it runs.
int run_hub(const HubOptions& options);

}  // namespace tollgate::bus
