// Host-side checks without I/O: command-line arguments, and the verification
// of device answers (THREATS A5, host side: forged responses are refused).
#include "tests/hostpc/host_testkit.hpp"

using namespace tollgate;
using namespace tollgate::host;
using namespace tollgate::hosttest;

namespace {

Bytes signed_response(const crypto::PrivateKey& key, ByteView request,
                      v1::CommandResponse::Status status = v1::CommandResponse::STATUS_OK) {
  v1::CommandResponse r;
  r.set_request_hash(str(request_hash(request)));
  r.set_status(status);
  if (status != v1::CommandResponse::STATUS_OK) r.set_error(v1::ERROR_NO_VALID_TOKEN);
  r.set_result("result 7");
  r.set_uses_left(4);
  r.set_next_nonce(std::string(12, 'n'));
  return sign_bytes(v1::Signed::TYPE_COMMAND_RESPONSE, r, key);
}

Bytes signed_status(const crypto::PrivateKey& key, ByteView challenge) {
  v1::StatusReport s;
  s.set_device_id(str(uuid(1, 0xDE)));
  s.set_device_public_key(str(key.public_key().spki_der()));
  s.set_firmware_version("1.0");
  s.set_device_time(kT0);
  s.set_nonce(std::string(12, 'n'));
  s.set_challenge(str(challenge));
  return sign_bytes(v1::Signed::TYPE_STATUS_RESPONSE, s, key);
}

const Bytes kRequest = {0x0a, 0x01, 0x02, 0x03};

}  // namespace

TEST_CASE("named arguments become the arguments map") {
  std::string err;
  auto s = parse_command_args({"run-assay", "--protocol", "elisa", "--sample=S1"}, &err);
  REQUIRE(s.has_value());
  CHECK(s->command == "run-assay");
  CHECK(s->arguments ==
        std::map<std::string, std::string>{{"protocol", "elisa"}, {"sample", "S1"}});
}

TEST_CASE("one bare value becomes argument id") {
  std::string err;
  auto s = parse_command_args({"get-result", "12"}, &err);
  REQUIRE(s.has_value());
  CHECK(s->arguments == std::map<std::string, std::string>{{"id", "12"}});
  auto none = parse_command_args({"status"}, &err);
  REQUIRE(none.has_value());
  CHECK(none->arguments.empty());
}

TEST_CASE("malformed command lines are refused with a reason") {
  std::string err;
  CHECK_FALSE(parse_command_args({}, &err).has_value());
  CHECK_FALSE(parse_command_args({"--protocol", "x"}, &err).has_value());
  CHECK_FALSE(parse_command_args({"run-assay", "--protocol"}, &err).has_value());
  CHECK(err.find("--protocol") != std::string::npos);
  CHECK_FALSE(parse_command_args({"run-assay", "--a", "1", "--a", "2"}, &err).has_value());
  CHECK_FALSE(parse_command_args({"get-result", "1", "2"}, &err).has_value());
  CHECK_FALSE(parse_command_args({"get-result", "1", "--id", "2"}, &err).has_value());
}

TEST_CASE("request ids are nonzero and fit 32 bits") {
  for (int i = 0; i < 100; ++i) {
    const auto id = new_request_id();
    CHECK(id != 0);
    CHECK(id <= 0xFFFFFFFFu);
  }
}

TEST_CASE("a genuine response verifies and parses") {
  auto device = make_key();
  auto r = verify_response(signed_response(device, kRequest), request_hash(kRequest),
                           device.public_key());
  REQUIRE(r.ok());
  CHECK(r->result() == "result 7");
  CHECK(r->uses_left() == 4);
}

TEST_CASE("flipping any bit of a device response gets it refused") {
  auto device = make_key();
  const Bytes good = signed_response(device, kRequest);
  const Bytes hash = request_hash(kRequest);
  int accepted = 0;
  for (std::size_t i = 0; i < good.size() * 8; ++i) {
    Bytes bad = good;
    bad[i / 8] = static_cast<std::uint8_t>(bad[i / 8] ^ (1u << (i % 8)));
    if (verify_response(bad, hash, device.public_key()).ok()) ++accepted;
  }
  CHECK(accepted == 0);
}

TEST_CASE("a response bound to another request is refused") {
  auto device = make_key();
  const Bytes other = {0x0a, 0x01, 0x02, 0x04};
  auto r =
      verify_response(signed_response(device, other), request_hash(kRequest), device.public_key());
  CHECK(r.error() == v1::ERROR_BAD_SIGNATURE);
}

TEST_CASE("a response signed by a key other than the pinned one is refused") {
  auto device = make_key();
  auto impostor = make_key();
  auto r = verify_response(signed_response(impostor, kRequest), request_hash(kRequest),
                           device.public_key());
  CHECK(r.error() == v1::ERROR_UNKNOWN_SIGNER);
}

TEST_CASE("a signed status report is not accepted as a command response") {
  auto device = make_key();
  auto r =
      verify_response(signed_status(device, kRequest), request_hash(kRequest), device.public_key());
  CHECK(r.error() == v1::ERROR_WRONG_TYPE);
}

TEST_CASE("a rejection without a reason is refused as malformed") {
  auto device = make_key();
  v1::CommandResponse r;
  r.set_request_hash(str(request_hash(kRequest)));
  r.set_status(v1::CommandResponse::STATUS_REJECTED);
  const Bytes b = sign_bytes(v1::Signed::TYPE_COMMAND_RESPONSE, r, device);
  CHECK(verify_response(b, request_hash(kRequest), device.public_key()).error() ==
        v1::ERROR_MALFORMED);
}

TEST_CASE("a status report verifies under its own key at first contact and under the pin later") {
  auto device = make_key();
  const Bytes challenge(16, 0x42);
  const Bytes report = signed_status(device, challenge);
  auto first = verify_status(report, challenge, nullptr);
  REQUIRE(first.ok());
  CHECK(first->firmware_version() == "1.0");
  auto pinned = verify_status(report, challenge, &device.public_key());
  CHECK(pinned.ok());
}

TEST_CASE("a status report under an unpinned key is refused") {
  auto device = make_key();
  auto impostor = make_key();
  const Bytes challenge(16, 0x42);
  auto r = verify_status(signed_status(impostor, challenge), challenge, &device.public_key());
  CHECK(r.error() == v1::ERROR_UNKNOWN_SIGNER);
}

TEST_CASE("a status report with a stale challenge or a flipped bit is refused") {
  auto device = make_key();
  const Bytes challenge(16, 0x42);
  const Bytes report = signed_status(device, challenge);
  CHECK(verify_status(report, Bytes(16, 0x43), nullptr).error() == v1::ERROR_STALE_NONCE);
  int accepted = 0;
  for (std::size_t i = 0; i < report.size() * 8; i += 3) {
    Bytes bad = report;
    bad[i / 8] = static_cast<std::uint8_t>(bad[i / 8] ^ (1u << (i % 8)));
    if (verify_status(bad, challenge, &device.public_key()).ok()) ++accepted;
  }
  CHECK(accepted == 0);
}

TEST_CASE("the unauthorized errors are the ones that make the host offer tokens") {
  CHECK(is_unauthorized(v1::ERROR_NO_VALID_TOKEN));
  CHECK(is_unauthorized(v1::ERROR_AUTHORIZATION_NOT_INSTALLED));
  CHECK_FALSE(is_unauthorized(v1::ERROR_STALE_NONCE));
  CHECK_FALSE(is_unauthorized(v1::ERROR_BAD_SIGNATURE));
  CHECK(kills_token(v1::ERROR_WRONG_DEVICE));
  CHECK_FALSE(kills_token(v1::ERROR_AUTHORIZATION_NOT_INSTALLED));
}
