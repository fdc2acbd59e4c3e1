// Support for the SIGKILL crash test (tests/instrument/it_crash.cpp, THREATS
// A12): the real tollgate-instrument as a child process that can be killed and
// restarted quickly, a message link that kills the instrument a chosen delay
// after a command went out, and the ledger read back from the database of a
// dead instrument (charges, executions, audit chain, integrity).
//
// Header-only and used by it_crash.cpp alone. Nothing here sleeps to wait for
// a process: a start waits for the "ready" line (bounded), a kill waits for
// the exit status.
#pragma once

#include <doctest/doctest.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <spawn.h>
#include <sqlite3.h>
#include <sys/wait.h>
#include <unistd.h>

#include <boost/asio/steady_timer.hpp>
#include <boost/asio/this_coro.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <cerrno>
#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <functional>
#include <map>
#include <optional>
#include <sstream>
#include <string>
#include <vector>

#include "gateway/result.hpp"
#include "instrument/store.hpp"
#include "transport/links/message_link.hpp"

extern char** environ;

namespace tollgate::crash {

using Clock = std::chrono::steady_clock;

// A positive integer from the environment, or `fallback`.
inline std::uint64_t env_number(const char* name, std::uint64_t fallback) {
  const char* v = std::getenv(name);
  if (v == nullptr || *v == '\0') return fallback;
  char* end = nullptr;
  const unsigned long long n = std::strtoull(v, &end, 10);
  if (end == v || *end != '\0') FAIL(name << "=" << v << " is not a number");
  return n;
}

inline std::filesystem::path bin_dir() {
  const char* dir = std::getenv("TOLLGATE_BIN_DIR");
  REQUIRE_MESSAGE(dir != nullptr, "TOLLGATE_BIN_DIR is not set (run the test through ctest)");
  return dir;
}

inline std::string tail_of(const std::filesystem::path& file, std::size_t lines = 20) {
  std::ifstream in(file);
  std::vector<std::string> all;
  for (std::string line; std::getline(in, line);) all.push_back(line);
  std::string out;
  for (std::size_t i = all.size() > lines ? all.size() - lines : 0; i < all.size(); ++i) {
    out += all[i] + "\n";
  }
  return out;
}

// A temporary folder, removed at scope exit unless TOLLGATE_KEEP_TMP is set.
struct TempDir {
  std::filesystem::path path;
  TempDir() {
    std::string tmpl = (std::filesystem::temp_directory_path() / "tollgate-crash-XXXXXX").string();
    REQUIRE(::mkdtemp(tmpl.data()) != nullptr);
    path = tmpl;
  }
  ~TempDir() {
    if (std::getenv("TOLLGATE_KEEP_TMP") != nullptr) return;
    std::error_code ec;
    std::filesystem::remove_all(path, ec);
  }
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;
  std::string str(const std::string& leaf) const { return (path / leaf).string(); }
};

// Runs a program to completion (stdout and stderr appended to `log`) and
// returns its exit code (-1 when it died of a signal).
inline int run_program(const std::vector<std::string>& argv, const std::filesystem::path& log) {
  std::vector<char*> args;
  for (const auto& a : argv) args.push_back(const_cast<char*>(a.c_str()));
  args.push_back(nullptr);
  posix_spawn_file_actions_t fa;
  REQUIRE(posix_spawn_file_actions_init(&fa) == 0);
  posix_spawn_file_actions_addopen(&fa, STDOUT_FILENO, log.c_str(), O_WRONLY | O_CREAT | O_APPEND,
                                   0600);
  posix_spawn_file_actions_adddup2(&fa, STDOUT_FILENO, STDERR_FILENO);
  pid_t pid = -1;
  const int rc = posix_spawn(&pid, args[0], &fa, nullptr, args.data(), environ);
  posix_spawn_file_actions_destroy(&fa);
  REQUIRE_MESSAGE(rc == 0, "cannot start " << argv[0] << ": " << std::strerror(rc));
  int status = 0;
  while (::waitpid(pid, &status, 0) < 0 && errno == EINTR) {
  }
  return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

// The real tollgate-instrument, started again and again on the same state.
// stdout is a pipe (the "ready" line), stderr is appended to a log file that
// a failure shows.
class InstrumentProcess {
 public:
  InstrumentProcess(std::vector<std::string> argv, std::filesystem::path log)
      : argv_(std::move(argv)), log_(std::move(log)) {}
  ~InstrumentProcess() {
    if (pid_ > 0) kill_hard();
  }
  InstrumentProcess(const InstrumentProcess&) = delete;
  InstrumentProcess& operator=(const InstrumentProcess&) = delete;

  // Starts it and waits (at most `limit`) for "ready": every link is open.
  void start(std::chrono::milliseconds limit = std::chrono::seconds(20)) {
    const auto t0 = Clock::now();
    spawn();
    wait_ready(limit);
    last_start_ = Clock::now() - t0;
  }

  // Starts it without waiting: for a cut while it opens its state.
  void spawn() {
    REQUIRE(pid_ <= 0);
    int out[2];
    REQUIRE(::pipe2(out, O_CLOEXEC) == 0);
    std::vector<char*> args;
    for (const auto& a : argv_) args.push_back(const_cast<char*>(a.c_str()));
    args.push_back(nullptr);
    posix_spawn_file_actions_t fa;
    REQUIRE(posix_spawn_file_actions_init(&fa) == 0);
    posix_spawn_file_actions_adddup2(&fa, out[1], STDOUT_FILENO);
    posix_spawn_file_actions_addopen(&fa, STDERR_FILENO, log_.c_str(),
                                     O_WRONLY | O_CREAT | O_APPEND, 0600);
    const int rc = posix_spawn(&pid_, args[0], &fa, nullptr, args.data(), environ);
    posix_spawn_file_actions_destroy(&fa);
    ::close(out[1]);
    if (rc != 0) {
      ::close(out[0]);
      pid_ = -1;
      FAIL("cannot start " << argv_[0] << ": " << std::strerror(rc));
    }
    stdout_ = out[0];
    ++starts_;
  }

  void wait_ready(std::chrono::milliseconds limit) {
    REQUIRE(pid_ > 0);
    const auto deadline = Clock::now() + limit;
    std::string seen;
    while (seen.find("ready\n") == std::string::npos) {
      const auto left =
          std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now());
      pollfd p{stdout_, POLLIN, 0};
      const int n = left.count() > 0 ? ::poll(&p, 1, static_cast<int>(left.count())) : 0;
      if (n < 0 && errno == EINTR) continue;
      char buf[256];
      const ssize_t got = n > 0 ? ::read(stdout_, buf, sizeof buf) : 0;
      if (got <= 0) {
        kill_hard();
        FAIL("tollgate-instrument (start " << starts_ << ") did not say ready; its log ends:\n"
                                           << tail_of(log_));
      }
      seen.append(buf, static_cast<std::size_t>(got));
    }
    ++ready_;
  }

  // SIGKILL: no handler, no flush, no clean close; the state is whatever the
  // kernel already had. Returns once the process is gone.
  void kill_hard() {
    if (pid_ <= 0) return;
    ::kill(pid_, SIGKILL);
    reap();
  }

  // SIGTERM (clean stop) and the exit code; -1 when it died of a signal.
  int terminate() {
    if (pid_ <= 0) return -1;
    ::kill(pid_, SIGTERM);
    return reap();
  }

  bool running() const { return pid_ > 0; }
  std::uint64_t starts() const { return starts_; }  // processes started
  std::uint64_t ready() const { return ready_; }    // ... of which said "ready"
  // How long the last start() took from spawn to "ready".
  Clock::duration last_start() const { return last_start_; }
  const std::filesystem::path& log() const { return log_; }

 private:
  int reap() {
    int status = 0;
    while (::waitpid(pid_, &status, 0) < 0 && errno == EINTR) {
    }
    pid_ = -1;
    if (stdout_ >= 0) ::close(stdout_);
    stdout_ = -1;
    return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
  }

  std::vector<std::string> argv_;
  std::filesystem::path log_;
  pid_t pid_ = -1;
  int stdout_ = -1;
  std::uint64_t starts_ = 0;
  std::uint64_t ready_ = 0;
  Clock::duration last_start_{};
};

// What the device's database says happened, read while no instrument runs.
struct Ledger {
  std::uint64_t audit_records = 0;
  std::uint64_t boots = 0;
  std::uint64_t charged = 0;               // uses_charged summed over accepted KIND_COMMAND records
  std::uint64_t charges = 0;               // accepted KIND_COMMAND records that charged a use
  std::uint64_t replays = 0;               // accepted KIND_COMMAND records with no charge (retries)
  std::uint64_t executions = 0;            // accepted KIND_EXECUTION records of run-assay
  std::uint64_t results = 0;               // rows of the results table
  std::optional<std::uint32_t> uses_left;  // the test token's, as the device holds it
  // Each of these is a broken invariant; empty when all hold.
  std::vector<std::string> problems;
};

// Opens the database read-only (the instrument is dead: nothing moves) and
// checks what does not depend on the test's counters:
//  - PRAGMA integrity_check is "ok" and the audit chain verifies to its recorded head;
//  - every execution follows an earlier charge for the same request hash
//    (charge before execute), and no request hash executed twice;
//  - every result row has its execution record and vice versa (one transaction);
//  - the token's uses charged (authorized - uses_left) equal the charge records.
inline Ledger read_ledger(const std::string& db_path, ByteView token_id,
                          std::uint32_t authorized_uses) {
  Ledger l;
  instrument::SqliteStore::Options o;
  o.read_only = true;
  std::string why;
  auto store = instrument::SqliteStore::open(db_path, o, &why);
  if (!store) {
    l.problems.push_back("cannot open the database: " + why);
    return l;
  }
  instrument::SqliteStore& s = **store;
  if (auto st = s.integrity_check(&why); !st) l.problems.push_back("integrity_check: " + why);
  if (auto st = s.verify_audit_chain(&why); !st) l.problems.push_back("audit chain: " + why);

  std::map<std::string, std::uint64_t> charged_at;  // request hash -> seq of its charge
  std::map<std::string, std::uint64_t> executed;    // request hash -> executions
  for (std::uint64_t next = 1;;) {
    auto page = s.audit_records(next, 4096);
    if (!page) {
      l.problems.push_back("cannot read the audit log: " + s.last_error());
      break;
    }
    if (page->empty()) break;
    for (const auto& r : *page) {
      ++l.audit_records;
      if (r.kind() == v1::AuditRecord::KIND_BOOT) ++l.boots;
      if (r.kind() == v1::AuditRecord::KIND_COMMAND && r.accepted()) {
        if (r.uses_charged() > 0) {
          ++l.charges;
          l.charged += r.uses_charged();
          charged_at.emplace(r.request_hash(), r.seq());
        } else {
          ++l.replays;
        }
      }
      if (r.kind() == v1::AuditRecord::KIND_EXECUTION && r.accepted() &&
          r.command() == "run-assay") {
        ++l.executions;
        if (++executed[r.request_hash()] == 2) {
          l.problems.push_back("request " + to_hex(as_bytes(r.request_hash())) +
                               " executed twice (record " + std::to_string(r.seq()) + ")");
        }
        auto c = charged_at.find(r.request_hash());
        if (c == charged_at.end() || c->second > r.seq()) {
          l.problems.push_back("execution record " + std::to_string(r.seq()) +
                               " has no earlier charge for its request");
        }
      }
    }
    next = page->back().seq() + 1;
  }

  auto results = s.count_results();
  if (!results) {
    l.problems.push_back("cannot count results: " + s.last_error());
  } else {
    l.results = *results;
  }
  if (l.results != l.executions) {
    l.problems.push_back(std::to_string(l.results) + " result rows but " +
                         std::to_string(l.executions) + " execution records");
  }

  auto state = s.load();
  if (!state) {
    l.problems.push_back("cannot load the state: " + s.last_error());
  } else if (auto t = state->tokens.find(Bytes(token_id.begin(), token_id.end()));
             t != state->tokens.end()) {
    l.uses_left = t->second.uses_left;
    if (authorized_uses - t->second.uses_left != l.charged) {
      l.problems.push_back("the token has " + std::to_string(authorized_uses - *l.uses_left) +
                           " uses charged but the audit log " + std::to_string(l.charged));
    }
  }

  // Result rows are unique per request too (a second row would be a second run).
  sqlite3* db = nullptr;
  if (sqlite3_open_v2(db_path.c_str(), &db, SQLITE_OPEN_READONLY, nullptr) == SQLITE_OK) {
    sqlite3_stmt* q = nullptr;
    if (sqlite3_prepare_v2(db, "SELECT count(*) - count(DISTINCT request_hash) FROM results", -1,
                           &q, nullptr) == SQLITE_OK &&
        sqlite3_step(q) == SQLITE_ROW && sqlite3_column_int64(q, 0) != 0) {
      l.problems.push_back(std::to_string(sqlite3_column_int64(q, 0)) +
                           " result rows repeat a request");
    }
    sqlite3_finalize(q);
  }
  sqlite3_close(db);
  return l;
}

// A MessageLink in front of the host's real link. Once armed, the next command
// it sends (HostMessage.command) is followed, `delay` after its last frame
// went out, by `cut()` (kill and restart the instrument); the delay is awaited
// on the link's executor, so the host side keeps reading frames meanwhile
// (a response the instrument got out in time is queued, not lost). The first
// receive after a cut waits at most `after_cut_wait`: whatever the dead process
// sent is already on its way; anything else needs the host's resend.
class CuttingLink final : public transport::MessageLink {
 public:
  CuttingLink(transport::MessageLink& inner, std::function<void()> cut,
              Duration after_cut_wait = std::chrono::milliseconds(50))
      : inner_(inner), cut_(std::move(cut)), after_cut_wait_(after_cut_wait) {}

  void arm(std::chrono::microseconds delay) { armed_ = delay; }
  bool armed() const { return armed_.has_value(); }
  // The command message (HostMessage bytes) the last cut followed.
  const std::vector<std::uint8_t>& cut_message() const { return cut_message_; }
  // Time from the last command's send completing to the next message received:
  // the device's processing time as the host sees it (for calibrating delays).
  std::optional<Clock::duration> last_turnaround() const { return turnaround_; }
  // Whether the first receive after the last cut found a message that the
  // killed process had got out.
  bool answer_was_queued() const { return answer_was_queued_; }

  boost::asio::awaitable<transport::LinkResult<transport::Done>> send(
      std::vector<std::uint8_t> message, Duration timeout) override {
    const bool command = is_command(message);
    std::vector<std::uint8_t> copy;
    if (command && armed_) copy = message;
    auto sent = co_await inner_.send(std::move(message), timeout);
    if (!command || sent.index() != 0) co_return sent;
    command_sent_at_ = Clock::now();
    turnaround_.reset();
    if (!armed_) co_return sent;
    const auto delay = *armed_;
    armed_.reset();
    cut_message_ = std::move(copy);
    boost::asio::steady_timer timer(co_await boost::asio::this_coro::executor);
    timer.expires_at(*command_sent_at_ + delay);
    co_await timer.async_wait(boost::asio::use_awaitable);
    cut_();
    command_sent_at_.reset();
    after_cut_ = true;
    co_return sent;
  }

  boost::asio::awaitable<transport::LinkResult<std::vector<std::uint8_t>>> receive(
      Duration timeout) override {
    bool first_after_cut = false;
    if (after_cut_) {
      after_cut_ = false;
      first_after_cut = true;
      timeout = std::min(timeout, after_cut_wait_);
    }
    auto got = co_await inner_.receive(timeout);
    if (first_after_cut) answer_was_queued_ = got.index() == 0;
    if (got.index() == 0 && command_sent_at_) {
      turnaround_ = Clock::now() - *command_sent_at_;
      command_sent_at_.reset();
    }
    co_return got;
  }

  void close() override { inner_.close(); }
  std::string describe() const override { return inner_.describe(); }

 private:
  static bool is_command(const std::vector<std::uint8_t>& bytes) {
    v1::HostMessage m;
    return m.ParseFromArray(bytes.data(), static_cast<int>(bytes.size())) &&
           m.kind_case() == v1::HostMessage::kCommand;
  }

  transport::MessageLink& inner_;
  std::function<void()> cut_;
  Duration after_cut_wait_;
  std::optional<std::chrono::microseconds> armed_;
  std::vector<std::uint8_t> cut_message_;
  std::optional<Clock::time_point> command_sent_at_;
  std::optional<Clock::duration> turnaround_;
  bool after_cut_ = false;
  bool answer_was_queued_ = false;
};

}  // namespace tollgate::crash
