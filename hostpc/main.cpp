// tollgate-host: the host PC's command line over the host library (identities,
// token cache, instrument client). Exit statuses are those of hostpc/protocol.hpp:
// 0 ok, 1 usage/other, 2 denied, 3 no usable token, 4 link failure, 5 forged answer;
// the online commands (hostpc/online.hpp) add 6 cloud unreachable, 7 refused by
// the cloud, 8 garbage answer from the cloud.
#include <CLI/CLI.hpp>
#include <algorithm>
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
#include "hostpc/cloud_client.hpp"
#include "hostpc/identity.hpp"
#include "hostpc/online.hpp"
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
  std::string cloud_timeout = "5s";
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

// --- online side -----------------------------------------------------------

Bytes pick_user(const IdentityStore& store, const std::string& user) {
  if (!user.empty()) return uuid_arg(user, "--user");
  auto ids = store.list();
  if (ids.size() != 1) {
    throw Fatal{kExitUsage, ids.empty() ? "no identity: run `tollgate-host identity create`"
                                        : "several identities: choose one with --user"};
  }
  return ids[0].user_id;
}

std::chrono::milliseconds cloud_timeout(const Globals& g) {
  auto d = transport::parse_duration(g.cloud_timeout);
  if (!d || d->count() <= 0) {
    throw Fatal{kExitUsage, "--cloud-timeout " + g.cloud_timeout + " is not a duration"};
  }
  return std::chrono::duration_cast<std::chrono::milliseconds>(*d);
}

std::unique_ptr<CloudClient> open_cloud(const std::string& url, const std::string& ca_pem,
                                        const Globals& g) {
  std::string err;
  auto u = parse_cloud_url(url, &err);
  if (!u) throw Fatal{kExitUsage, err};
  CloudClientOptions o;
  o.url = *u;
  o.ca_pem = ca_pem;
  o.timeout = cloud_timeout(g);
  return std::make_unique<CloudClient>(std::move(o));
}

json::object cloud_call(CloudClient& c, const std::string& method, const std::string& target,
                        const json::object* body = nullptr, const std::string& bearer = {}) {
  auto r = c.call(method, target, body, bearer);
  if (r.index() == 1) {
    const auto& e = std::get<1>(r);
    std::string msg = e.message;
    if (e.kind == CloudFailure::kGarbage) msg = "garbage answer from the cloud: " + msg;
    if (e.code == "session_expired" || e.code == "invalid_session") msg += " (log in again)";
    if (e.code == "no_enrolled_key" || e.code == "unknown_key") {
      msg += " (run `tollgate-host identity enroll`)";
    }
    throw Fatal{exit_code(e.kind), msg};
  }
  return std::move(std::get<0>(r));
}

[[noreturn]] void garbage(const std::string& what) {
  throw Fatal{kExitCloudGarbage, "garbage answer from the cloud: " + what};
}

std::string jstr(const json::object& o, const char* key) {
  auto* v = o.if_contains(key);
  if (!v || !v->is_string()) garbage(std::string("no string \"") + key + "\"");
  return std::string(v->as_string().c_str());
}

std::int64_t jint(const json::object& o, const char* key) {
  auto* v = o.if_contains(key);
  if (v && v->is_int64()) return v->as_int64();
  if (v && v->is_uint64() && v->as_uint64() <= INT64_MAX)
    return static_cast<std::int64_t>(v->as_uint64());
  garbage(std::string("no integer \"") + key + "\"");
}

Bytes jb64(const json::object& o, const char* key) {
  auto b = base64_decode(jstr(o, key));
  if (!b) garbage(std::string("\"") + key + "\" is not base64");
  return *b;
}

struct LoggedIn {
  Bytes user_id;
  CloudSession session;
  std::unique_ptr<CloudClient> client;
};

LoggedIn logged_in(const IdentityStore& store, const std::string& user, const Globals& g) {
  LoggedIn l;
  l.user_id = pick_user(store, user);
  std::string err;
  auto s = load_session(store.home(), l.user_id, &err);
  if (!s) throw Fatal{kExitUsage, err};
  l.session = std::move(*s);
  l.client = open_cloud(l.session.cloud, l.session.ca_pem, g);
  return l;
}

struct CurrentAuthorization {
  std::uint64_t id = 0;
  crypto::PublicKey cloud_key;
};

// GET /v1/authorization, checked for shape and cached: tokens are verified
// under the cloud key it names.
CurrentAuthorization fetch_authorization(CloudClient& c, TokenCache& cache,
                                         std::ostream& out = std::cout) {
  auto o = cloud_call(c, "GET", "/v1/authorization");
  const Bytes bytes = jb64(o, "authorization");
  auto parsed = parse_authorization(bytes);
  if (!parsed) garbage(std::string("authorization: ") + std::string(error_name(parsed.error())));
  if (static_cast<std::uint64_t>(jint(o, "id")) != parsed->id) {
    garbage("authorization id does not match its object");
  }
  auto key = authorized_cloud_key(bytes);
  if (!key) garbage(std::string("authorization key: ") + std::string(error_name(key.error())));
  auto r = cache.import_authorization(bytes);
  if (!r) throw Fatal{kExitUsage, "token cache: " + cache.last_error()};
  out << "authorization " << parsed->id << " not after " << iso_time(parsed->not_after)
      << (*r == ImportResult::kAdded ? " (new)" : "") << "\n";
  return CurrentAuthorization{parsed->id, std::move(*key)};
}

// GET /v1/devices/{id}: pins the key of a device not yet paired; a paired
// device whose pin differs from the cloud's record is a forgery on one side.
void pin_from_cloud(LoggedIn& l, TokenCache& cache, ByteView device_id) {
  const std::string dev = uuid_to_string(device_id);
  auto o = cloud_call(*l.client, "GET", "/v1/devices/" + dev, nullptr, l.session.session);
  if (jstr(o, "device_id") != dev) garbage("device record for another device");
  auto key = crypto::PublicKey::from_pem(jstr(o, "public_key"));
  if (!key) garbage("device public key is not a supported key");
  auto known = cache.device(device_id);
  if (!known) throw Fatal{kExitUsage, "token cache: " + cache.last_error()};
  if (known->has_value()) {
    if ((*known)->public_key != key->spki_der()) {
      throw Fatal{kExitForged, "device " + dev + ": the cloud's key " + to_hex(key->id()) +
                                   " differs from the pinned key: not changing the pin"};
    }
    std::cout << "device " << dev << " key " << to_hex(key->id()) << " matches the pin\n";
    return;
  }
  DeviceRecord r;
  r.device_id = Bytes(device_id.begin(), device_id.end());
  r.public_key = key->spki_der();
  if (auto st = cache.put_device(r); !st) {
    throw Fatal{kExitUsage, "token cache: " + cache.last_error()};
  }
  std::cout << "device " << dev << " key " << to_hex(key->id()) << " pinned (from the cloud)\n";
}

// POST /v1/tokens until `goal` tokens (or, by_uses, uses) are cached. Every
// token of an answer is checked against `want` before any of it is cached; a
// progress line per token goes to `out`. Returns (tokens, uses) cached.
std::pair<std::uint64_t, std::uint64_t> mint_into_cache(LoggedIn& l, TokenCache& cache,
                                                        const TokenExpectation& want, bool by_uses,
                                                        std::uint64_t goal, std::ostream& out) {
  const std::string device = uuid_to_string(want.device_id);
  auto user_key = crypto::PublicKey::from_spki_der(want.user_spki);
  if (!user_key) throw Fatal{kExitUsage, "the identity's public key is unreadable"};
  const std::string key_id = to_hex(user_key->id());
  std::uint64_t got_tokens = 0, got_uses = 0, per_token = 0;
  while ((by_uses ? got_uses : got_tokens) < goal) {
    std::uint64_t count = 1;
    if (!by_uses) {
      count = std::min<std::uint64_t>(16, goal - got_tokens);
    } else if (per_token > 0) {
      count = std::min<std::uint64_t>(16, (goal - got_uses + per_token - 1) / per_token);
    }
    const json::object req{{"device_id", device}, {"count", count}, {"key_id", key_id}};
    auto o = cloud_call(*l.client, "POST", "/v1/tokens", &req, l.session.session);
    if (static_cast<std::uint64_t>(jint(o, "authorization_id")) != want.authorization_id) {
      garbage("tokens minted under another authorization than the current one");
    }
    auto* arr = o.if_contains("tokens");
    if (!arr || !arr->is_array() || arr->as_array().empty() || arr->as_array().size() > count) {
      garbage("no token list of the size asked for");
    }
    // Every token of an answer verifies before any of it is cached.
    std::vector<CachedToken> batch;
    for (const auto& t : arr->as_array()) {
      if (!t.is_object()) garbage("a token entry is not an object");
      std::string why;
      auto ct = check_minted_token(jb64(t.as_object(), "token"), want, &why);
      if (!ct) garbage("token refused: " + why);
      batch.push_back(std::move(*ct));
    }
    if (auto st = cache.begin_bulk(); !st) {
      throw Fatal{kExitUsage, "token cache: " + cache.last_error()};
    }
    for (const auto& ct : batch) {
      if (auto r = cache.import_token(ct.bytes); !r) {
        throw Fatal{kExitUsage, "token cache: " + cache.last_error()};
      }
      ++got_tokens;
      got_uses += ct.authorized_uses;
      out << "token " << got_tokens << ": " << uuid_to_string(ct.token_id) << "  "
          << ct.authorized_uses << " use(s), expires " << iso_time(ct.expires_at) << "  ["
          << (by_uses ? got_uses : got_tokens) << "/" << goal << (by_uses ? " uses]" : " tokens]")
          << "\n"
          << std::flush;
    }
    if (auto st = cache.end_bulk(); !st) {
      throw Fatal{kExitUsage, "token cache: " + cache.last_error()};
    }
    per_token = batch.front().authorized_uses;
  }
  return {got_tokens, got_uses};
}

// The front-loading policy of `run`: top the device's cached tokens up to
// `keep_uses` uses and `keep_days` days of validity, if logged in and the cloud
// answers within `deadline`. Any failure falls back to the cache at once: the
// run goes on with what is cached, a note on stderr says why.
void top_up(const IdentityStore& store, TokenCache& cache, const Globals& g,
            const std::string& deadline, const Bytes& uid, const Bytes& device,
            const crypto::PublicKey& user_pub, std::uint64_t keep_uses, std::uint64_t keep_days) {
  const UnixSeconds now = wall_now();
  auto usable = cache.usable(device, uid, now, 100000);
  if (!usable) {
    std::cerr << "  top-up skipped: token cache: " << cache.last_error() << "\n";
    return;
  }
  std::uint64_t have = 0;
  UnixSeconds latest = 0;
  for (const auto& t : *usable) {
    have += t.uses_left;
    latest = std::max(latest, t.expires_at);
  }
  std::uint64_t need = have < keep_uses ? keep_uses - have : 0;
  if (keep_days > 0 && latest < now + static_cast<UnixSeconds>(keep_days) * 24 * 3600) {
    need = std::max<std::uint64_t>(need, 1);
  }
  if (need == 0) return;
  std::string err;
  auto session = load_session(store.home(), uid, &err);
  if (!session) {
    std::cerr << "  top-up skipped: " << err << "\n";
    return;
  }
  try {
    Globals quick = g;
    quick.cloud_timeout = deadline;
    LoggedIn l;
    l.user_id = uid;
    l.session = std::move(*session);
    l.client = open_cloud(l.session.cloud, l.session.ca_pem, quick);
    auto auth = fetch_authorization(*l.client, cache, std::cerr);
    const TokenExpectation want{&auth.cloud_key, auth.id, device, uid, user_pub.spki_der(), now};
    const auto [tokens, uses] = mint_into_cache(l, cache, want, true, need, std::cerr);
    std::cerr << "  topped up: " << tokens << " token(s), " << uses << " use(s)\n";
  } catch (const Fatal& f) {
    std::cerr << "  top-up skipped: " << f.message << "\n";
  }
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{
      "tollgate-host: the host PC side of Tollgate (identities, token cache, instrument client)"};
  app.require_subcommand(1);
  app.footer(
      "Exit statuses: 0 ok, 1 usage or other error, 2 denied by the device (or the command "
      "failed),\n"
      "3 no usable cached token left, 4 link failure, 5 forged or unverifiable answer,\n"
      "6 cloud unreachable (or no answer in time), 7 refused by the cloud, 8 garbage answer "
      "from the cloud.");
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
  unsigned keep_uses = 0, keep_days = 0;
  std::string top_up_timeout = "1s";
  run->add_option("--keep-uses", keep_uses,
                  "Front-loading: when logged in, first top up to N cached uses for the device")
      ->check(CLI::Range(0u, 100000u));
  run->add_option("--keep-days", keep_days,
                  "Front-loading: first top up when no cached token is valid D more days")
      ->check(CLI::Range(0u, 3650u));
  run->add_option("--top-up-timeout", top_up_timeout,
                  "How long the top-up waits for the cloud before using the cache")
      ->capture_default_str();
  run->prefix_command();
  std::uint64_t from_seq = 0;
  auto* audit_export = app.add_subcommand(
      "audit-export",
      "Fetch the paired device's signed audit export, verified under its pinned key (for "
      "`sync --receipts`)");
  audit_export->add_option("--link", link, "Endpoint of the paired device")->required();
  audit_export->add_option("--from", from_seq, "First audit record wanted (default: the first)");
  audit_export->add_option("--out", out, "File for the Signed AuditExport")->required();

  // online
  app.add_option("--cloud-timeout", g.cloud_timeout,
                 "Deadline for connecting to the cloud and for each of its answers")
      ->capture_default_str();
  std::string cloud_url, account, ca_file, password_file;
  auto* login = app.add_subcommand(
      "login", "Log in to the cloud; the session is kept with the identity (0600)");
  login->add_option("--cloud", cloud_url, "https://HOST[:PORT]")->required();
  login->add_option("--account", account, "Cloud user name")->required();
  login->add_option("--user", user, "Identity UUID the account must belong to (checked)");
  login->add_option("--password-file", password_file, "Password (first line); else prompted");
  login->add_option("--ca", ca_file, "CA certificate (PEM) for the cloud; default: system store");
  auto* id_enroll = identity->add_subcommand(
      "enroll", "Enroll the identity's public key with the cloud (signed challenge)");
  id_enroll->add_option("--user", user, "User UUID (default: the only identity)");
  id_enroll->add_option("--passphrase-file", pass_file, "Passphrase (first line); else prompted");
  unsigned want_uses = 0, want_tokens = 0;
  auto* prefetch =
      app.add_subcommand("prefetch", "Fetch verified tokens for a device from the cloud");
  prefetch->add_option("--device", device, "Device UUID")->required();
  prefetch->add_option("--user", user, "User UUID (default: the only identity)");
  auto* opt_uses =
      prefetch->add_option("--uses", want_uses, "Fetch tokens until they carry at least N uses")
          ->check(CLI::Range(1u, 100000u));
  auto* opt_tokens = prefetch->add_option("--tokens", want_tokens, "Fetch N tokens (default 1)")
                         ->check(CLI::Range(1u, 10000u));
  opt_uses->excludes(opt_tokens);
  std::vector<std::string> sync_devices;
  auto* sync = app.add_subcommand(
      "sync", "Refresh the cloud authorization and the device keys from the cloud");
  sync->add_option("--user", user, "User UUID (default: the only identity)");
  sync->add_option("--device", sync_devices,
                   "Device UUID (repeatable; default: the devices of cached tokens)");
  std::vector<std::string> receipts;
  sync->add_option("--receipts", receipts,
                   "Signed AuditExport files (a device's export_audit answer) to upload so the "
                   "cloud reconciles the uses charged offline");

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

    if (*login) {
      std::string ca_pem;
      if (!ca_file.empty()) {
        const Bytes b = read_bytes(ca_file);
        ca_pem.assign(b.begin(), b.end());
      }
      std::optional<Bytes> want_uid;
      if (!user.empty()) want_uid = uuid_arg(user, "--user");
      std::string err;
      auto pw = password_file.empty() ? prompt_passphrase("cloud password: ", false, &err)
                                      : read_passphrase_file(password_file, &err);
      if (!pw) throw Fatal{kExitUsage, err};
      auto client = open_cloud(cloud_url, ca_pem, g);
      const json::object req{{"user", account}, {"password", *pw}};
      auto o = cloud_call(*client, "POST", "/v1/login", &req);
      CloudSession s;
      s.cloud = cloud_url;
      s.ca_pem = ca_pem;
      s.account = account;
      s.session = jstr(o, "session");
      if (auto h = from_hex(s.session); !h || h->size() != 32) garbage("session is not 64 hex");
      auto uid = uuid_from_string(jstr(o, "user_id"));
      if (!uid) garbage("user_id is not a UUID");
      s.user_id = *uid;
      s.expires_at = jint(o, "expires_at");
      if (want_uid && *want_uid != *uid) {
        throw Fatal{kExitUsage, "account " + account + " is user " + uuid_to_string(*uid) +
                                    ", not --user " + user};
      }
      if (!save_session(store.home(), s, &err)) throw Fatal{kExitUsage, err};
      std::cout << "logged in to " << cloud_url << " as " << account << " (user "
                << uuid_to_string(*uid) << "), session until " << iso_time(s.expires_at) << "\n";
      if (!store.find(*uid)) {
        std::cout << "no identity for this user yet: run `tollgate-host identity create --user "
                  << uuid_to_string(*uid) << "`, then `tollgate-host identity enroll`\n";
      }
      return 0;
    }
    if (*id_enroll) {
      auto l = logged_in(store, user, g);
      if (!store.find(l.user_id)) {
        throw Fatal{kExitUsage, "no identity for user " + uuid_to_string(l.user_id)};
      }
      const std::string p = passphrase(pass_file, false);
      auto key = store.load(l.user_id, p);
      if (key.index() == 1) throw Fatal{kExitUsage, std::get<1>(key).message};
      const auto& user_key = std::get<0>(key);
      const Bytes& spki = user_key.public_key().spki_der();
      const json::object req{{"public_key", base64_encode(spki)}};
      auto ch = cloud_call(*l.client, "POST", "/v1/enroll/challenge", &req, l.session.session);
      const std::string challenge_id = jstr(ch, "challenge_id");
      const Bytes challenge = jb64(ch, "challenge");
      if (challenge.size() != 32) garbage("the challenge is not 32 bytes");
      if (jstr(ch, "key_id") != to_hex(user_key.public_key().id())) {
        garbage("the challenge names another key");
      }
      auto sig = user_key.sign(enrollment_message(challenge, l.user_id, spki));
      if (!sig) throw Fatal{kExitUsage, "cannot sign the enrollment challenge"};
      const json::object proof{{"challenge_id", challenge_id}, {"signature", base64_encode(*sig)}};
      auto done = cloud_call(*l.client, "POST", "/v1/enroll", &proof, l.session.session);
      std::cout << "enrolled key " << jstr(done, "key_id") << " for user "
                << uuid_to_string(l.user_id) << "\n";
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

    if (*prefetch) {
      const Bytes dev = uuid_arg(device, "--device");
      const std::string dev_text = uuid_to_string(dev);
      auto l = logged_in(store, user, g);
      auto info = store.find(l.user_id);
      if (!info) throw Fatal{kExitUsage, "no identity for user " + uuid_to_string(l.user_id)};
      auto user_pub = crypto::PublicKey::from_pem(info->public_pem);
      if (!user_pub) throw Fatal{kExitUsage, "the identity's public key is unreadable"};
      auto auth = fetch_authorization(*l.client, *cache);
      pin_from_cloud(l, *cache, dev);
      const TokenExpectation want{&auth.cloud_key,      auth.id,   dev, l.user_id,
                                  user_pub->spki_der(), wall_now()};
      const bool by_uses = want_uses > 0;
      const std::uint64_t goal = by_uses ? want_uses : (want_tokens > 0 ? want_tokens : 1);
      const auto [got_tokens, got_uses] =
          mint_into_cache(l, *cache, want, by_uses, goal, std::cout);
      std::cout << "prefetched " << got_tokens << " token(s), " << got_uses << " use(s) for device "
                << dev_text << "\n";
      return 0;
    }
    if (*sync) {
      auto l = logged_in(store, user, g);
      fetch_authorization(*l.client, *cache);
      std::vector<Bytes> devs;
      for (const auto& d : sync_devices) devs.push_back(uuid_arg(d, "--device"));
      if (devs.empty()) {
        auto list = cache->list();
        if (!list) throw Fatal{kExitUsage, "token cache: " + cache->last_error()};
        for (const auto& t : *list) {
          if (t.user_id == l.user_id &&
              std::find(devs.begin(), devs.end(), t.device_id) == devs.end()) {
            devs.push_back(t.device_id);
          }
        }
      }
      int rc = 0;
      for (const auto& d : devs) {
        try {
          pin_from_cloud(l, *cache, d);
        } catch (const Fatal& f) {
          // One device the user lost access to does not stop the others.
          if (f.code != kExitCloudRefused) throw;
          std::cerr << "tollgate-host: device " << uuid_to_string(d) << ": " << f.message << "\n";
          rc = f.code;
        }
      }
      for (const auto& f : receipts) {
        const json::object req{{"export", base64_encode(read_bytes(f))}};
        try {
          auto o = cloud_call(*l.client, "POST", "/v1/receipts", &req, l.session.session);
          std::cout << f << ": device " << jstr(o, "device_id") << ", "
                    << jint(o, "records_applied") << " record(s) applied, "
                    << jint(o, "uses_reconciled") << " use(s) reconciled, next seq "
                    << jint(o, "next_seq") << "\n";
        } catch (const Fatal& fatal) {
          // A refused export (a chain gap, say) does not stop the others.
          if (fatal.code != kExitCloudRefused) throw;
          std::cerr << "tollgate-host: " << f << ": " << fatal.message << "\n";
          rc = fatal.code;
        }
      }
      std::cout << "synced the authorization and " << devs.size() << " device key(s)\n";
      return rc;
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
    if (*audit_export) {
      auto dev = cache->device_by_endpoint(link);
      if (!dev) throw Fatal{kExitUsage, "token cache: " + cache->last_error()};
      if (!dev->has_value()) {
        throw Fatal{kExitUsage, "no device paired on " + link +
                                    ": run `tollgate-host pair --link " + link + "` first"};
      }
      const Bytes device_id = (*dev)->device_id;
      auto got = with_link<Step<AuditExportReply>>(
          link, [&](transport::MessageLink& l) -> asio::awaitable<Step<AuditExportReply>> {
            HostClient client(l, *cache, opts, wall_now);
            co_return co_await client.audit_export(device_id, from_seq);
          });
      if (got.index() == 1) return finish(std::get<1>(got));
      const auto& reply = std::get<0>(got);
      const auto& records = reply.content.records();
      {
        std::ofstream f(out, std::ios::binary | std::ios::trunc);
        if (!f.write(reinterpret_cast<const char*>(reply.signed_export.data()),
                     static_cast<std::streamsize>(reply.signed_export.size())) ||
            !f.flush()) {
          throw Fatal{kExitUsage, "cannot write " + out};
        }
      }
      std::cout << "audit export of device " << uuid_to_string(device_id)
                << " verified under the pinned key: ";
      if (records.empty()) {
        std::cout << "no records from " << from_seq;
      } else {
        std::cout << records.size() << " record(s), " << records[0].seq() << ".."
                  << records[records.size() - 1].seq();
      }
      std::cout << " -> " << out << "\n";
      if (!records.empty() && records[records.size() - 1].hash() != reply.content.head_hash()) {
        std::cout << "more records follow: run again with --from " << reply.content.next_seq()
                  << "\n";
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
      if (keep_uses > 0 || keep_days > 0) {
        top_up(store, *cache, g, top_up_timeout, uid, device_id, user_key.public_key(), keep_uses,
               keep_days);
      }
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
