// Test support for the virtual bus: a hub in a child process (run_hub after
// fork, so the tests do not depend on the tollgate-bus CLI), a raw node that
// speaks the hub protocol synchronously (to see bus times and confirmations),
// and a helper that runs a coroutine to completion.
#pragma once

#include <doctest/doctest.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/io_context.hpp>
#include <cerrno>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <exception>
#include <fstream>
#include <optional>
#include <sstream>
#include <string>
#include <vector>

#include "tools/bus/hub.hpp"
#include "transport/framing/hub_protocol.hpp"

namespace tollgate::test {

inline std::string temp_path(const std::string& what) {
  static int counter = 0;
  return "/tmp/tollgate-h6-" + std::to_string(::getpid()) + "-" + std::to_string(++counter) + "-" +
         what;
}

inline std::string read_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::stringstream s;
  s << in.rdbuf();
  return s.str();
}

// A hub running in a forked child. The constructor returns once the hub
// listens; stop() sends SIGTERM and returns the exit status.
class HubProcess {
 public:
  explicit HubProcess(bus::HubOptions options) : options_(std::move(options)) {
    if (options_.socket_path.empty()) options_.socket_path = temp_path("bus.sock");
    stdout_path_ = temp_path("hub.out");
    int ready[2];
    REQUIRE(::pipe(ready) == 0);
    std::fflush(stdout);
    std::fflush(stderr);
    pid_ = ::fork();
    REQUIRE(pid_ >= 0);
    if (pid_ == 0) {
      ::close(ready[0]);
      const int out = ::open(stdout_path_.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0600);
      if (out >= 0) ::dup2(out, STDOUT_FILENO);
      const int fd = ready[1];
      options_.quiet = true;
      options_.on_ready = [fd] {
        const char c = 'r';
        (void)!::write(fd, &c, 1);
        ::close(fd);
      };
      const int rc = bus::run_hub(options_);
      std::fflush(stdout);
      ::_exit(rc);
    }
    ::close(ready[1]);
    pollfd p{ready[0], POLLIN, 0};
    const int r = ::poll(&p, 1, 20000);
    char c = 0;
    const bool ok = r == 1 && ::read(ready[0], &c, 1) == 1;
    ::close(ready[0]);
    if (!ok) {
      stop();
      FAIL("the hub did not start");
    }
  }
  ~HubProcess() {
    stop();
    ::unlink(stdout_path_.c_str());
    ::unlink(options_.socket_path.c_str());
  }
  HubProcess(const HubProcess&) = delete;
  HubProcess& operator=(const HubProcess&) = delete;

  const std::string& socket_path() const { return options_.socket_path; }
  const bus::HubOptions& options() const { return options_; }
  std::string output() const { return read_file(stdout_path_); }
  void signal(int sig) const {
    if (pid_ > 0) ::kill(pid_, sig);
  }

  // SIGTERM, then the exit status (-1 if it died of a signal).
  int stop() {
    if (pid_ <= 0) return exit_code_;
    ::kill(pid_, SIGTERM);
    int status = 0;
    while (::waitpid(pid_, &status, 0) < 0 && errno == EINTR) {
    }
    pid_ = -1;
    exit_code_ = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
    return exit_code_;
  }

 private:
  bus::HubOptions options_;
  std::string stdout_path_;
  pid_t pid_ = -1;
  int exit_code_ = -1;
};

// The hub protocol spoken by hand over a blocking socket.
class RawNode {
 public:
  explicit RawNode(const std::string& path) {
    fd_ = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    REQUIRE(fd_ >= 0);
    sockaddr_un addr{};
    addr.sun_family = AF_UNIX;
    std::memcpy(addr.sun_path, path.data(), path.size());
    REQUIRE(::connect(fd_, reinterpret_cast<const sockaddr*>(&addr), sizeof addr) == 0);
  }
  ~RawNode() {
    if (fd_ >= 0) ::close(fd_);
  }
  RawNode(const RawNode&) = delete;
  RawNode& operator=(const RawNode&) = delete;

  // Hello + Welcome.
  transport::hub::Welcome hello(bool fd = false, bool listen_only = false) {
    send(transport::hub::Hello{transport::hub::kProtocolVersion, fd, listen_only, "raw"});
    auto m = next();
    REQUIRE(m);
    REQUIRE(std::holds_alternative<transport::hub::Welcome>(*m));
    return std::get<transport::hub::Welcome>(*m);
  }

  void send(const transport::hub::Message& m) { send_bytes(transport::hub::encode(m)); }
  void send_bytes(const std::vector<std::uint8_t>& bytes) {
    REQUIRE(::send(fd_, bytes.data(), bytes.size(), MSG_NOSIGNAL) ==
            static_cast<ssize_t>(bytes.size()));
  }

  // False once the hub has hung up.
  bool try_send(const std::vector<std::uint8_t>& bytes) {
    return ::send(fd_, bytes.data(), bytes.size(), MSG_NOSIGNAL) ==
           static_cast<ssize_t>(bytes.size());
  }

  // The next message, or nullopt at EOF or when nothing comes within `wait`.
  std::optional<transport::hub::Message> next(
      std::chrono::milliseconds wait = std::chrono::milliseconds(10000)) {
    while (true) {
      if (auto r = decoder_.next()) {
        REQUIRE(r->index() == 0);
        return std::get<0>(*r);
      }
      pollfd p{fd_, POLLIN, 0};
      const int n = ::poll(&p, 1, static_cast<int>(wait.count()));
      if (n <= 0) return std::nullopt;
      std::uint8_t buf[4096];
      const ssize_t got = ::recv(fd_, buf, sizeof buf, 0);
      if (got <= 0) {
        eof_ = true;
        return std::nullopt;
      }
      decoder_.feed(std::span<const std::uint8_t>(buf, static_cast<std::size_t>(got)));
    }
  }
  template <class T>
  T expect() {
    auto m = next();
    REQUIRE(m);
    REQUIRE(std::holds_alternative<T>(*m));
    return std::get<T>(*m);
  }
  bool eof() const { return eof_; }

 private:
  int fd_ = -1;
  transport::hub::StreamDecoder decoder_{transport::hub::kMaxHubMessage};
  bool eof_ = false;
};

// Runs `co` on `io` until it completes (the links' background coroutines stay
// suspended for the next call); rethrows what it threw.
template <class T>
T run_coroutine(boost::asio::io_context& io, boost::asio::awaitable<T> co) {
  std::optional<T> result;
  std::exception_ptr error;
  bool done = false;
  boost::asio::co_spawn(io, std::move(co), [&](std::exception_ptr e, T value) {
    error = e;
    if (!e) result = std::move(value);
    done = true;
  });
  io.restart();
  while (!done && io.run_one() > 0) {
  }
  if (error) std::rethrow_exception(error);
  REQUIRE(result.has_value());
  return std::move(*result);
}

inline transport::CanFrame test_frame(std::uint32_t id, std::size_t len, std::uint8_t seed = 0,
                                      bool fd = false) {
  transport::CanFrame f;
  f.id = id;
  f.fd = fd;
  f.len = static_cast<std::uint8_t>(len);
  for (std::size_t i = 0; i < len; ++i) f.data[i] = static_cast<std::uint8_t>(seed + i);
  return f;
}

inline bool same_frame(const transport::CanFrame& a, const transport::CanFrame& b) {
  if (a.id != b.id || a.extended != b.extended || a.fd != b.fd || a.brs != b.brs || a.len != b.len)
    return false;
  return std::equal(a.data.begin(), a.data.begin() + a.len, b.data.begin());
}

}  // namespace tollgate::test
