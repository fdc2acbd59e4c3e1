// A CanFramePort over a raw SocketCAN socket (PF_CAN, SOCK_RAW, CAN_RAW),
// classic CAN or CAN FD (CAN_RAW_FD_FRAMES). Our ISO-TP (isotp_link.hpp) runs
// on top of it for `can:` endpoints; `tollgate-bus dump/play` use it directly.
//
// Transmit confirmation: with `confirm_tx` (the default) the port enables
// CAN_RAW_RECV_OWN_MSGS and send_frame() completes only when the kernel hands
// our own frame back (MSG_CONFIRM): on controllers with IFF_ECHO that happens
// after the frame went out on the wire, on vcan when the CAN core looped it back
// to the other sockets. Own frames are never returned by receive_frame().
// Without `confirm_tx`, send_frame() completes once the kernel accepted the frame.
//
// One background reader per port drains the socket into a bounded queue, so
// receive_frame() and send_frame() may run concurrently (any number of each).
// All of it runs on the port's executor, which must be single-threaded (an
// io_context run by one thread, or a strand). close() fails pending and later
// operations with kClosed; the port's state lives until they have returned.
#pragma once

#include <linux/can.h>

#include <boost/asio/any_io_executor.hpp>
#include <boost/asio/awaitable.hpp>
#include <chrono>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "transport/links/can_frame_port.hpp"
#include "transport/links/can_interface.hpp"

namespace tollgate::transport {

// A receive filter: a frame passes if (frame id & mask) == (id & mask) and its
// id format (11/29-bit) matches.
struct CanIdFilter {
  std::uint32_t id = 0;
  std::uint32_t mask = 0x7FF;
  bool extended = false;
};

struct SocketCanOptions {
  std::string interface;             // e.g. "vcan0"
  bool fd = false;                   // CAN FD frames; the interface must have the FD MTU (72)
  std::vector<CanIdFilter> filters;  // empty: every frame. With confirm_tx, include the ids
                                     // you send, or their confirmations are filtered out.
  bool confirm_tx = true;            // see the header comment
  std::chrono::milliseconds tx_timeout{1000};  // no confirmation by then: kTimeoutAs
  std::size_t rx_queue_frames = 20000;         // frames nobody has received yet (20 000: a 128 KiB
                                               // ISO-TP message on classic CAN, sent back to back);
                                               // beyond that they are dropped, counted, and
                                               // receive_frame() returns kOverflow once where the
                                               // loss happened
};

class SocketCanPort final : public CanFramePort {
 public:
  // Opens and binds the socket and starts its reader on `ex`. Fails with a
  // one-line message naming the interface when AF_CAN, the interface or FD
  // support is missing.
  static LinkOpenResult<std::unique_ptr<SocketCanPort>> open(boost::asio::any_io_executor ex,
                                                             SocketCanOptions options);
  ~SocketCanPort() override;
  SocketCanPort(const SocketCanPort&) = delete;
  SocketCanPort& operator=(const SocketCanPort&) = delete;

  boost::asio::any_io_executor get_executor() override;
  boost::asio::awaitable<LinkResult<Done>> send_frame(const CanFrame& frame) override;
  boost::asio::awaitable<LinkResult<CanFrame>> receive_frame() override;
  void close() override;
  bool fd_capable() const override;

  struct Counters {
    std::uint64_t frames_sent = 0;
    std::uint64_t frames_received = 0;
    std::uint64_t rx_dropped = 0;      // queue full, or dropped by the kernel (SO_RXQ_OVFL)
    std::uint64_t tx_unconfirmed = 0;  // confirmations that never came (frame lost by the driver)
  };
  Counters counters() const;

  struct State;  // shared with the reader coroutine

 private:
  explicit SocketCanPort(std::shared_ptr<State> state);
  std::shared_ptr<State> state_;
};

// Conversions between CanFrame and the kernel's structs; pure, so they are
// tested on machines without AF_CAN.
namespace socketcan {
// Whether `frame` may go out on a socket with (fd_socket) or without FD frames:
// id within 11/29 bits, classic length <= 8 without FD flags, FD lengths valid.
bool frame_fits(const CanFrame& frame, bool fd_socket);
struct KernelFrameBytes {
  canfd_frame data{};  // a classic frame is the first CAN_MTU bytes of it
  std::size_t size = CAN_MTU;
};
KernelFrameBytes to_kernel_frame(const CanFrame& frame);
// nullopt for remote (RTR) and error frames and reads that are neither CAN_MTU
// nor CANFD_MTU bytes long.
std::optional<CanFrame> from_kernel_frame(const canfd_frame& raw, std::size_t nbytes);
can_filter to_kernel_filter(const CanIdFilter& f);
bool same_frame(const CanFrame& a, const CanFrame& b);
}  // namespace socketcan

}  // namespace tollgate::transport
