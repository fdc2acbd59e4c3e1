// CAN airtime from the real bit stream, and the ISO-TP minimum time
// (../shared/brief/LIMITS.md).
#include <doctest/doctest.h>

#include <cmath>
#include <cstdint>
#include <random>
#include <string_view>
#include <vector>

#include "transport/framing/airtime.hpp"
#include "transport/framing/isotp.hpp"

namespace {

using namespace tollgate::transport;

std::vector<std::uint8_t> bits_of(std::string_view s) {
  std::vector<std::uint8_t> bits;
  for (unsigned char c : s)
    for (int i = 7; i >= 0; --i) bits.push_back(static_cast<std::uint8_t>((c >> i) & 1));
  return bits;
}

double frames_per_second(const FrameBits& bits, BusRates rates) {
  return 1e9 / static_cast<double>(bits_time_ns(bits, rates));
}

CanFrame classic(std::uint32_t id, std::vector<std::uint8_t> data, bool extended = false) {
  CanFrame f;
  f.id = id;
  f.extended = extended;
  f.len = static_cast<std::uint8_t>(data.size());
  for (std::size_t i = 0; i < data.size(); ++i) f.data[i] = data[i];
  return f;
}

}  // namespace

TEST_CASE("the CAN CRCs match their catalogue check values") {
  const auto bits = bits_of("123456789");
  CHECK(can_crc(bits.data(), bits.size(), 15, 0x4599, 0) == 0x059EU);
  CHECK(can_crc(bits.data(), bits.size(), 17, 0x1685B, 0) == 0x04F03U);
  CHECK(can_crc(bits.data(), bits.size(), 21, 0x102899, 0) == 0x0ED841U);
}

TEST_CASE("an 8-byte classic frame is 111 bits unstuffed and 135 at worst") {
  CHECK(frame_bits_best(8, false, false, false).total() == 111);
  CHECK(frame_bits_worst(8, false, false, false).total() == 135);
  for (std::size_t n = 0; n <= 8; ++n) {
    CHECK(frame_bits_best(n, false, false, false).total() == 47 + 8 * n);
    CHECK(frame_bits_worst(n, false, false, false).total() == 47 + 8 * n + (34 + 8 * n - 1) / 4);
  }
  // A 29-bit identifier costs 20 more bits (SRR, IDE, 18-bit extension, r1).
  CHECK(frame_bits_best(8, false, false, true).total() == 131);
}

TEST_CASE("an all-zero classic frame gets a stuff bit after every five zeros") {
  // SOF, id, RTR, IDE, r0, DLC and the CRC-15 of all that (0) are 34 zero bits:
  // stuff bits after the 5th, 10th, ... 30th.
  const FrameBits b = frame_bits(classic(0x000, {}));
  CHECK(b.stuff == 6);
  CHECK(b.total() == 47 + 6);
  CHECK(b.data == 0);
}

TEST_CASE("an all-zero FD frame counts dynamic and fixed stuff bits") {
  // SOF + 11-bit id + RRS + IDE = 14 zeros (stuff after the 5th and 10th), FDF = 1,
  // then res, BRS, ESI and DLC = 7 zeros (stuff after the 5th): 3 dynamic stuff
  // bits; the CRC-17 field carries 6 fixed stuff bits.
  CanFrame f;
  f.fd = true;
  const FrameBits b = frame_bits(f);
  CHECK(b.stuff == 3);
  CHECK(b.fixed_stuff == 6);
  CHECK(b.total() == 22 + 3 + (4 + 17 + 6) + 13);
  f.len = 20;  // over 16 bytes: CRC-21 with 7 fixed stuff bits
  CHECK(frame_bits(f).fixed_stuff == 7);
}

TEST_CASE("a BRS frame spends its data phase at the data bit rate") {
  CanFrame f;
  f.fd = true;
  f.brs = true;
  f.id = 0x555;
  f.len = 64;
  for (std::size_t i = 0; i < 64; ++i) f.data[i] = 0x55;  // alternating bits: no stuffing
  // Id 0x555 after SOF alternates too, and BRS, ESI, DLC 1111 never make a run of
  // five: no dynamic stuff bits, so exactly the best case.
  const FrameBits b = frame_bits(f);
  CHECK(b.stuff == 0);
  CHECK(b.nominal == 29);
  CHECK(b.data == 550);
  const FrameBits best = frame_bits_best(64, true, true, false);
  CHECK(best.nominal == 29);
  CHECK(best.data == 550);
  // 29 bits at 500k + 550 bits at 2M = 58 us + 275 us.
  CHECK(bits_time_ns(best, {500000, 2000000}) == 333000);
  // Without BRS everything goes at the nominal rate.
  CHECK(bits_time_ns(frame_bits_best(64, true, false, false), {500000, 2000000}) ==
        (29 + 550) * 2000ULL);
}

TEST_CASE("every real frame lies between the best and the worst case") {
  std::mt19937 rng(1234);
  const std::uint8_t fd_lengths[] = {0, 1, 5, 8, 12, 16, 20, 24, 32, 48, 64};
  for (int i = 0; i < 20000; ++i) {
    CanFrame f;
    f.extended = (rng() & 1) != 0;
    f.fd = (rng() & 1) != 0;
    f.brs = f.fd && (rng() & 1) != 0;
    f.id = f.extended ? rng() & 0x1FFFFFFFU : rng() & 0x7FFU;
    f.len = f.fd ? fd_lengths[rng() % 11] : static_cast<std::uint8_t>(rng() % 9);
    // Mix random bytes with long runs, which stuff the most.
    const int style = static_cast<int>(rng() % 3);
    for (std::size_t k = 0; k < f.len; ++k)
      f.data[k] = style == 0 ? static_cast<std::uint8_t>(rng()) : style == 1 ? 0x00 : 0xFF;
    const FrameBits real = frame_bits(f);
    const FrameBits best = frame_bits_best(f.len, f.fd, f.brs, f.extended);
    const FrameBits worst = frame_bits_worst(f.len, f.fd, f.brs, f.extended);
    CHECK(real.total() >= best.total());
    CHECK(real.total() <= worst.total());
    CHECK(real.total() == best.total() + real.stuff);
    CHECK(real.fixed_stuff == best.fixed_stuff);
  }
}

TEST_CASE("frames per second match the LIMITS table") {
  const auto classic_rate = [](std::uint32_t bps, bool worst) {
    const auto bits =
        worst ? frame_bits_worst(8, false, false, false) : frame_bits_best(8, false, false, false);
    return std::lround(frames_per_second(bits, {bps, 0}));
  };
  CHECK(classic_rate(125000, false) == 1126);
  CHECK(classic_rate(125000, true) == 926);
  CHECK(classic_rate(500000, false) == 4505);
  CHECK(classic_rate(500000, true) == 3704);
  CHECK(classic_rate(1000000, false) == 9009);
  CHECK(classic_rate(1000000, true) == 7407);

  const auto fd_rate = [](std::uint32_t data_bps, bool worst) {
    const auto bits =
        worst ? frame_bits_worst(64, true, true, false) : frame_bits_best(64, true, true, false);
    return frames_per_second(bits, {500000, data_bps});
  };
  CHECK(std::lround(fd_rate(2000000, false)) == 3003);
  CHECK(std::lround(fd_rate(5000000, false)) == 5952);
  // The table's worst case puts 4 stuff bits in the arbitration phase (SOF..BRS,
  // 17 bits); before the bit-rate switch at most 3 fit (SOF..res, 16 bits), so
  // ours is a little faster: 2475 and 5000 frames/s against 2466 and 4955.
  CHECK(fd_rate(2000000, true) == doctest::Approx(2466).epsilon(0.01));
  CHECK(fd_rate(5000000, true) == doctest::Approx(4955).epsilon(0.01));
}

TEST_CASE("an error frame replaces EOF and IFS with flags and a delimiter") {
  const CanFrame f = classic(0x123, {1, 2, 3, 4, 5, 6, 7, 8});
  const FrameBits ok = frame_bits(f);
  const FrameBits broken = error_frame_bits(f);
  CHECK(broken.total() == ok.total() - 10 + 23);
}

TEST_CASE("bit times round to the nearest nanosecond") {
  FrameBits b;
  b.nominal = 111;
  CHECK(bits_time_ns(b, {500000, 0}) == 222000);
  b.nominal = 1;
  CHECK(bits_time_ns(b, {3000000, 0}) == 333);  // 333.33 ns
  b.nominal = 2;
  CHECK(bits_time_ns(b, {3000000, 0}) == 667);  // 666.67 ns
}

TEST_CASE("the ISO-TP minimum time matches the LIMITS examples") {
  IsoTpBusProfile classic_profile;
  const BusRates r500{500000, 0};
  CHECK(isotp_min_frames(200, classic_profile).total() == 30);
  CHECK(isotp_min_time_ns(200, classic_profile, r500) == 30 * 222000ULL);
  CHECK(isotp_min_frames(1000, classic_profile).total() == 144);
  CHECK(isotp_min_time_ns(1000, classic_profile, r500) == 144 * 222000ULL);
  CHECK(isotp_min_frames(3000, classic_profile).total() == 430);
  CHECK(isotp_min_time_ns(3000, classic_profile, r500) == 430 * 222000ULL);

  IsoTpBusProfile fd_profile;
  fd_profile.fd = true;
  fd_profile.tx_dl = 64;
  const auto fd_ns = isotp_min_time_ns(1000, fd_profile, {500000, 2000000});
  CHECK(isotp_min_frames(1000, fd_profile).data_frames == 16);
  CHECK(static_cast<double>(fd_ns) / 1e6 == doctest::Approx(5.4).epsilon(0.02));
  // A single frame is one frame and no flow control.
  CHECK(isotp_min_frames(7, classic_profile).total() == 1);
  CHECK(isotp_min_frames(62, fd_profile).total() == 1);
  CHECK(isotp_min_frames(0, classic_profile).total() == 0);
  // Without padding the frames are shorter, hence faster.
  IsoTpBusProfile unpadded = classic_profile;
  unpadded.padding = false;
  CHECK(isotp_min_time_ns(200, unpadded, r500) < isotp_min_time_ns(200, classic_profile, r500));
}

TEST_CASE("the minimum frame count agrees with the ISO-TP implementation") {
  struct Shape {
    bool fd;
    std::uint8_t dl;
    bool ext;
  };
  const Shape shapes[] = {{false, 8, false}, {false, 8, true},  {true, 64, false},
                          {true, 64, true},  {true, 12, false}, {true, 32, true}};
  for (const Shape& s : shapes) {
    for (std::uint8_t bs : {0, 1, 8}) {
      IsoTpConfig c;
      c.tx_id = 0x6A0;
      c.rx_id = 0x6A8;
      c.fd = s.fd;
      c.tx_dl = s.dl;
      c.addressing = s.ext ? IsoTpAddressing::kExtended : IsoTpAddressing::kNormal;
      c.block_size = bs;
      IsoTpBusProfile p;
      p.fd = s.fd;
      p.tx_dl = s.dl;
      p.extended_addressing = s.ext;
      p.block_size = bs;
      for (std::size_t n :
           {1UL, 6UL, 7UL, 8UL, 61UL, 62UL, 63UL, 200UL, 1000UL, 4095UL, 4096UL, 5000UL, 70000UL}) {
        const auto mine = isotp_min_frames(n, p);
        const auto theirs = frames_for(n, c);
        CAPTURE(n);
        CAPTURE(s.dl);
        CHECK(mine.data_frames == theirs.data_frames);
        CHECK(mine.flow_controls == theirs.flow_controls);
      }
    }
  }
}
