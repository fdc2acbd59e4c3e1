// Frame captures, pure (bytes and text in and out; the caller does the file I/O):
//  - the can-utils log format written by `candump -l` and replayed by `canplayer`:
//      (1700000000.123456) vcan0 123#DEADBEEF        classic, 11-bit id (3 hex digits)
//      (1700000000.123456) vcan0 1234ABCD#00         classic, 29-bit id (8 hex digits)
//      (1700000000.123456) vcan0 123##1DEADBEEF      CAN FD; the digit after ## is the
//                                                     flags nibble (1 = BRS, 2 = ESI)
//  - pcap (microsecond timestamps) with LINKTYPE_CAN_SOCKETCAN (227), the
//    format Wireshark and tshark read: per record a 16-byte SocketCAN header
//    (id and flags big-endian, length, FD flags with CANFD_FDF) and the data;
//    classic records are 16 bytes, FD records 72 (the whole canfd_frame), as
//    Linux captures them.
// Results are std::variant<T, LinkError>, the same type as LinkResult<T> in
// message_link.hpp (not included here: the framing layer stays free of Asio).
#pragma once

#include <cstddef>
#include <cstdint>
#include <span>
#include <string>
#include <string_view>
#include <variant>
#include <vector>

#include "transport/framing/can_frame.hpp"
#include "transport/framing/link_error.hpp"

namespace tollgate::transport {

struct CapturedFrame {
  std::uint64_t time_us = 0;  // microseconds since the Unix epoch
  std::string interface;      // "vcan0"; at most 16 characters (IFNAMSIZ - 1 in Linux is 15)
  CanFrame frame;
};

// One candump log line, without the trailing newline.
std::string format_candump_line(const CapturedFrame& captured);

// Parses one candump log line (a trailing "\n", "\r\n" and a trailing " T" or
// " R" direction marker are accepted). kMalformedFrame for anything else,
// including remote/error frames and classic DLCs above 8, which we never send.
std::variant<CapturedFrame, LinkError> parse_candump_line(std::string_view line);

inline constexpr std::uint32_t kLinktypeCanSocketcan = 227;
inline constexpr std::uint32_t kPcapSnaplen = 72;  // sizeof(struct canfd_frame)

// The 24-byte pcap global header (magic 0xA1B2C3D4 little-endian, version 2.4).
std::vector<std::uint8_t> pcap_file_header();
// One pcap record: the 16-byte record header and the SocketCAN frame.
std::vector<std::uint8_t> pcap_record(std::uint64_t time_us, const CanFrame& frame);

// Reads a whole pcap file of LINKTYPE_CAN_SOCKETCAN records (either byte order,
// microsecond or nanosecond magic). kMalformedFrame on a bad header, another
// link type, a truncated record or a record that is not a valid CAN frame;
// kTooLarge when it holds more than `max_records`.
std::variant<std::vector<CapturedFrame>, LinkError> parse_pcap(
    std::span<const std::uint8_t> file, std::size_t max_records = 10'000'000);

}  // namespace tollgate::transport
