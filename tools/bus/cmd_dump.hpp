// The passive ISO-TP reassembler behind `tollgate-bus dump`: watches every
// frame on a bus (or in a capture), follows each identifier's ISO-TP transfers
// without ever sending, and reports the messages and the errors on the way.
#pragma once

#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "transport/framing/can_frame.hpp"
#include "transport/framing/isotp.hpp"

namespace tollgate::bus {

struct DumpedMessage {
  std::uint32_t id = 0;
  bool extended = false;
  std::vector<std::uint8_t> payload;  // the whole ISO-TP payload
  bool crc_ok = false;                // it ends in a valid CRC-32C trailer (our links' format)
};

struct DumpedError {
  std::uint32_t id = 0;
  bool extended = false;
  transport::LinkError error = transport::LinkError::kMalformedFrame;
};

class PassiveReassembler {
 public:
  using MessageSink = std::function<void(const DumpedMessage&)>;
  using ErrorSink = std::function<void(const DumpedError&)>;
  // At most `max_channels` identifiers are followed (frames of further ids are
  // ignored and counted); each accepts messages up to `max_message` bytes.
  PassiveReassembler(MessageSink on_message, ErrorSink on_error, std::size_t max_channels = 512,
                     std::size_t max_message = 1 << 20);
  // `now_us` must not decrease.
  void on_frame(const transport::CanFrame& frame, std::uint64_t now_us);
  std::uint64_t ignored_frames() const { return ignored_; }

 private:
  MessageSink on_message_;
  ErrorSink on_error_;
  std::size_t max_channels_;
  std::size_t max_message_;
  std::map<std::pair<bool, std::uint32_t>, std::unique_ptr<transport::IsoTpChannel>> channels_;
  std::uint64_t ignored_ = 0;
};

}  // namespace tollgate::bus
