#include "instrument/server.hpp"

#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/redirect_error.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <thread>

#include "transport/links/endpoint.hpp"

namespace tollgate::instrument {

namespace asio = boost::asio;
using transport::LinkError;

struct Server::Link {
  std::unique_ptr<transport::MessageLink> link;
  LinkContext context;
  asio::steady_timer timer;  // back-off delays, and waiting for the answer
  InstrumentService::Turn turn;
  Bytes reply;
  bool answered = false;
  bool verified = true;  // its signature check ahead is done
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
      idle_timer_(io),
      verifiers_(std::max(1u, options_.verifier_threads)) {}

Server::~Server() {
  verifiers_.join();
  writer_.join();
}

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
  // A group being written: wait for the disk, then finish it (on_written). Then
  // what was decided since: write it and finish it the same way.
  verifiers_.join();
  writer_.join();
  if (write_in_flight_) on_written(written_.value_or(Status(v1::ERROR_STORAGE)));
  if (!decided_.empty()) {
    std::vector<Link*> rest = std::move(decided_);
    decided_.clear();
    const bool durable = service_.write_group().ok();
    for (Link* l : rest) answer(*l, service_.finish(std::move(l->turn), clock_(), durable));
  }
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
    if (options_.verifier_threads > 0 && busy()) {
      if (auto job = service_.preverify(message)) {
        l.verified = false;
        ++verifying_;
        ++preverified_;
        asio::post(verifiers_, [this, &l, job = std::move(*job)]() mutable {
          job.run();
          asio::post(io_, [this, &l] {
            --verifying_;
            l.verified = true;
            l.timer.cancel();
          });
        });
        while (!l.verified && !stopping_) {
          boost::system::error_code ec;
          l.timer.expires_at(asio::steady_timer::time_point::max());
          co_await l.timer.async_wait(asio::redirect_error(asio::use_awaitable, ec));
        }
        if (stopping_) break;
      }
    }
    l.turn = service_.begin(message, clock_(), l.context);
    l.answered = false;
    decided_.push_back(&l);
    pump();
    if (!l.answered) {
      boost::system::error_code ec;
      l.timer.expires_at(asio::steady_timer::time_point::max());
      co_await l.timer.async_wait(asio::redirect_error(asio::use_awaitable, ec));
    }
    if (stopping_ || !l.answered) break;
    Bytes reply = std::move(l.reply);
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
    // Not while a group is being written or waits to be: it flushes anyway.
    if (write_in_flight_ || !decided_.empty()) continue;
    if (auto st = service_.idle(clock_()); !st) {
      log(std::string("idle flush failed: ") + std::string(error_name(st.error())));
    }
  }
}

void Server::answer(Link& l, Bytes reply) {
  l.reply = std::move(reply);
  l.answered = true;
  l.timer.cancel();
}

void Server::pump() {
  if (write_in_flight_ || stopping_ || decided_.empty()) return;
  std::vector<Link*> group = std::move(decided_);
  decided_.clear();
  auto sealed = service_.group().seal();
  if (!sealed) {
    // Nothing to write (status, export, rejections that changed nothing durable).
    const bool durable = !service_.group().failed();
    for (Link* l : group) answer(*l, service_.finish(std::move(l->turn), clock_(), durable));
    if (!durable) (void)service_.recover();
    return;
  }
  writing_ = std::move(group);
  sealed_ = std::move(*sealed);
  write_in_flight_ = true;
  written_.reset();
  asio::post(writer_, [this] {
    Status st = service_.group().write(*sealed_);
    written_ = st;
    asio::post(io_, [this, st] { on_written(st); });
  });
}

void Server::on_written(Status written) {
  if (!write_in_flight_) return;  // stop() finished this group already
  write_in_flight_ = false;
  service_.group().finish(*sealed_, written);
  sealed_.reset();
  std::vector<Link*> group = std::move(writing_);
  writing_.clear();
  ++groups_written_;
  messages_in_groups_ += group.size();
  const UnixTime now = clock_();
  if (!written) {
    log(std::string("group commit failed (") + std::to_string(group.size() + decided_.size()) +
        " messages answered ERROR_STORAGE): " + std::string(error_name(written.error())));
    // What was decided on top of the lost group is void too.
    group.insert(group.end(), decided_.begin(), decided_.end());
    decided_.clear();
    if (auto st = service_.recover(); !st) {
      log(std::string("cannot reload the trust state: ") + std::string(error_name(st.error())));
    }
  }
  for (Link* l : group) answer(*l, service_.finish(std::move(l->turn), now, written.ok()));
  pump();
}

}  // namespace tollgate::instrument
