// The hub's socket protocol: encode/decode round trips, strictness, caps, and
// a stream cut at every possible point.
#include <doctest/doctest.h>

#include <cstdint>
#include <random>
#include <vector>

#include "transport/framing/hub_protocol.hpp"

namespace {

using namespace tollgate::transport;
using namespace tollgate::transport::hub;

CanFrame frame(std::uint32_t id, std::size_t len, bool extended = false, bool fd = false,
               bool brs = false) {
  CanFrame f;
  f.id = id;
  f.extended = extended;
  f.fd = fd;
  f.brs = brs;
  f.len = static_cast<std::uint8_t>(len);
  for (std::size_t i = 0; i < len; ++i) f.data[i] = static_cast<std::uint8_t>(0xA0 + i);
  return f;
}

bool same(const CanFrame& a, const CanFrame& b) {
  if (a.id != b.id || a.extended != b.extended || a.fd != b.fd || a.brs != b.brs || a.len != b.len)
    return false;
  for (std::size_t i = 0; i < a.len; ++i)
    if (a.data[i] != b.data[i]) return false;
  return true;
}

Message decode_whole(const std::vector<std::uint8_t>& wire) {
  REQUIRE(wire.size() >= 3);
  const std::size_t len = wire[0] | (std::size_t{wire[1]} << 8);
  REQUIRE(len == wire.size() - 2);
  auto r = decode_body(std::span<const std::uint8_t>(wire.data() + 2, len));
  REQUIRE(r.index() == 0);
  return std::get<0>(r);
}

LinkError decode_error(std::vector<std::uint8_t> body) {
  auto r = decode_body(body);
  REQUIRE(r.index() == 1);
  return std::get<1>(r);
}

HubStats sample_stats() {
  HubStats s;
  s.elapsed_ns = 123456789;
  s.busy_ns = 23456789;
  s.frames = 1000;
  s.bytes = 8000;
  s.error_frames = 3;
  s.dropped = 4;
  s.duplicated = 5;
  s.reordered = 6;
  s.tampered = 7;
  s.rejected = 8;
  s.rx_overflow = 9;
  s.nodes_connected = 10;
  s.nodes = 2;
  s.ids = {{0x6A0, false, 900, 7200}, {0x6A8, false, 100, 800}, {0x18DAF110, true, 1, 8}};
  return s;
}

std::vector<Message> sample_messages() {
  std::vector<Message> m;
  m.push_back(Hello{kProtocolVersion, true, false, "node-a"});
  m.push_back(Hello{kProtocolVersion, false, true, ""});
  m.push_back(Welcome{kProtocolVersion, true, 7, 500000, 2000000});
  m.push_back(Transmit{0xDEADBEEF, frame(0x6A0, 8)});
  m.push_back(Transmit{1, frame(0x18DAF110, 64, true, true, true)});
  m.push_back(Transmit{2, frame(0x7FF, 0)});
  m.push_back(Deliver{0x0123456789ABCDEFULL, frame(0x6A8, 12, false, true, false)});
  m.push_back(TxConfirm{42, TxStatus::kErrorLimit, 99});
  m.push_back(StatsRequest{});
  m.push_back(sample_stats());
  m.push_back(ErrorMessage{7, "too many nodes"});
  return m;
}

}  // namespace

TEST_CASE("every hub message survives an encode/decode round trip") {
  for (const Message& m : sample_messages()) {
    const auto wire = encode(m);
    const Message back = decode_whole(wire);
    REQUIRE(back.index() == m.index());
    if (auto* h = std::get_if<Hello>(&m)) {
      const auto& b = std::get<Hello>(back);
      CHECK(b.fd == h->fd);
      CHECK(b.listen_only == h->listen_only);
      CHECK(b.name == h->name);
    } else if (auto* w = std::get_if<Welcome>(&m)) {
      const auto& b = std::get<Welcome>(back);
      CHECK(b.node_id == w->node_id);
      CHECK(b.bitrate == w->bitrate);
      CHECK(b.fd_data_bitrate == w->fd_data_bitrate);
      CHECK(b.airtime == w->airtime);
    } else if (auto* t = std::get_if<Transmit>(&m)) {
      CHECK(std::get<Transmit>(back).tag == t->tag);
      CHECK(same(std::get<Transmit>(back).frame, t->frame));
    } else if (auto* d = std::get_if<Deliver>(&m)) {
      CHECK(std::get<Deliver>(back).bus_time_ns == d->bus_time_ns);
      CHECK(same(std::get<Deliver>(back).frame, d->frame));
    } else if (auto* c = std::get_if<TxConfirm>(&m)) {
      CHECK(std::get<TxConfirm>(back).tag == c->tag);
      CHECK(std::get<TxConfirm>(back).status == c->status);
      CHECK(std::get<TxConfirm>(back).bus_time_ns == c->bus_time_ns);
    } else if (auto* s = std::get_if<HubStats>(&m)) {
      const auto& b = std::get<HubStats>(back);
      CHECK(b.elapsed_ns == s->elapsed_ns);
      CHECK(b.busy_ns == s->busy_ns);
      CHECK(b.rx_overflow == s->rx_overflow);
      CHECK(b.nodes == s->nodes);
      REQUIRE(b.ids.size() == s->ids.size());
      for (std::size_t i = 0; i < b.ids.size(); ++i) {
        CHECK(b.ids[i].id == s->ids[i].id);
        CHECK(b.ids[i].extended == s->ids[i].extended);
        CHECK(b.ids[i].frames == s->ids[i].frames);
        CHECK(b.ids[i].bytes == s->ids[i].bytes);
      }
    } else if (auto* e = std::get_if<ErrorMessage>(&m)) {
      CHECK(std::get<ErrorMessage>(back).code == e->code);
      CHECK(std::get<ErrorMessage>(back).text == e->text);
    }
  }
}

TEST_CASE("a Transmit is laid out byte by byte as documented") {
  const auto wire = encode(Transmit{0x04030201, frame(0x123, 2)});
  const std::vector<std::uint8_t> want = {
      13,   0,                 // length: type + 12 bytes
      3,                       // Transmit
      0x01, 0x02, 0x03, 0x04,  // tag, little-endian
      0x23, 0x01, 0x00, 0x00,  // id 0x123, little-endian, bit 31 clear: 11-bit
      0x00,                    // flags: classic
      2,                       // length
      0xA0, 0xA1};
  CHECK(wire == want);
  const auto ext = encode(Transmit{0, frame(0x1ABCDEF0, 0, true, true, true)});
  CHECK(ext[7] == 0xF0);
  CHECK(ext[10] == (0x1A | 0x80));  // extended flag in bit 31
  CHECK(ext[11] == 0x03);           // FD | BRS
}

TEST_CASE("the largest node message fits the node cap exactly") {
  const auto wire = encode(Transmit{0, frame(0x1FFFFFFF, 64, true, true, true)});
  CHECK(wire.size() - 2 == kMaxNodeMessage);
}

TEST_CASE("over-long names and id lists are truncated to their caps by the encoder") {
  Hello h;
  h.name = std::string(100, 'x');
  const auto back = std::get<Hello>(decode_whole(encode(h)));
  CHECK(back.name.size() == kMaxNodeName);

  HubStats s;
  for (std::uint32_t i = 0; i < kMaxStatsIds + 10; ++i) s.ids.push_back({i, true, 1, 1});
  const auto wire = encode(s);
  CHECK(wire.size() - 2 <= kMaxHubMessage);
  const auto b = std::get<HubStats>(decode_whole(wire));
  CHECK(b.ids.size() == kMaxStatsIds);
  CHECK(b.ids_truncated);
}

TEST_CASE("invalid frames and bodies are rejected as malformed") {
  const auto body_of = [](const Message& m) {
    auto wire = encode(m);
    return std::vector<std::uint8_t>(wire.begin() + 2, wire.end());
  };
  auto t = body_of(Transmit{1, frame(0x123, 8)});
  SUBCASE("unknown type") {
    CHECK(decode_error({0x42}) == LinkError::kMalformedFrame);
  }
  SUBCASE("empty body") {
    CHECK(decode_error({}) == LinkError::kMalformedFrame);
  }
  SUBCASE("classic frame longer than 8") {
    t[10] = 9;
    t.push_back(0);
    CHECK(decode_error(t) == LinkError::kMalformedFrame);
  }
  SUBCASE("11-bit id out of range") {
    t[6] = 0x08;  // id 0x823
    CHECK(decode_error(t) == LinkError::kMalformedFrame);
  }
  SUBCASE("reserved id bits") {
    t[8] = 0x40;
    CHECK(decode_error(t) == LinkError::kMalformedFrame);
  }
  SUBCASE("BRS without FD") {
    t[9] = 0x02;
    CHECK(decode_error(t) == LinkError::kMalformedFrame);
  }
  SUBCASE("unknown frame flag") {
    t[9] = 0x04;
    CHECK(decode_error(t) == LinkError::kMalformedFrame);
  }
  SUBCASE("FD length that is no DLC step") {
    auto fd = body_of(Transmit{1, frame(0x123, 12, false, true)});
    fd[10] = 10;
    fd.resize(fd.size() - 2);
    CHECK(decode_error(fd) == LinkError::kMalformedFrame);
  }
  SUBCASE("data shorter than the length says") {
    t.pop_back();
    CHECK(decode_error(t) == LinkError::kMalformedFrame);
  }
  SUBCASE("trailing bytes") {
    t.push_back(0);
    CHECK(decode_error(t) == LinkError::kMalformedFrame);
  }
  SUBCASE("Hello name over the cap") {
    std::vector<std::uint8_t> h = {1, 1, 0, 33};
    h.resize(h.size() + 33, 'a');
    CHECK(decode_error(h) == LinkError::kMalformedFrame);
  }
  SUBCASE("TxConfirm with an unknown status") {
    auto c = body_of(TxConfirm{1, TxStatus::kSent, 0});
    c[5] = 3;
    CHECK(decode_error(c) == LinkError::kMalformedFrame);
  }
  SUBCASE("Stats whose count disagrees with its length") {
    auto s = body_of(sample_stats());
    s[1 + 96 + 4 + 1] = 4;  // count 3 -> 4
    CHECK(decode_error(s) == LinkError::kMalformedFrame);
  }
}

TEST_CASE("a message stream cut at every point decodes to the same messages") {
  std::vector<std::uint8_t> stream;
  const auto messages = sample_messages();
  for (const auto& m : messages) encode_to(m, stream);
  for (std::size_t cut = 0; cut <= stream.size(); ++cut) {
    StreamDecoder d(kMaxHubMessage);
    std::vector<Message> out;
    const auto drain = [&] {
      while (auto r = d.next()) {
        REQUIRE(r->index() == 0);
        out.push_back(std::get<0>(*r));
      }
    };
    d.feed(std::span<const std::uint8_t>(stream.data(), cut));
    drain();
    d.feed(std::span<const std::uint8_t>(stream.data() + cut, stream.size() - cut));
    drain();
    CAPTURE(cut);
    REQUIRE(out.size() == messages.size());
    for (std::size_t i = 0; i < out.size(); ++i) CHECK(out[i].index() == messages[i].index());
    CHECK(d.buffered() == 0);
  }
}

TEST_CASE("a stream fed one byte at a time decodes the same") {
  std::vector<std::uint8_t> stream;
  for (const auto& m : sample_messages()) encode_to(m, stream);
  StreamDecoder d(kMaxHubMessage);
  std::size_t count = 0;
  for (std::uint8_t b : stream) {
    d.feed(std::span<const std::uint8_t>(&b, 1));
    while (auto r = d.next()) {
      REQUIRE(r->index() == 0);
      ++count;
    }
    CHECK(d.buffered() <= kMaxHubMessage + 2);
  }
  CHECK(count == sample_messages().size());
}

TEST_CASE("a malformed body is skipped and the stream stays in sync") {
  std::vector<std::uint8_t> stream = {2, 0, 0x42, 0x00};  // unknown type
  encode_to(StatsRequest{}, stream);
  StreamDecoder d(kMaxNodeMessage);
  d.feed(stream);
  auto first = d.next();
  REQUIRE(first);
  REQUIRE(first->index() == 1);
  CHECK(std::get<1>(*first) == LinkError::kMalformedFrame);
  auto second = d.next();
  REQUIRE(second);
  REQUIRE(second->index() == 0);
  CHECK(std::holds_alternative<StatsRequest>(std::get<0>(*second)));
  CHECK_FALSE(d.failed());
}

TEST_CASE("a length over the cap fails the stream for good without buffering it") {
  StreamDecoder d(kMaxNodeMessage);
  const std::uint8_t huge[] = {0xFF, 0xFF, 7};
  d.feed(huge);
  auto r = d.next();
  REQUIRE(r);
  REQUIRE(r->index() == 1);
  CHECK(std::get<1>(*r) == LinkError::kTooLarge);
  CHECK(d.failed());
  CHECK(d.buffered() == 0);
  // Even a good message afterwards cannot be trusted: the framing is lost.
  d.feed(encode(StatsRequest{}));
  auto again = d.next();
  REQUIRE(again);
  CHECK(again->index() == 1);
  CHECK(d.buffered() == 0);
}

TEST_CASE("a zero length is malformed and fails the stream") {
  StreamDecoder d(kMaxNodeMessage);
  const std::uint8_t zero[] = {0, 0};
  d.feed(zero);
  auto r = d.next();
  REQUIRE(r);
  REQUIRE(r->index() == 1);
  CHECK(std::get<1>(*r) == LinkError::kMalformedFrame);
  CHECK(d.failed());
}

TEST_CASE("random bytes never crash the decoder and never exceed its bound") {
  std::mt19937 rng(5);
  for (int round = 0; round < 2000; ++round) {
    StreamDecoder d(kMaxNodeMessage);
    std::vector<std::uint8_t> junk(rng() % 300);
    for (auto& b : junk) b = static_cast<std::uint8_t>(rng());
    d.feed(junk);
    int steps = 0;
    while (auto r = d.next()) {
      if (d.failed() || ++steps > 1000) break;
    }
    CHECK(d.buffered() <= kMaxNodeMessage + 2);
  }
}

TEST_CASE("stats print one line per identifier") {
  const std::string text = format_stats(sample_stats());
  CHECK(text.find("1000 frames") != std::string::npos);
  CHECK(text.find("id 6A0") != std::string::npos);
  CHECK(text.find("id 18DAF110") != std::string::npos);
  CHECK(text.find("3 error frames") != std::string::npos);
}
