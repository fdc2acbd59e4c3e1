#include "transport/links/socketcan_port.hpp"

#include <linux/can.h>
#include <linux/can/raw.h>
#include <net/if.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <boost/asio/as_tuple.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/posix/stream_descriptor.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <cerrno>
#include <cstring>
#include <deque>
#include <optional>

namespace tollgate::transport {

namespace socketcan {

bool frame_fits(const CanFrame& f, bool fd_socket) {
  if (f.id > (f.extended ? CAN_EFF_MASK : CAN_SFF_MASK)) return false;
  if (!f.fd) return f.len <= CAN_MAX_DLEN && !f.brs;
  return fd_socket && is_valid_fd_length(f.len);
}

KernelFrameBytes to_kernel_frame(const CanFrame& f) {
  KernelFrameBytes out;
  out.data.can_id = f.extended ? (f.id & CAN_EFF_MASK) | CAN_EFF_FLAG : f.id & CAN_SFF_MASK;
  out.data.len = f.len;
  if (f.fd) out.data.flags = static_cast<__u8>(CANFD_FDF | (f.brs ? CANFD_BRS : 0));
  std::memcpy(out.data.data, f.data.data(), std::min<std::size_t>(f.len, sizeof out.data.data));
  out.size = f.fd ? CANFD_MTU : CAN_MTU;
  return out;
}

std::optional<CanFrame> from_kernel_frame(const canfd_frame& raw, std::size_t nbytes) {
  if (nbytes != CAN_MTU && nbytes != CANFD_MTU) return std::nullopt;
  if ((raw.can_id & (CAN_RTR_FLAG | CAN_ERR_FLAG)) != 0) return std::nullopt;
  CanFrame f;
  f.extended = (raw.can_id & CAN_EFF_FLAG) != 0;
  f.id = raw.can_id & (f.extended ? CAN_EFF_MASK : CAN_SFF_MASK);
  f.fd = nbytes == CANFD_MTU;
  if (f.fd) {
    if (!is_valid_fd_length(raw.len) || raw.len > CANFD_MAX_DLEN) return std::nullopt;
    f.brs = (raw.flags & CANFD_BRS) != 0;
  } else if (raw.len > CAN_MAX_DLEN) {
    return std::nullopt;
  }
  f.len = raw.len;
  std::memcpy(f.data.data(), raw.data, f.len);
  return f;
}

can_filter to_kernel_filter(const CanIdFilter& f) {
  // EFF and RTR in the mask make the filter match only data frames of the
  // given id format.
  if (f.extended) {
    return {(f.id & CAN_EFF_MASK) | CAN_EFF_FLAG,
            (f.mask & CAN_EFF_MASK) | CAN_EFF_FLAG | CAN_RTR_FLAG};
  }
  return {f.id & CAN_SFF_MASK, (f.mask & CAN_SFF_MASK) | CAN_EFF_FLAG | CAN_RTR_FLAG};
}

bool same_frame(const CanFrame& a, const CanFrame& b) {
  return a.id == b.id && a.extended == b.extended && a.fd == b.fd && a.len == b.len &&
         std::equal(a.data.begin(), a.data.begin() + a.len, b.data.begin());
}

}  // namespace socketcan

using namespace socketcan;

namespace asio = boost::asio;
using Clock = std::chrono::steady_clock;
constexpr auto kAwait = asio::as_tuple(asio::use_awaitable);

struct SocketCanPort::State {
  State(asio::any_io_executor e, int fd, SocketCanOptions o)
      : ex(std::move(e)), sock(ex, fd), opts(std::move(o)) {}

  asio::any_io_executor ex;
  asio::posix::stream_descriptor sock;
  SocketCanOptions opts;
  bool closed = false;
  // nullopt marks where frames were lost (kernel socket buffer or this queue
  // full), so receive_frame() reports kOverflow exactly there in the stream.
  std::deque<std::optional<CanFrame>> rx;
  std::uint32_t kernel_drops = 0;  // the socket's SO_RXQ_OVFL count seen so far
  struct Pending {
    std::uint64_t seq;
    CanFrame frame;
  };
  std::deque<Pending> pending;  // sent, confirmation not yet seen
  std::uint64_t next_seq = 0;
  std::uint64_t confirmed_seq = 0;
  Counters counters;
  bool overflow_pending = false;  // frames were dropped: tell the next receive_frame()
  std::vector<asio::steady_timer*> waiters;

  // Wakes every coroutine parked in wait(); each re-checks its own condition.
  void wake() {
    for (auto* t : waiters) t->cancel();
  }

  // Parks until woken or `deadline`. Callers loop on their condition, so a
  // spurious return is harmless.
  asio::awaitable<void> wait(Clock::time_point deadline) {
    asio::steady_timer t(ex, deadline);
    waiters.push_back(&t);
    (void)co_await t.async_wait(kAwait);
    std::erase(waiters, &t);
  }

  void on_own_frame(const CanFrame& f) {
    auto match = std::find_if(pending.begin(), pending.end(),
                              [&](const Pending& p) { return same_frame(p.frame, f); });
    if (match == pending.end()) return;  // confirmation of a frame that already timed out
    // Frames queued before the confirmed one were lost by the driver: the
    // kernel echoes in transmit order.
    counters.tx_unconfirmed += static_cast<std::uint64_t>(match - pending.begin());
    confirmed_seq = match->seq;
    pending.erase(pending.begin(), match + 1);
  }

  // Drains everything the socket holds without blocking.
  void drain() {
    for (;;) {
      canfd_frame raw{};
      iovec iov{&raw, sizeof raw};
      alignas(cmsghdr) char control[CMSG_SPACE(sizeof(std::uint32_t))];
      msghdr msg{};
      msg.msg_iov = &iov;
      msg.msg_iovlen = 1;
      msg.msg_control = control;
      msg.msg_controllen = sizeof control;
      const ssize_t n = ::recvmsg(sock.native_handle(), &msg, MSG_DONTWAIT);
      if (n < 0) {
        if (errno == EINTR) continue;
        // EAGAIN: empty. Anything else (ENETDOWN when the interface went away)
        // was a one-shot socket error; the next read tells us more.
        return;
      }
      note_kernel_drops(msg);
      auto frame = from_kernel_frame(raw, static_cast<std::size_t>(n));
      if (!frame) continue;  // RTR, error frame or a short read: not data
      if ((msg.msg_flags & MSG_CONFIRM) != 0) {
        on_own_frame(*frame);
        continue;
      }
      if (rx.size() >= opts.rx_queue_frames) {
        ++counters.rx_dropped;
        overflow_pending = true;
        continue;
      }
      if (overflow_pending) {
        rx.emplace_back(std::nullopt);
        overflow_pending = false;
      }
      ++counters.frames_received;
      rx.emplace_back(*frame);
    }
  }

  // The kernel drops frames silently when the socket's receive buffer is full
  // (a reader descheduled for long); SO_RXQ_OVFL's running count on each read
  // tells us it happened before this frame. A lost ISO-TP frame would otherwise
  // surface as a confusing wrong sequence number or a timeout.
  void note_kernel_drops(msghdr& msg) {
    for (cmsghdr* c = CMSG_FIRSTHDR(&msg); c != nullptr; c = CMSG_NXTHDR(&msg, c)) {
      if (c->cmsg_level != SOL_SOCKET || c->cmsg_type != SO_RXQ_OVFL) continue;
      std::uint32_t count = 0;
      std::memcpy(&count, CMSG_DATA(c), sizeof count);
      if (count != kernel_drops) {
        counters.rx_dropped += count - kernel_drops;
        kernel_drops = count;
        overflow_pending = true;
      }
    }
  }
};

namespace {

asio::awaitable<void> run_reader(std::shared_ptr<SocketCanPort::State> s) {
  while (!s->closed) {
    auto [ec] = co_await s->sock.async_wait(asio::posix::stream_descriptor::wait_read, kAwait);
    if (ec || s->closed) break;
    s->drain();
    s->wake();
  }
  s->closed = true;
  s->wake();
}

LinkOpenError sys_error(const std::string& iface, std::string_view what, int err) {
  return {LinkError::kIo, iface + ": " + std::string(what) + ": " + std::strerror(err)};
}

}  // namespace

LinkOpenResult<std::unique_ptr<SocketCanPort>> SocketCanPort::open(asio::any_io_executor ex,
                                                                   SocketCanOptions options) {
  if (auto why = af_can_unavailable_reason(); !why.empty()) {
    return LinkOpenError{LinkError::kIo, options.interface + ": " + why};
  }
  auto info = lookup_can_interface(options.interface);
  if (info.index() != 0) return std::get<1>(info);
  const auto& iface = std::get<0>(info);
  const std::string& name = options.interface;
  if (options.fd && !iface.fd_capable) {
    return LinkOpenError{LinkError::kInvalidArgument,
                         name + ": classic CAN interface (MTU " + std::to_string(iface.mtu) +
                             "); fd=1 needs a CAN FD interface (ip link set " + name + " mtu 72)"};
  }
  if (!iface.up) {
    return LinkOpenError{LinkError::kIo,
                         name + ": interface is down (ip link set " + name + " up)"};
  }

  const int fd = ::socket(PF_CAN, SOCK_RAW | SOCK_NONBLOCK | SOCK_CLOEXEC, CAN_RAW);
  if (fd < 0) return sys_error(name, "socket(PF_CAN, SOCK_RAW)", errno);
  auto fail = [&](std::string_view what) {
    const int err = errno;
    ::close(fd);
    return sys_error(name, what, err);
  };

  const int on = 1;
  if (options.fd && ::setsockopt(fd, SOL_CAN_RAW, CAN_RAW_FD_FRAMES, &on, sizeof on) < 0) {
    return fail("setsockopt(CAN_RAW_FD_FRAMES)");
  }
  // Loopback on is what lets other sockets on the same vcan see our frames.
  if (::setsockopt(fd, SOL_CAN_RAW, CAN_RAW_LOOPBACK, &on, sizeof on) < 0) {
    return fail("setsockopt(CAN_RAW_LOOPBACK)");
  }
  if (options.confirm_tx &&
      ::setsockopt(fd, SOL_CAN_RAW, CAN_RAW_RECV_OWN_MSGS, &on, sizeof on) < 0) {
    return fail("setsockopt(CAN_RAW_RECV_OWN_MSGS)");
  }
  if (!options.filters.empty()) {
    std::vector<can_filter> filters;
    for (const auto& f : options.filters) filters.push_back(to_kernel_filter(f));
    if (::setsockopt(fd, SOL_CAN_RAW, CAN_RAW_FILTER, filters.data(),
                     static_cast<socklen_t>(filters.size() * sizeof(can_filter))) < 0) {
      return fail("setsockopt(CAN_RAW_FILTER)");
    }
  }
  // A 3000-byte ISO-TP message is 430 frames arriving back to back; the default
  // receive buffer holds about 200. With BS 0 and no bus to pace it (vcan, the
  // kernel's ISO-TP with txtime=0) a whole 128 KiB message, ~18 700 classic
  // frames of ~900 bytes of socket memory each, can arrive before we read once.
  // Forcing needs CAP_NET_ADMIN; else best effort. It is a limit, not an allocation.
  const int rcvbuf = 16 << 20;
  if (::setsockopt(fd, SOL_SOCKET, SO_RCVBUFFORCE, &rcvbuf, sizeof rcvbuf) < 0) {
    (void)::setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &rcvbuf, sizeof rcvbuf);
  }
  // Counts frames the kernel dropped for a full receive buffer (see drain()); best effort.
  (void)::setsockopt(fd, SOL_SOCKET, SO_RXQ_OVFL, &on, sizeof on);
  sockaddr_can addr{};
  addr.can_family = AF_CAN;
  addr.can_ifindex = static_cast<int>(iface.index);
  if (::bind(fd, reinterpret_cast<const sockaddr*>(&addr), sizeof addr) < 0) return fail("bind");

  auto state = std::make_shared<State>(ex, fd, std::move(options));
  asio::co_spawn(ex, run_reader(state), asio::detached);
  return std::unique_ptr<SocketCanPort>(new SocketCanPort(std::move(state)));
}

SocketCanPort::SocketCanPort(std::shared_ptr<State> state) : state_(std::move(state)) {}

SocketCanPort::~SocketCanPort() {
  close();
}

asio::any_io_executor SocketCanPort::get_executor() {
  return state_->ex;
}

bool SocketCanPort::fd_capable() const {
  return state_->opts.fd;
}

SocketCanPort::Counters SocketCanPort::counters() const {
  return state_->counters;
}

void SocketCanPort::close() {
  auto& s = *state_;
  if (s.closed && !s.sock.is_open()) return;
  s.closed = true;
  boost::system::error_code ignored;
  s.sock.close(ignored);
  s.wake();
}

asio::awaitable<LinkResult<Done>> SocketCanPort::send_frame(const CanFrame& frame) {
  auto s = state_;  // keeps the state alive if the port goes away mid-send
  if (s->closed) co_return LinkError::kClosed;
  if (!frame_fits(frame, s->opts.fd)) co_return LinkError::kInvalidArgument;

  KernelFrameBytes bytes = to_kernel_frame(frame);
  const auto deadline = Clock::now() + s->opts.tx_timeout;
  auto backoff = std::chrono::microseconds(50);
  for (;;) {
    const ssize_t n = ::send(s->sock.native_handle(), &bytes.data, bytes.size, MSG_DONTWAIT);
    if (n == static_cast<ssize_t>(bytes.size)) break;
    if (n >= 0) co_return LinkError::kTransmitFailed;  // short write: not a CAN frame
    const int err = errno;
    if (err == EINTR) continue;
    // ENOBUFS: the interface's transmit queue is full (SocketCAN does not block
    // on it); EAGAIN: our socket's send buffer is. Both clear as frames go out.
    if (err != ENOBUFS && err != EAGAIN) co_return LinkError::kTransmitFailed;
    if (Clock::now() >= deadline) co_return LinkError::kTimeoutAs;
    asio::steady_timer t(s->ex, backoff);
    (void)co_await t.async_wait(kAwait);
    if (s->closed) co_return LinkError::kClosed;
    backoff = std::min(backoff * 2, std::chrono::microseconds(1000));
  }
  ++s->counters.frames_sent;
  if (!s->opts.confirm_tx) co_return Done{};

  const std::uint64_t seq = ++s->next_seq;
  s->pending.push_back({seq, frame});
  while (s->confirmed_seq < seq) {
    if (s->closed) co_return LinkError::kClosed;
    if (Clock::now() >= deadline) co_return LinkError::kTimeoutAs;
    co_await s->wait(deadline);
  }
  co_return Done{};
}

asio::awaitable<LinkResult<CanFrame>> SocketCanPort::receive_frame() {
  auto s = state_;
  // Report the loss where it happened in the stream: after the frames queued before it.
  while (s->rx.empty() && !s->overflow_pending) {
    if (s->closed) co_return LinkError::kClosed;
    co_await s->wait(Clock::time_point::max());
  }
  if (s->rx.empty()) {
    s->overflow_pending = false;
    co_return LinkError::kOverflow;
  }
  std::optional<CanFrame> f = s->rx.front();
  s->rx.pop_front();
  if (!f) co_return LinkError::kOverflow;
  co_return *f;
}

}  // namespace tollgate::transport
