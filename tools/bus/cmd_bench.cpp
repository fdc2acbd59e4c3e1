// tollgate-bus bench: measured ISO-TP transfer time against the physical minimum.
#include "tools/bus/cmd_bench.hpp"

#include <algorithm>
#include <boost/asio/as_tuple.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/json.hpp>
#include <charconv>
#include <cstdio>
#include <iostream>
#include <random>
#include <sstream>

#include "tools/bus/cmd_common.hpp"
#include "tools/bus/hub.hpp"
#include "transport/framing/airtime.hpp"
#include "transport/framing/isotp.hpp"
#include "transport/links/isotp_link.hpp"
#include "transport/links/vbus_port.hpp"

namespace tollgate::bus {

namespace asio = boost::asio;
using transport::LinkError;
using Clock = std::chrono::steady_clock;

std::string format_bench_table(const BenchReport& r) {
  std::ostringstream out;
  char buf[256];
  out << "link " << r.link;
  if (!r.peer.empty()) out << " -> peer " << r.peer;
  out << "\nbus " << r.bitrate << " bit/s";
  if (r.data_bitrate != r.bitrate) out << ", FD data " << r.data_bitrate << " bit/s";
  out << (r.rates_from_hub ? " (from the hub)" : " (from --bitrate/--fd-data-bitrate)");
  out << "; payload " << r.payload << "\n";
  if (!r.airtime) out << "WARNING: the hub runs --no-airtime: the ratios below mean nothing\n";
  std::snprintf(buf, sizeof buf, "%7s %6s %12s %11s %7s %7s %7s %10s %8s %11s %6s\n", "size",
                "count", "measured_ms", "minimum_ms", "ratio", "frames", "min_frm", "busy_ms",
                "busy/min", "idle_us/msg", "errors");
  out << buf;
  auto ms = [](std::uint64_t ns) { return static_cast<double>(ns) / 1e6; };
  for (const auto& row : r.rows) {
    std::string frames = row.frames ? std::to_string(*row.frames) : "n/a";
    char busy[32] = "n/a";
    char busy_ratio[32] = "n/a";
    char idle[32] = "n/a";
    if (row.bus_busy_ns) {
      std::snprintf(busy, sizeof busy, "%.3f", ms(*row.bus_busy_ns));
      std::snprintf(busy_ratio, sizeof busy_ratio, "%.4f", row.busy_ratio());
      std::snprintf(idle, sizeof idle, "%.1f",
                    static_cast<double>(row.idle_per_message_ns()) / 1e3);
    }
    std::snprintf(buf, sizeof buf, "%7zu %6llu %12.3f %11.3f %7.4f %7s %7llu %10s %8s %11s %6llu\n",
                  row.size, static_cast<unsigned long long>(row.count), ms(row.measured_ns),
                  ms(row.min_ns), row.ratio(), frames.c_str(),
                  static_cast<unsigned long long>(row.min_frames), busy, busy_ratio, idle,
                  static_cast<unsigned long long>(row.errors));
    out << buf;
  }
  for (const auto& row : r.rows) {
    if (row.repeats <= 1) continue;
    std::snprintf(buf, sizeof buf, "%7zu: median of %llu runs of %llu; ratio %.4f .. %.4f\n",
                  row.size, static_cast<unsigned long long>(row.repeats),
                  static_cast<unsigned long long>(row.count), row.ratio_min, row.ratio_max);
    out << buf;
  }
  if (!r.rows.empty() && r.rows.front().bus_busy_ns) {
    out << "busy/min: bus time the hub counted (real stuff bits) over the stuff-free minimum; "
           "idle_us/msg: time the bus stood idle per message (turnarounds)\n";
  }
  return out.str();
}

std::string format_bench_json(const BenchReport& r) {
  boost::json::object o;
  o["link"] = r.link;
  o["peer"] = r.peer;
  o["bitrate"] = r.bitrate;
  o["data_bitrate"] = r.data_bitrate;
  o["rates_from_hub"] = r.rates_from_hub;
  o["airtime"] = r.airtime;
  o["payload"] = r.payload;
  boost::json::array rows;
  for (const auto& row : r.rows) {
    boost::json::object j;
    j["size"] = row.size;
    j["count"] = row.count;
    j["measured_ns"] = row.measured_ns;
    j["min_ns"] = row.min_ns;
    j["ratio"] = row.ratio();
    j["min_frames"] = row.min_frames;
    j["frames"] = row.frames ? boost::json::value(*row.frames) : boost::json::value(nullptr);
    j["bus_frames"] =
        row.bus_frames ? boost::json::value(*row.bus_frames) : boost::json::value(nullptr);
    j["bus_busy_ns"] =
        row.bus_busy_ns ? boost::json::value(*row.bus_busy_ns) : boost::json::value(nullptr);
    j["idle_per_message_ns"] = row.bus_busy_ns ? boost::json::value(row.idle_per_message_ns())
                                               : boost::json::value(nullptr);
    j["errors"] = row.errors;
    j["repeats"] = row.repeats;
    j["ratio_min"] = row.ratio_min;
    j["ratio_max"] = row.ratio_max;
    rows.push_back(std::move(j));
  }
  o["results"] = std::move(rows);
  return boost::json::serialize(o) + "\n";
}

namespace {

struct BenchOptions {
  std::string link;
  std::string peer;
  std::vector<std::size_t> sizes;
  std::uint64_t count = 20;
  bool json = false;
  std::uint32_t bitrate = 0;
  std::uint32_t data_bitrate = 0;
  std::string timeout = "10s";
  std::string payload = "random";
  std::uint64_t warmup = 1;
  std::string spin = "auto";
  std::uint64_t repeat = 1;
};

// The vbus ports of the running bench, for the event loop's spin decision.
struct SpinState {
  std::vector<transport::VbusPort*> ports;
  // Busy-wait unless one of our ports has several frames queued behind the one
  // on the bus: then nothing needs an answer for a few frames' airtime, and the
  // process sleeps (it wakes on each confirmation, well before the last one).
  // Spinning through the last few frames, not just the last, also keeps the
  // core and its caches ours when the turnaround comes.
  static constexpr std::size_t kSleepFrom = 4;
  bool operator()() const {
    for (const auto* p : ports)
      if (p->frames_in_flight() >= kSleepFrom) return false;
    return true;
  }
};

std::vector<std::uint8_t> make_payload(const std::string& kind, std::size_t n, std::uint32_t seed) {
  std::vector<std::uint8_t> b(n);
  if (kind == "random") {
    std::mt19937 rng(seed);
    for (auto& x : b) x = static_cast<std::uint8_t>(rng());
  } else {
    const auto fill = parse_hex(kind);
    if (fill.size() != 1) throw CliError("--payload is 'random' or one hex byte, e.g. 55");
    std::fill(b.begin(), b.end(), fill[0]);
  }
  return b;
}

transport::IsoTpLink* as_isotp(transport::MessageLink* l) {
  return dynamic_cast<transport::IsoTpLink*>(l);
}
transport::VbusPort* as_vbus(transport::MessageLink* l) {
  auto* isotp = as_isotp(l);
  return isotp != nullptr ? dynamic_cast<transport::VbusPort*>(&isotp->port()) : nullptr;
}

std::uint64_t frames_sent(transport::MessageLink* l) {
  auto* isotp = as_isotp(l);
  return isotp != nullptr ? isotp->counters().frames_sent : 0;
}

asio::awaitable<std::optional<transport::hub::HubStats>> hub_stats(transport::MessageLink* l) {
  auto* port = as_vbus(l);
  if (port == nullptr) co_return std::nullopt;
  auto r = co_await port->request_stats();
  if (r.index() != 0) co_return std::nullopt;
  co_return std::get<0>(std::move(r));
}

// Sends `count` messages one after the other (each waits for the previous one
// to complete, as ISO-TP allows one message per direction at a time).
asio::awaitable<std::uint64_t> send_all(transport::MessageLink& link,
                                        const std::vector<std::uint8_t>& msg, std::uint64_t count,
                                        transport::MessageLink::Duration timeout,
                                        Clock::time_point& last_done) {
  std::uint64_t errors = 0;
  for (std::uint64_t i = 0; i < count; ++i) {
    auto r = co_await link.send(msg, timeout);
    if (r.index() != 0) {
      ++errors;
      std::cerr << "tollgate-bus bench: send " << i + 1 << ": " << explain(std::get<1>(r)) << "\n";
    }
  }
  last_done = Clock::now();
  co_return errors;
}

asio::awaitable<std::uint64_t> receive_all(transport::MessageLink& link,
                                           const std::vector<std::uint8_t>& msg,
                                           std::uint64_t count,
                                           transport::MessageLink::Duration timeout,
                                           Clock::time_point& last_done) {
  std::uint64_t errors = 0;
  for (std::uint64_t got = 0; got < count;) {
    auto r = co_await link.receive(timeout);
    if (r.index() != 0) {
      ++errors;
      std::cerr << "tollgate-bus bench: receive: " << explain(std::get<1>(r)) << "\n";
      if (std::get<1>(r) == LinkError::kDeadline || std::get<1>(r) == LinkError::kClosed) break;
      continue;
    }
    if (std::get<0>(r) != msg) {
      ++errors;
      std::cerr << "tollgate-bus bench: receive: payload differs from what was sent\n";
    }
    ++got;
  }
  last_done = Clock::now();
  co_return errors;
}

// Runs sender and receiver side by side; returns the errors of both.
asio::awaitable<std::uint64_t> move_messages(asio::io_context& io, transport::MessageLink& a,
                                             transport::MessageLink* b,
                                             const std::vector<std::uint8_t>& msg,
                                             std::uint64_t count,
                                             transport::MessageLink::Duration timeout,
                                             Clock::time_point& end) {
  Clock::time_point send_done{}, recv_done{};
  std::optional<std::uint64_t> rx_errors;
  asio::steady_timer receiver_done(io, Clock::time_point::max());
  if (b != nullptr) {
    asio::co_spawn(io, receive_all(*b, msg, count, timeout, recv_done),
                   [&](std::exception_ptr, std::uint64_t e) {
                     rx_errors = e;
                     receiver_done.cancel();
                   });
  }
  std::uint64_t errors = co_await send_all(a, msg, count, timeout, send_done);
  if (b != nullptr) {
    while (!rx_errors) {
      (void)co_await receiver_done.async_wait(asio::as_tuple(asio::use_awaitable));
    }
    errors += *rx_errors;
    end = recv_done;
  } else {
    end = send_done;
  }
  co_return errors;
}

// GCC 12 flags this coroutine's frame allocation (asio's recycling allocator,
// aligned_alloc inside operator new) as mismatched with its operator delete: a
// known false positive of -Wmismatched-new-delete on coroutine ramps.
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wmismatched-new-delete"
#endif
asio::awaitable<int> run_bench(asio::io_context& io, const BenchOptions& o, SpinState& spin) {
  const auto ep = endpoint_or_throw(o.link);
  std::optional<transport::Endpoint> peer_ep;
  if (!o.peer.empty()) peer_ep = endpoint_or_throw(o.peer);
  if (!ep.is_can()) throw CliError("bench measures CAN links (can:, isotp:, vbus:), not serial:");
  if (peer_ep && !peer_ep->is_can()) throw CliError("--peer must be a CAN endpoint too");
  const auto timeout =
      std::chrono::duration_cast<transport::MessageLink::Duration>(duration_or_throw(o.timeout));

  auto link = open_link_or_throw(io, ep);
  std::unique_ptr<transport::MessageLink> peer;
  if (peer_ep) peer = open_link_or_throw(io, *peer_ep);
  // Cleared before the links go away, however run_bench ends.
  struct Forget {
    SpinState& s;
    ~Forget() { s.ports.clear(); }
  } forget{spin};
  for (auto* l : {link.get(), peer.get()})
    if (auto* port = as_vbus(l)) spin.ports.push_back(port);

  BenchReport report;
  report.link = o.link;
  report.peer = o.peer;
  report.payload = o.payload == "random" ? "random bytes (seeded)" : "every byte 0x" + o.payload;
  report.bitrate = o.bitrate != 0 ? o.bitrate : 500000;
  report.data_bitrate = o.data_bitrate;
  if (auto* port = as_vbus(link.get())) {
    const auto& info = port->hub_info();
    report.airtime = info.airtime;
    if (o.bitrate == 0) {
      report.bitrate = info.bitrate;
      report.rates_from_hub = true;
    }
    if (o.data_bitrate == 0) report.data_bitrate = info.fd_data_bitrate;
  }
  if (report.data_bitrate == 0) report.data_bitrate = report.bitrate;
  const transport::BusRates rates{report.bitrate, report.data_bitrate};

  // Frames are counted for the sender's format; flow control at the peer's BS.
  auto profile = transport::bus_profile(transport::to_isotp_config(ep));
  profile.block_size = peer_ep ? peer_ep->isotp.block_size : 0;

  for (std::size_t n : o.sizes) {
    if (n > ep.max_message) {
      throw CliError("--size " + std::to_string(n) +
                     " is larger than the link's max=" + std::to_string(ep.max_message));
    }
    const auto msg = make_payload(o.payload, n, static_cast<std::uint32_t>(n));
    Clock::time_point end;
    if (o.warmup > 0) {
      (void)co_await move_messages(io, *link, peer.get(), msg, o.warmup, timeout, end);
    }

    std::vector<BenchRow> runs;
    std::uint64_t errors_all = 0;
    for (std::uint64_t r = 0; r < o.repeat; ++r) {
      const auto stats0 = co_await hub_stats(link.get());
      const std::uint64_t frames0 = frames_sent(link.get()) + frames_sent(peer.get());
      const auto start = Clock::now();
      const std::uint64_t errors =
          co_await move_messages(io, *link, peer.get(), msg, o.count, timeout, end);
      const std::uint64_t frames1 = frames_sent(link.get()) + frames_sent(peer.get());
      const auto stats1 = co_await hub_stats(link.get());

      BenchRow row;
      row.size = n;
      row.count = o.count;
      row.measured_ns = static_cast<std::uint64_t>(
          std::chrono::duration_cast<std::chrono::nanoseconds>(end - start).count());
      const std::size_t carried = n + transport::kCanLinkCrcSize;
      row.min_ns = transport::isotp_min_time_ns(carried, profile, rates) * o.count;
      row.min_frames = transport::isotp_min_frames(carried, profile).total() * o.count;
      if (as_isotp(link.get()) != nullptr && (!peer || as_isotp(peer.get()) != nullptr)) {
        row.frames = frames1 - frames0;
      }
      if (stats0 && stats1) {
        row.bus_frames = stats1->frames - stats0->frames;
        row.bus_busy_ns = stats1->busy_ns - stats0->busy_ns;
      }
      row.errors = errors;
      errors_all += errors;
      runs.push_back(row);
    }
    // The median run: one stall of the machine (another job, the host) moves
    // a single run, not the figure; the spread is reported with it.
    std::sort(runs.begin(), runs.end(),
              [](const BenchRow& a, const BenchRow& b) { return a.ratio() < b.ratio(); });
    BenchRow row = runs[runs.size() / 2];
    row.errors = errors_all;
    row.repeats = o.repeat;
    row.ratio_min = runs.front().ratio();
    row.ratio_max = runs.back().ratio();
    report.rows.push_back(row);
  }
  link->close();
  if (peer) peer->close();

  std::cout << (o.json ? format_bench_json(report) : format_bench_table(report));
  std::cout.flush();
  std::uint64_t errors = 0;
  for (const auto& row : report.rows) errors += row.errors;
  if (errors != 0) {
    std::cerr << "tollgate-bus bench: " << errors << " transfer errors (see above)" << std::endl;
    co_return 1;
  }
  co_return 0;
}
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic pop
#endif

std::vector<std::size_t> parse_sizes(const std::vector<std::string>& items) {
  std::vector<std::size_t> out;
  for (const auto& item : items) {
    std::size_t pos = 0;
    while (pos <= item.size()) {
      const auto comma = std::min(item.find(',', pos), item.size());
      const auto part = item.substr(pos, comma - pos);
      std::size_t v = 0;
      auto [p, ec] = std::from_chars(part.data(), part.data() + part.size(), v);
      if (part.empty() || ec != std::errc{} || p != part.data() + part.size()) {
        throw CliError("--size: '" + part + "' is not a byte count");
      }
      out.push_back(v);
      pos = comma + 1;
    }
  }
  return out;
}

}  // namespace

void add_bench_command(CLI::App& app, int& rc) {
  auto o = std::make_shared<BenchOptions>();
  auto sizes = std::make_shared<std::vector<std::string>>();
  auto* cmd =
      app.add_subcommand("bench", "Measure message transfer time against the ISO-TP minimum");
  cmd->footer(
      "Moves --count messages of each --size over --link and prints, per size, the measured "
      "time, the ISO-TP minimum time at the bus's bit rates (every frame back to back, no stuff "
      "bits; the message plus our 4-byte CRC trailer, flow control included), their ratio, the "
      "frames sent and, on the virtual bus, the time the bus was busy. With --peer both ends run "
      "in this process and the time runs until the last message arrived intact; without, until "
      "the last send completed (run `tollgate-bus recv --count 0 -q` on the other end). Bit rates "
      "come from the hub for vbus: links, else from --bitrate/--fd-data-bitrate.\n"
      "Example: tollgate-bus bench --link 'vbus:/tmp/bus.sock?tx=0x6A0&rx=0x6A8' "
      "--peer 'vbus:/tmp/bus.sock?tx=0x6A8&rx=0x6A0' --size 200,1000,3000 --count 20");
  cmd->add_option("--link,-l", o->link, "The sending end. " + std::string(kEndpointHelp))
      ->required();
  cmd->add_option("--peer,-p", o->peer, "The receiving end, opened in this process");
  cmd->add_option("--size,-s", *sizes, "Message sizes in bytes, e.g. 200,1000,3000")->required();
  cmd->add_option("--count,-n", o->count, "Messages per size")
      ->capture_default_str()
      ->check(CLI::Range(std::uint64_t{1}, std::uint64_t{1000000}));
  cmd->add_option("--repeat", o->repeat,
                  "Runs of --count messages per size; the row shows the median run by ratio "
                  "and the range of all")
      ->capture_default_str()
      ->check(CLI::Range(std::uint64_t{1}, std::uint64_t{1000}));
  cmd->add_option("--warmup", o->warmup, "Untimed messages before each size")
      ->capture_default_str();
  cmd->add_flag("--json", o->json, "One JSON object on stdout instead of the table");
  cmd->add_option("--bitrate", o->bitrate,
                  "Nominal bit rate for the minimum (default: the hub's, "
                  "else 500000)");
  cmd->add_option(
      "--fd-data-bitrate", o->data_bitrate,
      "CAN FD data-phase bit rate for the minimum (default: the hub's, else --bitrate)");
  cmd->add_option("--payload", o->payload,
                  "Message bytes: 'random' (seeded) or one hex byte repeated, e.g. 55")
      ->capture_default_str();
  cmd->add_option("--spin", o->spin,
                  "Busy-wait around the turnarounds of vbus: links so both ends answer without "
                  "wake-up latency: on, off, or auto = on under a real-time policy (chrt)")
      ->check(CLI::IsMember({"auto", "on", "off"}))
      ->capture_default_str();
  cmd->add_option("--timeout,-t", o->timeout, "Per-message deadline")
      ->check(duration_validator())
      ->capture_default_str();
  cmd->callback([&rc, o, sizes] {
    o->sizes = parse_sizes(*sizes);
    asio::io_context io;
    // Declared before the loop runs and outliving it: the spin predicate reads it.
    SpinState spin;
    std::function<bool()> spinning;
    if (o->spin == "on" || (o->spin == "auto" && realtime_scheduling()))
      spinning = [&spin] { return spin(); };
    rc = run_command(io, run_bench(io, *o, spin), {}, spinning);
  });
}

}  // namespace tollgate::bus
