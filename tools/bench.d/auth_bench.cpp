#include "tools/bench.d/auth_bench.hpp"

#include <openssl/bio.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/rsa.h>
#include <openssl/x509.h>
#include <sqlite3.h>
#include <time.h>
#include <unistd.h>

#include <algorithm>
#include <boost/asio/post.hpp>
#include <boost/asio/thread_pool.hpp>
#include <boost/json.hpp>
#include <condition_variable>
#include <cstdio>
#include <filesystem>
#include <functional>
#include <iomanip>
#include <latch>
#include <memory>
#include <mutex>
#include <optional>
#include <ostream>
#include <sstream>
#include <stdexcept>
#include <thread>

#include "gateway/c_ptr.hpp"
#include "gateway/gateway.hpp"
#include "gateway/group_commit.hpp"
#include "gateway/memory_storage.hpp"
#include "gateway/signed.hpp"
#include "instrument/commands.hpp"
#include "instrument/store.hpp"

namespace tollgate::bench {
namespace {

using SteadyClock = std::chrono::steady_clock;
using Seconds = std::chrono::duration<double>;

constexpr UnixTime kNow = 1'760'000'000;  // fixed device clock: time is not what is measured
constexpr std::int64_t kDay = 24 * 3600;
constexpr double kMemoryTarget = 0.8;
constexpr double kDurableTarget = 0.9;
// A token that cannot run out during a benchmark (authorized_uses is uint32).
constexpr std::uint32_t kTokenUses = 4'000'000'000U;
// Host request ids are random 32-bit numbers; start high so they encode alike.
constexpr std::uint64_t kFirstRequestId = 0x9000'0000ULL;

[[noreturn]] void fail(const std::string& what) {
  throw std::runtime_error(what);
}

template <class T>
T must(Result<T> r, const char* what) {
  if (!r) fail(std::string(what) + ": " + std::string(error_name(r.error())));
  return std::move(*r);
}

void must(Status st, const char* what) {
  if (!st) fail(std::string(what) + ": " + std::string(error_name(st.error())));
}

std::string str(ByteView b) {
  return std::string(as_chars(b));
}

// --- OpenSSL, used directly (the raw side of the comparison) -------------------------------------

template <auto Free>
using Deleter = CFree<Free>;
using EvpPkey = std::unique_ptr<EVP_PKEY, Deleter<EVP_PKEY_free>>;
using EvpMdCtx = std::unique_ptr<EVP_MD_CTX, Deleter<EVP_MD_CTX_free>>;
using Bio = std::unique_ptr<BIO, Deleter<BIO_free_all>>;
using Md = std::unique_ptr<EVP_MD, Deleter<EVP_MD_free>>;

// Verifies pre-signed messages with nothing but OpenSSL: the key is parsed once,
// every verify is the EVP sequence an application writes (context, init,
// padding for RSA-PSS, one-shot EVP_DigestVerify), with the signature in
// OpenSSL's own encoding (DER for ECDSA). With `copy_context`, every verify
// instead starts from a copy of a context set up once (EVP_MD_CTX_copy_ex), the
// cheapest way OpenSSL 3.0 offers (the plain sequence is the fallback if the
// copy does not work).
class RawVerifier {
 public:
  RawVerifier(crypto::KeyType type, const crypto::PrivateKey& key,
              const std::vector<Bytes>& messages, bool copy_context)
      : type_(type), messages_(messages) {
    if (type_ != crypto::KeyType::kEd25519) {
      md_.reset(EVP_MD_fetch(nullptr, "SHA256", nullptr));
      if (!md_) fail("EVP_MD_fetch SHA256");
    }
    const Bytes& der = key.public_key().spki_der();
    const unsigned char* p = der.data();
    pub_.reset(d2i_PUBKEY(nullptr, &p, static_cast<long>(der.size())));
    if (!pub_) fail("d2i_PUBKEY");

    auto pem = must(key.pem(), "private key PEM");
    Bio bio(BIO_new_mem_buf(pem.data(), static_cast<int>(pem.size())));
    if (!bio) fail("BIO_new_mem_buf");
    EvpPkey priv(PEM_read_bio_PrivateKey(bio.get(), nullptr, nullptr, nullptr));
    if (!priv) fail("PEM_read_bio_PrivateKey");
    for (const Bytes& m : messages_) signatures_.push_back(sign(priv.get(), m));
    if (copy_context) {
      EvpMdCtx ready(EVP_MD_CTX_new());
      EvpMdCtx probe(EVP_MD_CTX_new());
      if (ready && probe && init(ready.get()) &&
          EVP_MD_CTX_copy_ex(probe.get(), ready.get()) == 1) {
        template_ = std::move(ready);
      }
    }
  }

  bool verify(std::size_t i) const {
    const Bytes& m = messages_[i % messages_.size()];
    const Bytes& s = signatures_[i % signatures_.size()];
    EvpMdCtx ctx(EVP_MD_CTX_new());
    if (!ctx) return false;
    if (template_) {
      if (EVP_MD_CTX_copy_ex(ctx.get(), template_.get()) != 1) return false;
    } else if (!init(ctx.get())) {
      return false;
    }
    return EVP_DigestVerify(ctx.get(), s.data(), s.size(), m.data(), m.size()) == 1;
  }

 private:
  bool init(EVP_MD_CTX* ctx) const {
    EVP_PKEY_CTX* pctx = nullptr;
    if (EVP_DigestVerifyInit(ctx, &pctx, md_.get(), nullptr, pub_.get()) != 1) return false;
    return !is_rsa() || set_pss(pctx);
  }

  static bool set_pss(EVP_PKEY_CTX* pctx) {
    return EVP_PKEY_CTX_set_rsa_padding(pctx, RSA_PKCS1_PSS_PADDING) > 0 &&
           EVP_PKEY_CTX_set_rsa_mgf1_md_name(pctx, "SHA256", nullptr) > 0 &&
           EVP_PKEY_CTX_set_rsa_pss_saltlen(pctx, 32) > 0;
  }

  Bytes sign(EVP_PKEY* priv, const Bytes& m) const {
    EvpMdCtx ctx(EVP_MD_CTX_new());
    EVP_PKEY_CTX* pctx = nullptr;
    if (!ctx || EVP_DigestSignInit(ctx.get(), &pctx, md_.get(), nullptr, priv) != 1) {
      fail("EVP_DigestSignInit");
    }
    if (is_rsa() && !set_pss(pctx)) fail("RSA-PSS parameters");
    std::size_t len = 0;
    if (EVP_DigestSign(ctx.get(), nullptr, &len, m.data(), m.size()) != 1) fail("EVP_DigestSign");
    Bytes sig(len);
    // Hash-then-sign contexts cannot be fed twice: sign again on a fresh one.
    EvpMdCtx ctx2(EVP_MD_CTX_new());
    pctx = nullptr;
    if (!ctx2 || EVP_DigestSignInit(ctx2.get(), &pctx, md_.get(), nullptr, priv) != 1) {
      fail("EVP_DigestSignInit");
    }
    if (is_rsa() && !set_pss(pctx)) fail("RSA-PSS parameters");
    if (EVP_DigestSign(ctx2.get(), sig.data(), &len, m.data(), m.size()) != 1) {
      fail("EVP_DigestSign");
    }
    sig.resize(len);
    return sig;
  }

  bool is_rsa() const {
    return type_ == crypto::KeyType::kRsa2048 || type_ == crypto::KeyType::kRsa3072;
  }

  crypto::KeyType type_;
  Md md_;
  EvpPkey pub_;
  EvpMdCtx template_;
  std::vector<Bytes> messages_;
  std::vector<Bytes> signatures_;
};

// --- SQLite, used directly (the raw side of the durable comparison)
// -------------------------------

using Sqlite = std::unique_ptr<sqlite3, Deleter<sqlite3_close_v2>>;
using Stmt = std::unique_ptr<sqlite3_stmt, Deleter<sqlite3_finalize>>;

// The simplest durable commit SQLite offers under the instrument's pragmas: one
// small row INSERTed per BEGIN IMMEDIATE ... COMMIT, statements prepared once.
class BareCommitLoop {
 public:
  explicit BareCommitLoop(const std::string& path) {
    sqlite3* raw = nullptr;
    const int rc =
        sqlite3_open_v2(path.c_str(), &raw, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE, nullptr);
    db_.reset(raw);
    if (rc != SQLITE_OK) fail("sqlite3_open_v2 " + path);
    exec("PRAGMA journal_mode=WAL");
    exec("PRAGMA synchronous=FULL");
    exec("CREATE TABLE IF NOT EXISTS t (id INTEGER PRIMARY KEY, v BLOB NOT NULL)");
    begin_ = prepare("BEGIN IMMEDIATE");
    insert_ = prepare("INSERT INTO t (v) VALUES (?1)");
    commit_ = prepare("COMMIT");
  }

  void commit_one(std::uint64_t i) {
    std::array<std::uint8_t, 32> row{};
    for (std::size_t k = 0; k < 8; ++k) row[k] = static_cast<std::uint8_t>(i >> (8 * k));
    step(begin_.get());
    if (sqlite3_bind_blob(insert_.get(), 1, row.data(), static_cast<int>(row.size()),
                          SQLITE_STATIC) != SQLITE_OK) {
      fail("sqlite3_bind_blob");
    }
    step(insert_.get());
    step(commit_.get());
  }

 private:
  void exec(const char* sql) {
    if (sqlite3_exec(db_.get(), sql, nullptr, nullptr, nullptr) != SQLITE_OK) {
      fail(std::string(sql) + ": " + sqlite3_errmsg(db_.get()));
    }
  }
  Stmt prepare(const char* sql) {
    sqlite3_stmt* s = nullptr;
    if (sqlite3_prepare_v3(db_.get(), sql, -1, SQLITE_PREPARE_PERSISTENT, &s, nullptr) !=
        SQLITE_OK) {
      sqlite3_finalize(s);
      fail(std::string("prepare ") + sql + ": " + sqlite3_errmsg(db_.get()));
    }
    return Stmt(s);
  }
  void step(sqlite3_stmt* s) {
    const int rc = sqlite3_step(s);
    sqlite3_reset(s);
    if (rc != SQLITE_DONE) fail(std::string("sqlite3_step: ") + sqlite3_errmsg(db_.get()));
  }

  Sqlite db_;
  Stmt begin_, insert_, commit_;
};

// --- The device side (ours)
// ------------------------------------------------------------------------

Bytes uuid(std::uint8_t tag) {
  Bytes u(kUuidSize, 0);
  u[0] = 0x7B;
  u[15] = tag;
  return u;
}

Bytes nonce_bytes(std::uint64_t v) {
  Bytes n(kNonceSize, 0);
  for (std::size_t k = 0; k < 8; ++k) {
    n[kNonceSize - 1 - k] = static_cast<std::uint8_t>(v >> (8 * k));
  }
  return n;
}

template <class Message>
Bytes sign_message(ObjectType type, const Message& body, const crypto::PrivateKey& key) {
  std::string raw;
  if (!body.SerializeToString(&raw)) fail("serialize");
  auto s = must(sign_object(type, as_bytes(raw), key), "sign_object");
  std::string out;
  if (!s.SerializeToString(&out)) fail("serialize");
  return Bytes(out.begin(), out.end());
}

// The keys and signed objects of one algorithm profile: master, cloud and user
// keys all of that algorithm, as a deployment using it would have them.
struct Profile {
  crypto::KeyType type;
  crypto::PrivateKey master;
  crypto::PrivateKey cloud;
  crypto::PrivateKey user;
  Bytes device = uuid(0xD1);
  Bytes authorization;
  Bytes token;

  explicit Profile(crypto::KeyType t)
      : type(t),
        master(must(crypto::PrivateKey::generate(t), "keygen")),
        cloud(must(crypto::PrivateKey::generate(t), "keygen")),
        user(must(crypto::PrivateKey::generate(t), "keygen")) {
    v1::CloudKeyAuthorization a;
    a.set_id(1);
    a.set_cloud_public_key(str(cloud.public_key().spki_der()));
    a.set_not_before(kNow - kDay);
    a.set_not_after(kNow + 365 * kDay);
    authorization = sign_message(v1::Signed::TYPE_CLOUD_KEY_AUTHORIZATION, a, master);

    v1::DeviceToken tok;
    tok.set_token_id(str(uuid(0x01)));
    tok.set_issued_at(kNow - 60);
    tok.set_device_id(str(device));
    tok.set_authorized_uses(kTokenUses);
    tok.set_user_id(str(uuid(0xEE)));
    tok.set_user_public_key(str(user.public_key().spki_der()));
    tok.set_expires_at(kNow + 30 * kDay);
    tok.set_authorization_id(1);
    token = sign_message(v1::Signed::TYPE_DEVICE_TOKEN, tok, cloud);
  }

  // The body of the i-th `run-assay` command (what a host sends most).
  v1::CommandRequest request_body(ByteView nonce, std::uint64_t request_id) const {
    v1::CommandRequest r;
    r.set_device_id(str(device));
    r.set_nonce(str(nonce));
    r.set_request_id(request_id);
    r.set_command("run-assay");
    char sample[16];
    std::snprintf(sample, sizeof sample, "S-%06llu",
                  static_cast<unsigned long long>(request_id % 1'000'000));
    (*r.mutable_arguments())["protocol"] = "elisa";
    (*r.mutable_arguments())["sample"] = sample;
    return r;
  }

  // Messages of exactly a signed command's signing input (label + body), for the
  // raw verifier.
  std::vector<Bytes> signing_inputs(std::size_t n) const {
    std::vector<Bytes> out;
    for (std::size_t i = 0; i < n; ++i) {
      std::string raw;
      if (!request_body(nonce_bytes(i + 1), kFirstRequestId + i).SerializeToString(&raw)) {
        fail("serialize");
      }
      out.push_back(signing_input(v1::Signed::TYPE_COMMAND_REQUEST, as_bytes(raw)));
    }
    return out;
  }
};

// Which clock a comparison is timed with. In memory the work is pure CPU, so the
// thread's CPU time is used: time slices lost to other jobs on a shared machine
// then count for neither side. Durable work waits for the disk, so wall time.
enum class Timebase { kThreadCpu, kWall };

double seconds_now(Timebase tb) {
  if (tb == Timebase::kWall) {
    return Seconds(SteadyClock::now().time_since_epoch()).count();
  }
  timespec ts{};
  if (clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts) != 0) fail("clock_gettime");
  return static_cast<double>(ts.tv_sec) + static_cast<double>(ts.tv_nsec) * 1e-9;
}

// One device in steady state: a gateway over `storage` with the profile's
// authorization and token installed. Its nonces come from a counter so the
// host side can sign requests ahead of time; each decision is checked to hand
// out exactly the nonce a later pre-signed request carries.
//
// group > 1: the instrument's group commit as its Server runs it with `group`
// busy hosts on as many links (instrument/server.hpp): the signatures of the
// next group are verified on verifier threads (one per core;
// VerifiedSignatures) while the requests of this group are decided (charge:
// staged in memory) and the previous group is written by a writer thread
// (GroupCommitStorage seal / write / finish: one transaction, one fsync); when
// that write completes, the previous group's responses are recorded and this
// group is sealed and handed to the writer.
// Every op waits for nothing it need not; each batch ends with its last group
// written (so every decision counted is durable). There are `group` nonces in
// flight; request i carries the nonce decision i - group handed out (the
// counter makes them consecutive).
class Device {
 public:
  Device(const Profile& p, Storage& storage, std::size_t group = 1)
      : p_(p),
        group_size_(std::max<std::size_t>(group, 1)),
        counter_(std::make_shared<std::uint64_t>(1)) {
    auto counter = counter_;
    RandomSource random = [counter](std::size_t n) {
      Bytes b = nonce_bytes((*counter)++);
      b.resize(n);
      return b;
    };
    std::vector<crypto::PublicKey> masters;
    masters.push_back(p.master.public_key().clone());
    Storage* target = &storage;
    if (group_size_ > 1) {
      grouped_.emplace(storage);
      target = &*grouped_;
    }
    DevicePolicy policy;
    policy.max_nonces_in_flight = std::max(policy.max_nonces_in_flight, 2 * group_size_);
    policy.idempotency_cache_size = std::max(policy.idempotency_cache_size, 2 * group_size_);
    gw_.emplace(must(Gateway::open(p.device, std::move(masters), policy, *target, random),
                     "Gateway::open"));
    must(gw_->install_authorization(p.authorization, kNow), "install_authorization");
    must(gw_->offer_token(p.token, kNow), "offer_token");
    next_nonce_ = value_of(gw_->issue_nonce(kNow));
    for (std::size_t i = 1; i < group_size_; ++i) (void)gw_->issue_nonce(kNow);
    if (grouped_) {
      must(gw_->flush(kNow), "flush");
      must(grouped_->sync(), "sync");
      writer_ = std::thread([this] { write_loop(); });
      gw_->use_verified_signatures(&verified_);
    }
    response_.assign(80 + p.user.public_key().bits() / 8, 0x5A);
  }

  ~Device() {
    if (!writer_.joinable()) return;
    {
      std::lock_guard lock(mu_);
      quit_ = true;
    }
    cv_.notify_all();
    writer_.join();
  }
  Device(const Device&) = delete;
  Device& operator=(const Device&) = delete;

  // Requests decided per op: 1, or the group size.
  std::size_t per_op() const { return group_size_; }

  // Signs the requests of the next n ops (untimed); decide() then runs them in order.
  std::size_t prepare(std::size_t n) {
    batch_.clear();
    for (std::size_t i = 0; i < n * group_size_; ++i) {
      batch_.push_back(sign_message(v1::Signed::TYPE_COMMAND_REQUEST,
                                    p_.request_body(nonce_bytes(next_nonce_ + i), request_id_ + i),
                                    p_.user));
    }
    return n;
  }

  // Op i: decides the i-th prepared request (or group of them) as the instrument
  // does in steady state: authorize (one verify; one commit, or one sync per
  // group), then record the response sent.
  void decide(std::size_t i) {
    if (!grouped_) {
      Decision d = authorize(batch_[i]);
      if (!gw_->complete_request(d.key, response_)) fail("complete_request");
      return;
    }
    const std::size_t ops = batch_.size() / group_size_;
    if (i == 0) verify_ahead(0);
    verifying_->wait();
    // The verifier threads check the next group while this one is decided and
    // the previous one written, as the server's are while its loop is busy.
    if (i + 1 < ops) verify_ahead(i + 1);
    std::vector<Decision> group;
    for (std::size_t k = 0; k < group_size_; ++k) {
      group.push_back(authorize(batch_[i * group_size_ + k]));
    }
    drain();  // the previous group's write, then its responses
    writing_ = std::move(group);
    start_write();
    if (i + 1 == ops) {
      drain();
      verifying_.reset();
    }
  }

 private:
  static std::uint64_t value_of(const Bytes& nonce) {
    std::uint64_t v = 0;
    for (std::size_t k = kNonceSize - 8; k < kNonceSize; ++k) v = (v << 8) | nonce[k];
    return v;
  }

  // Verifies the signatures of op i's requests on the verifier threads
  // (VerifiedSignatures: the gateway then skips them).
  void verify_ahead(std::size_t i) {
    if (verifying_) verifying_->wait();
    verifying_ = std::make_unique<std::latch>(static_cast<std::ptrdiff_t>(group_size_));
    for (std::size_t k = 0; k < group_size_; ++k) {
      auto env = parse_signed(batch_[i * group_size_ + k]);
      if (!env) fail("parse_signed");
      crypto::KeyId signer{};
      std::copy(env->signer_key_id().begin(), env->signer_key_id().end(), signer.begin());
      auto key = gw_->user_key(signer);
      if (!key) fail("no user key");
      boost::asio::post(verifiers_, [this, env = std::move(*env), key = std::move(*key),
                                     latch = verifying_.get()] {
        if (!verified_.verify(env, v1::Signed::TYPE_COMMAND_REQUEST, key,
                              gw_->policy().user_algorithms)) {
          std::abort();  // the bench signs only valid requests
        }
        latch->count_down();
      });
    }
  }

  // Hands what is staged to the writer thread.
  void start_write() {
    auto sealed = grouped_->seal();
    if (!sealed) fail("nothing staged");
    {
      std::lock_guard lock(mu_);
      job_ = std::move(*sealed);
      written_.reset();
    }
    cv_.notify_all();
  }
  // Waits for the write in flight, if any, and records its group's responses.
  void drain() {
    std::optional<GroupCommitStorage::Sealed> job;
    Status st;
    {
      std::unique_lock lock(mu_);
      if (!job_) return;
      cv_.wait(lock, [&] { return written_.has_value(); });
      job = std::move(job_);
      job_.reset();
      st = *written_;
    }
    grouped_->finish(*job, st);
    must(st, "group write");
    for (const Decision& d : writing_) {
      if (!gw_->complete_request(d.key, response_)) fail("complete_request");
    }
    writing_.clear();
  }
  void write_loop() {
    std::unique_lock lock(mu_);
    for (;;) {
      cv_.wait(lock, [&] { return quit_ || (job_ && !written_); });
      if (quit_) return;
      const GroupCommitStorage::Sealed& job = *job_;
      lock.unlock();
      Status st = grouped_->write(job);
      lock.lock();
      written_ = st;
      cv_.notify_all();
    }
  }

  Decision authorize(const Bytes& request) {
    auto d = gw_->authorize_command(request, kNow, rules_);
    if (!d) fail("authorize_command: " + std::string(error_name(d.error())));
    if (d->kind != Decision::Kind::kExecute) fail("authorize_command did not execute");
    // The nonce handed out is the one the request `group` places later carries.
    if (value_of(d->next_nonce) != next_nonce_ + group_size_) fail("unexpected next nonce");
    ++next_nonce_;
    ++request_id_;
    return std::move(*d);
  }

  const Profile& p_;
  std::size_t group_size_;
  std::shared_ptr<std::uint64_t> counter_;
  instrument::CommandRegistry registry_ = instrument::simulated_instrument_commands();
  const CommandRules& rules_ = registry_.rules();
  std::optional<GroupCommitStorage> grouped_;
  std::optional<Gateway> gw_;
  std::uint64_t next_nonce_ = 0;  // carried by the next request decided
  Bytes response_;
  std::uint64_t request_id_ = kFirstRequestId;
  std::vector<Bytes> batch_;
  // Group commit: the group being written and the writer thread's hand-off.
  std::vector<Decision> writing_;
  std::mutex mu_;
  std::condition_variable cv_;
  std::optional<GroupCommitStorage::Sealed> job_;
  std::optional<Status> written_;
  bool quit_ = false;
  VerifiedSignatures verified_;
  boost::asio::thread_pool verifiers_{std::max(1u, std::thread::hardware_concurrency())};
  std::unique_ptr<std::latch> verifying_;
  std::thread writer_;
};

// --- Timing
// ----------------------------------------------------------------------------------------

// One side of a comparison: `prepare(n)` runs untimed before each batch and
// returns how many ops the batch holds; `op(i)` is the timed work.
struct Side {
  Side(std::function<std::size_t(std::size_t)> prepare_ops, std::function<void(std::size_t)> one_op)
      : prepare(std::move(prepare_ops)), op(std::move(one_op)) {}

  std::function<std::size_t(std::size_t)> prepare;
  std::function<void(std::size_t)> op;
  bool per_op = false;     // also time every op on its own (durable: a few ms each)
  std::size_t weight = 1;  // decisions per op (a group of them, for the group commit)
  double spent = 0;
  std::uint64_t ops = 0;
  std::vector<double> op_seconds;

  void batch(std::size_t n, Timebase tb) {
    n = prepare(n);
    const double t0 = seconds_now(tb);
    double last = t0;
    for (std::size_t i = 0; i < n; ++i) {
      op(i);
      if (per_op) {
        const double now = seconds_now(tb);
        op_seconds.push_back((now - last) / static_cast<double>(weight));
        last = now;
      }
    }
    spent += seconds_now(tb) - t0;
    ops += n * weight;
  }
  double rate() const { return spent > 0 ? static_cast<double>(ops) / spent : 0; }
};

// Runs the sides in alternating batches until each has `budget` of timed work,
// so all see the same machine: whatever load comes and goes during the round
// falls on each. `rotate` shifts which side goes first. Returns ops/s per side
// and, for sides timed per op, the median op time.
struct Rates {
  std::vector<double> per_s;
  std::vector<double> median_op_s;
};
double median(std::vector<double> v);
Rates compare(std::vector<Side> sides, std::chrono::milliseconds budget, std::size_t batch,
              Timebase tb, std::size_t rotate) {
  const double want = Seconds(budget).count();
  for (bool more = true; more;) {
    more = false;
    for (std::size_t k = 0; k < sides.size(); ++k) {
      Side& side = sides[(k + rotate) % sides.size()];
      if (side.spent < want) side.batch(batch, tb);
      more = more || side.spent < want;
    }
  }
  Rates rates;
  for (const Side& side : sides) {
    rates.per_s.push_back(side.rate());
    rates.median_op_s.push_back(median(side.op_seconds));
  }
  return rates;
}

double median(std::vector<double> v) {
  if (v.empty()) return 0;
  std::sort(v.begin(), v.end());
  const std::size_t m = v.size() / 2;
  return v.size() % 2 ? v[m] : (v[m - 1] + v[m]) / 2;
}

struct Row {
  std::string kind;  // "memory" | "durable"
  crypto::KeyType alg;
  double target;
  std::size_t hosts = 1;  // durable: requests decided per commit (the group commit's group)
  std::vector<double> raw, ours, ratio;
  std::vector<double> best, best_ratio;  // memory only: raw with a copied context
  std::vector<double> p50_ratio;         // durable only: raw median op time / ours
  // Durable only, when the memory comparison ran too: the ratio a decision
  // could reach if its commit cost no more than the bare one, i.e. only its CPU
  // work (the in-memory decision time) added to the bare commit time.
  double ceiling = 0;
};

std::string alg_label(crypto::KeyType t) {
  switch (t) {
    case crypto::KeyType::kEd25519:
      return "Ed25519";
    case crypto::KeyType::kP256:
      return "P-256";
    case crypto::KeyType::kRsa2048:
      return "RSA-2048";
    case crypto::KeyType::kRsa3072:
      return "RSA-3072";
  }
  return "?";
}

std::string fixed(double v, int digits) {
  std::ostringstream o;
  o << std::fixed << std::setprecision(digits) << v;
  return o.str();
}

void print_table(const std::vector<Row>& rows, const AuthOptions& o, const std::string& db_dir,
                 std::ostream& out) {
  out << "Authorization vs its physical limits: " << o.rounds << " rounds; per side per round "
      << o.memory_round.count() << " ms in memory, " << o.durable_round.count()
      << " ms durable; medians (ratio: median of per-round ratios)\n";
  if (o.durable) out << "SQLite files in " << db_dir << "\n";
  out << "  memory:  raw = EVP_DigestVerify, key parsed once, context set up per call;"
         " ours = Gateway + MemoryStorage\n"
      << "           raw-copy = the same from a copied, prepared context (ratio* = ours /"
         " raw-copy); timed on thread CPU time\n"
      << "  durable: raw = bare SQLite INSERT+COMMIT loop (WAL, synchronous=FULL); ours = Gateway"
         " + SqliteStore; wall time\n"
      << "           p50-ratio = median bare commit time / median decision time; ceiling ="
         " the best ratio\n"
      << "           a decision can reach on this disk: bare commit time / (that + in-memory"
         " decision time)\n"
      << "           hosts = requests decided per commit: 1 = one host, each decision its own"
         " fsync'd commit;\n"
      << "           N = N hosts on N links, their requests decided back to back and made"
         " durable by ONE commit\n"
      << "           (group commit) before any of them executes\n\n";
  out << std::left << std::setw(9) << "kind" << std::setw(10) << "alg" << std::right << std::setw(6)
      << "hosts" << std::setw(11) << "raw/s" << std::setw(11) << "ours/s" << std::setw(8) << "ratio"
      << std::setw(8) << "target" << std::setw(5) << "met" << std::setw(15) << "ratio range"
      << std::setw(12) << "raw-copy/s" << std::setw(8) << "ratio*" << std::setw(11) << "p50-ratio"
      << std::setw(10) << "ceiling"
      << "\n";
  for (const Row& r : rows) {
    const double ratio = median(r.ratio);
    const auto [lo, hi] = std::minmax_element(r.ratio.begin(), r.ratio.end());
    out << std::left << std::setw(9) << r.kind << std::setw(10) << alg_label(r.alg) << std::right
        << std::setw(6) << (r.kind == "memory" ? std::string("-") : std::to_string(r.hosts))
        << std::setw(11) << fixed(median(r.raw), 0) << std::setw(11) << fixed(median(r.ours), 0)
        << std::setw(8) << fixed(ratio, 3) << std::setw(8) << (">=" + fixed(r.target, 1))
        << std::setw(5) << (ratio >= r.target ? "yes" : "NO") << std::setw(15)
        << (fixed(*lo, 3) + ".." + fixed(*hi, 3));
    if (!r.best.empty()) {
      out << std::setw(12) << fixed(median(r.best), 0) << std::setw(8)
          << fixed(median(r.best_ratio), 3);
    }
    if (!r.p50_ratio.empty()) {
      out << std::setw(12) << "-" << std::setw(8) << "-" << std::setw(11)
          << fixed(median(r.p50_ratio), 3) << std::setw(10)
          << (r.ceiling > 0 ? fixed(r.ceiling, 3) : std::string("-"));
    }
    out << "\n";
  }
}

void print_json(const std::vector<Row>& rows, const AuthOptions& o, std::ostream& out) {
  for (const Row& r : rows) {
    const double ratio = median(r.ratio);
    boost::json::object j;
    j["bench"] = "auth";
    j["kind"] = r.kind;
    if (r.kind == "durable") j["hosts"] = r.hosts;
    j["alg"] = std::string(crypto::key_type_name(r.alg));
    j["raw_per_s"] = median(r.raw);
    j["ours_per_s"] = median(r.ours);
    j["ratio"] = ratio;
    j["target"] = r.target;
    j["met"] = ratio >= r.target;
    j["rounds"] = o.rounds;
    j["round_ms"] = r.kind == "memory" ? o.memory_round.count() : o.durable_round.count();
    auto arr = [](const std::vector<double>& v) {
      boost::json::array a;
      for (double x : v) a.push_back(x);
      return a;
    };
    j["raw_rounds"] = arr(r.raw);
    j["ours_rounds"] = arr(r.ours);
    j["ratio_rounds"] = arr(r.ratio);
    if (!r.p50_ratio.empty()) j["p50_ratio"] = median(r.p50_ratio);
    if (r.ceiling > 0) j["ceiling"] = r.ceiling;
    if (!r.best.empty()) {
      j["raw_copy_per_s"] = median(r.best);
      j["ratio_vs_raw_copy"] = median(r.best_ratio);
    }
    out << boost::json::serialize(j) << "\n";
  }
}

// Runs `commit` until the database's WAL file has stopped growing for a while,
// i.e. SQLite checkpointed and now rewrites the WAL from its start (or a cap
// is reached).
void warm_until_wal_reused(const std::string& db_path, const std::function<void()>& commit) {
  constexpr int kSteadyCommits = 24;
  constexpr int kMaxCommits = 5000;
  const std::filesystem::path wal = db_path + "-wal";
  std::uintmax_t last = 0;
  int steady = 0;
  for (int i = 0; i < kMaxCommits && steady < kSteadyCommits; ++i) {
    commit();
    std::error_code ec;
    const std::uintmax_t size = std::filesystem::file_size(wal, ec);
    steady = !ec && size == last && size > 0 ? steady + 1 : 0;
    last = ec ? 0 : size;
  }
}

// Removes the benchmark's scratch directory however the run ends.
struct ScratchDir {
  std::filesystem::path path;
  ~ScratchDir() {
    std::error_code ec;
    if (!path.empty()) std::filesystem::remove_all(path, ec);
  }
};

}  // namespace

void run_auth_bench(const AuthOptions& o, std::ostream& out, std::ostream& progress) {
  if (o.rounds < 1) fail("--rounds must be at least 1");
  const std::filesystem::path base =
      o.db_dir.empty() ? std::filesystem::temp_directory_path() : std::filesystem::path(o.db_dir);
  ScratchDir scratch;
  if (o.durable) {
    scratch.path = base / ("tollgate-bench-auth." + std::to_string(::getpid()));
    std::filesystem::create_directories(scratch.path);
  }

  struct Setup {
    std::unique_ptr<Profile> profile;
    std::unique_ptr<RawVerifier> raw;
    std::unique_ptr<RawVerifier> raw_copied;
    std::unique_ptr<MemoryStorage> mem_storage;
    std::unique_ptr<Device> mem;
    std::unique_ptr<instrument::SqliteStore> store;
    std::string store_path;
    std::unique_ptr<Device> durable;
    std::unique_ptr<instrument::SqliteStore> group_store;
    std::string group_store_path;
    std::unique_ptr<Device> grouped;
  };
  const bool grouped = o.durable && o.hosts > 1;
  // One bare loop serves every algorithm: it does not depend on one.
  std::unique_ptr<BareCommitLoop> bare;
  std::uint64_t bare_i = 0;
  const std::string bare_path = (scratch.path / "bare.db").string();
  if (o.durable) bare = std::make_unique<BareCommitLoop>(bare_path);
  std::vector<Setup> setups;
  for (crypto::KeyType t : o.algs) {
    progress << "tollgate-bench auth: setting up " << alg_label(t) << "\n";
    Setup s;
    s.profile = std::make_unique<Profile>(t);
    if (o.memory) {
      const auto inputs = s.profile->signing_inputs(64);
      s.raw = std::make_unique<RawVerifier>(t, s.profile->user, inputs, false);
      s.raw_copied = std::make_unique<RawVerifier>(t, s.profile->user, inputs, true);
      s.mem_storage = std::make_unique<MemoryStorage>();
      s.mem = std::make_unique<Device>(*s.profile, *s.mem_storage);
    }
    if (o.durable) {
      s.store_path =
          (scratch.path / ("state-" + std::string(crypto::key_type_name(t)) + ".db")).string();
      std::string why;
      auto store =
          instrument::SqliteStore::open(s.store_path, instrument::SqliteStore::Options{}, &why);
      if (!store) fail("SqliteStore::open: " + why);
      s.store = std::move(*store);
      s.durable = std::make_unique<Device>(*s.profile, *s.store);
      if (grouped) {
        s.group_store_path =
            (scratch.path / ("group-" + std::string(crypto::key_type_name(t)) + ".db")).string();
        auto gstore = instrument::SqliteStore::open(s.group_store_path,
                                                    instrument::SqliteStore::Options{}, &why);
        if (!gstore) fail("SqliteStore::open: " + why);
        s.group_store = std::move(*gstore);
        s.grouped = std::make_unique<Device>(*s.profile, *s.group_store, o.hosts);
      }
    }
    setups.push_back(std::move(s));
  }

  std::vector<Row> rows;
  for (std::size_t a = 0; a < setups.size(); ++a) {
    if (o.memory)
      rows.push_back(Row{"memory", o.algs[a], kMemoryTarget, 1, {}, {}, {}, {}, {}, {}});
  }
  for (std::size_t a = 0; a < setups.size(); ++a) {
    if (o.durable)
      rows.push_back(Row{"durable", o.algs[a], kDurableTarget, 1, {}, {}, {}, {}, {}, {}});
  }
  for (std::size_t a = 0; a < setups.size(); ++a) {
    if (grouped)
      rows.push_back(Row{"durable", o.algs[a], kDurableTarget, o.hosts, {}, {}, {}, {}, {}, {}});
  }

  // Batches short enough that the sides alternate many times a round, long
  // enough that the untimed signing between them does not dominate the caches.
  constexpr std::size_t kMemoryBatch = 64;
  constexpr std::size_t kDurableBatch = 4;
  // Group commit: groups per batch. Each batch ends by waiting for its last
  // write, which a running server never does; longer batches make that rarer.
  constexpr std::size_t kGroupedBatch = 32;
  const auto no_prepare = [](std::size_t n) { return n; };
  auto raw_side = [&](const RawVerifier& v) {
    return Side{no_prepare, [&v](std::size_t i) {
                  if (!v.verify(i)) fail("raw verify failed");
                }};
  };
  auto memory_sides = [&](Setup& s) {
    return std::vector<Side>{raw_side(*s.raw),
                             Side{[&s](std::size_t n) { return s.mem->prepare(n); },
                                  [&s](std::size_t i) { s.mem->decide(i); }},
                             raw_side(*s.raw_copied)};
  };
  auto durable_sides = [&](Setup& s) {
    std::vector<Side> sides{Side{no_prepare, [&](std::size_t) { bare->commit_one(bare_i++); }},
                            Side{[&s](std::size_t n) { return s.durable->prepare(n); },
                                 [&s](std::size_t i) { s.durable->decide(i); }}};
    for (Side& side : sides) side.per_op = true;
    return sides;
  };
  auto grouped_sides = [&](Setup& s) {
    std::vector<Side> sides{Side{no_prepare, [&](std::size_t) { bare->commit_one(bare_i++); }},
                            Side{[&s](std::size_t n) { return s.grouped->prepare(n); },
                                 [&s](std::size_t i) { s.grouped->decide(i); }}};
    for (Side& side : sides) side.per_op = true;
    // One op of ours decides a whole group; the bare side runs as many commits
    // per batch as ours decides requests.
    sides[1].weight = s.grouped->per_op();
    return sides;
  };

  // A short untimed pass first, so caches and allocators are warm. The durable
  // loops also run until their WAL has wrapped once: before that every commit
  // grows the WAL file, and an fsync that must also record a new file size
  // costs more than the steady state's, which overwrites the WAL in place.
  if (o.durable) {
    progress << "tollgate-bench auth: warming up the SQLite files\n";
    if (o.warm_wal) warm_until_wal_reused(bare_path, [&] { bare->commit_one(bare_i++); });
  }
  for (Setup& s : setups) {
    if (o.memory) {
      (void)compare(memory_sides(s), o.memory_round / 5, kMemoryBatch, Timebase::kThreadCpu, 0);
    }
    if (o.durable) {
      if (o.warm_wal)
        warm_until_wal_reused(s.store_path, [&] {
          s.durable->prepare(1);
          s.durable->decide(0);
        });
      (void)compare(durable_sides(s), o.durable_round / 5, kDurableBatch, Timebase::kWall, 0);
    }
    if (grouped) {
      if (o.warm_wal)
        warm_until_wal_reused(s.group_store_path, [&] {
          s.grouped->prepare(1);
          s.grouped->decide(0);
        });
      (void)compare(grouped_sides(s), o.durable_round / 5, kGroupedBatch, Timebase::kWall, 0);
    }
  }

  for (int round = 0; round < o.rounds; ++round) {
    progress << "tollgate-bench auth: round " << (round + 1) << "/" << o.rounds << "\n";
    const auto rotate = static_cast<std::size_t>(round);
    std::size_t row = 0;
    if (o.memory) {
      for (Setup& s : setups) {
        const auto r =
            compare(memory_sides(s), o.memory_round, kMemoryBatch, Timebase::kThreadCpu, rotate)
                .per_s;
        Row& out_row = rows[row++];
        out_row.raw.push_back(r[0]);
        out_row.ours.push_back(r[1]);
        out_row.ratio.push_back(r[1] / r[0]);
        out_row.best.push_back(r[2]);
        out_row.best_ratio.push_back(r[1] / r[2]);
      }
    }
    auto record_durable = [&](const Rates& r) {
      Row& out_row = rows[row++];
      out_row.raw.push_back(r.per_s[0]);
      out_row.ours.push_back(r.per_s[1]);
      out_row.ratio.push_back(r.per_s[1] / r.per_s[0]);
      out_row.p50_ratio.push_back(r.median_op_s[0] / r.median_op_s[1]);
    };
    if (o.durable) {
      for (Setup& s : setups) {
        record_durable(
            compare(durable_sides(s), o.durable_round, kDurableBatch, Timebase::kWall, rotate));
      }
    }
    if (grouped) {
      for (Setup& s : setups) {
        record_durable(
            compare(grouped_sides(s), o.durable_round, kGroupedBatch, Timebase::kWall, rotate));
      }
    }
  }

  for (Row& d : rows) {
    if (d.kind != "durable" || d.hosts != 1) continue;
    for (const Row& m : rows) {
      if (m.kind == "memory" && m.alg == d.alg) {
        const double commit_s = 1 / median(d.raw);
        const double decide_s = 1 / median(m.ours);
        d.ceiling = commit_s / (commit_s + decide_s);
      }
    }
  }

  if (o.json) {
    print_json(rows, o, out);
  } else {
    print_table(rows, o, scratch.path.string(), out);
  }
}

}  // namespace tollgate::bench
