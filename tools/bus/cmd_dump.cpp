// tollgate-bus dump: frames and reassembled ISO-TP messages, live from a link
// or from a candump log / pcap capture.
#include "tools/bus/cmd_dump.hpp"

#include <boost/asio/steady_timer.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <fstream>
#include <iostream>

#include "tools/bus/cmd_common.hpp"
#include "transport/framing/capture.hpp"
#include "transport/framing/crc32c.hpp"

namespace tollgate::bus {

using transport::CanFrame;
using transport::IsoTpChannel;
using transport::IsoTpConfig;
using transport::IsoTpEvent;

PassiveReassembler::PassiveReassembler(MessageSink on_message, ErrorSink on_error,
                                       std::size_t max_channels, std::size_t max_message)
    : on_message_(std::move(on_message)),
      on_error_(std::move(on_error)),
      max_channels_(max_channels),
      max_message_(max_message) {}

void PassiveReassembler::on_frame(const CanFrame& frame, std::uint64_t now_us) {
  const auto key = std::pair{frame.extended, frame.id};
  auto it = channels_.find(key);
  if (it == channels_.end()) {
    if (channels_.size() >= max_channels_) {
      ++ignored_;
      return;
    }
    IsoTpConfig c;
    c.rx_id = frame.id;
    // Never used to send: the channel's flow control frames are dropped below.
    c.tx_id = frame.id ^ 1U;
    c.extended_id = frame.extended;
    c.fd = frame.fd;
    c.tx_dl = frame.fd ? 64 : 8;
    c.padding = false;
    c.max_rx_size = max_message_;
    it = channels_.emplace(key, std::make_unique<IsoTpChannel>(c)).first;
  }
  IsoTpChannel& ch = *it->second;
  ch.on_frame(frame, now_us);
  // We only watch: the channel's flow control "goes out" at once, so it takes
  // the real receiver's consecutive frames as they come.
  while (auto tx = ch.next_frame(now_us)) ch.on_tx_confirmed(tx->ticket, now_us);
  while (auto ev = ch.take_event()) {
    if (ev->kind == IsoTpEvent::Kind::kReceived) {
      DumpedMessage m{frame.id, frame.extended, std::move(ev->message), false};
      if (m.payload.size() >= 4) {
        const std::size_t body = m.payload.size() - 4;
        std::uint32_t got = 0;
        for (std::size_t i = 0; i < 4; ++i) got |= std::uint32_t{m.payload[body + i]} << (8 * i);
        m.crc_ok = transport::crc32c(std::span(m.payload.data(), body)) == got;
      }
      on_message_(m);
    } else if (ev->kind == IsoTpEvent::Kind::kReceiveFailed) {
      on_error_({frame.id, frame.extended, ev->error});
    }
  }
}

namespace {

struct DumpOptions {
  std::string link;
  std::string candump_log;
  std::string pcap;
  bool no_frames = false;
  bool no_messages = false;
  std::uint64_t count = 0;
  std::string duration;
  bool verbose = false;
};

std::string id_text(std::uint32_t id, bool extended) {
  char buf[16];
  std::snprintf(buf, sizeof buf, extended ? "%08X" : "%03X", id);
  return buf;
}

// Prints in candump log format (replayable with `tollgate-bus play`); messages
// and errors as '#' comment lines, which play skips.
class Printer {
 public:
  Printer(const DumpOptions& o, bool flush)
      : o_(o),
        flush_(flush),
        reassembler_([this](const DumpedMessage& m) { message(m); },
                     [this](const DumpedError& e) { error(e); }) {}

  void frame(const transport::CapturedFrame& f, std::uint64_t now_us) {
    ++frames_;
    if (!o_.no_frames) std::cout << transport::format_candump_line(f) << '\n';
    if (!o_.no_messages) reassembler_.on_frame(f.frame, now_us);
    if (flush_) std::cout.flush();
  }
  std::uint64_t frames() const { return frames_; }

 private:
  void message(const DumpedMessage& m) {
    std::cout << "# message " << id_text(m.id, m.extended);
    if (m.crc_ok) {
      std::cout << " len=" << m.payload.size() - 4
                << " crc=ok data=" << to_hex(m.payload.data(), m.payload.size() - 4) << '\n';
    } else {
      std::cout << " len=" << m.payload.size() << " crc=none data=" << to_hex(m.payload) << '\n';
    }
  }
  void error(const DumpedError& e) {
    std::cout << "# error " << id_text(e.id, e.extended) << ' '
              << transport::link_error_name(e.error) << '\n';
  }

  const DumpOptions& o_;
  bool flush_;
  PassiveReassembler reassembler_;
  std::uint64_t frames_ = 0;
};

int dump_file(const DumpOptions& o) {
  Printer p(o, false);
  std::uint64_t last = 0;
  bool first = true;
  std::uint64_t t0 = 0;
  auto feed = [&](const transport::CapturedFrame& f) {
    if (first) t0 = f.time_us;
    first = false;
    // Captures may step back a little; the reassembler's time must not.
    const std::uint64_t rel = f.time_us > t0 ? f.time_us - t0 : 0;
    last = std::max(last, rel);
    p.frame(f, last);
    return o.count == 0 || p.frames() < o.count;
  };
  if (!o.pcap.empty()) {
    const auto bytes = read_file(o.pcap);
    auto frames = transport::parse_pcap(bytes);
    if (frames.index() != 0) {
      throw CliError(o.pcap + ": not a SocketCAN pcap capture (" +
                     std::string(transport::link_error_name(std::get<1>(frames))) + ")");
    }
    for (const auto& f : std::get<0>(frames))
      if (!feed(f)) break;
    return 0;
  }
  std::ifstream in(o.candump_log);
  if (!in) throw CliError("cannot read " + o.candump_log);
  std::string line;
  std::size_t n = 0;
  while (std::getline(in, line)) {
    ++n;
    if (line.empty() || line[0] == '#') continue;
    auto f = transport::parse_candump_line(line);
    if (f.index() != 0) {
      throw CliError(o.candump_log + ":" + std::to_string(n) + ": not a candump log line: " + line);
    }
    if (!feed(std::get<0>(f))) break;
  }
  return 0;
}

boost::asio::awaitable<int> dump_live(boost::asio::io_context& io, const DumpOptions& o,
                                      std::unique_ptr<transport::CanFramePort>& port) {
  const auto ep = endpoint_or_throw(o.link);
  port = open_port_or_throw(io, ep, /*listen_only=*/true);
  if (o.verbose) std::cerr << "tollgate-bus dump: watching " << o.link << std::endl;
  const std::string iface = ep.kind == transport::EndpointKind::kCan ? ep.target : "vbus0";
  boost::asio::steady_timer stop(io);
  if (!o.duration.empty()) {
    stop.expires_after(duration_or_throw(o.duration));
    stop.async_wait([&](const boost::system::error_code& ec) {
      if (!ec) port->close();
    });
  }
  Printer p(o, true);
  const auto start = std::chrono::steady_clock::now();
  while (o.count == 0 || p.frames() < o.count) {
    auto r = co_await port->receive_frame();
    if (r.index() != 0) {
      if (std::get<1>(r) == transport::LinkError::kClosed) break;  // interrupted or --duration
      std::cout << "# error bus " << explain(std::get<1>(r)) << std::endl;
      continue;
    }
    const auto now = std::chrono::steady_clock::now() - start;
    p.frame({unix_time_us(), iface, std::get<0>(r)},
            static_cast<std::uint64_t>(
                std::chrono::duration_cast<std::chrono::microseconds>(now).count()));
  }
  stop.cancel();
  port->close();
  co_return 0;
}

}  // namespace

void add_dump_command(CLI::App& app, int& rc) {
  auto o = std::make_shared<DumpOptions>();
  auto* cmd = app.add_subcommand("dump", "Print a bus's frames and the ISO-TP messages they carry");
  cmd->footer(
      "Frames are printed in candump log format (replayable with `tollgate-bus play`), the "
      "reassembled ISO-TP messages as '# message ID len=N crc=ok|none data=HEX' (crc=ok: the "
      "payload ends in our links' CRC-32C trailer, shown without it) and broken transfers as "
      "'# error ID reason'. Live from a can: or vbus: endpoint (a listen-only node; no tx/rx "
      "needed; stop with Ctrl-C, --count or --duration) or from a capture file.\n"
      "Example: tollgate-bus dump --link vbus:/run/tollgate/bus.sock");
  auto* link =
      cmd->add_option("--link,-l", o->link, "A can:IFACE or vbus:SOCKET endpoint to watch");
  auto* log = cmd->add_option("--candump-log", o->candump_log, "Read a candump -l log file");
  auto* pcap = cmd->add_option("--pcap", o->pcap, "Read a LINKTYPE_CAN_SOCKETCAN pcap file");
  link->excludes(log)->excludes(pcap);
  log->excludes(pcap);
  cmd->add_flag("--no-frames", o->no_frames, "Print only messages and errors");
  cmd->add_flag("--no-messages", o->no_messages, "Print only frames");
  cmd->add_option("--count,-n", o->count, "Stop after this many frames (0: no limit)");
  cmd->add_option("--duration", o->duration, "Live: stop after this long (e.g. 10s)")
      ->check(duration_validator());
  cmd->add_flag("--verbose,-v", o->verbose, "Live: say on stderr once the bus is being watched");
  cmd->callback([&rc, o, link, log, pcap] {
    if (link->count() + log->count() + pcap->count() == 0) {
      throw CliError("give one of --link, --candump-log or --pcap");
    }
    if (!o->link.empty()) {
      boost::asio::io_context io;
      std::unique_ptr<transport::CanFramePort> port;
      rc = run_command(io, dump_live(io, *o, port), [&] {
        if (port) port->close();
      });
    } else {
      rc = dump_file(*o);
    }
  });
}

}  // namespace tollgate::bus
