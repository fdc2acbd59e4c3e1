// The virtual CAN bus hub, run in a child process and driven through its
// socket protocol by several nodes: delivery, airtime, arbitration, faults,
// captures, counters, caps and protocol violations.
#include <doctest/doctest.h>

#include <algorithm>
#include <random>
#include <thread>

#include "tests/transport/it_hub_support.hpp"
#include "transport/framing/airtime.hpp"
#include "transport/framing/capture.hpp"
#include "transport/links/vbus_port.hpp"

namespace {

using namespace tollgate;
using namespace tollgate::test;
using namespace tollgate::transport;
using namespace tollgate::transport::hub;

bus::HubOptions fast_hub() {
  bus::HubOptions o;
  o.no_airtime = true;
  o.seed = 1;
  return o;
}

// All Transmits in one write, so the hub queues them before the bus starts.
void transmit_all(RawNode& node, const std::vector<CanFrame>& frames, std::uint32_t first_tag = 1) {
  std::vector<std::uint8_t> bytes;
  for (std::size_t i = 0; i < frames.size(); ++i)
    encode_to(Transmit{first_tag + static_cast<std::uint32_t>(i), frames[i]}, bytes);
  node.send_bytes(bytes);
}

std::vector<CanFrame> random_frames(std::size_t n, std::uint32_t id, unsigned seed) {
  std::mt19937 rng(seed);
  std::vector<CanFrame> frames;
  for (std::size_t i = 0; i < n; ++i) {
    CanFrame f = test_frame(id, rng() % 9);
    for (std::size_t k = 0; k < f.len; ++k) f.data[k] = static_cast<std::uint8_t>(rng());
    frames.push_back(f);
  }
  return frames;
}

BusRates rates_of(const bus::HubOptions& o) {
  return {o.bitrate, o.fd_data_bitrate != 0 ? o.fd_data_bitrate : o.bitrate};
}

}  // namespace

TEST_CASE("a frame reaches every other node, never its sender, and is then confirmed") {
  HubProcess hub(fast_hub());
  RawNode a(hub.socket_path()), b(hub.socket_path()), c(hub.socket_path());
  const auto wa = a.hello();
  b.hello();
  c.hello();
  CHECK_FALSE(wa.airtime);
  CHECK(wa.bitrate == 500000);
  const CanFrame f = test_frame(0x6A0, 8, 0x10);
  a.send(Transmit{7, f});
  CHECK(same_frame(b.expect<Deliver>().frame, f));
  CHECK(same_frame(c.expect<Deliver>().frame, f));
  const auto confirm = a.expect<TxConfirm>();
  CHECK(confirm.tag == 7);
  CHECK(confirm.status == TxStatus::kSent);
  // A's next message is B's frame, not an echo of its own.
  const CanFrame g = test_frame(0x6A8, 3, 0x20);
  b.send(Transmit{1, g});
  CHECK(same_frame(a.expect<Deliver>().frame, g));
}

TEST_CASE("frames follow each other on the bus exactly one airtime apart") {
  bus::HubOptions o;
  o.bitrate = 500000;
  HubProcess hub(o);
  RawNode a(hub.socket_path()), b(hub.socket_path());
  CHECK(a.hello().airtime);
  b.hello();
  const auto frames = random_frames(50, 0x123, 3);
  transmit_all(a, frames);
  std::vector<Deliver> got;
  for (std::size_t i = 0; i < frames.size(); ++i) got.push_back(b.expect<Deliver>());
  for (std::size_t i = 0; i < frames.size(); ++i) {
    CHECK(same_frame(got[i].frame, frames[i]));
    const auto confirm = a.expect<TxConfirm>();
    CHECK(confirm.tag == i + 1);
    CHECK(confirm.bus_time_ns == got[i].bus_time_ns);  // confirmed when receivers got it
    if (i > 0) {
      // Queued together, so each starts when the previous ends: no drift, no gaps.
      CAPTURE(i);
      CHECK(got[i].bus_time_ns - got[i - 1].bus_time_ns ==
            frame_airtime_ns(frames[i], rates_of(o)));
    }
  }
}

TEST_CASE("the lowest identifier wins arbitration, a base frame before an extended one") {
  bus::HubOptions o;
  o.bitrate = 1000;  // 47+ ms per frame: the others queue while the blocker holds the bus
  HubProcess hub(o);
  RawNode blocker(hub.socket_path()), n500(hub.socket_path()), n100(hub.socket_path()),
      n300(hub.socket_path()), n100x(hub.socket_path()), watcher(hub.socket_path());
  for (RawNode* n : {&blocker, &n500, &n100, &n300, &n100x, &watcher}) n->hello();
  // Id 0 always wins, so the blocker's frames hold the bus (about a second)
  // until all are gone; the others' frames are queued long before that.
  transmit_all(blocker, std::vector<CanFrame>(20, test_frame(0x000, 0)));
  n500.send(Transmit{1, test_frame(0x500, 1)});
  n100.send(Transmit{1, test_frame(0x100, 1)});
  n300.send(Transmit{1, test_frame(0x300, 1)});
  CanFrame ext = test_frame(0x100U << 18, 1);
  ext.extended = true;
  n100x.send(Transmit{1, ext});
  std::vector<CanFrame> order;
  for (int i = 0; i < 24; ++i) order.push_back(watcher.expect<Deliver>().frame);
  for (int i = 0; i < 20; ++i) CHECK(order[static_cast<std::size_t>(i)].id == 0x000);
  CHECK(order[20].id == 0x100);
  CHECK_FALSE(order[20].extended);
  CHECK(order[21].id == (0x100U << 18));
  CHECK(order[21].extended);
  CHECK(order[22].id == 0x300);
  CHECK(order[23].id == 0x500);
}

TEST_CASE("a corrupted frame costs an error frame, is retransmitted, and is never delivered") {
  bus::HubOptions o;
  o.bitrate = 1000000;
  o.corrupt = 0.3;
  o.seed = 42;
  HubProcess hub(o);
  RawNode a(hub.socket_path()), b(hub.socket_path());
  a.hello();
  b.hello();
  const auto frames = random_frames(200, 0x321, 9);
  transmit_all(a, frames);
  std::uint64_t error_frames = 0;
  std::uint64_t previous = 0;
  for (std::size_t i = 0; i < frames.size(); ++i) {
    const auto d = b.expect<Deliver>();
    REQUIRE(same_frame(d.frame, frames[i]));  // in order, intact, once
    if (i > 0) {
      // The gap is this frame's airtime plus a whole number of broken attempts.
      const auto gap = d.bus_time_ns - previous;
      const auto ok = frame_airtime_ns(frames[i], rates_of(o));
      const auto broken = bits_time_ns(error_frame_bits(frames[i]), rates_of(o));
      REQUIRE(gap >= ok);
      CHECK((gap - ok) % broken == 0);
      error_frames += (gap - ok) / broken;
    }
    previous = d.bus_time_ns;
    CHECK(a.expect<TxConfirm>().status == TxStatus::kSent);
  }
  a.send(StatsRequest{});
  const auto stats = a.expect<HubStats>();
  CHECK(stats.frames == frames.size());
  CHECK(stats.error_frames > 20);
  CHECK(error_frames <= stats.error_frames);  // the first frame's errors fall before `previous`
}

TEST_CASE("a frame that keeps failing is given up with an error-limit confirmation") {
  bus::HubOptions o = fast_hub();
  o.corrupt = 0.9;
  o.max_retransmissions = 0;
  HubProcess hub(o);
  RawNode a(hub.socket_path()), b(hub.socket_path());
  a.hello();
  b.hello();
  transmit_all(a, random_frames(20, 0x10, 1));
  int sent = 0, gave_up = 0;
  for (int i = 0; i < 20; ++i) {
    const auto c = a.expect<TxConfirm>();
    (c.status == TxStatus::kSent ? sent : gave_up) += 1;
    CHECK(c.status != TxStatus::kRejected);
  }
  CHECK(gave_up > 0);
  b.send(StatsRequest{});
  for (int i = 0; i < sent; ++i) b.expect<Deliver>();
  const auto stats = b.expect<HubStats>();
  CHECK(stats.frames == static_cast<std::uint64_t>(sent));
  CHECK(stats.rejected == static_cast<std::uint64_t>(gave_up));
}

TEST_CASE("dropped frames are confirmed to the sender but reach nobody") {
  bus::HubOptions o = fast_hub();
  o.drop = 1.0;
  HubProcess hub(o);
  RawNode a(hub.socket_path()), b(hub.socket_path());
  a.hello();
  b.hello();
  transmit_all(a, random_frames(10, 0x10, 2));
  for (int i = 0; i < 10; ++i) CHECK(a.expect<TxConfirm>().status == TxStatus::kSent);
  b.send(StatsRequest{});
  const auto stats = b.expect<HubStats>();  // no Deliver came before it
  CHECK(stats.dropped == 10);
  CHECK(stats.frames == 10);
}

TEST_CASE("a duplicated frame reaches receivers twice and is confirmed once") {
  bus::HubOptions o;
  o.duplicate = 1.0;
  o.bitrate = 1000000;
  HubProcess hub(o);
  RawNode a(hub.socket_path()), b(hub.socket_path());
  a.hello();
  b.hello();
  const auto frames = random_frames(5, 0x77, 3);
  transmit_all(a, frames);
  for (const auto& f : frames) {
    const auto first = b.expect<Deliver>();
    const auto second = b.expect<Deliver>();
    CHECK(same_frame(first.frame, f));
    CHECK(same_frame(second.frame, f));
    // The copy went on the bus too: one more airtime.
    CHECK(second.bus_time_ns - first.bus_time_ns == frame_airtime_ns(f, rates_of(o)));
  }
  for (std::uint32_t i = 1; i <= 5; ++i) CHECK(a.expect<TxConfirm>().tag == i);
  a.send(StatsRequest{});
  const auto stats = a.expect<HubStats>();
  CHECK(stats.duplicated == 5);
  CHECK(stats.frames == 10);
}

TEST_CASE("a tampered frame arrives with altered data behind a valid CAN CRC") {
  bus::HubOptions o = fast_hub();
  o.tamper = 1.0;
  HubProcess hub(o);
  RawNode a(hub.socket_path()), b(hub.socket_path());
  a.hello();
  b.hello();
  std::vector<CanFrame> frames;
  for (std::uint8_t i = 0; i < 20; ++i) frames.push_back(test_frame(0x55, 8, i));
  transmit_all(a, frames);
  for (const auto& f : frames) {
    const auto got = b.expect<Deliver>().frame;
    CHECK(got.id == f.id);
    CHECK(got.len == f.len);
    int differing = 0;
    for (std::size_t k = 0; k < f.len; ++k) differing += got.data[k] != f.data[k];
    CHECK(differing == 1);
  }
}

TEST_CASE("a reordered frame reaches receivers after the next frame") {
  bus::HubOptions o = fast_hub();
  o.reorder = 1.0;
  HubProcess hub(o);
  RawNode a(hub.socket_path()), b(hub.socket_path());
  a.hello();
  b.hello();
  std::vector<CanFrame> frames;
  for (std::uint8_t i = 1; i <= 4; ++i) frames.push_back(test_frame(0x100 + i, 1, i));
  transmit_all(a, frames);
  std::vector<std::uint32_t> ids;
  for (int i = 0; i < 4; ++i) ids.push_back(b.expect<Deliver>().frame.id);
  CHECK(ids == std::vector<std::uint32_t>{0x102, 0x101, 0x104, 0x103});
  // With no next frame, a held frame still arrives (after the hold time).
  a.send(Transmit{9, test_frame(0x109, 1)});
  CHECK(b.expect<Deliver>().frame.id == 0x109);
}

TEST_CASE("a delay postpones deliveries without reordering them") {
  bus::HubOptions o = fast_hub();
  o.delay_us = 3000;
  HubProcess hub(o);
  RawNode a(hub.socket_path()), b(hub.socket_path());
  a.hello();
  b.hello();
  const auto frames = random_frames(30, 0x42, 4);
  transmit_all(a, frames);
  for (const auto& f : frames) CHECK(same_frame(b.expect<Deliver>().frame, f));
}

TEST_CASE("the counters give frames and bytes per identifier") {
  HubProcess hub(fast_hub());
  RawNode a(hub.socket_path()), b(hub.socket_path());
  a.hello();
  b.hello();
  CanFrame ext = test_frame(0x18DAF110, 2);
  ext.extended = true;
  transmit_all(a, {test_frame(0x6A0, 8), test_frame(0x6A0, 8), test_frame(0x6A0, 8),
                   test_frame(0x6A8, 3), test_frame(0x6A8, 3), ext});
  for (int i = 0; i < 6; ++i) a.expect<TxConfirm>();
  a.send(StatsRequest{});
  const auto s = a.expect<HubStats>();
  CHECK(s.frames == 6);
  CHECK(s.bytes == 32);
  CHECK(s.nodes == 2);
  CHECK(s.nodes_connected == 2);
  REQUIRE(s.ids.size() == 3);
  CHECK(s.ids[0].id == 0x6A0);
  CHECK(s.ids[0].frames == 3);
  CHECK(s.ids[0].bytes == 24);
  CHECK(s.ids[1].id == 0x6A8);
  CHECK(s.ids[1].bytes == 6);
  CHECK(s.ids[2].extended);
  CHECK(s.ids[2].id == 0x18DAF110);
}

TEST_CASE("the hub prints its counters on SIGUSR1 and on exit, and SIGTERM stops it cleanly") {
  HubProcess hub(fast_hub());
  {
    RawNode a(hub.socket_path()), b(hub.socket_path());
    a.hello();
    b.hello();
    transmit_all(a, {test_frame(0x6A0, 8), test_frame(0x6A0, 4)});
    a.expect<TxConfirm>();
    a.expect<TxConfirm>();
    hub.signal(SIGUSR1);
    // Readiness, not timing: wait (bounded) until the report is there.
    for (int i = 0; i < 1000 && hub.output().find("id 6A0") == std::string::npos; ++i)
      std::this_thread::sleep_for(std::chrono::milliseconds(10));
    CHECK(hub.output().find("2 frames, 12 data bytes") != std::string::npos);
  }
  CHECK(hub.stop() == 0);
  const std::string out = hub.output();
  // Printed twice: on SIGUSR1 and on exit.
  const auto first = out.find("id 6A0");
  REQUIRE(first != std::string::npos);
  CHECK(out.find("id 6A0", first + 1) != std::string::npos);
  CHECK(::access(hub.socket_path().c_str(), F_OK) != 0);  // the socket file is gone
}

TEST_CASE("a node that breaks the protocol is disconnected and the others carry on") {
  HubProcess hub(fast_hub());
  RawNode a(hub.socket_path()), b(hub.socket_path());
  a.hello();
  b.hello();
  SUBCASE("a length over the cap") {
    RawNode bad(hub.socket_path());
    bad.hello();
    bad.send_bytes({0xFF, 0xFF, 3});
    CHECK(bad.expect<ErrorMessage>().code == static_cast<std::uint8_t>(LinkError::kTooLarge));
    CHECK_FALSE(bad.next());
    CHECK(bad.eof());
  }
  SUBCASE("a Transmit before Hello") {
    RawNode bad(hub.socket_path());
    bad.send(Transmit{1, test_frame(0x1, 1)});
    bad.expect<ErrorMessage>();
    CHECK_FALSE(bad.next());
    CHECK(bad.eof());
  }
  SUBCASE("an invalid frame") {
    RawNode bad(hub.socket_path());
    bad.hello();
    auto bytes = encode(Transmit{1, test_frame(0x1, 8)});
    bytes[12] = 9;  // classic length 9
    bytes.push_back(0);
    bytes[0] = static_cast<std::uint8_t>(bytes.size() - 2);
    bad.send_bytes(bytes);
    CHECK(bad.expect<ErrorMessage>().code == static_cast<std::uint8_t>(LinkError::kMalformedFrame));
    CHECK_FALSE(bad.next());
  }
  SUBCASE("a hub-only message type") {
    RawNode bad(hub.socket_path());
    bad.hello();
    bad.send(Welcome{});
    bad.expect<ErrorMessage>();
    CHECK_FALSE(bad.next());
  }
  const CanFrame f = test_frame(0x6A0, 8);
  a.send(Transmit{1, f});
  CHECK(same_frame(b.expect<Deliver>().frame, f));
  CHECK(a.expect<TxConfirm>().status == TxStatus::kSent);
}

TEST_CASE("a full queue, a listen-only node and an FD frame from a classic node are refused") {
  bus::HubOptions o;
  o.bitrate = 1000;
  o.max_queued_frames = 4;
  HubProcess hub(o);
  RawNode a(hub.socket_path()), listener(hub.socket_path());
  a.hello();
  listener.hello(false, true);
  transmit_all(a, std::vector<CanFrame>(6, test_frame(0x1, 0)));
  // Tags 5 and 6 are refused at once, before any of the first four completes.
  for (std::uint32_t tag : {5U, 6U}) {
    const auto c = a.expect<TxConfirm>();
    CHECK(c.tag == tag);
    CHECK(c.status == TxStatus::kRejected);
  }
  for (std::uint32_t tag = 1; tag <= 4; ++tag) {
    const auto c = a.expect<TxConfirm>();
    CHECK(c.tag == tag);
    CHECK(c.status == TxStatus::kSent);
    listener.expect<Deliver>();  // a listen-only node still watches the bus
  }
  listener.send(Transmit{1, test_frame(0x2, 1)});
  CHECK(listener.expect<TxConfirm>().status == TxStatus::kRejected);
  a.send(Transmit{7, test_frame(0x3, 12, 0, true)});
  CHECK(a.expect<TxConfirm>().status == TxStatus::kRejected);
}

TEST_CASE("the hub refuses nodes beyond its cap") {
  bus::HubOptions o = fast_hub();
  o.max_nodes = 2;
  HubProcess hub(o);
  RawNode a(hub.socket_path()), b(hub.socket_path());
  a.hello();
  b.hello();
  RawNode c(hub.socket_path());
  // The hub says why at once and hangs up (a Hello from c might meet a closed socket).
  CHECK(c.expect<ErrorMessage>().text == "too many nodes");
  CHECK_FALSE(c.next());
}

TEST_CASE("a node that stops reading loses frames, then is cut off; the bus goes on") {
  bus::HubOptions o = fast_hub();
  o.max_outbound_messages = 256;
  HubProcess hub(o);
  RawNode a(hub.socket_path()), b(hub.socket_path()), sleeper(hub.socket_path());
  a.hello();
  b.hello();
  sleeper.hello();
  // Enough frames to fill the sleeper's socket buffer and then the hub's cap.
  for (int batch = 0; batch < 100; ++batch) {
    transmit_all(a, random_frames(200, 0x10, static_cast<unsigned>(batch)));
    for (int i = 0; i < 200; ++i) CHECK(a.expect<TxConfirm>().status == TxStatus::kSent);
    for (int i = 0; i < 200; ++i) b.expect<Deliver>();
  }
  a.send(StatsRequest{});
  const auto s = a.expect<HubStats>();
  CHECK(s.frames == 20000);
  CHECK(s.rx_overflow > 0);
  CHECK(s.nodes == 2);  // the sleeper is gone
  // What the sleeper finds when it wakes up: some frames, then the end.
  std::size_t frames = 0;
  while (auto m = sleeper.next()) frames += std::holds_alternative<Deliver>(*m);
  CHECK(sleeper.eof());
  CHECK(frames < 20000);
}

TEST_CASE("a node that sends but never reads is cut off before the hub's memory grows") {
  bus::HubOptions o;
  o.bitrate = 1000;  // frames take long: most Transmits are refused, each earning a TxConfirm
  o.max_outbound_messages = 256;
  HubProcess hub(o);
  RawNode flood(hub.socket_path()), other(hub.socket_path());
  flood.hello();
  other.hello();
  std::vector<std::uint8_t> burst;
  for (std::uint32_t i = 0; i < 1000; ++i) encode_to(Transmit{i, test_frame(0x7FF, 0)}, burst);
  bool cut = false;
  for (int round = 0; round < 1000 && !cut; ++round) cut = !flood.try_send(burst);
  CHECK(cut);
  other.send(StatsRequest{});
  const auto s = other.expect<HubStats>();
  CHECK(s.rejected >= 2 * 256);  // cut off once 2 x the cap waited unread
}

TEST_CASE("the captures hold every delivered frame, in bus order") {
  bus::HubOptions o;
  o.bitrate = 1000000;
  o.fd_data_bitrate = 4000000;
  o.candump_log = temp_path("cap.log");
  o.pcap = temp_path("cap.pcap");
  o.interface_name = "vbus7";
  HubProcess hub(o);
  RawNode a(hub.socket_path()), b(hub.socket_path());
  a.hello(true);
  b.hello(true);
  std::mt19937 rng(11);
  std::vector<CanFrame> frames;
  for (int i = 0; i < 60; ++i) {
    CanFrame f;
    f.fd = i % 2 == 0;
    f.brs = f.fd && i % 4 == 0;
    f.extended = i % 3 == 0;
    f.id = f.extended ? rng() & 0x1FFFFFFF : rng() & 0x7FF;
    f.len = f.fd ? round_up_fd_length(rng() % 65) : static_cast<std::uint8_t>(rng() % 9);
    for (std::size_t k = 0; k < f.len; ++k) f.data[k] = static_cast<std::uint8_t>(rng());
    frames.push_back(f);
  }
  // One at a time, so bus order is send order whatever the identifiers.
  for (std::size_t i = 0; i < frames.size(); ++i) {
    a.send(Transmit{static_cast<std::uint32_t>(i), frames[i]});
    a.expect<TxConfirm>();
    CHECK(same_frame(b.expect<Deliver>().frame, frames[i]));
  }
  REQUIRE(hub.stop() == 0);

  std::istringstream log(read_file(o.candump_log));
  std::string line;
  std::vector<CapturedFrame> logged;
  while (std::getline(log, line)) {
    auto r = parse_candump_line(line);
    REQUIRE(r.index() == 0);
    logged.push_back(std::get<0>(r));
  }
  const std::string pcap_bytes = read_file(o.pcap);
  auto p = parse_pcap(std::span<const std::uint8_t>(
      reinterpret_cast<const std::uint8_t*>(pcap_bytes.data()), pcap_bytes.size()));
  REQUIRE(p.index() == 0);
  const auto& captured = std::get<0>(p);
  REQUIRE(logged.size() == frames.size());
  REQUIRE(captured.size() == frames.size());
  for (std::size_t i = 0; i < frames.size(); ++i) {
    CHECK(same_frame(logged[i].frame, frames[i]));
    CHECK(same_frame(captured[i].frame, frames[i]));
    CHECK(logged[i].interface == "vbus7");
    CHECK(logged[i].time_us == captured[i].time_us);
    if (i > 0) CHECK(logged[i].time_us >= logged[i - 1].time_us);
  }
  ::unlink(o.candump_log.c_str());
  ::unlink(o.pcap.c_str());
}

TEST_CASE("FD frames reach only FD nodes") {
  HubProcess hub(fast_hub());
  RawNode a(hub.socket_path()), classic(hub.socket_path()), fd(hub.socket_path());
  a.hello(true);
  classic.hello(false);
  fd.hello(true);
  const CanFrame f = test_frame(0x10, 12, 1, true);
  const CanFrame g = test_frame(0x11, 8, 2, false);
  transmit_all(a, {f, g});
  CHECK(same_frame(fd.expect<Deliver>().frame, f));
  CHECK(same_frame(fd.expect<Deliver>().frame, g));
  CHECK(same_frame(classic.expect<Deliver>().frame, g));
}

TEST_CASE("a live hub's socket is never taken over; a stale socket file is replaced") {
  HubProcess hub(fast_hub());
  {
    bus::HubOptions second = fast_hub();
    second.socket_path = hub.socket_path();
    const pid_t pid = ::fork();
    REQUIRE(pid >= 0);
    if (pid == 0) {
      ::dup2(::open("/dev/null", O_WRONLY), STDERR_FILENO);
      ::_exit(bus::run_hub(second));
    }
    int status = 0;
    ::waitpid(pid, &status, 0);
    CHECK(WIFEXITED(status));
    CHECK(WEXITSTATUS(status) == 1);
  }
  RawNode still(hub.socket_path());  // the first hub still serves
  still.hello();

  // A socket file nobody listens on, as a crashed hub leaves behind.
  const std::string stale = temp_path("stale.sock");
  const int fd = ::socket(AF_UNIX, SOCK_STREAM, 0);
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  std::memcpy(addr.sun_path, stale.data(), stale.size());
  REQUIRE(::bind(fd, reinterpret_cast<const sockaddr*>(&addr), sizeof addr) == 0);
  ::close(fd);
  bus::HubOptions o = fast_hub();
  o.socket_path = stale;
  HubProcess replacement(o);
  RawNode n(stale);
  n.hello();
}

TEST_CASE("bad hub options are refused with a reason") {
  bus::HubOptions o;
  CHECK(bus::validate_hub_options(o).has_value());  // no socket
  o.socket_path = "/tmp/x.sock";
  CHECK_FALSE(bus::validate_hub_options(o).has_value());
  auto bad = o;
  bad.drop = 1.5;
  CHECK(bus::validate_hub_options(bad).value().find("--drop") != std::string::npos);
  bad = o;
  bad.corrupt = 1.0;
  CHECK(bus::validate_hub_options(bad).has_value());
  bad = o;
  bad.fd_data_bitrate = 100000;  // below the nominal rate
  CHECK(bus::validate_hub_options(bad).has_value());
  bad = o;
  bad.socket_path = std::string(200, 'x');
  CHECK(bus::validate_hub_options(bad).has_value());
  bad = o;
  bad.interface_name = "has space";
  CHECK(bus::validate_hub_options(bad).has_value());
  CHECK(bus::run_hub(bad) == 1);
}

// ---- the node side: VbusPort ---------------------------------------------

namespace {

// Parameters are copied into the coroutine frame (a capturing lambda's would dangle).
boost::asio::awaitable<void> send_and_record(VbusPort& port, CanFrame frame, std::size_t index,
                                             std::vector<std::size_t>& done, int& outstanding) {
  auto r = co_await port.send_frame(frame);
  CHECK(r.index() == 0);
  done.push_back(index);
  --outstanding;
}

}  // namespace

TEST_CASE("a VbusPort sends frames confirmed in order and receives the others' frames") {
  HubProcess hub(fast_hub());
  boost::asio::io_context io;
  VbusOptions vo;
  vo.socket_path = hub.socket_path();
  vo.name = "a";
  auto pa = VbusPort::connect(io.get_executor(), vo);
  REQUIRE(pa.index() == 0);
  vo.name = "b";
  auto pb = VbusPort::connect(io.get_executor(), vo);
  REQUIRE(pb.index() == 0);
  auto& a = *std::get<0>(pa);
  auto& b = *std::get<0>(pb);
  CHECK(a.hub_info().bitrate == 500000);
  CHECK_FALSE(a.hub_info().airtime);
  CHECK(a.hub_info().node_id != b.hub_info().node_id);

  const auto frames = random_frames(100, 0x6A0, 5);
  const bool ok = run_coroutine(io, [&]() -> boost::asio::awaitable<bool> {
    // Several sends outstanding at once, as IsoTpLink's window does.
    std::vector<std::size_t> done;
    int outstanding = 0;
    for (std::size_t i = 0; i < frames.size(); ++i) {
      ++outstanding;
      boost::asio::co_spawn(a.get_executor(), send_and_record(a, frames[i], i, done, outstanding),
                            boost::asio::detached);
    }
    for (const auto& f : frames) {
      auto r = co_await b.receive_frame();
      REQUIRE(r.index() == 0);
      CHECK(same_frame(std::get<0>(r), f));
    }
    auto stats = co_await b.request_stats();
    REQUIRE(stats.index() == 0);
    CHECK(std::get<0>(stats).frames == frames.size());
    CHECK(outstanding == 0);
    CHECK(std::is_sorted(done.begin(), done.end()));
    co_return done.size() == frames.size();
  }());
  CHECK(ok);

  // A frame the port cannot carry is refused locally.
  auto refused = run_coroutine(io, a.send_frame(test_frame(0x1, 12, 0, true)));
  REQUIRE(refused.index() == 1);
  CHECK(std::get<1>(refused) == LinkError::kInvalidArgument);

  // Closing ends receives with kClosed.
  b.close();
  auto closed = run_coroutine(io, b.receive_frame());
  REQUIRE(closed.index() == 1);
  CHECK(std::get<1>(closed) == LinkError::kClosed);
}

TEST_CASE("a VbusPort reports a lost frame as kOverflow once its queue overflowed") {
  HubProcess hub(fast_hub());
  boost::asio::io_context io;
  VbusOptions vo;
  vo.socket_path = hub.socket_path();
  vo.max_rx_queue = 4;
  auto pa = VbusPort::connect(io.get_executor(), vo);
  auto pb = VbusPort::connect(io.get_executor(), vo);
  REQUIRE(pa.index() == 0);
  REQUIRE(pb.index() == 0);
  auto& a = *std::get<0>(pa);
  auto& b = *std::get<0>(pb);
  const auto frames = random_frames(10, 0x6A0, 6);
  run_coroutine(io, [&]() -> boost::asio::awaitable<int> {
    for (const auto& f : frames) CHECK((co_await a.send_frame(f)).index() == 0);
    co_return 0;
  }());
  // Let B's reader take in everything the hub sent (its queue holds only 4).
  run_coroutine(io, [&]() -> boost::asio::awaitable<int> {
    auto s = co_await b.request_stats();
    CHECK(s.index() == 0);
    co_return 0;
  }());
  auto first = run_coroutine(io, b.receive_frame());
  REQUIRE(first.index() == 1);
  CHECK(std::get<1>(first) == LinkError::kOverflow);
  for (int i = 0; i < 4; ++i) {
    auto r = run_coroutine(io, b.receive_frame());
    REQUIRE(r.index() == 0);
    CHECK(same_frame(std::get<0>(r), frames[static_cast<std::size_t>(i)]));
  }
}

TEST_CASE("connecting to a socket nobody serves fails with kIo") {
  boost::asio::io_context io;
  VbusOptions vo;
  vo.socket_path = temp_path("nobody.sock");
  auto r = VbusPort::connect(io.get_executor(), vo);
  REQUIRE(r.index() == 1);
  CHECK(std::get<1>(r) == LinkError::kIo);
}

TEST_CASE("an answer to a delivered frame starts only after that frame's interframe space") {
  bus::HubOptions o;
  o.bitrate = 500000;
  o.spin_us = 150;  // the punctual hub: wakes early and spins to the exact end of frame
  HubProcess hub(o);
  RawNode a(hub.socket_path()), b(hub.socket_path());
  a.hello();
  b.hello();
  for (std::uint32_t i = 1; i <= 20; ++i) {
    CAPTURE(i);
    const CanFrame f = test_frame(0x6A0, 8, static_cast<std::uint8_t>(i));
    const CanFrame g = test_frame(0x6A8, 8, static_cast<std::uint8_t>(i + 100));
    a.send(Transmit{i, f});
    const auto df = b.expect<Deliver>();
    b.send(Transmit{i, g});  // at once: possibly while f's intermission still runs
    CHECK(a.expect<TxConfirm>().bus_time_ns == df.bus_time_ns);
    const auto dg = a.expect<Deliver>();
    CHECK(b.expect<TxConfirm>().bus_time_ns == dg.bus_time_ns);
    CHECK(same_frame(dg.frame, g));
    CHECK(dg.bus_time_ns - df.bus_time_ns >= frame_airtime_ns(g, rates_of(o)));
  }
}

TEST_CASE(
    "with the punctual hub, queued frames still follow each other exactly one airtime apart") {
  bus::HubOptions o;
  o.bitrate = 500000;
  o.spin_us = 150;
  HubProcess hub(o);
  RawNode a(hub.socket_path()), b(hub.socket_path());
  a.hello();
  b.hello();
  const auto frames = random_frames(50, 0x123, 3);
  transmit_all(a, frames);
  std::vector<Deliver> got;
  for (std::size_t i = 0; i < frames.size(); ++i) got.push_back(b.expect<Deliver>());
  for (std::size_t i = 1; i < frames.size(); ++i) {
    CAPTURE(i);
    CHECK(same_frame(got[i].frame, frames[i]));
    CHECK(got[i].bus_time_ns - got[i - 1].bus_time_ns == frame_airtime_ns(frames[i], rates_of(o)));
  }
}
