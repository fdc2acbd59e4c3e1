// tollgate-bus can-config: SocketCAN interface set-up and status via libsocketcan.
#include <iostream>

#include "tools/bus/cmd_common.hpp"
#include "transport/links/can_interface.hpp"

namespace tollgate::bus {
namespace {

struct CanConfigOptions {
  std::string iface;
  std::uint32_t bitrate = 0;
  bool restart = false;
  bool state = false;
  bool berr = false;
};

template <class T>
T value_or_throw(transport::LinkOpenResult<T> r) {
  if (r.index() != 0) throw CliError(std::get<1>(r).message);
  return std::get<0>(std::move(r));
}

int run_can_config(const CanConfigOptions& o) {
  // The interface (and AF_CAN) must exist whatever was asked.
  if (auto why = transport::af_can_unavailable_reason(); !why.empty()) {
    throw CliError(o.iface + ": " + why);
  }
  const auto info = value_or_throw(transport::lookup_can_interface(o.iface));
  const bool any_action = o.bitrate != 0 || o.restart || o.state || o.berr;

  if (o.bitrate != 0) {
    value_or_throw(transport::set_can_bitrate(o.iface, o.bitrate));
    std::cout << o.iface << ": bitrate set to " << o.bitrate << '\n';
  }
  if (o.restart) {
    value_or_throw(transport::restart_can(o.iface));
    std::cout << o.iface << ": restarted\n";
  }
  if (o.state) {
    std::cout << o.iface << ": state "
              << transport::can_state_name(value_or_throw(transport::get_can_state(o.iface)))
              << '\n';
  }
  if (o.berr) {
    const auto c = value_or_throw(transport::get_can_berr(o.iface));
    std::cout << o.iface << ": tx errors " << c.tx << ", rx errors " << c.rx << '\n';
  }
  if (any_action) return 0;

  // No action: everything we can tell, each unavailable item with its reason.
  std::cout << o.iface << ": index " << info.index << ", mtu " << info.mtu << " ("
            << (info.fd_capable ? "CAN FD" : "classic CAN") << "), " << (info.up ? "up" : "down")
            << '\n';
  auto line = [&](const char* what, auto result, auto show) {
    std::cout << "  " << what << ": ";
    if (result.index() == 0) {
      show(std::get<0>(result));
    } else {
      std::cout << "n/a (" << std::get<1>(result).message << ")";
    }
    std::cout << '\n';
  };
  line("bitrate", transport::get_can_bittiming(o.iface), [](const auto& bt) {
    std::cout << bt.bitrate << " bit/s, sample point " << bt.sample_point / 10.0 << " %";
  });
  line("state", transport::get_can_state(o.iface),
       [](auto s) { std::cout << transport::can_state_name(s); });
  line("bus errors", transport::get_can_berr(o.iface),
       [](const auto& c) { std::cout << "tx " << c.tx << ", rx " << c.rx; });
  return 0;
}

}  // namespace

void add_can_config_command(CLI::App& app, int& rc) {
  auto o = std::make_shared<CanConfigOptions>();
  auto* cmd =
      app.add_subcommand("can-config", "Show or set up a SocketCAN interface (libsocketcan)");
  cmd->footer(
      "Bit rate (the interface is stopped and restarted around the change), bus-off restart, "
      "controller state and bus error counters. Without options prints everything available. "
      "Changes need CAP_NET_ADMIN; virtual CAN (vcan) has no controller, so only its MTU and "
      "flags show.\n"
      "Example: tollgate-bus can-config can0 --bitrate 500000");
  cmd->add_option("interface", o->iface, "The CAN network interface, e.g. can0")->required();
  cmd->add_option("--bitrate", o->bitrate, "Set the nominal bit rate, bit/s")
      ->check(CLI::Range(1U, 1000000U));
  cmd->add_flag("--restart", o->restart, "Restart a bus-off controller");
  cmd->add_flag("--state", o->state, "Print the controller state (ERROR-ACTIVE, BUS-OFF, ...)");
  cmd->add_flag("--berr", o->berr, "Print the tx/rx bus error counters");
  cmd->callback([&rc, o] { rc = run_can_config(*o); });
}

}  // namespace tollgate::bus
