#include "tools/cloud/server.hpp"

#include <boost/asio.hpp>
#include <boost/asio/ssl.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <boost/beast/ssl.hpp>
#include <boost/json.hpp>

#include <openssl/err.h>

#include <array>
#include <atomic>
#include <optional>
#include <stdexcept>
#include <thread>
#include <vector>

namespace tollgate::cloud {

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace http = beast::http;
namespace ssl = asio::ssl;
using tcp = asio::ip::tcp;

namespace {

using Stream = beast::ssl_stream<beast::tcp_stream>;
constexpr std::size_t kMaxDrain = 1024 * 1024;

http::response<http::string_body> make_response(int status, std::string body, unsigned version,
                                                bool keep_alive) {
  http::response<http::string_body> res{static_cast<http::status>(status), version};
  res.set(http::field::server, "tollgate-cloud");
  res.set(http::field::content_type, "application/json");
  // Session secrets and tokens must not linger in caches.
  res.set(http::field::cache_control, "no-store");
  res.keep_alive(keep_alive);
  res.body() = std::move(body);
  res.prepare_payload();
  return res;
}

std::string error_body(const char* code, const char* message) {
  return boost::json::serialize(boost::json::object{{"error", code}, {"message", message}});
}

}  // namespace

struct HttpsServer::Impl {
  Impl(Authority& a, ServerOptions o)
      : authority(a), options(std::move(o)), tls(ssl::context::tls_server), acceptor(ioc) {
    // TLS 1.2 is the floor; compression and renegotiation stay off (OpenSSL 3 defaults).
    if (SSL_CTX_set_min_proto_version(tls.native_handle(), TLS1_2_VERSION) != 1) {
      throw std::runtime_error("cannot set the TLS minimum version");
    }
    tls.set_options(ssl::context::default_workarounds | ssl::context::no_sslv2 |
                    ssl::context::no_sslv3 | ssl::context::single_dh_use);
    boost::system::error_code ec;
    tls.use_certificate_chain(asio::buffer(options.cert_chain_pem), ec);
    if (ec) throw std::runtime_error("the server certificate is unusable: " + ec.message());
    tls.use_private_key(asio::buffer(options.private_key_pem), ssl::context::pem, ec);
    if (ec) throw std::runtime_error("the server private key is unusable: " + ec.message());
    if (SSL_CTX_check_private_key(tls.native_handle()) != 1) {
      ERR_clear_error();
      throw std::runtime_error("the server private key does not match its certificate");
    }
    auto addr = asio::ip::make_address(options.address, ec);
    if (ec) throw std::runtime_error("not an IP address: " + options.address);
    tcp::endpoint ep(addr, options.port);
    acceptor.open(ep.protocol());
    acceptor.set_option(asio::socket_base::reuse_address(true));
    acceptor.bind(ep, ec);
    if (ec) {
      throw std::runtime_error("cannot listen on " + options.address + ":" +
                               std::to_string(options.port) + ": " + ec.message());
    }
    acceptor.listen(asio::socket_base::max_listen_connections);
  }

  asio::awaitable<void> accept_loop() {
    for (;;) {
      boost::system::error_code ec;
      tcp::socket socket =
          co_await acceptor.async_accept(asio::redirect_error(asio::use_awaitable, ec));
      if (ec) {
        if (!acceptor.is_open()) co_return;
        continue;  // e.g. EMFILE: keep serving the connections we have
      }
      if (connections.load() >= options.max_connections) {
        socket.close(ec);
        continue;
      }
      asio::co_spawn(ioc, session(std::move(socket)), asio::detached);
    }
  }

  asio::awaitable<void> session(tcp::socket socket) {
    ++connections;
    struct Count {
      std::atomic<unsigned>& n;
      ~Count() { --n; }
    } count{connections};
    Stream stream(beast::tcp_stream(std::move(socket)), tls);
    boost::system::error_code ec;
    beast::get_lowest_layer(stream).expires_after(options.request_deadline);
    co_await stream.async_handshake(ssl::stream_base::server,
                                    asio::redirect_error(asio::use_awaitable, ec));
    if (ec) co_return;

    beast::flat_buffer buffer(options.header_limit + options.body_limit);
    for (;;) {
      http::request_parser<http::string_body> parser;
      parser.header_limit(static_cast<std::uint32_t>(options.header_limit));
      parser.body_limit(options.body_limit);
      beast::get_lowest_layer(stream).expires_after(options.request_deadline);
      co_await http::async_read(stream, buffer, parser,
                                asio::redirect_error(asio::use_awaitable, ec));
      if (ec) {
        int status = 0;
        const char* code = nullptr;
        const char* message = nullptr;
        if (ec == http::error::header_limit) {
          status = 431, code = "header_too_large", message = "the request header is too large";
        } else if (ec == http::error::body_limit || ec == http::error::buffer_overflow) {
          status = 413, code = "body_too_large", message = "the request body is too large";
        } else if (ec != http::error::end_of_stream && ec != beast::error::timeout &&
                   ec != asio::error::eof && ec != asio::ssl::error::stream_truncated &&
                   ec.category() == http::make_error_code(http::error::end_of_stream).category()) {
          status = 400, code = "bad_http", message = "the request is not valid HTTP/1.1";
        }
        if (status != 0) {
          auto res = make_response(status, error_body(code, message), 11, false);
          beast::get_lowest_layer(stream).expires_after(options.request_deadline);
          co_await http::async_write(stream, res, asio::redirect_error(asio::use_awaitable, ec));
          // Closing with the client's unread body in our receive queue makes the
          // kernel send RST, which can destroy the answer before the client reads
          // it. Discard what is still coming, bounded in bytes and time.
          std::size_t drained = 0;
          std::array<char, 16 * 1024> scratch;
          beast::get_lowest_layer(stream).expires_after(std::chrono::seconds(2));
          while (!ec && drained < kMaxDrain) {
            drained += co_await stream.async_read_some(
                asio::buffer(scratch), asio::redirect_error(asio::use_awaitable, ec));
          }
        }
        break;
      }
      auto& req = parser.get();
      ApiRequest api;
      api.method = std::string(req.method_string());
      api.target = std::string(req.target());
      api.authorization = std::string(req[http::field::authorization]);
      api.content_type = std::string(req[http::field::content_type]);
      api.body = std::move(req.body());
      // The handler blocks (database commit, Argon2) on this pool thread; the
      // pool is sized for that.
      ApiResponse out = authority.handle(api);
      auto res = make_response(out.status, std::move(out.body), req.version(), req.keep_alive());
      co_await http::async_write(stream, res, asio::redirect_error(asio::use_awaitable, ec));
      if (ec || !res.keep_alive()) break;
    }
    beast::get_lowest_layer(stream).expires_after(std::chrono::seconds(2));
    co_await stream.async_shutdown(asio::redirect_error(asio::use_awaitable, ec));
  }

  Authority& authority;
  ServerOptions options;
  asio::io_context ioc;
  ssl::context tls;
  tcp::acceptor acceptor;
  std::vector<std::thread> threads;
  std::atomic<unsigned> connections{0};
  std::optional<asio::executor_work_guard<asio::io_context::executor_type>> work;
};

HttpsServer::HttpsServer(Authority& authority, ServerOptions options)
    : impl_(std::make_unique<Impl>(authority, std::move(options))) {}

HttpsServer::~HttpsServer() {
  stop();
}

std::uint16_t HttpsServer::port() const {
  return impl_->acceptor.local_endpoint().port();
}

void HttpsServer::start() {
  impl_->work.emplace(impl_->ioc.get_executor());
  asio::co_spawn(impl_->ioc, impl_->accept_loop(), asio::detached);
  const unsigned n = std::max(1u, impl_->options.threads);
  for (unsigned i = 0; i < n; ++i) {
    impl_->threads.emplace_back([this] { impl_->ioc.run(); });
  }
}

void HttpsServer::stop() {
  if (!impl_) return;
  impl_->work.reset();
  impl_->ioc.stop();
  for (auto& t : impl_->threads) {
    if (t.joinable()) t.join();
  }
  impl_->threads.clear();
  boost::system::error_code ec;
  impl_->acceptor.close(ec);
}

}  // namespace tollgate::cloud
