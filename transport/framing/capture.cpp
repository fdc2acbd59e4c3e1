#include "transport/framing/capture.hpp"

#include <cstdio>

#include "transport/framing/byte_reader.hpp"

namespace tollgate::transport {
namespace {

constexpr char kHex[] = "0123456789ABCDEF";
constexpr std::uint32_t kEffFlag = 0x80000000U;  // CAN_EFF_FLAG
constexpr std::uint32_t kRtrFlag = 0x40000000U;  // CAN_RTR_FLAG
constexpr std::uint32_t kErrFlag = 0x20000000U;  // CAN_ERR_FLAG
constexpr std::uint8_t kCanfdBrs = 0x01;
constexpr std::uint8_t kCanfdFdf = 0x04;
constexpr std::size_t kCanMtu = 16;
constexpr std::size_t kCanfdMtu = 72;
constexpr std::size_t kMaxInterface = 16;

int hex_value(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  return -1;
}

bool parse_decimal(std::string_view s, std::uint64_t& out) {
  if (s.empty() || s.size() > 19) return false;
  std::uint64_t v = 0;
  for (char c : s) {
    if (c < '0' || c > '9') return false;
    v = v * 10 + static_cast<std::uint64_t>(c - '0');
  }
  out = v;
  return true;
}

bool parse_hex_u32(std::string_view s, std::uint32_t& out) {
  if (s.empty() || s.size() > 8) return false;
  std::uint32_t v = 0;
  for (char c : s) {
    const int h = hex_value(c);
    if (h < 0) return false;
    v = (v << 4) | static_cast<std::uint32_t>(h);
  }
  out = v;
  return true;
}

// Hex data bytes, optionally separated by '.', as cansend and canplayer accept.
bool parse_data(std::string_view s, CanFrame& f, std::size_t max) {
  std::size_t n = 0;
  std::size_t i = 0;
  while (i < s.size()) {
    if (s[i] == '.') {
      ++i;
      continue;
    }
    if (i + 1 >= s.size() || n >= max) return false;
    const int hi = hex_value(s[i]);
    const int lo = hex_value(s[i + 1]);
    if (hi < 0 || lo < 0) return false;
    f.data[n++] = static_cast<std::uint8_t>((hi << 4) | lo);
    i += 2;
  }
  f.len = static_cast<std::uint8_t>(n);
  return true;
}

void put_u32le(std::vector<std::uint8_t>& out, std::uint32_t v) {
  for (int i = 0; i < 4; ++i) out.push_back(static_cast<std::uint8_t>(v >> (8 * i)));
}
void put_u16le(std::vector<std::uint8_t>& out, std::uint16_t v) {
  out.push_back(static_cast<std::uint8_t>(v));
  out.push_back(static_cast<std::uint8_t>(v >> 8));
}

bool frame_is_valid(const CanFrame& f) {
  if (f.extended ? f.id > 0x1FFFFFFFU : f.id > 0x7FFU) return false;
  if (f.fd) return is_valid_fd_length(f.len);
  return f.len <= 8 && !f.brs;
}

}  // namespace

std::string format_candump_line(const CapturedFrame& c) {
  const CanFrame& f = c.frame;
  char stamp[48];
  std::snprintf(stamp, sizeof stamp, "(%010llu.%06llu) ",
                static_cast<unsigned long long>(c.time_us / 1'000'000),
                static_cast<unsigned long long>(c.time_us % 1'000'000));
  std::string line = stamp;
  line += c.interface.empty() ? std::string("vcan0") : c.interface;
  line += ' ';
  const unsigned digits = f.extended ? 8 : 3;
  const std::uint32_t id = f.extended ? (f.id & 0x1FFFFFFFU) : (f.id & 0x7FFU);
  for (unsigned i = digits; i-- > 0;) line += kHex[(id >> (4 * i)) & 0xFU];
  line += '#';
  std::size_t len = f.len;
  if (f.fd) {
    line += '#';
    line += kHex[(f.brs ? kCanfdBrs : 0)];
    if (len > 64) len = 64;
  } else if (len > 8) {
    len = 8;
  }
  for (std::size_t i = 0; i < len; ++i) {
    line += kHex[f.data[i] >> 4];
    line += kHex[f.data[i] & 0xFU];
  }
  return line;
}

std::variant<CapturedFrame, LinkError> parse_candump_line(std::string_view line) {
  constexpr auto bad = LinkError::kMalformedFrame;
  while (!line.empty() && (line.back() == '\n' || line.back() == '\r')) line.remove_suffix(1);
  // "(sec.usec) iface frame [T|R]"
  if (line.size() < 2 || line.front() != '(') return bad;
  const std::size_t close = line.find(')');
  if (close == std::string_view::npos) return bad;
  const std::string_view stamp = line.substr(1, close - 1);
  const std::size_t dot = stamp.find('.');
  if (dot == std::string_view::npos || stamp.size() - dot - 1 != 6) return bad;
  std::uint64_t sec = 0;
  std::uint64_t usec = 0;
  if (!parse_decimal(stamp.substr(0, dot), sec) || !parse_decimal(stamp.substr(dot + 1), usec))
    return bad;
  if (sec > 18'000'000'000'000ULL) return bad;  // keeps sec * 1e6 + usec in range
  std::string_view rest = line.substr(close + 1);
  if (rest.empty() || rest.front() != ' ') return bad;
  rest.remove_prefix(1);
  const std::size_t sp = rest.find(' ');
  if (sp == std::string_view::npos || sp == 0 || sp > kMaxInterface) return bad;
  CapturedFrame c;
  c.time_us = sec * 1'000'000 + usec;
  c.interface = std::string(rest.substr(0, sp));
  std::string_view frame = rest.substr(sp + 1);
  if (const std::size_t sp2 = frame.find(' '); sp2 != std::string_view::npos) {
    const std::string_view marker = frame.substr(sp2 + 1);
    if (marker != "T" && marker != "R") return bad;
    frame = frame.substr(0, sp2);
  }
  const std::size_t hash = frame.find('#');
  if (hash == std::string_view::npos) return bad;
  const std::string_view id_text = frame.substr(0, hash);
  CanFrame& f = c.frame;
  std::uint32_t id = 0;
  if (!parse_hex_u32(id_text, id)) return bad;
  if (id_text.size() == 3) {
    if (id > 0x7FFU) return bad;
    f.extended = false;
  } else if (id_text.size() == 8) {
    if ((id & (kErrFlag | kRtrFlag | kEffFlag)) != 0) return bad;  // error/remote frames
    f.extended = true;
  } else {
    return bad;
  }
  f.id = id;
  std::string_view data = frame.substr(hash + 1);
  if (!data.empty() && data.front() == '#') {
    data.remove_prefix(1);
    if (data.empty()) return bad;
    const int flags = hex_value(data.front());
    if (flags < 0) return bad;
    data.remove_prefix(1);
    f.fd = true;
    f.brs = (flags & kCanfdBrs) != 0;
    if (!parse_data(data, f, 64) || !is_valid_fd_length(f.len)) return bad;
    return c;
  }
  if (!data.empty() && (data.front() == 'R' || data.front() == 'r')) return bad;  // remote frame
  if (data.find('_') != std::string_view::npos) return bad;  // len8_dlc: never sent by us
  if (!parse_data(data, f, 8)) return bad;
  return c;
}

std::vector<std::uint8_t> pcap_file_header() {
  std::vector<std::uint8_t> h;
  h.reserve(24);
  put_u32le(h, 0xA1B2C3D4U);  // microsecond timestamps
  put_u16le(h, 2);
  put_u16le(h, 4);
  put_u32le(h, 0);  // thiszone
  put_u32le(h, 0);  // sigfigs
  put_u32le(h, kPcapSnaplen);
  put_u32le(h, kLinktypeCanSocketcan);
  return h;
}

std::vector<std::uint8_t> pcap_record(std::uint64_t time_us, const CanFrame& f) {
  const std::size_t size = f.fd ? kCanfdMtu : kCanMtu;
  std::vector<std::uint8_t> r;
  r.reserve(16 + size);
  put_u32le(r, static_cast<std::uint32_t>(time_us / 1'000'000));
  put_u32le(r, static_cast<std::uint32_t>(time_us % 1'000'000));
  put_u32le(r, static_cast<std::uint32_t>(size));
  put_u32le(r, static_cast<std::uint32_t>(size));
  // struct can(fd)_frame with the id in network byte order, as LINKTYPE_CAN_SOCKETCAN wants.
  const std::uint32_t id = f.extended ? ((f.id & 0x1FFFFFFFU) | kEffFlag) : (f.id & 0x7FFU);
  for (int i = 3; i >= 0; --i) r.push_back(static_cast<std::uint8_t>(id >> (8 * i)));
  const std::size_t max_len = f.fd ? 64U : 8U;
  const std::size_t len = f.len > max_len ? max_len : f.len;
  r.push_back(static_cast<std::uint8_t>(len));
  r.push_back(f.fd ? static_cast<std::uint8_t>(kCanfdFdf | (f.brs ? kCanfdBrs : 0)) : 0);
  r.push_back(0);
  r.push_back(0);
  for (std::size_t i = 0; i < size - 8; ++i) r.push_back(i < len ? f.data[i] : 0);
  return r;
}

std::variant<std::vector<CapturedFrame>, LinkError> parse_pcap(std::span<const std::uint8_t> file,
                                                               std::size_t max_records) {
  constexpr auto bad = LinkError::kMalformedFrame;
  ByteReader in(file);
  std::uint32_t magic = 0;
  if (!in.u32be(magic)) return bad;
  bool swap = false;  // fields are big-endian when the magic reads as-is
  bool nanos = false;
  switch (magic) {
    case 0xA1B2C3D4U:
      break;
    case 0xD4C3B2A1U:
      swap = true;
      break;
    case 0xA1B23C4DU:
      nanos = true;
      break;
    case 0x4D3CB2A1U:
      swap = true, nanos = true;
      break;
    default:
      return bad;
  }
  const auto u32 = [&](std::uint32_t& v) {
    if (!in.u32be(v)) return false;
    if (swap) v = ((v & 0xFFU) << 24) | ((v & 0xFF00U) << 8) | ((v >> 8) & 0xFF00U) | (v >> 24);
    return true;
  };
  std::uint32_t version = 0, zone = 0, sigfigs = 0, snaplen = 0, linktype = 0;
  if (!u32(version) || !u32(zone) || !u32(sigfigs) || !u32(snaplen) || !u32(linktype)) return bad;
  if ((linktype & 0x0FFFFFFFU) != kLinktypeCanSocketcan) return bad;
  std::vector<CapturedFrame> out;
  while (in.remaining() > 0) {
    if (out.size() >= max_records) return LinkError::kTooLarge;
    std::uint32_t sec = 0, frac = 0, incl = 0, orig = 0;
    if (!u32(sec) || !u32(frac) || !u32(incl) || !u32(orig)) return bad;
    std::span<const std::uint8_t> rec;
    if (!in.bytes(incl, rec)) return bad;
    ByteReader r(rec);
    std::uint32_t id = 0;
    std::uint8_t len = 0, flags = 0, res0 = 0, res1 = 0;
    if (!r.u32be(id) || !r.u8(len) || !r.u8(flags) || !r.u8(res0) || !r.u8(res1)) return bad;
    CapturedFrame c;
    c.time_us = std::uint64_t{sec} * 1'000'000 + (nanos ? frac / 1000 : frac);
    CanFrame& f = c.frame;
    if ((id & (kErrFlag | kRtrFlag)) != 0) return bad;
    f.extended = (id & kEffFlag) != 0;
    f.id = id & (f.extended ? 0x1FFFFFFFU : 0xFFFFFFFFU);
    f.fd = (flags & kCanfdFdf) != 0 || rec.size() == kCanfdMtu;
    f.brs = f.fd && (flags & kCanfdBrs) != 0;
    f.len = len;
    std::span<const std::uint8_t> data;
    if (!frame_is_valid(f) || !r.bytes(len, data)) return bad;
    for (std::size_t i = 0; i < len; ++i) f.data[i] = data[i];
    out.push_back(std::move(c));
  }
  return out;
}

}  // namespace tollgate::transport
