#include "transport/links/kernel_isotp_link.hpp"

#include <linux/can.h>
#include <linux/can/isotp.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <boost/asio/as_tuple.hpp>
#include <boost/asio/experimental/awaitable_operators.hpp>
#include <boost/asio/posix/stream_descriptor.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <cerrno>
#include <cstring>
#include <limits>

#include "transport/framing/crc32c.hpp"

namespace tollgate::transport {

namespace asio = boost::asio;
using namespace boost::asio::experimental::awaitable_operators;
using Clock = std::chrono::steady_clock;
constexpr auto kAwait = asio::as_tuple(asio::use_awaitable);
constexpr std::size_t kCrcSize = 4;

LinkError kernel_isotp_error(int err) {
  switch (err) {
    case ECOMM:
      return LinkError::kTimeoutBs;
    case ETIMEDOUT:
      return LinkError::kTimeoutCr;
    case EILSEQ:
      return LinkError::kWrongSequence;
    case EMSGSIZE:
      return LinkError::kOverflow;
    case EOVERFLOW:
      return LinkError::kWaitLimit;
    case EBADMSG:
      return LinkError::kUnexpectedFrame;
    case EADDRNOTAVAIL:
    case ENETDOWN:
    case ENODEV:
      return LinkError::kClosed;
    default:
      return LinkError::kIo;
  }
}

struct KernelIsoTpLink::State {
  State(asio::any_io_executor e, int fd, KernelIsoTpOptions o)
      : ex(std::move(e)), sock(ex, fd), opts(std::move(o)) {}
  asio::any_io_executor ex;
  asio::posix::stream_descriptor sock;
  KernelIsoTpOptions opts;
  bool closed = false;

  // Waits until the socket is ready for `w` or `deadline` passes; false on the deadline.
  asio::awaitable<bool> ready(asio::posix::stream_descriptor::wait_type w,
                              Clock::time_point deadline) {
    asio::steady_timer timer(ex, deadline);
    auto r = co_await (sock.async_wait(w, kAwait) || timer.async_wait(kAwait));
    co_return r.index() == 0;
  }

  // Reads and clears the socket's pending error (0 if none).
  int take_error() {
    int err = 0;
    socklen_t len = sizeof err;
    if (::getsockopt(sock.native_handle(), SOL_SOCKET, SO_ERROR, &err, &len) < 0) return errno;
    return err;
  }
};

namespace {

LinkOpenError sys_error(const std::string& iface, std::string_view what, int err) {
  return {LinkError::kIo, iface + ": " + std::string(what) + ": " + std::strerror(err)};
}

Clock::time_point deadline_after(MessageLink::Duration timeout) {
  const auto now = Clock::now();
  if (timeout >= Clock::time_point::max() - now) return Clock::time_point::max();
  return now + timeout;
}

}  // namespace

LinkOpenResult<std::unique_ptr<KernelIsoTpLink>> KernelIsoTpLink::open(asio::any_io_executor ex,
                                                                       KernelIsoTpOptions options) {
  const std::string& name = options.interface;
  if (auto why = af_can_unavailable_reason(); !why.empty()) {
    return LinkOpenError{LinkError::kIo, name + ": " + why};
  }
  auto info = lookup_can_interface(name);
  if (info.index() != 0) return std::get<1>(info);
  const auto& iface = std::get<0>(info);
  if (options.fd && !iface.fd_capable) {
    return LinkOpenError{LinkError::kInvalidArgument,
                         name + ": classic CAN interface (MTU " + std::to_string(iface.mtu) +
                             "); fd=1 needs a CAN FD interface (ip link set " + name + " mtu 72)"};
  }
  if (!iface.up) {
    return LinkOpenError{LinkError::kIo,
                         name + ": interface is down (ip link set " + name + " up)"};
  }
  if (options.tx_address.has_value() != options.rx_address.has_value()) {
    return LinkOpenError{LinkError::kInvalidArgument,
                         name + ": extended addressing needs both the tx and the rx address"};
  }

  const int fd = ::socket(PF_CAN, SOCK_DGRAM | SOCK_NONBLOCK | SOCK_CLOEXEC, CAN_ISOTP);
  if (fd < 0) {
    const int err = errno;
    std::string hint = err == EPROTONOSUPPORT ? " (load the can-isotp module)" : "";
    return sys_error(name, "socket(PF_CAN, SOCK_DGRAM, CAN_ISOTP)" + hint, err);
  }
  auto fail = [&](std::string_view what) {
    const int err = errno;
    ::close(fd);
    return sys_error(name, what, err);
  };

  can_isotp_options opts{};
  if (options.padding) opts.flags |= CAN_ISOTP_TX_PADDING;
  if (options.tx_address) {
    opts.flags |= CAN_ISOTP_EXTEND_ADDR | CAN_ISOTP_RX_EXT_ADDR;
    opts.ext_address = *options.tx_address;
    opts.rx_ext_address = *options.rx_address;
  }
  if (options.frame_txtime) {
    const auto ns = std::chrono::duration_cast<std::chrono::nanoseconds>(*options.frame_txtime);
    // 0 means "keep the kernel's value" to the kernel; it has a code for zero.
    opts.frame_txtime = ns.count() == 0 ? CAN_ISOTP_FRAME_TXTIME_ZERO
                                        : static_cast<__u32>(std::min<std::int64_t>(
                                              ns.count(), std::numeric_limits<__u32>::max() - 1));
  }
  opts.txpad_content = options.pad_byte;
  opts.rxpad_content = options.pad_byte;
  if (::setsockopt(fd, SOL_CAN_ISOTP, CAN_ISOTP_OPTS, &opts, sizeof opts) < 0) {
    return fail("setsockopt(CAN_ISOTP_OPTS)");
  }
  can_isotp_fc_options fc{};
  fc.bs = options.block_size;
  fc.stmin = options.stmin_code;
  fc.wftmax = options.wft_max;
  if (::setsockopt(fd, SOL_CAN_ISOTP, CAN_ISOTP_RECV_FC, &fc, sizeof fc) < 0) {
    return fail("setsockopt(CAN_ISOTP_RECV_FC)");
  }
  if (options.fd) {
    can_isotp_ll_options ll{};
    ll.mtu = CANFD_MTU;
    ll.tx_dl = options.tx_dl;
    ll.tx_flags = options.brs ? CANFD_BRS : 0;
    if (::setsockopt(fd, SOL_CAN_ISOTP, CAN_ISOTP_LL_OPTS, &ll, sizeof ll) < 0) {
      return fail("setsockopt(CAN_ISOTP_LL_OPTS) (tx_dl must be 8,12,16,20,24,32,48 or 64)");
    }
  }
  sockaddr_can addr{};
  addr.can_family = AF_CAN;
  addr.can_ifindex = static_cast<int>(iface.index);
  const canid_t eff = options.extended_ids ? CAN_EFF_FLAG : 0;
  const canid_t mask = options.extended_ids ? CAN_EFF_MASK : CAN_SFF_MASK;
  addr.can_addr.tp.tx_id = (options.tx_id & mask) | eff;
  addr.can_addr.tp.rx_id = (options.rx_id & mask) | eff;
  if (::bind(fd, reinterpret_cast<const sockaddr*>(&addr), sizeof addr) < 0) return fail("bind");

  auto state = std::make_shared<State>(ex, fd, std::move(options));
  return std::unique_ptr<KernelIsoTpLink>(new KernelIsoTpLink(std::move(state)));
}

KernelIsoTpLink::KernelIsoTpLink(std::shared_ptr<State> state) : state_(std::move(state)) {}

KernelIsoTpLink::~KernelIsoTpLink() {
  close();
}

void KernelIsoTpLink::close() {
  state_->closed = true;
  boost::system::error_code ignored;
  state_->sock.close(ignored);
}

std::string KernelIsoTpLink::describe() const {
  return state_->opts.description;
}

asio::awaitable<LinkResult<Done>> KernelIsoTpLink::send(std::vector<std::uint8_t> message,
                                                        Duration timeout) {
  auto s = state_;
  if (s->closed) co_return LinkError::kClosed;
  const auto deadline = deadline_after(timeout);
  const std::uint32_t crc = crc32c(message);
  for (int i = 0; i < 4; ++i) message.push_back(static_cast<std::uint8_t>(crc >> (8 * i)));

  for (;;) {
    const ssize_t n = ::send(s->sock.native_handle(), message.data(), message.size(), MSG_DONTWAIT);
    if (n == static_cast<ssize_t>(message.size())) break;
    if (n >= 0) co_return LinkError::kTransmitFailed;
    const int err = errno;
    if (err == EINTR) continue;
    // EAGAIN: the kernel is still sending an earlier message of this socket.
    // The only EINVAL a bound socket gives for a non-empty write is a message
    // over the kernel's cap (8200 bytes on 6.1, max_pdu_size later).
    if (err == EINVAL || err == EMSGSIZE) co_return LinkError::kTooLarge;
    if (err != EAGAIN) co_return kernel_isotp_error(err);
    if (!co_await s->ready(asio::posix::stream_descriptor::wait_write, deadline)) {
      co_return s->closed ? LinkError::kClosed : LinkError::kDeadline;
    }
    if (s->closed) co_return LinkError::kClosed;
  }
  // Writable again means the kernel's sender went idle: the last frame is out,
  // or the transfer failed and left its reason in the socket error.
  if (!co_await s->ready(asio::posix::stream_descriptor::wait_write, deadline)) {
    co_return s->closed ? LinkError::kClosed : LinkError::kDeadline;
  }
  if (s->closed) co_return LinkError::kClosed;
  if (const int err = s->take_error(); err != 0) co_return kernel_isotp_error(err);
  co_return Done{};
}

asio::awaitable<LinkResult<std::vector<std::uint8_t>>> KernelIsoTpLink::receive(Duration timeout) {
  auto s = state_;
  const auto deadline = deadline_after(timeout);
  // Room for exactly the largest message we accept: a longer one comes back
  // with MSG_TRUNC and is reported, never cut silently.
  std::vector<std::uint8_t> buf(s->opts.max_message + kCrcSize);
  for (;;) {
    if (s->closed) co_return LinkError::kClosed;
    iovec iov{buf.data(), buf.size()};
    msghdr msg{};
    msg.msg_iov = &iov;
    msg.msg_iovlen = 1;
    const ssize_t n = ::recvmsg(s->sock.native_handle(), &msg, MSG_DONTWAIT);
    if (n >= 0) {
      if ((msg.msg_flags & MSG_TRUNC) != 0) co_return LinkError::kOverflow;
      const auto size = static_cast<std::size_t>(n);
      if (size < kCrcSize) co_return LinkError::kMalformedFrame;
      const std::size_t body = size - kCrcSize;
      std::uint32_t got = 0;
      for (std::size_t i = 0; i < kCrcSize; ++i) got |= std::uint32_t{buf[body + i]} << (8 * i);
      if (crc32c(std::span(buf.data(), body)) != got) co_return LinkError::kBadCrc;
      buf.resize(body);
      co_return buf;
    }
    const int err = errno;
    if (err == EINTR) continue;
    if (err != EAGAIN) co_return kernel_isotp_error(err);
    if (!co_await s->ready(asio::posix::stream_descriptor::wait_read, deadline)) {
      co_return s->closed ? LinkError::kClosed : LinkError::kDeadline;
    }
  }
}

}  // namespace tollgate::transport
