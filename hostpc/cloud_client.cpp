#include "hostpc/cloud_client.hpp"

#include <boost/asio.hpp>
#include <boost/asio/ssl.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <boost/beast/ssl.hpp>
#include <boost/json.hpp>
#include <boost/url/parse.hpp>

// GCC 12 flags coroutine frame allocation as mismatched with its operator
// delete: a known false positive on coroutine ramps (as in main.cpp).
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic ignored "-Wmismatched-new-delete"
#endif

namespace tollgate::host {

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace http = beast::http;
namespace ssl = asio::ssl;
namespace json = boost::json;
using tcp = asio::ip::tcp;

namespace {

// Answers are small (16 tokens of a few hundred bytes); a bigger one is garbage.
constexpr std::size_t kMaxAnswerBody = 1024 * 1024;

CloudError error(CloudFailure kind, std::string message, int status = 0, std::string code = {}) {
  return CloudError{kind, status, std::move(code), std::move(message)};
}

}  // namespace

std::optional<CloudUrl> parse_cloud_url(const std::string& url, std::string* err) {
  auto fail = [&](const std::string& why) -> std::optional<CloudUrl> {
    if (err) *err = "--cloud " + url + ": " + why;
    return std::nullopt;
  };
  auto u = boost::urls::parse_uri(url);
  if (!u) return fail("not a URL");
  if (u->scheme() != "https") return fail("only https:// is supported");
  if (u->has_userinfo() || u->has_query() || u->has_fragment()) {
    return fail("expected https://HOST[:PORT]");
  }
  if (!u->path().empty() && u->path() != "/") return fail("expected no path");
  CloudUrl out;
  out.host = u->host_address();
  if (out.host.empty()) return fail("no host");
  if (u->has_port()) {
    if (u->port_number() == 0) return fail("bad port");
    out.port = u->port_number();
  }
  return out;
}

struct CloudClient::Impl {
  explicit Impl(CloudClientOptions o) : options(std::move(o)), tls(ssl::context::tls_client) {}

  // Where a failure happened decides what it means to the user.
  enum class Phase { kConnect, kHandshake, kWrite, kRead };

  CloudClientOptions options;
  ssl::context tls;
  std::optional<std::string> setup_error;
};

CloudClient::CloudClient(CloudClientOptions options)
    : impl_(std::make_unique<Impl>(std::move(options))) {
  boost::system::error_code ec;
  if (impl_->options.ca_pem.empty()) {
    impl_->tls.set_default_verify_paths(ec);
  } else {
    impl_->tls.add_certificate_authority(asio::buffer(impl_->options.ca_pem), ec);
  }
  if (ec) impl_->setup_error = "the CA certificate is unusable: " + ec.message();
  impl_->tls.set_verify_mode(ssl::verify_peer, ec);
  if (ec) impl_->setup_error = "cannot require certificate verification: " + ec.message();
  if (SSL_CTX_set_min_proto_version(impl_->tls.native_handle(), TLS1_2_VERSION) != 1) {
    impl_->setup_error = "cannot set the TLS minimum version";
  }
}

CloudClient::~CloudClient() = default;

CloudResult CloudClient::call(const std::string& method, const std::string& target,
                              const json::object* body, const std::string& bearer) {
  using Phase = Impl::Phase;
  if (impl_->setup_error) return error(CloudFailure::kGarbage, *impl_->setup_error);
  const auto& opt = impl_->options;

  http::request<http::string_body> req{http::string_to_verb(method), target, 11};
  req.set(http::field::host, opt.url.host);
  req.keep_alive(false);
  if (!bearer.empty()) req.set(http::field::authorization, "Bearer " + bearer);
  if (body) {
    req.set(http::field::content_type, "application/json");
    req.body() = json::serialize(*body);
  }
  req.prepare_payload();

  asio::io_context ioc;
  beast::ssl_stream<beast::tcp_stream> stream(ioc, impl_->tls);
  // SNI is for names only; an IP literal is checked against the IP SANs.
  boost::system::error_code addr_ec;
  asio::ip::make_address(opt.url.host, addr_ec);
  if (addr_ec && !SSL_set_tlsext_host_name(stream.native_handle(), opt.url.host.c_str())) {
    return error(CloudFailure::kGarbage, "cannot set the TLS server name");
  }
  stream.set_verify_callback(ssl::host_name_verification(opt.url.host));

  Phase phase = Phase::kConnect;
  http::response_parser<http::string_body> parser;
  parser.body_limit(kMaxAnswerBody);
  beast::flat_buffer buffer;
  std::exception_ptr failure;
  auto run = [&]() -> asio::awaitable<void> {
    tcp::resolver resolver(ioc);
    auto endpoints = co_await resolver.async_resolve(opt.url.host, std::to_string(opt.url.port),
                                                     asio::use_awaitable);
    beast::get_lowest_layer(stream).expires_after(opt.timeout);
    co_await beast::get_lowest_layer(stream).async_connect(endpoints, asio::use_awaitable);
    phase = Phase::kHandshake;
    beast::get_lowest_layer(stream).expires_after(opt.timeout);
    co_await stream.async_handshake(ssl::stream_base::client, asio::use_awaitable);
    phase = Phase::kWrite;
    beast::get_lowest_layer(stream).expires_after(opt.timeout);
    co_await http::async_write(stream, req, asio::use_awaitable);
    phase = Phase::kRead;
    co_await http::async_read(stream, buffer, parser, asio::use_awaitable);
  };
  asio::co_spawn(ioc, run(), [&](std::exception_ptr e) { failure = e; });
  ioc.run();

  if (failure) {
    std::string what;
    bool timed_out = false;
    try {
      std::rethrow_exception(failure);
    } catch (const boost::system::system_error& e) {
      what = e.code().message();
      timed_out = e.code() == beast::error::timeout;
    } catch (const std::exception& e) {
      what = e.what();
    }
    const std::string where = opt.url.host + ":" + std::to_string(opt.url.port);
    if (phase == Phase::kConnect) {
      return error(CloudFailure::kUnreachable, "cloud unreachable at " + where + ": " + what);
    }
    if (timed_out) {
      return error(CloudFailure::kUnreachable, "the cloud at " + where + " did not answer in time");
    }
    if (phase == Phase::kHandshake) {
      return error(CloudFailure::kGarbage, "TLS handshake with " + where +
                                               " failed (not the cloud, or an untrusted "
                                               "certificate): " +
                                               what);
    }
    if (phase == Phase::kWrite) {
      return error(CloudFailure::kUnreachable,
                   "the cloud at " + where + " dropped the request: " + what);
    }
    return error(CloudFailure::kGarbage, "the cloud's answer is not valid HTTP: " + what);
  }

  const int status = static_cast<int>(parser.get().result_int());
  const std::string& text = parser.get().body();
  boost::system::error_code jec;
  json::value v = json::parse(text, jec);
  const json::object* obj = (!jec && v.is_object()) ? &v.as_object() : nullptr;
  if (status >= 200 && status < 300) {
    if (!obj)
      return error(CloudFailure::kGarbage, "the cloud's answer is not a JSON object", status);
    return *obj;
  }
  if (status >= 400 && status < 600) {
    std::string code, message;
    if (obj) {
      if (auto* c = obj->if_contains("error"); c && c->is_string()) code = c->as_string().c_str();
      if (auto* m = obj->if_contains("message"); m && m->is_string())
        message = m->as_string().c_str();
    }
    if (code.empty()) {
      return error(CloudFailure::kGarbage,
                   "the cloud answered " + std::to_string(status) + " without an error code",
                   status);
    }
    const auto kind = status >= 500 ? CloudFailure::kUnreachable : CloudFailure::kRefused;
    return error(kind,
                 "the cloud refused (" + std::to_string(status) + " " + code + "): " + message,
                 status, code);
  }
  return error(CloudFailure::kGarbage, "unexpected HTTP status " + std::to_string(status), status);
}

}  // namespace tollgate::host
