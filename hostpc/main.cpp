// tollgate-host: the host PC's command line over the host library (identities,
// token cache, instrument client). Exit statuses are those of hostpc/protocol.hpp:
// 0 ok, 1 usage/other, 2 denied, 3 no usable token, 4 link failure, 5 forged answer.
#include <CLI/CLI.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/json.hpp>
#include <chrono>
#include <ctime>
#include <fstream>
#include <iostream>
#include <sstream>

#include "hostpc/cache.hpp"
#include "hostpc/client.hpp"
#include "hostpc/identity.hpp"
#include "hostpc/protocol.hpp"
#include "transport/links/endpoint.hpp"

// GCC 12 flags coroutine frame allocation (asio's recycling allocator) as
// mismatched with its operator delete: a known false positive on coroutine ramps.
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic ignored "-Wmismatched-new-delete"
#endif

namespace asio = boost::asio;
namespace json = boost::json;
using namespace tollgate;
using namespace tollgate::host;

namespace {

// One user-facing line on stderr and the exit status; only main() catches it.
struct Fatal {
  int code;
  std::string message;
};

UnixSeconds wall_now() {
  return std::chrono::duration_cast<std::chrono::seconds>(
             std::chrono::system_clock::now().time_since_epoch())
      .count();
}

std::string iso_time(UnixSeconds t) {
  std::time_t tt = static_cast<std::time_t>(t);
  std::tm tm{};
  gmtime_r(&tt, &tm);
  char buf[32];
  std::strftime(buf, sizeof buf, "%Y-%m-%dT%H:%M:%SZ", &tm);
  return buf;
}

Bytes read_bytes(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw Fatal{kExitUsage, "cannot read " + path};
  std::ostringstream ss;
  ss << in.rdbuf();
  const std::string s = ss.str();
  return Bytes(s.begin(), s.end());
}

Bytes uuid_arg(const std::string& text, const char* what) {
  auto u = uuid_from_string(text);
  if (!u) throw Fatal{kExitUsage, std::string(what) + ": \"" + text + "\" is not a UUID"};
  return *u;
}

struct Globals {
  std::string home_flag;
  std::string timeout = "2s";
  int retries = 3;
};

IdentityStore open_home(const Globals& g) {
  auto home = resolve_home(g.home_flag.empty() ? std::nullopt : std::optional(g.home_flag));
  if (!home) throw Fatal{kExitUsage, "no home folder: give --home or set TOLLGATE_HOME"};
  std::string err;
  auto store = IdentityStore::open(*home, &err);
  if (!store) throw Fatal{kExitUsage, err};
  return std::move(*store);
}

std::unique_ptr<TokenCache> open_cache(const IdentityStore& store) {
  auto c = TokenCache::open(store.cache_path());
  if (!c) throw Fatal{kExitUsage, "cannot open the token cache " + store.cache_path()};
  return std::move(*c);
}

std::string passphrase(const std::string& file, bool confirm) {
  std::string err;
  auto p = file.empty() ? prompt_passphrase("passphrase: ", confirm, &err)
                        : read_passphrase_file(file, &err);
  if (!p) throw Fatal{kExitUsage, err};
  return *p;
}

ClientOptions client_options(const Globals& g) {
  auto d = transport::parse_duration(g.timeout);
  if (!d || d->count() <= 0)
    throw Fatal{kExitUsage, "--timeout " + g.timeout + " is not a duration"};
  if (g.retries < 0 || g.retries > 100) throw Fatal{kExitUsage, "--retries must be 0..100"};
  ClientOptions o;
  o.timeout = *d;
  o.max_resends = g.retries;
  return o;
}

// Runs one coroutine on a fresh io_context with a link opened on it.
template <class T, class F>
T with_link(const std::string& endpoint, F body) {
  asio::io_context io;
  auto link = transport::open_link(io.get_executor(), endpoint);
  if (link.index() == 1) throw Fatal{kExitLink, std::get<1>(link).message};
  auto& l = *std::get<0>(link);
  std::optional<T> out;
  std::exception_ptr failure;
  asio::co_spawn(io, body(l), [&](std::exception_ptr e, T v) {
    failure = e;
    if (!e) out = std::move(v);
    // The link keeps reading in the background (a bus node sees every frame),
    // so the context never runs dry on its own: finish it here.
    l.close();
    io.stop();
  });
  io.run();
  if (failure) std::rethrow_exception(failure);
  return std::move(*out);
}

json::object status_json(const v1::StatusReport& r, bool pinned) {
  json::object o;
  o["device_id"] = uuid_to_string(as_bytes(r.device_id()));
  auto key = crypto::PublicKey::from_spki_der(as_bytes(r.device_public_key()));
  o["device_key_id"] = key ? to_hex(key->id()) : "";
  o["device_key_algorithm"] = key ? std::string(crypto::algorithm_name(key->algorithm())) : "";
  o["pinned"] = pinned;
  o["firmware"] = r.firmware_version();
  o["device_time"] = r.device_time();
  json::array auths;
  for (const auto& a : r.authorizations()) {
    auths.push_back(json::object{{"id", a.id()},
                                 {"not_after", a.not_after()},
                                 {"cloud_key_id", to_hex(as_bytes(a.cloud_key_id()))}});
  }
  o["authorizations"] = std::move(auths);
  json::array revoked;
  for (auto id : r.revoked_ids()) revoked.push_back(id);
  o["revoked_ids"] = std::move(revoked);
  return o;
}

void print_status(const v1::StatusReport& r, bool pinned) {
  auto o = status_json(r, pinned);
  std::cout << "device     " << o["device_id"].as_string().c_str()
            << (pinned ? " (pinned key)" : " (not paired)") << "\n"
            << "key        " << o["device_key_algorithm"].as_string().c_str() << " "
            << o["device_key_id"].as_string().c_str() << "\n"
            << "firmware   " << r.firmware_version() << "\n"
            << "time       " << iso_time(r.device_time()) << " (" << r.device_time() << ")\n";
  if (r.authorizations().empty()) std::cout << "authorizations: none installed\n";
  for (const auto& a : r.authorizations()) {
    std::cout << "authorization " << a.id() << " not after " << iso_time(a.not_after()) << "\n";
  }
  if (!r.revoked_ids().empty()) {
    std::cout << "revoked   ";
    for (auto id : r.revoked_ids()) std::cout << " " << id;
    std::cout << "\n";
  }
}

std::string printable(const std::string& bytes) {
  for (unsigned char c : bytes) {
    if ((c < 0x20 && c != '\n' && c != '\t') || c == 0x7f) return "hex:" + to_hex(as_bytes(bytes));
  }
  return bytes;
}

int finish(const Failure& f) {
  std::cerr << "tollgate-host: " << f.message << "\n";
  return exit_code(f.outcome);
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{
      "tollgate-host: the host PC side of Tollgate (identities, token cache, instrument client)"};
  app.require_subcommand(1);
  app.footer(
      "Exit statuses: 0 ok, 1 usage or other error, 2 denied by the device (or the command "
      "failed),\n"
      "3 no usable cached token left, 4 link failure, 5 forged or unverifiable answer.");
  Globals g;
  app.add_option("--home", g.home_flag,
                 "State folder (default $TOLLGATE_HOME, else ~/.local/share/tollgate)");
  app.add_option("--timeout", g.timeout,
                 "Deadline for each answer from the device (e.g. 2s, 500ms)")
      ->capture_default_str();
  app.add_option("--retries", g.retries, "Resends of the same bytes after a lost answer")
      ->capture_default_str();

  // identity
  auto* identity = app.add_subcommand("identity", "The user's key pair");
  identity->require_subcommand(1);
  std::string user, pass_file, alg = "ed25519", out;
  auto* id_create = identity->add_subcommand("create", "Create a key pair, private key encrypted");
  id_create->add_option("--user", user, "User UUID")->required();
  id_create->add_option("--passphrase-file", pass_file, "Passphrase (first line); else prompted");
  id_create->add_option("--alg", alg, "ed25519 | p256 | rsa2048 | rsa3072")->capture_default_str();
  auto* id_export = identity->add_subcommand("export-public", "Write the public key (PEM)");
  id_export->add_option("--user", user, "User UUID")->required();
  id_export->add_option("--out", out, "Output file")->required();
  auto* id_list = identity->add_subcommand("list", "List identities");

  // tokens, authorizations
  auto* tokens = app.add_subcommand("tokens", "The token cache");
  tokens->require_subcommand(1);
  std::vector<std::string> files;
  std::string device;
  bool as_json = false;
  auto* tok_import = tokens->add_subcommand("import", "Import Signed DeviceToken files");
  tok_import->add_option("files", files, "Token files")->required();
  auto* tok_list = tokens->add_subcommand("list", "List cached tokens, soonest expiring first");
  tok_list->add_option("--device", device, "Only tokens for this device UUID");
  tok_list->add_flag("--json", as_json, "JSON output");
  auto* auths = app.add_subcommand("authorizations", "Cached cloud key authorizations");
  auths->require_subcommand(1);
  auto* auth_import = auths->add_subcommand("import", "Import Signed CloudKeyAuthorization files");
  auth_import->add_option("files", files, "Authorization files")->required();

  // device commands
  std::string link;
  auto* pair = app.add_subcommand("pair", "Read the device's status and pin its key");
  pair->add_option("--link", link, "Endpoint (vbus:..., can:..., serial:...)")->required();
  auto* status = app.add_subcommand("status", "Show the device's signed status");
  status->add_option("--link", link, "Endpoint")->required();
  status->add_flag("--json", as_json, "JSON output");
  auto* run =
      app.add_subcommand("run", "Run a command on the device: run [OPTIONS] COMMAND [ARGS]...");
  run->add_option("--link", link, "Endpoint")->required();
  run->add_option("--user", user, "User UUID (default: the only identity)");
  run->add_option("--passphrase-file", pass_file, "Passphrase (first line); else prompted");
  run->prefix_command();

  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    const int rc = app.exit(e);
    return rc == 0 ? 0 : kExitUsage;
  }

  try {
    auto store = open_home(g);
    if (*id_create) {
      const Bytes uid = uuid_arg(user, "--user");
      auto type = crypto::key_type_from_name(alg);
      if (!type)
        throw Fatal{kExitUsage, "--alg " + alg + ": expected ed25519, p256, rsa2048 or rsa3072"};
      const std::string p = passphrase(pass_file, true);
      IdentityInfo info;
      if (auto err = store.create(uid, *type, p, &info)) throw Fatal{kExitUsage, err->message};
      std::cout << "identity " << uuid_to_string(uid) << ": "
                << crypto::algorithm_name(info.algorithm) << " key " << to_hex(info.key_id) << "\n";
      return 0;
    }
    if (*id_export) {
      const Bytes uid = uuid_arg(user, "--user");
      auto info = store.find(uid);
      if (!info) throw Fatal{kExitUsage, "no identity for user " + user};
      std::ofstream f(out, std::ios::binary | std::ios::trunc);
      if (!(f << info->public_pem) || !f.flush()) throw Fatal{kExitUsage, "cannot write " + out};
      std::cout << "public key of " << uuid_to_string(uid) << " -> " << out << "\n";
      return 0;
    }
    if (*id_list) {
      for (const auto& i : store.list()) {
        std::cout << uuid_to_string(i.user_id) << "  " << crypto::algorithm_name(i.algorithm)
                  << "  " << to_hex(i.key_id) << "\n";
      }
      return 0;
    }

    auto cache = open_cache(store);
    if (*tok_import || *auth_import) {
      int bad = 0;
      if (auto st = cache->begin_bulk(); !st) {
        throw Fatal{kExitUsage, "token cache: " + cache->last_error()};
      }
      for (const auto& f : files) {
        Bytes b;
        try {
          b = read_bytes(f);
        } catch (const Fatal& e) {
          std::cerr << e.message << "\n";
          ++bad;
          continue;
        }
        auto r = *tok_import ? cache->import_token(b) : cache->import_authorization(b);
        if (!r) {
          std::cerr << f << ": refused: " << error_name(r.error()) << "\n";
          ++bad;
          continue;
        }
        std::cout << f << ": " << (*r == ImportResult::kAdded ? "imported" : "already cached")
                  << "\n";
      }
      if (auto st = cache->end_bulk(); !st) {
        throw Fatal{kExitUsage, "token cache: " + cache->last_error()};
      }
      return bad == 0 ? 0 : kExitUsage;
    }
    if (*tok_list) {
      std::optional<Bytes> dev;
      if (!device.empty()) dev = uuid_arg(device, "--device");
      auto list = cache->list(dev);
      if (!list) throw Fatal{kExitUsage, "token cache: " + cache->last_error()};
      if (as_json) {
        json::array arr;
        for (const auto& t : *list) {
          arr.push_back(
              json::object{{"token_id", uuid_to_string(t.token_id)},
                           {"device_id", uuid_to_string(t.device_id)},
                           {"user_id", uuid_to_string(t.user_id)},
                           {"expires_at", t.expires_at},
                           {"authorization_id", t.authorization_id},
                           {"authorized_uses", t.authorized_uses},
                           {"uses_left", t.uses_left},
                           {"accepted", t.accepted},
                           {"dead", t.dead},
                           {"dead_reason", t.dead ? std::string(error_name(t.dead_reason)) : ""}});
        }
        std::cout << json::serialize(arr) << "\n";
      } else {
        for (const auto& t : *list) {
          std::cout << uuid_to_string(t.token_id) << "  device " << uuid_to_string(t.device_id)
                    << "  user " << uuid_to_string(t.user_id) << "  expires "
                    << iso_time(t.expires_at) << "  uses " << t.uses_left << "/"
                    << t.authorized_uses;
          if (t.dead) std::cout << "  dead (" << error_name(t.dead_reason) << ")";
          std::cout << "\n";
        }
      }
      return 0;
    }

    const ClientOptions opts = client_options(g);
    if (*pair || *status) {
      const bool pairing = pair->parsed();
      auto st = with_link<Step<StatusReply>>(
          link, [&](transport::MessageLink& l) -> asio::awaitable<Step<StatusReply>> {
            HostClient client(l, *cache, opts, wall_now);
            if (pairing) co_return co_await client.pair(link);
            co_return co_await client.status();
          });
      if (st.index() == 1) return finish(std::get<1>(st));
      const auto& reply = std::get<0>(st);
      if (as_json) {
        std::cout << json::serialize(status_json(reply.report, reply.pinned || pairing)) << "\n";
      } else {
        if (pairing) {
          std::cout << (reply.pinned ? "paired again (key matches the pin)\n"
                                     : "paired: device key pinned\n");
        }
        print_status(reply.report, reply.pinned || pairing);
      }
      return 0;
    }
    if (*run) {
      std::string err;
      auto spec = parse_command_args(run->remaining(), &err);
      if (!spec) throw Fatal{kExitUsage, err};
      Bytes uid;
      if (!user.empty()) {
        uid = uuid_arg(user, "--user");
      } else {
        auto ids = store.list();
        if (ids.size() != 1) {
          throw Fatal{kExitUsage, ids.empty() ? "no identity: run `tollgate-host identity create`"
                                              : "several identities: choose one with --user"};
        }
        uid = ids[0].user_id;
      }
      auto dev = cache->device_by_endpoint(link);
      if (!dev) throw Fatal{kExitUsage, "token cache: " + cache->last_error()};
      if (!dev->has_value()) {
        throw Fatal{kExitUsage, "no device paired on " + link +
                                    ": run `tollgate-host pair --link " + link + "` first"};
      }
      const std::string p = passphrase(pass_file, false);
      auto key = store.load(uid, p);
      if (key.index() == 1) throw Fatal{kExitUsage, std::get<1>(key).message};
      const auto& user_key = std::get<0>(key);
      const Bytes device_id = (*dev)->device_id;
      auto report =
          with_link<RunReport>(link, [&](transport::MessageLink& l) -> asio::awaitable<RunReport> {
            HostClient client(l, *cache, opts, wall_now);
            co_return co_await client.run(device_id, uid, user_key, *spec);
          });
      for (const auto& n : report.notes) std::cerr << "  " << n << "\n";
      if (report.outcome != Outcome::kOk) {
        if (report.outcome == Outcome::kDenied && !report.response.result().empty()) {
          std::cout << printable(report.response.result()) << "\n";
        }
        return finish(Failure{report.outcome, report.error, report.message});
      }
      std::cout << printable(report.response.result()) << "\n"
                << "uses left: " << report.response.uses_left() << "\n";
      return 0;
    }
  } catch (const Fatal& f) {
    std::cerr << "tollgate-host: " << f.message << "\n";
    return f.code;
  } catch (const std::exception& e) {
    std::cerr << "tollgate-host: " << e.what() << "\n";
    return kExitUsage;
  }
  return kExitUsage;
}
