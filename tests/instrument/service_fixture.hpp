// A provisioned instrument for service and server tests: trust keys, a real
// SqliteStore in a temporary folder (synchronous=NORMAL: these tests need no
// power-cut durability), the InstrumentService, simulated time, and host-side
// helpers that sign requests and verify the device's answers.
#pragma once

#include <doctest/doctest.h>
#include <stdlib.h>

#include <chrono>
#include <filesystem>

#include "instrument/audit.hpp"
#include "instrument/service.hpp"
#include "tests/gateway/testkit.hpp"

namespace tollgate::instrument::servicetest {

using namespace tollgate::testkit;

struct TempDir {
  std::filesystem::path path;
  TempDir() {
    std::string t = (std::filesystem::temp_directory_path() / "tg-service-XXXXXX").string();
    REQUIRE(mkdtemp(t.data()) != nullptr);
    path = t;
  }
  ~TempDir() {
    std::error_code ec;
    std::filesystem::remove_all(path, ec);
  }
};

inline std::string s(ByteView b) {
  return std::string(as_chars(b));
}

// One provisioned device: trust keys, a store, a gateway and the service.
struct Device {
  TempDir dir;
  crypto::PrivateKey master = make_key();
  crypto::PrivateKey cloud = make_key();
  crypto::PrivateKey user = make_key();
  crypto::PrivateKey device_key = make_key();
  Bytes device = uuid(0xD1);
  std::unique_ptr<SqliteStore> store;
  std::unique_ptr<InstrumentService> service;
  Gateway* gw = nullptr;  // the service's
  LinkContext link;
  std::uint64_t next_request_id = 1000;
  std::uint64_t seed = 7;
  UnixTime clock = kT0;

  Device() { open(); }

  // (Re)starts from what the database holds, as after a power cycle.
  void open() {
    service.reset();
    gw = nullptr;
    store.reset();
    SqliteStore::Options o;
    o.durable = false;
    auto st = SqliteStore::open((dir.path / "state.db").string(), o);
    REQUIRE(st.ok());
    store = std::move(*st);
    auto opened = InstrumentService::open(
        *store, GatewaySetup{device, masters_of(master), DevicePolicy{}, seeded_random(seed++)},
        device_key, "sim 1.0", simulated_instrument_commands());
    REQUIRE(opened.ok());
    service = std::move(*opened);
    gw = &service->gateway();
    link = LinkContext{};
    link.name = "test";
  }

  v1::DeviceMessage send(const v1::HostMessage& m) {
    return send_raw(as_bytes(m.SerializeAsString()));
  }
  v1::DeviceMessage send_raw(ByteView bytes) {
    link.monotonic_us += 1000;
    Bytes out = service->handle(bytes, clock, link);
    last_reply = out;
    v1::DeviceMessage d;
    REQUIRE(d.ParseFromArray(out.data(), static_cast<int>(out.size())));
    return d;
  }
  Bytes last_reply;

  // Verifies a device-signed object and returns its body.
  template <class Body>
  Body verified(const std::string& signed_bytes, v1::Signed::Type type) {
    auto sig = parse_signed(as_bytes(signed_bytes));
    REQUIRE(sig.ok());
    auto body = verify_and_parse<Body>(*sig, type, device_key.public_key(), AlgorithmPolicy{});
    REQUIRE(body.ok());
    return *body;
  }
  v1::CommandResponse response(const v1::DeviceMessage& d) {
    REQUIRE(d.kind_case() == v1::DeviceMessage::kResponse);
    return verified<v1::CommandResponse>(d.response(), v1::Signed::TYPE_COMMAND_RESPONSE);
  }

  v1::StatusReport status(std::string challenge = "0123456789abcdef") {
    v1::HostMessage m;
    m.mutable_get_status()->set_challenge(challenge);
    auto d = send(m);
    REQUIRE(d.kind_case() == v1::DeviceMessage::kStatus);
    return verified<v1::StatusReport>(d.status(), v1::Signed::TYPE_STATUS_RESPONSE);
  }

  Bytes authorization(std::uint64_t id = 1, std::vector<std::uint64_t> revoked = {}) {
    return sign_authorization(master, authorization_body(id, cloud.public_key(), kT0 - kDay,
                                                         kT0 + 365 * kDay, std::move(revoked)));
  }
  v1::CommandResponse install(const Bytes& auth) {
    v1::HostMessage m;
    m.set_install_authorization(s(auth));
    return response(send(m));
  }
  Bytes token(std::uint8_t tag = 1, std::uint32_t uses = 3, std::vector<std::string> roles = {},
              const crypto::PrivateKey* signer = nullptr) {
    auto t = token_body(tag, device, user.public_key(), 1, uses);
    for (const auto& r : roles) add_role(t, r);
    return sign_token(signer ? *signer : cloud, t);
  }
  v1::CommandResponse offer(std::vector<Bytes> tokens) {
    v1::HostMessage m;
    for (const auto& t : tokens) m.mutable_offer_tokens()->add_tokens(s(t));
    return response(send(m));
  }
  void ready(std::uint32_t uses = 3, std::vector<std::string> roles = {}) {
    REQUIRE(install(authorization()).status() == v1::CommandResponse::STATUS_OK);
    REQUIRE(offer({token(1, uses, roles)}).status() == v1::CommandResponse::STATUS_OK);
  }

  Bytes nonce;  // the next nonce, as the host would keep it
  Bytes command_bytes(const std::string& command, std::map<std::string, std::string> args = {},
                      const crypto::PrivateKey* signer = nullptr) {
    if (nonce.empty()) {
      auto st = status();
      nonce.assign(st.nonce().begin(), st.nonce().end());
    }
    return sign_request(signer ? *signer : user,
                        request_body(device, nonce, next_request_id++, command, std::move(args)));
  }
  v1::DeviceMessage send_command(const Bytes& signed_request) {
    v1::HostMessage m;
    m.set_command(s(signed_request));
    auto d = send(m);
    if (d.kind_case() == v1::DeviceMessage::kResponse) {
      auto r = response(d);
      nonce.assign(r.next_nonce().begin(), r.next_nonce().end());
    }
    return d;
  }
  v1::CommandResponse run(const std::string& command,
                          std::map<std::string, std::string> args = {}) {
    return response(send_command(command_bytes(command, std::move(args))));
  }

  std::vector<v1::AuditRecord> audit() {
    REQUIRE(service->idle(clock).ok());
    auto r = store->audit_records(0, 10'000);
    REQUIRE(r.ok());
    return *r;
  }
  std::size_t count(v1::AuditRecord::Kind kind) {
    std::size_t n = 0;
    for (const auto& r : audit()) n += r.kind() == kind ? 1 : 0;
    return n;
  }
};

}  // namespace tollgate::instrument::servicetest
