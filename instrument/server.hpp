// The instrument's server loop: one io_context thread, one coroutine per link
// (receive -> InstrumentService::handle -> optional back-off delay -> send),
// plus an idle timer that commits what the gateway holds in memory. The
// service runs on that one thread, so it needs no locking; links interleave
// only between messages.
//
// A receive error (bad CRC, aborted transfer, a peer that went away) is logged
// and the loop goes on; it never ends the server. stop() (SIGTERM / SIGINT once
// handle_signals() is on) closes every link, lets the coroutines finish and
// commits pending state with gateway.flush(), so a restart resumes everything.
#pragma once

#include <boost/asio/io_context.hpp>
#include <boost/asio/signal_set.hpp>
#include <boost/asio/steady_timer.hpp>
#include <chrono>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "instrument/backoff.hpp"
#include "instrument/service.hpp"
#include "transport/links/message_link.hpp"

namespace tollgate::instrument {

struct ServerOptions {
  BackoffConfig backoff;
  std::chrono::milliseconds send_timeout{5000};
  std::chrono::milliseconds idle_flush{1000};
  // Where log lines go (stderr in the program); empty = no logging.
  std::function<void(const std::string&)> log;
};

class Server {
 public:
  using Clock = std::function<UnixTime()>;

  Server(boost::asio::io_context& io, InstrumentService& service, Clock clock,
         ServerOptions options);
  ~Server();
  Server(const Server&) = delete;
  Server& operator=(const Server&) = delete;

  // Opens a link for each endpoint string (synchronously). On failure returns
  // the reason, naming the endpoint; links opened so far stay open.
  std::optional<std::string> open(const std::vector<std::string>& endpoints);
  // Adds an already open link (tests: an in-memory link).
  void add(std::unique_ptr<transport::MessageLink> link);
  // Spawns the link coroutines and the idle timer. io.run() then serves until stop().
  void start();
  // Makes SIGTERM and SIGINT call stop().
  void handle_signals();
  // Closes the links, cancels the timers and flushes the gateway. Idempotent.
  void stop();
  bool stopping() const { return stopping_; }
  std::size_t links() const { return links_.size(); }

 private:
  struct Link;
  boost::asio::awaitable<void> serve(Link& link);
  boost::asio::awaitable<void> idle_loop();
  void log(const std::string& line) const;

  boost::asio::io_context& io_;
  InstrumentService& service_;
  Clock clock_;
  ServerOptions options_;
  std::vector<std::unique_ptr<Link>> links_;
  boost::asio::steady_timer idle_timer_;
  std::optional<boost::asio::signal_set> signals_;
  bool stopping_ = false;
  bool started_ = false;
};

}  // namespace tollgate::instrument
