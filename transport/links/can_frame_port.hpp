// Where CAN frames come from and go to: a raw SocketCAN socket or a node on the
// user-space virtual bus. The ISO-TP message link (isotp_link.hpp) runs our
// framing state machines on top of any CanFramePort.
#pragma once

#include <boost/asio/any_io_executor.hpp>
#include <boost/asio/awaitable.hpp>

#include "transport/framing/can_frame.hpp"
#include "transport/links/message_link.hpp"

namespace tollgate::transport {

class CanFramePort {
 public:
  virtual ~CanFramePort() = default;
  virtual boost::asio::any_io_executor get_executor() = 0;
  // Completes when the frame has gone out on the bus (for the virtual bus: once
  // the hub confirms transmission, after its airtime), or with an error.
  virtual boost::asio::awaitable<LinkResult<Done>> send_frame(const CanFrame& frame) = 0;
  // The next frame seen on the bus (frames we sent ourselves are not echoed).
  virtual boost::asio::awaitable<LinkResult<CanFrame>> receive_frame() = 0;
  virtual void close() = 0;
  virtual bool fd_capable() const = 0;
};

}  // namespace tollgate::transport
