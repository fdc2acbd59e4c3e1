// Shared plumbing of the `tollgate-bus` subcommands: each subcommand lives in
// its own cmd_*.cpp and registers itself on the CLI11 app with add_*_command().
// Errors are thrown as CliError (one line, printed by main as
// "tollgate-bus <cmd>: <message>", exit status 1).
#pragma once

#include <CLI/CLI.hpp>
#include <boost/asio/awaitable.hpp>
#include <boost/asio/io_context.hpp>
#include <chrono>
#include <cstdint>
#include <memory>
#include <stdexcept>
#include <string>
#include <string_view>
#include <vector>

#include "transport/links/endpoint.hpp"

namespace tollgate::bus {

struct CliError : std::runtime_error {
  using std::runtime_error::runtime_error;
};

// Registers each subcommand; when it is chosen, its callback runs the command
// and stores its exit status in `rc`.
void add_send_command(CLI::App& app, int& rc);
void add_recv_command(CLI::App& app, int& rc);
void add_dump_command(CLI::App& app, int& rc);
void add_play_command(CLI::App& app, int& rc);
void add_bench_command(CLI::App& app, int& rc);
void add_can_config_command(CLI::App& app, int& rc);

// Text shared by every --link option's help.
inline constexpr std::string_view kEndpointHelp =
    "Endpoint: can:IFACE?tx=ID&rx=ID | isotp:IFACE?tx=ID&rx=ID | vbus:SOCKET?tx=ID&rx=ID | "
    "serial:DEVICE?baud=N  (ISO-TP options: fd=1 dl= ext=1 ta= ra= bs= stmin= pad= padbyte= "
    "nas= nbs= ncr= max=)";

// A CLI11 validator for durations ("5s", "250ms", "300us"; bare = ms).
CLI::Validator duration_validator();
std::chrono::microseconds duration_or_throw(const std::string& text);

// Parses `text` or throws CliError with the parser's message.
transport::Endpoint endpoint_or_throw(const std::string& text);
std::unique_ptr<transport::MessageLink> open_link_or_throw(boost::asio::io_context& io,
                                                           const transport::Endpoint& ep);
std::unique_ptr<transport::CanFramePort> open_port_or_throw(boost::asio::io_context& io,
                                                            const transport::Endpoint& ep,
                                                            bool listen_only);

// A link error as a user reads it: the name plus what usually causes it.
std::string explain(transport::LinkError e);

// Hex: pairs of digits; spaces, ':' and '.' between bytes are ignored.
std::vector<std::uint8_t> parse_hex(std::string_view text);
std::string to_hex(const std::uint8_t* data, std::size_t size, bool spaced = false);
inline std::string to_hex(const std::vector<std::uint8_t>& v, bool spaced = false) {
  return to_hex(v.data(), v.size(), spaced);
}

std::vector<std::uint8_t> read_file(const std::string& path);  // "-" is stdin
void write_file(const std::string& path, const std::vector<std::uint8_t>& data);

// Runs `main` on `io` until it returns (or throws); SIGINT/SIGTERM cancel it
// through `on_signal` (called once) when given, else they stop the loop and the
// command exits 130. While `spin` (when given) returns true the loop polls
// (busy-waits) instead of sleeping: a process that must answer frames within
// microseconds (bench) skips the wake-up latency at the turnarounds.
int run_command(boost::asio::io_context& io, boost::asio::awaitable<int> main,
                std::function<void()> on_signal = {}, std::function<bool()> spin = {});

// Microseconds since the Unix epoch (for capture timestamps).
std::uint64_t unix_time_us();

}  // namespace tollgate::bus
