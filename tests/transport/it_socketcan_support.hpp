// Shared by the SocketCAN integration tests (it_socketcan*.cpp): the vcan
// interfaces to use, the skip rule, and helpers that drive links to completion.
//
// Interfaces come from TOLLGATE_VCAN (classic, default vcan0) and
// TOLLGATE_VCANFD (FD, default vcan1). Where the kernel has no AF_CAN the vcan
// cases print one SKIP line and pass; inside tools/vm (TOLLGATE_IN_VM=1) the
// same condition fails the case instead, so a broken VM never looks green.
#pragma once

#include <doctest/doctest.h>

#include <boost/asio/co_spawn.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <exception>
#include <fstream>
#include <optional>
#include <random>
#include <string>
#include <utility>
#include <variant>
#include <vector>

#include "transport/links/can_interface.hpp"
#include "transport/links/endpoint.hpp"
#include "transport/links/socketcan_port.hpp"

namespace tollgate::test::socketcan {

namespace asio = boost::asio;
using namespace std::chrono_literals;
using Bytes = std::vector<std::uint8_t>;
using transport::LinkError;
using transport::MessageLink;

inline std::string env_or(const char* name, const char* fallback) {
  const char* v = std::getenv(name);
  return v != nullptr && *v != '\0' ? v : fallback;
}
inline std::string vcan() {
  return env_or("TOLLGATE_VCAN", "vcan0");
}
inline std::string vcanfd() {
  return env_or("TOLLGATE_VCANFD", "vcan1");
}
inline bool in_vm() {
  return env_or("TOLLGATE_IN_VM", "") == "1";
}

// Why the vcan cases cannot run here, or nullopt when they can.
inline std::optional<std::string> skip_reason(const std::string& iface, bool need_fd) {
  if (auto why = transport::af_can_unavailable_reason(); !why.empty()) return why;
  auto info = transport::lookup_can_interface(iface);
  if (info.index() != 0) {
    return std::get<1>(info).message + " (create it: ip link add dev " + iface + " type vcan" +
           (need_fd ? " && ip link set " + iface + " mtu 72" : "") + " && ip link set " + iface +
           " up; or set TOLLGATE_VCAN / TOLLGATE_VCANFD)";
  }
  if (need_fd && !std::get<0>(info).fd_capable) {
    return iface + " is not a CAN FD interface (ip link set " + iface + " mtu 72)";
  }
  if (!std::get<0>(info).up) return iface + " is down (ip link set " + iface + " up)";
  return std::nullopt;
}

inline void say_skip(const std::string& why) {
  static bool said = false;
  if (!said) std::printf("SKIP: SocketCAN cases: %s\n", why.c_str());
  said = true;
}

// Skips the calling test case (the reason is printed once per process); fails
// it inside tools/vm, where vcan0/vcan1 must exist.
#define REQUIRE_VCAN(iface, fd)                                                \
  do {                                                                         \
    if (auto why_ = ::tollgate::test::socketcan::skip_reason((iface), (fd))) { \
      if (::tollgate::test::socketcan::in_vm())                                \
        FAIL("in the VM, yet vcan is unusable: " << *why_);                    \
      ::tollgate::test::socketcan::say_skip(*why_);                            \
      return;                                                                  \
    }                                                                          \
  } while (0)

// Runs `aw` to completion on `io`; the other work on `io` (readers) keeps going.
template <class T>
T run(asio::io_context& io, asio::awaitable<T> aw) {
  std::optional<T> out;
  std::exception_ptr err;
  io.restart();  // a previous run may have drained the context, which stops it
  asio::co_spawn(io, std::move(aw), [&](std::exception_ptr e, T v) {
    err = e;
    if (!e) out.emplace(std::move(v));
  });
  while (!out && !err) {
    if (io.run_one() == 0) FAIL("io_context ran out of work before the operation completed");
  }
  if (err) std::rethrow_exception(err);
  return std::move(*out);
}

// Runs two operations concurrently (a send on one link, a receive on another).
template <class A, class B>
std::pair<A, B> run_both(asio::io_context& io, asio::awaitable<A> a, asio::awaitable<B> b) {
  std::optional<A> ra;
  std::optional<B> rb;
  std::exception_ptr err;
  io.restart();
  asio::co_spawn(io, std::move(a), [&](std::exception_ptr e, A v) {
    if (e)
      err = e;
    else
      ra.emplace(std::move(v));
  });
  asio::co_spawn(io, std::move(b), [&](std::exception_ptr e, B v) {
    if (e)
      err = e;
    else
      rb.emplace(std::move(v));
  });
  while ((!ra || !rb) && !err) {
    if (io.run_one() == 0) FAIL("io_context ran out of work before the operations completed");
  }
  if (err) std::rethrow_exception(err);
  return {std::move(*ra), std::move(*rb)};
}

inline Bytes pattern(std::size_t n, std::uint32_t seed) {
  std::mt19937 rng(seed);
  Bytes b(n);
  for (auto& x : b) x = static_cast<std::uint8_t>(rng());
  return b;
}

inline std::unique_ptr<MessageLink> must_open(asio::io_context& io, const std::string& ep) {
  auto r = transport::open_link(io.get_executor(), ep);
  if (r.index() != 0) FAIL("cannot open " << ep << ": " << std::get<1>(r).message);
  return std::move(std::get<0>(r));
}

inline std::string err_name(LinkError e) {
  return std::string(transport::link_error_name(e));
}

// Deadlines only guard against hangs: sanitizers under qemu's TCG run ~10x slower.
constexpr auto kGuard = 60s;

// Sends each size from `a` to `b` and checks the exact bytes arrive.
inline void exchange(asio::io_context& io, MessageLink& a, MessageLink& b,
                     const std::vector<std::size_t>& sizes, std::uint32_t seed) {
  for (std::size_t n : sizes) {
    CAPTURE(n);
    CAPTURE(a.describe());
    CAPTURE(b.describe());
    const Bytes msg = pattern(n, seed + static_cast<std::uint32_t>(n));
    auto [sent, got] = run_both(io, a.send(msg, kGuard), b.receive(kGuard));
    REQUIRE_MESSAGE(sent.index() == 0, "send failed: " << err_name(std::get<1>(sent)));
    REQUIRE_MESSAGE(got.index() == 0, "receive failed: " << err_name(std::get<1>(got)));
    REQUIRE(std::get<0>(got) == msg);
  }
}

// The largest ISO-TP PDU (our message plus its 4-byte CRC) the kernel's
// CAN_ISOTP accepts here: the can_isotp module's max_pdu_size (Linux 6.2+), or
// the fixed 8200 bytes of older kernels, which have no such parameter.
inline std::size_t kernel_isotp_max_pdu() {
  std::ifstream in("/sys/module/can_isotp/parameters/max_pdu_size");
  std::size_t n = 0;
  if (in >> n) return n;
  return 8200;
}

}  // namespace tollgate::test::socketcan
