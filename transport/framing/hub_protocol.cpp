#include "transport/framing/hub_protocol.hpp"

#include <algorithm>
#include <cstdio>

namespace tollgate::transport::hub {
namespace {

constexpr std::uint8_t kFrameFd = 0x01;
constexpr std::uint8_t kFrameBrs = 0x02;
constexpr std::uint8_t kHelloFd = 0x01;
constexpr std::uint8_t kHelloListenOnly = 0x02;
constexpr std::uint8_t kWelcomeAirtime = 0x01;
constexpr std::uint8_t kStatsTruncated = 0x01;
constexpr std::size_t kStatsEntry = 4 + 8 + 8;
constexpr std::size_t kMaxErrorText = 255;

class Writer {
 public:
  explicit Writer(std::vector<std::uint8_t>& out) : out_(out) {}
  void u8(std::uint8_t v) { out_.push_back(v); }
  void u16(std::uint16_t v) { le(v, 2); }
  void u32(std::uint32_t v) { le(v, 4); }
  void u64(std::uint64_t v) { le(v, 8); }
  void bytes(const std::uint8_t* p, std::size_t n) { out_.insert(out_.end(), p, p + n); }
  void text(const std::string& s, std::size_t cap) {
    const std::size_t n = std::min(s.size(), cap);
    u8(static_cast<std::uint8_t>(n));
    bytes(reinterpret_cast<const std::uint8_t*>(s.data()), n);
  }

 private:
  void le(std::uint64_t v, int n) {
    for (int i = 0; i < n; ++i) out_.push_back(static_cast<std::uint8_t>(v >> (8 * i)));
  }
  std::vector<std::uint8_t>& out_;
};

// Bounds-checked little-endian reader: a failed read leaves `ok` false and
// returns zero; callers check `ok` once at the end.
class Reader {
 public:
  explicit Reader(std::span<const std::uint8_t> in) : in_(in) {}
  std::uint8_t u8() { return static_cast<std::uint8_t>(le(1)); }
  std::uint16_t u16() { return static_cast<std::uint16_t>(le(2)); }
  std::uint32_t u32() { return static_cast<std::uint32_t>(le(4)); }
  std::uint64_t u64() { return le(8); }
  std::span<const std::uint8_t> bytes(std::size_t n) {
    if (in_.size() < n) {
      ok_ = false;
      in_ = {};
      return {};
    }
    auto r = in_.first(n);
    in_ = in_.subspan(n);
    return r;
  }
  std::size_t remaining() const { return in_.size(); }
  bool ok() const { return ok_; }
  bool done() const { return ok_ && in_.empty(); }

 private:
  std::uint64_t le(std::size_t n) {
    if (in_.size() < n) {
      ok_ = false;
      in_ = {};
      return 0;
    }
    std::uint64_t v = 0;
    for (std::size_t i = 0; i < n; ++i) v |= std::uint64_t{in_[i]} << (8 * i);
    in_ = in_.subspan(n);
    return v;
  }
  std::span<const std::uint8_t> in_;
  bool ok_ = true;
};

std::uint32_t id_field(std::uint32_t id, bool extended) {
  return extended ? (id & 0x1FFFFFFFU) | kExtendedFlag : id & 0x7FFU;
}

void put_frame(Writer& w, const CanFrame& f) {
  w.u32(id_field(f.id, f.extended));
  w.u8(static_cast<std::uint8_t>((f.fd ? kFrameFd : 0) | (f.brs ? kFrameBrs : 0)));
  const std::uint8_t len = std::min<std::uint8_t>(f.len, f.fd ? 64 : 8);
  w.u8(len);
  w.bytes(f.data.data(), len);
}

bool get_frame(Reader& r, CanFrame& f) {
  const std::uint32_t id = r.u32();
  const std::uint8_t flags = r.u8();
  const std::uint8_t len = r.u8();
  if (!r.ok() || (flags & ~(kFrameFd | kFrameBrs)) != 0) return false;
  if ((id & 0x60000000U) != 0) return false;
  f.extended = (id & kExtendedFlag) != 0;
  f.id = id & ~kExtendedFlag;
  f.fd = (flags & kFrameFd) != 0;
  f.brs = (flags & kFrameBrs) != 0;
  f.len = len;
  if (!is_valid_frame(f)) return false;
  const auto data = r.bytes(len);
  if (!r.ok()) return false;
  std::copy(data.begin(), data.end(), f.data.begin());
  return true;
}

std::string get_text(Reader& r) {
  const std::uint8_t n = r.u8();
  const auto b = r.bytes(n);
  return std::string(reinterpret_cast<const char*>(b.data()), b.size());
}

struct BodyEncoder {
  Writer& w;
  void operator()(const Hello& m) {
    w.u8(static_cast<std::uint8_t>(Type::kHello));
    w.u8(m.version);
    w.u8(static_cast<std::uint8_t>((m.fd ? kHelloFd : 0) | (m.listen_only ? kHelloListenOnly : 0)));
    w.text(m.name, kMaxNodeName);
  }
  void operator()(const Welcome& m) {
    w.u8(static_cast<std::uint8_t>(Type::kWelcome));
    w.u8(m.version);
    w.u8(m.airtime ? kWelcomeAirtime : 0);
    w.u32(m.node_id);
    w.u32(m.bitrate);
    w.u32(m.fd_data_bitrate);
  }
  void operator()(const Transmit& m) {
    w.u8(static_cast<std::uint8_t>(Type::kTransmit));
    w.u32(m.tag);
    put_frame(w, m.frame);
  }
  void operator()(const Deliver& m) {
    w.u8(static_cast<std::uint8_t>(Type::kDeliver));
    w.u64(m.bus_time_ns);
    put_frame(w, m.frame);
  }
  void operator()(const TxConfirm& m) {
    w.u8(static_cast<std::uint8_t>(Type::kTxConfirm));
    w.u32(m.tag);
    w.u8(static_cast<std::uint8_t>(m.status));
    w.u64(m.bus_time_ns);
  }
  void operator()(const StatsRequest&) { w.u8(static_cast<std::uint8_t>(Type::kStatsRequest)); }
  void operator()(const HubStats& m) {
    w.u8(static_cast<std::uint8_t>(Type::kStats));
    for (std::uint64_t v :
         {m.elapsed_ns, m.busy_ns, m.frames, m.bytes, m.error_frames, m.dropped, m.duplicated,
          m.reordered, m.tampered, m.rejected, m.rx_overflow, m.nodes_connected})
      w.u64(v);
    w.u32(m.nodes);
    const std::size_t count = std::min(m.ids.size(), kMaxStatsIds);
    const bool truncated = m.ids_truncated || count < m.ids.size();
    w.u8(truncated ? kStatsTruncated : 0);
    w.u16(static_cast<std::uint16_t>(count));
    for (std::size_t i = 0; i < count; ++i) {
      w.u32(id_field(m.ids[i].id, m.ids[i].extended));
      w.u64(m.ids[i].frames);
      w.u64(m.ids[i].bytes);
    }
  }
  void operator()(const ErrorMessage& m) {
    w.u8(static_cast<std::uint8_t>(Type::kError));
    w.u8(m.code);
    w.text(m.text, kMaxErrorText);
  }
};

}  // namespace

bool is_valid_frame(const CanFrame& f) {
  if (f.extended ? f.id > 0x1FFFFFFFU : f.id > 0x7FFU) return false;
  if (f.fd) return is_valid_fd_length(f.len);
  return f.len <= 8 && !f.brs;
}

void encode_to(const Message& message, std::vector<std::uint8_t>& out) {
  const std::size_t start = out.size();
  out.push_back(0);
  out.push_back(0);
  Writer w(out);
  std::visit(BodyEncoder{w}, message);
  const std::size_t body = out.size() - start - 2;  // < 65536: every body is capped
  out[start] = static_cast<std::uint8_t>(body);
  out[start + 1] = static_cast<std::uint8_t>(body >> 8);
}

std::vector<std::uint8_t> encode(const Message& message) {
  std::vector<std::uint8_t> out;
  encode_to(message, out);
  return out;
}

std::variant<Message, LinkError> decode_body(std::span<const std::uint8_t> body) {
  constexpr auto bad = LinkError::kMalformedFrame;
  Reader r(body);
  const std::uint8_t type = r.u8();
  if (!r.ok()) return bad;
  switch (static_cast<Type>(type)) {
    case Type::kHello: {
      Hello m;
      m.version = r.u8();
      const std::uint8_t flags = r.u8();
      const std::uint8_t n = r.u8();
      if (!r.ok() || (flags & ~(kHelloFd | kHelloListenOnly)) != 0 || n > kMaxNodeName) return bad;
      m.fd = (flags & kHelloFd) != 0;
      m.listen_only = (flags & kHelloListenOnly) != 0;
      const auto name = r.bytes(n);
      m.name.assign(reinterpret_cast<const char*>(name.data()), name.size());
      if (!r.done()) return bad;
      return Message{std::move(m)};
    }
    case Type::kWelcome: {
      Welcome m;
      m.version = r.u8();
      const std::uint8_t flags = r.u8();
      m.node_id = r.u32();
      m.bitrate = r.u32();
      m.fd_data_bitrate = r.u32();
      if (!r.done() || (flags & ~kWelcomeAirtime) != 0) return bad;
      m.airtime = (flags & kWelcomeAirtime) != 0;
      return Message{m};
    }
    case Type::kTransmit: {
      Transmit m;
      m.tag = r.u32();
      if (!get_frame(r, m.frame) || !r.done()) return bad;
      return Message{m};
    }
    case Type::kDeliver: {
      Deliver m;
      m.bus_time_ns = r.u64();
      if (!get_frame(r, m.frame) || !r.done()) return bad;
      return Message{m};
    }
    case Type::kTxConfirm: {
      TxConfirm m;
      m.tag = r.u32();
      const std::uint8_t status = r.u8();
      m.bus_time_ns = r.u64();
      if (!r.done() || status > static_cast<std::uint8_t>(TxStatus::kRejected)) return bad;
      m.status = static_cast<TxStatus>(status);
      return Message{m};
    }
    case Type::kStatsRequest:
      if (!r.done()) return bad;
      return Message{StatsRequest{}};
    case Type::kStats: {
      HubStats m;
      for (std::uint64_t* v : {&m.elapsed_ns, &m.busy_ns, &m.frames, &m.bytes, &m.error_frames,
                               &m.dropped, &m.duplicated, &m.reordered, &m.tampered, &m.rejected,
                               &m.rx_overflow, &m.nodes_connected})
        *v = r.u64();
      m.nodes = r.u32();
      const std::uint8_t flags = r.u8();
      const std::uint16_t count = r.u16();
      if (!r.ok() || (flags & ~kStatsTruncated) != 0 || count > kMaxStatsIds ||
          r.remaining() != count * kStatsEntry)
        return bad;
      m.ids_truncated = (flags & kStatsTruncated) != 0;
      m.ids.reserve(count);
      for (std::size_t i = 0; i < count; ++i) {
        IdCounter c;
        const std::uint32_t id = r.u32();
        if ((id & 0x60000000U) != 0) return bad;
        c.extended = (id & kExtendedFlag) != 0;
        c.id = id & ~kExtendedFlag;
        if (!c.extended && c.id > 0x7FFU) return bad;
        c.frames = r.u64();
        c.bytes = r.u64();
        m.ids.push_back(c);
      }
      if (!r.done()) return bad;
      return Message{std::move(m)};
    }
    case Type::kError: {
      ErrorMessage m;
      m.code = r.u8();
      m.text = get_text(r);
      if (!r.done()) return bad;
      return Message{std::move(m)};
    }
  }
  return bad;
}

void StreamDecoder::feed(std::span<const std::uint8_t> bytes) {
  if (failed_) return;
  // Drop what was consumed before growing, so the buffer holds at most one
  // partial message plus this call's bytes.
  if (pos_ > 0) {
    buffer_.erase(buffer_.begin(), buffer_.begin() + static_cast<std::ptrdiff_t>(pos_));
    pos_ = 0;
  }
  buffer_.insert(buffer_.end(), bytes.begin(), bytes.end());
}

std::optional<std::variant<Message, LinkError>> StreamDecoder::next() {
  if (failed_) return std::variant<Message, LinkError>{*failed_};
  const std::size_t avail = buffer_.size() - pos_;
  if (avail < 2) return std::nullopt;
  const std::size_t len = std::size_t{buffer_[pos_]} | (std::size_t{buffer_[pos_ + 1]} << 8);
  if (len == 0 || len > max_body_) {
    failed_ = len == 0 ? LinkError::kMalformedFrame : LinkError::kTooLarge;
    buffer_.clear();
    pos_ = 0;
    return std::variant<Message, LinkError>{*failed_};
  }
  if (avail < 2 + len) return std::nullopt;
  const std::span<const std::uint8_t> body(buffer_.data() + pos_ + 2, len);
  pos_ += 2 + len;
  auto result = decode_body(body);
  if (pos_ == buffer_.size()) {
    buffer_.clear();
    pos_ = 0;
  }
  return result;
}

std::string format_stats(const HubStats& s) {
  std::string out;
  char line[256];
  const double elapsed = static_cast<double>(s.elapsed_ns) / 1e9;
  const double busy = static_cast<double>(s.busy_ns) / 1e9;
  std::snprintf(line, sizeof line,
                "hub: %.3f s, bus busy %.3f s (%.1f%%), %llu frames, %llu data bytes, %u nodes "
                "(%llu connected in total)\n",
                elapsed, busy, elapsed > 0 ? 100.0 * busy / elapsed : 0.0,
                static_cast<unsigned long long>(s.frames), static_cast<unsigned long long>(s.bytes),
                s.nodes, static_cast<unsigned long long>(s.nodes_connected));
  out += line;
  std::snprintf(
      line, sizeof line,
      "hub: faults: %llu error frames, %llu dropped, %llu duplicated, %llu reordered, "
      "%llu tampered; %llu rejected, %llu rx overflow\n",
      static_cast<unsigned long long>(s.error_frames), static_cast<unsigned long long>(s.dropped),
      static_cast<unsigned long long>(s.duplicated), static_cast<unsigned long long>(s.reordered),
      static_cast<unsigned long long>(s.tampered), static_cast<unsigned long long>(s.rejected),
      static_cast<unsigned long long>(s.rx_overflow));
  out += line;
  for (const IdCounter& c : s.ids) {
    if (c.extended)
      std::snprintf(line, sizeof line, "hub:   id %08X  %10llu frames  %12llu bytes\n", c.id,
                    static_cast<unsigned long long>(c.frames),
                    static_cast<unsigned long long>(c.bytes));
    else
      std::snprintf(line, sizeof line, "hub:   id %03X       %10llu frames  %12llu bytes\n", c.id,
                    static_cast<unsigned long long>(c.frames),
                    static_cast<unsigned long long>(c.bytes));
    out += line;
  }
  if (s.ids_truncated) out += "hub:   (more identifiers than the counter table holds)\n";
  return out;
}

}  // namespace tollgate::transport::hub
