#include "transport/links/isotp_link.hpp"

#include <algorithm>
#include <boost/asio/as_tuple.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <deque>
#include <utility>

#include "transport/framing/crc32c.hpp"

namespace tollgate::transport {
namespace {

namespace asio = boost::asio;
using Clock = std::chrono::steady_clock;
constexpr auto kUseAwaitable = asio::as_tuple(asio::use_awaitable);

// A coroutine waiting for a result or its deadline, whichever comes first.
struct Waiter {
  explicit Waiter(asio::any_io_executor ex) : timer(std::move(ex)) {}
  asio::steady_timer timer;
  bool active = false;
  void wake() { timer.cancel(); }
};

// Deadlines far beyond any transfer (e.g. Duration::max() for "forever") are
// clamped so that now + timeout cannot overflow.
MessageLink::Duration clamp(MessageLink::Duration timeout) {
  constexpr MessageLink::Duration kForever = std::chrono::hours(24 * 365);
  return std::clamp(timeout, MessageLink::Duration::zero(), kForever);
}

}  // namespace

struct IsoTpLink::Impl : std::enable_shared_from_this<Impl> {
  Impl(std::unique_ptr<CanFramePort> p, const IsoTpLinkOptions& o)
      : port(std::move(p)),
        options(o),
        channel(o.isotp),
        executor(port->get_executor()),
        deadline_timer(executor),
        send_waiter(executor),
        receive_waiter(executor),
        epoch(Clock::now()) {}

  std::unique_ptr<CanFramePort> port;
  IsoTpLinkOptions options;
  IsoTpChannel channel;
  asio::any_io_executor executor;
  asio::steady_timer deadline_timer;
  std::optional<Micros> armed_deadline;
  Waiter send_waiter;
  Waiter receive_waiter;
  Clock::time_point epoch;
  bool closed = false;

  bool sending = false;
  std::optional<LinkResult<Done>> send_result;

  std::deque<LinkResult<std::vector<std::uint8_t>>> rx_queue;
  bool rx_overflow_pending = false;
  IsoTpLinkCounters counters;

  Micros now() const {
    return static_cast<Micros>(
        std::chrono::duration_cast<std::chrono::microseconds>(Clock::now() - epoch).count());
  }

  // Hands out the channel's frames, turns its events into results and re-arms
  // the timer. Called after every input to the channel.
  void pump(Micros t) {
    if (closed) return;
    while (auto tx = channel.next_frame(t)) {
      asio::co_spawn(executor, transmit(shared_from_this(), tx->frame, tx->ticket), asio::detached);
    }
    while (auto ev = channel.take_event()) on_event(std::move(*ev));
    arm_timer();
  }

  static asio::awaitable<void> transmit(std::shared_ptr<Impl> self, CanFrame frame,
                                        std::uint64_t ticket) {
    auto r = co_await self->port->send_frame(frame);
    if (self->closed) co_return;
    const Micros t = self->now();
    if (r.index() == 0) {
      ++self->counters.frames_sent;
      self->channel.on_tx_confirmed(ticket, t);
    } else {
      self->channel.on_tx_failed(ticket, t);
    }
    self->pump(t);
  }

  void on_event(IsoTpEvent&& ev) {
    switch (ev.kind) {
      case IsoTpEvent::Kind::kReceived: {
        auto& m = ev.message;
        if (m.size() < kCanLinkCrcSize) {
          ++counters.bad_crc;
          push_rx(LinkError::kBadCrc);
          return;
        }
        const std::size_t n = m.size() - kCanLinkCrcSize;
        const std::uint32_t want = std::uint32_t{m[n]} | (std::uint32_t{m[n + 1]} << 8) |
                                   (std::uint32_t{m[n + 2]} << 16) |
                                   (std::uint32_t{m[n + 3]} << 24);
        if (crc32c(std::span<const std::uint8_t>(m.data(), n)) != want) {
          ++counters.bad_crc;
          push_rx(LinkError::kBadCrc);
          return;
        }
        m.resize(n);
        ++counters.messages_received;
        push_rx(std::move(m));
        return;
      }
      case IsoTpEvent::Kind::kSent:
        ++counters.messages_sent;
        finish_send(Done{});
        return;
      case IsoTpEvent::Kind::kSendFailed:
        finish_send(ev.error);
        return;
      case IsoTpEvent::Kind::kReceiveFailed:
        push_rx(ev.error);
        return;
    }
  }

  void push_rx(LinkResult<std::vector<std::uint8_t>> item) {
    if (item.index() == 1) ++counters.receive_errors;
    if (rx_queue.size() >= options.max_rx_queue) {
      // The oldest entry goes; the next receive() reports the loss first.
      rx_queue.pop_front();
      ++counters.rx_queue_overflow;
      rx_overflow_pending = true;
    }
    rx_queue.push_back(std::move(item));
    if (receive_waiter.active) receive_waiter.wake();
  }

  void finish_send(LinkResult<Done> r) {
    if (!sending || send_result) return;
    send_result = std::move(r);
    if (send_waiter.active) send_waiter.wake();
  }

  void arm_timer() {
    const auto next = channel.next_deadline();
    if (next == armed_deadline) return;
    armed_deadline = next;
    if (!next) {
      deadline_timer.cancel();
      return;
    }
    deadline_timer.expires_at(epoch + std::chrono::microseconds(*next));
    deadline_timer.async_wait([weak = weak_from_this()](const boost::system::error_code& ec) {
      if (ec) return;
      auto self = weak.lock();
      if (!self || self->closed) return;
      self->armed_deadline.reset();
      const Micros t = self->now();
      self->channel.poll(t);
      self->pump(t);
    });
  }

  static asio::awaitable<void> reader(std::shared_ptr<Impl> self) {
    while (!self->closed) {
      auto r = co_await self->port->receive_frame();
      if (self->closed) break;
      if (r.index() == 1) {
        const LinkError e = std::get<1>(r);
        if (e == LinkError::kClosed) {
          self->shut();
          break;
        }
        // A frame was lost under us (port queue overflow) or the port hiccupped:
        // whatever message was in flight may be incomplete, so say so.
        self->push_rx(e);
        continue;
      }
      ++self->counters.frames_received;
      const CanFrame& f = std::get<0>(r);
      if (!self->channel.accepts(f)) continue;
      const Micros t = self->now();
      self->channel.on_frame(f, t);
      self->pump(t);
    }
  }

  void shut() {
    if (closed) return;
    closed = true;
    port->close();
    deadline_timer.cancel();
    if (sending && !send_result) {
      send_result = LinkError::kClosed;
      if (send_waiter.active) send_waiter.wake();
    }
    if (receive_waiter.active) receive_waiter.wake();
  }
};

LinkResult<std::unique_ptr<IsoTpLink>> IsoTpLink::create(std::unique_ptr<CanFramePort> port,
                                                         IsoTpLinkOptions options) {
  if (!port) return LinkError::kInvalidArgument;
  options.isotp.tx_window = options.tx_window;
  if (validate_isotp_config(options.isotp)) return LinkError::kInvalidArgument;
  if (options.isotp.fd && !port->fd_capable()) return LinkError::kInvalidArgument;
  if (options.isotp.max_rx_size < kCanLinkCrcSize || options.max_rx_queue == 0)
    return LinkError::kInvalidArgument;
  auto impl = std::make_shared<Impl>(std::move(port), options);
  asio::co_spawn(impl->executor, Impl::reader(impl), asio::detached);
  return std::unique_ptr<IsoTpLink>(new IsoTpLink(std::move(impl)));
}

IsoTpLink::IsoTpLink(std::shared_ptr<Impl> impl) : impl_(std::move(impl)) {}
IsoTpLink::~IsoTpLink() {
  close();
}

asio::awaitable<LinkResult<Done>> IsoTpLink::send(std::vector<std::uint8_t> message,
                                                  Duration timeout) {
  auto self = impl_;
  if (self->closed) co_return LinkError::kClosed;
  if (self->sending) co_return LinkError::kInvalidArgument;
  if (message.size() > kIsoTpMaxMessage - kCanLinkCrcSize) co_return LinkError::kTooLarge;
  const std::uint32_t crc = crc32c(message);
  for (int i = 0; i < 4; ++i) message.push_back(static_cast<std::uint8_t>(crc >> (8 * i)));
  const Micros t = self->now();
  if (auto e = self->channel.send(message, t)) co_return *e;
  self->sending = true;
  self->send_result.reset();
  self->pump(t);
  if (!self->send_result) {
    self->send_waiter.active = true;
    self->send_waiter.timer.expires_after(clamp(timeout));
    co_await self->send_waiter.timer.async_wait(kUseAwaitable);
    self->send_waiter.active = false;
  }
  if (!self->send_result) {
    // The caller's deadline: drop the transfer; confirmations still in flight are ignored.
    self->channel.abort_send();
    self->send_result = LinkError::kDeadline;
    self->pump(self->now());
  }
  self->sending = false;
  co_return *std::exchange(self->send_result, std::nullopt);
}

asio::awaitable<LinkResult<std::vector<std::uint8_t>>> IsoTpLink::receive(Duration timeout) {
  auto self = impl_;
  if (self->receive_waiter.active) co_return LinkError::kInvalidArgument;
  const auto take = [&]() -> std::optional<LinkResult<std::vector<std::uint8_t>>> {
    if (self->rx_overflow_pending) {
      self->rx_overflow_pending = false;
      return LinkResult<std::vector<std::uint8_t>>{LinkError::kOverflow};
    }
    if (self->rx_queue.empty()) return std::nullopt;
    auto r = std::move(self->rx_queue.front());
    self->rx_queue.pop_front();
    return r;
  };
  if (auto r = take()) co_return std::move(*r);
  if (self->closed) co_return LinkError::kClosed;
  self->receive_waiter.active = true;
  self->receive_waiter.timer.expires_after(clamp(timeout));
  co_await self->receive_waiter.timer.async_wait(kUseAwaitable);
  self->receive_waiter.active = false;
  if (auto r = take()) co_return std::move(*r);
  if (self->closed) co_return LinkError::kClosed;
  co_return LinkError::kDeadline;
}

void IsoTpLink::close() {
  impl_->shut();
}
std::string IsoTpLink::describe() const {
  return impl_->options.description;
}
IsoTpLinkCounters IsoTpLink::counters() const {
  return impl_->counters;
}
const IsoTpCounters& IsoTpLink::channel_counters() const {
  return impl_->channel.counters();
}
CanFramePort& IsoTpLink::port() {
  return *impl_->port;
}

IsoTpBusProfile bus_profile(const IsoTpConfig& c) {
  IsoTpBusProfile p;
  p.fd = c.fd;
  p.tx_dl = c.fd ? c.tx_dl : 8;
  p.brs = c.brs;
  p.extended_id = c.extended_id;
  p.extended_addressing = c.addressing == IsoTpAddressing::kExtended;
  p.padding = c.padding;
  p.block_size = c.block_size;
  return p;
}

}  // namespace tollgate::transport
