// The virtual CAN bus hub's socket protocol (tools/bus/hub.hpp is the hub,
// transport/links/vbus_port.hpp the node side). Pure encode/decode; the byte
// layout is documented in docs/PROTOCOL.md ("Virtual bus hub").
//
// A node connects to the hub's Unix-domain stream socket and both sides then
// exchange messages, each
//     u16 length (little-endian) | u8 type | body (length - 1 bytes)
// All integers are little-endian. The node speaks first (Hello); the hub answers
// Welcome (or Error and closes). Then the node sends Transmit and StatsRequest,
// the hub sends Deliver, TxConfirm, Stats and Error, in any interleaving.
// Every length is capped: a node's messages by kMaxNodeMessage, the hub's by
// kMaxHubMessage; a decoder given a longer length fails for good (kTooLarge),
// since a stream without trustworthy lengths cannot be resynchronised.
#pragma once

#include <cstddef>
#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <variant>
#include <vector>

#include "transport/framing/can_frame.hpp"
#include "transport/framing/link_error.hpp"

namespace tollgate::transport::hub {

inline constexpr std::uint8_t kProtocolVersion = 1;
inline constexpr std::size_t kMaxNodeName = 32;
// Largest body (type byte included) a node may send: a Transmit of a 64-byte FD frame.
inline constexpr std::size_t kMaxNodeMessage = 1 + 4 + 4 + 1 + 1 + 64;
// Largest body the hub sends: Stats with kMaxStatsIds identifiers fits.
inline constexpr std::size_t kMaxHubMessage = 65535;
inline constexpr std::size_t kMaxStatsIds = 2048;

enum class Type : std::uint8_t {
  kHello = 1,         // node -> hub, first message
  kWelcome = 2,       // hub -> node, answer to Hello
  kTransmit = 3,      // node -> hub: put this frame on the bus
  kDeliver = 4,       // hub -> node: a frame another node sent
  kTxConfirm = 5,     // hub -> node: what became of a Transmit
  kStatsRequest = 6,  // node -> hub
  kStats = 7,         // hub -> node: the counters
  kError = 8,         // hub -> node: a protocol violation; the hub then closes
};

struct Hello {
  std::uint8_t version = kProtocolVersion;
  bool fd = false;           // the node sends and accepts CAN FD frames
  bool listen_only = false;  // the node only watches (dump); its Transmits are rejected
  std::string name;          // for the hub's log, at most kMaxNodeName bytes
};

struct Welcome {
  std::uint8_t version = kProtocolVersion;
  bool airtime = true;                // false when the hub runs with --no-airtime
  std::uint32_t node_id = 0;          // hub-assigned, unique while the hub runs
  std::uint32_t bitrate = 0;          // nominal bit rate, bit/s
  std::uint32_t fd_data_bitrate = 0;  // FD data-phase bit rate, bit/s (== bitrate if not set)
};

struct Transmit {
  std::uint32_t tag = 0;  // chosen by the node, echoed in the TxConfirm
  CanFrame frame;
};

struct Deliver {
  std::uint64_t bus_time_ns = 0;  // end of the frame's transmission, hub clock (ns since hub start)
  CanFrame frame;
};

enum class TxStatus : std::uint8_t {
  kSent = 0,        // the frame completed on the bus (receivers may still have lost it)
  kErrorLimit = 1,  // too many consecutive error frames; the hub gave up on it
  kRejected = 2,  // not accepted: queue full, listen-only node, or an FD frame from a classic node
};

struct TxConfirm {
  std::uint32_t tag = 0;
  TxStatus status = TxStatus::kSent;
  std::uint64_t bus_time_ns = 0;  // when the hub decided (end of the transmission if sent)
};

struct StatsRequest {};

struct IdCounter {
  std::uint32_t id = 0;
  bool extended = false;
  std::uint64_t frames = 0;  // frames of this id completed on the bus
  std::uint64_t bytes = 0;   // their data bytes
};

struct HubStats {
  std::uint64_t elapsed_ns = 0;       // since the hub started
  std::uint64_t busy_ns = 0;          // bus occupied (frames, error frames, retransmissions)
  std::uint64_t frames = 0;           // frames completed on the bus (duplicates count twice)
  std::uint64_t bytes = 0;            // their data bytes
  std::uint64_t error_frames = 0;     // --corrupt: broken frames (each then retransmitted)
  std::uint64_t dropped = 0;          // --drop
  std::uint64_t duplicated = 0;       // --duplicate
  std::uint64_t reordered = 0;        // --reorder
  std::uint64_t tampered = 0;         // --tamper
  std::uint64_t rejected = 0;         // Transmits refused (TxStatus::kRejected / kErrorLimit)
  std::uint64_t rx_overflow = 0;      // deliveries skipped because a node did not read
  std::uint64_t nodes_connected = 0;  // nodes ever connected
  std::uint32_t nodes = 0;            // nodes connected now
  bool ids_truncated = false;         // more identifiers seen than kMaxStatsIds
  std::vector<IdCounter> ids;         // sorted by (extended, id)
};

struct ErrorMessage {
  std::uint8_t code = 0;  // a LinkError value
  std::string text;       // at most 255 bytes
};

using Message = std::variant<Hello, Welcome, Transmit, Deliver, TxConfirm, StatsRequest, HubStats,
                             ErrorMessage>;

// Bit 31 of the 32-bit identifier field marks a 29-bit id (as CAN_EFF_FLAG in
// SocketCAN); bits 29 and 30 must be 0.
inline constexpr std::uint32_t kExtendedFlag = 0x80000000U;

// The whole message, length prefix included. Strings and id lists longer than
// their caps are truncated (the encoder never produces an undecodable message).
std::vector<std::uint8_t> encode(const Message& message);
void encode_to(const Message& message, std::vector<std::uint8_t>& out);  // appends

// Decodes one body (type byte + fields, without the length prefix). Strict:
// kMalformedFrame for an unknown type, a short or over-long body, reserved bits
// set, an invalid frame (classic len > 8, FD length not a DLC step, id out of
// range, BRS without FD) or a Stats count that disagrees with the body length.
std::variant<Message, LinkError> decode_body(std::span<const std::uint8_t> body);

// Cuts a byte stream into messages. Bytes go in with feed(); next() returns a
// decoded message, a decode error (kMalformedFrame: that message is skipped,
// the stream stays in sync), or nullopt when it needs more bytes. A length of 0
// or above `max_body` is kTooLarge / kMalformedFrame and sticky: every later
// next() returns it. Memory is bounded by max_body + 2 bytes plus the bytes of
// the current feed() call not yet consumed.
class StreamDecoder {
 public:
  explicit StreamDecoder(std::size_t max_body) : max_body_(max_body) {}
  void feed(std::span<const std::uint8_t> bytes);
  std::optional<std::variant<Message, LinkError>> next();
  bool failed() const { return failed_.has_value(); }
  std::size_t buffered() const { return buffer_.size() - pos_; }

 private:
  std::size_t max_body_;
  std::vector<std::uint8_t> buffer_;
  std::size_t pos_ = 0;
  std::optional<LinkError> failed_;
};

// Checks a frame the way decode_body() does; true when it may go on the bus.
bool is_valid_frame(const CanFrame& frame);

// Human-readable counters, several lines, for the hub's exit/SIGUSR1 report.
std::string format_stats(const HubStats& stats);

}  // namespace tollgate::transport::hub
