// SocketCAN for real: raw frames, our ISO-TP on raw sockets, the kernel's
// CAN_ISOTP, addressing variants and error paths, on vcan interfaces named by
// TOLLGATE_VCAN (classic, default vcan0) and TOLLGATE_VCANFD (FD, default vcan1).
// The size x flow-control interop matrix against the kernel is in
// it_socketcan_interop.cpp.
//
// Kernels without AF_CAN (this project's build machines) skip the vcan cases
// with a SKIP line; tools/vm runs them in a VM with Debian's kernel, where a
// missing vcan fails instead. The frame conversion cases need no CAN and always run.
#include <doctest/doctest.h>
#include <linux/can/error.h>

#include <boost/asio/co_spawn.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <cstdio>
#include <cstdlib>
#include <exception>
#include <optional>
#include <random>
#include <string>
#include <variant>
#include <vector>

#include "tests/transport/it_socketcan_support.hpp"
#include "transport/framing/crc32c.hpp"
#include "transport/links/can_interface.hpp"
#include "transport/links/endpoint.hpp"
#include "transport/links/socketcan_port.hpp"

using namespace tollgate::transport;
using namespace std::chrono_literals;
namespace asio = boost::asio;
using Bytes = std::vector<std::uint8_t>;

using namespace tollgate::test::socketcan;

namespace {

SocketCanOptions raw_opts(const std::string& iface, bool fd = false,
                          std::vector<CanIdFilter> filters = {}) {
  SocketCanOptions o;
  o.interface = iface;
  o.fd = fd;
  o.filters = std::move(filters);
  return o;
}

std::unique_ptr<SocketCanPort> must_open_port(asio::io_context& io, SocketCanOptions o) {
  auto r = SocketCanPort::open(io.get_executor(), std::move(o));
  if (r.index() != 0) FAIL("cannot open raw port: " << std::get<1>(r).message);
  return std::move(std::get<0>(r));
}

CanFrame frame_of(std::uint32_t id, const Bytes& data, bool fd = false) {
  CanFrame f;
  f.id = id;
  f.fd = fd;
  f.len = static_cast<std::uint8_t>(data.size());
  std::copy(data.begin(), data.end(), f.data.begin());
  return f;
}

// A single ISO-TP frame carrying `body` plus a CRC-32C trailer that is wrong
// when `corrupt_crc`.
CanFrame single_frame(std::uint32_t id, const Bytes& body, bool corrupt_crc) {
  Bytes payload = body;
  std::uint32_t crc = crc32c(body) ^ (corrupt_crc ? 1u : 0u);
  for (int i = 0; i < 4; ++i) payload.push_back(static_cast<std::uint8_t>(crc >> (8 * i)));
  Bytes data{static_cast<std::uint8_t>(payload.size())};
  data.insert(data.end(), payload.begin(), payload.end());
  data.resize(8, 0xCC);
  return frame_of(id, data);
}

const std::vector<std::size_t> kOurSizes = {0,   1,    3,    4,    7,    8,    62,
                                            100, 1000, 4091, 4092, 9000, 20000};
// The kernel's ISO-TP caps a message at 8200 bytes (newer kernels: max_pdu_size).
const std::vector<std::size_t> kKernelSizes = {0, 1, 3, 4, 7, 100, 1000, 4091, 4092, 8000};

}  // namespace

// --- no CAN needed ---------------------------------------------------------------------------

TEST_CASE("kernel frame conversion keeps id, format, length and data") {
  CanFrame classic = frame_of(0x6A0, {1, 2, 3});
  auto k = socketcan::to_kernel_frame(classic);
  CHECK(k.size == CAN_MTU);
  CHECK(k.data.can_id == 0x6A0);
  CHECK(k.data.len == 3);
  auto back = socketcan::from_kernel_frame(k.data, k.size);
  REQUIRE(back);
  CHECK(socketcan::same_frame(*back, classic));
  CHECK_FALSE(back->fd);

  CanFrame fd = frame_of(0x18DA10F1, pattern(48, 1), true);
  fd.extended = true;
  fd.brs = true;
  auto kf = socketcan::to_kernel_frame(fd);
  CHECK(kf.size == CANFD_MTU);
  CHECK(kf.data.can_id == (0x18DA10F1 | CAN_EFF_FLAG));
  CHECK((kf.data.flags & CANFD_BRS) != 0);
  auto fb = socketcan::from_kernel_frame(kf.data, kf.size);
  REQUIRE(fb);
  CHECK(fb->extended);
  CHECK(fb->fd);
  CHECK(fb->brs);
  CHECK(fb->id == 0x18DA10F1);
  CHECK(socketcan::same_frame(*fb, fd));
}

TEST_CASE("remote frames, error frames and odd read sizes are not data frames") {
  canfd_frame raw{};
  raw.can_id = 0x123 | CAN_RTR_FLAG;
  CHECK_FALSE(socketcan::from_kernel_frame(raw, CAN_MTU));
  raw.can_id = CAN_ERR_FLAG | CAN_ERR_BUSOFF;
  CHECK_FALSE(socketcan::from_kernel_frame(raw, CAN_MTU));
  raw.can_id = 0x123;
  CHECK_FALSE(socketcan::from_kernel_frame(raw, 10));
  raw.len = 9;
  CHECK_FALSE(socketcan::from_kernel_frame(raw, CAN_MTU));
  raw.len = 13;
  CHECK_FALSE(socketcan::from_kernel_frame(raw, CANFD_MTU));
}

TEST_CASE("only frames that fit the socket may be sent") {
  CHECK(socketcan::frame_fits(frame_of(0x7FF, Bytes(8)), false));
  CanFrame too_big_id = frame_of(0x800, {});
  CHECK_FALSE(socketcan::frame_fits(too_big_id, true));
  too_big_id.extended = true;
  CHECK(socketcan::frame_fits(too_big_id, false));
  CanFrame fd = frame_of(0x100, Bytes(64), true);
  CHECK(socketcan::frame_fits(fd, true));
  CHECK_FALSE(socketcan::frame_fits(fd, false));
  fd.len = 13;
  CHECK_FALSE(socketcan::frame_fits(fd, true));
  CanFrame classic_brs = frame_of(0x100, Bytes(8));
  classic_brs.brs = true;
  CHECK_FALSE(socketcan::frame_fits(classic_brs, true));
}

TEST_CASE("receive filters match data frames of one id format only") {
  auto std_filter = socketcan::to_kernel_filter({0x6A8, 0x7FF, false});
  CHECK(std_filter.can_id == 0x6A8);
  CHECK(std_filter.can_mask == (0x7FFu | CAN_EFF_FLAG | CAN_RTR_FLAG));
  auto ext_filter = socketcan::to_kernel_filter({0x18DAF110, 0x1FFFFFFF, true});
  CHECK(ext_filter.can_id == (0x18DAF110u | CAN_EFF_FLAG));
  CHECK(ext_filter.can_mask == (0x1FFFFFFFu | CAN_EFF_FLAG | CAN_RTR_FLAG));
}

// --- raw frames on vcan ------------------------------------------------------------------------

TEST_CASE("a raw frame reaches the other socket and is confirmed to its sender only") {
  REQUIRE_VCAN(vcan(), false);
  asio::io_context io;
  auto a = must_open_port(io, raw_opts(vcan()));
  auto b = must_open_port(io, raw_opts(vcan()));
  const CanFrame f = frame_of(0x321, {0xDE, 0xAD, 0xBE, 0xEF});
  auto [sent, got] = run_both(io, a->send_frame(f), b->receive_frame());
  REQUIRE(sent.index() == 0);
  REQUIRE(got.index() == 0);
  CHECK(socketcan::same_frame(std::get<0>(got), f));
  // The sender's confirmation came back as its own frame and was not queued.
  CHECK(a->counters().frames_received == 0);
  CHECK(a->counters().tx_unconfirmed == 0);
  // And b's answer reaches a.
  const CanFrame g = frame_of(0x322, {1});
  auto [sent2, got2] = run_both(io, b->send_frame(g), a->receive_frame());
  REQUIRE(sent2.index() == 0);
  REQUIRE(got2.index() == 0);
  CHECK(socketcan::same_frame(std::get<0>(got2), g));
}

TEST_CASE("CAN FD frames with bit rate switch cross vcan intact") {
  REQUIRE_VCAN(vcanfd(), true);
  asio::io_context io;
  auto a = must_open_port(io, raw_opts(vcanfd(), true));
  auto b = must_open_port(io, raw_opts(vcanfd(), true));
  CHECK(a->fd_capable());
  for (std::uint8_t len : {0, 8, 12, 20, 48, 64}) {
    CAPTURE(int{len});
    CanFrame f = frame_of(0x1ABCDE, pattern(len, len), true);
    f.extended = true;
    f.brs = (len % 2) == 0;
    auto [sent, got] = run_both(io, a->send_frame(f), b->receive_frame());
    REQUIRE(sent.index() == 0);
    REQUIRE(got.index() == 0);
    const CanFrame& r = std::get<0>(got);
    CHECK(socketcan::same_frame(r, f));
    CHECK(r.brs == f.brs);
    CHECK(r.extended);
  }
}

TEST_CASE("a raw port refuses frames its socket cannot carry") {
  REQUIRE_VCAN(vcan(), false);
  asio::io_context io;
  auto a = must_open_port(io, raw_opts(vcan()));
  CHECK_FALSE(a->fd_capable());
  auto r = run(io, a->send_frame(frame_of(0x100, Bytes(12), true)));
  REQUIRE(r.index() == 1);
  CHECK(std::get<1>(r) == LinkError::kInvalidArgument);
}

TEST_CASE("receive filters keep other ids away from a raw port") {
  REQUIRE_VCAN(vcan(), false);
  asio::io_context io;
  auto a = must_open_port(io, raw_opts(vcan()));
  auto b = must_open_port(io, raw_opts(vcan(), false, {{0x200, 0x7FF, false}}));
  (void)run(io, a->send_frame(frame_of(0x100, {1})));
  (void)run(io, a->send_frame(frame_of(0x200, {2})));
  auto got = run(io, b->receive_frame());
  REQUIRE(got.index() == 0);
  CHECK(std::get<0>(got).id == 0x200);
}

TEST_CASE("frames beyond a full receive queue are reported as one overflow") {
  REQUIRE_VCAN(vcan(), false);
  asio::io_context io;
  auto a = must_open_port(io, raw_opts(vcan()));
  auto opts = raw_opts(vcan());
  opts.rx_queue_frames = 2;
  auto b = must_open_port(io, opts);
  for (std::uint8_t i = 0; i < 5; ++i)
    REQUIRE(run(io, a->send_frame(frame_of(0x300, {i}))).index() == 0);
  // b's reader has seen all five once the last confirmation reached a (same interface).
  for (std::uint8_t i = 0; i < 2; ++i) {
    auto f = run(io, b->receive_frame());
    REQUIRE(f.index() == 0);
    CHECK(std::get<0>(f).data[0] == i);
  }
  auto lost = run(io, b->receive_frame());
  REQUIRE(lost.index() == 1);
  CHECK(std::get<1>(lost) == LinkError::kOverflow);
  CHECK(b->counters().rx_dropped == 3);
  REQUIRE(run(io, a->send_frame(frame_of(0x300, {9}))).index() == 0);
  auto next = run(io, b->receive_frame());
  REQUIRE(next.index() == 0);
  CHECK(std::get<0>(next).data[0] == 9);
}

TEST_CASE("fd=1 on a classic interface fails naming the fix") {
  REQUIRE_VCAN(vcan(), false);
  asio::io_context io;
  auto r = open_link(io.get_executor(), "can:" + vcan() + "?tx=0x6A0&rx=0x6A8&fd=1");
  REQUIRE(r.index() == 1);
  CHECK(std::get<1>(r).message.find("mtu 72") != std::string::npos);
  auto k = open_link(io.get_executor(), "isotp:" + vcan() + "?tx=0x6A0&rx=0x6A8&fd=1");
  REQUIRE(k.index() == 1);
  CHECK(std::get<1>(k).message.find("mtu 72") != std::string::npos);
}

// --- our ISO-TP on raw vcan -----------------------------------------------------------------

TEST_CASE("our ISO-TP carries messages both ways on raw classic CAN") {
  REQUIRE_VCAN(vcan(), false);
  asio::io_context io;
  auto a = must_open(io, "can:" + vcan() + "?tx=0x6A0&rx=0x6A8");
  auto b = must_open(io, "can:" + vcan() + "?tx=0x6A8&rx=0x6A0");
  exchange(io, *a, *b, kOurSizes, 1);
  exchange(io, *b, *a, kOurSizes, 2);
}

TEST_CASE("our ISO-TP carries messages both ways on raw CAN FD") {
  REQUIRE_VCAN(vcanfd(), true);
  asio::io_context io;
  auto a = must_open(io, "can:" + vcanfd() + "?tx=0x6A0&rx=0x6A8&fd=1");
  auto b = must_open(io, "can:" + vcanfd() + "?tx=0x6A8&rx=0x6A0&fd=1");
  exchange(io, *a, *b, kOurSizes, 3);
  exchange(io, *b, *a, kOurSizes, 4);
}

TEST_CASE("our ISO-TP with block size, STmin and no padding still delivers exact payloads") {
  REQUIRE_VCAN(vcan(), false);
  asio::io_context io;
  auto a = must_open(io, "can:" + vcan() + "?tx=0x6A0&rx=0x6A8&pad=0&bs=1");
  auto b = must_open(io, "can:" + vcan() + "?tx=0x6A8&rx=0x6A0&pad=0&bs=8&stmin=0xF1");
  exchange(io, *a, *b, {0, 5, 300}, 5);
  exchange(io, *b, *a, {0, 5, 300}, 6);
}

// --- the kernel's ISO-TP --------------------------------------------------------------------

TEST_CASE("the kernel's ISO-TP carries messages both ways on classic CAN") {
  REQUIRE_VCAN(vcan(), false);
  asio::io_context io;
  auto a = must_open(io, "isotp:" + vcan() + "?tx=0x6B0&rx=0x6B8");
  auto b = must_open(io, "isotp:" + vcan() + "?tx=0x6B8&rx=0x6B0");
  exchange(io, *a, *b, kKernelSizes, 7);
  exchange(io, *b, *a, kKernelSizes, 8);
}

TEST_CASE("the kernel's ISO-TP carries messages both ways on CAN FD") {
  REQUIRE_VCAN(vcanfd(), true);
  asio::io_context io;
  auto a = must_open(io, "isotp:" + vcanfd() + "?tx=0x6B0&rx=0x6B8&fd=1");
  auto b = must_open(io, "isotp:" + vcanfd() + "?tx=0x6B8&rx=0x6B0&fd=1");
  exchange(io, *a, *b, kKernelSizes, 9);
  exchange(io, *b, *a, kKernelSizes, 10);
}

// --- both implementations on one bus (every size and flow-control setting: it_socketcan_interop)
// --

TEST_CASE("29-bit ids and extended addressing interoperate with the kernel") {
  REQUIRE_VCAN(vcan(), false);
  asio::io_context io;
  auto ours = must_open(io, "can:" + vcan() + "?tx=0x18DA10F1&rx=0x18DAF110&ext=1&ta=0x10&ra=0xF1");
  auto kernel =
      must_open(io, "isotp:" + vcan() + "?tx=0x18DAF110&rx=0x18DA10F1&ext=1&ta=0xF1&ra=0x10");
  exchange(io, *ours, *kernel, {0, 2, 100, 1000}, 15);
  exchange(io, *kernel, *ours, {0, 2, 100, 1000}, 16);
}

// --- errors ------------------------------------------------------------------------------------

TEST_CASE("a message with a wrong CRC is reported as bad CRC and the link stays usable") {
  REQUIRE_VCAN(vcan(), false);
  asio::io_context io;
  auto raw = must_open_port(io, raw_opts(vcan()));
  auto ours = must_open(io, "can:" + vcan() + "?tx=0x6D8&rx=0x6D0");
  auto kernel = must_open(io, "isotp:" + vcan() + "?tx=0x6E8&rx=0x6E0");
  for (auto [id, link] : {std::pair{0x6D0u, ours.get()}, std::pair{0x6E0u, kernel.get()}}) {
    CAPTURE(link->describe());
    REQUIRE(run(io, raw->send_frame(single_frame(id, {0x42}, true))).index() == 0);
    auto bad = run(io, link->receive(kGuard));
    REQUIRE(bad.index() == 1);
    CHECK(std::get<1>(bad) == LinkError::kBadCrc);
    REQUIRE(run(io, raw->send_frame(single_frame(id, {0x43}, false))).index() == 0);
    auto good = run(io, link->receive(kGuard));
    REQUIRE(good.index() == 0);
    CHECK(std::get<0>(good) == Bytes{0x43});
  }
}

TEST_CASE("a receive with nothing on the bus ends with kDeadline") {
  REQUIRE_VCAN(vcan(), false);
  asio::io_context io;
  for (std::string ep :
       {"can:" + vcan() + "?tx=0x6F0&rx=0x6F8", "isotp:" + vcan() + "?tx=0x6F0&rx=0x6F8"}) {
    CAPTURE(ep);
    auto link = must_open(io, ep);
    auto r = run(io, link->receive(50ms));
    REQUIRE(r.index() == 1);
    CHECK(std::get<1>(r) == LinkError::kDeadline);
  }
}

TEST_CASE("a multi-frame send nobody answers fails with an N_Bs timeout") {
  REQUIRE_VCAN(vcan(), false);
  asio::io_context io;
  // The kernel's N_Bs is fixed at 1 s; ours comes from the endpoint.
  for (std::string ep : {"can:" + vcan() + "?tx=0x700&rx=0x708&nbs=100ms",
                         "isotp:" + vcan() + "?tx=0x710&rx=0x718"}) {
    CAPTURE(ep);
    auto link = must_open(io, ep);
    auto r = run(io, link->send(pattern(100, 17), kGuard));
    REQUIRE(r.index() == 1);
    CHECK(std::get<1>(r) == LinkError::kTimeoutBs);
  }
}

TEST_CASE("a message over the kernel's ISO-TP cap fails as too large") {
  REQUIRE_VCAN(vcan(), false);
  asio::io_context io;
  auto link = must_open(io, "isotp:" + vcan() + "?tx=0x720&rx=0x728");
  auto r = run(io, link->send(pattern(200'000, 18), kGuard));
  REQUIRE(r.index() == 1);
  CHECK(std::get<1>(r) == LinkError::kTooLarge);
}

TEST_CASE("vcan has no controller: can-config queries fail saying so") {
  REQUIRE_VCAN(vcan(), false);
  auto state = get_can_state(vcan());
  REQUIRE(state.index() == 1);
  CHECK(std::get<1>(state).message.find("virtual CAN") != std::string::npos);
  auto berr = get_can_berr(vcan());
  REQUIRE(berr.index() == 1);
  auto info = lookup_can_interface(vcan());
  REQUIRE(info.index() == 0);
  CHECK(std::get<0>(info).mtu == CAN_MTU);
  if (!skip_reason(vcanfd(), true)) {
    auto fd = lookup_can_interface(vcanfd());
    REQUIRE(fd.index() == 0);
    CHECK(std::get<0>(fd).fd_capable);
  }
}
