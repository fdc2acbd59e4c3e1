// tollgate-bus send: one message out over any link (isotpsend for all our links).
#include <boost/asio/use_awaitable.hpp>
#include <iostream>

#include "tools/bus/cmd_common.hpp"

namespace tollgate::bus {
namespace {

struct SendOptions {
  std::string link;
  std::string file;
  std::vector<std::string> hex;
  std::string timeout = "5s";
  bool verbose = false;
};

boost::asio::awaitable<int> run_send(boost::asio::io_context& io, const SendOptions& o) {
  const auto ep = endpoint_or_throw(o.link);
  std::vector<std::uint8_t> message;
  if (!o.file.empty()) {
    message = read_file(o.file);
  } else {
    std::string joined;
    for (const auto& h : o.hex) joined += h;
    message = parse_hex(joined);
  }
  const auto timeout = duration_or_throw(o.timeout);
  auto link = open_link_or_throw(io, ep);
  const auto size = message.size();
  auto r = co_await link->send(std::move(message), timeout);
  link->close();
  if (r.index() != 0) throw CliError(explain(std::get<1>(r)));
  if (o.verbose) std::cerr << "tollgate-bus send: sent " << size << " bytes on " << o.link << "\n";
  co_return 0;
}

}  // namespace

void add_send_command(CLI::App& app, int& rc) {
  auto o = std::make_shared<SendOptions>();
  auto* cmd = app.add_subcommand(
      "send", "Send one message over a link (isotpsend for every Tollgate link)");
  cmd->footer(
      "The message is hex on the command line or the bytes of --file. Waits until its last frame "
      "went out; exits 1 with the reason (e.g. N_Bs timeout: nobody answered) otherwise.\n"
      "Example: tollgate-bus send --link 'vbus:/run/tollgate/bus.sock?tx=0x6A0&rx=0x6A8' DEADBEEF");
  cmd->add_option("--link,-l", o->link, std::string(kEndpointHelp))->required();
  auto* file = cmd->add_option("--file,-f", o->file, "Send the bytes of this file ('-': stdin)");
  auto* hex = cmd->add_option("hex", o->hex, "The message as hex, e.g. DEADBEEF or 'de ad be ef'");
  file->excludes(hex);
  hex->excludes(file);
  cmd->add_option("--timeout,-t", o->timeout, "Give up after this long (e.g. 5s, 250ms)")
      ->check(duration_validator())
      ->capture_default_str();
  cmd->add_flag("--verbose,-v", o->verbose, "Say what was sent on stderr");
  cmd->callback([&app, &rc, o, file, hex] {
    if (file->count() == 0 && hex->count() == 0) {
      throw CliError("give the message as hex or with --file");
    }
    (void)app;
    boost::asio::io_context io;
    rc = run_command(io, run_send(io, *o));
  });
}

}  // namespace tollgate::bus
