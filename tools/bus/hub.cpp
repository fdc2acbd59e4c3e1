// The virtual CAN bus hub. An edge program: it reads the steady clock and
// talks to sockets; the pure parts (airtime, captures, the socket protocol)
// live in transport/framing.
//
// Timing model: the bus is a sequence of transmissions on absolute times. A
// transmission starts when the bus becomes free (the end of the previous one)
// or, if the bus was idle, when the frame arrives; it ends after the frame's
// airtime. The next queued frame starts exactly at that end, however late the
// hub's timer fired, so airtime never accumulates drift. As on a real bus
// (ISO 11898-1, frame validation), receivers take a frame at the last-but-one
// bit of its end-of-frame field and the transmitter's confirmation comes at the
// end of that field, so a node can queue its answer during the intermission;
// the bus itself is free only after the interframe space.
//
// Punctuality: a timer or a socket wakes a sleeping process tens of
// microseconds late, and when the bus is about to go idle each of those
// microseconds is bus time lost before the next node's answer. So when the
// frame on the bus is the last one queued, the hub wakes `spin_us` early and
// polls its sockets until the frame completes, then keeps polling `spin_us`
// for the answer (HubOptions::spin_us). While frames wait back to back it
// sleeps on its timer: the next frame starts on time however late it wakes.
#include "tools/bus/hub.hpp"

#include <sched.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <algorithm>
#include <boost/asio/as_tuple.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/local/stream_protocol.hpp>
#include <boost/asio/signal_set.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/asio/write.hpp>
#include <chrono>
#include <cmath>
#include <csignal>
#include <cstdio>
#include <deque>
#include <fstream>
#include <iostream>
#include <map>
#include <memory>
#include <random>

#include "transport/framing/airtime.hpp"
#include "transport/framing/capture.hpp"
#include "transport/framing/hub_protocol.hpp"

namespace tollgate::bus {
namespace {

namespace asio = boost::asio;
using local = asio::local::stream_protocol;
using Clock = std::chrono::steady_clock;
using transport::CanFrame;
namespace hubp = transport::hub;

constexpr auto kUseAwaitable = asio::as_tuple(asio::use_awaitable);
constexpr std::size_t kReadChunk = 16 * 1024;

bool valid_probability(double p) {
  return std::isfinite(p) && p >= 0.0 && p <= 1.0;
}

struct Node {
  explicit Node(local::socket s) : socket(std::move(s)), wake(socket.get_executor()) {}
  local::socket socket;
  std::uint32_t id = 0;
  bool hello_done = false;
  bool fd = false;
  bool listen_only = false;
  bool open = true;
  bool flushing = false;  // closed for a protocol error: the writer sends the Error, then closes
  std::string name;

  struct Queued {
    std::uint32_t tag = 0;
    CanFrame frame;
    std::uint64_t order = 0;  // global arrival order: ties in arbitration go to the first
    unsigned errors = 0;      // consecutive error frames
  };
  std::deque<Queued> queue;  // frames waiting for the bus, in the node's order

  // Outbound messages: appended to `pending`, written by the writer coroutine.
  std::vector<std::uint8_t> pending;
  std::size_t pending_messages = 0;
  asio::steady_timer wake;  // cancelled to wake the writer
  bool writing = false;
  std::size_t lost_since_write = 0;  // deliveries skipped while a write was stuck
};

class Hub {
 public:
  Hub(const HubOptions& options, asio::io_context& io)
      : o_(options), io_(io), acceptor_(io), bus_timer_(io), signals_(io) {
    rates_.nominal_bps = o_.bitrate;
    rates_.data_bps = o_.fd_data_bitrate != 0 ? o_.fd_data_bitrate : o_.bitrate;
    seed_ = o_.seed != 0 ? o_.seed : std::random_device{}() | 1ULL;
    rng_.seed(seed_);
    const auto spin_us = o_.spin_us.value_or(realtime_scheduling() ? kDefaultSpinUs : 0);
    if (!o_.no_airtime) spin_ = std::chrono::microseconds(spin_us);
  }

  int start() {
    if (!open_captures()) return 1;
    if (!listen()) return 1;
    start_time_ = Clock::now();
    wall_start_us_ =
        static_cast<std::uint64_t>(std::chrono::duration_cast<std::chrono::microseconds>(
                                       std::chrono::system_clock::now().time_since_epoch())
                                       .count());
    bus_free_at_ = start_time_;
    std::fprintf(stderr,
                 "hub: listening on %s, %u bit/s, FD data %u bit/s%s, seed %llu, spin %lld us\n",
                 o_.socket_path.c_str(), rates_.nominal_bps, rates_.data(),
                 o_.no_airtime ? " (no airtime)" : "", static_cast<unsigned long long>(seed_),
                 static_cast<long long>(
                     std::chrono::duration_cast<std::chrono::microseconds>(spin_).count()));
    signals_.add(SIGINT);
    signals_.add(SIGTERM);
    signals_.add(SIGUSR1);
    wait_signal();
    asio::co_spawn(io_, accept_loop(), asio::detached);
    if (o_.on_ready) o_.on_ready();
    return 0;
  }

  void finish() {
    print_stats();
    flush_captures();
    ::unlink(o_.socket_path.c_str());
  }

 private:
  // ---- setup -------------------------------------------------------------

  bool open_captures() {
    if (!o_.candump_log.empty()) {
      candump_.open(o_.candump_log, std::ios::out | std::ios::trunc);
      if (!candump_) {
        std::fprintf(stderr, "hub: cannot write --candump-log %s\n", o_.candump_log.c_str());
        return false;
      }
    }
    if (!o_.pcap.empty()) {
      pcap_.open(o_.pcap, std::ios::out | std::ios::trunc | std::ios::binary);
      if (!pcap_) {
        std::fprintf(stderr, "hub: cannot write --pcap %s\n", o_.pcap.c_str());
        return false;
      }
      const auto header = transport::pcap_file_header();
      pcap_.write(reinterpret_cast<const char*>(header.data()),
                  static_cast<std::streamsize>(header.size()));
    }
    return true;
  }

  bool listen() {
    struct stat st {};
    if (::stat(o_.socket_path.c_str(), &st) == 0) {
      if (!S_ISSOCK(st.st_mode)) {
        std::fprintf(stderr, "hub: %s exists and is not a socket\n", o_.socket_path.c_str());
        return false;
      }
      // A live hub answers a connect; a stale socket file does not.
      local::socket probe(io_);
      boost::system::error_code ec;
      probe.connect(local::endpoint(o_.socket_path), ec);
      if (!ec) {
        std::fprintf(stderr, "hub: another hub is listening on %s\n", o_.socket_path.c_str());
        return false;
      }
      ::unlink(o_.socket_path.c_str());
    }
    boost::system::error_code ec;
    acceptor_.open(local(), ec);
    if (!ec) acceptor_.bind(local::endpoint(o_.socket_path), ec);
    if (!ec) acceptor_.listen(asio::socket_base::max_listen_connections, ec);
    if (ec) {
      std::fprintf(stderr, "hub: cannot listen on %s: %s\n", o_.socket_path.c_str(),
                   ec.message().c_str());
      return false;
    }
    return true;
  }

  void wait_signal() {
    signals_.async_wait([this](const boost::system::error_code& ec, int sig) {
      if (ec) return;
      if (sig == SIGUSR1) {
        print_stats();
        flush_captures();
        wait_signal();
        return;
      }
      stop();
    });
  }

  void stop() {
    stopping_ = true;
    boost::system::error_code ignored;
    acceptor_.close(ignored);
    bus_timer_.cancel();
    signals_.cancel(ignored);
    for (auto& [id, node] : nodes_) close_node(*node);
    io_.stop();
  }

  // ---- nodes -------------------------------------------------------------

  asio::awaitable<void> accept_loop() {
    while (!stopping_) {
      auto [ec, socket] = co_await acceptor_.async_accept(kUseAwaitable);
      if (ec) {
        if (stopping_ || ec == asio::error::operation_aborted) co_return;
        continue;  // e.g. EMFILE: keep serving the nodes we have
      }
      auto node = std::make_shared<Node>(std::move(socket));
      node->id = ++last_node_id_;
      if (nodes_.size() >= o_.max_nodes) {
        send(*node, hubp::ErrorMessage{static_cast<std::uint8_t>(transport::LinkError::kTooLarge),
                                       "too many nodes"});
        asio::co_spawn(io_, writer(node, true), asio::detached);
        continue;
      }
      nodes_[node->id] = node;
      ++stats_.nodes_connected;
      asio::co_spawn(io_, reader(node), asio::detached);
      asio::co_spawn(io_, writer(node, false), asio::detached);
    }
  }

  asio::awaitable<void> reader(std::shared_ptr<Node> node) {
    hubp::StreamDecoder decoder(hubp::kMaxNodeMessage);
    std::vector<std::uint8_t> chunk(kReadChunk);
    while (node->open) {
      auto [ec, n] = co_await node->socket.async_read_some(asio::buffer(chunk), kUseAwaitable);
      if (ec) break;
      decoder.feed(std::span<const std::uint8_t>(chunk.data(), n));
      while (node->open) {
        auto next = decoder.next();
        if (!next) break;
        if (next->index() == 1) {
          const auto e = std::get<1>(*next);
          protocol_error(*node, e, "undecodable message");
          break;
        }
        on_message(*node, std::move(std::get<0>(*next)));
      }
      if (node->open) kick();
    }
    if (!node->flushing) drop_node(node);
  }

  // Writes the node's pending messages; with `then_close`, closes after the first batch.
  asio::awaitable<void> writer(std::shared_ptr<Node> node, bool then_close) {
    std::vector<std::uint8_t> batch;
    while (true) {
      if (node->pending.empty()) {
        if (!node->open || then_close) break;
        node->wake.expires_at(Clock::time_point::max());
        co_await node->wake.async_wait(kUseAwaitable);
        continue;
      }
      batch.clear();
      batch.swap(node->pending);
      node->pending_messages = 0;
      node->writing = true;
      auto [ec, n] = co_await asio::async_write(node->socket, asio::buffer(batch), kUseAwaitable);
      node->writing = false;
      if (ec) break;
      node->lost_since_write = 0;
    }
    boost::system::error_code ignored;
    node->socket.close(ignored);
    if (node->open) drop_node(node);
  }

  void send(Node& node, const hubp::Message& m) {
    if (!node.open) return;
    // Hard cap on what a node can make the hub hold: one that keeps sending
    // (each Transmit earns a TxConfirm) but never reads is cut off. Bursts stay
    // far below this (at most every node's queue in one turn of the loop).
    if (node.pending_messages >= 2 * o_.max_outbound_messages) {
      if (!o_.quiet) std::fprintf(stderr, "hub: node %u does not read, disconnecting\n", node.id);
      close_node(node);
      return;
    }
    hubp::encode_to(m, node.pending);
    ++node.pending_messages;
    if (node.pending_messages != 1 || node.writing) return;
    // Nothing queued before it: write now rather than a turn of the event loop
    // later (a delivery that ends a turnaround is waited for). What the socket
    // does not take goes to the writer, which also reports a dead socket.
    const ssize_t n = ::send(node.socket.native_handle(), node.pending.data(), node.pending.size(),
                             MSG_DONTWAIT | MSG_NOSIGNAL);
    if (n > 0 && static_cast<std::size_t>(n) == node.pending.size()) {
      node.pending.clear();
      node.pending_messages = 0;
      node.lost_since_write = 0;
      return;
    }
    if (n > 0) node.pending.erase(node.pending.begin(), node.pending.begin() + n);
    node.wake.cancel();
  }

  void on_message(Node& node, hubp::Message&& m) {
    if (!node.hello_done) {
      auto* hello = std::get_if<hubp::Hello>(&m);
      if (!hello)
        return protocol_error(node, transport::LinkError::kUnexpectedFrame, "expected Hello");
      if (hello->version != hubp::kProtocolVersion)
        return protocol_error(node, transport::LinkError::kInvalidArgument,
                              "unsupported protocol version");
      node.hello_done = true;
      node.fd = hello->fd;
      node.listen_only = hello->listen_only;
      node.name = hello->name;
      hubp::Welcome w;
      w.airtime = !o_.no_airtime;
      w.node_id = node.id;
      w.bitrate = rates_.nominal_bps;
      w.fd_data_bitrate = rates_.data();
      send(node, w);
      if (!o_.quiet)
        std::fprintf(stderr, "hub: node %u (%s%s%s) connected\n", node.id,
                     node.name.empty() ? "unnamed" : node.name.c_str(), node.fd ? ", FD" : "",
                     node.listen_only ? ", listen-only" : "");
      return;
    }
    if (auto* t = std::get_if<hubp::Transmit>(&m)) return on_transmit(node, *t);
    if (std::holds_alternative<hubp::StatsRequest>(m)) return send(node, snapshot());
    protocol_error(node, transport::LinkError::kUnexpectedFrame, "unexpected message type");
  }

  void on_transmit(Node& node, const hubp::Transmit& t) {
    const bool refuse =
        node.listen_only || (t.frame.fd && !node.fd) || node.queue.size() >= o_.max_queued_frames;
    if (refuse) {
      ++stats_.rejected;
      send(node, hubp::TxConfirm{t.tag, hubp::TxStatus::kRejected, bus_ns(Clock::now())});
      return;
    }
    node.queue.push_back(Node::Queued{t.tag, t.frame, ++order_, 0});
  }

  void protocol_error(Node& node, transport::LinkError e, const char* what) {
    if (!o_.quiet)
      std::fprintf(stderr, "hub: node %u: protocol error (%s), disconnecting\n", node.id, what);
    send(node, hubp::ErrorMessage{static_cast<std::uint8_t>(e), what});
    node.open = false;  // the writer flushes the Error, then closes
    node.flushing = true;
    node.queue.clear();
    node.wake.cancel();
    nodes_.erase(node.id);
  }

  void close_node(Node& node) {
    node.open = false;
    node.queue.clear();
    boost::system::error_code ignored;
    node.socket.close(ignored);
    node.wake.cancel();
  }

  void drop_node(const std::shared_ptr<Node>& node) {
    if (node->open && !o_.quiet && node->hello_done)
      std::fprintf(stderr, "hub: node %u disconnected\n", node->id);
    close_node(*node);
    nodes_.erase(node->id);
  }

  // ---- the bus -----------------------------------------------------------

  struct Transmission {
    std::uint32_t node_id = 0;
    Node::Queued frame;
    Clock::time_point rx_valid;  // receivers take the frame (last-but-one EOF bit)
    Clock::time_point tx_valid;  // the transmitter's confirmation (end of EOF)
    Clock::time_point end;       // after the interframe space: the bus is free
    bool rx_done = false;
    bool tx_done = false;
    enum class Kind { kNormal, kCorrupt, kFirstOfDuplicate } kind = Kind::kNormal;
  };

 public:
  // The hub's event loop (run_hub) polls instead of sleeping while this holds.
  bool wants_spin(Clock::time_point now) const {
    if (spin_ == Clock::duration::zero() || stopping_) return false;
    if (now < listen_until_) return true;
    return precise_ && next_due_ && now + spin_ >= *next_due_;
  }
  // Called between polls: runs whatever fell due (the timer may not have fired yet).
  void service(Clock::time_point now) {
    if (stopping_ || !next_due_ || *next_due_ > now) return;
    if (!current_) begin(std::max(now, bus_free_at_));
    run_bus(now);
  }

 private:
  std::uint64_t bus_ns(Clock::time_point t) const {
    return static_cast<std::uint64_t>(
        std::chrono::duration_cast<std::chrono::nanoseconds>(t - start_time_).count());
  }
  Clock::duration airtime(const transport::FrameBits& bits) const {
    if (o_.no_airtime) return Clock::duration::zero();
    return std::chrono::duration_cast<Clock::duration>(
        std::chrono::nanoseconds(transport::bits_time_ns(bits, rates_)));
  }
  // `n` bits at the nominal rate (EOF and intermission always run at it).
  Clock::duration nominal_bits(std::uint32_t n) const {
    transport::FrameBits b;
    b.nominal = n;
    return airtime(b);
  }
  // Fills the validation instants of a transmission that ends at t.end: the
  // frame ends with 7 EOF bits and 3 intermission bits (airtime.hpp).
  void set_validation(Transmission& t) const {
    t.tx_valid = t.end - nominal_bits(3);
    t.rx_valid = t.end - nominal_bits(4);
    t.rx_done = t.tx_done = false;
  }
  bool chance(double p) {
    if (p <= 0.0) return false;
    return std::uniform_real_distribution<double>(0.0, 1.0)(rng_) < p;
  }

  static std::uint32_t arbitration_key(const CanFrame& f) {
    // The arbitration field as bits, dominant (0) lowest: base id, then
    // RTR/RRS + IDE = 00 for a base frame, SRR + IDE = 11 and the extension
    // for an extended one, so a base frame beats an extended one of equal base id.
    if (!f.extended) return (f.id & 0x7FFU) << 20;
    return (((f.id >> 18) & 0x7FFU) << 20) | (3U << 18) | (f.id & 0x3FFFFU);
  }

  Node* arbitrate() {
    Node* winner = nullptr;
    for (auto& [id, node] : nodes_) {
      if (node->queue.empty() || !node->open) continue;
      if (!winner) {
        winner = node.get();
        continue;
      }
      const auto& a = node->queue.front();
      const auto& b = winner->queue.front();
      const auto ka = arbitration_key(a.frame);
      const auto kb = arbitration_key(b.frame);
      if (ka < kb || (ka == kb && a.order < b.order)) winner = node.get();
    }
    return winner;
  }

  // Starts the next transmission if the bus is free and a frame waits.
  void kick() {
    if (current_ || stopping_) return;
    const auto now = Clock::now();
    begin(std::max(now, bus_free_at_));
    run_bus(now);
  }

  void begin(Clock::time_point t0) {
    Node* node = arbitrate();
    if (!node) return;
    Transmission t;
    t.node_id = node->id;
    t.frame = node->queue.front();
    transport::FrameBits bits;
    if (chance(o_.corrupt)) {
      t.kind = Transmission::Kind::kCorrupt;
      bits = transport::error_frame_bits(t.frame.frame);
    } else {
      t.kind = chance(o_.duplicate) ? Transmission::Kind::kFirstOfDuplicate
                                    : Transmission::Kind::kNormal;
      bits = transport::frame_bits(t.frame.frame);
    }
    const auto d = airtime(bits);
    t.end = t0 + d;
    set_validation(t);
    busy_ += d;
    current_ = std::move(t);
  }

  // Completes every transmission (and delivery) due by `now`, back to back on
  // absolute times, then arms the timer for the next event.
  void run_bus(Clock::time_point now) {
    bool ended = false;
    while (current_) {
      Transmission& t = *current_;
      if (t.kind != Transmission::Kind::kCorrupt) {
        if (!t.rx_done && t.rx_valid <= now) {
          t.rx_done = true;
          count_frame(t.frame.frame);
          schedule_delivery(t.frame.frame, t.node_id, t.rx_valid, t.end);
        }
        if (!t.tx_done && t.tx_valid <= now) {
          t.tx_done = true;
          confirm(t);
        }
      }
      if (t.end > now) break;
      Transmission done = std::move(t);
      current_.reset();
      bus_free_at_ = done.end;
      ended = true;
      complete(done);
      if (!current_) begin(bus_free_at_);
    }
    release_deliveries(now);
    // The bus just went idle: the answer to what it carried is due any moment.
    if (ended && !current_ && spin_ != Clock::duration::zero()) listen_until_ = now + spin_;
    arm_timer();
  }

  // The transmitter learns its frame went out (a duplicate's first copy is not
  // confirmed: the sender's controller sends it again at once).
  void confirm(const Transmission& t) {
    if (t.kind != Transmission::Kind::kNormal) return;
    auto it = nodes_.find(t.node_id);
    Node* sender = it == nodes_.end() ? nullptr : it->second.get();
    if (sender && !sender->queue.empty() && sender->queue.front().order == t.frame.order) {
      send(*sender, hubp::TxConfirm{t.frame.tag, hubp::TxStatus::kSent, bus_ns(t.end)});
      sender->queue.pop_front();
    }
  }

  // The bus is free after `t`: error handling, or a duplicate's second copy.
  void complete(Transmission& t) {
    auto it = nodes_.find(t.node_id);
    Node* sender = it == nodes_.end() ? nullptr : it->second.get();
    if (t.kind == Transmission::Kind::kCorrupt) {
      ++stats_.error_frames;
      if (!sender || sender->queue.empty()) return;
      auto& head = sender->queue.front();
      if (++head.errors > o_.max_retransmissions) {
        ++stats_.rejected;
        send(*sender, hubp::TxConfirm{head.tag, hubp::TxStatus::kErrorLimit, bus_ns(t.end)});
        sender->queue.pop_front();
      }
      return;  // the frame stays at the head of its queue: retransmitted after arbitration
    }
    if (t.kind == Transmission::Kind::kFirstOfDuplicate) {
      // The same frame again, right away (as after an error in the last EOF bit).
      ++stats_.duplicated;
      Transmission again = t;
      again.kind = Transmission::Kind::kNormal;
      const auto d = airtime(transport::frame_bits(t.frame.frame));
      again.end = t.end + d;
      set_validation(again);
      busy_ += d;
      current_ = std::move(again);
    }
  }

  void count_frame(const CanFrame& f) {
    ++stats_.frames;
    stats_.bytes += f.len;
    const std::uint64_t key = (f.extended ? (1ULL << 32) : 0) | f.id;
    auto it = ids_.find(key);
    if (it == ids_.end()) {
      if (ids_.size() >= hubp::kMaxStatsIds) {
        stats_.ids_truncated = true;
        return;
      }
      it = ids_.emplace(key, hubp::IdCounter{f.id, f.extended, 0, 0}).first;
    }
    ++it->second.frames;
    it->second.bytes += f.len;
  }

  struct Delivery {
    Clock::time_point due;
    CanFrame frame;
    std::uint32_t sender = 0;
    std::uint64_t bus_time_ns = 0;
  };

  // Receivers get the frame at `valid` (plus --delay-us); its bus time stays
  // the end of its transmission, as TxConfirm and the captures say.
  void schedule_delivery(const CanFrame& frame, std::uint32_t sender, Clock::time_point valid,
                         Clock::time_point end) {
    deliveries_.push_back(
        Delivery{valid + std::chrono::microseconds(o_.delay_us), frame, sender, bus_ns(end)});
  }

  void release_deliveries(Clock::time_point now) {
    while (!deliveries_.empty() && deliveries_.front().due <= now) {
      Delivery d = deliveries_.front();
      deliveries_.pop_front();
      if (chance(o_.drop)) {
        ++stats_.dropped;
        continue;
      }
      if (d.frame.len > 0 && chance(o_.tamper)) {
        ++stats_.tampered;
        std::uniform_int_distribution<int> index(0, d.frame.len - 1);
        std::uniform_int_distribution<int> mask(1, 255);
        d.frame.data[static_cast<std::size_t>(index(rng_))] ^=
            static_cast<std::uint8_t>(mask(rng_));
      }
      if (!held_ && chance(o_.reorder)) {
        ++stats_.reordered;
        held_ = d;
        // Held until the next frame passes it, or for a while if none comes.
        const auto airtime_us =
            o_.no_airtime ? Clock::duration::zero() : 10 * airtime(transport::frame_bits(d.frame));
        held_until_ = now + std::max<Clock::duration>(std::chrono::milliseconds(1), airtime_us);
        continue;
      }
      deliver(d);
      if (held_) {
        deliver(*held_);
        held_.reset();
      }
    }
    if (held_ && held_until_ <= now) {
      deliver(*held_);
      held_.reset();
    }
  }

  void deliver(const Delivery& d) {
    capture(d);
    const hubp::Deliver msg{d.bus_time_ns, d.frame};
    for (auto& [id, node] : nodes_) {
      if (id == d.sender || !node->hello_done || !node->open) continue;
      if (d.frame.fd && !node->fd) continue;  // a classic controller never takes FD frames
      // Only a write still outstanding means the node is not keeping up; a
      // burst queued within one turn of the loop is just a burst.
      if (node->writing && node->lost_since_write >= o_.max_outbound_messages) {
        if (!o_.quiet) std::fprintf(stderr, "hub: node %u stopped reading, disconnecting\n", id);
        close_node(*node);
        continue;
      }
      if (node->writing && node->pending_messages >= o_.max_outbound_messages) {
        ++stats_.rx_overflow;
        ++node->lost_since_write;
        continue;
      }
      send(*node, msg);
    }
  }

  void capture(const Delivery& d) {
    if (!candump_.is_open() && !pcap_.is_open()) return;
    const std::uint64_t t = wall_start_us_ + d.bus_time_ns / 1000;
    if (candump_.is_open())
      candump_ << transport::format_candump_line({t, o_.interface_name, d.frame}) << '\n';
    if (pcap_.is_open()) {
      const auto rec = transport::pcap_record(t, d.frame);
      pcap_.write(reinterpret_cast<const char*>(rec.data()),
                  static_cast<std::streamsize>(rec.size()));
    }
  }

  // True when no frame waits behind the one on the bus: once it completes the
  // bus goes idle and any lateness becomes a gap.
  bool bus_going_idle() const {
    for (const auto& [id, node] : nodes_) {
      if (!node->open || node->queue.empty()) continue;
      const bool only_current =
          current_ && current_->node_id == id && node->queue.size() == 1 && !current_->tx_done;
      if (!only_current) return false;
    }
    return true;
  }

  void arm_timer() {
    std::optional<Clock::time_point> next;
    const auto consider = [&](Clock::time_point t) {
      if (!next || t < *next) next = t;
    };
    if (current_) {
      const auto& t = *current_;
      const bool normal = t.kind != Transmission::Kind::kCorrupt;
      consider(normal && !t.rx_done ? t.rx_valid : normal && !t.tx_done ? t.tx_valid : t.end);
    }
    if (!deliveries_.empty()) consider(deliveries_.front().due);
    if (held_) consider(held_until_);
    next_due_ = next;
    if (!next) return;
    precise_ = spin_ != Clock::duration::zero() && bus_going_idle();
    // Precise: wake early; the event loop polls from then on (wants_spin) and
    // service() runs the event on time, so a wake-up already due needs no timer.
    const auto wake_at = precise_ ? *next - spin_ : *next;
    if (precise_ && wake_at <= Clock::now()) return;
    if (timer_armed_ && armed_at_ == wake_at) return;
    timer_armed_ = true;
    armed_at_ = wake_at;
    bus_timer_.expires_at(wake_at);
    bus_timer_.async_wait([this](const boost::system::error_code& ec) {
      if (ec || stopping_) return;
      timer_armed_ = false;
      if (!current_) begin(std::max(Clock::now(), bus_free_at_));
      run_bus(Clock::now());
    });
  }

  // ---- counters ----------------------------------------------------------

  hubp::HubStats snapshot() const {
    hubp::HubStats s = stats_;
    s.elapsed_ns = bus_ns(Clock::now());
    s.busy_ns = static_cast<std::uint64_t>(
        std::chrono::duration_cast<std::chrono::nanoseconds>(busy_).count());
    s.nodes = static_cast<std::uint32_t>(nodes_.size());
    s.ids.clear();
    for (const auto& [key, c] : ids_) s.ids.push_back(c);
    std::sort(s.ids.begin(), s.ids.end(), [](const auto& a, const auto& b) {
      return std::tie(a.extended, a.id) < std::tie(b.extended, b.id);
    });
    return s;
  }

  void print_stats() {
    std::fputs(hubp::format_stats(snapshot()).c_str(), stdout);
    std::fflush(stdout);
  }

  void flush_captures() {
    if (candump_.is_open()) candump_.flush();
    if (pcap_.is_open()) pcap_.flush();
  }

  const HubOptions& o_;
  asio::io_context& io_;
  local::acceptor acceptor_;
  asio::steady_timer bus_timer_;
  asio::signal_set signals_;
  transport::BusRates rates_;
  std::uint64_t seed_ = 0;
  std::mt19937_64 rng_;
  bool stopping_ = false;

  std::map<std::uint32_t, std::shared_ptr<Node>> nodes_;
  std::uint32_t last_node_id_ = 0;
  std::uint64_t order_ = 0;

  Clock::time_point start_time_;
  std::uint64_t wall_start_us_ = 0;
  Clock::time_point bus_free_at_;
  std::optional<Transmission> current_;
  std::deque<Delivery> deliveries_;
  std::optional<Delivery> held_;
  Clock::time_point held_until_;
  bool timer_armed_ = false;
  Clock::time_point armed_at_;
  std::optional<Clock::time_point> next_due_;  // the next bus event, if any
  bool precise_ = false;                       // it needs a punctual wake-up
  Clock::time_point listen_until_;             // polling for an answer until then
  Clock::duration spin_{};
  Clock::duration busy_{};

  hubp::HubStats stats_;
  std::map<std::uint64_t, hubp::IdCounter> ids_;
  std::ofstream candump_;
  std::ofstream pcap_;
};

}  // namespace

bool realtime_scheduling() {
  const int policy = ::sched_getscheduler(0);
  return policy == SCHED_FIFO || policy == SCHED_RR;
}

std::optional<std::string> validate_hub_options(const HubOptions& o) {
  if (o.socket_path.empty()) return "--socket is required";
  if (o.socket_path.size() >= sizeof(sockaddr_un{}.sun_path))
    return "--socket path is too long for a Unix socket (" +
           std::to_string(sizeof(sockaddr_un{}.sun_path) - 1) + " bytes at most)";
  if (o.bitrate < 1000 || o.bitrate > 1'000'000) return "--bitrate must be 1000..1000000 bit/s";
  if (o.fd_data_bitrate != 0 && (o.fd_data_bitrate < o.bitrate || o.fd_data_bitrate > 16'000'000))
    return "--fd-data-bitrate must be at least --bitrate and at most 16000000 bit/s";
  const std::pair<const char*, double> probabilities[] = {{"--drop", o.drop},
                                                          {"--duplicate", o.duplicate},
                                                          {"--reorder", o.reorder},
                                                          {"--corrupt", o.corrupt},
                                                          {"--tamper", o.tamper}};
  for (const auto& [name, p] : probabilities)
    if (!valid_probability(p)) return std::string(name) + " must be a probability in [0, 1]";
  if (o.corrupt >= 1.0) return "--corrupt 1 would retransmit every frame forever";
  if (o.delay_us > 10'000'000) return "--delay-us must be at most 10000000 (10 s)";
  if (o.interface_name.empty() || o.interface_name.size() > 15 ||
      o.interface_name.find_first_of(" \t\n#()") != std::string::npos)
    return "--interface must be 1..15 characters without spaces, '#' or parentheses";
  if (o.max_nodes == 0 || o.max_queued_frames == 0 || o.max_outbound_messages == 0)
    return "hub caps must be positive";
  if (o.spin_us.value_or(0) > 100'000) return "--spin-us must be at most 100000";
  return std::nullopt;
}

int run_hub(const HubOptions& options) {
  if (auto why = validate_hub_options(options)) {
    std::fprintf(stderr, "hub: %s\n", why->c_str());
    return 1;
  }
  // Timer wake-ups are the hub's clock: ask the kernel for 1 ns slack instead
  // of the default 50 us, restored on return.
  const int old_slack = ::prctl(PR_GET_TIMERSLACK, 0, 0, 0, 0);
  ::prctl(PR_SET_TIMERSLACK, 1UL, 0, 0, 0);
  struct sigaction old_pipe {};
  struct sigaction ignore {};
  ignore.sa_handler = SIG_IGN;
  ::sigaction(SIGPIPE, &ignore, &old_pipe);

  int rc = 0;
  {
    asio::io_context io(1);
    Hub hub(options, io);
    rc = hub.start();
    if (rc == 0) {
      // io.run(), except that around a turnaround the hub polls instead of
      // sleeping (Hub::wants_spin), and runs bus events the moment they are due.
      while (!io.stopped()) {
        const auto now = Clock::now();
        if (hub.wants_spin(now)) {
          io.poll();
          hub.service(Clock::now());
        } else {
          io.run_one();
        }
      }
      hub.finish();
    }
  }
  ::sigaction(SIGPIPE, &old_pipe, nullptr);
  if (old_slack > 0) ::prctl(PR_SET_TIMERSLACK, static_cast<unsigned long>(old_slack), 0, 0, 0);
  return rc;
}

}  // namespace tollgate::bus
