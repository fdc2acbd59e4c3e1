// A node on the user-space virtual CAN bus: a CanFramePort over the hub's
// Unix-domain socket (tools/bus/hub.hpp; protocol in
// transport/framing/hub_protocol.hpp).
//
// send_frame() completes when the hub confirms the frame completed on the bus
// (after its airtime), with kTransmitFailed when the hub gave up on it (error
// limit) or refused it (its queue full). Several send_frame() calls may be
// outstanding at once; the hub sends a node's frames in the order it got them,
// so the confirmations come back in that order too (IsoTpLink relies on this
// for its transmit window). receive_frame() returns every frame the other
// nodes put on the bus, in bus order; when this node does not read fast
// enough and its receive queue (max_rx_queue frames) overflows, the frames in
// excess are lost and the next receive_frame() returns kOverflow once.
// Not thread-safe: use it from one executor that never runs two handlers at
// once (an io_context run by one thread, or a strand).
#pragma once

#include <boost/asio/any_io_executor.hpp>
#include <boost/asio/awaitable.hpp>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>

#include "transport/framing/hub_protocol.hpp"
#include "transport/links/can_frame_port.hpp"

namespace tollgate::transport {

struct VbusOptions {
  std::string socket_path;          // the hub's --socket
  bool fd = false;                  // send and accept CAN FD frames
  bool listen_only = false;         // only watch the bus (dump); send_frame() fails
  std::string name;                 // shows in the hub's log
  std::size_t max_rx_queue = 8192;  // frames received and not yet taken by receive_frame()
  std::chrono::milliseconds connect_timeout{2000};  // connect + Hello/Welcome
};

// What the hub told us in its Welcome.
struct VbusHubInfo {
  std::uint32_t node_id = 0;
  std::uint32_t bitrate = 0;
  std::uint32_t fd_data_bitrate = 0;
  bool airtime = true;
};

class VbusPort final : public CanFramePort {
 public:
  // Connects and does the Hello/Welcome exchange (blocking, bounded by
  // connect_timeout), then serves the socket on `executor`. kIo when the socket
  // cannot be reached (see errno in the log), kClosed when the hub hangs up,
  // kMalformedFrame when it answers nonsense, kInvalidArgument for bad options
  // (the hub's Error message text is logged to stderr).
  static LinkResult<std::unique_ptr<VbusPort>> connect(boost::asio::any_io_executor executor,
                                                       const VbusOptions& options);
  ~VbusPort() override;
  VbusPort(const VbusPort&) = delete;
  VbusPort& operator=(const VbusPort&) = delete;

  boost::asio::any_io_executor get_executor() override;
  boost::asio::awaitable<LinkResult<Done>> send_frame(const CanFrame& frame) override;
  boost::asio::awaitable<LinkResult<CanFrame>> receive_frame() override;
  // Fails every pending and later operation with kClosed. Idempotent.
  void close() override;
  bool fd_capable() const override;

  const VbusHubInfo& hub_info() const;
  // Frames sent to the hub and not yet confirmed. While two or more wait, the
  // bus is busy with ours for at least a frame's airtime: a process that
  // busy-waits for the turnarounds (tollgate-bus bench) may sleep meanwhile.
  std::size_t frames_in_flight() const;
  // Asks the hub for its counters (a StatsRequest). kClosed if the hub went away.
  boost::asio::awaitable<LinkResult<hub::HubStats>> request_stats();

  struct Impl;

 private:
  explicit VbusPort(std::shared_ptr<Impl> impl);
  std::shared_ptr<Impl> impl_;
};

}  // namespace tollgate::transport
