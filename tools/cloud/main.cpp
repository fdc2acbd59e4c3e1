// tollgate-cloud: the reference token authority (docs/CLOUD.md).
//
// A state directory DIR holds:
//   ca.pem, ca.key           development CA (init only; clients trust ca.pem)
//   server.pem, server.key   TLS certificate and key the server presents
//   cloud.key, cloud.pub     the cloud signing key (PKCS#8, 0600) and its SPKI PEM
//   cloud.db                 the SQLite database (unless --db names another: sqlite:PATH or
//                            postgresql://..., see docs/CLOUD.md)
#include <fcntl.h>
#include <signal.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <algorithm>
#include <atomic>
#include <boost/json.hpp>
#include <cerrno>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <mutex>
#include <sstream>
#include <thread>

#include "gateway/signed.hpp"
#include "tools/cloud/authority.hpp"
#include "tools/cloud/codec.hpp"
#include "tools/cloud/dev_pki.hpp"
#include "tools/cloud/https_client.hpp"
#include "tools/cloud/password.hpp"
#include "tools/cloud/pg_store.hpp"
#include "tools/cloud/server.hpp"
#include "tools/cloud/sqlite_store.hpp"
#include "tools/keys/iso_time.hpp"

namespace fs = std::filesystem;
using namespace tollgate;
using namespace tollgate::cloud;

namespace {

constexpr int kExitUsage = 2;
constexpr int kExitFailure = 1;

struct Failure : std::runtime_error {
  using std::runtime_error::runtime_error;
};

UnixTime wall_now() {
  return std::chrono::duration_cast<std::chrono::seconds>(
             std::chrono::system_clock::now().time_since_epoch())
      .count();
}

std::string read_text(const fs::path& p) {
  std::ifstream in(p, std::ios::binary);
  if (!in) throw Failure("cannot read " + p.string() + ": " + std::strerror(errno));
  std::ostringstream s;
  s << in.rdbuf();
  return s.str();
}

// Atomic replace: temporary file, fsync, rename. `mode` 0600 for secrets.
void write_text(const fs::path& p, std::string_view text, mode_t mode) {
  const std::string tmp = p.string() + ".tmp";
  const int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, mode);
  if (fd < 0) throw Failure("cannot write " + tmp + ": " + std::strerror(errno));
  bool ok = ::fchmod(fd, mode) == 0;
  std::size_t off = 0;
  while (ok && off < text.size()) {
    const ssize_t n = ::write(fd, text.data() + off, text.size() - off);
    if (n < 0 && errno == EINTR) continue;
    ok = n > 0;
    if (ok) off += static_cast<std::size_t>(n);
  }
  ok = ok && ::fsync(fd) == 0;
  ok = (::close(fd) == 0) && ok;
  if (!ok || ::rename(tmp.c_str(), p.c_str()) != 0) {
    const int err = errno;
    ::unlink(tmp.c_str());
    throw Failure("cannot write " + p.string() + ": " + std::strerror(err));
  }
}

struct Common {
  std::string dir;
  std::string db;
  fs::path path(const char* name) const { return fs::path(dir) / name; }
  std::unique_ptr<CloudStore> open() const {
    if (dir.empty() && db.empty()) throw Failure("give --dir (or --db)");
    return open_store(db.empty() ? "sqlite:" + path("cloud.db").string() : db);
  }
};

void add_common(CLI::App* sub, Common& c) {
  sub->add_option("--dir", c.dir, "State directory (made by init)")->type_name("DIR");
  sub->add_option("--db", c.db, "Database: sqlite:PATH or postgresql://... (default DIR/cloud.db)")
      ->type_name("URL");
}

Bytes uuid_arg(const std::string& text, const char* what) {
  auto b = uuid_from_string(text);
  if (!b) throw Failure(std::string(what) + ": '" + text + "' is not a UUID");
  return *b;
}

UnixTime time_arg(const std::string& text, const char* what) {
  auto t = keys::parse_iso8601(text);
  if (!t) throw Failure(std::string(what) + ": '" + text + "' is not an ISO 8601 time");
  return *t;
}

crypto::PrivateKey load_cloud_key(const Common& c) {
  auto key = crypto::PrivateKey::from_pem(read_text(c.path("cloud.key")));
  if (!key) throw Failure(c.path("cloud.key").string() + ": not an unencrypted PKCS#8 key");
  return std::move(key).value();
}

// ---------------------------------------------------------------------------

struct InitOptions {
  Common c;
  std::string cloud_key;
  std::string key_type = "ed25519";
  std::vector<std::string> dns{"localhost"};
  std::vector<std::string> ips{"127.0.0.1"};
  int days = 365;
};

int run_init(const InitOptions& o) {
  if (o.c.dir.empty()) throw Failure("init needs --dir");
  fs::create_directories(o.c.dir);
  if (fs::exists(o.c.path("server.pem")) || fs::exists(o.c.path("cloud.key"))) {
    throw Failure(o.c.dir + " is already initialised");
  }
  crypto::PrivateKey cloud;
  if (!o.cloud_key.empty()) {
    auto k = crypto::PrivateKey::from_pem(read_text(o.cloud_key));
    if (!k) throw Failure(o.cloud_key + ": not an unencrypted PKCS#8 private key");
    cloud = std::move(k).value();
  } else {
    auto type = crypto::key_type_from_name(o.key_type);
    if (!type) throw Failure("--key-type: one of ed25519, p256, rsa2048, rsa3072");
    auto k = crypto::PrivateKey::generate(*type);
    if (!k) throw Failure("cannot generate the cloud key");
    cloud = std::move(k).value();
  }
  const DevPki pki = make_dev_pki(o.dns, o.ips, o.days);
  write_text(o.c.path("ca.key"), pki.ca_key_pem, 0600);
  write_text(o.c.path("ca.pem"), pki.ca_cert_pem, 0644);
  write_text(o.c.path("server.key"), pki.server_key_pem, 0600);
  write_text(o.c.path("server.pem"), pki.server_cert_pem, 0644);
  auto pem = cloud.pem();
  if (!pem) throw Failure("cannot encode the cloud key");
  write_text(o.c.path("cloud.key"), *pem, 0600);
  write_text(o.c.path("cloud.pub"), cloud.public_key().pem(), 0644);
  (void)o.c.open();  // creates the database with its schema
  std::cout << "initialised " << o.c.dir << ": cloud key " << to_hex(cloud.public_key().id())
            << " (" << crypto::algorithm_name(cloud.algorithm())
            << "); next: have the master sign an authorization for cloud.pub, then "
               "set-authorization\n";
  return 0;
}

struct ServeOptions {
  Common c;
  std::string listen = "127.0.0.1:8443";
  std::string cert;
  std::string key;
  unsigned threads = 4;
  UnixTime session_ttl = 3600;
  std::uint32_t mint_rate = 120;
};

int run_serve(const ServeOptions& o) {
  auto store = o.c.open();
  const auto colon = o.listen.rfind(':');
  if (colon == std::string::npos) throw Failure("--listen: ADDRESS:PORT");
  ServerOptions so;
  so.address = o.listen.substr(0, colon);
  if (so.address.size() > 2 && so.address.front() == '[') {
    so.address = so.address.substr(1, so.address.size() - 2);
  }
  try {
    const unsigned long port = std::stoul(o.listen.substr(colon + 1));
    if (port > 65535) throw std::out_of_range("port");
    so.port = static_cast<std::uint16_t>(port);
  } catch (const std::logic_error&) {
    throw Failure("--listen: bad port in '" + o.listen + "'");
  }
  so.cert_chain_pem = read_text(o.cert.empty() ? o.c.path("server.pem") : fs::path(o.cert));
  so.private_key_pem = read_text(o.key.empty() ? o.c.path("server.key") : fs::path(o.key));
  so.threads = o.threads;
  AuthorityOptions ao;
  ao.session_ttl = o.session_ttl;
  ao.mint_requests_per_minute = o.mint_rate;
  Authority authority(*store, load_cloud_key(o.c), wall_now, ao);
  if (!store->authorization()) {
    std::cerr << "tollgate-cloud: warning: no authorization set; minting answers 503 until "
                 "set-authorization\n";
  }

  // Signals are taken synchronously by this thread; the pool never sees them.
  sigset_t set;
  sigemptyset(&set);
  sigaddset(&set, SIGINT);
  sigaddset(&set, SIGTERM);
  pthread_sigmask(SIG_BLOCK, &set, nullptr);
  HttpsServer server(authority, so);
  server.start();
  std::cout << "listening on https://" << o.listen.substr(0, colon) << ":" << server.port()
            << std::endl;
  int sig = 0;
  sigwait(&set, &sig);
  server.stop();
  std::cout << "stopped" << std::endl;
  return 0;
}

int run_set_authorization(const Common& c, const std::string& file) {
  const std::string bytes = read_text(file);
  auto env = parse_signed(as_bytes(bytes));
  if (!env || env->type() != v1::Signed::TYPE_CLOUD_KEY_AUTHORIZATION) {
    throw Failure(file + ": not a Signed CloudKeyAuthorization");
  }
  v1::CloudKeyAuthorization auth;
  if (!auth.ParseFromString(env->body()) || auth.id() == 0) {
    throw Failure(file + ": the authorization body is malformed");
  }
  const crypto::PrivateKey cloud = load_cloud_key(c);
  if (auth.cloud_public_key() != std::string(as_chars(cloud.public_key().spki_der()))) {
    throw Failure(file + " authorizes another key than " + c.path("cloud.key").string());
  }
  auto store = c.open();
  store->set_authorization(as_bytes(bytes));
  std::cout << "authorization " << auth.id() << " set (valid "
            << keys::format_iso8601(auth.not_before()) << " to "
            << keys::format_iso8601(auth.not_after()) << ", " << auth.revoked_ids_size()
            << " revoked ids)\n";
  return 0;
}

int run_user_add(const Common& c, const std::string& name, const std::string& password_file) {
  if (name.empty() || name.size() > 128) throw Failure("user names are 1..128 bytes");
  std::string password;
  if (password_file.empty()) {
    std::getline(std::cin, password);
  } else {
    password = read_text(password_file);
    password = password.substr(0, password.find_first_of("\r\n"));
  }
  if (password.size() < 8) throw Failure("the password must be at least 8 characters");
  auto store = c.open();
  UserRecord u;
  u.id = crypto::random_bytes(16);
  u.id[6] = static_cast<std::uint8_t>((u.id[6] & 0x0f) | 0x40);
  u.id[8] = static_cast<std::uint8_t>((u.id[8] & 0x3f) | 0x80);
  u.name = name;
  u.password_hash = hash_password(password);
  u.created_at = wall_now();
  if (!store->add_user(u)) throw Failure("user '" + name + "' already exists");
  std::cout << uuid_to_string(u.id) << "\n";
  return 0;
}

int run_device_add(const Common& c, const std::string& id, const std::string& pub,
                   const std::string& name) {
  const Bytes device = uuid_arg(id, "--id");
  auto key = crypto::PublicKey::from_pem(read_text(pub));
  if (!key) throw Failure(pub + ": not an SPKI public key PEM");
  auto store = c.open();
  DeviceRecord d{device, key->spki_der(), Bytes(key->id().begin(), key->id().end()), name,
                 wall_now()};
  if (!store->add_device(d)) {
    throw Failure("device " + id + " (or its key) is already registered");
  }
  std::cout << "device " << id << " registered, key " << to_hex(key->id()) << "\n";
  return 0;
}

struct EntitleOptions {
  Common c;
  std::string user, device, model, from, until;
  std::uint32_t uses_per_token = 0;
  std::uint32_t max_outstanding = 0;
  std::uint64_t add_balance = 0, price = 0, payment = 0;
};

int run_entitle(const EntitleOptions& o) {
  auto model = model_from_name(o.model);
  if (!model) throw Failure("--model: subscription, pay-per-use or rent-to-own");
  auto store = o.c.open();
  auto user = store->user_by_name(o.user);
  if (!user) throw Failure("no user '" + o.user + "'");
  const Bytes device = uuid_arg(o.device, "--device");
  if (!store->device(device)) throw Failure("device " + o.device + " is not registered");
  auto existing = store->entitlement(user->id, device);
  EntitlementRecord e;
  if (existing && existing->model == *model) e = *existing;
  e.user_id = user->id;
  e.device_id = device;
  e.model = *model;
  if (o.uses_per_token) e.uses_per_token = o.uses_per_token;
  if (e.uses_per_token == 0) e.uses_per_token = 1;
  e.max_outstanding = o.max_outstanding ? o.max_outstanding : e.max_outstanding;
  if (*model == Model::kSubscription) {
    if (!o.from.empty()) e.window_start = time_arg(o.from, "--from");
    if (!o.until.empty()) e.window_end = time_arg(o.until, "--until");
    if (e.window_end <= e.window_start) throw Failure("a subscription needs --from < --until");
  }
  if (*model == Model::kRentToOwn) {
    if (o.price) e.price = o.price;
    if (e.price == 0) throw Failure("rent-to-own needs --price");
  }
  // Credits are applied atomically on top (minting may run concurrently).
  const bool keep_counters = existing && existing->model == *model;
  if (!keep_counters) {
    e.balance = o.add_balance;
    e.paid = o.payment;
    store->put_entitlement(e);
  } else {
    store->put_entitlement(e);  // e carries the counters read above
    if (!store->credit_entitlement(user->id, device, o.add_balance, o.payment)) {
      throw Failure("the entitlement vanished");
    }
  }
  auto now = store->entitlement(user->id, device);
  std::cout << o.user << " on " << o.device << ": " << model_name(*model);
  if (*model == Model::kPayPerUse) std::cout << ", balance " << now->balance << " uses";
  if (*model == Model::kRentToOwn) std::cout << ", paid " << now->paid << " of " << now->price;
  std::cout << ", up to " << now->uses_per_token << " uses per token\n";
  return 0;
}

int run_usage(const Common& c, bool as_json) {
  auto store = c.open();
  auto rows = store->usage();
  if (as_json) {
    boost::json::array a;
    for (const auto& r : rows) {
      a.push_back(boost::json::object{{"user", r.user_name},
                                      {"user_id", uuid_to_string(r.user_id)},
                                      {"device_id", uuid_to_string(r.device_id)},
                                      {"model", model_name(r.model)},
                                      {"tokens", r.tokens},
                                      {"uses_minted", r.uses_minted},
                                      {"uses_consumed", r.uses_consumed},
                                      {"balance", r.balance},
                                      {"price", r.price},
                                      {"paid", r.paid}});
    }
    std::cout << boost::json::serialize(boost::json::object{{"usage", a}}) << "\n";
    return 0;
  }
  std::cout << "user\tdevice\tmodel\ttokens\tminted\tconsumed\tbalance\n";
  for (const auto& r : rows) {
    std::cout << r.user_name << "\t" << uuid_to_string(r.device_id) << "\t" << model_name(r.model)
              << "\t" << r.tokens << "\t" << r.uses_minted << "\t" << r.uses_consumed << "\t"
              << (r.model == Model::kPayPerUse ? std::to_string(r.balance) : "-") << "\n";
  }
  return 0;
}

// ---------------------------------------------------------------------------
// bench-mint: the minting rate with durable issuance next to the raw signing
// rate of the same key, measured in one run; then p50/p99 mint latency with
// `clients` concurrent TLS clients on loopback. A scratch database in /tmp, or
// with --db postgresql://... a scratch schema there (dropped afterwards).

// CPU time (user + system, all threads) this process has used, in µs: the
// cost per operation it gives does not depend on what else the machine runs,
// unlike the rates.
double process_cpu_us() {
  rusage u{};
  ::getrusage(RUSAGE_SELF, &u);
  auto us = [](const timeval& t) {
    return static_cast<double>(t.tv_sec) * 1e6 + static_cast<double>(t.tv_usec);
  };
  return us(u.ru_utime) + us(u.ru_stime);
}

double percentile(std::vector<double> v, double p) {
  if (v.empty()) return 0;
  std::sort(v.begin(), v.end());
  const auto i = static_cast<std::size_t>(p * static_cast<double>(v.size() - 1));
  return v[i];
}

int run_bench(bool as_json, double seconds, unsigned clients, const std::string& key_type,
              const std::string& db) {
  using Clock = std::chrono::steady_clock;
  const auto duration = std::chrono::duration<double>(seconds);
  std::string tmpl = (fs::temp_directory_path() / "tollgate-cloud-bench-XXXXXX").string();
  if (!::mkdtemp(tmpl.data())) throw Failure("cannot create a scratch directory");
  const fs::path dir = tmpl;
  struct Cleanup {
    fs::path d;
    ~Cleanup() {
      std::error_code ec;
      fs::remove_all(d, ec);
    }
  } cleanup{dir};

  auto type = crypto::key_type_from_name(key_type);
  if (!type) throw Failure("--key-type: one of ed25519, p256, rsa2048, rsa3072");
  auto cloud = std::move(crypto::PrivateKey::generate(*type)).value();
  auto master = std::move(crypto::PrivateKey::generate(crypto::KeyType::kEd25519)).value();
  auto user_key = std::move(crypto::PrivateKey::generate(crypto::KeyType::kEd25519)).value();
  std::unique_ptr<PgScratchSchema> scratch;
  std::unique_ptr<CloudStore> store_ptr;
  if (db.empty()) {
    store_ptr = std::make_unique<SqliteCloudStore>((dir / "cloud.db").string());
  } else if (db.rfind("postgresql://", 0) == 0 || db.rfind("postgres://", 0) == 0) {
    scratch = std::make_unique<PgScratchSchema>(db);
    store_ptr = std::make_unique<PgCloudStore>(scratch->url(), clients + 4);
  } else {
    throw Failure("bench-mint --db: a postgresql:// URL (the default is a scratch SQLite file)");
  }
  CloudStore& store = *store_ptr;
  const std::string backend = scratch ? "postgresql" : "sqlite";
  const UnixTime now = wall_now();
  v1::CloudKeyAuthorization auth;
  auth.set_id(1);
  auth.set_cloud_public_key(std::string(as_chars(cloud.public_key().spki_der())));
  auth.set_not_before(now - 3600);
  auth.set_not_after(now + 86400);
  store.set_authorization(as_bytes(sign_object(v1::Signed::TYPE_CLOUD_KEY_AUTHORIZATION,
                                               as_bytes(auth.SerializeAsString()), master)
                                       ->SerializeAsString()));
  UserRecord u{crypto::random_bytes(16), "bench", hash_password("bench-password"), false, now};
  store.add_user(u);
  const Bytes device = crypto::random_bytes(16);
  const auto& dpub = user_key.public_key();  // any key will do for the device record
  store.add_device({device, dpub.spki_der(), Bytes(dpub.id().begin(), dpub.id().end()), "", now});
  EntitlementRecord e;
  e.user_id = u.id;
  e.device_id = device;
  e.model = Model::kPayPerUse;
  e.uses_per_token = 1;
  e.balance = 1'000'000'000'000ULL;
  store.put_entitlement(e);
  AuthorityOptions ao;
  ao.mint_requests_per_minute = 1'000'000'000;
  const auto cloud_pem = cloud.pem();
  Authority authority(store, std::move(crypto::PrivateKey::from_pem(*cloud_pem)).value(), wall_now,
                      ao);

  auto call = [&](const std::string& target, const boost::json::object& body,
                  const std::string& session) {
    ApiRequest r{"POST", target, session.empty() ? "" : "Bearer " + session, "application/json",
                 boost::json::serialize(body)};
    auto out = authority.handle(r);
    if (out.status != 200) throw Failure("bench setup: " + target + ": " + out.body);
    return boost::json::parse(out.body).as_object();
  };
  const std::string session =
      std::string(call("/v1/login", {{"user", "bench"}, {"password", "bench-password"}}, "")
                      .at("session")
                      .as_string());
  const auto& der = user_key.public_key().spki_der();
  auto ch = call("/v1/enroll/challenge", {{"public_key", base64_encode(der)}}, session);
  auto challenge = *base64_decode(std::string(ch.at("challenge").as_string()));
  auto sig = *user_key.sign(enrollment_signing_input(challenge, u.id, der));
  call("/v1/enroll", {{"challenge_id", ch.at("challenge_id")}, {"signature", base64_encode(sig)}},
       session);
  const std::string mint_body = boost::json::serialize(
      boost::json::object{{"device_id", uuid_to_string(device)}, {"uses", 1}});

  // 1. Raw signing of a token body, one thread.
  v1::DeviceToken t;
  t.set_token_id(std::string(16, 'x'));
  t.set_device_id(std::string(as_chars(device)));
  t.set_user_id(std::string(as_chars(u.id)));
  t.set_user_public_key(std::string(as_chars(der)));
  t.set_authorized_uses(1);
  t.set_issued_at(now);
  t.set_expires_at(now + 86400);
  t.set_authorization_id(1);
  const std::string body = t.SerializeAsString();
  std::uint64_t signs = 0;
  double cpu0 = process_cpu_us();
  auto t0 = Clock::now();
  while (Clock::now() - t0 < duration) {
    for (int i = 0; i < 16; ++i) {
      if (!sign_object(v1::Signed::TYPE_DEVICE_TOKEN, as_bytes(body), cloud)) {
        throw Failure("sign failed");
      }
    }
    signs += 16;
  }
  const double sign_rate =
      static_cast<double>(signs) / std::chrono::duration<double>(Clock::now() - t0).count();
  const double sign_cpu_us = (process_cpu_us() - cpu0) / static_cast<double>(signs);

  // 2. Minting through the API logic (no TLS), `clients` threads, durable issuance.
  std::atomic<std::uint64_t> mints{0};
  std::atomic<bool> failed{false};
  auto run_threads = [&](auto fn) {
    std::vector<std::thread> ts;
    for (unsigned i = 0; i < clients; ++i) ts.emplace_back(fn);
    for (auto& th : ts) th.join();
  };
  cpu0 = process_cpu_us();
  t0 = Clock::now();
  run_threads([&] {
    ApiRequest r{"POST", "/v1/tokens", "Bearer " + session, "application/json", mint_body};
    while (Clock::now() - t0 < duration) {
      if (authority.handle(r).status != 200) failed = true;
      ++mints;
    }
  });
  const double mint_rate =
      static_cast<double>(mints.load()) / std::chrono::duration<double>(Clock::now() - t0).count();
  const double mint_cpu_us = (process_cpu_us() - cpu0) / static_cast<double>(mints.load());

  // 3. The same over TLS: latency per request at `clients` concurrent connections.
  const DevPki pki = make_dev_pki({"localhost"}, {"127.0.0.1"}, 1);
  ServerOptions so;
  so.port = 0;
  so.cert_chain_pem = pki.server_cert_pem;
  so.private_key_pem = pki.server_key_pem;
  HttpsServer server(authority, so);
  server.start();
  std::mutex lat_mu;
  std::vector<double> latencies;
  t0 = Clock::now();
  run_threads([&] {
    try {
      HttpsClient client({"127.0.0.1", server.port(), "localhost", pki.ca_cert_pem});
      std::vector<double> mine;
      while (Clock::now() - t0 < duration) {
        const auto a = Clock::now();
        if (client.request("POST", "/v1/tokens", mint_body, session).status != 200) failed = true;
        mine.push_back(std::chrono::duration<double, std::milli>(Clock::now() - a).count());
      }
      std::lock_guard lock(lat_mu);
      latencies.insert(latencies.end(), mine.begin(), mine.end());
    } catch (const std::exception&) {
      failed = true;
    }
  });
  const double tls_rate = static_cast<double>(latencies.size()) /
                          std::chrono::duration<double>(Clock::now() - t0).count();
  server.stop();
  if (failed) throw Failure("some mint requests failed during the benchmark");

  const double p50 = percentile(latencies, 0.50), p99 = percentile(latencies, 0.99);
  const std::string alg(crypto::algorithm_name(cloud.algorithm()));
  if (as_json) {
    std::cout << boost::json::serialize(
                     boost::json::object{{"backend", backend},
                                         {"algorithm", alg},
                                         {"clients", clients},
                                         {"raw_sign_per_s", sign_rate},
                                         {"raw_sign_cpu_us", sign_cpu_us},
                                         {"mint_per_s", mint_rate},
                                         {"mint_cpu_us", mint_cpu_us},
                                         {"mint_over_sign", mint_rate / sign_rate},
                                         {"tls_mint_per_s", tls_rate},
                                         {"tls_p50_ms", p50},
                                         {"tls_p99_ms", p99}})
              << "\n";
  } else {
    std::printf("backend %s, cloud key %s, %u clients\n", backend.c_str(), alg.c_str(), clients);
    std::printf("raw sign          %10.0f /s (1 thread)            CPU %5.1f us each\n", sign_rate,
                sign_cpu_us);
    std::printf("mint (durable)    %10.0f /s  = %.2f x raw sign  CPU %5.1f us each\n", mint_rate,
                mint_rate / sign_rate, mint_cpu_us);
    std::printf("mint over TLS     %10.0f /s  p50 %.2f ms  p99 %.2f ms\n", tls_rate, p50, p99);
  }
  return 0;
}
}  // namespace

int main(int argc, char** argv) {
  CLI::App app{
      "tollgate-cloud: the reference Tollgate token authority. Serves the JSON API of\n"
      "docs/CLOUD.md over HTTPS and holds users, devices and entitlements.",
      "tollgate-cloud"};
  app.require_subcommand(1);
  app.footer("Exit status: 0 success; 1 failure; 2 bad arguments.");

  std::function<int()> action;

  InitOptions init;
  auto* s_init = app.add_subcommand("init",
                                    "Create DIR: development CA, server certificate, "
                                    "cloud signing key and database");
  add_common(s_init, init.c);
  s_init->add_option("--cloud-key", init.cloud_key, "Use this cloud private key (PKCS#8 PEM)")
      ->type_name("FILE");
  s_init->add_option("--key-type", init.key_type,
                     "New cloud key type: ed25519|p256|rsa2048|rsa3072");
  s_init->add_option("--dns", init.dns, "Server certificate DNS names (default localhost)");
  s_init->add_option("--ip", init.ips, "Server certificate IP addresses (default 127.0.0.1)");
  s_init->add_option("--days", init.days, "Certificate validity in days");
  s_init->callback([&] { action = [&] { return run_init(init); }; });

  ServeOptions serve;
  auto* s_serve = app.add_subcommand("serve", "Serve the API over HTTPS until SIGINT/SIGTERM");
  add_common(s_serve, serve.c);
  s_serve->add_option("--listen", serve.listen, "ADDRESS:PORT (port 0 picks a free one)");
  s_serve->add_option("--cert", serve.cert, "Certificate chain PEM (default DIR/server.pem)");
  s_serve->add_option("--key", serve.key, "Private key PEM (default DIR/server.key)");
  s_serve->add_option("--threads", serve.threads, "Worker threads")->check(CLI::Range(1, 256));
  s_serve->add_option("--session-ttl", serve.session_ttl, "Session lifetime in seconds")
      ->check(CLI::Range(60, 86400 * 30));
  s_serve->add_option("--mint-rate", serve.mint_rate, "Token requests per user per minute")
      ->check(CLI::Range(1, 1000000));
  s_serve->callback([&] { action = [&] { return run_serve(serve); }; });

  Common auth_c;
  std::string auth_file;
  auto* s_auth = app.add_subcommand(
      "set-authorization", "Install the CloudKeyAuthorization the tokens are minted under");
  add_common(s_auth, auth_c);
  s_auth->add_option("FILE", auth_file, "Serialized Signed CloudKeyAuthorization")->required();
  s_auth->callback([&] { action = [&] { return run_set_authorization(auth_c, auth_file); }; });

  Common user_c;
  std::string user_name, password_file;
  auto* s_user = app.add_subcommand("user", "Manage users");
  s_user->require_subcommand(1);
  auto* s_user_add = s_user->add_subcommand("add",
                                            "Add a user (password from --password-file "
                                            "or the first line of stdin); prints its UUID");
  add_common(s_user_add, user_c);
  s_user_add->add_option("NAME", user_name)->required();
  s_user_add->add_option("--password-file", password_file)->type_name("FILE");
  s_user_add->callback(
      [&] { action = [&] { return run_user_add(user_c, user_name, password_file); }; });

  Common dev_c;
  std::string dev_id, dev_pub, dev_name;
  auto* s_dev = app.add_subcommand("device", "Manage devices");
  s_dev->require_subcommand(1);
  auto* s_dev_add = s_dev->add_subcommand("add", "Register a device and its public key");
  add_common(s_dev_add, dev_c);
  s_dev_add->add_option("--id", dev_id, "Device UUID")->required();
  s_dev_add->add_option("--public-key", dev_pub, "device.pub from provisioning")->required();
  s_dev_add->add_option("--name", dev_name, "Label");
  s_dev_add->callback(
      [&] { action = [&] { return run_device_add(dev_c, dev_id, dev_pub, dev_name); }; });

  EntitleOptions ent;
  auto* s_ent = app.add_subcommand(
      "entitle", "Create or change a user's entitlement to a device (one per pair)");
  add_common(s_ent, ent.c);
  s_ent->add_option("--user", ent.user, "User name")->required();
  s_ent->add_option("--device", ent.device, "Device UUID")->required();
  s_ent->add_option("--model", ent.model, "subscription | pay-per-use | rent-to-own")->required();
  s_ent->add_option("--from", ent.from, "subscription: start (ISO 8601)");
  s_ent->add_option("--until", ent.until, "subscription: end (ISO 8601)");
  s_ent->add_option("--uses-per-token", ent.uses_per_token, "Most uses one token may carry");
  s_ent->add_option("--max-outstanding", ent.max_outstanding, "Cap on unexpired tokens (0: none)");
  s_ent->add_option("--add-balance", ent.add_balance, "pay-per-use: add prepaid uses");
  s_ent->add_option("--price", ent.price, "rent-to-own: the price");
  s_ent->add_option("--payment", ent.payment, "rent-to-own: record a payment");
  s_ent->callback([&] { action = [&] { return run_entitle(ent); }; });

  Common rev_c;
  std::string rev_name;
  auto* s_rev = app.add_subcommand("revoke-user", "Revoke a user: sessions end, no more tokens");
  add_common(s_rev, rev_c);
  s_rev->add_option("NAME", rev_name)->required();
  s_rev->callback([&] {
    action = [&] {
      if (!rev_c.open()->revoke_user(rev_name)) throw Failure("no user '" + rev_name + "'");
      std::cout << "user " << rev_name << " revoked\n";
      return 0;
    };
  });

  Common usage_c;
  bool usage_json = false;
  auto* s_usage = app.add_subcommand("usage", "Billing report: minted vs. receipted uses");
  add_common(s_usage, usage_c);
  s_usage->add_flag("--json", usage_json, "Machine-readable output");
  s_usage->callback([&] { action = [&] { return run_usage(usage_c, usage_json); }; });

  bool bench_json = false;
  double bench_seconds = 2;
  unsigned bench_clients = 32;
  std::string bench_key = "ed25519";
  std::string bench_db;
  auto* s_bench = app.add_subcommand(
      "bench-mint", "Benchmark: durable minting vs. the raw signing rate, and TLS mint latency");
  s_bench->add_flag("--json", bench_json, "Machine-readable output");
  s_bench->add_option("--seconds", bench_seconds, "Duration of each phase")
      ->check(CLI::Range(0.1, 600.0));
  s_bench->add_option("--clients", bench_clients, "Concurrent clients")->check(CLI::Range(1, 512));
  s_bench->add_option("--key-type", bench_key, "Cloud key: ed25519|p256|rsa2048|rsa3072");
  s_bench->add_option("--db", bench_db, "Bench on PostgreSQL (a scratch schema in this database)")
      ->type_name("URL");
  s_bench->callback([&] {
    action = [&] {
      return run_bench(bench_json, bench_seconds, bench_clients, bench_key, bench_db);
    };
  });

  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return app.exit(e) == 0 ? 0 : kExitUsage;
  }
  try {
    return action ? action() : kExitUsage;
  } catch (const Failure& e) {
    std::cerr << "tollgate-cloud: " << e.what() << "\n";
    return kExitUsage;
  } catch (const std::exception& e) {
    std::cerr << "tollgate-cloud: " << e.what() << "\n";
    return kExitFailure;
  }
}
