// The server's group commit, in process: several links whose hosts send at the
// same time are decided while the previous group is written, their charges
// reach the disk in fewer writes than commands, and nothing executes before its
// group is written. In-memory links; the real links are covered by it_attacks_*
// and the crash test.
#include "instrument/server.hpp"

#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/redirect_error.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <deque>

#include "tests/instrument/service_fixture.hpp"

using namespace tollgate;
using namespace tollgate::instrument;
using namespace tollgate::instrument::servicetest;
using namespace tollgate::testkit;
namespace asio = boost::asio;

namespace {

// The device's end of an in-memory link: the test queues host messages, the
// server's answers are collected; receive() waits until a message is queued.
class QueueLink final : public transport::MessageLink {
 public:
  QueueLink(asio::io_context& io, std::string name) : wake_(io), name_(std::move(name)) {}

  void push(Bytes message) {
    inbox_.push_back(std::move(message));
    wake_.cancel();
  }
  std::vector<Bytes> sent;
  std::function<void()> on_send;

  asio::awaitable<transport::LinkResult<transport::Done>> send(std::vector<std::uint8_t> m,
                                                               Duration) override {
    sent.push_back(std::move(m));
    if (on_send) on_send();
    co_return transport::Done{};
  }
  asio::awaitable<transport::LinkResult<std::vector<std::uint8_t>>> receive(Duration) override {
    while (inbox_.empty()) {
      if (closed_) co_return transport::LinkError::kClosed;
      boost::system::error_code ec;
      wake_.expires_at(asio::steady_timer::time_point::max());
      co_await wake_.async_wait(asio::redirect_error(asio::use_awaitable, ec));
    }
    Bytes b = std::move(inbox_.front());
    inbox_.pop_front();
    co_return b;
  }
  void close() override {
    closed_ = true;
    wake_.cancel();
  }
  std::string describe() const override { return name_; }

 private:
  asio::steady_timer wake_;
  std::string name_;
  std::deque<Bytes> inbox_;
  bool closed_ = false;
};

Bytes command_message(const Bytes& signed_request) {
  v1::HostMessage m;
  m.set_command(s(signed_request));
  const std::string bytes = m.SerializeAsString();
  return Bytes(bytes.begin(), bytes.end());
}

// `hosts` links, each carrying one signed run-assay with its own nonce (made
// durable first, as a host's nonce from an earlier answer would be).
struct Bench {
  Device d;
  asio::io_context io;
  std::vector<QueueLink*> links;
  std::vector<Bytes> requests;
  std::optional<Server> server;
  std::size_t answers = 0;

  explicit Bench(std::size_t hosts, unsigned verifier_threads = 0) {
    d.ready(100);
    for (std::size_t i = 0; i < hosts; ++i) {
      auto st = d.status();
      d.nonce.assign(st.nonce().begin(), st.nonce().end());
      requests.push_back(d.command_bytes(
          "run-assay", {{"protocol", "elisa"}, {"sample", "S" + std::to_string(i)}}));
    }
    REQUIRE(d.service->idle(d.clock).ok());
    ServerOptions options;
    options.idle_flush = std::chrono::hours(1);  // the test decides when to flush
    // Signatures checked ahead finish at times the test does not control, and
    // so would the groups: off unless a test is about them.
    options.verifier_threads = verifier_threads;
    server.emplace(
        io, *d.service, [this] { return d.clock; }, options);
    for (std::size_t i = 0; i < hosts; ++i) {
      auto link = std::make_unique<QueueLink>(io, "host" + std::to_string(i));
      link->on_send = [this] {
        if (++answers == links.size()) server->stop();
      };
      links.push_back(link.get());
      server->add(std::move(link));
    }
  }

  // Every host sends its request at once; runs until each has its answer.
  void send_all(const std::vector<std::size_t>& which) {
    answers = links.size() - which.size();
    for (std::size_t i : which) links[i]->push(command_message(requests[i]));
    server->start();
    io.run();
  }

  v1::CommandResponse last_answer(std::size_t i) {
    REQUIRE_FALSE(links[i]->sent.empty());
    v1::DeviceMessage m;
    REQUIRE(m.ParseFromArray(links[i]->sent.back().data(),
                             static_cast<int>(links[i]->sent.back().size())));
    return d.response(m);
  }
};

std::vector<std::size_t> all(std::size_t n) {
  std::vector<std::size_t> v(n);
  for (std::size_t i = 0; i < n; ++i) v[i] = i;
  return v;
}

}  // namespace

TEST_CASE("requests arriving together on several links share group commits and each runs once") {
  constexpr std::size_t kHosts = 6;
  Bench b(kHosts);
  const std::uint64_t writes_before = b.d.store->writes();
  b.send_all(all(kHosts));

  for (std::size_t i = 0; i < kHosts; ++i) {
    auto r = b.last_answer(i);
    CHECK(r.status() == v1::CommandResponse::STATUS_OK);
    const auto h = crypto::sha256(b.requests[i]);
    CHECK(r.request_hash() == s(Bytes(h.begin(), h.begin() + 16)));
  }
  CHECK(b.d.service->stats().executions == kHosts);
  CHECK(b.d.store->count_results().value() == kHosts);
  CHECK(b.d.gw->state().tokens.at(uuid(1)).uses_left == 100 - kHosts);
  // Fewer durable writes for the charges than commands: the first request is
  // written alone, the others are decided while that write runs.
  CHECK(b.server->messages_in_groups() == kHosts);
  CHECK(b.server->groups_written() < kHosts);
  MESSAGE("groups written: " << b.server->groups_written() << " for " << kHosts << " commands, "
                             << (b.d.store->writes() - writes_before) << " store writes in all");
  // After the stop's flush, a restart finds every charge and every answer.
  const DeviceState state = b.d.gw->state();
  b.d.open();
  CHECK(b.d.gw->state().tokens == state.tokens);
  CHECK(b.d.gw->state().idempotency == state.idempotency);
  CHECK(b.d.count(v1::AuditRecord::KIND_EXECUTION) == kHosts);
}

TEST_CASE("a group that cannot be written executes none of its commands; the retries run once") {
  constexpr std::size_t kHosts = 4;
  Bench b(kHosts);
  b.d.store->fail_write(1);  // the first group's transaction
  b.send_all(all(kHosts));

  std::vector<std::size_t> failed;
  std::size_t ok = 0;
  for (std::size_t i = 0; i < kHosts; ++i) {
    auto r = b.last_answer(i);
    if (r.status() == v1::CommandResponse::STATUS_OK) {
      ++ok;
      continue;
    }
    CHECK(r.status() == v1::CommandResponse::STATUS_REJECTED);
    CHECK(r.error() == v1::ERROR_STORAGE);
    failed.push_back(i);
  }
  REQUIRE_FALSE(failed.empty());
  CHECK(b.d.service->stats().executions == ok);
  CHECK(b.d.store->count_results().value() == ok);
  CHECK(b.d.gw->state().tokens.at(uuid(1)).uses_left == 100 - ok);

  // The hosts send the same bytes again: charged and run once each.
  b.io.restart();
  Bench* bp = &b;
  b.server.reset();
  ServerOptions options;
  options.idle_flush = std::chrono::hours(1);
  b.server.emplace(
      b.io, *b.d.service, [bp] { return bp->d.clock; }, options);
  std::vector<QueueLink*> fresh;
  for (std::size_t i = 0; i < kHosts; ++i) {
    auto link = std::make_unique<QueueLink>(b.io, "again" + std::to_string(i));
    link->on_send = [&b] {
      if (++b.answers == b.links.size()) b.server->stop();
    };
    fresh.push_back(link.get());
    b.server->add(std::move(link));
  }
  b.links = fresh;
  b.send_all(failed);
  for (std::size_t i : failed) {
    auto r = b.last_answer(i);
    CHECK(r.status() == v1::CommandResponse::STATUS_OK);
  }
  CHECK(b.d.service->stats().executions == kHosts);
  CHECK(b.d.store->count_results().value() == kHosts);
  CHECK(b.d.gw->state().tokens.at(uuid(1)).uses_left == 100 - kHosts);
}

TEST_CASE("a forged signature checked ahead is still refused, and the others run") {
  constexpr std::size_t kHosts = 4;
  Bench b(kHosts, 2);
  // Host 2's request with one signature byte flipped (the key it names is known,
  // so it is checked ahead when the loop is busy).
  auto env = parse_signed(b.requests[2]);
  REQUIRE(env.ok());
  env->mutable_signature()->front() ^= 1;
  const std::string forged = env->SerializeAsString();
  b.requests[2] = Bytes(forged.begin(), forged.end());
  b.send_all(all(kHosts));

  for (std::size_t i = 0; i < kHosts; ++i) {
    auto r = b.last_answer(i);
    if (i == 2) {
      CHECK(r.status() == v1::CommandResponse::STATUS_REJECTED);
      CHECK(r.error() == v1::ERROR_BAD_SIGNATURE);
    } else {
      CHECK(r.status() == v1::CommandResponse::STATUS_OK);
    }
  }
  CHECK(b.server->preverified() >= 1);
  CHECK(b.d.service->stats().executions == kHosts - 1);
  CHECK(b.d.gw->state().tokens.at(uuid(1)).uses_left == 100 - (kHosts - 1));
}

TEST_CASE("signatures checked ahead on verifier threads: every command still runs exactly once") {
  constexpr std::size_t kHosts = 8;
  Bench b(kHosts, 2);
  b.send_all(all(kHosts));
  for (std::size_t i = 0; i < kHosts; ++i) {
    CHECK(b.last_answer(i).status() == v1::CommandResponse::STATUS_OK);
  }
  // Those that arrived while a write ran were checked ahead.
  CHECK(b.server->preverified() >= 1);
  CHECK(b.d.service->stats().executions == kHosts);
  CHECK(b.d.store->count_results().value() == kHosts);
  CHECK(b.d.gw->state().tokens.at(uuid(1)).uses_left == 100 - kHosts);
}
