// A MessageLink over the kernel's ISO-TP socket (PF_CAN, SOCK_DGRAM,
// CAN_ISOTP): the kernel segments and reassembles, we only read and write
// whole messages. `isotp:` endpoints open one.
//
// Like every CAN backend, the link appends a CRC-32C (little-endian) to each
// message inside the ISO-TP payload and checks it on receipt (kBadCrc), so the
// same peer can sit on our ISO-TP or the kernel's and see identical payloads.
//
// Errors the kernel reports through the socket error map as follows; the
// socket has one error slot for both directions, so an error of the receive
// path can surface on a send and the other way round:
//   ECOMM -> kTimeoutBs (no flow control, or our frame was not echoed: N_As)
//   ETIMEDOUT -> kTimeoutCr   EILSEQ -> kWrongSequence   EMSGSIZE -> kOverflow
//   EOVERFLOW -> kWaitLimit   EBADMSG -> kUnexpectedFrame  other -> kIo
// The kernel's own cap on a message applies (8200 bytes on Linux 6.1; from 6.2
// the module's max_pdu_size, default 8300), CRC trailer included: larger sends
// fail with kTooLarge, and a larger incoming message is refused by the kernel
// with FC OVERFLOW (the peer's send fails with kOverflow).
//
// send() completes when the socket reports the transmission finished (POLLOUT
// comes back only when the kernel's sender is idle again).
#pragma once

#include <boost/asio/any_io_executor.hpp>
#include <chrono>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>

#include "transport/links/can_interface.hpp"
#include "transport/links/message_link.hpp"

namespace tollgate::transport {

struct KernelIsoTpOptions {
  std::string interface;
  std::uint32_t tx_id = 0;
  std::uint32_t rx_id = 0;
  bool extended_ids = false;               // 29-bit identifiers
  std::optional<std::uint8_t> tx_address;  // extended addressing: N_TA we put first
  std::optional<std::uint8_t> rx_address;  // extended addressing expected on receipt
  bool fd = false;                         // CAN FD frames (interface MTU 72)
  std::uint8_t tx_dl = 8;                  // FD transmit data length: 8..64 DLC steps
  bool brs = true;                         // FD bit rate switch
  bool padding = true;                     // pad frames to full length on transmit
  std::uint8_t pad_byte = 0xCC;
  std::uint8_t block_size = 0;  // BS we send in flow control
  std::uint8_t stmin_code = 0;  // STmin byte we send (0x00-0x7F ms, 0xF1-0xF9)
  std::uint8_t wft_max = 0;
  std::optional<std::chrono::microseconds> frame_txtime;  // kernel N_As / gap; unset: default
  std::size_t max_message = 64 * 1024;  // largest payload we accept (without the CRC)
  std::string description;              // returned by describe()
};

class KernelIsoTpLink final : public MessageLink {
 public:
  static LinkOpenResult<std::unique_ptr<KernelIsoTpLink>> open(boost::asio::any_io_executor ex,
                                                               KernelIsoTpOptions options);
  ~KernelIsoTpLink() override;
  KernelIsoTpLink(const KernelIsoTpLink&) = delete;
  KernelIsoTpLink& operator=(const KernelIsoTpLink&) = delete;

  boost::asio::awaitable<LinkResult<Done>> send(std::vector<std::uint8_t> message,
                                                Duration timeout) override;
  boost::asio::awaitable<LinkResult<std::vector<std::uint8_t>>> receive(Duration timeout) override;
  void close() override;
  std::string describe() const override;

  struct State;

 private:
  explicit KernelIsoTpLink(std::shared_ptr<State> state);
  std::shared_ptr<State> state_;
};

// errno from a CAN_ISOTP socket -> LinkError (see the table above).
LinkError kernel_isotp_error(int err);

}  // namespace tollgate::transport
