#include "tools/cloud/https_client.hpp"

#include <boost/asio.hpp>
#include <boost/asio/ssl.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <boost/beast/ssl.hpp>

#include <optional>
#include <stdexcept>

namespace tollgate::cloud {

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace http = beast::http;
namespace ssl = asio::ssl;
using tcp = asio::ip::tcp;

struct HttpsClient::Impl {
  explicit Impl(HttpsClientOptions o) : options(std::move(o)), tls(ssl::context::tls_client) {
    boost::system::error_code ec;
    tls.add_certificate_authority(asio::buffer(options.ca_pem), ec);
    if (ec) throw std::runtime_error("the CA certificate is unusable: " + ec.message());
    tls.set_verify_mode(ssl::verify_peer);
    if (SSL_CTX_set_min_proto_version(tls.native_handle(), TLS1_2_VERSION) != 1) {
      throw std::runtime_error("cannot set the TLS minimum version");
    }
  }

  // Runs `op` on our io_context until it finishes; the stream's deadline bounds it.
  template <class Op>
  void run(Op op) {
    std::exception_ptr failure;
    asio::co_spawn(ioc, std::move(op), [&](std::exception_ptr e) { failure = e; });
    ioc.restart();
    ioc.run();
    if (failure) std::rethrow_exception(failure);
  }

  asio::awaitable<void> connect() {
    stream.reset();
    buffer.clear();
    stream.emplace(ioc, tls);
    if (!SSL_set_tlsext_host_name(stream->native_handle(), options.server_name.c_str())) {
      throw std::runtime_error("cannot set the TLS server name");
    }
    stream->set_verify_callback(ssl::host_name_verification(options.server_name));
    tcp::resolver resolver(ioc);
    auto endpoints = co_await resolver.async_resolve(options.host, std::to_string(options.port),
                                                     asio::use_awaitable);
    beast::get_lowest_layer(*stream).expires_after(options.timeout);
    co_await beast::get_lowest_layer(*stream).async_connect(endpoints, asio::use_awaitable);
    co_await stream->async_handshake(ssl::stream_base::client, asio::use_awaitable);
  }

  asio::awaitable<void> exchange(http::request<http::string_body>& req, HttpReply& out) {
    beast::get_lowest_layer(*stream).expires_after(options.timeout);
    co_await http::async_write(*stream, req, asio::use_awaitable);
    http::response_parser<http::string_body> parser;
    parser.body_limit(16 * 1024 * 1024);
    co_await http::async_read(*stream, buffer, parser, asio::use_awaitable);
    out.status = static_cast<int>(parser.get().result_int());
    out.body = std::move(parser.get().body());
    if (!parser.get().keep_alive()) stream.reset();
  }

  HttpsClientOptions options;
  asio::io_context ioc;
  ssl::context tls;
  std::optional<beast::ssl_stream<beast::tcp_stream>> stream;
  beast::flat_buffer buffer;
};

HttpsClient::HttpsClient(HttpsClientOptions options)
    : impl_(std::make_unique<Impl>(std::move(options))) {}

HttpsClient::~HttpsClient() = default;

HttpReply HttpsClient::request(const std::string& method, const std::string& target,
                               const std::string& body, const std::string& bearer,
                               const std::vector<std::pair<std::string, std::string>>& headers) {
  http::request<http::string_body> req{http::string_to_verb(method), target, 11};
  req.set(http::field::host, impl_->options.server_name);
  req.keep_alive(true);
  if (!bearer.empty()) req.set(http::field::authorization, "Bearer " + bearer);
  if (!body.empty() || method == "POST") req.set(http::field::content_type, "application/json");
  for (const auto& [name, value] : headers) req.set(name, value);
  req.body() = body;
  req.prepare_payload();

  HttpReply out;
  // A kept-alive connection may have been closed by the server meanwhile:
  // one fresh attempt, never more (the API's POSTs are not all idempotent, but
  // a closed idle connection means the request never reached the handler).
  const bool reused = impl_->stream.has_value();
  try {
    impl_->run([&]() -> asio::awaitable<void> {
      if (!impl_->stream) co_await impl_->connect();
      co_await impl_->exchange(req, out);
    });
  } catch (const boost::system::system_error& e) {
    impl_->stream.reset();
    if (!reused) throw std::runtime_error(std::string("https: ") + e.what());
    try {
      impl_->run([&]() -> asio::awaitable<void> {
        co_await impl_->connect();
        co_await impl_->exchange(req, out);
      });
    } catch (const boost::system::system_error& e2) {
      impl_->stream.reset();
      throw std::runtime_error(std::string("https: ") + e2.what());
    }
  }
  return out;
}

}  // namespace tollgate::cloud
