#include "instrument/server.hpp"

#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/redirect_error.hpp>
#include <boost/asio/use_awaitable.hpp>

#include "transport/links/endpoint.hpp"

namespace tollgate::instrument {

namespace asio = boost::asio;
using transport::LinkError;

struct Server::Link {
  std::unique_ptr<transport::MessageLink> link;
  LinkContext context;
  asio::steady_timer timer;
  Link(std::unique_ptr<transport::MessageLink> l, asio::io_context& io, BackoffConfig backoff)
      : link(std::move(l)), timer(io) {
    context.name = link->describe();
    context.backoff = Backoff(backoff);
  }
};

Server::Server(asio::io_context& io, InstrumentService& service, Clock clock, ServerOptions options)
    : io_(io),
      service_(service),
      clock_(std::move(clock)),
      options_(std::move(options)),
      idle_timer_(io) {}

Server::~Server() = default;

void Server::log(const std::string& line) const {
  if (options_.log) options_.log(line);
}

std::optional<std::string> Server::open(const std::vector<std::string>& endpoints) {
  for (const auto& ep : endpoints) {
    auto r = transport::open_link(io_.get_executor(), std::string_view(ep));
    if (r.index() != 0) return ep + ": " + std::get<1>(r).message;
    add(std::move(std::get<0>(r)));
  }
  return std::nullopt;
}

void Server::add(std::unique_ptr<transport::MessageLink> link) {
  links_.push_back(std::make_unique<Link>(std::move(link), io_, options_.backoff));
}

void Server::start() {
  if (started_) return;
  started_ = true;
  for (auto& l : links_) asio::co_spawn(io_, serve(*l), asio::detached);
  asio::co_spawn(io_, idle_loop(), asio::detached);
}

void Server::handle_signals() {
  signals_.emplace(io_, SIGTERM, SIGINT);
  signals_->async_wait([this](const boost::system::error_code& ec, int sig) {
    if (ec) return;
    log("signal " + std::to_string(sig) + ": stopping");
    stop();
  });
}

void Server::stop() {
  if (stopping_) return;
  stopping_ = true;
  for (auto& l : links_) {
    l->timer.cancel();
    l->link->close();
  }
  idle_timer_.cancel();
  if (signals_) signals_->cancel();
  if (auto st = service_.idle(clock_()); !st) {
    log(std::string("final flush failed: ") + std::string(error_name(st.error())));
  }
}

asio::awaitable<void> Server::serve(Link& l) {
  const std::string& name = l.context.name;
  std::uint32_t quiet_errors = 0;
  while (!stopping_) {
    auto received = co_await l.link->receive(transport::MessageLink::Duration::max());
    if (stopping_) break;
    if (received.index() != 0) {
      LinkError e = std::get<1>(received);
      if (e == LinkError::kDeadline) continue;
      // Log the first few in a row, then every 100th: a dead peer must not flood the log.
      if (quiet_errors < 5 || quiet_errors % 100 == 0) {
        log(name + ": receive: " + std::string(transport::link_error_name(e)));
      }
      ++quiet_errors;
      if (e == LinkError::kClosed || e == LinkError::kIo || e == LinkError::kInvalidArgument) {
        // The peer side is gone for now (a serial pty with nobody attached, a
        // hub restarting): poll again later instead of spinning.
        boost::system::error_code ec;
        l.timer.expires_after(std::chrono::milliseconds(200));
        co_await l.timer.async_wait(asio::redirect_error(asio::use_awaitable, ec));
      }
      continue;
    }
    quiet_errors = 0;
    auto& message = std::get<0>(received);
    l.context.monotonic_us = std::chrono::duration_cast<std::chrono::microseconds>(
                                 std::chrono::steady_clock::now().time_since_epoch())
                                 .count();
    Bytes reply = service_.handle(message, clock_(), l.context);
    if (l.context.reply_delay_us > 0) {
      boost::system::error_code ec;
      l.timer.expires_after(std::chrono::microseconds(l.context.reply_delay_us));
      co_await l.timer.async_wait(asio::redirect_error(asio::use_awaitable, ec));
      if (stopping_) break;
    }
    auto sent = co_await l.link->send(std::move(reply), options_.send_timeout);
    if (sent.index() != 0) {
      log(name + ": send: " + std::string(transport::link_error_name(std::get<1>(sent))));
    }
  }
}

asio::awaitable<void> Server::idle_loop() {
  while (!stopping_) {
    boost::system::error_code ec;
    idle_timer_.expires_after(options_.idle_flush);
    co_await idle_timer_.async_wait(asio::redirect_error(asio::use_awaitable, ec));
    if (stopping_) break;
    if (auto st = service_.idle(clock_()); !st) {
      log(std::string("idle flush failed: ") + std::string(error_name(st.error())));
    }
  }
}

}  // namespace tollgate::instrument
