// SerialLink through pseudo-terminal pairs: the same termios and Asio paths as
// a real UART, with the kernel's tty layer in between.
#include <doctest/doctest.h>
#include <fcntl.h>
#include <pty.h>
#include <unistd.h>

#include <boost/asio/co_spawn.hpp>
#include <boost/asio/experimental/awaitable_operators.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/this_coro.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <chrono>
#include <cstdint>
#include <exception>
#include <random>
#include <vector>

#include "transport/framing/serial_framer.hpp"
#include "transport/links/serial_link.hpp"

namespace {

namespace asio = boost::asio;
using namespace tollgate::transport;
using namespace asio::experimental::awaitable_operators;
using namespace std::chrono_literals;
using Bytes = std::vector<std::uint8_t>;

// Generous: the machine is shared, and these only bound a broken test.
constexpr auto kLong = 20s;

struct PtyPair {
  int master = -1;
  int slave = -1;
  PtyPair() { REQUIRE(::openpty(&master, &slave, nullptr, nullptr, nullptr) == 0); }
};

// Runs one test coroutine to completion; exceptions (REQUIRE) propagate.
void run(asio::io_context& io, asio::awaitable<void> body) {
  std::exception_ptr failure;
  bool finished = false;
  asio::co_spawn(io, std::move(body), [&](std::exception_ptr e) {
    failure = e;
    finished = true;
  });
  io.restart();
  io.run();
  if (failure) std::rethrow_exception(failure);
  REQUIRE(finished);
}

Bytes random_message(std::size_t n, std::uint32_t seed) {
  std::mt19937 rng(seed);
  Bytes b(n);
  for (auto& x : b) x = static_cast<std::uint8_t>(rng() % 6 == 0 ? 0 : rng());
  return b;
}

template <class T>
bool is_error(const LinkResult<T>& r, LinkError e) {
  return r.index() == 1 && std::get<1>(r) == e;
}

template <class T>
std::string outcome(const LinkResult<T>& r) {
  return r.index() == 0 ? std::string("ok") : std::string(link_error_name(std::get<1>(r)));
}

// Writes raw bytes into a pty end, as a misbehaving peer or a noisy line would.
void write_raw(int fd, const Bytes& bytes) {
  std::size_t done = 0;
  while (done < bytes.size()) {
    const ssize_t n = ::write(fd, bytes.data() + done, bytes.size() - done);
    REQUIRE(n > 0);
    done += static_cast<std::size_t>(n);
  }
}

Bytes cat(std::initializer_list<Bytes> parts) {
  Bytes out;
  for (const auto& p : parts) out.insert(out.end(), p.begin(), p.end());
  return out;
}

}  // namespace

TEST_CASE("messages of 0, 1, 1000 and 65536 bytes cross a pty pair both ways") {
  asio::io_context io;
  PtyPair pty;
  SerialOptions opts;
  opts.baud = 4000000;
  SerialLink a(io.get_executor(), pty.master, opts, "pty-master");
  SerialLink b(io.get_executor(), pty.slave, opts, "pty-slave");
  CHECK(a.describe() == "pty-master");

  run(io, [&]() -> asio::awaitable<void> {
    std::uint32_t seed = 1;
    for (std::size_t size : {0U, 1U, 1000U, 65536U}) {
      for (int direction = 0; direction < 2; ++direction) {
        SerialLink& from = direction == 0 ? a : b;
        SerialLink& to = direction == 0 ? b : a;
        const Bytes msg = random_message(size, seed++);
        CAPTURE(size);
        CAPTURE(direction);
        auto [sent, got] = co_await (from.send(msg, kLong) && to.receive(kLong));
        CHECK(outcome(sent) == "ok");
        REQUIRE(outcome(got) == "ok");
        CHECK(std::get<0>(got) == msg);
      }
    }
  }());
}

TEST_CASE("many messages in a row, sent while the peer is not yet reading, all arrive in order") {
  asio::io_context io;
  PtyPair pty;
  SerialLink a(io.get_executor(), pty.master);
  SerialLink b(io.get_executor(), pty.slave);
  run(io, [&]() -> asio::awaitable<void> {
    std::vector<Bytes> msgs;
    for (std::uint32_t i = 0; i < 50; ++i) msgs.push_back(random_message(i * 13 % 300, 100 + i));
    for (const auto& m : msgs) CHECK(outcome(co_await a.send(m, kLong)) == "ok");
    for (const auto& m : msgs) {
      auto got = co_await b.receive(kLong);
      REQUIRE(outcome(got) == "ok");
      CHECK(std::get<0>(got) == m);
    }
  }());
}

TEST_CASE("a receive deadline expires and the link still delivers the next message") {
  asio::io_context io;
  PtyPair pty;
  SerialLink a(io.get_executor(), pty.master);
  SerialLink b(io.get_executor(), pty.slave);
  run(io, [&]() -> asio::awaitable<void> {
    CHECK(is_error(co_await b.receive(30ms), LinkError::kDeadline));
    const Bytes msg = random_message(500, 7);
    auto [sent, got] = co_await (a.send(msg, kLong) && b.receive(kLong));
    CHECK(outcome(sent) == "ok");
    REQUIRE(outcome(got) == "ok");
    CHECK(std::get<0>(got) == msg);
  }());
}

TEST_CASE("half a frame then a deadline: the rest completes the frame on the next receive") {
  asio::io_context io;
  PtyPair pty;
  SerialLink b(io.get_executor(), pty.slave);
  const Bytes msg = random_message(400, 8);
  const Bytes frame = encode_serial_frame(msg);
  run(io, [&]() -> asio::awaitable<void> {
    write_raw(pty.master, Bytes(frame.begin(), frame.begin() + 200));
    CHECK(is_error(co_await b.receive(30ms), LinkError::kDeadline));
    write_raw(pty.master, Bytes(frame.begin() + 200, frame.end()));
    auto got = co_await b.receive(kLong);
    REQUIRE(outcome(got) == "ok");
    CHECK(std::get<0>(got) == msg);
  }());
  ::close(pty.master);
}

TEST_CASE("garbage injected between frames is reported and the following frames arrive") {
  asio::io_context io;
  PtyPair pty;
  SerialLink b(io.get_executor(), pty.slave);
  const Bytes m1 = random_message(100, 11), m2 = random_message(2000, 12),
              m3 = random_message(3, 13), m4 = random_message(70, 14);
  Bytes garbage = random_message(333, 15);
  for (auto& x : garbage) x = x == 0 ? 0x5C : x;  // no delimiter inside the garbage
  Bytes bad_crc = encode_serial_frame(m3);
  bad_crc[2] ^= 0x01;  // a data byte of the single COBS block: stays non-zero

  // Garbage that ends in a delimiter; garbage that the next frame's leading
  // delimiter cuts off; a frame with a bad CRC.
  write_raw(pty.master, cat({encode_serial_frame(m1),
                             garbage,
                             {0x00},
                             encode_serial_frame(m2),
                             garbage,
                             encode_serial_frame(m3, true),
                             bad_crc,
                             encode_serial_frame(m4)}));
  run(io, [&]() -> asio::awaitable<void> {
    std::vector<std::string> seen;
    std::vector<Bytes> frames;
    for (int i = 0; i < 7; ++i) {
      auto r = co_await b.receive(kLong);
      seen.push_back(outcome(r));
      if (r.index() == 0) frames.push_back(std::get<0>(r));
    }
    CHECK(frames == std::vector<Bytes>{m1, m2, m3, m4});
    CHECK(seen[0] == "ok");
    CHECK(seen[1] != "ok");
    CHECK(seen[2] == "ok");
    CHECK(seen[3] != "ok");
    CHECK(seen[4] == "ok");
    CHECK(seen[5] == "bad CRC");
    CHECK(seen[6] == "ok");
    CHECK(is_error(co_await b.receive(20ms), LinkError::kDeadline));
  }());
  ::close(pty.master);
}

TEST_CASE("an oversized frame and endless data are reported as overflow and the link recovers") {
  asio::io_context io;
  PtyPair pty;
  SerialOptions opts;
  opts.max_payload = 1000;
  SerialLink b(io.get_executor(), pty.slave, opts);
  const Bytes small = random_message(1000, 21);
  run(io, [&]() -> asio::awaitable<void> {
    write_raw(pty.master,
              cat({encode_serial_frame(random_message(1001, 20)), encode_serial_frame(small)}));
    CHECK(is_error(co_await b.receive(kLong), LinkError::kOverflow));
    auto got = co_await b.receive(kLong);
    REQUIRE(outcome(got) == "ok");
    CHECK(std::get<0>(got) == small);

    // A peer that never sends a delimiter: reported once, then ignored.
    write_raw(pty.master, Bytes(3000, 0x33));
    CHECK(is_error(co_await b.receive(kLong), LinkError::kOverflow));
    CHECK(is_error(co_await b.receive(30ms), LinkError::kDeadline));
    write_raw(pty.master, cat({{0x00}, encode_serial_frame(small)}));
    got = co_await b.receive(kLong);
    REQUIRE(outcome(got) == "ok");
    CHECK(std::get<0>(got) == small);
  }());
  ::close(pty.master);
}

TEST_CASE("the first frame and the frame after an aborted send start with a delimiter") {
  asio::io_context io;
  PtyPair pty;
  SerialOptions opts;
  opts.max_payload = 1 << 20;
  SerialLink b(io.get_executor(), pty.slave, opts);
  const int reader = pty.master;
  run(io, [&]() -> asio::awaitable<void> {
    // Nobody reads the master yet, so 1 MiB cannot fit in the pty's buffers.
    const Bytes big = random_message(1 << 20, 31);
    CHECK(is_error(co_await b.send(big, 100ms), LinkError::kDeadline));
    co_return;
  }());
  // Drain what went out: it starts with the leading 0x00 of the first frame.
  Bytes drained(256 * 1024);
  const ssize_t n = ::read(reader, drained.data(), drained.size());
  REQUIRE(n > 0);
  CHECK(drained[0] == 0x00);

  SerialLink a(io.get_executor(), ::dup(pty.master), opts);
  const Bytes next = random_message(50, 32);
  run(io, [&]() -> asio::awaitable<void> {
    // The fragment of the aborted frame is still in the pty; the next frame's
    // leading delimiter ends it, so it costs one error and nothing more.
    CHECK(outcome(co_await b.send(next, kLong)) == "ok");
    LinkResult<Bytes> got = LinkError::kIo;
    int errors = 0;
    for (int i = 0; i < 3; ++i) {
      got = co_await a.receive(kLong);
      if (got.index() == 0) break;
      ++errors;
    }
    REQUIRE(outcome(got) == "ok");
    CHECK(std::get<0>(got) == next);
    CHECK(errors == 1);
  }());
  ::close(pty.master);
}

TEST_CASE("resync_after_idle puts a delimiter before a frame after a quiet line") {
  asio::io_context io;
  PtyPair pty;
  SerialOptions opts;
  opts.resync_after_idle = std::chrono::steady_clock::duration::zero();
  SerialLink b(io.get_executor(), pty.slave, opts);
  const Bytes msg = random_message(10, 41);
  run(io, [&]() -> asio::awaitable<void> {
    for (int i = 0; i < 2; ++i) CHECK(outcome(co_await b.send(msg, kLong)) == "ok");
  }());
  const Bytes frame = encode_serial_frame(msg, true);
  Bytes got(2 * frame.size() + 16);
  std::size_t have = 0;
  while (have < 2 * frame.size()) {
    const ssize_t n = ::read(pty.master, got.data() + have, got.size() - have);
    REQUIRE(n > 0);
    have += static_cast<std::size_t>(n);
  }
  got.resize(have);
  CHECK(got == cat({frame, frame}));
  ::close(pty.master);
}

TEST_CASE("a message larger than max_payload is refused with kTooLarge") {
  asio::io_context io;
  PtyPair pty;
  SerialOptions opts;
  opts.max_payload = 100;
  SerialLink a(io.get_executor(), pty.master, opts);
  ::close(pty.slave);
  run(io, [&]() -> asio::awaitable<void> {
    CHECK(is_error(co_await a.send(Bytes(101, 1), kLong), LinkError::kTooLarge));
  }());
}

TEST_CASE("the other end going away is reported as kClosed") {
  asio::io_context io;
  PtyPair pty;
  SerialLink b(io.get_executor(), pty.slave);
  ::close(pty.master);
  run(io, [&]() -> asio::awaitable<void> {
    CHECK(is_error(co_await b.receive(kLong), LinkError::kClosed));
  }());
}

TEST_CASE("the other end going away in the middle of a send is reported as kClosed") {
  asio::io_context io;
  PtyPair pty;
  SerialOptions opts;
  opts.max_payload = 1 << 20;
  SerialLink b(io.get_executor(), pty.slave, opts);
  run(io, [&]() -> asio::awaitable<void> {
    asio::steady_timer t(co_await asio::this_coro::executor);
    t.expires_after(20ms);
    // Whether the close lands before the first byte or while the send waits
    // for room in the full pty, the outcome is the same.
    auto hang_up = [&]() -> asio::awaitable<void> {
      co_await t.async_wait(asio::use_awaitable);
      ::close(pty.master);
    };
    const Bytes big = random_message(1 << 20, 61);
    auto sent = co_await (b.send(big, kLong) && hang_up());
    CHECK(is_error(sent, LinkError::kClosed));
  }());
}

TEST_CASE("close ends a pending receive with kClosed and later calls fail fast") {
  asio::io_context io;
  PtyPair pty;
  SerialLink b(io.get_executor(), pty.slave);
  run(io, [&]() -> asio::awaitable<void> {
    asio::steady_timer t(co_await asio::this_coro::executor);
    t.expires_after(20ms);
    auto closer = [&]() -> asio::awaitable<void> {
      co_await t.async_wait(asio::use_awaitable);
      b.close();
    };
    auto got = co_await (b.receive(kLong) && closer());
    CHECK(is_error(got, LinkError::kClosed));
    CHECK(is_error(co_await b.receive(kLong), LinkError::kClosed));
    const Bytes msg(3, 0x01);  // not a braced list: g++ 12 rejects one inside co_await
    CHECK(is_error(co_await b.send(msg, kLong), LinkError::kClosed));
  }());
  ::close(pty.master);
}

TEST_CASE("a second concurrent receive is refused with kInvalidArgument") {
  asio::io_context io;
  PtyPair pty;
  SerialLink b(io.get_executor(), pty.slave);
  run(io, [&]() -> asio::awaitable<void> {
    auto [first, second] = co_await (b.receive(30ms) && b.receive(30ms));
    CHECK(is_error(first, LinkError::kDeadline));
    CHECK(is_error(second, LinkError::kInvalidArgument));
  }());
  ::close(pty.master);
}

TEST_CASE("a non-standard baud rate is refused and the adopted descriptor closed") {
  asio::io_context io;
  PtyPair pty;
  CHECK_FALSE(is_standard_baud_rate(12345));
  CHECK(is_standard_baud_rate(115200));
  CHECK(is_standard_baud_rate(4000000));
  SerialOptions opts;
  opts.baud = 12345;
  auto r = SerialLink::adopt(io.get_executor(), pty.slave, opts);
  CHECK(is_error(r, LinkError::kInvalidArgument));
  CHECK(::fcntl(pty.slave, F_GETFD) == -1);
  ::close(pty.master);
}

TEST_CASE("opening a device that does not exist fails with kIo") {
  asio::io_context io;
  auto r = SerialLink::open(io.get_executor(), "/dev/tollgate-no-such-tty");
  CHECK(is_error(r, LinkError::kIo));
}

TEST_CASE("opening a pty by its path works like adopting it") {
  asio::io_context io;
  PtyPair pty;
  char name[256] = {};
  REQUIRE(::ttyname_r(pty.slave, name, sizeof name) == 0);
  auto opened = SerialLink::open(
      io.get_executor(), name,
      SerialOptions{
          .baud = 9600, .max_payload = kDefaultMaxSerialPayload, .resync_after_idle = {}});
  REQUIRE(opened.index() == 0);
  auto& b = *std::get<0>(opened);
  CHECK(b.describe() == std::string("serial:") + name + "?baud=9600");
  SerialLink a(io.get_executor(), pty.master);
  run(io, [&]() -> asio::awaitable<void> {
    const Bytes msg = random_message(300, 51);
    auto [sent, got] = co_await (a.send(msg, kLong) && b.receive(kLong));
    CHECK(outcome(sent) == "ok");
    REQUIRE(outcome(got) == "ok");
    CHECK(std::get<0>(got) == msg);
  }());
  ::close(pty.slave);
}
