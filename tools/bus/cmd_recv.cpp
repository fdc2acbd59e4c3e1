// tollgate-bus recv: messages in over any link (isotprecv for all our links).
#include <boost/asio/use_awaitable.hpp>
#include <cstdio>
#include <filesystem>
#include <iostream>

#include "tools/bus/cmd_common.hpp"

namespace tollgate::bus {
namespace {

struct RecvOptions {
  std::string link;
  std::uint64_t count = 1;
  std::string out_dir;
  std::string timeout;  // empty: wait forever
  bool quiet = false;
  bool verbose = false;
};

boost::asio::awaitable<int> run_recv(boost::asio::io_context& io, const RecvOptions& o,
                                     std::unique_ptr<transport::MessageLink>& link,
                                     bool& interrupted) {
  const auto ep = endpoint_or_throw(o.link);
  const auto timeout = o.timeout.empty()
                           ? transport::MessageLink::Duration::max()
                           : std::chrono::duration_cast<transport::MessageLink::Duration>(
                                 duration_or_throw(o.timeout));
  if (!o.out_dir.empty()) {
    std::error_code ec;
    std::filesystem::create_directories(o.out_dir, ec);
    if (ec) throw CliError("cannot create " + o.out_dir + ": " + ec.message());
  }
  link = open_link_or_throw(io, ep);
  if (o.verbose) std::cerr << "tollgate-bus recv: listening on " << o.link << std::endl;
  std::uint64_t received = 0;
  std::uint64_t errors = 0;
  while (!interrupted && (o.count == 0 || received < o.count)) {
    auto r = co_await link->receive(timeout);
    if (r.index() != 0) {
      const auto e = std::get<1>(r);
      if (interrupted || e == transport::LinkError::kClosed) {
        if (interrupted) break;
        throw CliError(explain(e));
      }
      if (e == transport::LinkError::kDeadline) {
        throw CliError("no message within " + o.timeout + " (" + std::to_string(received) +
                       " received)");
      }
      // A damaged or aborted message: say which, keep listening.
      ++errors;
      std::cerr << "tollgate-bus recv: " << explain(e) << std::endl;
      continue;
    }
    const auto& msg = std::get<0>(r);
    ++received;
    if (!o.out_dir.empty()) {
      char name[32];
      std::snprintf(name, sizeof name, "msg-%06llu.bin", static_cast<unsigned long long>(received));
      write_file((std::filesystem::path(o.out_dir) / name).string(), msg);
    }
    if (!o.quiet) std::cout << to_hex(msg) << std::endl;
  }
  link->close();
  if (o.verbose) {
    std::cerr << "tollgate-bus recv: " << received << " messages, " << errors << " errors"
              << std::endl;
  }
  co_return interrupted&& o.count != 0 && received < o.count ? 130 : 0;
}

}  // namespace

void add_recv_command(CLI::App& app, int& rc) {
  auto o = std::make_shared<RecvOptions>();
  auto* cmd = app.add_subcommand(
      "recv", "Receive messages over a link (isotprecv for every Tollgate link)");
  cmd->footer(
      "Each message is printed as one hex line on stdout and/or written to --out DIR as "
      "msg-NNNNNN.bin. Damaged or aborted messages (bad CRC, wrong sequence number, N_Cr "
      "timeout, ...) are reported on stderr, not counted, and receiving goes on.\n"
      "Example: tollgate-bus recv --link 'vbus:/run/tollgate/bus.sock?tx=0x6A8&rx=0x6A0' -n 10");
  cmd->add_option("--link,-l", o->link, std::string(kEndpointHelp))->required();
  cmd->add_option("--count,-n", o->count, "Stop after this many messages (0: until interrupted)")
      ->capture_default_str();
  cmd->add_option("--out,-o", o->out_dir, "Also write each message to DIR/msg-NNNNNN.bin");
  cmd->add_option("--timeout,-t", o->timeout,
                  "Fail when no message arrives for this long (default: wait forever)")
      ->check(duration_validator());
  cmd->add_flag("--quiet,-q", o->quiet, "Do not print messages on stdout");
  cmd->add_flag("--verbose,-v", o->verbose, "Say when listening and what was received on stderr");
  cmd->callback([&rc, o] {
    boost::asio::io_context io;
    std::unique_ptr<transport::MessageLink> link;
    bool interrupted = false;
    rc = run_command(io, run_recv(io, *o, link, interrupted), [&] {
      interrupted = true;
      if (link) link->close();
    });
  });
}

}  // namespace tollgate::bus
