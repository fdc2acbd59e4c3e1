#include "transport/framing/isotp.hpp"

#include <algorithm>
#include <cassert>
#include <cstring>
#include <utility>

#include "transport/framing/byte_reader.hpp"

namespace tollgate::transport {
namespace {

using isotp_detail::Receiver;
using isotp_detail::Sender;

// N_PCI types (high nibble of the PCI byte) and flow statuses.
constexpr std::uint8_t kPciSingle = 0x0;
constexpr std::uint8_t kPciFirst = 0x1;
constexpr std::uint8_t kPciConsecutive = 0x2;
constexpr std::uint8_t kPciFlow = 0x3;
constexpr std::uint8_t kFsCts = 0x0;
constexpr std::uint8_t kFsWait = 0x1;
constexpr std::uint8_t kFsOverflow = 0x2;
// Largest FF_DL the 12-bit field holds; above it the FF uses the 32-bit escape.
constexpr std::size_t kFfShortMax = 4095;
constexpr std::uint8_t kClassicDl = 8;

constexpr bool is_dl_step(std::size_t dl) {
  return dl == 8 || dl == 12 || dl == 16 || dl == 20 || dl == 24 || dl == 32 || dl == 48 ||
         dl == 64;
}

// Payload capacities for a frame of CAN_DL `dl` with `ae` address bytes.
constexpr std::size_t sf_capacity(std::size_t dl, std::size_t ae) {
  return dl <= kClassicDl ? dl - 1 - ae : dl - 2 - ae;
}
constexpr std::size_t ff_capacity(std::size_t dl, std::size_t ae, std::size_t size) {
  return size > kFfShortMax ? dl - 6 - ae : dl - 2 - ae;
}
constexpr std::size_t cf_capacity(std::size_t dl, std::size_t ae) {
  return dl - 1 - ae;
}

// The frame bytes a machine builds before padding (at most 64).
class FrameBytes {
 public:
  void put(std::uint8_t b) {
    assert(n_ < sizeof bytes_);
    bytes_[n_++] = b;
  }
  void put(const std::uint8_t* p, std::size_t n) {
    assert(n <= sizeof bytes_ - n_);
    if (n != 0) std::memcpy(bytes_ + n_, p, n);
    n_ += n;
  }
  std::span<const std::uint8_t> view() const { return {bytes_, n_}; }

 private:
  std::uint8_t bytes_[64];  // only the first n_ are ever read
  std::size_t n_ = 0;
};

constexpr std::uint8_t lo(std::size_t v) {
  return static_cast<std::uint8_t>(v & 0xFFU);
}

}  // namespace

// ---------------------------------------------------------------------------
// Free functions

std::optional<LinkError> validate_isotp_config(const IsoTpConfig& c) {
  const std::uint32_t id_max = c.extended_id ? 0x1FFFFFFFU : 0x7FFU;
  if (c.tx_id > id_max || c.rx_id > id_max) return LinkError::kInvalidArgument;
  if (c.addressing != IsoTpAddressing::kNormal && c.addressing != IsoTpAddressing::kExtended)
    return LinkError::kInvalidArgument;
  if (c.fd ? !is_dl_step(c.tx_dl) : c.tx_dl != kClassicDl) return LinkError::kInvalidArgument;
  if (!is_valid_stmin_code(c.st_min)) return LinkError::kInvalidArgument;
  if (c.tx_window < 1 || c.tx_window > kMaxTxWindow) return LinkError::kInvalidArgument;
  if (c.max_rx_size < 1 || c.max_rx_size > kIsoTpMaxMessage) return LinkError::kInvalidArgument;
  if (c.n_as_us == 0 || c.n_ar_us == 0 || c.n_bs_us == 0 || c.n_cr_us == 0)
    return LinkError::kInvalidArgument;
  return std::nullopt;
}

std::size_t isotp_single_frame_max(const IsoTpConfig& c) {
  return sf_capacity(c.tx_dl, c.addressing == IsoTpAddressing::kExtended ? 1 : 0);
}

IsoTpFrameCount frames_for(std::size_t size, const IsoTpConfig& c) {
  const std::size_t ae = c.addressing == IsoTpAddressing::kExtended ? 1 : 0;
  if (size == 0) return {};
  if (size <= sf_capacity(c.tx_dl, ae)) return {1, 0};
  const std::size_t first = ff_capacity(c.tx_dl, ae, size);
  const std::size_t per_cf = cf_capacity(c.tx_dl, ae);
  const std::size_t cfs = (size - first + per_cf - 1) / per_cf;
  const std::size_t fcs = c.block_size == 0 ? 1 : (cfs + c.block_size - 1) / c.block_size;
  return {1 + cfs, fcs};
}

// ---------------------------------------------------------------------------
// InFlight

namespace isotp_detail {

void InFlight::push(std::uint64_t ticket, Micros at) {
  assert(count_ < slots_.size());
  slots_[(head_ + count_) % slots_.size()] = {ticket, at};
  ++count_;
}

bool InFlight::remove(std::uint64_t ticket) {
  for (std::size_t i = 0; i < count_; ++i) {
    if (slots_[(head_ + i) % slots_.size()].ticket != ticket) continue;
    // Confirmations normally come oldest first; closing a gap elsewhere keeps
    // the remaining entries in hand-out order.
    for (std::size_t j = i; j > 0; --j)
      slots_[(head_ + j) % slots_.size()] = slots_[(head_ + j - 1) % slots_.size()];
    head_ = (head_ + 1) % slots_.size();
    --count_;
    return true;
  }
  return false;
}

}  // namespace isotp_detail

// ---------------------------------------------------------------------------
// IsoTpChannel: setup, events, frames

IsoTpChannel::IsoTpChannel(const IsoTpConfig& config)
    : config_(config),
      valid_(!validate_isotp_config(config)),
      ae_(config.addressing == IsoTpAddressing::kExtended ? 1 : 0) {}

CanFrame IsoTpChannel::make_frame(std::span<const std::uint8_t> bytes) const {
  CanFrame f;
  f.id = config_.tx_id;
  f.extended = config_.extended_id;
  f.fd = config_.fd;
  f.brs = config_.fd && config_.brs;
  std::size_t len = bytes.size();
  // FD lengths between DLC steps do not exist: the round-up bytes are padding
  // whether or not padding is asked for.
  if (config_.fd) len = round_up_fd_length(len);
  if (config_.padding) len = std::max<std::size_t>(len, kClassicDl);
  std::memcpy(f.data.data(), bytes.data(), bytes.size());
  std::memset(f.data.data() + bytes.size(), config_.pad_byte, len - bytes.size());
  f.len = lo(len);
  return f;
}

void IsoTpChannel::push_event(IsoTpEvent ev) {
  if (ev_count_ == events_.size()) {
    ++counters_.events_dropped;
    return;
  }
  events_[(ev_head_ + ev_count_) % events_.size()] = std::move(ev);
  ++ev_count_;
}

std::optional<IsoTpEvent> IsoTpChannel::take_event() {
  if (ev_count_ == 0) return std::nullopt;
  IsoTpEvent ev = std::move(events_[ev_head_]);
  ev_head_ = (ev_head_ + 1) % events_.size();
  --ev_count_;
  return ev;
}

void IsoTpChannel::send_failed(LinkError e) {
  abort_send();
  push_event({IsoTpEvent::Kind::kSendFailed, e, {}});
}

void IsoTpChannel::report_rx_error(LinkError e) {
  push_event({IsoTpEvent::Kind::kReceiveFailed, e, {}});
}

void IsoTpChannel::receive_failed(LinkError e) {
  abort_receive();
  report_rx_error(e);
}

void IsoTpChannel::malformed() {
  ++counters_.malformed;
  report_rx_error(LinkError::kMalformedFrame);
}

void IsoTpChannel::abort_send() {
  tx_.state = Sender::State::kIdle;
  tx_.message.clear();
  tx_.offset = 0;
  tx_.bs_deadline.reset();
  tx_.in_flight.clear();
}

void IsoTpChannel::abort_receive() {
  rx_.state = Receiver::State::kIdle;
  rx_.buffer.clear();
  rx_.buffer.shrink_to_fit();  // a dropped reception gives its memory back
  rx_.filled = 0;
  rx_.cr_deadline.reset();
  if (rx_.fc_for_reception) rx_.fc_to_send.reset();
  if (rx_.fc_ticket_for_reception) rx_.fc_ticket.reset();
}

// ---------------------------------------------------------------------------
// Timers

void IsoTpChannel::expire(Micros now) {
  if (!tx_.in_flight.empty() && now >= tx_.in_flight.oldest_at() + config_.n_as_us) {
    send_failed(LinkError::kTimeoutAs);
  } else if (tx_.bs_deadline && now >= *tx_.bs_deadline) {
    send_failed(LinkError::kTimeoutBs);
  }
  if (rx_.fc_ticket && now >= rx_.fc_handed_at + config_.n_ar_us) {
    const bool for_reception = rx_.fc_ticket_for_reception;
    rx_.fc_ticket.reset();
    // A lost OVERFLOW has already been reported as kOverflow.
    if (for_reception && rx_.state == Receiver::State::kReceiving)
      receive_failed(LinkError::kTimeoutAs);
  }
  if (rx_.cr_deadline && now >= *rx_.cr_deadline) receive_failed(LinkError::kTimeoutCr);
}

void IsoTpChannel::poll(Micros now) {
  if (valid_) expire(now);
}

std::optional<Micros> IsoTpChannel::next_deadline() const {
  std::optional<Micros> best;
  auto consider = [&best](Micros t) {
    if (!best || t < *best) best = t;
  };
  if (!tx_.in_flight.empty()) consider(tx_.in_flight.oldest_at() + config_.n_as_us);
  if (tx_.bs_deadline) consider(*tx_.bs_deadline);
  if (tx_.state == Sender::State::kSendCf && tx_.gap_pending && tx_.st_min_us > 0 &&
      tx_.in_flight.empty())
    consider(tx_.last_confirm_at + tx_.st_min_us);
  if (rx_.fc_ticket) consider(rx_.fc_handed_at + config_.n_ar_us);
  if (rx_.cr_deadline) consider(*rx_.cr_deadline);
  return best;
}

// ---------------------------------------------------------------------------
// Sending

std::optional<LinkError> IsoTpChannel::send(std::span<const std::uint8_t> message, Micros now) {
  if (!valid_ || message.empty()) return LinkError::kInvalidArgument;
  if (message.size() > kIsoTpMaxMessage) return LinkError::kTooLarge;
  expire(now);
  if (sending()) return LinkError::kInvalidArgument;
  tx_.message.assign(message.begin(), message.end());
  tx_.offset = 0;
  tx_.next_sn = 1;
  tx_.waits = 0;
  tx_.gap_pending = false;
  tx_.bs_deadline.reset();
  tx_.in_flight.clear();
  tx_.state = Sender::State::kFirstFrame;
  return std::nullopt;
}

std::optional<IsoTpTxFrame> IsoTpChannel::next_sender_frame(Micros now) {
  const std::size_t size = tx_.message.size();
  const std::uint8_t* msg = tx_.message.data();
  FrameBytes fb;
  if (ae_) fb.put(config_.tx_address);

  if (tx_.state == Sender::State::kFirstFrame) {
    if (size <= sf_capacity(config_.tx_dl, ae_)) {
      if (size + 1 + ae_ <= kClassicDl) {
        fb.put(lo(kPciSingle << 4 | size));
      } else {
        fb.put(kPciSingle << 4);  // escape: SF_DL in the next byte (CAN FD)
        fb.put(lo(size));
      }
      fb.put(msg, size);
      tx_.offset = size;
      tx_.state = Sender::State::kFinishing;
    } else {
      if (size <= kFfShortMax) {
        fb.put(lo(kPciFirst << 4 | size >> 8));
        fb.put(lo(size));
      } else {
        fb.put(kPciFirst << 4);  // escape: 32-bit FF_DL follows
        fb.put(0);
        fb.put(lo(size >> 24));
        fb.put(lo(size >> 16));
        fb.put(lo(size >> 8));
        fb.put(lo(size));
      }
      const std::size_t n = ff_capacity(config_.tx_dl, ae_, size);
      fb.put(msg, n);
      tx_.offset = n;
      tx_.next_sn = 1;
      tx_.state = Sender::State::kWaitFc;
    }
  } else if (tx_.state == Sender::State::kSendCf) {
    if (tx_.st_min_us > 0) {
      // STmin spaces the end of one CF from the start of the next, so with a
      // gap only one frame is ever in flight.
      if (!tx_.in_flight.empty()) return std::nullopt;
      if (tx_.gap_pending && now < tx_.last_confirm_at + tx_.st_min_us) return std::nullopt;
    } else if (tx_.in_flight.size() >= config_.tx_window) {
      return std::nullopt;
    }
    const std::size_t n = std::min(size - tx_.offset, cf_capacity(config_.tx_dl, ae_));
    fb.put(lo(kPciConsecutive << 4 | tx_.next_sn));
    fb.put(msg + tx_.offset, n);
    tx_.offset += n;
    tx_.next_sn = lo((tx_.next_sn + 1U) & 0x0FU);
    tx_.gap_pending = true;
    if (tx_.offset == size) {
      tx_.state = Sender::State::kFinishing;
    } else if (tx_.block_size != 0 && --tx_.block_left == 0) {
      tx_.state = Sender::State::kWaitFc;
    }
  } else {
    return std::nullopt;
  }

  IsoTpTxFrame out{make_frame(fb.view()), new_ticket()};
  tx_.in_flight.push(out.ticket, now);
  return out;
}

std::optional<IsoTpTxFrame> IsoTpChannel::next_frame(Micros now) {
  if (!valid_) return std::nullopt;
  expire(now);
  // Our flow control first: the peer's N_Bs is running.
  if (rx_.fc_to_send) {
    IsoTpTxFrame out{*rx_.fc_to_send, new_ticket()};
    rx_.fc_to_send.reset();
    rx_.fc_ticket = out.ticket;
    rx_.fc_ticket_for_reception = rx_.fc_for_reception;
    rx_.fc_handed_at = now;
    ++counters_.frames_handed_out;
    return out;
  }
  auto out = next_sender_frame(now);
  if (out) ++counters_.frames_handed_out;
  return out;
}

void IsoTpChannel::on_tx_confirmed(std::uint64_t ticket, Micros now) {
  if (!valid_) return;
  expire(now);
  if (rx_.fc_ticket == ticket) {
    ++counters_.frames_confirmed;
    rx_.fc_ticket.reset();
    if (rx_.fc_ticket_for_reception && rx_.state == Receiver::State::kReceiving)
      rx_.cr_deadline = now + config_.n_cr_us;
    return;
  }
  if (!tx_.in_flight.remove(ticket)) {
    ++counters_.stale_confirmations;
    return;
  }
  ++counters_.frames_confirmed;
  tx_.last_confirm_at = now;
  if (!tx_.in_flight.empty()) return;
  if (tx_.state == Sender::State::kFinishing) {
    abort_send();
    ++counters_.messages_sent;
    push_event({IsoTpEvent::Kind::kSent, LinkError::kInvalidArgument, {}});
  } else if (tx_.state == Sender::State::kWaitFc && !tx_.bs_deadline) {
    tx_.bs_deadline = now + config_.n_bs_us;
  }
}

void IsoTpChannel::on_tx_failed(std::uint64_t ticket, Micros now) {
  if (!valid_) return;
  expire(now);
  if (rx_.fc_ticket == ticket) {
    const bool for_reception = rx_.fc_ticket_for_reception;
    rx_.fc_ticket.reset();
    if (for_reception && rx_.state == Receiver::State::kReceiving)
      receive_failed(LinkError::kTransmitFailed);
    return;
  }
  if (!tx_.in_flight.remove(ticket)) {
    ++counters_.stale_confirmations;
    return;
  }
  send_failed(LinkError::kTransmitFailed);
}

// ---------------------------------------------------------------------------
// Receiving

bool IsoTpChannel::accepts(const CanFrame& f) const {
  if (!valid_ || f.id != config_.rx_id || f.extended != config_.extended_id) return false;
  if (ae_ == 0) return true;
  return f.len >= 1 && f.len <= f.data.size() && f.data[0] == config_.rx_address;
}

void IsoTpChannel::on_frame(const CanFrame& frame, Micros now) {
  if (!valid_) return;
  expire(now);
  if (!accepts(frame)) return;
  ++counters_.frames_received;
  // CAN_DL must be one a controller can produce; everything below trusts it.
  if (frame.len > frame.data.size() || (!frame.fd && frame.len > kClassicDl) ||
      !is_valid_fd_length(frame.len) || frame.len < ae_ + 1) {
    malformed();
    return;
  }
  const std::uint8_t type = frame.data[ae_] >> 4;
  switch (type) {
    case kPciSingle:
      on_single(frame);
      break;
    case kPciFirst:
      on_first(frame);
      break;
    case kPciConsecutive:
      on_consecutive(frame, now);
      break;
    case kPciFlow:
      on_flow_control(frame, now);
      break;
    default:
      malformed();
      break;  // reserved N_PCI types are ignored (9.8.3)
  }
}

void IsoTpChannel::on_single(const CanFrame& frame) {
  ByteReader r(frame.payload());
  std::uint8_t pci = 0;
  if (!r.skip(ae_) || !r.u8(pci)) return malformed();
  std::size_t sf_dl = pci & 0x0FU;
  if (frame.len <= kClassicDl) {
    // SF_DL 0 is the escape, which only CAN_DL > 8 may use.
    if (sf_dl == 0 || sf_dl > sf_capacity(frame.len, ae_)) return malformed();
  } else {
    std::uint8_t escaped = 0;
    if (sf_dl != 0 || !r.u8(escaped)) return malformed();
    sf_dl = escaped;
    if (sf_dl == 0 || sf_dl > sf_capacity(frame.len, ae_)) return malformed();
  }
  std::span<const std::uint8_t> data;
  if (!r.bytes(sf_dl, data)) return malformed();
  if (rx_.state == Receiver::State::kReceiving) receive_failed(LinkError::kUnexpectedFrame);
  ++counters_.messages_received;
  push_event({IsoTpEvent::Kind::kReceived, LinkError::kInvalidArgument,
              std::vector<std::uint8_t>(data.begin(), data.end())});
}

void IsoTpChannel::on_first(const CanFrame& frame) {
  ByteReader r(frame.payload());
  std::uint16_t pci = 0;
  // A FF fills its frame, so its CAN_DL (RX_DL) is at least 8.
  if (frame.len < kClassicDl || !r.skip(ae_) || !r.u16be(pci)) return malformed();
  std::size_t ff_dl = pci & 0x0FFFU;
  if (ff_dl == 0) {
    std::uint32_t escaped = 0;
    if (!r.u32be(escaped)) return malformed();
    // The escape is only for lengths the 12-bit field cannot hold.
    if (escaped <= kFfShortMax) return malformed();
    ff_dl = escaped;
  }
  // FF_DLmin: a message that would fit a single frame must not be segmented.
  if (ff_dl <= sf_capacity(frame.len, ae_)) return malformed();

  if (rx_.state == Receiver::State::kReceiving) receive_failed(LinkError::kUnexpectedFrame);
  if (ff_dl > config_.max_rx_size) {
    queue_fc(kFsOverflow, false);
    receive_failed(LinkError::kOverflow);
    return;
  }
  const auto data = r.rest();   // ff_dl exceeds what one frame holds, so all of it is payload
  rx_.buffer.assign(ff_dl, 0);  // within the cap: the most a reception ever holds
  std::memcpy(rx_.buffer.data(), data.data(), data.size());
  rx_.filled = data.size();
  rx_.rx_dl = frame.len;
  rx_.next_sn = 1;
  rx_.block_left = config_.block_size;
  rx_.cr_deadline.reset();  // starts when our FC is confirmed (N_Ar runs meanwhile)
  rx_.state = Receiver::State::kReceiving;
  queue_fc(kFsCts, true);
}

void IsoTpChannel::on_consecutive(const CanFrame& frame, Micros now) {
  if (rx_.state != Receiver::State::kReceiving) {
    ++counters_.ignored_cf;
    return;
  }
  // on_frame() checked CAN_DL >= ae_ + 1, so the PCI byte is there; this is
  // the per-frame hot path, hence no reader.
  const std::uint8_t pci = frame.data[ae_];
  const std::size_t room = frame.len - ae_ - 1U;
  const std::size_t left = rx_.buffer.size() - rx_.filled;
  // Every CF but the last has the FF's CAN_DL; the last may be shorter but
  // must hold the rest of the message.
  if (frame.len > rx_.rx_dl || (left > room && frame.len != rx_.rx_dl)) return malformed();
  if ((pci & 0x0FU) != rx_.next_sn) {
    receive_failed(LinkError::kWrongSequence);
    return;
  }
  const std::size_t n = std::min(left, room);
  std::memcpy(rx_.buffer.data() + rx_.filled, frame.data.data() + ae_ + 1, n);
  rx_.filled += n;
  rx_.next_sn = lo((rx_.next_sn + 1U) & 0x0FU);
  if (rx_.filled == rx_.buffer.size()) {
    IsoTpEvent ev{IsoTpEvent::Kind::kReceived, LinkError::kInvalidArgument, std::move(rx_.buffer)};
    rx_.buffer = {};
    abort_receive();
    ++counters_.messages_received;
    push_event(std::move(ev));
    return;
  }
  rx_.cr_deadline = now + config_.n_cr_us;
  if (config_.block_size != 0 && --rx_.block_left == 0) {
    rx_.block_left = config_.block_size;
    rx_.cr_deadline.reset();
    queue_fc(kFsCts, true);
  }
}

void IsoTpChannel::queue_fc(std::uint8_t flow_status, bool for_reception) {
  FrameBytes fb;
  if (ae_) fb.put(config_.tx_address);
  fb.put(lo(kPciFlow << 4 | flow_status));
  fb.put(config_.block_size);
  fb.put(config_.st_min);
  rx_.fc_to_send = make_frame(fb.view());
  rx_.fc_for_reception = for_reception;
  // A newer FC supersedes one still in flight: its confirmation no longer
  // starts anything.
  rx_.fc_ticket.reset();
}

void IsoTpChannel::on_flow_control(const CanFrame& frame, Micros now) {
  if (tx_.state != Sender::State::kWaitFc) {
    ++counters_.ignored_fc;
    return;
  }
  ByteReader r(frame.payload());
  std::uint8_t pci = 0;
  std::uint8_t bs = 0;
  std::uint8_t st_min = 0;
  if (!r.skip(ae_) || !r.u8(pci) || !r.u8(bs) || !r.u8(st_min)) {
    ++counters_.malformed;
    return send_failed(LinkError::kMalformedFrame);
  }
  switch (pci & 0x0FU) {
    case kFsCts:
      tx_.block_size = bs;
      tx_.block_left = bs;
      tx_.st_min_us = stmin_to_us(st_min);
      tx_.waits = 0;
      tx_.bs_deadline.reset();
      tx_.gap_pending = false;  // STmin separates CFs; the first after an FC may go at once
      tx_.state = Sender::State::kSendCf;
      return;
    case kFsWait:
      ++counters_.wait_frames;
      if (++tx_.waits > config_.wft_max) return send_failed(LinkError::kWaitLimit);
      tx_.bs_deadline = now + config_.n_bs_us;
      return;
    case kFsOverflow:
      return send_failed(LinkError::kOverflow);
    default:
      ++counters_.malformed;
      return send_failed(LinkError::kMalformedFrame);
  }
}

}  // namespace tollgate::transport
