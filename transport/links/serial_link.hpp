// MessageLink over a serial line (a UART, a USB serial adapter, a pty): each
// message is one COBS + CRC-32C frame (framing/serial_framer.hpp).
//
// The port is put in raw mode (cfmakeraw: no echo, no line editing, no
// character translation), 8 data bits, no parity, 1 stop bit, no hardware or
// software flow control, receiver enabled, modem lines ignored, at the
// configured baud rate (one of the standard termios rates, 50 .. 4000000).
//
// Concurrency: at most one send() and one receive() in flight at a time (they
// may overlap each other), all on the link's executor. A second concurrent
// send() or receive() fails with kInvalidArgument.
#pragma once

#include <array>
#include <boost/asio/any_io_executor.hpp>
#include <boost/asio/awaitable.hpp>
#include <boost/asio/serial_port.hpp>
#include <boost/asio/steady_timer.hpp>
#include <chrono>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "transport/framing/serial_framer.hpp"
#include "transport/links/message_link.hpp"

namespace tollgate::transport {

struct SerialOptions {
  std::uint32_t baud = 115200;
  // Largest payload sent or accepted; bigger incoming frames are reported as
  // kOverflow and skipped, bigger outgoing messages fail with kTooLarge. At
  // most 16 MiB: the receive buffer (max_payload + 4) is allocated up front.
  std::size_t max_payload = kDefaultMaxSerialPayload;
  // A frame is always preceded by an extra 0x00 when it is the first one sent
  // and after a send that was cut short (deadline), so the peer's decoder drops
  // the partial bytes instead of gluing them to this frame. Set this to also do
  // it after the line has been idle this long: noise picked up while idle then
  // costs nothing. It costs one byte per such frame (see docs/PROTOCOL.md,
  // serial overhead).
  std::optional<std::chrono::steady_clock::duration> resync_after_idle;
};

// True for the baud rates termios can set (B50 .. B4000000).
bool is_standard_baud_rate(std::uint32_t baud);

class SerialLink final : public MessageLink {
 public:
  // Opens `device` and configures it. Throws boost::system::system_error
  // (invalid_argument for a non-standard baud rate).
  SerialLink(boost::asio::any_io_executor ex, const std::string& device,
             SerialOptions options = {});
  // Takes ownership of an already-open descriptor (a pty from openpty(), a port
  // opened elsewhere) and configures it the same way. The descriptor is closed
  // when the link is, and also if this constructor throws.
  SerialLink(boost::asio::any_io_executor ex, int fd, SerialOptions options = {},
             std::string description = {});
  ~SerialLink() override;

  // Non-throwing forms of the constructors: kInvalidArgument for a bad baud
  // rate or option, kIo when the device cannot be opened or configured.
  static LinkResult<std::unique_ptr<SerialLink>> open(boost::asio::any_io_executor ex,
                                                      const std::string& device,
                                                      SerialOptions options = {});
  static LinkResult<std::unique_ptr<SerialLink>> adopt(boost::asio::any_io_executor ex, int fd,
                                                       SerialOptions options = {},
                                                       std::string description = {});

  // kTooLarge if the message exceeds max_payload; kDeadline if the frame has
  // not been written within `timeout` (part of it may have been: the next
  // frame then starts with a 0x00 so the peer discards the fragment); kClosed
  // after close() or when the other end went away; kIo for other errors.
  boost::asio::awaitable<LinkResult<Done>> send(std::vector<std::uint8_t> message,
                                                Duration timeout) override;
  // The next frame's payload, or the specific error for the next bad frame
  // (kBadCrc, kMalformedFrame, kOverflow); the link stays usable after those
  // and after kDeadline (bytes already received are kept for the next call).
  boost::asio::awaitable<LinkResult<std::vector<std::uint8_t>>> receive(Duration timeout) override;

  void close() override;
  std::string describe() const override { return description_; }
  boost::asio::any_io_executor get_executor() { return port_.get_executor(); }

 private:
  void configure();  // throws
  boost::asio::awaitable<boost::system::error_code> read_some();
  boost::asio::awaitable<boost::system::error_code> write_frame(std::size_t size);
  static boost::asio::awaitable<boost::system::error_code> wait(boost::asio::steady_timer& timer);

  SerialOptions options_;
  std::string description_;
  boost::asio::serial_port port_;

  std::vector<std::uint8_t> decode_buffer_;
  SerialFrameDecoder decoder_;
  std::array<std::uint8_t, 4096> rx_{};
  std::size_t rx_begin_ = 0;  // rx_[rx_begin_, rx_end_) is received but not yet decoded
  std::size_t rx_end_ = 0;
  bool receiving_ = false;

  std::vector<std::uint8_t> tx_;
  std::size_t tx_written_ = 0;
  bool sending_ = false;
  bool resync_next_ = true;  // the peer may hold a fragment: lead the next frame with 0x00
  std::chrono::steady_clock::time_point last_tx_end_{};
  bool closed_ = false;
};

}  // namespace tollgate::transport
