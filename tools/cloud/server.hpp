// The HTTPS front of the authority: Boost.Beast over Asio SSL (TLS 1.2+),
// handing each request to Authority::handle on a small pool of threads.
//
// Limits, on by default: request header block <= header_limit (else 431),
// body <= body_limit (else 413), each request (and the TLS handshake) must
// arrive within request_deadline (else the connection is closed), at most
// max_connections at once (extra ones are closed at accept). Errors before the
// request parses are answered with the same {error, message} JSON as the API.
//
// Beast lives only in server.cpp; this header is cheap to include.
#pragma once

#include <chrono>
#include <cstdint>
#include <memory>
#include <string>

#include "tools/cloud/authority.hpp"

namespace tollgate::cloud {

struct ServerOptions {
  std::string address = "127.0.0.1";
  std::uint16_t port = 8443;  // 0: pick a free port (see HttpsServer::port)
  std::string cert_chain_pem;
  std::string private_key_pem;
  unsigned threads = 4;
  std::size_t header_limit = 8 * 1024;
  std::size_t body_limit = 64 * 1024;
  std::chrono::milliseconds request_deadline{10000};
  unsigned max_connections = 512;
};

class HttpsServer {
 public:
  // Binds and listens (throws std::runtime_error on a bad address, a busy port
  // or an unusable certificate/key). Serving starts with start().
  HttpsServer(Authority& authority, ServerOptions options);
  ~HttpsServer();  // stops and joins
  HttpsServer(const HttpsServer&) = delete;
  HttpsServer& operator=(const HttpsServer&) = delete;

  std::uint16_t port() const;  // the bound port
  void start();                // runs the pool in background threads
  void stop();                 // closes the listener and every connection, joins

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace tollgate::cloud
