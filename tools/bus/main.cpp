// tollgate-bus: CAN and serial bus tools for Tollgate links — the virtual bus
// hub, send/recv of whole messages, dump, replay, bench and SocketCAN set-up.
// Every subcommand takes the same endpoint strings (transport/links/endpoint.hpp).
#include <CLI/CLI.hpp>
#include <exception>
#include <iostream>

#include "tools/bus/cmd_common.hpp"
#include "tools/bus/hub.hpp"
#include "tools/bus/hub_cli.hpp"

int main(int argc, char** argv) {
  CLI::App app{
      "tollgate-bus: the virtual CAN bus hub and tools for Tollgate links (CAN via our ISO-TP "
      "or the kernel's, the virtual bus, serial).\nEndpoints: can:IFACE?tx=ID&rx=ID, "
      "isotp:IFACE?tx=ID&rx=ID, vbus:SOCKET?tx=ID&rx=ID, serial:DEVICE?baud=N",
      "tollgate-bus"};
  app.require_subcommand(1);
  app.fallthrough(false);
  int rc = 0;

  tollgate::bus::HubOptions hub_options;
  auto* hub = app.add_subcommand("hub", "Run the user-space virtual CAN bus");
  tollgate::bus::add_hub_options(*hub, hub_options);
  // The subcommand list shows one line per command; the hub's long text goes below its options.
  hub->footer(hub->get_description());
  hub->description("Run the user-space virtual CAN bus (airtime, faults, captures)");
  hub->callback([&] { rc = tollgate::bus::run_hub(hub_options); });

  tollgate::bus::add_send_command(app, rc);
  tollgate::bus::add_recv_command(app, rc);
  tollgate::bus::add_dump_command(app, rc);
  tollgate::bus::add_play_command(app, rc);
  tollgate::bus::add_bench_command(app, rc);
  tollgate::bus::add_can_config_command(app, rc);

  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return app.exit(e);
  } catch (const std::exception& e) {
    std::string cmd = "tollgate-bus";
    for (const auto* sub : app.get_subcommands()) cmd += " " + sub->get_name();
    std::cerr << cmd << ": " << e.what() << std::endl;
    return 1;
  }
  return rc;
}
