#include "tools/bus/cmd_common.hpp"

#include <boost/asio/co_spawn.hpp>
#include <boost/asio/signal_set.hpp>
#include <cerrno>
#include <cstring>
#include <fstream>
#include <iostream>
#include <iterator>
#include <optional>

namespace tollgate::bus {

using transport::LinkError;

CLI::Validator duration_validator() {
  return CLI::Validator(
      [](std::string& s) -> std::string {
        if (transport::parse_duration(s)) return {};
        return "'" + s + "' is not a duration (e.g. 5s, 250ms, 300us; a bare number is ms)";
      },
      "DURATION");
}

std::chrono::microseconds duration_or_throw(const std::string& text) {
  auto d = transport::parse_duration(text);
  if (!d) throw CliError("'" + text + "' is not a duration (e.g. 5s, 250ms, 300us)");
  return *d;
}

transport::Endpoint endpoint_or_throw(const std::string& text) {
  auto ep = transport::parse_endpoint(text);
  if (ep.index() != 0) throw CliError(std::get<1>(ep).message);
  return std::get<0>(std::move(ep));
}

std::unique_ptr<transport::MessageLink> open_link_or_throw(boost::asio::io_context& io,
                                                           const transport::Endpoint& ep) {
  auto link = transport::open_link(io.get_executor(), ep);
  if (link.index() != 0) throw CliError(std::get<1>(link).message);
  return std::get<0>(std::move(link));
}

std::unique_ptr<transport::CanFramePort> open_port_or_throw(boost::asio::io_context& io,
                                                            const transport::Endpoint& ep,
                                                            bool listen_only) {
  auto port = transport::open_frame_port(io.get_executor(), ep, listen_only);
  if (port.index() != 0) throw CliError(std::get<1>(port).message);
  return std::get<0>(std::move(port));
}

std::string explain(LinkError e) {
  std::string s(transport::link_error_name(e));
  switch (e) {
    case LinkError::kTimeoutBs:
      return s + " (no flow control from the receiver: is a peer listening on our tx id?)";
    case LinkError::kTimeoutAs:
      return s + " (our frame did not go out: bus busy, off or unacknowledged)";
    case LinkError::kTimeoutCr:
      return s + " (the sender stopped mid-message)";
    case LinkError::kDeadline:
      return s + " (the --timeout passed)";
    case LinkError::kOverflow:
      return s + " (message larger than the receiver accepts)";
    case LinkError::kTooLarge:
      return s + " (message larger than this link can send)";
    case LinkError::kClosed:
      return s + " (the bus or the peer went away)";
    default:
      return s;
  }
}

std::vector<std::uint8_t> parse_hex(std::string_view text) {
  std::vector<std::uint8_t> out;
  int high = -1;
  for (std::size_t i = 0; i < text.size(); ++i) {
    const char c = text[i];
    if (c == ' ' || c == ':' || c == '.' || c == '\t' || c == '\n') {
      if (high >= 0) throw CliError("hex byte cut by a separator at position " + std::to_string(i));
      continue;
    }
    int v;
    if (c >= '0' && c <= '9')
      v = c - '0';
    else if (c >= 'a' && c <= 'f')
      v = c - 'a' + 10;
    else if (c >= 'A' && c <= 'F')
      v = c - 'A' + 10;
    else
      throw CliError(std::string("'") + c + "' at position " + std::to_string(i) +
                     " is not a hex digit");
    if (high < 0) {
      high = v;
    } else {
      out.push_back(static_cast<std::uint8_t>(high << 4 | v));
      high = -1;
    }
  }
  if (high >= 0) throw CliError("hex data has an odd number of digits");
  return out;
}

std::string to_hex(const std::uint8_t* data, std::size_t size, bool spaced) {
  static constexpr char digits[] = "0123456789ABCDEF";
  std::string s;
  s.reserve(size * (spaced ? 3 : 2));
  for (std::size_t i = 0; i < size; ++i) {
    if (spaced && i > 0) s += ' ';
    s += digits[data[i] >> 4];
    s += digits[data[i] & 0xF];
  }
  return s;
}

std::vector<std::uint8_t> read_file(const std::string& path) {
  if (path == "-") {
    std::istreambuf_iterator<char> begin(std::cin), end;
    std::string s(begin, end);
    return {s.begin(), s.end()};
  }
  std::ifstream in(path, std::ios::binary);
  if (!in) throw CliError("cannot read " + path + ": " + std::strerror(errno));
  std::vector<std::uint8_t> data((std::istreambuf_iterator<char>(in)),
                                 std::istreambuf_iterator<char>());
  if (in.bad()) throw CliError("cannot read " + path + ": " + std::strerror(errno));
  return data;
}

void write_file(const std::string& path, const std::vector<std::uint8_t>& data) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  if (!out) throw CliError("cannot write " + path + ": " + std::strerror(errno));
  out.write(reinterpret_cast<const char*>(data.data()), static_cast<std::streamsize>(data.size()));
  if (!out.flush()) throw CliError("cannot write " + path + ": " + std::strerror(errno));
}

int run_command(boost::asio::io_context& io, boost::asio::awaitable<int> main,
                std::function<void()> on_signal, std::function<bool()> spin) {
  std::optional<int> rc;
  std::exception_ptr error;
  boost::asio::signal_set signals(io, SIGINT, SIGTERM);
  signals.async_wait([&](const boost::system::error_code& ec, int) {
    if (ec) return;
    if (on_signal) {
      on_signal();
    } else {
      rc = 130;
      io.stop();
    }
  });
  boost::asio::co_spawn(io, std::move(main), [&](std::exception_ptr e, int r) {
    error = e;
    if (!rc) rc = r;
    signals.cancel();
    io.stop();  // the links' background readers would otherwise keep run() going
  });
  if (!spin) {
    io.run();
  } else {
    while (!io.stopped()) {
      if (spin())
        io.poll();
      else
        io.run_one();
    }
  }
  if (error) std::rethrow_exception(error);
  return rc.value_or(1);
}

std::uint64_t unix_time_us() {
  return static_cast<std::uint64_t>(std::chrono::duration_cast<std::chrono::microseconds>(
                                        std::chrono::system_clock::now().time_since_epoch())
                                        .count());
}

}  // namespace tollgate::bus
