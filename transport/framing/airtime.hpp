// How long CAN and CAN FD frames occupy the bus, computed from the frame's
// actual bit stream (ISO 11898-1:2015): SOF, arbitration and control bits, DLC,
// data, CRC-15 (classic) or stuff count + CRC-17/21 (FD, with its fixed stuff
// bits), delimiters, ACK, EOF and the 3-bit interframe space. Dynamic stuff
// bits are counted from the real bits (they depend on id, data and CRC), so two
// frames of the same length can take different times. Pure: no clock, no I/O.
//
// Also the ISO-TP minimum time for an N-byte message (../shared/brief/LIMITS.md),
// used by `tollgate-bus bench` as the yardstick for measured transfers.
#pragma once

#include <cstddef>
#include <cstdint>

#include "transport/framing/can_frame.hpp"

namespace tollgate::transport {

struct BusRates {
  std::uint32_t nominal_bps = 500000;  // arbitration phase (and classic frames)
  std::uint32_t data_bps = 0;          // CAN FD data phase when BRS is set; 0 = nominal_bps
  std::uint32_t data() const { return data_bps != 0 ? data_bps : nominal_bps; }
};

// Bits of one frame split by the rate they travel at. The data phase of a
// BRS frame runs from the BRS bit through the last CRC bit (the convention of
// the LIMITS.md table); everything else, and all of a non-BRS frame, is nominal.
struct FrameBits {
  std::uint32_t nominal = 0;      // bits at the nominal rate, stuff bits included
  std::uint32_t data = 0;         // bits at the data rate, stuff bits included
  std::uint32_t stuff = 0;        // dynamic stuff bits (part of nominal + data)
  std::uint32_t fixed_stuff = 0;  // FD fixed stuff bits in the CRC field (part of data/nominal)
  std::uint32_t total() const { return nominal + data; }
};

// The frame as it goes on the wire, interframe space included. The frame must be
// well formed (len valid for its format, id in range); the result for other
// frames is unspecified but bounded.
FrameBits frame_bits(const CanFrame& frame);

// Bits of a frame with `len` data bytes and no dynamic stuff bits (the best case)
// and with the most dynamic stuff bits the format allows, floor((L - 1) / 4) over
// the L stuffed bits (the worst case); FD fixed stuff bits are always included.
FrameBits frame_bits_best(std::size_t len, bool fd, bool brs, bool extended);
FrameBits frame_bits_worst(std::size_t len, bool fd, bool brs, bool extended);

// Bits on the wire when a receiver's CRC check fails: the broken frame up to its
// ACK delimiter, an active error flag plus the others' superposed flags (12),
// the error delimiter (8) and the interframe space (3). The sender then
// retransmits the frame.
FrameBits error_frame_bits(const CanFrame& frame);

// Time for `bits` at `rates`, in nanoseconds (rounded to the nearest ns).
std::uint64_t bits_time_ns(const FrameBits& bits, BusRates rates);
inline std::uint64_t frame_airtime_ns(const CanFrame& frame, BusRates rates) {
  return bits_time_ns(frame_bits(frame), rates);
}

// The CAN CRCs over a bit sequence (MSB-first polynomial division), exposed
// for tests: crc15 poly 0x4599, crc17 poly 0x1685B, crc21 poly 0x102899.
// Bits are passed one per byte (0 or 1).
std::uint32_t can_crc(const std::uint8_t* bits, std::size_t count, unsigned width,
                      std::uint32_t poly, std::uint32_t init);

// The shape of an ISO-TP channel, for counting its frames (the fields mean what
// the IsoTpConfig fields of the same name in isotp.hpp mean; isotp_link.hpp
// converts one into the other). Kept separate so this stays a pure calculator
// that cross-checks the ISO-TP implementation rather than repeating it.
struct IsoTpBusProfile {
  bool fd = false;                   // CAN FD frames
  std::uint8_t tx_dl = 8;            // frame data length: 8 classic; FD 8..64 (valid DLC step)
  bool brs = true;                   // FD frames use the data bit rate
  bool extended_id = false;          // 29-bit identifiers
  bool extended_addressing = false;  // first data byte is the target address
  bool padding = true;               // frames padded to tx_dl (FC to 8); else shortest valid length
  std::uint8_t block_size = 0;       // receiver's BS: a flow control after every BS frames
};

struct IsoTpMinFrames {
  std::size_t data_frames = 0;    // SF, or FF + CFs
  std::size_t flow_controls = 0;  // FC frames from the receiver
  std::size_t total() const { return data_frames + flow_controls; }
};

// The standard's minimum number of frames for an N-byte ISO-TP payload (the
// message as ISO-TP carries it, i.e. including any trailer the link adds).
IsoTpMinFrames isotp_min_frames(std::size_t n, const IsoTpBusProfile& profile);

// The ISO-TP minimum time for an N-byte payload: every frame of
// isotp_min_frames() back to back with no dynamic stuff bits (STmin 0, no
// turnaround gaps). LIMITS.md: 200 B at 500k classic = 30 frames = 6.66 ms.
std::uint64_t isotp_min_time_ns(std::size_t n, const IsoTpBusProfile& profile, BusRates rates);

}  // namespace tollgate::transport
