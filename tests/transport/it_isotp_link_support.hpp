// Test support for IsoTpLink: links over the hub, an in-memory frame port pair
// with fault hooks, and message helpers.
#pragma once

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <deque>
#include <functional>

#include "tests/transport/it_hub_support.hpp"
#include "transport/links/isotp_link.hpp"
#include "transport/links/vbus_port.hpp"

namespace tollgate::test {

namespace asio = boost::asio;
using namespace std::chrono_literals;

inline transport::IsoTpConfig channel(std::uint32_t tx, std::uint32_t rx, bool fd = false) {
  transport::IsoTpConfig c;
  c.tx_id = tx;
  c.rx_id = rx;
  c.fd = fd;
  c.tx_dl = fd ? 64 : 8;
  return c;
}

inline std::unique_ptr<transport::IsoTpLink> vbus_link(
    asio::io_context& io, const std::string& path, transport::IsoTpConfig config,
    std::uint8_t window = transport::kMaxTxWindow) {
  transport::VbusOptions vo;
  vo.socket_path = path;
  vo.fd = config.fd;
  auto port = transport::VbusPort::connect(io.get_executor(), vo);
  REQUIRE(port.index() == 0);
  transport::IsoTpLinkOptions lo;
  lo.isotp = config;
  lo.tx_window = window;
  lo.description = "vbus:" + path;
  auto link = transport::IsoTpLink::create(std::move(std::get<0>(port)), lo);
  REQUIRE(link.index() == 0);
  return std::move(std::get<0>(link));
}

inline std::vector<std::uint8_t> pattern(std::size_t n, std::uint32_t seed) {
  std::vector<std::uint8_t> m(n);
  std::uint32_t x = seed * 2654435761U + 1;
  for (auto& b : m) {
    x ^= x << 13;
    x ^= x >> 17;
    x ^= x << 5;
    b = static_cast<std::uint8_t>(x);
  }
  return m;
}

// Two CanFramePorts joined back to back. Every frame one sends goes through
// `on_wire` (which may alter it, or return false to lose it) to the other and
// is then confirmed; `refuse_tx` makes a transmit fail.
class MemoryPort final : public transport::CanFramePort {
 public:
  MemoryPort(asio::any_io_executor ex, bool fd) : ex_(ex), fd_(fd), wake_(ex) {
    wake_.expires_at(asio::steady_timer::time_point::max());
  }
  static void join(MemoryPort& a, MemoryPort& b) {
    a.peer_ = &b;
    b.peer_ = &a;
  }

  std::function<bool(transport::CanFrame&)> on_wire;
  std::function<bool(const transport::CanFrame&)> refuse_tx;
  std::size_t frames_sent = 0;

  asio::any_io_executor get_executor() override { return ex_; }
  asio::awaitable<transport::LinkResult<transport::Done>> send_frame(
      const transport::CanFrame& frame) override {
    transport::CanFrame copy = frame;
    co_await asio::post(ex_, asio::use_awaitable);  // complete later, as a real port does
    if (closed_) co_return transport::LinkError::kClosed;
    if (refuse_tx && refuse_tx(copy)) co_return transport::LinkError::kTransmitFailed;
    ++frames_sent;
    if (peer_ && !peer_->closed_ && (!on_wire || on_wire(copy))) peer_->push(copy);
    co_return transport::Done{};
  }
  asio::awaitable<transport::LinkResult<transport::CanFrame>> receive_frame() override {
    while (true) {
      if (!rx_.empty()) {
        auto f = rx_.front();
        rx_.pop_front();
        co_return f;
      }
      if (closed_) co_return transport::LinkError::kClosed;
      co_await wake_.async_wait(asio::as_tuple(asio::use_awaitable));
    }
  }
  void close() override {
    closed_ = true;
    wake_.cancel();
  }
  bool fd_capable() const override { return fd_; }

 private:
  void push(const transport::CanFrame& f) {
    rx_.push_back(f);
    wake_.cancel();
  }
  asio::any_io_executor ex_;
  bool fd_;
  MemoryPort* peer_ = nullptr;
  std::deque<transport::CanFrame> rx_;
  asio::steady_timer wake_;
  bool closed_ = false;
};

struct MemoryPair {
  MemoryPort* port_a = nullptr;
  MemoryPort* port_b = nullptr;
  std::unique_ptr<transport::IsoTpLink> a, b;
};

inline MemoryPair memory_links(asio::io_context& io, transport::IsoTpConfig config_a,
                               transport::IsoTpConfig config_b) {
  auto pa = std::make_unique<MemoryPort>(io.get_executor(), config_a.fd);
  auto pb = std::make_unique<MemoryPort>(io.get_executor(), config_b.fd);
  MemoryPort::join(*pa, *pb);
  MemoryPair pair;
  pair.port_a = pa.get();
  pair.port_b = pb.get();
  transport::IsoTpLinkOptions oa, ob;
  oa.isotp = config_a;
  ob.isotp = config_b;
  auto la = transport::IsoTpLink::create(std::move(pa), oa);
  auto lb = transport::IsoTpLink::create(std::move(pb), ob);
  REQUIRE(la.index() == 0);
  REQUIRE(lb.index() == 0);
  pair.a = std::move(std::get<0>(la));
  pair.b = std::move(std::get<0>(lb));
  return pair;
}

template <class T>
transport::LinkError error_of(const transport::LinkResult<T>& r) {
  REQUIRE(r.index() == 1);
  return std::get<1>(r);
}

}  // namespace tollgate::test
