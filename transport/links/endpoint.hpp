// Endpoint strings: the one way every Tollgate program names a link. Parsed in
// one place (Boost.URL), opened in one place.
//
//   can:IFACE?tx=ID&rx=ID[&opts]     our ISO-TP on a raw SocketCAN socket
//   isotp:IFACE?tx=ID&rx=ID[&opts]   the kernel's CAN_ISOTP socket
//   vbus:PATH?tx=ID&rx=ID[&opts]     our ISO-TP on the user-space virtual bus (hub socket PATH)
//   serial:DEVICE[?baud=N&max=N]     COBS + CRC-32C frames on a serial port
//
// ISO-TP options (can, isotp, vbus); numbers are decimal or 0x-hex:
//   tx, rx        CAN ids we send on / receive on (required to open a message link)
//   ext=1         29-bit identifiers (default 11-bit)
//   ta, ra        extended addressing: target address we send (N_TA), address we accept
//   fd=1          CAN FD frames; dl=8|12|16|20|24|32|48|64 transmit data length (default 64)
//   brs=0         FD without bit rate switch (default on)
//   pad=0         no padding (default on); padbyte=N (default 0xCC)
//   bs=N          block size we grant as receiver (default 0)
//   stmin=V       STmin we ask for: a code (0..127 = ms, 0xF1..0xF9 = 100..900 us) or a
//                 time with a unit (5ms, 300us)
//   wftmax=N      FC WAIT frames we tolerate as sender (default 8)
//   nas, nar, nbs, ncr  ISO-TP timers: a time with unit (1000ms, 1s, 250us; no unit = ms)
//   max=N         largest message we accept, bytes (default 65536, at most 16 MiB)
//   window=N      our ISO-TP: frames in flight at STmin 0 (1..32; default: the link's)
//   txtime=T      isotp: the kernel's frame_txtime (N_As / frame gap)
// serial options: baud=N (a standard termios rate, default 115200), max=N.
//
// Values are checked here; the errors name the endpoint and the offending part,
// e.g. "can:vcan0?tx=0x800: tx=0x800 is not an 11-bit CAN id (add ext=1 for 29-bit)".
#pragma once

#include <boost/asio/any_io_executor.hpp>
#include <chrono>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <variant>

#include "transport/links/can_frame_port.hpp"
#include "transport/links/can_interface.hpp"
#include "transport/links/message_link.hpp"

namespace tollgate::transport {

struct IsoTpConfig;  // transport/framing/isotp.hpp

enum class EndpointKind { kCan, kIsoTp, kVbus, kSerial };
std::string_view endpoint_kind_name(EndpointKind kind);  // "can", "isotp", "vbus", "serial"

// ISO-TP channel parameters as the endpoint gives them.
struct IsoTpParams {
  std::optional<std::uint32_t> tx_id;
  std::optional<std::uint32_t> rx_id;
  bool extended_ids = false;
  std::optional<std::uint8_t> tx_address;  // ta= (extended addressing)
  std::optional<std::uint8_t> rx_address;  // ra=
  bool fd = false;
  std::uint8_t tx_dl = 8;  // 64 when fd=1 and no dl= given
  bool brs = true;
  bool padding = true;
  std::uint8_t pad_byte = 0xCC;
  std::uint8_t block_size = 0;
  std::uint8_t stmin_code = 0;
  std::uint8_t wft_max = 8;
  std::chrono::microseconds n_as{1'000'000};
  std::chrono::microseconds n_ar{1'000'000};
  std::chrono::microseconds n_bs{1'000'000};
  std::chrono::microseconds n_cr{1'000'000};
  std::optional<std::uint8_t> tx_window;                  // window= (our ISO-TP only)
  std::optional<std::chrono::microseconds> frame_txtime;  // txtime= (kernel ISO-TP only)
};

struct Endpoint {
  EndpointKind kind = EndpointKind::kCan;
  std::string text;             // the string as given (describe() returns it)
  std::string target;           // interface name (can, isotp) or path (vbus socket, serial device)
  IsoTpParams isotp;            // can, isotp, vbus
  std::uint32_t baud = 115200;  // serial
  std::size_t max_message = 64 * 1024;  // largest message we accept
  bool is_can() const { return kind != EndpointKind::kSerial; }
};

struct EndpointError {
  std::string message;  // one line, names the endpoint and the bad part
};

std::variant<Endpoint, EndpointError> parse_endpoint(std::string_view text);

// Durations as endpoints and CLIs write them: "5s", "250ms", "300us", "2m";
// a bare number is milliseconds. nullopt when malformed or negative.
std::optional<std::chrono::microseconds> parse_duration(std::string_view text);

// The ISO-TP channel config our own ISO-TP (can:, vbus:) runs with for this
// endpoint. max_rx_size includes the link's 4-byte CRC trailer. tx_window is
// left at 1: the link options carry the window.
IsoTpConfig to_isotp_config(const Endpoint& endpoint);

// Opens a message link for any endpoint kind. can/isotp/vbus need tx= and rx=.
// The link's describe() is the endpoint text. Connecting to a hub or opening a
// serial port happens here, synchronously; everything after is asynchronous
// on `ex`.
LinkOpenResult<std::unique_ptr<MessageLink>> open_link(boost::asio::any_io_executor ex,
                                                       const Endpoint& endpoint);
LinkOpenResult<std::unique_ptr<MessageLink>> open_link(boost::asio::any_io_executor ex,
                                                       std::string_view endpoint);

// Opens the frame source of a can: or vbus: endpoint (tx/rx not needed): for
// dumping, replaying and benchmarking. The port receives every frame on the
// bus. `listen_only`: only watch (a vbus node that never sends; a can: socket
// that does not wait for confirmations of its own frames).
LinkOpenResult<std::unique_ptr<CanFramePort>> open_frame_port(boost::asio::any_io_executor ex,
                                                              const Endpoint& endpoint,
                                                              bool listen_only = false);

}  // namespace tollgate::transport
