// Endpoint strings: what parses, what each option sets, and that every bad
// string fails with a message naming the offending part.
#include <doctest/doctest.h>

#include <boost/asio/io_context.hpp>
#include <string>
#include <variant>

#include "transport/framing/isotp.hpp"
#include "transport/links/endpoint.hpp"

using namespace tollgate::transport;
using namespace std::chrono_literals;

namespace {

Endpoint parse_ok(std::string_view text) {
  auto r = parse_endpoint(text);
  if (r.index() != 0) FAIL_CHECK("unexpected parse error: " << std::get<1>(r).message);
  REQUIRE(r.index() == 0);
  return std::get<0>(r);
}

std::string parse_error(std::string_view text) {
  auto r = parse_endpoint(text);
  if (r.index() == 0) FAIL_CHECK("'" << text << "' parsed but should not have");
  REQUIRE(r.index() == 1);
  return std::get<1>(r).message;
}

bool contains(const std::string& s, std::string_view part) {
  return s.find(part) != std::string::npos;
}

}  // namespace

TEST_CASE("can endpoint names the interface and both ids") {
  auto ep = parse_ok("can:vcan0?tx=0x6A0&rx=0x6A8");
  CHECK(ep.kind == EndpointKind::kCan);
  CHECK(ep.target == "vcan0");
  CHECK(ep.text == "can:vcan0?tx=0x6A0&rx=0x6A8");
  CHECK(*ep.isotp.tx_id == 0x6A0);
  CHECK(*ep.isotp.rx_id == 0x6A8);
  CHECK_FALSE(ep.isotp.fd);
  CHECK(ep.isotp.tx_dl == 8);
  CHECK(ep.isotp.padding);
  CHECK(ep.isotp.pad_byte == 0xCC);
  CHECK(ep.max_message == 65536);
}

TEST_CASE("every endpoint kind of the issue parses") {
  CHECK(parse_ok("isotp:vcan0?tx=0x6A0&rx=0x6A8").kind == EndpointKind::kIsoTp);
  auto serial = parse_ok("serial:/dev/ttyUSB0?baud=115200");
  CHECK(serial.kind == EndpointKind::kSerial);
  CHECK(serial.target == "/dev/ttyUSB0");
  CHECK(serial.baud == 115200);
  auto vbus = parse_ok("vbus:/run/tollgate/bus.sock?tx=0x6A0&rx=0x6A8");
  CHECK(vbus.kind == EndpointKind::kVbus);
  CHECK(vbus.target == "/run/tollgate/bus.sock");
}

TEST_CASE("ids may be decimal and tx/rx are optional until a link is opened") {
  auto ep = parse_ok("can:can0?tx=1696&rx=1704");
  CHECK(*ep.isotp.tx_id == 0x6A0);
  CHECK(*ep.isotp.rx_id == 0x6A8);
  auto bare = parse_ok("vbus:/tmp/bus.sock");
  CHECK_FALSE(bare.isotp.tx_id.has_value());
  CHECK_FALSE(bare.isotp.rx_id.has_value());
}

TEST_CASE("vbus paths may be relative and percent-encoded") {
  CHECK(parse_ok("vbus:bus.sock?tx=1&rx=2").target == "bus.sock");
  CHECK(parse_ok("vbus:./run/bus.sock").target == "./run/bus.sock");
  CHECK(parse_ok("vbus:/tmp/my%20bus.sock").target == "/tmp/my bus.sock");
  CHECK(parse_ok("vbus:///tmp/bus.sock").target == "/tmp/bus.sock");
}

TEST_CASE("fd=1 selects CAN FD with a 64-byte data length unless dl says otherwise") {
  auto ep = parse_ok("can:vcan1?tx=0x6A0&rx=0x6A8&fd=1");
  CHECK(ep.isotp.fd);
  CHECK(ep.isotp.tx_dl == 64);
  CHECK(ep.isotp.brs);
  auto small = parse_ok("can:vcan1?tx=0x6A0&rx=0x6A8&fd=1&dl=16&brs=0");
  CHECK(small.isotp.tx_dl == 16);
  CHECK_FALSE(small.isotp.brs);
}

TEST_CASE("ISO-TP options set the channel parameters") {
  auto ep = parse_ok(
      "vbus:/b?tx=0x18DA10F1&rx=0x18DAF110&ext=1&ta=0x10&ra=0xF1&bs=8&stmin=5ms&pad=0&padbyte=0xAA"
      "&wftmax=3&nas=250ms&nar=2s&nbs=1500000us&ncr=300&max=100000&window=4");
  const auto& p = ep.isotp;
  CHECK(p.extended_ids);
  CHECK(*p.tx_id == 0x18DA10F1);
  CHECK(*p.tx_address == 0x10);
  CHECK(*p.rx_address == 0xF1);
  CHECK(p.block_size == 8);
  CHECK(p.stmin_code == 5);
  CHECK_FALSE(p.padding);
  CHECK(p.pad_byte == 0xAA);
  CHECK(p.wft_max == 3);
  CHECK(p.n_as == 250ms);
  CHECK(p.n_ar == 2s);
  CHECK(p.n_bs == 1500ms);
  CHECK(p.n_cr == 300ms);
  CHECK(ep.max_message == 100000);
  CHECK(*p.tx_window == 4);
}

TEST_CASE("one id may serve both directions when extended addresses tell them apart") {
  auto ep = parse_ok("can:vcan0?tx=0x700&rx=0x700&ta=0x10&ra=0x20");
  CHECK(*ep.isotp.tx_id == *ep.isotp.rx_id);
  CHECK(contains(parse_error("can:vcan0?tx=0x700&rx=0x700&ta=0x10&ra=0x10"), "same id"));
}

TEST_CASE("stmin accepts a code or a time and maps times to the standard's codes") {
  CHECK(parse_ok("can:c?stmin=0").isotp.stmin_code == 0x00);
  CHECK(parse_ok("can:c?stmin=127").isotp.stmin_code == 0x7F);
  CHECK(parse_ok("can:c?stmin=0xF3").isotp.stmin_code == 0xF3);
  CHECK(parse_ok("can:c?stmin=300us").isotp.stmin_code == 0xF3);
  CHECK(parse_ok("can:c?stmin=100us").isotp.stmin_code == 0xF1);
  CHECK(parse_ok("can:c?stmin=20ms").isotp.stmin_code == 20);
  CHECK(parse_ok("can:c?stmin=0us").isotp.stmin_code == 0);
}

TEST_CASE("the endpoint maps onto our ISO-TP config with room for the CRC trailer") {
  auto ep = parse_ok("can:vcan1?tx=0x6A0&rx=0x6A8&fd=1&dl=32&bs=1&stmin=0xF1&ta=1&ra=2&max=1000");
  const IsoTpConfig c = to_isotp_config(ep);
  CHECK(c.tx_id == 0x6A0);
  CHECK(c.rx_id == 0x6A8);
  CHECK(c.fd);
  CHECK(c.tx_dl == 32);
  CHECK(c.block_size == 1);
  CHECK(c.st_min == 0xF1);
  CHECK(c.addressing == IsoTpAddressing::kExtended);
  CHECK(c.tx_address == 1);
  CHECK(c.rx_address == 2);
  CHECK(c.max_rx_size == 1004);
  CHECK(c.n_cr_us == 1'000'000);
  CHECK_FALSE(validate_isotp_config(c).has_value());
}

TEST_CASE("durations take us, ms, s and m and default to milliseconds") {
  CHECK(*parse_duration("5s") == 5s);
  CHECK(*parse_duration("250ms") == 250ms);
  CHECK(*parse_duration("300us") == 300us);
  CHECK(*parse_duration("2m") == 120s);
  CHECK(*parse_duration("40") == 40ms);
  CHECK_FALSE(parse_duration("").has_value());
  CHECK_FALSE(parse_duration("ms").has_value());
  CHECK_FALSE(parse_duration("-5ms").has_value());
  CHECK_FALSE(parse_duration("5 s").has_value());
  CHECK_FALSE(parse_duration("5h").has_value());
  CHECK_FALSE(parse_duration("1.5s").has_value());
}

TEST_CASE("bad endpoints fail with a message naming the bad part") {
  struct Case {
    const char* text;
    const char* mentions;
  };
  const Case cases[] = {
      {"", "expected can:IFACE"},
      {"vcan0", "expected can:IFACE"},
      {"tcp:host?tx=1", "unknown kind 'tcp'"},
      {"can:?tx=1&rx=2", "missing interface name"},
      {"vbus:?tx=1&rx=2", "missing path"},
      {"can:averyveryverylongname?tx=1&rx=2", "not a network interface name"},
      {"can://host/vcan0?tx=1", "no host part allowed"},
      {"can:vcan0?tx=0x800&rx=0x6A8", "tx=0x800 is not an 11-bit CAN id (add ext=1"},
      {"can:vcan0?tx=0x6A0&rx=0x20000000&ext=1", "rx=0x20000000 is not a CAN id"},
      {"can:vcan0?tx=0x6A0&rx=0x6A0", "tx and rx are the same id"},
      {"can:vcan0?tx=0x6G0&rx=1", "tx=0x6G0 is not a CAN id"},
      {"can:vcan0?tx=1&rx=2&foo=1", "unknown option 'foo'"},
      {"can:vcan0?tx=1&rx=2&tx=3", "option 'tx' given twice"},
      {"can:vcan0?tx=1&rx", "option 'rx' has no value"},
      {"can:vcan0?tx=1&rx=", "option 'rx' has no value"},
      {"can:vcan0?tx=1&rx=2&fd=2", "fd=2 is not a boolean"},
      {"can:vcan0?tx=1&rx=2&dl=64", "dl=64 needs fd=1"},
      {"can:vcan0?tx=1&rx=2&fd=1&dl=10", "dl=10 is not a CAN FD data length"},
      {"can:vcan0?tx=1&rx=2&stmin=0x80", "stmin=0x80 is a reserved STmin code"},
      {"can:vcan0?tx=1&rx=2&stmin=150us", "stmin=150us is not an STmin"},
      {"can:vcan0?tx=1&rx=2&stmin=200ms", "stmin=200ms is not an STmin"},
      {"can:vcan0?tx=1&rx=2&bs=256", "bs=256 is not a number in 0..255"},
      {"can:vcan0?tx=1&rx=2&ta=0x10", "needs both ta="},
      {"can:vcan0?tx=1&rx=2&ncr=0ms", "ncr=0ms is not a positive time"},
      {"can:vcan0?tx=1&rx=2&nbs=fast", "nbs=fast is not a positive time"},
      {"can:vcan0?tx=1&rx=2&window=0", "window=0 is not in 1..32"},
      {"can:vcan0?tx=1&rx=2&txtime=0us", "txtime= is only for isotp:"},
      {"isotp:vcan0?tx=1&rx=2&window=4", "window= is only for our ISO-TP"},
      {"can:vcan0?tx=1&rx=2&baud=9600", "baud= is only for serial:"},
      {"serial:/dev/ttyS0?baud=12345", "baud=12345 is not a standard baud rate"},
      {"serial:/dev/ttyS0?tx=1", "unknown option 'tx' for serial:"},
      {"serial:/dev/ttyS0?max=0", "max=0 is not a size"},
      {"can:vcan0?tx=1&rx=2&max=16777217", "max=16777217 is not a size in 1..16777216"},
      {"vbus:/tmp/a b.sock", "not a valid URI"},
      {"vbus:/tmp/bus.sock#frag", "no '#' fragment"},
  };
  for (const auto& c : cases) {
    CAPTURE(c.text);
    const std::string msg = parse_error(c.text);
    CHECK_MESSAGE(contains(msg, c.mentions), msg);
    CHECK_MESSAGE(contains(msg, std::string("'") + c.text + "'"), msg);  // names the endpoint
  }
}

TEST_CASE("opening a CAN link without ids says which id is missing") {
  boost::asio::io_context io;
  auto r = open_link(io.get_executor(), "vbus:/nonexistent/bus.sock?rx=0x6A8");
  REQUIRE(r.index() == 1);
  CHECK(std::get<1>(r).code == LinkError::kInvalidArgument);
  CHECK(contains(std::get<1>(r).message, "missing tx="));
  auto r2 = open_link(io.get_executor(), "isotp:vcan0?tx=0x6A0");
  REQUIRE(r2.index() == 1);
  CHECK(contains(std::get<1>(r2).message, "missing rx="));
}

TEST_CASE("opening a link to a hub that is not there tells how to start one") {
  boost::asio::io_context io;
  auto r = open_link(io.get_executor(), "vbus:/nonexistent/bus.sock?tx=0x6A0&rx=0x6A8");
  REQUIRE(r.index() == 1);
  const auto& msg = std::get<1>(r).message;
  CHECK(contains(msg, "vbus:/nonexistent/bus.sock?tx=0x6A0&rx=0x6A8"));
  CHECK(contains(msg, "tollgate-bus hub --socket /nonexistent/bus.sock"));
}

TEST_CASE("opening a bad endpoint string returns the parse error") {
  boost::asio::io_context io;
  auto r = open_link(io.get_executor(), "can:vcan0?tx=1&rx=2&bogus=1");
  REQUIRE(r.index() == 1);
  CHECK(std::get<1>(r).code == LinkError::kInvalidArgument);
  CHECK(contains(std::get<1>(r).message, "unknown option 'bogus'"));
}

TEST_CASE("opening a missing serial device fails naming the device") {
  boost::asio::io_context io;
  auto r = open_link(io.get_executor(), "serial:/dev/tollgate-no-such-tty?baud=9600");
  REQUIRE(r.index() == 1);
  CHECK(contains(std::get<1>(r).message, "/dev/tollgate-no-such-tty"));
}

TEST_CASE("a frame port needs a can: or vbus: endpoint") {
  boost::asio::io_context io;
  auto ep = parse_ok("serial:/dev/ttyS0");
  auto r = open_frame_port(io.get_executor(), ep);
  REQUIRE(r.index() == 1);
  CHECK(contains(std::get<1>(r).message, "needs a can: or vbus: endpoint"));
}

TEST_CASE("opening a SocketCAN endpoint where CAN is missing names the reason") {
  boost::asio::io_context io;
  auto r = open_link(io.get_executor(), "can:tgnosuch0?tx=0x6A0&rx=0x6A8");
  REQUIRE(r.index() == 1);
  const auto& msg = std::get<1>(r).message;
  if (af_can_unavailable_reason().empty()) {
    CHECK(contains(msg, "tgnosuch0: no such network interface"));
  } else {
    CHECK(contains(msg, "no AF_CAN support"));
  }
  auto k = open_link(io.get_executor(), "isotp:tgnosuch0?tx=0x6A0&rx=0x6A8");
  REQUIRE(k.index() == 1);
  CHECK(contains(std::get<1>(k).message, "tgnosuch0"));
}
