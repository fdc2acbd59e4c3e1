// `tollgate-bus bench`: moves K messages of N bytes over a link and compares
// the time taken with the ISO-TP minimum time at the bus's bit rates
// (transport/framing/airtime.hpp, ../shared/brief/LIMITS.md).
//
// The yardstick counts what ISO-TP actually carries: the message plus the
// link's 4-byte CRC-32C trailer, every frame back to back with no stuff bits
// and no gaps, flow control included. The measured time runs from the first
// send until the last message arrived at --peer (or, without a peer, until the
// last send completed).
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

namespace tollgate::bus {

struct BenchRow {
  std::size_t size = 0;     // message bytes (without the CRC trailer)
  std::uint64_t count = 0;  // messages moved
  std::uint64_t measured_ns = 0;
  std::uint64_t min_ns = 0;             // ISO-TP minimum for `count` messages
  std::uint64_t min_frames = 0;         // frames the minimum needs (data + flow control)
  std::optional<std::uint64_t> frames;  // frames our links sent (unknown for the kernel's ISO-TP)
  std::optional<std::uint64_t> bus_frames;   // frames the hub put on the bus
  std::optional<std::uint64_t> bus_busy_ns;  // time the hub's bus was occupied
  std::uint64_t errors = 0;                  // failed sends or receives, wrong payloads
  // With --repeat R > 1 the row is the run with the median ratio of R runs of
  // `count` messages each (errors summed over all); these span all R ratios.
  std::uint64_t repeats = 1;
  double ratio_min = 0;
  double ratio_max = 0;
  double ratio() const { return min_ns == 0 ? 0 : static_cast<double>(measured_ns) / min_ns; }
  // What the bus itself needed (actual stuff bits) against the stuff-free minimum.
  double busy_ratio() const {
    return min_ns == 0 || !bus_busy_ns ? 0 : static_cast<double>(*bus_busy_ns) / min_ns;
  }
  // Time the bus stood idle per message: turnarounds (FF -> FC -> CF, message -> message).
  std::uint64_t idle_per_message_ns() const {
    if (!bus_busy_ns || count == 0 || measured_ns < *bus_busy_ns) return 0;
    return (measured_ns - *bus_busy_ns) / count;
  }
};

struct BenchReport {
  std::string link;
  std::string peer;
  std::uint32_t bitrate = 0;
  std::uint32_t data_bitrate = 0;
  bool rates_from_hub = false;
  bool airtime = true;  // false: the hub runs --no-airtime and the ratios mean nothing
  std::string payload;  // how the message bytes were chosen
  std::vector<BenchRow> rows;
};

std::string format_bench_table(const BenchReport& report);
std::string format_bench_json(const BenchReport& report);

}  // namespace tollgate::bus
