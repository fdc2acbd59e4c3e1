// Test rig for attacks through a real link: the key ceremony in-process, the
// real programs as child processes (`tollgate-instrument provision`,
// `tollgate-bus hub`, `tollgate-instrument run`), a device clock the test
// writes (`--clock file:PATH`), and a message link for the test's own peer.
//
// Everything the rig starts dies with it: children get SIGTERM (then SIGKILL)
// in the destructor, and PR_SET_PDEATHSIG kills them should the test process
// itself die; the temporary folder is removed. Binaries come from
// $TOLLGATE_BIN_DIR. Waits are for lines ("ready", "hub: listening") with a
// bound and a clear failure message, never sleeps.
#pragma once

#include <doctest/doctest.h>
#include <fcntl.h>
#include <poll.h>
#include <pty.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <boost/asio/co_spawn.hpp>
#include <boost/asio/io_context.hpp>
#include <chrono>
#include <condition_variable>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <memory>
#include <mutex>
#include <optional>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "gateway/crypto.hpp"
#include "gateway/signed.hpp"
#include "instrument/store.hpp"
#include "tests/gateway/testkit.hpp"
#include "tests/transport/it_hub_support.hpp"
#include "transport/links/endpoint.hpp"
#include "transport/links/serial_link.hpp"

namespace tollgate::attack {

namespace fs = std::filesystem;
using namespace std::chrono_literals;
using testkit::kDay;
using testkit::kT0;

// How long a child may take to start or stop on a loaded 2-core box. Only a
// broken program ever waits this long.
constexpr auto kStartTimeout = 30s;

inline std::string bin(const std::string& program) {
  const char* dir = std::getenv("TOLLGATE_BIN_DIR");
  REQUIRE_MESSAGE(dir != nullptr, "TOLLGATE_BIN_DIR is not set (run through ctest)");
  fs::path p = fs::path(dir) / program;
  REQUIRE_MESSAGE(fs::exists(p), p.string() << " is not built");
  return p.string();
}

inline std::string read_text(const fs::path& path) {
  std::ifstream in(path, std::ios::binary);
  std::ostringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

// Writes `text` so a concurrent reader sees the old or the new content, never half.
inline void write_atomically(const fs::path& path, const std::string& text) {
  fs::path tmp = path;
  tmp += ".tmp";
  {
    std::ofstream out(tmp, std::ios::binary | std::ios::trunc);
    out << text;
    REQUIRE(out.good());
  }
  fs::rename(tmp, path);
}

class TempDir {
 public:
  TempDir() {
    std::string tmpl = (fs::temp_directory_path() / "tollgate-atk-XXXXXX").string();
    REQUIRE(::mkdtemp(tmpl.data()) != nullptr);
    path_ = tmpl;
  }
  ~TempDir() {
    std::error_code ec;
    fs::remove_all(path_, ec);
  }
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;
  const fs::path& path() const { return path_; }
  fs::path operator/(const std::string& leaf) const { return path_ / leaf; }

 private:
  fs::path path_;
};

// A child process whose stdout and stderr are collected by reader threads, so
// the test can wait for a line without the child ever blocking on a full pipe.
class Child {
 public:
  explicit Child(std::vector<std::string> argv) : argv_(std::move(argv)) {
    int out[2], err[2];
    REQUIRE(::pipe2(out, O_CLOEXEC) == 0);
    REQUIRE(::pipe2(err, O_CLOEXEC) == 0);
    std::vector<char*> args;
    for (auto& a : argv_) args.push_back(a.data());
    args.push_back(nullptr);
    const pid_t parent = ::getpid();
    std::fflush(stdout);
    std::fflush(stderr);
    pid_ = ::fork();
    REQUIRE(pid_ >= 0);
    if (pid_ == 0) {
      // Only async-signal-safe calls until exec: the parent has threads.
      ::prctl(PR_SET_PDEATHSIG, SIGKILL);
      if (::getppid() != parent) ::_exit(127);
      ::dup2(out[1], STDOUT_FILENO);
      ::dup2(err[1], STDERR_FILENO);
      ::execv(args[0], args.data());
      ::_exit(127);
    }
    ::close(out[1]);
    ::close(err[1]);
    readers_[0] = std::thread([this, fd = out[0]] { drain(fd, 0); });
    readers_[1] = std::thread([this, fd = err[0]] { drain(fd, 1); });
  }
  ~Child() {
    stop();
    for (auto& t : readers_) {
      if (t.joinable()) t.join();
    }
  }
  Child(const Child&) = delete;
  Child& operator=(const Child&) = delete;

  enum Stream { kStdout = 0, kStderr = 1 };

  // Waits until `stream` holds a complete line containing `needle`, or the
  // child closes it, or `timeout` passes. True when the line came.
  bool wait_for_line(Stream stream, const std::string& needle,
                     std::chrono::milliseconds timeout = kStartTimeout) {
    std::unique_lock lock(mutex_);
    return cv_.wait_for(lock, timeout, [&] {
      const std::string& s = text_[stream];
      std::size_t at = s.find(needle);
      return (at != std::string::npos && s.find('\n', at) != std::string::npos) || closed_[stream];
    }) && text_[stream].find(needle) != std::string::npos;
  }
  // Waits until both streams are closed (the child exited), bounded.
  bool wait_closed(std::chrono::milliseconds timeout = kStartTimeout) {
    std::unique_lock lock(mutex_);
    return cv_.wait_for(lock, timeout, [&] { return closed_[0] && closed_[1]; });
  }

  std::string out() const { return text(kStdout); }
  std::string err() const { return text(kStderr); }
  std::string text(Stream s) const {
    std::lock_guard lock(mutex_);
    return text_[s];
  }
  pid_t pid() const { return pid_; }
  bool running() const { return pid_ > 0; }

  // Sends `sig` and reaps the child (SIGKILL if it is still there after the
  // timeout). Returns the exit status, 128 + signal when killed. Idempotent.
  int stop(int sig = SIGTERM, std::chrono::milliseconds timeout = kStartTimeout) {
    if (pid_ <= 0) return status_;
    ::kill(pid_, sig);
    if (!reap(timeout)) {
      ::kill(pid_, SIGKILL);
      reap(std::chrono::milliseconds(-1));
    }
    return status_;
  }
  // Waits for the child to exit on its own (a one-shot tool).
  int wait(std::chrono::milliseconds timeout = kStartTimeout) {
    if (pid_ <= 0) return status_;
    if (!reap(timeout)) return stop(SIGKILL);
    return status_;
  }

 private:
  void drain(int fd, int stream) {
    char buf[4096];
    for (;;) {
      const ssize_t n = ::read(fd, buf, sizeof buf);
      if (n < 0 && errno == EINTR) continue;
      std::lock_guard lock(mutex_);
      if (n <= 0) {
        closed_[stream] = true;
        cv_.notify_all();
        break;
      }
      text_[stream].append(buf, static_cast<std::size_t>(n));
      cv_.notify_all();
    }
    ::close(fd);
  }
  // waitpid with a bound: a pidfd becomes readable when the child exits.
  bool reap(std::chrono::milliseconds timeout) {
    if (timeout.count() >= 0) {
      const int pidfd = static_cast<int>(::syscall(SYS_pidfd_open, pid_, 0));
      if (pidfd >= 0) {
        pollfd p{pidfd, POLLIN, 0};
        const int r = ::poll(&p, 1, static_cast<int>(timeout.count()));
        ::close(pidfd);
        if (r != 1) return false;
      }
    }
    int status = 0;
    while (::waitpid(pid_, &status, 0) < 0 && errno == EINTR) {
    }
    pid_ = -1;
    status_ = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
    return true;
  }

  std::vector<std::string> argv_;
  pid_t pid_ = -1;
  int status_ = -1;
  std::thread readers_[2];
  mutable std::mutex mutex_;
  std::condition_variable cv_;
  std::string text_[2];
  bool closed_[2] = {false, false};
};

// Runs `co` on `io` until it completes (links' background coroutines stay
// parked for the next call); rethrows what it threw.
template <class T>
T run_sync(boost::asio::io_context& io, boost::asio::awaitable<T> co) {
  return test::run_coroutine(io, std::move(co));
}

struct RigOptions {
  // Extra TOML for the instrument's config file (e.g. "[backoff]\nthreshold = 3\n").
  std::string config;
  // Serve on a pseudo-terminal (serial: endpoint) instead of the hub.
  bool serial = false;
  // Extra `tollgate-bus hub` arguments (faults: --drop 0.01 --seed 7 ...).
  std::vector<std::string> hub_args;
  // Extra ISO-TP endpoint options for both ends ("&ncr=300ms&nbs=300ms").
  std::string isotp_options;
  UnixTime clock = kT0;  // the device clock at start
  // Also serve on a second hub without faults (open_peer_link(io, true)), e.g.
  // to read the audit log while the first bus misbehaves.
  bool clean_link = false;
};

// One provisioned instrument served on one link, with the key ceremony done
// in-process: a master key (trusted by the device), cloud key 1 (authorized as
// id 1 by `authorization()`), and a user key.
class Rig {
 public:
  explicit Rig(RigOptions options = {}) : options_(std::move(options)) {
    device_id = testkit::uuid(0xD1);
    other_device_id = testkit::uuid(0xD2);
    write_atomically(dir_ / "master.pub", master.public_key().pem());
    set_clock(options_.clock);
    write_atomically(dir_ / "instrument.toml", options_.config);
    provision();
    if (options_.serial) {
      open_pty();
    } else {
      hub_ = start_hub(socket_, options_.hub_args);
    }
    if (options_.clean_link) clean_hub_ = start_hub(clean_socket_, {});
    start_instrument();
  }
  ~Rig() {
    // A clean stop is part of every test: SIGTERM must flush and exit 0 (under
    // the sanitizers, a leak or a late error report shows up here).
    if (instrument_) {
      const int rc = stop_instrument();
      CHECK_MESSAGE(rc == 0, "tollgate-instrument exited " << rc << "; stderr:\n"
                                                           << last_instrument_log_);
    }
    for (auto* hub : {&hub_, &clean_hub_}) {
      if (!*hub) continue;
      const int rc = (*hub)->stop(SIGTERM);
      CHECK_MESSAGE(rc == 0, "tollgate-bus hub exited " << rc << "; stderr:\n" << (*hub)->err());
      hub->reset();
    }
    if (pty_slave_ >= 0) ::close(pty_slave_);
    if (pty_master_ >= 0) ::close(pty_master_);
  }
  Rig(const Rig&) = delete;
  Rig& operator=(const Rig&) = delete;

  // --- the key ceremony and the cloud, in-process --------------------------
  crypto::PrivateKey master = testkit::make_key();
  crypto::PrivateKey cloud = testkit::make_key();
  crypto::PrivateKey user = testkit::make_key();
  Bytes device_id;
  Bytes other_device_id;

  // Master-signed authorization `id` for `cloud_key` (default: this rig's cloud key).
  Bytes authorization(std::uint64_t id = 1, std::vector<std::uint64_t> revoked = {},
                      const crypto::PrivateKey* cloud_key = nullptr,
                      UnixTime not_after = kT0 + 365 * kDay,
                      const crypto::PrivateKey* signer = nullptr) const {
    const auto& c = cloud_key != nullptr ? *cloud_key : cloud;
    return testkit::sign_authorization(
        signer != nullptr ? *signer : master,
        testkit::authorization_body(id, c.public_key(), kT0 - kDay, not_after, std::move(revoked)));
  }
  // The unsigned body of a token `tag` for this device and this rig's user.
  v1::DeviceToken token_body(std::uint8_t tag, std::uint32_t uses = 3,
                             UnixTime expires_at = kT0 + 7 * kDay,
                             std::uint64_t authorization_id = 1) const {
    return testkit::token_body(tag, device_id, user.public_key(), authorization_id, uses, kT0 - 60,
                               expires_at);
  }
  // Cloud-signed token `tag` (by this rig's cloud key unless told otherwise).
  Bytes token(std::uint8_t tag, std::uint32_t uses = 3, UnixTime expires_at = kT0 + 7 * kDay,
              std::uint64_t authorization_id = 1,
              const crypto::PrivateKey* cloud_key = nullptr) const {
    return testkit::sign_token(cloud_key != nullptr ? *cloud_key : cloud,
                               token_body(tag, uses, expires_at, authorization_id));
  }

  // --- the device ----------------------------------------------------------
  const crypto::PublicKey& device_key() const { return *device_key_; }
  const fs::path& state_dir() const { return state_dir_; }

  // Rewrites the file the instrument reads its clock from (every decision).
  void set_clock(UnixTime t) { write_atomically(dir_ / "clock", std::to_string(t) + "\n"); }

  // SIGTERM (clean stop: flushes), then starts it again on the same state.
  void restart_instrument() {
    const int rc = stop_instrument();
    CHECK_MESSAGE(rc == 0, "tollgate-instrument exited " << rc << "; stderr:\n"
                                                         << last_instrument_log_);
    start_instrument();
  }
  int stop_instrument() {
    if (!instrument_) return -1;
    int rc = instrument_->stop(SIGTERM);
    last_instrument_log_ = instrument_->err();
    instrument_.reset();
    return rc;
  }
  void start_instrument() {
    REQUIRE(!instrument_);
    std::vector<std::string> argv{bin("tollgate-instrument"),
                                  "run",
                                  "--state",
                                  state_dir_.string(),
                                  "--link",
                                  instrument_endpoint(),
                                  "--config",
                                  (dir_ / "instrument.toml").string(),
                                  "--clock",
                                  "file:" + (dir_ / "clock").string()};
    if (options_.clean_link) {
      argv.push_back("--link");
      argv.push_back("vbus:" + clean_socket_ + "?tx=0x6A8&rx=0x6A0");
    }
    instrument_ = std::make_unique<Child>(std::move(argv));
    if (!instrument_->wait_for_line(Child::kStdout, "ready")) {
      FAIL("tollgate-instrument did not print ready; stderr:\n" << instrument_->err());
    }
  }
  std::string instrument_log() const {
    return instrument_ ? instrument_->err() : last_instrument_log_;
  }
  // `tollgate-instrument audit --verify` on the state (read-only; safe while running).
  int audit_verify_exit_code() const {
    Child tool({bin("tollgate-instrument"), "audit", "--state", state_dir_.string(), "--verify"});
    return tool.wait();
  }

  // Result rows of the simulated instrument, read straight from state.db
  // (read-only, beside the running instrument: WAL allows it).
  std::uint64_t result_count() const {
    SqliteStore::Options o;
    o.read_only = true;
    auto store = instrument::SqliteStore::open((state_dir_ / "state.db").string(), o);
    REQUIRE(store.ok());
    auto n = (*store)->count_results();
    REQUIRE(n.ok());
    return *n;
  }

  // The test peer's end of the link (the hub's other node, or the pty master).
  std::unique_ptr<transport::MessageLink> open_peer_link(boost::asio::io_context& io,
                                                         bool clean = false) {
    if (clean) {
      REQUIRE(options_.clean_link);
      auto r =
          transport::open_link(io.get_executor(), "vbus:" + clean_socket_ + "?tx=0x6A0&rx=0x6A8");
      REQUIRE_MESSAGE(r.index() == 0, "cannot open the clean link: " << std::get<1>(r).message);
      return std::move(std::get<0>(r));
    }
    if (options_.serial) {
      const int fd = ::dup(pty_master_);
      REQUIRE(fd >= 0);
      return std::make_unique<transport::SerialLink>(io.get_executor(), fd,
                                                     transport::SerialOptions{}, "serial:pty-peer");
    }
    auto r = transport::open_link(io.get_executor(), peer_endpoint());
    REQUIRE_MESSAGE(r.index() == 0, "cannot open the peer link: " << std::get<1>(r).message);
    return std::move(std::get<0>(r));
  }
  std::string instrument_endpoint() const {
    if (options_.serial) return "serial:" + pty_name_;
    return "vbus:" + socket_ + "?tx=0x6A8&rx=0x6A0" + options_.isotp_options;
  }
  std::string peer_endpoint() const {
    return "vbus:" + socket_ + "?tx=0x6A0&rx=0x6A8" + options_.isotp_options;
  }
  std::string hub_log() const { return hub_ ? hub_->err() : std::string(); }

 private:
  using SqliteStore = instrument::SqliteStore;

  void provision() {
    Child tool({bin("tollgate-instrument"), "provision", "--state", state_dir_.string(), "--master",
                (dir_ / "master.pub").string(), "--device-id", uuid_to_string(device_id)});
    const int rc = tool.wait();
    REQUIRE_MESSAGE(rc == 0, "provision failed: " << tool.err());
    auto key = crypto::PublicKey::from_pem(read_text(state_dir_ / "device.pub"));
    REQUIRE(key.ok());
    device_key_.emplace(std::move(*key));
  }
  static std::unique_ptr<Child> start_hub(const std::string& socket,
                                          const std::vector<std::string>& extra) {
    std::vector<std::string> argv{bin("tollgate-bus"), "hub",    "--socket", socket,
                                  "--no-airtime",      "--quiet"};
    for (const auto& a : extra) argv.push_back(a);
    auto hub = std::make_unique<Child>(std::move(argv));
    if (!hub->wait_for_line(Child::kStderr, "hub: listening")) {
      FAIL("tollgate-bus hub did not start; stderr:\n" << hub->err());
    }
    return hub;
  }
  void open_pty() {
    REQUIRE(::openpty(&pty_master_, &pty_slave_, nullptr, nullptr, nullptr) == 0);
    ::fcntl(pty_master_, F_SETFD, FD_CLOEXEC);
    ::fcntl(pty_slave_, F_SETFD, FD_CLOEXEC);
    const char* name = ::ttyname(pty_slave_);
    REQUIRE(name != nullptr);
    pty_name_ = name;
  }

  RigOptions options_;
  TempDir dir_;
  fs::path state_dir_ = dir_ / "state";
  std::string socket_ = (dir_ / "bus.sock").string();
  std::string clean_socket_ = (dir_ / "clean.sock").string();
  std::optional<crypto::PublicKey> device_key_;
  std::unique_ptr<Child> hub_;
  std::unique_ptr<Child> clean_hub_;
  std::unique_ptr<Child> instrument_;
  std::string last_instrument_log_;
  int pty_master_ = -1;
  int pty_slave_ = -1;
  std::string pty_name_;
};

}  // namespace tollgate::attack
