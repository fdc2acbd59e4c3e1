// IsoTpLink: the CAN message link. Runs our ISO-TP state machines
// (transport/framing/isotp.hpp) over any CanFramePort: a raw SocketCAN socket
// or a node on the user-space virtual bus.
//
// Every message travels as  payload || CRC-32C(payload), the CRC 4 bytes
// little-endian, inside the ISO-TP payload (the same trailer the serial framing
// uses), so the transport never delivers a message altered by accident: a
// mismatch is kBadCrc. Deliberate forgery is the gateway's to catch (signatures).
// Hence a link sends messages of 0..(max size - 4) bytes, and an empty message
// is still 4 bytes on the bus.
//
// One coroutine per link reads frames and feeds the channel; one steady_timer is
// armed at the channel's next deadline. send() completes after the last frame's
// transmit confirmation, or with the specific error (N_As/N_Bs timeouts, FC
// OVERFLOW, WAIT limit, transmit failure, kDeadline). receive() returns the next
// good message, or the next error on the way (kBadCrc, kWrongSequence,
// kTimeoutCr, kUnexpectedFrame, kOverflow, kMalformedFrame, ...) and stays
// usable. One send() and one receive() may be in progress at a time each (a
// second concurrent call fails with kInvalidArgument).
//
// Received messages and errors queue (at most max_rx_queue entries; beyond
// that the oldest message is dropped and a kOverflow is queued in its place)
// until receive() takes them, so nothing arriving between two receive() calls
// is lost silently. Not thread-safe: run it on the port's executor from one
// thread (or a strand).
#pragma once

#include <boost/asio/any_io_executor.hpp>
#include <boost/asio/awaitable.hpp>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "transport/framing/airtime.hpp"
#include "transport/framing/isotp.hpp"
#include "transport/links/can_frame_port.hpp"
#include "transport/links/message_link.hpp"

namespace tollgate::transport {

inline constexpr std::size_t kCanLinkCrcSize = 4;

struct IsoTpLinkOptions {
  IsoTpConfig isotp;  // ids, format, timers; tx_window is chosen by the link (see below)
  // Frames in flight at the port while the peer's STmin is 0. Ports that keep
  // frame order (the virtual bus, SocketCAN) keep the bus busy with > 1; 1 is
  // strict stop-and-wait. The default (kMaxTxWindow, 32 classic frames = 7 ms
  // at 500 kbit/s) rides out the scheduling hiccups of a loaded host; a port
  // must accept this many outstanding send_frame() calls.
  std::uint8_t tx_window = kMaxTxWindow;
  std::size_t max_rx_queue = 64;  // received messages/errors waiting for receive()
  std::string description;        // the endpoint string, returned by describe()
};

// Counters for tests and `tollgate-bus bench`.
struct IsoTpLinkCounters {
  std::uint64_t frames_sent = 0;      // confirmed by the port
  std::uint64_t frames_received = 0;  // read from the port (all ids)
  std::uint64_t messages_sent = 0;
  std::uint64_t messages_received = 0;
  std::uint64_t bad_crc = 0;
  std::uint64_t receive_errors = 0;  // every error handed to receive(), bad CRC included
  std::uint64_t rx_queue_overflow = 0;
};

class IsoTpLink final : public MessageLink {
 public:
  // Takes ownership of the port. kInvalidArgument when the ISO-TP config is
  // invalid, asks for FD on a port that cannot do it, or max_rx_size < 4.
  static LinkResult<std::unique_ptr<IsoTpLink>> create(std::unique_ptr<CanFramePort> port,
                                                       IsoTpLinkOptions options);
  ~IsoTpLink() override;

  boost::asio::awaitable<LinkResult<Done>> send(std::vector<std::uint8_t> message,
                                                Duration timeout) override;
  boost::asio::awaitable<LinkResult<std::vector<std::uint8_t>>> receive(Duration timeout) override;
  // Closes the port; pending and later operations fail with kClosed. Idempotent.
  void close() override;
  std::string describe() const override;

  IsoTpLinkCounters counters() const;
  const IsoTpCounters& channel_counters() const;
  CanFramePort& port();

  struct Impl;

 private:
  explicit IsoTpLink(std::shared_ptr<Impl> impl);
  std::shared_ptr<Impl> impl_;
};

// The airtime calculator's view of an ISO-TP config (for isotp_min_time_ns).
IsoTpBusProfile bus_profile(const IsoTpConfig& config);

}  // namespace tollgate::transport
