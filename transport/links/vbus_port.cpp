#include "transport/links/vbus_port.hpp"

#include <poll.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/local/stream_protocol.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/asio/write.hpp>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <deque>
#include <unordered_map>

namespace tollgate::transport {
namespace {

namespace asio = boost::asio;
using local = asio::local::stream_protocol;
constexpr auto kUseAwaitable = asio::as_tuple(asio::use_awaitable);
constexpr std::size_t kReadChunk = 16 * 1024;

// A one-shot wake-up for a coroutine on a single-threaded executor: wait()
// suspends until notify() (or returns at once if notify() came first).
class Signal {
 public:
  explicit Signal(asio::any_io_executor ex) : timer_(std::move(ex)) {
    timer_.expires_at(asio::steady_timer::time_point::max());
  }
  asio::awaitable<void> wait() {
    if (!notified_) co_await timer_.async_wait(kUseAwaitable);
    notified_ = false;
  }
  void notify() {
    notified_ = true;
    timer_.cancel();
  }

 private:
  asio::steady_timer timer_;
  bool notified_ = false;
};

struct PendingTx {
  explicit PendingTx(asio::any_io_executor ex) : done(std::move(ex)) {}
  std::optional<LinkResult<Done>> result;
  Signal done;
};

struct PendingStats {
  explicit PendingStats(asio::any_io_executor ex) : done(std::move(ex)) {}
  std::optional<LinkResult<hub::HubStats>> result;
  Signal done;
};

// Blocking connect + Hello/Welcome on a raw descriptor, bounded by `timeout`.
struct Handshake {
  int fd = -1;
  VbusHubInfo info;
  hub::StreamDecoder decoder{hub::kMaxHubMessage};
};

LinkResult<Done> handshake(const VbusOptions& o, Handshake& h) {
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  if (o.socket_path.empty() || o.socket_path.size() >= sizeof addr.sun_path) {
    std::fprintf(stderr, "vbus: bad socket path '%s'\n", o.socket_path.c_str());
    return LinkError::kInvalidArgument;
  }
  std::memcpy(addr.sun_path, o.socket_path.data(), o.socket_path.size());
  h.fd = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (h.fd < 0) return LinkError::kIo;
  if (::connect(h.fd, reinterpret_cast<const sockaddr*>(&addr), sizeof addr) != 0) {
    std::fprintf(stderr, "vbus: cannot connect to hub at %s: %s\n", o.socket_path.c_str(),
                 std::strerror(errno));
    return LinkError::kIo;
  }
  hub::Hello hello;
  hello.fd = o.fd;
  hello.listen_only = o.listen_only;
  hello.name = o.name.substr(0, hub::kMaxNodeName);
  const auto bytes = hub::encode(hello);
  if (::send(h.fd, bytes.data(), bytes.size(), MSG_NOSIGNAL) != static_cast<ssize_t>(bytes.size()))
    return LinkError::kIo;
  const auto deadline = std::chrono::steady_clock::now() + o.connect_timeout;
  std::uint8_t buf[4096];
  while (true) {
    if (auto next = h.decoder.next()) {
      if (next->index() == 1) return std::get<1>(*next);
      auto& m = std::get<0>(*next);
      if (auto* w = std::get_if<hub::Welcome>(&m)) {
        if (w->version != hub::kProtocolVersion) return LinkError::kMalformedFrame;
        h.info = VbusHubInfo{w->node_id, w->bitrate, w->fd_data_bitrate, w->airtime};
        return Done{};
      }
      if (auto* e = std::get_if<hub::ErrorMessage>(&m)) {
        std::fprintf(stderr, "vbus: hub refused us: %s\n", e->text.c_str());
        return LinkError::kClosed;
      }
      return LinkError::kMalformedFrame;
    }
    const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
        deadline - std::chrono::steady_clock::now());
    if (left.count() <= 0) return LinkError::kDeadline;
    pollfd p{h.fd, POLLIN, 0};
    const int r = ::poll(&p, 1, static_cast<int>(left.count()));
    if (r < 0 && errno == EINTR) continue;
    if (r < 0) return LinkError::kIo;
    if (r == 0) return LinkError::kDeadline;
    const ssize_t n = ::recv(h.fd, buf, sizeof buf, 0);
    if (n == 0) return LinkError::kClosed;
    if (n < 0) {
      if (errno == EINTR || errno == EAGAIN) continue;
      return LinkError::kIo;
    }
    h.decoder.feed(std::span<const std::uint8_t>(buf, static_cast<std::size_t>(n)));
  }
}

}  // namespace

struct VbusPort::Impl : std::enable_shared_from_this<Impl> {
  Impl(asio::any_io_executor ex, const VbusOptions& o, Handshake&& h)
      : executor(ex),
        socket(ex),
        options(o),
        info(h.info),
        decoder(std::move(h.decoder)),
        rx_signal(ex),
        write_signal(ex) {}

  asio::any_io_executor executor;
  local::socket socket;
  VbusOptions options;
  VbusHubInfo info;
  hub::StreamDecoder decoder;
  bool closed = false;

  std::deque<CanFrame> rx;
  bool rx_overflow = false;
  Signal rx_signal;

  std::uint32_t last_tag = 0;
  std::unordered_map<std::uint32_t, std::shared_ptr<PendingTx>> tx;
  std::deque<std::shared_ptr<PendingStats>> stats;

  std::vector<std::uint8_t> out;
  bool writing = false;  // the writer coroutine has a write in progress
  Signal write_signal;

  // Writes at once when nothing is queued before it: an answer to a frame (a
  // flow control, the next first frame) leaves in this call instead of a turn
  // of the event loop later. What the socket does not take goes to the writer.
  void queue(const hub::Message& m) {
    const bool was_empty = out.empty();
    hub::encode_to(m, out);
    if (!was_empty || writing || closed) return;
    const ssize_t n =
        ::send(socket.native_handle(), out.data(), out.size(), MSG_DONTWAIT | MSG_NOSIGNAL);
    if (n > 0) out.erase(out.begin(), out.begin() + n);
    // EAGAIN or an error: the writer retries, and reports a dead socket by shutting.
    if (!out.empty()) write_signal.notify();
  }

  void handle(hub::Message&& m) {
    if (auto* d = std::get_if<hub::Deliver>(&m)) {
      if (rx.size() >= options.max_rx_queue) {
        rx_overflow = true;
      } else {
        rx.push_back(d->frame);
      }
      rx_signal.notify();
      return;
    }
    if (auto* c = std::get_if<hub::TxConfirm>(&m)) {
      auto it = tx.find(c->tag);
      if (it == tx.end()) return;
      auto p = it->second;
      tx.erase(it);
      if (c->status == hub::TxStatus::kSent)
        p->result = Done{};
      else
        p->result = LinkError::kTransmitFailed;
      p->done.notify();
      return;
    }
    if (auto* s = std::get_if<hub::HubStats>(&m)) {
      if (stats.empty()) return;
      auto p = stats.front();
      stats.pop_front();
      p->result = std::move(*s);
      p->done.notify();
      return;
    }
    if (auto* e = std::get_if<hub::ErrorMessage>(&m)) {
      std::fprintf(stderr, "vbus: hub error: %s\n", e->text.c_str());
      shut();
      return;
    }
    // Hello/Welcome/Transmit/StatsRequest never come from a hub.
    std::fprintf(stderr, "vbus: unexpected message from the hub\n");
    shut();
  }

  void shut() {
    if (closed) return;
    closed = true;
    boost::system::error_code ignored;
    socket.shutdown(local::socket::shutdown_both, ignored);
    socket.close(ignored);
    for (auto& [tag, p] : tx) {
      p->result = LinkError::kClosed;
      p->done.notify();
    }
    tx.clear();
    for (auto& p : stats) {
      p->result = LinkError::kClosed;
      p->done.notify();
    }
    stats.clear();
    rx_signal.notify();
    write_signal.notify();
  }

  static asio::awaitable<void> reader(std::shared_ptr<Impl> self) {
    // Bytes that came with the Welcome are already in the decoder.
    std::vector<std::uint8_t> chunk(kReadChunk);
    while (!self->closed) {
      while (!self->closed) {
        auto next = self->decoder.next();
        if (!next) break;
        if (next->index() == 1) {
          std::fprintf(stderr, "vbus: undecodable message from the hub\n");
          self->shut();
          break;
        }
        self->handle(std::move(std::get<0>(*next)));
      }
      if (self->closed) break;
      auto [ec, n] = co_await self->socket.async_read_some(asio::buffer(chunk), kUseAwaitable);
      if (ec) break;
      self->decoder.feed(std::span<const std::uint8_t>(chunk.data(), n));
    }
    self->shut();
  }

  static asio::awaitable<void> writer(std::shared_ptr<Impl> self) {
    std::vector<std::uint8_t> batch;
    while (!self->closed) {
      if (self->out.empty()) {
        co_await self->write_signal.wait();
        continue;
      }
      batch.clear();
      batch.swap(self->out);
      self->writing = true;
      auto [ec, n] = co_await asio::async_write(self->socket, asio::buffer(batch), kUseAwaitable);
      self->writing = false;
      if (ec) break;
    }
    self->shut();
  }
};

LinkResult<std::unique_ptr<VbusPort>> VbusPort::connect(asio::any_io_executor executor,
                                                        const VbusOptions& options) {
  if (options.max_rx_queue == 0) return LinkError::kInvalidArgument;
  Handshake h;
  auto r = handshake(options, h);
  if (r.index() == 1) {
    if (h.fd >= 0) ::close(h.fd);
    return std::get<1>(r);
  }
  const int fd = h.fd;
  auto impl = std::make_shared<Impl>(executor, options, std::move(h));
  boost::system::error_code ec;
  impl->socket.assign(local(), fd, ec);
  if (ec) {
    ::close(fd);
    return LinkError::kIo;
  }
  asio::co_spawn(executor, Impl::reader(impl), asio::detached);
  asio::co_spawn(executor, Impl::writer(impl), asio::detached);
  return std::unique_ptr<VbusPort>(new VbusPort(std::move(impl)));
}

VbusPort::VbusPort(std::shared_ptr<Impl> impl) : impl_(std::move(impl)) {}
VbusPort::~VbusPort() {
  close();
}

asio::any_io_executor VbusPort::get_executor() {
  return impl_->executor;
}

asio::awaitable<LinkResult<Done>> VbusPort::send_frame(const CanFrame& frame) {
  auto self = impl_;
  if (self->closed) co_return LinkError::kClosed;
  if (self->options.listen_only || !hub::is_valid_frame(frame) || (frame.fd && !self->options.fd))
    co_return LinkError::kInvalidArgument;
  const std::uint32_t tag = ++self->last_tag;
  // Written first: the confirmation is handled on this executor, after we suspend.
  self->queue(hub::Transmit{tag, frame});
  auto pending = std::make_shared<PendingTx>(self->executor);
  self->tx.emplace(tag, pending);
  while (!pending->result) co_await pending->done.wait();
  co_return *pending->result;
}

asio::awaitable<LinkResult<CanFrame>> VbusPort::receive_frame() {
  auto self = impl_;
  while (true) {
    if (self->rx_overflow) {
      self->rx_overflow = false;
      co_return LinkError::kOverflow;
    }
    if (!self->rx.empty()) {
      CanFrame f = self->rx.front();
      self->rx.pop_front();
      co_return f;
    }
    if (self->closed) co_return LinkError::kClosed;
    co_await self->rx_signal.wait();
  }
}

void VbusPort::close() {
  impl_->shut();
}
bool VbusPort::fd_capable() const {
  return impl_->options.fd;
}
const VbusHubInfo& VbusPort::hub_info() const {
  return impl_->info;
}
std::size_t VbusPort::frames_in_flight() const {
  return impl_->tx.size();
}

asio::awaitable<LinkResult<hub::HubStats>> VbusPort::request_stats() {
  auto self = impl_;
  if (self->closed) co_return LinkError::kClosed;
  auto pending = std::make_shared<PendingStats>(self->executor);
  self->stats.push_back(pending);
  self->queue(hub::StatsRequest{});
  while (!pending->result) co_await pending->done.wait();
  co_return std::move(*pending->result);
}

}  // namespace tollgate::transport
