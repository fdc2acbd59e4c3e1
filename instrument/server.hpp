// The instrument's server loop: one io_context thread, one coroutine per link
// (receive -> decide -> wait for the group commit -> execute -> optional
// back-off delay -> send), one writer thread for the group commits, plus an
// idle timer that commits what the gateway holds in memory. The service runs on
// the io_context thread only, so it needs no locking; links interleave only
// between messages.
//
// Group commit with pipelining (gateway/group_commit.hpp): a message is decided
// as soon as it arrives (InstrumentService::begin: verify, charge - in memory).
// When no group is being written, everything decided so far is sealed and
// handed to the writer thread: one transaction, one fsync. Messages arriving on
// other links meanwhile are decided while that fsync runs and form the next
// group. When the write completes, the group's commands execute and their
// answers go out (InstrumentService::finish) - never before their charge is on
// disk. One host alone gets one write per command, as before; N busy hosts
// share the fsyncs, and the signature checks overlap the disk. While the loop is
// busy (a write, another message), a command's signature is verified ahead on
// a verifier thread (one per core; gateway/verified_signatures.hpp), so several
// cores check signatures and the loop only decides. A failed write:
// every message of that group and of the one decided on top of it is answered
// ERROR_STORAGE and the gateway is reloaded from the database.
//
// A receive error (bad CRC, aborted transfer, a peer that went away) is logged
// and the loop goes on; it never ends the server. stop() (SIGTERM / SIGINT once
// handle_signals() is on) closes every link, lets the coroutines finish and
// commits pending state with gateway.flush(), so a restart resumes everything.
// A group being written at that moment is finished first: its commands execute
// (their charges are on disk) though their answers can no longer be sent; the
// hosts' retries get the stored answers.
#pragma once

#include <boost/asio/io_context.hpp>
#include <boost/asio/signal_set.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/thread_pool.hpp>
#include <chrono>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "instrument/backoff.hpp"
#include "instrument/service.hpp"
#include "transport/links/message_link.hpp"

namespace tollgate::instrument {

struct ServerOptions {
  BackoffConfig backoff;
  std::chrono::milliseconds send_timeout{5000};
  std::chrono::milliseconds idle_flush{1000};
  // Threads that verify command signatures ahead while the loop is busy;
  // 0 = every check on the loop's thread. Default: one per core.
  unsigned verifier_threads = std::max(1u, std::thread::hardware_concurrency());
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
  // Groups handed to the writer thread, and the messages they answered.
  std::uint64_t groups_written() const { return groups_written_; }
  std::uint64_t messages_in_groups() const { return messages_in_groups_; }
  // Command signatures verified ahead on the verifier threads.
  std::uint64_t preverified() const { return preverified_; }

 private:
  struct Link;
  boost::asio::awaitable<void> serve(Link& link);
  boost::asio::awaitable<void> idle_loop();
  void log(const std::string& line) const;
  // Seals what was decided and starts writing it, unless a write is running.
  void pump();
  // The writer thread reported `written` for the sealed group: finish its turns.
  void on_written(Status written);
  void answer(Link& link, Bytes reply);
  // Another message or a write is in progress: a signature check now would
  // delay it, so it goes to a verifier thread.
  bool busy() const { return write_in_flight_ || verifying_ > 0 || !decided_.empty(); }
  boost::asio::io_context& io_;
  InstrumentService& service_;
  Clock clock_;
  ServerOptions options_;
  std::vector<std::unique_ptr<Link>> links_;
  boost::asio::steady_timer idle_timer_;
  std::optional<boost::asio::signal_set> signals_;
  bool stopping_ = false;
  bool started_ = false;

  std::vector<Link*> decided_;  // begun since the last seal, in arrival order
  std::vector<Link*> writing_;  // the group being written
  std::optional<GroupCommitStorage::Sealed> sealed_;
  bool write_in_flight_ = false;
  std::optional<Status> written_;  // set by the writer thread before it posts back
  std::uint64_t groups_written_ = 0;
  std::uint64_t messages_in_groups_ = 0;
  std::size_t verifying_ = 0;
  std::uint64_t preverified_ = 0;
  // Last: joined first on destruction.
  boost::asio::thread_pool verifiers_;
  boost::asio::thread_pool writer_{1};
};

}  // namespace tollgate::instrument
