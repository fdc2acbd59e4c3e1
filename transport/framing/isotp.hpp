// ISO-TP (ISO 15765-2:2016) segmentation for one channel: a sender and a
// receiver sharing a (tx id, rx id) pair, on classic CAN or CAN FD.
//
// Pure state machines in the style of libcanard: no I/O, no clock, no
// exceptions. The driver (transport/links/isotp_link.*) owns the CAN port and a
// single timer and runs this loop:
//
//   channel.on_frame(frame, now)            for every frame read from the bus
//   while (auto tx = channel.next_frame(now)) port.send(tx->frame), and when the
//       port reports it went out:  channel.on_tx_confirmed(tx->ticket, now)
//       or that it failed:         channel.on_tx_failed(tx->ticket, now)
//   while (auto ev = channel.take_event())  deliver messages / completions / errors
//   arm the timer at channel.next_deadline(); when it fires call channel.poll(now)
//
// `now` is a monotonic time in microseconds chosen by the driver; it must never
// decrease between calls. Every entry point first expires the timers that are
// due at `now`, so the machines behave the same whether the driver's timer fired
// first or a frame arrived first.
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <optional>
#include <span>
#include <vector>

#include "transport/framing/can_frame.hpp"
#include "transport/framing/link_error.hpp"

namespace tollgate::transport {

using Micros = std::uint64_t;  // monotonic microseconds, supplied by the driver

enum class IsoTpAddressing : std::uint8_t {
  kNormal,    // the whole CAN payload is N_PCI + data
  kExtended,  // data[0] is the target address (N_TA), then N_PCI + data
};

// Per-channel parameters. Defaults follow ISO 15765-2:2016 (timeouts 1000 ms)
// and Linux can-isotp (pad byte 0xCC).
struct IsoTpConfig {
  // --- addressing
  std::uint32_t tx_id = 0;   // identifier of every frame we send (data and our flow control)
  std::uint32_t rx_id = 0;   // identifier of frames addressed to us; others are not ours
  bool extended_id = false;  // 29-bit identifiers for tx and rx
  IsoTpAddressing addressing = IsoTpAddressing::kNormal;
  std::uint8_t tx_address = 0;  // extended addressing: N_TA we put in data[0]
  std::uint8_t rx_address = 0;  // extended addressing: data[0] of frames meant for us

  // --- frame format
  bool fd = false;               // send CAN FD frames
  bool brs = true;               // FD only: bit rate switch in the data phase
  std::uint8_t tx_dl = 8;        // TX_DL: 8 for classic; FD: 8,12,16,20,24,32,48,64
  bool padding = true;           // pad every frame to at least 8 bytes (classic: exactly 8)
  std::uint8_t pad_byte = 0xCC;  // value of padding bytes (also the FD round-up bytes)

  // --- flow control we SEND as receiver (the peer's sender must honour them)
  std::uint8_t block_size = 0;          // BS: CFs between our FCs; 0 = no further FC
  std::uint8_t st_min = 0;              // STmin code: 0x00..0x7F ms, 0xF1..0xF9 = 100..900 us
  std::size_t max_rx_size = 64 * 1024;  // larger first frames get FC OVERFLOW + kOverflow

  // --- flow control we HONOUR as sender
  std::uint8_t wft_max = 8;  // consecutive FC WAIT frames tolerated; one more -> kWaitLimit

  // --- timers (microseconds)
  Micros n_as_us = 1'000'000;  // our data frame handed out -> its tx confirmation
  Micros n_ar_us = 1'000'000;  // our flow control handed out -> its tx confirmation
  Micros n_bs_us = 1'000'000;  // FF / last CF of a block confirmed (or WAIT seen) -> next FC
  Micros n_cr_us = 1'000'000;  // our FC confirmed / a CF received -> the next CF

  // Frames of one transfer the sender may have handed out and not yet had
  // confirmed. 1 is strict one-frame-at-a-time; a driver whose port keeps frame
  // order may raise it (up to kMaxTxWindow) to keep the bus busy. Only used
  // while the peer's STmin is 0: with a gap, frames go one at a time.
  std::uint8_t tx_window = 1;
};

inline constexpr std::uint8_t kMaxTxWindow = 32;
inline constexpr std::uint32_t kIsoTpMaxMessage = 0xFFFFFFFFU;  // FF_DL escape limit

// nullopt if the config is usable, else kInvalidArgument. Checks id ranges
// (11/29 bit), TX_DL (8 when !fd; a valid DLC step 8..64 when fd), the STmin
// code, tx_window in 1..kMaxTxWindow, max_rx_size in 1..kIsoTpMaxMessage and
// non-zero timeouts.
std::optional<LinkError> validate_isotp_config(const IsoTpConfig& config);

// STmin code -> microseconds. Reserved codes (0x80..0xF0, 0xFA..0xFF) mean
// 127 ms, as ISO 15765-2 tells a sender to assume.
constexpr Micros stmin_to_us(std::uint8_t code) {
  if (code <= 0x7F) return Micros{code} * 1000;
  if (code >= 0xF1 && code <= 0xF9) return Micros{code - 0xF0U} * 100;
  return 127'000;
}
constexpr bool is_valid_stmin_code(std::uint8_t code) {
  return code <= 0x7F || (code >= 0xF1 && code <= 0xF9);
}

// Largest payload of a single frame for this config (7 classic normal, 6
// extended; FD 64: 62 normal, 61 extended).
std::size_t isotp_single_frame_max(const IsoTpConfig& config);

// How many frames a message of `size` bytes costs when sent with `config`
// (TX_DL, addressing) to a receiver that grants BS = config.block_size: the
// standard's minimum, which this implementation achieves exactly.
struct IsoTpFrameCount {
  std::size_t data_frames = 0;    // SF, or FF + CFs
  std::size_t flow_controls = 0;  // FCs the receiver sends (0 for a single frame)
  std::size_t total() const { return data_frames + flow_controls; }
};
IsoTpFrameCount frames_for(std::size_t size, const IsoTpConfig& config);

// A frame the driver must put on the bus. `ticket` names it in the
// confirmation; tickets of aborted transfers are ignored when they come back.
struct IsoTpTxFrame {
  CanFrame frame;
  std::uint64_t ticket = 0;
};

// What the channel tells the driver, in order of occurrence.
struct IsoTpEvent {
  enum class Kind : std::uint8_t {
    kReceived,       // `message` holds a complete received message
    kSent,           // the message given to send() went out, last frame confirmed
    kSendFailed,     // the current send was aborted with `error`
    kReceiveFailed,  // a reception was aborted, or a bad frame was ignored, with `error`
  };
  Kind kind = Kind::kReceived;
  LinkError error = LinkError::kInvalidArgument;  // meaningful for the *Failed kinds
  std::vector<std::uint8_t> message;              // kReceived only
};

// Receive-side errors (kReceiveFailed):
//   kTimeoutCr      no CF within N_Cr; reception dropped
//   kTimeoutAs      our FC not confirmed within N_Ar; reception dropped
//   kTransmitFailed our FC failed to go out; reception dropped
//   kWrongSequence  CF with an unexpected SN; reception dropped
//   kOverflow       FF_DL > max_rx_size; FC OVERFLOW sent, nothing buffered
//   kUnexpectedFrame a new SF/FF arrived mid-reception; the old one is dropped
//                   and the new one proceeds (ISO 15765-2 9.8.3)
//   kMalformedFrame a frame on rx_id with a bad PCI/length (SF_DL 0 or too long,
//                   bad escape, FF_DL below FF_DLmin, short CF, unknown PCI
//                   type); the frame is ignored and any reception continues
// Send-side errors (kSendFailed): kTimeoutAs, kTimeoutBs, kTransmitFailed,
//   kOverflow (peer sent FC OVERFLOW), kWaitLimit, kMalformedFrame (awaited FC
//   had an invalid flow status or was too short).
// A CF while not receiving, or an FC while not awaiting one, is ignored and
// only counted (ISO 15765-2 9.8.3).

struct IsoTpCounters {
  std::uint64_t frames_handed_out = 0;  // frames returned by next_frame()
  std::uint64_t frames_confirmed = 0;
  std::uint64_t frames_received = 0;  // frames on rx_id (and rx_address) we looked at
  std::uint64_t messages_sent = 0;
  std::uint64_t messages_received = 0;
  std::uint64_t ignored_cf = 0;  // CF while idle
  std::uint64_t ignored_fc = 0;  // FC while not waiting for one
  std::uint64_t malformed = 0;
  std::uint64_t wait_frames = 0;          // FC WAIT received
  std::uint64_t stale_confirmations = 0;  // confirmations for aborted/unknown tickets
  std::uint64_t events_dropped = 0;       // event queue full (driver did not drain)
};

namespace isotp_detail {

// Frames of one transfer handed out and not yet confirmed, oldest first.
class InFlight {
 public:
  bool empty() const { return count_ == 0; }
  std::size_t size() const { return count_; }
  void push(std::uint64_t ticket, Micros at);
  // Removes `ticket`; false if it is not in flight.
  bool remove(std::uint64_t ticket);
  Micros oldest_at() const { return slots_[head_].at; }
  void clear() { count_ = 0; }

 private:
  struct Slot {
    std::uint64_t ticket = 0;
    Micros at = 0;
  };
  std::array<Slot, kMaxTxWindow> slots_{};
  std::size_t head_ = 0;
  std::size_t count_ = 0;
};

class Sender {
 public:
  enum class State : std::uint8_t {
    kIdle,
    kFirstFrame,  // SF or FF not handed out yet
    kWaitFc,      // FF or a block's last CF handed out; waiting for the peer's FC
    kSendCf,      // handing out CFs
    kFinishing,   // every byte handed out; waiting for the last confirmations
  };
  State state = State::kIdle;
  std::vector<std::uint8_t> message;
  std::size_t offset = 0;  // bytes already handed out
  std::uint8_t next_sn = 1;
  std::uint8_t block_size = 0;  // peer's BS
  std::size_t block_left = 0;   // CFs left in this block (BS > 0)
  Micros st_min_us = 0;         // peer's STmin
  Micros last_confirm_at = 0;   // end of the previous frame, for STmin
  bool gap_pending = false;     // the next CF must wait STmin after last_confirm_at
  unsigned waits = 0;           // consecutive FC WAIT
  std::optional<Micros> bs_deadline;
  InFlight in_flight;
};

class Receiver {
 public:
  enum class State : std::uint8_t { kIdle, kReceiving };
  State state = State::kIdle;
  std::vector<std::uint8_t> buffer;  // FF_DL bytes, allocated at the FF
  std::size_t filled = 0;            // bytes received so far
  std::uint8_t rx_dl = 8;            // CAN_DL of the FF: every CF but the last has it
  std::uint8_t next_sn = 1;
  std::size_t block_left = 0;  // CFs until we owe another FC (BS > 0)
  std::optional<Micros> cr_deadline;
  // Our flow control: built and not handed out yet, then in flight.
  std::optional<CanFrame> fc_to_send;
  bool fc_for_reception = false;  // CTS of the current reception (not an OVERFLOW)
  std::optional<std::uint64_t> fc_ticket;
  bool fc_ticket_for_reception = false;
  Micros fc_handed_at = 0;
};

}  // namespace isotp_detail

class IsoTpChannel {
 public:
  // Precondition: validate_isotp_config(config) is nullopt. With an invalid
  // config the channel refuses every send() with kInvalidArgument and ignores
  // every frame.
  explicit IsoTpChannel(const IsoTpConfig& config);

  const IsoTpConfig& config() const { return config_; }

  // Starts sending `message` (copied). nullopt on success: frames follow from
  // next_frame() and a kSent or kSendFailed event ends it. Errors, with no state
  // change: kInvalidArgument (a send is in progress, the message is empty —
  // ISO-TP has no zero-length message — or the config is invalid), kTooLarge
  // (over kIsoTpMaxMessage).
  [[nodiscard]] std::optional<LinkError> send(std::span<const std::uint8_t> message, Micros now);

  // Drops the current send (e.g. the caller's deadline passed) without an
  // event; confirmations of its frames still in flight are ignored.
  void abort_send();
  // Drops the current reception without an event.
  void abort_receive();

  // True for a frame this channel consumes: rx_id, the id width and, with
  // extended addressing, data[0] == rx_address. on_frame() ignores the rest.
  bool accepts(const CanFrame& frame) const;
  // A frame read from the bus.
  void on_frame(const CanFrame& frame, Micros now);

  // The next frame to transmit now, or nullopt (nothing to send, waiting for
  // STmin, for an FC, or for confirmations). Our flow control goes before our
  // own data frames. Each returned frame must be answered exactly once with
  // on_tx_confirmed or on_tx_failed.
  std::optional<IsoTpTxFrame> next_frame(Micros now);
  void on_tx_confirmed(std::uint64_t ticket, Micros now);
  void on_tx_failed(std::uint64_t ticket, Micros now);

  // Fires the timers due at `now` (timeouts; STmin gaps ending).
  void poll(Micros now);
  // The earliest time at which poll()/next_frame() has something to do, or
  // nullopt when only an external input (frame, confirmation, send) can.
  std::optional<Micros> next_deadline() const;

  // The oldest pending event. The queue holds kMaxEvents; drain it after every
  // call (older events are kept, newer ones dropped and counted).
  std::optional<IsoTpEvent> take_event();
  static constexpr std::size_t kMaxEvents = 16;

  bool sending() const { return tx_.state != isotp_detail::Sender::State::kIdle; }
  bool receiving() const { return rx_.state != isotp_detail::Receiver::State::kIdle; }
  const IsoTpCounters& counters() const { return counters_; }

 private:
  void expire(Micros now);
  void on_single(const CanFrame& frame);
  void on_first(const CanFrame& frame);
  void on_consecutive(const CanFrame& frame, Micros now);
  void on_flow_control(const CanFrame& frame, Micros now);
  void queue_fc(std::uint8_t flow_status, bool for_reception);
  std::optional<IsoTpTxFrame> next_sender_frame(Micros now);
  void send_failed(LinkError e);     // aborts the send, reports it
  void receive_failed(LinkError e);  // aborts the reception, reports it
  void report_rx_error(LinkError e);
  void malformed();  // counts and reports an ignored frame
  void push_event(IsoTpEvent ev);
  CanFrame make_frame(std::span<const std::uint8_t> bytes) const;
  std::uint64_t new_ticket() { return ++last_ticket_; }

  IsoTpConfig config_;
  bool valid_ = false;
  std::size_t ae_ = 0;  // 1 with extended addressing: bytes before the PCI
  isotp_detail::Sender tx_;
  isotp_detail::Receiver rx_;
  std::array<IsoTpEvent, kMaxEvents> events_{};
  std::size_t ev_head_ = 0;
  std::size_t ev_count_ = 0;
  std::uint64_t last_ticket_ = 0;
  IsoTpCounters counters_;
};

}  // namespace tollgate::transport
