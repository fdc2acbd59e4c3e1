// candump log lines and pcap (LINKTYPE_CAN_SOCKETCAN) records.
#include <doctest/doctest.h>

#include <cstdint>
#include <random>
#include <string>
#include <vector>

#include "transport/framing/capture.hpp"

namespace {

using namespace tollgate::transport;

CanFrame make(std::uint32_t id, std::vector<std::uint8_t> data, bool extended = false,
              bool fd = false, bool brs = false) {
  CanFrame f;
  f.id = id;
  f.extended = extended;
  f.fd = fd;
  f.brs = brs;
  f.len = static_cast<std::uint8_t>(data.size());
  for (std::size_t i = 0; i < data.size(); ++i) f.data[i] = data[i];
  return f;
}

bool same(const CanFrame& a, const CanFrame& b) {
  if (a.id != b.id || a.extended != b.extended || a.fd != b.fd || a.brs != b.brs || a.len != b.len)
    return false;
  for (std::size_t i = 0; i < a.len; ++i)
    if (a.data[i] != b.data[i]) return false;
  return true;
}

CapturedFrame parsed(std::string_view line) {
  auto r = parse_candump_line(line);
  REQUIRE(r.index() == 0);
  return std::get<0>(r);
}

CanFrame random_frame(std::mt19937& rng) {
  const std::uint8_t fd_lengths[] = {0, 3, 8, 12, 16, 20, 24, 32, 48, 64};
  CanFrame f;
  f.extended = (rng() & 1) != 0;
  f.fd = (rng() & 1) != 0;
  f.brs = f.fd && (rng() & 1) != 0;
  f.id = f.extended ? rng() & 0x1FFFFFFFU : rng() & 0x7FFU;
  f.len = f.fd ? fd_lengths[rng() % 10] : static_cast<std::uint8_t>(rng() % 9);
  for (std::size_t i = 0; i < f.len; ++i) f.data[i] = static_cast<std::uint8_t>(rng());
  return f;
}

std::uint32_t be32(const std::vector<std::uint8_t>& b, std::size_t at) {
  return (std::uint32_t{b[at]} << 24) | (std::uint32_t{b[at + 1]} << 16) |
         (std::uint32_t{b[at + 2]} << 8) | b[at + 3];
}
std::uint32_t le32(const std::vector<std::uint8_t>& b, std::size_t at) {
  return (std::uint32_t{b[at + 3]} << 24) | (std::uint32_t{b[at + 2]} << 16) |
         (std::uint32_t{b[at + 1]} << 8) | b[at];
}

}  // namespace

TEST_CASE("candump lines are written the way candump -l writes them") {
  CHECK(
      format_candump_line({1700000000123456ULL, "vcan0", make(0x123, {0xDE, 0xAD, 0xBE, 0xEF})}) ==
      "(1700000000.123456) vcan0 123#DEADBEEF");
  CHECK(format_candump_line({1700000000000001ULL, "can1", make(0x1234ABCD, {0x00}, true)}) ==
        "(1700000000.000001) can1 1234ABCD#00");
  CHECK(format_candump_line({5, "vcan0", make(0x7FF, {})}) == "(0000000000.000005) vcan0 7FF#");
  CHECK(format_candump_line({1700000000123456ULL, "vcan0",
                             make(0x123, {0xDE, 0xAD, 0xBE, 0xEF}, false, true, true)}) ==
        "(1700000000.123456) vcan0 123##1DEADBEEF");
  CHECK(format_candump_line({1700000000123456ULL, "vcan0", make(0x6A0, {1}, false, true, false)}) ==
        "(1700000000.123456) vcan0 6A0##001");
}

TEST_CASE("candump lines round trip every frame shape") {
  std::mt19937 rng(7);
  for (int i = 0; i < 5000; ++i) {
    CapturedFrame c{static_cast<std::uint64_t>(rng()) * 1000003ULL, "vcan0", random_frame(rng)};
    const std::string line = format_candump_line(c);
    CAPTURE(line);
    const CapturedFrame back = parsed(line);
    CHECK(back.time_us == c.time_us);
    CHECK(back.interface == c.interface);
    CHECK(same(back.frame, c.frame));
  }
}

TEST_CASE("candump lines from can-utils parse with markers, line endings and dots") {
  CHECK(same(parsed("(1700000000.123456) vcan0 123#DEADBEEF\n").frame,
             make(0x123, {0xDE, 0xAD, 0xBE, 0xEF})));
  CHECK(same(parsed("(1700000000.123456) vcan0 123#DEADBEEF\r\n").frame,
             make(0x123, {0xDE, 0xAD, 0xBE, 0xEF})));
  CHECK(same(parsed("(1700000000.123456) vcan0 123#de.ad.be.ef T").frame,
             make(0x123, {0xDE, 0xAD, 0xBE, 0xEF})));
  // Newer kernels set CANFD_FDF (4) in the flags nibble: still FD, BRS from bit 0.
  CHECK(same(parsed("(1700000000.123456) vcan0 123##5DEADBEEF").frame,
             make(0x123, {0xDE, 0xAD, 0xBE, 0xEF}, false, true, true)));
  const CapturedFrame c = parsed("(0000000001.000002) can-long-name1 00000001#");
  CHECK(c.time_us == 1000002);
  CHECK(c.interface == "can-long-name1");
  CHECK(c.frame.extended);
  CHECK(c.frame.len == 0);
}

TEST_CASE("malformed candump lines are rejected, never half-parsed") {
  const char* bad[] = {
      "",
      "1700000000.123456 vcan0 123#00",                         // no parentheses
      "(1700000000.12345) vcan0 123#00",                        // 5 fraction digits
      "(17000x0000.123456) vcan0 123#00",                       // non-digit seconds
      "(1700000000.123456)vcan0 123#00",                        // no space
      "(1700000000.123456) vcan0",                              // no frame
      "(1700000000.123456) vcan0 123",                          // no '#'
      "(1700000000.123456) vcan0 12#00",                        // 2-digit id
      "(1700000000.123456) vcan0 800#00",                       // 11-bit id out of range
      "(1700000000.123456) vcan0 123456#00",                    // 6-digit id
      "(1700000000.123456) vcan0 20000080#0000000000000000",    // error frame
      "(1700000000.123456) vcan0 123#R",                        // remote frame
      "(1700000000.123456) vcan0 123#0",                        // odd digits
      "(1700000000.123456) vcan0 123#0G",                       // non-hex
      "(1700000000.123456) vcan0 123#000000000000000000",       // 9 classic bytes
      "(1700000000.123456) vcan0 123#1122334455667788_9",       // len8_dlc
      "(1700000000.123456) vcan0 123##",                        // FD without flags
      "(1700000000.123456) vcan0 123##1000000000000000000000",  // FD length 10: no DLC step
      "(1700000000.123456) vcan0 123#00 X",                     // unknown marker
      "(1700000000.123456) averyveryverylongname 123#00",       // interface over 16 characters
  };
  for (const char* line : bad) {
    CAPTURE(line);
    auto r = parse_candump_line(line);
    REQUIRE(r.index() == 1);
    CHECK(std::get<1>(r) == LinkError::kMalformedFrame);
  }
}

TEST_CASE("pcap has the LINKTYPE_CAN_SOCKETCAN global header") {
  const auto h = pcap_file_header();
  REQUIRE(h.size() == 24);
  CHECK(le32(h, 0) == 0xA1B2C3D4U);
  CHECK(h[4] == 2);
  CHECK(h[6] == 4);
  CHECK(le32(h, 16) == 72);
  CHECK(le32(h, 20) == 227);
}

TEST_CASE("pcap records hold a SocketCAN frame with the id in network byte order") {
  const auto classic = pcap_record(1700000000123456ULL, make(0x123, {0xAA, 0xBB}));
  REQUIRE(classic.size() == 16 + 16);
  CHECK(le32(classic, 0) == 1700000000U);
  CHECK(le32(classic, 4) == 123456U);
  CHECK(le32(classic, 8) == 16);
  CHECK(le32(classic, 12) == 16);
  CHECK(be32(classic, 16) == 0x123U);
  CHECK(classic[20] == 2);  // length
  CHECK(classic[21] == 0);  // no FD flags
  CHECK(classic[24] == 0xAA);
  CHECK(classic[25] == 0xBB);
  CHECK(classic[26] == 0);  // padding to 8 bytes

  const auto fd = pcap_record(0, make(0x1ABCDEF0, {1, 2, 3}, true, true, true));
  REQUIRE(fd.size() == 16 + 72);
  CHECK(be32(fd, 16) == (0x1ABCDEF0U | 0x80000000U));  // CAN_EFF_FLAG
  CHECK(fd[20] == 3);
  CHECK(fd[21] == (0x04 | 0x01));  // CANFD_FDF | CANFD_BRS
}

TEST_CASE("pcap files round trip, in either byte order") {
  std::mt19937 rng(99);
  std::vector<CapturedFrame> frames;
  std::vector<std::uint8_t> file = pcap_file_header();
  for (int i = 0; i < 2000; ++i) {
    CapturedFrame c{1700000000000000ULL + static_cast<std::uint64_t>(i) * 250, "",
                    random_frame(rng)};
    const auto rec = pcap_record(c.time_us, c.frame);
    file.insert(file.end(), rec.begin(), rec.end());
    frames.push_back(c);
  }
  auto r = parse_pcap(file);
  REQUIRE(r.index() == 0);
  const auto& back = std::get<0>(r);
  REQUIRE(back.size() == frames.size());
  for (std::size_t i = 0; i < frames.size(); ++i) {
    CHECK(back[i].time_us == frames[i].time_us);
    CHECK(same(back[i].frame, frames[i].frame));
  }

  // The same file written by a big-endian machine: every header field swapped.
  std::vector<std::uint8_t> swapped = file;
  const auto swap32 = [&](std::size_t at) {
    std::swap(swapped[at], swapped[at + 3]);
    std::swap(swapped[at + 1], swapped[at + 2]);
  };
  const auto swap16 = [&](std::size_t at) { std::swap(swapped[at], swapped[at + 1]); };
  swap32(0);
  swap16(4);
  swap16(6);
  for (std::size_t at : {8UL, 12UL, 16UL, 20UL}) swap32(at);
  for (std::size_t at = 24; at < swapped.size();) {
    const std::size_t incl = le32(file, at + 8);
    for (std::size_t k = 0; k < 16; k += 4) swap32(at + k);
    at += 16 + incl;
  }
  auto r2 = parse_pcap(swapped);
  REQUIRE(r2.index() == 0);
  CHECK(std::get<0>(r2).size() == frames.size());
}

TEST_CASE("damaged pcap files are rejected") {
  std::vector<std::uint8_t> file = pcap_file_header();
  const auto rec = pcap_record(1, make(0x10, {1, 2, 3}));
  file.insert(file.end(), rec.begin(), rec.end());
  CHECK(parse_pcap(file).index() == 0);
  for (std::size_t cut = 1; cut < file.size(); ++cut) {
    if (cut == 24) continue;  // a header alone is a valid, empty capture
    auto r = parse_pcap(std::span<const std::uint8_t>(file.data(), cut));
    CAPTURE(cut);
    CHECK(r.index() == 1);
  }
  auto ethernet = file;
  ethernet[20] = 1;  // LINKTYPE_ETHERNET
  CHECK(parse_pcap(ethernet).index() == 1);
  auto long_classic = file;
  long_classic[24 + 16 + 4] = 9;  // classic length 9
  CHECK(parse_pcap(long_classic).index() == 1);
  auto too_many = parse_pcap(file, 0);
  REQUIRE(too_many.index() == 1);
  CHECK(std::get<1>(too_many) == LinkError::kTooLarge);
}
