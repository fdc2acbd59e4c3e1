// IsoTpLink, the CAN message link: our ISO-TP plus a CRC-32C trailer over any
// CanFramePort. Round trips through the airtime hub; every failure path
// through an in-memory port pair whose wire the tests tamper with.
#include <doctest/doctest.h>

#include "tests/transport/it_isotp_link_support.hpp"
#include "transport/framing/crc32c.hpp"

namespace {

using namespace tollgate;
using namespace tollgate::test;
using namespace tollgate::transport;

using Bytes = std::vector<std::uint8_t>;

asio::awaitable<LinkResult<Done>> send(IsoTpLink& link, Bytes m,
                                       MessageLink::Duration t = std::chrono::seconds(5)) {
  co_return co_await link.send(std::move(m), t);
}
asio::awaitable<LinkResult<Bytes>> receive(IsoTpLink& link,
                                           MessageLink::Duration t = std::chrono::seconds(5)) {
  co_return co_await link.receive(t);
}

// Sends on `from` while `to` receives, and returns what `to` got.
asio::awaitable<std::pair<LinkResult<Done>, LinkResult<Bytes>>> exchange(IsoTpLink& from,
                                                                         IsoTpLink& to, Bytes m) {
  auto sent = co_await from.send(std::move(m), std::chrono::seconds(5));
  auto got = co_await to.receive(std::chrono::seconds(5));
  co_return std::make_pair(std::move(sent), std::move(got));
}

bool is_pci_type(const CanFrame& f, unsigned type) {
  return f.len > 0 && (f.data[0] >> 4) == type;
}

}  // namespace

TEST_CASE("messages of every size class round trip both ways through the airtime hub") {
  for (const bool fd : {false, true}) {
    CAPTURE(fd);
    bus::HubOptions o;
    o.bitrate = 1000000;
    o.fd_data_bitrate = 5000000;
    HubProcess hub(o);
    asio::io_context io;
    auto a = vbus_link(io, hub.socket_path(), channel(0x6A0, 0x6A8, fd));
    auto b = vbus_link(io, hub.socket_path(), channel(0x6A8, 0x6A0, fd));
    for (std::size_t n :
         {0UL, 1UL, 3UL, 4UL, 7UL, 50UL, 58UL, 59UL, 60UL, 500UL, 4091UL, 4092UL, 7000UL}) {
      CAPTURE(n);
      const Bytes m = pattern(n, static_cast<std::uint32_t>(n));
      auto [sent, got] = run_coroutine(io, exchange(*a, *b, m));
      CHECK(sent.index() == 0);
      REQUIRE(got.index() == 0);
      CHECK(std::get<0>(got) == m);
      auto [back_sent, back] = run_coroutine(io, exchange(*b, *a, m));
      CHECK(back_sent.index() == 0);
      REQUIRE(back.index() == 0);
      CHECK(std::get<0>(back) == m);
    }
    CHECK(a->counters().messages_sent == 13);
    CHECK(b->counters().messages_received == 13);
    CHECK(a->describe().rfind("vbus:", 0) == 0);
  }
}

TEST_CASE("send completes only after the last frame went out, with the standard's frame count") {
  bus::HubOptions o;
  o.bitrate = 1000000;
  HubProcess hub(o);
  asio::io_context io;
  auto a = vbus_link(io, hub.socket_path(), channel(0x6A0, 0x6A8));
  auto b = vbus_link(io, hub.socket_path(), channel(0x6A8, 0x6A0));
  const Bytes m = pattern(1000, 1);
  REQUIRE(run_coroutine(io, send(*a, m)).index() == 0);
  auto stats = run_coroutine(io, dynamic_cast<VbusPort&>(a->port()).request_stats());
  REQUIRE(stats.index() == 0);
  // 1000 bytes + the 4-byte CRC: FF + 143 CFs + 1 FC, all on the bus already.
  CHECK(std::get<0>(stats).frames ==
        isotp_min_frames(1004, bus_profile(channel(0x6A0, 0x6A8))).total());
  CHECK(std::get<0>(stats).frames == 145);
  CHECK(a->counters().frames_sent == 144);
  auto got = run_coroutine(io, receive(*b));
  REQUIRE(got.index() == 0);
  CHECK(std::get<0>(got) == m);
}

TEST_CASE("the CRC-32C trailer travels little-endian inside the ISO-TP payload") {
  asio::io_context io;
  auto pair = memory_links(io, channel(0x6A0, 0x6A8), channel(0x6A8, 0x6A0));
  std::vector<CanFrame> wire;
  pair.port_a->on_wire = [&](CanFrame& f) {
    wire.push_back(f);
    return true;
  };
  const Bytes m = {0x31, 0x32, 0x33};
  auto [sent, got] = run_coroutine(io, exchange(*pair.a, *pair.b, m));
  REQUIRE(got.index() == 0);
  REQUIRE(wire.size() == 1);
  CHECK(crc32c(m) == 0x107B2FB2U);
  // SF_DL 7 = 3 + 4, the message, then its CRC-32C low byte first.
  const Bytes on_bus(wire[0].data.begin(), wire[0].data.begin() + 8);
  CHECK(on_bus == Bytes{0x07, 0x31, 0x32, 0x33, 0xB2, 0x2F, 0x7B, 0x10});
}

TEST_CASE("a byte altered behind the CAN CRC surfaces as kBadCrc and is never delivered") {
  asio::io_context io;
  auto pair = memory_links(io, channel(0x6A0, 0x6A8), channel(0x6A8, 0x6A0));
  int consecutive = 0;
  pair.port_a->on_wire = [&](CanFrame& f) {
    if (is_pci_type(f, 2) && ++consecutive == 5) f.data[3] ^= 0x01;  // one bit in the 5th CF
    return true;
  };
  auto [sent, got] = run_coroutine(io, exchange(*pair.a, *pair.b, pattern(300, 2)));
  CHECK(sent.index() == 0);  // the sender cannot know
  CHECK(error_of(got) == LinkError::kBadCrc);
  CHECK(pair.b->counters().bad_crc == 1);
  // The link goes on.
  const Bytes m = pattern(300, 3);
  auto [sent2, got2] = run_coroutine(io, exchange(*pair.a, *pair.b, m));
  REQUIRE(got2.index() == 0);
  CHECK(std::get<0>(got2) == m);
}

TEST_CASE("a lost consecutive frame surfaces as kWrongSequence and the link recovers") {
  asio::io_context io;
  auto pair = memory_links(io, channel(0x6A0, 0x6A8), channel(0x6A8, 0x6A0));
  int consecutive = 0;
  pair.port_a->on_wire = [&](CanFrame& f) { return !(is_pci_type(f, 2) && ++consecutive == 3); };
  auto [sent, got] = run_coroutine(io, exchange(*pair.a, *pair.b, pattern(200, 4)));
  CHECK(sent.index() == 0);
  CHECK(error_of(got) == LinkError::kWrongSequence);
  const Bytes m = pattern(200, 5);
  auto [sent2, got2] = run_coroutine(io, exchange(*pair.a, *pair.b, m));
  REQUIRE(got2.index() == 0);
  CHECK(std::get<0>(got2) == m);
}

TEST_CASE("a lost last frame surfaces as kTimeoutCr at the receiver") {
  asio::io_context io;
  auto cb = channel(0x6A8, 0x6A0);
  cb.n_cr_us = 50'000;
  auto pair = memory_links(io, channel(0x6A0, 0x6A8), cb);
  int consecutive = 0;
  pair.port_a->on_wire = [&](CanFrame& f) { return !(is_pci_type(f, 2) && ++consecutive == 2); };
  // 14 + 4 bytes: FF (6) + CF (7) + CF (5); the second CF is lost.
  auto [sent, got] = run_coroutine(io, exchange(*pair.a, *pair.b, pattern(14, 6)));
  CHECK(sent.index() == 0);
  CHECK(error_of(got) == LinkError::kTimeoutCr);
}

TEST_CASE("no flow control from the peer: the send fails with kTimeoutBs") {
  asio::io_context io;
  auto ca = channel(0x6A0, 0x6A8);
  ca.n_bs_us = 50'000;
  auto cb = channel(0x6A8, 0x6A0);
  cb.n_cr_us = 100'000;
  auto pair = memory_links(io, ca, cb);
  pair.port_b->on_wire = [](CanFrame&) { return false; };  // B's flow control never arrives
  CHECK(error_of(run_coroutine(io, send(*pair.a, pattern(100, 7)))) == LinkError::kTimeoutBs);
  // B saw a first frame, then nothing: its reception times out too.
  CHECK(error_of(run_coroutine(io, receive(*pair.b))) == LinkError::kTimeoutCr);
  pair.port_b->on_wire = nullptr;
  const Bytes m = pattern(100, 8);
  auto [sent, got] = run_coroutine(io, exchange(*pair.a, *pair.b, m));
  CHECK(sent.index() == 0);
  REQUIRE(got.index() == 0);
  CHECK(std::get<0>(got) == m);
}

TEST_CASE("a message over the receiver's cap is refused with kOverflow on both sides") {
  asio::io_context io;
  auto cb = channel(0x6A8, 0x6A0);
  cb.max_rx_size = 104;
  auto pair = memory_links(io, channel(0x6A0, 0x6A8), cb);
  auto [sent, got] = run_coroutine(io, exchange(*pair.a, *pair.b, pattern(101, 9)));
  CHECK(error_of(sent) == LinkError::kOverflow);
  CHECK(error_of(got) == LinkError::kOverflow);
  // 100 bytes + CRC fit exactly.
  auto [sent2, got2] = run_coroutine(io, exchange(*pair.a, *pair.b, pattern(100, 10)));
  CHECK(sent2.index() == 0);
  CHECK(got2.index() == 0);
}

TEST_CASE("a port that refuses a frame fails the send with kTransmitFailed") {
  asio::io_context io;
  auto pair = memory_links(io, channel(0x6A0, 0x6A8), channel(0x6A8, 0x6A0));
  int n = 0;
  pair.port_a->refuse_tx = [&](const CanFrame&) { return ++n == 4; };
  CHECK(error_of(run_coroutine(io, send(*pair.a, pattern(100, 11)))) == LinkError::kTransmitFailed);
  pair.port_a->refuse_tx = nullptr;
  CHECK(run_coroutine(io, send(*pair.a, pattern(100, 12))).index() == 0);
}

TEST_CASE("the caller's deadlines end send and receive with kDeadline, and the link goes on") {
  asio::io_context io;
  auto pair = memory_links(io, channel(0x6A0, 0x6A8), channel(0x6A8, 0x6A0));
  CHECK(error_of(run_coroutine(io, receive(*pair.b, std::chrono::milliseconds(20)))) ==
        LinkError::kDeadline);
  pair.port_b->on_wire = [](CanFrame&) { return false; };  // no flow control; N_Bs is 1 s
  CHECK(error_of(run_coroutine(io, send(*pair.a, pattern(100, 13),
                                        std::chrono::milliseconds(30)))) == LinkError::kDeadline);
  pair.port_b->on_wire = nullptr;
  // B's half-received message is replaced by the next one (and reported).
  const Bytes m = pattern(100, 14);
  auto [sent, got] = run_coroutine(io, exchange(*pair.a, *pair.b, m));
  CHECK(sent.index() == 0);
  CHECK(error_of(got) == LinkError::kUnexpectedFrame);
  auto again = run_coroutine(io, receive(*pair.b));
  REQUIRE(again.index() == 0);
  CHECK(std::get<0>(again) == m);
}

TEST_CASE("a second send while one is in progress is refused") {
  asio::io_context io;
  auto pair = memory_links(io, channel(0x6A0, 0x6A8), channel(0x6A8, 0x6A0));
  auto results = run_coroutine(io, [&]() -> asio::awaitable<std::vector<int>> {
    std::vector<int> out;
    auto first = std::make_shared<std::optional<LinkResult<Done>>>();
    asio::co_spawn(io, pair.a->send(pattern(500, 15), std::chrono::seconds(5)),
                   [first](std::exception_ptr, LinkResult<Done> r) { *first = r; });
    co_await asio::post(io, asio::use_awaitable);  // the first send is under way
    auto second = co_await pair.a->send(pattern(10, 16), std::chrono::seconds(5));
    out.push_back(second.index() == 1 && std::get<1>(second) == LinkError::kInvalidArgument);
    while (!*first) co_await asio::post(io, asio::use_awaitable);
    out.push_back(first->value().index() == 0);
    co_return out;
  }());
  CHECK(results == std::vector<int>{1, 1});
}

TEST_CASE("received messages wait in a bounded queue; an overflow is reported, not hidden") {
  asio::io_context io;
  auto ca = channel(0x6A0, 0x6A8);
  auto cb = channel(0x6A8, 0x6A0);
  auto pa = std::make_unique<MemoryPort>(io.get_executor(), false);
  auto pb = std::make_unique<MemoryPort>(io.get_executor(), false);
  MemoryPort::join(*pa, *pb);
  IsoTpLinkOptions oa, ob;
  oa.isotp = ca;
  ob.isotp = cb;
  ob.max_rx_queue = 3;
  auto a = std::move(std::get<0>(IsoTpLink::create(std::move(pa), oa)));
  auto b = std::move(std::get<0>(IsoTpLink::create(std::move(pb), ob)));
  for (std::uint32_t i = 0; i < 5; ++i)
    REQUIRE(run_coroutine(io, send(*a, pattern(20, i))).index() == 0);
  CHECK(error_of(run_coroutine(io, receive(*b))) == LinkError::kOverflow);
  for (std::uint32_t i = 2; i < 5; ++i) {  // the newest three
    auto r = run_coroutine(io, receive(*b));
    REQUIRE(r.index() == 0);
    CHECK(std::get<0>(r) == pattern(20, i));
  }
  CHECK(b->counters().rx_queue_overflow == 2);
}

TEST_CASE("closing a link ends a pending receive with kClosed") {
  asio::io_context io;
  auto pair = memory_links(io, channel(0x6A0, 0x6A8), channel(0x6A8, 0x6A0));
  auto r = run_coroutine(io, [&]() -> asio::awaitable<LinkResult<Bytes>> {
    asio::post(io, [&] { pair.b->close(); });
    co_return co_await pair.b->receive(std::chrono::seconds(5));
  }());
  CHECK(error_of(r) == LinkError::kClosed);
  CHECK(error_of(run_coroutine(io, send(*pair.b, {1}))) == LinkError::kClosed);
}

TEST_CASE("a link refuses configurations its port cannot carry") {
  asio::io_context io;
  auto port = std::make_unique<MemoryPort>(io.get_executor(), false);
  IsoTpLinkOptions o;
  o.isotp = channel(0x6A0, 0x6A8, true);  // FD on a classic port
  CHECK(error_of(IsoTpLink::create(std::move(port), o)) == LinkError::kInvalidArgument);
  auto port2 = std::make_unique<MemoryPort>(io.get_executor(), false);
  o.isotp = channel(0x800, 0x6A8);  // 11-bit id out of range
  CHECK(error_of(IsoTpLink::create(std::move(port2), o)) == LinkError::kInvalidArgument);
  auto port3 = std::make_unique<MemoryPort>(io.get_executor(), false);
  o.isotp = channel(0x6A0, 0x6A8);
  o.tx_window = 0;
  CHECK(error_of(IsoTpLink::create(std::move(port3), o)) == LinkError::kInvalidArgument);
}

TEST_CASE("frames for other identifiers are ignored, so links share one bus") {
  bus::HubOptions o;
  o.no_airtime = true;
  HubProcess hub(o);
  asio::io_context io;
  auto a1 = vbus_link(io, hub.socket_path(), channel(0x600, 0x608));
  auto b1 = vbus_link(io, hub.socket_path(), channel(0x608, 0x600));
  auto a2 = vbus_link(io, hub.socket_path(), channel(0x700, 0x708));
  auto b2 = vbus_link(io, hub.socket_path(), channel(0x708, 0x700));
  const Bytes m1 = pattern(300, 17), m2 = pattern(900, 18);
  auto r = run_coroutine(io, [&]() -> asio::awaitable<bool> {
    // Both transfers at once, interleaved on the bus by arbitration.
    auto second = std::make_shared<std::optional<LinkResult<Done>>>();
    asio::co_spawn(io, a2->send(m2, std::chrono::seconds(5)),
                   [second](std::exception_ptr, LinkResult<Done> res) { *second = res; });
    auto first = co_await a1->send(m1, std::chrono::seconds(5));
    auto got1 = co_await b1->receive(std::chrono::seconds(5));
    auto got2 = co_await b2->receive(std::chrono::seconds(5));
    while (!*second) co_await asio::post(io, asio::use_awaitable);
    co_return first.index() == 0 && second->value().index() == 0 && got1.index() == 0 &&
        std::get<0>(got1) == m1&& got2.index() == 0 && std::get<0>(got2) == m2;
  }());
  CHECK(r);
}

TEST_CASE("a deadline of Duration::max() means wait for ever, not an overflowed clock") {
  asio::io_context io;
  auto pair = memory_links(io, channel(0x6A0, 0x6A8), channel(0x6A8, 0x6A0));
  const Bytes m = pattern(100, 19);
  auto r = run_coroutine(io, [&]() -> asio::awaitable<LinkResult<Bytes>> {
    auto sent = co_await pair.a->send(m, MessageLink::Duration::max());
    CHECK(sent.index() == 0);
    co_return co_await pair.b->receive(MessageLink::Duration::max());
  }());
  REQUIRE(r.index() == 0);
  CHECK(std::get<0>(r) == m);
}
