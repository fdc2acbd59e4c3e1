#include "transport/framing/airtime.hpp"

#include <algorithm>
#include <array>

namespace tollgate::transport {
namespace {

// Longest stuffed region: extended FD frame with 64 bytes (553 bits) plus its
// dynamic stuff bits, stuff count and CRC; 1024 leaves ample room.
constexpr std::size_t kMaxBits = 1024;

// CRC delimiter, ACK slot, ACK delimiter, EOF (7) and the interframe space (3).
constexpr std::uint32_t kTailBits = 1 + 1 + 1 + 7 + 3;
constexpr std::uint32_t kEofAndIfsBits = 7 + 3;
// Active error flag (6), the other nodes' superposed flags (up to 6 more),
// error delimiter (8), interframe space (3).
constexpr std::uint32_t kErrorFrameBits = 6 + 6 + 8 + 3;

class Bits {
 public:
  void put(std::uint32_t value, unsigned width) {
    for (unsigned i = width; i-- > 0;) push(static_cast<std::uint8_t>((value >> i) & 1U));
  }
  void push(std::uint8_t bit) {
    if (n_ < kMaxBits) bits_[n_++] = bit;
  }
  std::size_t size() const { return n_; }
  const std::uint8_t* data() const { return bits_.data(); }
  std::uint8_t operator[](std::size_t i) const { return bits_[i]; }

 private:
  std::array<std::uint8_t, kMaxBits> bits_{};
  std::size_t n_ = 0;
};

std::uint8_t dlc_of(std::size_t len) {
  if (len <= 8) return static_cast<std::uint8_t>(len);
  constexpr std::array<std::uint8_t, 7> steps = {12, 16, 20, 24, 32, 48, 64};
  for (std::size_t i = 0; i < steps.size(); ++i)
    if (len <= steps[i]) return static_cast<std::uint8_t>(9 + i);
  return 15;
}

// Dynamic bit stuffing over `in`: after five equal bits (stuff bits included)
// the complement is inserted. Writes the stuffed stream to `out` and records,
// for each stuff bit, whether it falls in the data phase (it belongs to the
// phase of the bit before it; bits at index >= data_from are data phase).
struct StuffResult {
  std::uint32_t stuff_nominal = 0;
  std::uint32_t stuff_data = 0;
};
StuffResult stuff(const Bits& in, std::size_t data_from, Bits& out) {
  StuffResult r;
  std::uint8_t last = 2;
  unsigned run = 0;
  for (std::size_t i = 0; i < in.size(); ++i) {
    const std::uint8_t b = in[i];
    out.push(b);
    run = (b == last) ? run + 1 : 1;
    last = b;
    if (run == 5) {
      const auto s = static_cast<std::uint8_t>(b ^ 1U);
      out.push(s);
      (i >= data_from ? r.stuff_data : r.stuff_nominal) += 1;
      last = s;
      run = 1;
    }
  }
  return r;
}

// SOF through the last data bit, destuffed. Returns the index of the first
// data-phase bit (BRS) or the size when the whole frame is nominal.
std::size_t header_and_data(const CanFrame& f, Bits& b) {
  const std::size_t len = std::min<std::size_t>(f.len, f.fd ? 64 : 8);
  std::size_t data_from = kMaxBits;
  b.push(0);  // SOF
  if (f.extended) {
    b.put((f.id >> 18) & 0x7FFU, 11);  // base id
    b.push(1);                         // SRR
    b.push(1);                         // IDE
    b.put(f.id & 0x3FFFFU, 18);        // id extension
  } else {
    b.put(f.id & 0x7FFU, 11);
  }
  if (f.fd) {
    if (!f.extended) {
      b.push(0);  // RRS
      b.push(0);  // IDE
    } else {
      b.push(0);  // RRS
    }
    b.push(1);  // FDF
    b.push(0);  // res
    if (f.brs) data_from = b.size();
    b.push(f.brs ? 1 : 0);  // BRS
    b.push(0);              // ESI: error active
    b.put(dlc_of(len), 4);
  } else {
    if (!f.extended) {
      b.push(0);  // RTR: data frame
      b.push(0);  // IDE
      b.push(0);  // r0
    } else {
      b.push(0);  // RTR
      b.push(0);  // r1
      b.push(0);  // r0
    }
    b.put(static_cast<std::uint32_t>(len), 4);  // DLC
  }
  for (std::size_t i = 0; i < len; ++i) b.put(f.data[i], 8);
  return data_from;
}

constexpr std::array<std::uint8_t, 8> kGray = {0, 1, 3, 2, 6, 7, 5, 4};

std::uint32_t stuffed_region_bits(std::size_t len, bool fd, bool extended) {
  const auto data = static_cast<std::uint32_t>(8 * len);
  if (fd) return (extended ? 41U : 22U) + data;  // SOF..data; CRC field is fixed-stuffed
  return (extended ? 54U : 34U) + data;          // SOF..CRC
}
std::uint32_t fd_crc_field_bits(std::size_t len) {
  // Fixed stuff bit, stuff count (3 + parity), CRC with a fixed stuff bit
  // before every fourth bit: 6 fixed stuff bits with CRC-17, 7 with CRC-21.
  return len <= 16 ? 4 + 17 + 6 : 4 + 21 + 7;
}
std::uint32_t fd_fixed_stuff(std::size_t len) {
  return len <= 16 ? 6 : 7;
}
// Bits before the BRS bit: SOF, id, and the control bits up to res.
std::uint32_t fd_arbitration_bits(bool extended) {
  return extended ? 35 : 16;
}

FrameBits formula_bits(std::size_t len, bool fd, bool brs, bool extended, bool worst) {
  FrameBits r;
  const std::uint32_t region = stuffed_region_bits(len, fd, extended);
  const std::uint32_t stuff = worst ? (region - 1) / 4 : 0;
  r.stuff = stuff;
  if (!fd) {
    r.nominal = region + stuff + kTailBits;
    return r;
  }
  r.fixed_stuff = fd_fixed_stuff(len);
  const std::uint32_t crc_field = fd_crc_field_bits(len);
  if (!brs) {
    r.nominal = region + stuff + crc_field + kTailBits;
    return r;
  }
  const std::uint32_t arb = fd_arbitration_bits(extended);
  const std::uint32_t arb_stuff = worst ? (arb - 1) / 4 : 0;
  r.nominal = arb + arb_stuff + kTailBits;
  r.data = (region - arb) + (stuff - arb_stuff) + crc_field;
  return r;
}

}  // namespace

std::uint32_t can_crc(const std::uint8_t* bits, std::size_t count, unsigned width,
                      std::uint32_t poly, std::uint32_t init) {
  const std::uint32_t top = 1U << (width - 1);
  const std::uint32_t mask = (width == 32) ? 0xFFFFFFFFU : ((1U << width) - 1);
  std::uint32_t crc = init & mask;
  for (std::size_t i = 0; i < count; ++i) {
    const bool feedback = ((crc & top) != 0) != (bits[i] != 0);
    crc = (crc << 1) & mask;
    if (feedback) crc ^= poly;
  }
  return crc & mask;
}

FrameBits frame_bits(const CanFrame& frame) {
  Bits plain;
  const std::size_t data_from = header_and_data(frame, plain);
  const std::size_t len = std::min<std::size_t>(frame.len, frame.fd ? 64 : 8);
  FrameBits r;
  Bits wire;
  if (!frame.fd) {
    // Classic: CRC-15 over the destuffed bits, then SOF..CRC is stuffed.
    const std::uint32_t crc = can_crc(plain.data(), plain.size(), 15, 0x4599, 0);
    plain.put(crc, 15);
    const StuffResult s = stuff(plain, kMaxBits, wire);
    r.stuff = s.stuff_nominal;
    r.nominal = static_cast<std::uint32_t>(wire.size()) + kTailBits;
    return r;
  }
  // FD: SOF..data dynamically stuffed; the stuff count (Gray-coded count mod 8
  // plus even parity) and the CRC follow with fixed stuff bits. The CRC covers
  // the stuffed bits and the stuff count, initialised with a leading 1.
  const StuffResult s = stuff(plain, data_from, wire);
  const std::uint32_t dynamic = s.stuff_nominal + s.stuff_data;
  const std::uint8_t gray = kGray[dynamic % 8];
  const auto parity = static_cast<std::uint8_t>(((gray >> 2) ^ (gray >> 1) ^ gray) & 1U);
  Bits crc_input = wire;
  crc_input.put(gray, 3);
  crc_input.push(parity);
  const bool crc21 = len > 16;
  const std::uint32_t crc =
      crc21 ? can_crc(crc_input.data(), crc_input.size(), 21, 0x102899, 1U << 20)
            : can_crc(crc_input.data(), crc_input.size(), 17, 0x1685B, 1U << 16);
  // Build the fixed-stuffed CRC field so its length comes from the bits, not a table.
  Bits field_plain;
  field_plain.put(gray, 3);
  field_plain.push(parity);
  field_plain.put(crc, crc21 ? 21 : 17);
  std::uint8_t prev = wire[wire.size() - 1];
  std::uint32_t field_bits = 0;
  std::uint32_t fixed = 0;
  for (std::size_t i = 0; i < field_plain.size(); ++i) {
    if (i % 4 == 0) {  // a fixed stuff bit, the complement of the bit before it
      prev = static_cast<std::uint8_t>(prev ^ 1U);
      ++fixed;
      ++field_bits;
    }
    prev = field_plain[i];
    ++field_bits;
  }
  r.stuff = dynamic;
  r.fixed_stuff = fixed;
  const auto stuffed = static_cast<std::uint32_t>(wire.size());
  if (!frame.brs) {
    r.nominal = stuffed + field_bits + kTailBits;
    return r;
  }
  // Everything from the BRS bit on, up to the CRC delimiter, is data phase.
  const std::uint32_t arb_bits = fd_arbitration_bits(frame.extended) + s.stuff_nominal;
  r.nominal = arb_bits + kTailBits;
  r.data = stuffed - arb_bits + field_bits;
  return r;
}

FrameBits frame_bits_best(std::size_t len, bool fd, bool brs, bool extended) {
  return formula_bits(len, fd, fd && brs, extended, false);
}
FrameBits frame_bits_worst(std::size_t len, bool fd, bool brs, bool extended) {
  return formula_bits(len, fd, fd && brs, extended, true);
}

FrameBits error_frame_bits(const CanFrame& frame) {
  FrameBits r = frame_bits(frame);
  // The receivers flag the CRC error after the ACK delimiter: EOF and IFS are
  // replaced by the error frame. Both are at the nominal rate.
  r.nominal = r.nominal - kEofAndIfsBits + kErrorFrameBits;
  return r;
}

std::uint64_t bits_time_ns(const FrameBits& bits, BusRates rates) {
  const std::uint64_t nominal = rates.nominal_bps == 0 ? 1 : rates.nominal_bps;
  const std::uint64_t data = rates.data() == 0 ? 1 : rates.data();
  // Sum the two phases as exact fractions of a second, then round once.
  const std::uint64_t num = std::uint64_t{bits.nominal} * 1'000'000'000ULL * data +
                            std::uint64_t{bits.data} * 1'000'000'000ULL * nominal;
  const std::uint64_t den = nominal * data;
  return (num + den / 2) / den;
}

namespace {

std::size_t frame_length(std::size_t used, const IsoTpBusProfile& p) {
  if (!p.fd) return p.padding ? 8 : used;
  const std::size_t n = p.padding ? std::max<std::size_t>(used, 8) : used;
  return round_up_fd_length(n);
}

std::size_t ceil_div(std::size_t a, std::size_t b) {
  return (a + b - 1) / b;
}

}  // namespace

IsoTpMinFrames isotp_min_frames(std::size_t n, const IsoTpBusProfile& p) {
  IsoTpMinFrames r;
  if (n == 0) return r;
  const std::size_t ae = p.extended_addressing ? 1 : 0;
  const std::size_t dl = p.fd ? p.tx_dl : 8;
  const std::size_t sf_max = dl <= 8 ? 7 - ae : dl - 2 - ae;
  if (n <= sf_max) {
    r.data_frames = 1;
    return r;
  }
  const std::size_t ff = n <= 4095 ? dl - 2 - ae : dl - 6 - ae;
  const std::size_t cf = dl - 1 - ae;
  const std::size_t cfs = ceil_div(n - ff, cf);
  r.data_frames = 1 + cfs;
  r.flow_controls = p.block_size == 0 ? 1 : 1 + (cfs - 1) / p.block_size;
  return r;
}

std::uint64_t isotp_min_time_ns(std::size_t n, const IsoTpBusProfile& p, BusRates rates) {
  if (n == 0) return 0;
  const std::size_t ae = p.extended_addressing ? 1 : 0;
  const std::size_t dl = p.fd ? p.tx_dl : 8;
  const auto time_of = [&](std::size_t used) {
    return bits_time_ns(frame_bits_best(frame_length(used, p), p.fd, p.brs, p.extended_id), rates);
  };
  const IsoTpMinFrames frames = isotp_min_frames(n, p);
  if (frames.flow_controls == 0) {
    const std::size_t pci = (n <= 7 - ae) ? 1 : 2;
    return time_of(ae + pci + n);
  }
  const std::size_t ff_pci = n <= 4095 ? 2 : 6;
  const std::size_t ff = dl - ff_pci - ae;
  const std::size_t cf = dl - 1 - ae;
  const std::size_t cfs = frames.data_frames - 1;
  const std::size_t last = n - ff - (cfs - 1) * cf;
  std::uint64_t t = time_of(dl);                // FF
  t += (cfs - 1) * time_of(dl);                 // full CFs
  t += time_of(ae + 1 + last);                  // last CF
  t += frames.flow_controls * time_of(ae + 3);  // FCs
  return t;
}

}  // namespace tollgate::transport
