// tollgate-bus play: replays a candump log onto a bus (canplayer for our links).
#include <boost/asio/as_tuple.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <fstream>
#include <iostream>

#include "tools/bus/cmd_common.hpp"
#include "transport/framing/capture.hpp"

namespace tollgate::bus {
namespace {

struct PlayOptions {
  std::string link;
  std::string file;
  bool keep_timing = false;
  bool verbose = false;
};

std::vector<transport::CapturedFrame> load_log(const std::string& path) {
  std::ifstream in(path);
  if (!in) throw CliError("cannot read " + path);
  std::vector<transport::CapturedFrame> frames;
  std::string line;
  std::size_t n = 0;
  while (std::getline(in, line)) {
    ++n;
    if (line.empty() || line[0] == '#') continue;  // dump's message lines are comments
    auto f = transport::parse_candump_line(line);
    if (f.index() != 0)
      throw CliError(path + ":" + std::to_string(n) + ": not a candump log line: " + line);
    frames.push_back(std::get<0>(std::move(f)));
  }
  return frames;
}

boost::asio::awaitable<int> run_play(boost::asio::io_context& io, const PlayOptions& o,
                                     std::unique_ptr<transport::CanFramePort>& port,
                                     const bool& interrupted) {
  const auto ep = endpoint_or_throw(o.link);
  const auto frames = load_log(o.file);
  port = open_port_or_throw(io, ep, /*listen_only=*/false);
  for (std::size_t i = 0; i < frames.size(); ++i) {
    if (frames[i].frame.fd && !port->fd_capable()) {
      throw CliError(o.file + ": frame " + std::to_string(i + 1) +
                     " is CAN FD; add fd=1 to the endpoint (and use an FD bus)");
    }
  }
  const auto start = std::chrono::steady_clock::now();
  const std::uint64_t t0 = frames.empty() ? 0 : frames.front().time_us;
  boost::asio::steady_timer timer(io);
  std::size_t sent = 0;
  for (const auto& f : frames) {
    if (interrupted) co_return 130;
    if (o.keep_timing && f.time_us > t0) {
      timer.expires_at(start + std::chrono::microseconds(f.time_us - t0));
      auto [ec] = co_await timer.async_wait(boost::asio::as_tuple(boost::asio::use_awaitable));
      (void)ec;
    }
    auto r = co_await port->send_frame(f.frame);
    if (r.index() != 0) {
      if (interrupted) co_return 130;
      throw CliError("frame " + std::to_string(sent + 1) + " of " + o.file + ": " +
                     explain(std::get<1>(r)));
    }
    ++sent;
  }
  port->close();
  if (o.verbose) std::cerr << "tollgate-bus play: " << sent << " frames played\n";
  co_return 0;
}

}  // namespace

void add_play_command(CLI::App& app, int& rc) {
  auto o = std::make_shared<PlayOptions>();
  auto* cmd =
      app.add_subcommand("play", "Replay a candump log onto a bus (canplayer for our links)");
  cmd->footer(
      "Reads candump -l logs, `tollgate-bus dump` output and hub --candump-log files (lines "
      "starting with '#' are skipped) and sends the frames in order, each after the previous "
      "one went out; with --keep-timing at the log's original pace. Interface names in the log "
      "are ignored. FD frames need fd=1 on the endpoint.\n"
      "Example: tollgate-bus play --link vbus:/run/tollgate/bus.sock capture.log");
  cmd->add_option("--link,-l", o->link, "A can:IFACE or vbus:SOCKET endpoint (fd=1 for FD frames)")
      ->required();
  cmd->add_option("file", o->file, "The candump log to replay")->required();
  cmd->add_flag("--keep-timing", o->keep_timing, "Keep the log's time between frames");
  cmd->add_flag("--verbose,-v", o->verbose, "Say how many frames were played on stderr");
  cmd->callback([&rc, o] {
    boost::asio::io_context io;
    std::unique_ptr<transport::CanFramePort> port;
    bool interrupted = false;
    rc = run_command(io, run_play(io, *o, port, interrupted), [&] {
      interrupted = true;
      if (port) port->close();
    });
  });
}

}  // namespace tollgate::bus
