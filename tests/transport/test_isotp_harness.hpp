// A simulated two-node CAN bus for the ISO-TP tests: each frame one node hands
// out is delivered to the other and confirmed after a fixed airtime, and time
// jumps straight to the next deadline when nothing moves. No clock, no sleeps.
#pragma once

#include <algorithm>
#include <cstdint>
#include <functional>
#include <initializer_list>
#include <optional>
#include <vector>

#include "transport/framing/isotp.hpp"

namespace tollgate::transport::test {

inline IsoTpConfig classic_config(std::uint32_t tx, std::uint32_t rx) {
  IsoTpConfig c;
  c.tx_id = tx;
  c.rx_id = rx;
  return c;
}

inline IsoTpConfig fd_config(std::uint32_t tx, std::uint32_t rx, std::uint8_t tx_dl = 64) {
  IsoTpConfig c = classic_config(tx, rx);
  c.fd = true;
  c.tx_dl = tx_dl;
  return c;
}

// The mirror image of `c`: what the peer on the other end of the channel uses.
inline IsoTpConfig peer_of(IsoTpConfig c) {
  std::swap(c.tx_id, c.rx_id);
  std::swap(c.tx_address, c.rx_address);
  return c;
}

inline CanFrame make_frame(std::uint32_t id, std::initializer_list<std::uint8_t> bytes,
                           bool fd = false) {
  CanFrame f;
  f.id = id;
  f.fd = fd;
  f.len = static_cast<std::uint8_t>(bytes.size());
  std::copy(bytes.begin(), bytes.end(), f.data.begin());
  return f;
}

inline std::vector<std::uint8_t> pattern(std::size_t n, std::uint32_t seed = 1) {
  std::vector<std::uint8_t> v(n);
  std::uint32_t x = seed * 2654435761U + 1;
  for (auto& b : v) {
    x ^= x << 13;
    x ^= x >> 17;
    x ^= x << 5;
    b = static_cast<std::uint8_t>(x);
  }
  return v;
}

struct Node {
  explicit Node(const IsoTpConfig& c) : ch(c) {}

  IsoTpChannel ch;
  std::vector<std::vector<std::uint8_t>> received;
  std::vector<LinkError> rx_errors;
  std::vector<LinkError> tx_errors;
  std::size_t sent = 0;

  void drain() {
    while (auto ev = ch.take_event()) {
      switch (ev->kind) {
        case IsoTpEvent::Kind::kReceived:
          received.push_back(std::move(ev->message));
          break;
        case IsoTpEvent::Kind::kSent:
          ++sent;
          break;
        case IsoTpEvent::Kind::kSendFailed:
          tx_errors.push_back(ev->error);
          break;
        case IsoTpEvent::Kind::kReceiveFailed:
          rx_errors.push_back(ev->error);
          break;
      }
    }
  }
};

// What the bus does with one frame a node handed out.
enum class Fate {
  kDeliver,  // received by the other node, then confirmed to the sender
  kDrop,     // confirmed to the sender, never received (lost after transmission)
  kHold,     // never confirmed, never received (stuck in the controller)
  kFail,     // the port reports a transmit failure
};

struct Bus {
  Bus(Node& a_, Node& b_) : a(a_), b(b_) {}

  Node& a;
  Node& b;
  Micros now = 0;
  Micros airtime_us = 100;
  // Sees (and may alter) every frame before its fate is applied.
  std::function<Fate(CanFrame&, const Node& from)> tap;
  // Every frame handed out: who sent it and when it was handed out.
  struct Record {
    CanFrame frame;
    bool from_a;
    Micros at;
  };
  bool record = false;
  std::vector<Record> log;
  std::size_t frames_from_a = 0;
  std::size_t frames_from_b = 0;

  // Moves frames and time until nothing is left to do (or time passes `limit`).
  void run(Micros limit = ~Micros{0}) {
    for (;;) {
      const bool moved = step(a, b) | step(b, a);
      a.drain();
      b.drain();
      if (moved) continue;
      std::optional<Micros> d = a.ch.next_deadline();
      if (auto db = b.ch.next_deadline(); db && (!d || *db < *d)) d = db;
      if (!d || *d > limit) return;
      now = std::max(now, *d);
      a.ch.poll(now);
      b.ch.poll(now);
      a.drain();
      b.drain();
    }
  }

 private:
  bool step(Node& src, Node& dst) {
    bool moved = false;
    while (auto tx = src.ch.next_frame(now)) {
      moved = true;
      const bool from_a = &src == &a;
      ++(from_a ? frames_from_a : frames_from_b);
      if (record) log.push_back({tx->frame, from_a, now});
      const Fate fate = tap ? tap(tx->frame, src) : Fate::kDeliver;
      if (fate == Fate::kHold) continue;
      now += airtime_us;
      if (fate == Fate::kFail) {
        src.ch.on_tx_failed(tx->ticket, now);
        continue;
      }
      if (fate == Fate::kDeliver) dst.ch.on_frame(tx->frame, now);
      src.ch.on_tx_confirmed(tx->ticket, now);
    }
    return moved;
  }
};

}  // namespace tollgate::transport::test
