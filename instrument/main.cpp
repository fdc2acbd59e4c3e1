// tollgate-instrument: provisions a device state directory, serves the
// protocol on one or more links, and prints the audit log offline.
#include <CLI/CLI.hpp>
#include <boost/asio/io_context.hpp>
#include <ctime>
#include <fstream>
#include <iostream>
#include <sstream>

#include "gateway/gateway.hpp"
#include "instrument/audit.hpp"
#include "instrument/commands.hpp"
#include "instrument/config.hpp"
#include "instrument/device_identity.hpp"
#include "instrument/server.hpp"
#include "instrument/service.hpp"
#include "instrument/store.hpp"

namespace ti = tollgate::instrument;
using tollgate::Bytes;

namespace {

struct CliError : std::runtime_error {
  using std::runtime_error::runtime_error;
};

std::string read_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw CliError("cannot read " + path);
  std::ostringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

std::string why_or(const std::string& why, tollgate::Error e) {
  return why.empty() ? std::string(tollgate::error_name(e)) : why;
}

int cmd_provision(const std::string& state, const std::vector<std::string>& masters,
                  const std::string& device_id, bool new_id, const std::string& alg,
                  const std::string& firmware) {
  ti::ProvisionOptions o;
  for (const auto& path : masters) {
    // Named by position (master-1, ...): file stems could collide or hold odd characters.
    o.masters.push_back({"", read_file(path)});
  }
  if (!new_id) {
    auto id = tollgate::uuid_from_string(device_id);
    if (!id) throw CliError("--device-id: not a UUID: " + device_id);
    o.device_id = *id;
  }
  auto type = tollgate::crypto::key_type_from_name(alg);
  if (!type) throw CliError("--alg: unknown algorithm " + alg);
  o.key_type = *type;
  if (!firmware.empty()) o.firmware_version = firmware;
  o.created_at = static_cast<tollgate::UnixTime>(std::time(nullptr));
  std::string why;
  auto id = ti::provision(state, o, &why);
  if (!id) throw CliError("provision " + state + ": " + why_or(why, id.error()));
  const auto& key = id->device_key.public_key();
  std::cout << "device_id=" << tollgate::uuid_to_string(id->device_id) << "\n"
            << "algorithm=" << tollgate::crypto::key_type_name(id->key_type) << "\n"
            << "key_id=" << tollgate::to_hex(key.id()) << "\n"
            << key.pem() << std::flush;
  return 0;
}

int cmd_run(const std::string& state, const std::vector<std::string>& links,
            const std::string& config_path, const std::string& clock_override) {
  ti::InstrumentConfig config;
  if (!config_path.empty()) {
    auto c = ti::load_config(config_path);
    if (c.index() != 0) throw CliError(std::get<1>(c).message);
    config = std::get<0>(c);
  }
  if (!clock_override.empty()) {
    if (auto why = ti::check_clock_source(clock_override)) throw CliError("--clock: " + *why);
    config.clock_source = clock_override;
  }
  std::string why;
  auto identity = ti::load_identity(state, &why);
  if (!identity) throw CliError("state " + state + ": " + why_or(why, identity.error()));
  auto store = ti::SqliteStore::open(identity->database_path().string(), {}, &why);
  if (!store) throw CliError("database: " + why_or(why, store.error()));
  ti::GatewaySetup setup;
  setup.device_id = identity->device_id;
  for (const auto& m : identity->master_keys) setup.master_keys.push_back(m.clone());
  setup.policy = config.policy;
  std::string firmware = config.firmware_version.value_or(identity->firmware_version);
  auto opened = ti::InstrumentService::open(**store, std::move(setup), identity->device_key,
                                            firmware, ti::simulated_instrument_commands());
  if (!opened) {
    throw CliError(
        "cannot load the trust state: " + std::string(tollgate::error_name(opened.error())) + " " +
        (*store)->last_error());
  }
  ti::InstrumentService& service = **opened;
  ti::ClockSource clock(config.clock_source);
  if (auto st = service.boot(clock.now()); !st) {
    throw CliError("cannot write the boot record: " + (*store)->last_error());
  }

  boost::asio::io_context io;
  ti::ServerOptions options;
  options.backoff = config.backoff;
  options.send_timeout = config.send_timeout;
  options.idle_flush = config.idle_flush;
  if (config.verifier_threads >= 0) {
    options.verifier_threads = static_cast<unsigned>(config.verifier_threads);
  }
  options.log = [](const std::string& line) {
    std::cerr << "tollgate-instrument: " << line << std::endl;
  };
  ti::Server server(
      io, service, [&clock] { return clock.now(); }, options);
  server.handle_signals();
  if (auto err = server.open(links)) throw CliError("cannot open link " + *err);
  server.start();
  std::cerr << "tollgate-instrument: device " << tollgate::uuid_to_string(identity->device_id)
            << " serving " << links.size() << " link(s), clock " << clock.source() << std::endl;
  // Tests and scripts wait for this exact line: every link is open.
  std::cout << "ready" << std::endl;
  io.run();
  std::cerr << "tollgate-instrument: stopped (" << service.stats().messages << " messages, "
            << service.stats().executions << " executions; " << server.groups_written()
            << " group writes for " << server.messages_in_groups() << " messages, "
            << server.preverified() << " signatures verified ahead)" << std::endl;
  return 0;
}

int cmd_audit(const std::string& state, std::uint64_t from, bool verify) {
  std::filesystem::path db = std::filesystem::path(state) / "state.db";
  if (!std::filesystem::exists(db)) throw CliError(db.string() + ": no database yet");
  ti::SqliteStore::Options o;
  o.read_only = true;
  std::string why;
  auto store = ti::SqliteStore::open(db.string(), o, &why);
  if (!store) throw CliError("database: " + why_or(why, store.error()));
  int rc = 0;
  if (verify) {
    std::string bad;
    if (auto st = (*store)->verify_audit_chain(&bad); !st) {
      std::cerr << "audit chain BROKEN: " << why_or(bad, st.error()) << std::endl;
      rc = 2;
    } else {
      std::cerr << "audit chain verified, head seq " << (*store)->audit_head().seq << std::endl;
    }
  }
  std::uint64_t next = from;
  for (;;) {
    auto page = (*store)->audit_records(next, 256);
    if (!page) throw CliError("cannot read the audit log: " + (*store)->last_error());
    if (page->empty()) break;
    for (const auto& r : *page) std::cout << ti::describe_audit_record(r) << "\n";
    next = page->back().seq() + 1;
  }
  std::cout << std::flush;
  return rc;
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"tollgate-instrument: the simulated lab instrument (offline authorization)"};
  app.require_subcommand(1);

  std::string state, device_id, alg = "ed25519", firmware, config, clock;
  std::vector<std::string> masters, links;
  bool new_id = false, verify = false;
  std::uint64_t from = 0;

  auto* prov = app.add_subcommand(
      "provision", "Create the device key pair and trust store (once, at manufacture)");
  prov->add_option("--state", state, "State directory")->required();
  prov->add_option("--master", masters, "Master public key (PEM); repeat for several")
      ->required()
      ->check(CLI::ExistingFile);
  auto* id_opt = prov->add_option("--device-id", device_id, "Device UUID");
  auto* new_opt = prov->add_flag("--new-device-id", new_id, "Generate a random device UUID");
  id_opt->excludes(new_opt);
  prov->add_option("--alg", alg, "Device key algorithm: ed25519|p256|rsa2048|rsa3072")
      ->capture_default_str();
  prov->add_option("--firmware", firmware, "Firmware version string to record");

  auto* run = app.add_subcommand("run", "Serve the protocol on every link given");
  run->add_option("--state", state, "State directory (provisioned)")->required();
  run->add_option("--link", links,
                  "Endpoint, e.g. vbus:/tmp/bus.sock?tx=0x6A8&rx=0x6A0 or "
                  "serial:/dev/ttyUSB0; repeat for several")
      ->required();
  run->add_option("--config", config, "TOML configuration file")->check(CLI::ExistingFile);
  run->add_option("--clock", clock, "Clock source: system | file:PATH (overrides the config)");

  auto* audit = app.add_subcommand("audit", "Print the audit log (offline; safe while running)");
  audit->add_option("--state", state, "State directory")->required();
  audit->add_option("--from", from, "First sequence number");
  audit->add_flag("--verify", verify, "Check the hash chain; exit 2 if broken");

  CLI11_PARSE(app, argc, argv);
  try {
    if (prov->parsed()) {
      if (device_id.empty() && !new_id) throw CliError("give --device-id UUID or --new-device-id");
      return cmd_provision(state, masters, device_id, new_id, alg, firmware);
    }
    if (run->parsed()) return cmd_run(state, links, config, clock);
    if (audit->parsed()) return cmd_audit(state, from, verify);
  } catch (const std::exception& e) {
    std::cerr << "tollgate-instrument: " << e.what() << std::endl;
    return 1;
  }
  return 1;
}
