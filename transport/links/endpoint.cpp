#include "transport/links/endpoint.hpp"

#include <boost/url/parse.hpp>
#include <boost/url/url_view.hpp>
#include <charconv>
#include <cstdio>
#include <limits>
#include <set>

#include "transport/framing/isotp.hpp"
#include "transport/links/isotp_link.hpp"
#include "transport/links/kernel_isotp_link.hpp"
#include "transport/links/serial_link.hpp"
#include "transport/links/socketcan_port.hpp"
#include "transport/links/vbus_port.hpp"

namespace tollgate::transport {
namespace {

using std::chrono::microseconds;

struct Bad {
  std::string what;
};

// A peer can make a receiver hold up to max= bytes per message; keep that bounded.
constexpr std::uint64_t kMaxMessageCap = 16u << 20;

// Parses a whole unsigned number, decimal or 0x-hex, at most `max`.
std::optional<std::uint64_t> parse_uint(std::string_view s, std::uint64_t max) {
  int base = 10;
  if (s.size() > 2 && s[0] == '0' && (s[1] == 'x' || s[1] == 'X')) {
    base = 16;
    s.remove_prefix(2);
  }
  if (s.empty()) return std::nullopt;
  std::uint64_t v = 0;
  auto [end, ec] = std::from_chars(s.data(), s.data() + s.size(), v, base);
  if (ec != std::errc{} || end != s.data() + s.size() || v > max) return std::nullopt;
  return v;
}

std::optional<bool> parse_bool(std::string_view s) {
  if (s == "1" || s == "true" || s == "yes" || s == "on") return true;
  if (s == "0" || s == "false" || s == "no" || s == "off") return false;
  return std::nullopt;
}

// The STmin code that encodes `t` exactly: whole ms up to 127, or 100..900 us
// in steps of 100 us; nullopt for any other time.
std::optional<std::uint8_t> stmin_code_for(microseconds t) {
  const auto us = t.count();
  if (us == 0) return 0;
  if (us >= 100 && us <= 900 && us % 100 == 0) return static_cast<std::uint8_t>(0xF0 + us / 100);
  if (us % 1000 == 0 && us / 1000 <= 127) return static_cast<std::uint8_t>(us / 1000);
  return std::nullopt;
}

constexpr std::string_view kIsoTpKeys =
    "tx, rx, ext, ta, ra, fd, dl, brs, pad, padbyte, bs, stmin, wftmax, nas, nar, nbs, ncr, max, "
    "window, txtime";
constexpr std::string_view kSerialKeys = "baud, max";

// Applies one query parameter; throws nothing, returns the complaint.
std::optional<Bad> apply(Endpoint& ep, std::string_view key, std::string_view value,
                         bool& dl_given) {
  auto& p = ep.isotp;
  const std::string kv = std::string(key) + "=" + std::string(value);
  auto number = [&](std::uint64_t max) -> std::optional<std::uint64_t> {
    return parse_uint(value, max);
  };
  auto not_number = [&](std::uint64_t max) {
    return Bad{kv + " is not a number in 0.." + std::to_string(max)};
  };
  auto flag = [&](bool& out) -> std::optional<Bad> {
    auto b = parse_bool(value);
    if (!b) return Bad{kv + " is not a boolean (use 1 or 0)"};
    out = *b;
    return std::nullopt;
  };
  auto byte = [&](std::uint8_t& out) -> std::optional<Bad> {
    auto v = number(0xFF);
    if (!v) return not_number(0xFF);
    out = static_cast<std::uint8_t>(*v);
    return std::nullopt;
  };
  auto duration = [&](microseconds& out) -> std::optional<Bad> {
    auto d = parse_duration(value);
    if (!d || d->count() == 0) {
      return Bad{kv + " is not a positive time (e.g. 1000ms, 1s, 250us)"};
    }
    out = *d;
    return std::nullopt;
  };

  if (ep.kind == EndpointKind::kSerial) {
    if (key == "baud") {
      auto v = number(std::numeric_limits<std::uint32_t>::max());
      if (!v || !is_standard_baud_rate(static_cast<std::uint32_t>(*v))) {
        return Bad{kv + " is not a standard baud rate (e.g. 9600, 115200, 921600, 4000000)"};
      }
      ep.baud = static_cast<std::uint32_t>(*v);
      return std::nullopt;
    }
    if (key == "max") {
      auto v = number(kMaxMessageCap);
      if (!v || *v == 0) return Bad{kv + " is not a size in 1.." + std::to_string(kMaxMessageCap)};
      ep.max_message = static_cast<std::size_t>(*v);
      return std::nullopt;
    }
    return Bad{"unknown option '" + std::string(key) +
               "' for serial: (known: " + std::string(kSerialKeys) + ")"};
  }

  if (key == "tx" || key == "rx") {
    auto v = number(0x1FFFFFFF);
    if (!v) return Bad{kv + " is not a CAN id (0..0x1FFFFFFF)"};
    (key == "tx" ? p.tx_id : p.rx_id) = static_cast<std::uint32_t>(*v);
    return std::nullopt;
  }
  if (key == "ext") return flag(p.extended_ids);
  if (key == "ta" || key == "ra") {
    std::uint8_t a = 0;
    if (auto bad = byte(a)) return bad;
    (key == "ta" ? p.tx_address : p.rx_address) = a;
    return std::nullopt;
  }
  if (key == "fd") return flag(p.fd);
  if (key == "dl") {
    auto v = number(64);
    if (!v || *v < 8 || !is_valid_fd_length(static_cast<std::size_t>(*v))) {
      return Bad{kv + " is not a CAN FD data length (8, 12, 16, 20, 24, 32, 48 or 64)"};
    }
    p.tx_dl = static_cast<std::uint8_t>(*v);
    dl_given = true;
    return std::nullopt;
  }
  if (key == "brs") return flag(p.brs);
  if (key == "pad") return flag(p.padding);
  if (key == "padbyte") return byte(p.pad_byte);
  if (key == "bs") return byte(p.block_size);
  if (key == "stmin") {
    if (auto code = number(0xFF)) {
      if (!is_valid_stmin_code(static_cast<std::uint8_t>(*code))) {
        return Bad{kv + " is a reserved STmin code (use 0..127 ms or 0xF1..0xF9)"};
      }
      p.stmin_code = static_cast<std::uint8_t>(*code);
      return std::nullopt;
    }
    auto d = parse_duration(value);
    auto code = d ? stmin_code_for(*d) : std::nullopt;
    if (!code) {
      return Bad{kv +
                 " is not an STmin: use a code (0..127, 0xF1..0xF9) or a time of 0..127 ms "
                 "in whole ms or 100..900 us in steps of 100 us"};
    }
    p.stmin_code = *code;
    return std::nullopt;
  }
  if (key == "wftmax") return byte(p.wft_max);
  if (key == "nas") return duration(p.n_as);
  if (key == "nar") return duration(p.n_ar);
  if (key == "nbs") return duration(p.n_bs);
  if (key == "ncr") return duration(p.n_cr);
  if (key == "max") {
    auto v = number(kMaxMessageCap);
    if (!v || *v == 0) return Bad{kv + " is not a size in 1.." + std::to_string(kMaxMessageCap)};
    ep.max_message = static_cast<std::size_t>(*v);
    return std::nullopt;
  }
  if (key == "window") {
    auto v = number(kMaxTxWindow);
    if (!v || *v == 0) return Bad{kv + " is not in 1.." + std::to_string(kMaxTxWindow)};
    p.tx_window = static_cast<std::uint8_t>(*v);
    return std::nullopt;
  }
  if (key == "txtime") {
    auto d = parse_duration(value);
    if (!d) return Bad{kv + " is not a time (e.g. 0us, 50us)"};
    p.frame_txtime = *d;
    return std::nullopt;
  }
  if (key == "baud") return Bad{"baud= is only for serial: endpoints"};
  return Bad{"unknown option '" + std::string(key) + "' for " +
             std::string(endpoint_kind_name(ep.kind)) + ": (known: " + std::string(kIsoTpKeys) +
             ")"};
}

// Checks that hold between options, once all are read.
std::optional<Bad> check_consistency(Endpoint& ep, bool dl_given) {
  auto& p = ep.isotp;
  if (ep.kind == EndpointKind::kSerial) return std::nullopt;
  const std::uint32_t id_max = p.extended_ids ? 0x1FFFFFFF : 0x7FF;
  for (auto [name, id] : {std::pair{"tx", p.tx_id}, std::pair{"rx", p.rx_id}}) {
    if (id && *id > id_max) {
      char hex[16];
      std::snprintf(hex, sizeof hex, "0x%X", *id);
      return Bad{std::string(name) + "=" + hex + " is not an 11-bit CAN id (add ext=1 for 29-bit)"};
    }
  }
  if (p.tx_address.has_value() != p.rx_address.has_value()) {
    return Bad{
        "extended addressing needs both ta= (address we send to) and ra= (address we "
        "accept)"};
  }
  // One id both ways works only when extended addressing tells the directions apart.
  const bool addresses_differ = p.tx_address && *p.tx_address != *p.rx_address;
  if (p.tx_id && p.rx_id && *p.tx_id == *p.rx_id && !addresses_differ) {
    return Bad{
        "tx and rx are the same id; a node must not receive its own transmissions (unless "
        "ta= and ra= differ)"};
  }
  if (!p.fd) {
    if (dl_given && p.tx_dl != 8) return Bad{"dl=" + std::to_string(p.tx_dl) + " needs fd=1"};
  } else if (!dl_given) {
    p.tx_dl = 64;
  }
  if (ep.kind != EndpointKind::kIsoTp && p.frame_txtime) {
    return Bad{"txtime= is only for isotp: endpoints (the kernel's ISO-TP)"};
  }
  if (ep.kind == EndpointKind::kIsoTp && p.tx_window) {
    return Bad{"window= is only for our ISO-TP (can:, vbus:), not isotp:"};
  }
  return std::nullopt;
}

}  // namespace

std::string_view endpoint_kind_name(EndpointKind kind) {
  switch (kind) {
    case EndpointKind::kCan:
      return "can";
    case EndpointKind::kIsoTp:
      return "isotp";
    case EndpointKind::kVbus:
      return "vbus";
    case EndpointKind::kSerial:
      return "serial";
  }
  return "?";
}

std::optional<microseconds> parse_duration(std::string_view s) {
  std::size_t digits = 0;
  while (digits < s.size() && s[digits] >= '0' && s[digits] <= '9') ++digits;
  if (digits == 0) return std::nullopt;
  auto n = parse_uint(s.substr(0, digits), std::numeric_limits<std::int64_t>::max() / 60'000'000);
  if (!n) return std::nullopt;
  const auto unit = s.substr(digits);
  const auto v = static_cast<std::int64_t>(*n);
  if (unit.empty() || unit == "ms") return microseconds(v * 1000);
  if (unit == "us") return microseconds(v);
  if (unit == "s") return microseconds(v * 1'000'000);
  if (unit == "m" || unit == "min") return microseconds(v * 60'000'000);
  return std::nullopt;
}

std::variant<Endpoint, EndpointError> parse_endpoint(std::string_view text) {
  auto fail = [&](const std::string& why) {
    return EndpointError{"bad endpoint '" + std::string(text) + "': " + why};
  };
  constexpr std::string_view kForms =
      "expected can:IFACE?tx=ID&rx=ID, isotp:IFACE?tx=ID&rx=ID, vbus:PATH?tx=ID&rx=ID or "
      "serial:DEVICE?baud=N";
  const auto colon = text.find(':');
  if (text.empty() || colon == std::string_view::npos) return fail(std::string(kForms));

  Endpoint ep;
  ep.text = std::string(text);
  const auto scheme = text.substr(0, colon);
  if (scheme == "can") {
    ep.kind = EndpointKind::kCan;
  } else if (scheme == "isotp") {
    ep.kind = EndpointKind::kIsoTp;
  } else if (scheme == "vbus") {
    ep.kind = EndpointKind::kVbus;
  } else if (scheme == "serial") {
    ep.kind = EndpointKind::kSerial;
  } else {
    return fail("unknown kind '" + std::string(scheme) + "'; " + std::string(kForms));
  }

  auto parsed = boost::urls::parse_uri(text);
  if (!parsed) {
    return fail("not a valid URI (" + parsed.error().message() +
                "); percent-encode spaces and other special characters in paths");
  }
  const boost::urls::url_view& url = *parsed;
  if (url.has_authority() && !url.host().empty()) {
    const bool iface = ep.kind == EndpointKind::kCan || ep.kind == EndpointKind::kIsoTp;
    return fail("no host part allowed ('" + std::string(url.host()) + "'); write " +
                std::string(scheme) + (iface ? ":IFACE?..." : ":/absolute/path?..."));
  }
  if (url.has_fragment()) return fail("no '#' fragment allowed");
  ep.target = std::string(url.path());
  if (ep.target.empty()) {
    return fail(ep.kind == EndpointKind::kCan || ep.kind == EndpointKind::kIsoTp
                    ? "missing interface name (e.g. can:vcan0?...)"
                    : "missing path (e.g. " + std::string(scheme) + ":/path?...)");
  }
  if ((ep.kind == EndpointKind::kCan || ep.kind == EndpointKind::kIsoTp) &&
      (ep.target.size() > 15 || ep.target.find('/') != std::string::npos)) {
    return fail("'" + ep.target +
                "' is not a network interface name (at most 15 characters, no /)");
  }

  std::set<std::string> seen;
  bool dl_given = false;
  for (auto param : url.params()) {
    const std::string key = param.key;
    if (key.empty()) return fail("empty option name in the query");
    if (!param.has_value || param.value.empty()) return fail("option '" + key + "' has no value");
    if (!seen.insert(key).second) return fail("option '" + key + "' given twice");
    if (auto bad = apply(ep, key, param.value, dl_given)) return fail(bad->what);
  }
  if (auto bad = check_consistency(ep, dl_given)) return fail(bad->what);
  return ep;
}

IsoTpConfig to_isotp_config(const Endpoint& ep) {
  const auto& p = ep.isotp;
  auto us = [](microseconds d) { return static_cast<Micros>(d.count()); };
  IsoTpConfig c;
  c.tx_id = p.tx_id.value_or(0);
  c.rx_id = p.rx_id.value_or(0);
  c.extended_id = p.extended_ids;
  if (p.tx_address && p.rx_address) {
    c.addressing = IsoTpAddressing::kExtended;
    c.tx_address = *p.tx_address;
    c.rx_address = *p.rx_address;
  }
  c.fd = p.fd;
  c.brs = p.brs;
  c.tx_dl = p.tx_dl;
  c.padding = p.padding;
  c.pad_byte = p.pad_byte;
  c.block_size = p.block_size;
  c.st_min = p.stmin_code;
  c.max_rx_size = ep.max_message + kCanLinkCrcSize;
  c.wft_max = p.wft_max;
  c.n_as_us = us(p.n_as);
  c.n_ar_us = us(p.n_ar);
  c.n_bs_us = us(p.n_bs);
  c.n_cr_us = us(p.n_cr);
  return c;
}

namespace {

LinkOpenError open_error(const Endpoint& ep, LinkError code, const std::string& why) {
  return {code, ep.text + ": " + why};
}

std::optional<LinkOpenError> require_ids(const Endpoint& ep) {
  if (!ep.isotp.tx_id) {
    return open_error(ep, LinkError::kInvalidArgument, "missing tx= (the CAN id we send on)");
  }
  if (!ep.isotp.rx_id) {
    return open_error(ep, LinkError::kInvalidArgument, "missing rx= (the CAN id we receive on)");
  }
  return std::nullopt;
}

LinkOpenResult<std::unique_ptr<VbusPort>> connect_vbus(boost::asio::any_io_executor ex,
                                                       const Endpoint& ep, bool listen_only) {
  VbusOptions o;
  o.socket_path = ep.target;
  o.fd = ep.isotp.fd;
  o.listen_only = listen_only;
  o.name = ep.text;
  auto port = VbusPort::connect(std::move(ex), o);
  if (port.index() == 0) return std::move(std::get<0>(port));
  const LinkError e = std::get<1>(port);
  std::string why =
      "cannot join the virtual bus at " + ep.target + " (" + std::string(link_error_name(e)) + ")";
  if (e == LinkError::kIo || e == LinkError::kClosed) {
    why += "; is `tollgate-bus hub --socket " + ep.target + "` running?";
  }
  return open_error(ep, e, why);
}

LinkOpenResult<std::unique_ptr<MessageLink>> run_isotp(const Endpoint& ep,
                                                       std::unique_ptr<CanFramePort> port) {
  IsoTpLinkOptions o;
  o.isotp = to_isotp_config(ep);
  if (auto bad = validate_isotp_config(o.isotp)) {
    return open_error(ep, *bad,
                      "ISO-TP options rejected (" + std::string(link_error_name(*bad)) + ")");
  }
  if (ep.isotp.tx_window) o.tx_window = *ep.isotp.tx_window;
  o.description = ep.text;
  auto link = IsoTpLink::create(std::move(port), std::move(o));
  if (link.index() != 0) {
    return open_error(
        ep, std::get<1>(link),
        "cannot start ISO-TP (" + std::string(link_error_name(std::get<1>(link))) + ")");
  }
  return std::unique_ptr<MessageLink>(std::move(std::get<0>(link)));
}

SocketCanOptions raw_options(const Endpoint& ep) {
  SocketCanOptions o;
  o.interface = ep.target;
  o.fd = ep.isotp.fd;
  return o;
}

}  // namespace

LinkOpenResult<std::unique_ptr<MessageLink>> open_link(boost::asio::any_io_executor ex,
                                                       std::string_view text) {
  auto ep = parse_endpoint(text);
  if (ep.index() != 0) return LinkOpenError{LinkError::kInvalidArgument, std::get<1>(ep).message};
  return open_link(std::move(ex), std::get<0>(ep));
}

LinkOpenResult<std::unique_ptr<MessageLink>> open_link(boost::asio::any_io_executor ex,
                                                       const Endpoint& ep) {
  switch (ep.kind) {
    case EndpointKind::kSerial: {
      SerialOptions o;
      o.baud = ep.baud;
      o.max_payload = ep.max_message;
      auto link = SerialLink::open(std::move(ex), ep.target, o);
      if (link.index() != 0) {
        const LinkError e = std::get<1>(link);
        return open_error(
            ep, e,
            "cannot open serial port " + ep.target + " (" + std::string(link_error_name(e)) + ")");
      }
      return std::unique_ptr<MessageLink>(std::move(std::get<0>(link)));
    }
    case EndpointKind::kIsoTp: {
      if (auto bad = require_ids(ep)) return *bad;
      const auto& p = ep.isotp;
      KernelIsoTpOptions o;
      o.interface = ep.target;
      o.tx_id = *p.tx_id;
      o.rx_id = *p.rx_id;
      o.extended_ids = p.extended_ids;
      o.tx_address = p.tx_address;
      o.rx_address = p.rx_address;
      o.fd = p.fd;
      o.tx_dl = p.tx_dl;
      o.brs = p.brs;
      o.padding = p.padding;
      o.pad_byte = p.pad_byte;
      o.block_size = p.block_size;
      o.stmin_code = p.stmin_code;
      o.wft_max = p.wft_max;
      o.frame_txtime = p.frame_txtime;
      o.max_message = ep.max_message;
      o.description = ep.text;
      auto link = KernelIsoTpLink::open(std::move(ex), std::move(o));
      if (link.index() != 0)
        return open_error(ep, std::get<1>(link).code, std::get<1>(link).message);
      return std::unique_ptr<MessageLink>(std::move(std::get<0>(link)));
    }
    case EndpointKind::kCan: {
      if (auto bad = require_ids(ep)) return *bad;
      auto o = raw_options(ep);
      // Only our channel's frames: the peer's (rx) and the confirmations of ours (tx).
      o.filters = {{*ep.isotp.rx_id, 0x1FFFFFFF, ep.isotp.extended_ids},
                   {*ep.isotp.tx_id, 0x1FFFFFFF, ep.isotp.extended_ids}};
      auto port = SocketCanPort::open(std::move(ex), std::move(o));
      if (port.index() != 0)
        return open_error(ep, std::get<1>(port).code, std::get<1>(port).message);
      return run_isotp(ep, std::move(std::get<0>(port)));
    }
    case EndpointKind::kVbus: {
      if (auto bad = require_ids(ep)) return *bad;
      auto port = connect_vbus(std::move(ex), ep, false);
      if (port.index() != 0) return std::get<1>(port);
      return run_isotp(ep, std::move(std::get<0>(port)));
    }
  }
  return LinkOpenError{LinkError::kInvalidArgument, ep.text + ": unknown endpoint kind"};
}

LinkOpenResult<std::unique_ptr<CanFramePort>> open_frame_port(boost::asio::any_io_executor ex,
                                                              const Endpoint& ep,
                                                              bool listen_only) {
  switch (ep.kind) {
    case EndpointKind::kCan: {
      auto o = raw_options(ep);
      o.confirm_tx = !listen_only;
      auto port = SocketCanPort::open(std::move(ex), std::move(o));
      if (port.index() != 0)
        return open_error(ep, std::get<1>(port).code, std::get<1>(port).message);
      return std::unique_ptr<CanFramePort>(std::move(std::get<0>(port)));
    }
    case EndpointKind::kVbus: {
      auto port = connect_vbus(std::move(ex), ep, listen_only);
      if (port.index() != 0) return std::get<1>(port);
      return std::unique_ptr<CanFramePort>(std::move(std::get<0>(port)));
    }
    case EndpointKind::kIsoTp:
    case EndpointKind::kSerial:
      break;
  }
  return open_error(ep, LinkError::kInvalidArgument,
                    "needs a can: or vbus: endpoint (frames are not visible through " +
                        std::string(endpoint_kind_name(ep.kind)) + ":)");
}

}  // namespace tollgate::transport
