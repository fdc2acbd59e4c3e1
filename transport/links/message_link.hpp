// The one message-link interface every program talks through: CAN (our ISO-TP
// on raw SocketCAN or on the user-space virtual bus), the kernel's CAN_ISOTP,
// and serial (COBS). Endpoints are named by one string (see endpoint.hpp).
#pragma once

#include <boost/asio/any_io_executor.hpp>
#include <boost/asio/awaitable.hpp>
#include <chrono>
#include <cstdint>
#include <memory>
#include <string>
#include <variant>
#include <vector>

#include "transport/framing/link_error.hpp"

namespace tollgate::transport {

template <class T>
using LinkResult = std::variant<T, LinkError>;  // index 0: value, index 1: error
struct Done {};

class MessageLink {
 public:
  using Duration = std::chrono::steady_clock::duration;
  virtual ~MessageLink() = default;

  // Sends one whole message; completes only after its last frame went out, or
  // with the specific error. kDeadline if `timeout` passes first.
  virtual boost::asio::awaitable<LinkResult<Done>> send(std::vector<std::uint8_t> message,
                                                        Duration timeout) = 0;
  // The next whole, CRC-checked message; kDeadline if `timeout` passes first.
  // Errors on the way (bad CRC, wrong sequence, ...) are returned, never
  // swallowed; the link stays usable afterwards.
  virtual boost::asio::awaitable<LinkResult<std::vector<std::uint8_t>>> receive(Duration timeout) = 0;

  virtual void close() = 0;
  virtual std::string describe() const = 0;  // the endpoint string, for logs
};

}  // namespace tollgate::transport
