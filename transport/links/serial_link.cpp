#include "transport/links/serial_link.hpp"

#include <fcntl.h>
#include <termios.h>
#include <unistd.h>

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/experimental/awaitable_operators.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/asio/write.hpp>
#include <boost/system/system_error.hpp>
#include <cerrno>
#include <utility>

namespace tollgate::transport {
namespace {

namespace asio = boost::asio;
using boost::system::error_code;
using namespace asio::experimental::awaitable_operators;

// The largest max_payload accepted: the decode buffer is allocated up front.
constexpr std::size_t kMaxConfigurablePayload = 16U * 1024U * 1024U;

std::optional<speed_t> baud_constant(std::uint32_t baud) {
  switch (baud) {
    case 50:
      return B50;
    case 75:
      return B75;
    case 110:
      return B110;
    case 134:
      return B134;
    case 150:
      return B150;
    case 200:
      return B200;
    case 300:
      return B300;
    case 600:
      return B600;
    case 1200:
      return B1200;
    case 1800:
      return B1800;
    case 2400:
      return B2400;
    case 4800:
      return B4800;
    case 9600:
      return B9600;
    case 19200:
      return B19200;
    case 38400:
      return B38400;
    case 57600:
      return B57600;
    case 115200:
      return B115200;
    case 230400:
      return B230400;
    case 460800:
      return B460800;
    case 500000:
      return B500000;
    case 576000:
      return B576000;
    case 921600:
      return B921600;
    case 1000000:
      return B1000000;
    case 1152000:
      return B1152000;
    case 1500000:
      return B1500000;
    case 2000000:
      return B2000000;
    case 2500000:
      return B2500000;
    case 3000000:
      return B3000000;
    case 3500000:
      return B3500000;
    case 4000000:
      return B4000000;
    default:
      return std::nullopt;
  }
}

void check_options(const SerialOptions& o) {
  if (!baud_constant(o.baud)) {
    throw boost::system::system_error(
        make_error_code(boost::system::errc::invalid_argument),
        "serial: not a standard baud rate: " + std::to_string(o.baud));
  }
  if (o.max_payload > kMaxConfigurablePayload) {
    throw boost::system::system_error(make_error_code(boost::system::errc::invalid_argument),
                                      "serial: max_payload too large");
  }
}

[[noreturn]] void throw_errno(const char* what) {
  throw boost::system::system_error(error_code(errno, boost::system::system_category()), what);
}

LinkError map_error(const error_code& ec, bool closed) {
  if (closed || ec == asio::error::eof || ec == asio::error::operation_aborted ||
      ec == asio::error::bad_descriptor || ec == boost::system::errc::io_error) {
    // EIO is how a pty reports that its other end closed, and how a USB serial
    // adapter reports that it was unplugged.
    return LinkError::kClosed;
  }
  return LinkError::kIo;
}

struct ClearOnExit {
  bool& flag;
  ~ClearOnExit() { flag = false; }
};

template <class Make>
LinkResult<std::unique_ptr<SerialLink>> make_link(Make make) {
  try {
    return make();
  } catch (const boost::system::system_error& e) {
    if (e.code() == boost::system::errc::invalid_argument) return LinkError::kInvalidArgument;
    return LinkError::kIo;
  }
}

}  // namespace

bool is_standard_baud_rate(std::uint32_t baud) {
  return baud_constant(baud).has_value();
}

SerialLink::SerialLink(asio::any_io_executor ex, const std::string& device, SerialOptions options)
    : options_((check_options(options), options)),
      description_("serial:" + device + "?baud=" + std::to_string(options.baud)),
      port_(ex),
      decode_buffer_(serial_decoder_buffer_size(options.max_payload)),
      decoder_(decode_buffer_, options.max_payload) {
  port_.open(device);
  configure();
  // Whatever the line carried before we opened it is not for us.
  if (::tcflush(port_.native_handle(), TCIFLUSH) != 0) throw_errno("serial: tcflush");
}

SerialLink::SerialLink(asio::any_io_executor ex, int fd, SerialOptions options,
                       std::string description)
    : options_(options),
      description_(description.empty() ? "serial:fd" + std::to_string(fd) : std::move(description)),
      port_(ex),
      decode_buffer_(),
      decoder_(decode_buffer_, 0) {
  error_code ec;
  port_.assign(fd, ec);
  if (ec) {
    ::close(fd);
    throw boost::system::system_error(ec, "serial: assign");
  }
  // From here on port_ owns the descriptor and closes it if we throw.
  check_options(options);
  decode_buffer_.resize(serial_decoder_buffer_size(options.max_payload));
  decoder_ = SerialFrameDecoder(decode_buffer_, options.max_payload);
  configure();
}

SerialLink::~SerialLink() = default;

LinkResult<std::unique_ptr<SerialLink>> SerialLink::open(asio::any_io_executor ex,
                                                         const std::string& device,
                                                         SerialOptions options) {
  return make_link([&] { return std::make_unique<SerialLink>(std::move(ex), device, options); });
}

LinkResult<std::unique_ptr<SerialLink>> SerialLink::adopt(asio::any_io_executor ex, int fd,
                                                          SerialOptions options,
                                                          std::string description) {
  return make_link([&] {
    return std::make_unique<SerialLink>(std::move(ex), fd, options, std::move(description));
  });
}

void SerialLink::configure() {
  const int fd = port_.native_handle();
  const speed_t speed = *baud_constant(options_.baud);
  termios tio{};
  if (::tcgetattr(fd, &tio) != 0) throw_errno("serial: tcgetattr");
  ::cfmakeraw(&tio);
  tio.c_cflag &= ~static_cast<tcflag_t>(CSIZE | PARENB | CSTOPB | CRTSCTS);
  tio.c_cflag |= CS8 | CLOCAL | CREAD;
  tio.c_iflag &= ~static_cast<tcflag_t>(IXON | IXOFF | IXANY);
  tio.c_cc[VMIN] = 1;  // the descriptor is non-blocking; these only matter to other readers
  tio.c_cc[VTIME] = 0;
  if (::cfsetispeed(&tio, speed) != 0 || ::cfsetospeed(&tio, speed) != 0) {
    throw_errno("serial: cfsetspeed");
  }
  if (::tcsetattr(fd, TCSANOW, &tio) != 0) throw_errno("serial: tcsetattr");
  // tcsetattr succeeds if any of the changes took; read back what the driver kept.
  termios actual{};
  if (::tcgetattr(fd, &actual) != 0) throw_errno("serial: tcgetattr");
  if (::cfgetospeed(&actual) != speed || (actual.c_cflag & CSIZE) != CS8 ||
      (actual.c_cflag & (PARENB | CSTOPB | CRTSCTS)) != 0) {
    throw boost::system::system_error(
        make_error_code(boost::system::errc::invalid_argument),
        "serial: the port rejected raw 8N1 at " + std::to_string(options_.baud) + " baud");
  }
}

void SerialLink::close() {
  closed_ = true;
  error_code ignored;
  port_.close(ignored);
}

asio::awaitable<error_code> SerialLink::wait(asio::steady_timer& timer) {
  auto [ec] = co_await timer.async_wait(asio::as_tuple(asio::use_awaitable));
  co_return ec;
}

asio::awaitable<error_code> SerialLink::read_some() {
  auto [ec, n] =
      co_await port_.async_read_some(asio::buffer(rx_.data() + rx_end_, rx_.size() - rx_end_),
                                     asio::as_tuple(asio::use_awaitable));
  // Recorded here, not by the caller: if the deadline wins the race the caller
  // never sees this result, but the bytes must not be lost.
  rx_end_ += n;
  co_return ec;
}

asio::awaitable<error_code> SerialLink::write_frame(std::size_t size) {
  auto [ec, n] = co_await asio::async_write(port_, asio::buffer(tx_.data(), size),
                                            asio::as_tuple(asio::use_awaitable));
  tx_written_ = n;
  co_return ec;
}

asio::awaitable<LinkResult<Done>> SerialLink::send(std::vector<std::uint8_t> message,
                                                   Duration timeout) {
  if (closed_) co_return LinkError::kClosed;
  if (sending_) co_return LinkError::kInvalidArgument;
  if (message.size() > options_.max_payload) co_return LinkError::kTooLarge;
  sending_ = true;
  ClearOnExit clear{sending_};

  const bool lead = resync_next_ || (options_.resync_after_idle &&
                                     std::chrono::steady_clock::now() - last_tx_end_ >=
                                         *options_.resync_after_idle);
  tx_.resize(serial_frame_max_size(message.size(), lead));
  const SizeOrError encoded = encode_serial_frame(message, tx_, lead);
  if (encoded.index() != 0) co_return std::get<1>(encoded);  // cannot happen: worst-case buffer
  const std::size_t size = std::get<0>(encoded);

  asio::steady_timer timer(port_.get_executor());
  timer.expires_after(timeout);
  tx_written_ = 0;
  resync_next_ = true;  // until the whole frame is out, the peer may hold a fragment
  auto outcome = co_await (write_frame(size) || wait(timer));
  if (tx_written_ == size) {
    resync_next_ = false;
    last_tx_end_ = std::chrono::steady_clock::now();
    co_return Done{};
  }
  if (outcome.index() == 1) co_return LinkError::kDeadline;
  co_return map_error(std::get<0>(outcome), closed_);
}

asio::awaitable<LinkResult<std::vector<std::uint8_t>>> SerialLink::receive(Duration timeout) {
  if (closed_) co_return LinkError::kClosed;
  if (receiving_) co_return LinkError::kInvalidArgument;
  receiving_ = true;
  ClearOnExit clear{receiving_};

  asio::steady_timer timer(port_.get_executor());
  timer.expires_after(timeout);
  bool deadline_passed = false;
  for (;;) {
    while (rx_begin_ < rx_end_) {
      const auto fed =
          decoder_.feed(std::span<const std::uint8_t>(rx_.data() + rx_begin_, rx_end_ - rx_begin_));
      rx_begin_ += fed.consumed;
      if (fed.result.has_frame()) {
        const auto p = fed.result.payload();
        co_return std::vector<std::uint8_t>(p.begin(), p.end());
      }
      if (fed.result.has_error()) co_return fed.result.error();
    }
    rx_begin_ = rx_end_ = 0;
    if (deadline_passed) co_return LinkError::kDeadline;

    auto outcome = co_await (read_some() || wait(timer));
    if (outcome.index() == 1) {
      // read_some may still have delivered bytes before it was cancelled:
      // decode them first, then report the deadline.
      deadline_passed = true;
      continue;
    }
    const error_code ec = std::get<0>(outcome);
    if (ec && rx_end_ == 0) co_return map_error(ec, closed_);
  }
}

}  // namespace tollgate::transport
