// vcan-check: proves, inside the tools/vm guest, that the kernel's CAN stack is usable before any
// project test runs, so a broken VM (missing module, wrong MTU, no ISO-TP) fails with a precise
// message instead of as a confusing test failure.
//
// Usage: vcan-check [CLASSIC_IFACE [FD_IFACE]]   (defaults: vcan0 vcan1)
// Checks, each printed as one "vcan-check: ... ok|FAILED: reason" line:
//   - the classic interface has MTU 16 (CAN_MTU) and the FD interface MTU 72 (CANFD_MTU);
//   - a classic frame sent on one CAN_RAW socket arrives intact on another (vcan echoes it);
//   - a 64-byte FD frame does the same on the FD interface (CAN_RAW_FD_FRAMES);
//   - the kernel's CAN_ISOTP sockets move multi-frame messages both ways, classic and FD; that
//     needs flow control from the receiving socket, so both halves of can-isotp are exercised.
// Exit status: 0 when every check passes, 1 otherwise. Every receive has a deadline, so a dead
// bus fails within seconds instead of hanging the VM until its outer timeout.
#include <linux/can.h>
#include <linux/can/isotp.h>
#include <linux/can/raw.h>
#include <net/if.h>
#include <poll.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <functional>
#include <string>
#include <utility>
#include <vector>

namespace {

constexpr int kReceiveDeadlineMs = 3000;

// Owns one descriptor; closing on every path keeps a failed check from leaking into the next one
// (a leaked ISO-TP socket bound to the same ids would consume that check's frames).
class Socket {
 public:
  Socket() = default;
  explicit Socket(int fd) : fd_(fd) {}
  Socket(Socket&& other) noexcept : fd_(other.fd_) { other.fd_ = -1; }
  Socket& operator=(Socket&& other) noexcept {
    if (this != &other) {
      reset();
      fd_ = other.fd_;
      other.fd_ = -1;
    }
    return *this;
  }
  Socket(const Socket&) = delete;
  Socket& operator=(const Socket&) = delete;
  ~Socket() { reset(); }

  int fd() const { return fd_; }
  bool valid() const { return fd_ >= 0; }

 private:
  void reset() {
    if (fd_ >= 0) close(fd_);
    fd_ = -1;
  }
  int fd_ = -1;
};

// Every helper returns an empty string on success and the reason on failure.
using Outcome = std::string;

std::string errno_text(const char* call) {
  return std::string(call) + ": " + std::strerror(errno);
}

Outcome interface_index(const std::string& name, int& index) {
  unsigned found = if_nametoindex(name.c_str());
  if (found == 0) return "interface " + name + " not found: " + std::strerror(errno);
  index = static_cast<int>(found);
  return {};
}

Outcome check_mtu(const std::string& name, int expected) {
  Socket s(socket(AF_CAN, SOCK_RAW, CAN_RAW));
  if (!s.valid()) return errno_text("socket(AF_CAN, SOCK_RAW)");
  ifreq ifr{};
  std::snprintf(ifr.ifr_name, sizeof ifr.ifr_name, "%s", name.c_str());
  if (ioctl(s.fd(), SIOCGIFMTU, &ifr) != 0) return errno_text("ioctl(SIOCGIFMTU)");
  if (ifr.ifr_mtu != expected) {
    return name + " has MTU " + std::to_string(ifr.ifr_mtu) + ", expected " +
           std::to_string(expected);
  }
  return {};
}

Outcome wait_readable(int fd) {
  pollfd p{fd, POLLIN, 0};
  int n = poll(&p, 1, kReceiveDeadlineMs);
  if (n < 0) return errno_text("poll");
  if (n == 0) return "nothing received within " + std::to_string(kReceiveDeadlineMs) + " ms";
  return {};
}

Outcome open_raw(const std::string& name, bool fd_frames, Socket& out) {
  int index = 0;
  if (Outcome e = interface_index(name, index); !e.empty()) return e;
  Socket s(socket(AF_CAN, SOCK_RAW, CAN_RAW));
  if (!s.valid()) return errno_text("socket(AF_CAN, SOCK_RAW, CAN_RAW)");
  int on = 1;
  if (fd_frames && setsockopt(s.fd(), SOL_CAN_RAW, CAN_RAW_FD_FRAMES, &on, sizeof on) != 0) {
    return errno_text("setsockopt(CAN_RAW_FD_FRAMES)");
  }
  sockaddr_can addr{};
  addr.can_family = AF_CAN;
  addr.can_ifindex = index;
  if (bind(s.fd(), reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0) {
    return errno_text("bind(CAN_RAW)");
  }
  out = std::move(s);
  return {};
}

// One frame written on one raw socket must arrive on another with the same id, length and bytes.
Outcome check_raw(const std::string& name, bool fd_frame) {
  Socket tx;
  Socket rx;
  if (Outcome e = open_raw(name, fd_frame, tx); !e.empty()) return e;
  if (Outcome e = open_raw(name, fd_frame, rx); !e.empty()) return e;

  canfd_frame sent{};
  sent.can_id = 0x6A0;
  sent.len = fd_frame ? 64 : 8;
  if (fd_frame) sent.flags = CANFD_BRS;
  for (std::uint8_t i = 0; i < sent.len; ++i) sent.data[i] = static_cast<std::uint8_t>(0xA5 ^ i);
  const std::size_t size = fd_frame ? CANFD_MTU : CAN_MTU;
  if (write(tx.fd(), &sent, size) != static_cast<ssize_t>(size)) {
    return errno_text("write(CAN_RAW)");
  }
  if (Outcome e = wait_readable(rx.fd()); !e.empty()) return e;
  canfd_frame got{};
  ssize_t n = read(rx.fd(), &got, sizeof got);
  if (n < 0) return errno_text("read(CAN_RAW)");
  if (n != static_cast<ssize_t>(size)) return "read a " + std::to_string(n) + "-byte frame";
  if (got.can_id != sent.can_id || got.len != sent.len ||
      std::memcmp(got.data, sent.data, sent.len) != 0) {
    return "received frame differs from the one sent";
  }
  return {};
}

Outcome open_isotp(const std::string& name, canid_t tx_id, canid_t rx_id, bool fd, Socket& out) {
  int index = 0;
  if (Outcome e = interface_index(name, index); !e.empty()) return e;
  Socket s(socket(AF_CAN, SOCK_DGRAM, CAN_ISOTP));
  if (!s.valid()) return errno_text("socket(AF_CAN, SOCK_DGRAM, CAN_ISOTP)");
  if (fd) {
    can_isotp_ll_options ll{};
    ll.mtu = CANFD_MTU;
    ll.tx_dl = 64;
    ll.tx_flags = CANFD_BRS;
    if (setsockopt(s.fd(), SOL_CAN_ISOTP, CAN_ISOTP_LL_OPTS, &ll, sizeof ll) != 0) {
      return errno_text("setsockopt(CAN_ISOTP_LL_OPTS)");
    }
  }
  // Block size 8 makes the sender wait for several flow-control frames per message, so the check
  // exercises the kernel's FC handling rather than a single FC for the whole transfer.
  can_isotp_fc_options fc{};
  fc.bs = 8;
  fc.stmin = 0;
  fc.wftmax = 0;
  if (setsockopt(s.fd(), SOL_CAN_ISOTP, CAN_ISOTP_RECV_FC, &fc, sizeof fc) != 0) {
    return errno_text("setsockopt(CAN_ISOTP_RECV_FC)");
  }
  sockaddr_can addr{};
  addr.can_family = AF_CAN;
  addr.can_ifindex = index;
  addr.can_addr.tp.tx_id = tx_id;
  addr.can_addr.tp.rx_id = rx_id;
  if (bind(s.fd(), reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0) {
    return errno_text("bind(CAN_ISOTP)");
  }
  out = std::move(s);
  return {};
}

std::vector<std::uint8_t> pattern(std::size_t size, std::uint8_t seed) {
  std::vector<std::uint8_t> bytes(size);
  for (std::size_t i = 0; i < size; ++i) bytes[i] = static_cast<std::uint8_t>(seed + i * 7);
  return bytes;
}

// The kernel's ISO-TP send queues the message and returns; the peer socket answers with flow
// control from softirq context, so writing first and reading afterwards needs no second thread.
Outcome transfer(const Socket& from, const Socket& to, std::size_t size, std::uint8_t seed) {
  const std::vector<std::uint8_t> sent = pattern(size, seed);
  ssize_t n = write(from.fd(), sent.data(), sent.size());
  if (n < 0) return errno_text("write(CAN_ISOTP)");
  if (static_cast<std::size_t>(n) != sent.size()) return "short ISO-TP write";
  if (Outcome e = wait_readable(to.fd()); !e.empty()) return e;
  std::vector<std::uint8_t> got(sent.size() + 1);
  n = read(to.fd(), got.data(), got.size());
  if (n < 0) return errno_text("read(CAN_ISOTP)");
  if (static_cast<std::size_t>(n) != sent.size()) {
    return "received " + std::to_string(n) + " of " + std::to_string(sent.size()) + " bytes";
  }
  got.resize(sent.size());
  if (got != sent) return "received message differs from the one sent";
  return {};
}

Outcome check_isotp(const std::string& name, bool fd, std::size_t size) {
  Socket a;
  Socket b;
  if (Outcome e = open_isotp(name, 0x6A0, 0x6A8, fd, a); !e.empty()) return e;
  if (Outcome e = open_isotp(name, 0x6A8, 0x6A0, fd, b); !e.empty()) return e;
  if (Outcome e = transfer(a, b, size, 1); !e.empty()) return "a->b: " + e;
  if (Outcome e = transfer(b, a, size, 2); !e.empty()) return "b->a: " + e;
  return {};
}

}  // namespace

int main(int argc, char** argv) {
  const std::string classic = argc > 1 ? argv[1] : "vcan0";
  const std::string fd = argc > 2 ? argv[2] : "vcan1";

  struct Check {
    std::string name;
    std::function<Outcome()> run;
  };
  const std::vector<Check> checks = {
      {classic + " mtu 16 (classic)", [&] { return check_mtu(classic, CAN_MTU); }},
      {fd + " mtu 72 (FD)", [&] { return check_mtu(fd, CANFD_MTU); }},
      {"raw classic frame on " + classic, [&] { return check_raw(classic, false); }},
      {"raw FD 64-byte frame on " + fd, [&] { return check_raw(fd, true); }},
      {"kernel ISO-TP 4095 B both ways on " + classic,
       [&] { return check_isotp(classic, false, 4095); }},
      {"kernel ISO-TP 4000 B both ways, FD, on " + fd, [&] { return check_isotp(fd, true, 4000); }},
  };

  int failed = 0;
  for (const Check& check : checks) {
    Outcome e = check.run();
    if (e.empty()) {
      std::printf("vcan-check: %s: ok\n", check.name.c_str());
    } else {
      std::printf("vcan-check: %s: FAILED: %s\n", check.name.c_str(), e.c_str());
      ++failed;
    }
    std::fflush(stdout);
  }
  std::printf("vcan-check: %s\n", failed == 0 ? "all checks passed" : "some checks FAILED");
  return failed == 0 ? 0 : 1;
}
