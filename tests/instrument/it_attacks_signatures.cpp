// THREATS A4, A5, A10, A11, A15 mounted through the virtual bus against the
// real tollgate-instrument process: wrong keys, flipped bits, algorithm
// confusion, signatures reused across object types and a flood of bad
// signatures. Each case shows nothing ran or was charged, the specific signed
// error, and the audit records (exported over the link, device signature and
// hash chain verified).
#include <doctest/doctest.h>
#include <openssl/evp.h>
#include <openssl/rsa.h>
#include <openssl/x509.h>

#include <set>

#include "tests/instrument/peer.hpp"

namespace {

using namespace tollgate;
using namespace tollgate::attack;
using Kind = v1::AuditRecord;

// An RSA-1024 public key: parses, but is below every role's minimum.
crypto::PublicKey rsa1024() {
  EVP_PKEY* raw = EVP_RSA_gen(1024);
  REQUIRE(raw != nullptr);
  unsigned char* der = nullptr;
  const int len = i2d_PUBKEY(raw, &der);
  EVP_PKEY_free(raw);
  REQUIRE(len > 0);
  auto key = crypto::PublicKey::from_spki_der(ByteView(der, static_cast<std::size_t>(len)));
  OPENSSL_free(der);
  REQUIRE(key.ok());
  return std::move(*key);
}

TEST_CASE("A4 command signed with a key other than the token's user key is rejected") {
  Rig rig;
  Peer peer(rig);
  const Bytes token = ready(peer, 3);
  const Snapshot before = peer.snapshot();

  // Claims the token user's key id, signed by another key.
  peer.bugs.sign_with_other_user_key = true;
  expect_rejected(peer.command("run-assay", assay_args()), v1::ERROR_BAD_SIGNATURE);
  peer.bugs.sign_with_other_user_key = false;
  // Names its own key, which no token on the device carries.
  const auto other = testkit::make_key();
  peer.user = &other;
  expect_rejected(peer.command("run-assay", assay_args()), v1::ERROR_NO_VALID_TOKEN);
  peer.user = nullptr;

  const AuditLog log = peer.export_audit();
  expect_nothing_executed(rig, before, log);
  CHECK(log.rejections_since(before.audit_seq, Kind::KIND_COMMAND, v1::ERROR_BAD_SIGNATURE) == 1);
  CHECK(log.rejections_since(before.audit_seq, Kind::KIND_COMMAND, v1::ERROR_NO_VALID_TOKEN) == 1);
  CHECK(peer.probe_token(token).first == 3);
}

// Errors a flipped bit anywhere in an envelope may produce: each names what broke.
const std::set<Error>& flip_errors() {
  static const std::set<Error> errors{v1::ERROR_MALFORMED,
                                      v1::ERROR_BAD_SIGNATURE,
                                      v1::ERROR_UNKNOWN_SIGNER,
                                      v1::ERROR_ALGORITHM_MISMATCH,
                                      v1::ERROR_WRONG_TYPE,
                                      v1::ERROR_NO_VALID_TOKEN,
                                      v1::ERROR_AUTHORIZATION_NOT_INSTALLED,
                                      v1::ERROR_ALGORITHM_NOT_ALLOWED};
  return errors;
}

struct FlipPlan {
  std::vector<std::pair<std::size_t, Error>> targeted;  // bit, the one error it must give
  std::vector<std::size_t> sweep;                       // bits: any error of flip_errors()
};

// The middle of every field with its specific error, and one bit of every `stride`-th byte
// (the bit rotates with the byte index).
FlipPlan plan(const Bytes& sample, Error signer_error, std::size_t stride) {
  FlipPlan p;
  p.targeted = {{bit_in(sample, Field::kBody), v1::ERROR_BAD_SIGNATURE},
                {bit_in(sample, Field::kSignature), v1::ERROR_BAD_SIGNATURE},
                {bit_in(sample, Field::kSignerKeyId), signer_error},
                {bit_in(sample, Field::kAlgorithm), v1::ERROR_ALGORITHM_MISMATCH},
                {bit_in(sample, Field::kType), v1::ERROR_WRONG_TYPE}};
  for (std::size_t i = 0; i < sample.size(); i += stride) p.sweep.push_back(i * 8 + i % 8);
  return p;
}

template <class Send>
std::size_t mount(const FlipPlan& p, Send&& send) {
  std::size_t sent = 0;
  for (const auto& [bit, error] : p.targeted) {
    CAPTURE(bit);
    expect_rejected(send(bit), error);
    ++sent;
  }
  for (std::size_t bit : p.sweep) {
    CAPTURE(bit);
    const Reply r = send(bit);
    INFO("reply: " << describe(r));
    REQUIRE(r.verified());
    CHECK(r.status() == v1::CommandResponse::STATUS_REJECTED);
    CHECK(flip_errors().count(r.error()) == 1);
    ++sent;
  }
  return sent;
}

std::size_t rejections(const AuditLog& log, std::uint64_t since, Kind::Kind kind) {
  std::size_t n = 0;
  for (const auto& r : log.since(since, kind)) n += r.accepted() ? 0 : 1;
  return n;
}

TEST_CASE("A5 flipped bits in a token, command, authorization or response are rejected") {
  // Hundreds of bad signatures in a row: keep the back-off out of the way here (A15 covers it).
  RigOptions options;
  options.config = "[backoff]\nthreshold = 1000\n";
  Rig rig(options);
  Peer peer(rig);
  const Snapshot before = peer.snapshot();

  SUBCASE("authorization") {
    const std::size_t n =
        mount(plan(rig.authorization(), v1::ERROR_UNKNOWN_SIGNER, 1), [&](auto bit) {
          peer.bugs.flip_bit = BitFlip{Object::kAuthorization, bit};
          return peer.install(peer.authorization());
        });
    peer.bugs.flip_bit.reset();
    const v1::StatusReport status = peer.status();
    CHECK(status.authorizations().empty());
    CHECK(status.revoked_ids().empty());
    const AuditLog log = peer.export_audit();
    CHECK(rejections(log, before.audit_seq, Kind::KIND_INSTALL_AUTHORIZATION) == n);
    CHECK(peer.install(rig.authorization()).ok());  // the genuine one still installs
  }
  SUBCASE("token") {
    REQUIRE(peer.install(rig.authorization()).ok());
    const Snapshot start = peer.snapshot();
    const std::size_t n = mount(plan(rig.token(1), v1::ERROR_UNKNOWN_SIGNER, 1), [&](auto bit) {
      peer.bugs.flip_bit = BitFlip{Object::kToken, bit};
      return peer.offer_token(peer.token(1));
    });
    peer.bugs.flip_bit.reset();
    const AuditLog log = peer.export_audit();
    CHECK(rejections(log, start.audit_seq, Kind::KIND_OFFER_TOKEN) == n);
    // Nothing was stored: the genuine token arrives fresh, with all its uses.
    const Reply genuine = peer.offer_token(rig.token(1));
    REQUIRE(genuine.ok());
    CHECK(genuine.offer->outcomes(0).uses_left() == 3);
  }
  SUBCASE("command") {
    const Bytes token = ready(peer, 3);
    const Snapshot start = peer.snapshot();
    const Bytes sample = peer.prepare_command("run-assay", assay_args());
    const std::size_t n = mount(plan(sample, v1::ERROR_NO_VALID_TOKEN, 1), [&](auto bit) {
      peer.bugs.flip_bit = BitFlip{Object::kCommand, bit};
      return peer.command("run-assay", assay_args());
    });
    peer.bugs.flip_bit.reset();
    const AuditLog log = peer.export_audit();
    expect_nothing_executed(rig, start, log);
    CHECK(rejections(log, start.audit_seq, Kind::KIND_COMMAND) == n);
    CHECK(peer.probe_token(token).first == 3);
  }
  SUBCASE("response, on its way back to the host") {
    const Bytes token = ready(peer, 3);
    const Reply genuine = peer.command("run-assay", assay_args());
    REQUIRE(genuine.ok());
    // The host library refuses every single-bit change of the signed response.
    const Bytes hash = host::request_hash(genuine.request);
    for (std::size_t bit = 0; bit < genuine.signed_response.size() * 8; ++bit) {
      CAPTURE(bit);
      auto v = host::verify_response(flip(genuine.signed_response, bit), hash, rig.device_key());
      CHECK_FALSE(v.ok());
    }
    // Through the peer: a forged answer is not believed; the host retries with
    // the same bytes and gets the genuine one, without a second run or charge.
    const Snapshot start = peer.snapshot();
    peer.bugs.flip_bit = BitFlip{Object::kResponse, bit_in(genuine.signed_response, Field::kBody)};
    const Reply forged = peer.command("run-assay", {{"protocol", "elisa"}, {"sample", "S2"}});
    CHECK_FALSE(forged.verified());
    CHECK(error_name(forged.verify_error) == error_name(v1::ERROR_BAD_SIGNATURE));
    peer.bugs.flip_bit.reset();
    const Reply retried = peer.send_command(forged.request);
    REQUIRE(retried.ok());
    CHECK(retried.uses_left() == 1);
    const AuditLog log = peer.export_audit();
    CHECK(log.since(start.audit_seq, Kind::KIND_EXECUTION).size() == 1);
    CHECK(log.since(start.audit_seq, Kind::KIND_REPLAY).size() == 1);
    CHECK(peer.probe_token(token).first == 1);
  }
}

TEST_CASE("A10 algorithm label that does not match the key, or a weak key, is rejected") {
  Rig rig;
  Peer peer(rig);
  const Bytes token = ready(peer, 3);
  const Snapshot before = peer.snapshot();

  // The envelope says RSA-PSS; the keys are Ed25519.
  const auto cloud5 = testkit::make_key();
  peer.bugs.alg_label_mismatch = true;
  expect_rejected(peer.command("run-assay", assay_args()), v1::ERROR_ALGORITHM_MISMATCH);
  expect_rejected(peer.offer_token(peer.token(2)), v1::ERROR_ALGORITHM_MISMATCH);
  expect_rejected(peer.install(peer.authorization(5, {}, &cloud5)), v1::ERROR_ALGORITHM_MISMATCH);
  peer.bugs.alg_label_mismatch = false;

  // Genuine signatures over keys below the policy: RSA-1024 as user and as cloud key.
  const auto weak = rsa1024();
  expect_rejected(peer.offer_token(peer.token_for(weak, 3)), v1::ERROR_KEY_TOO_WEAK);
  expect_rejected(
      peer.install(testkit::sign_authorization(rig.master, testkit::authorization_body(6, weak))),
      v1::ERROR_KEY_TOO_WEAK);

  const AuditLog log = peer.export_audit();
  expect_nothing_executed(rig, before, log);
  CHECK(log.rejections_since(before.audit_seq, Kind::KIND_COMMAND, v1::ERROR_ALGORITHM_MISMATCH) ==
        1);
  CHECK(log.rejections_since(before.audit_seq, Kind::KIND_OFFER_TOKEN,
                             v1::ERROR_ALGORITHM_MISMATCH) == 1);
  CHECK(log.rejections_since(before.audit_seq, Kind::KIND_INSTALL_AUTHORIZATION,
                             v1::ERROR_ALGORITHM_MISMATCH) == 1);
  CHECK(log.rejections_since(before.audit_seq, Kind::KIND_OFFER_TOKEN, v1::ERROR_KEY_TOO_WEAK) ==
        1);
  CHECK(log.rejections_since(before.audit_seq, Kind::KIND_INSTALL_AUTHORIZATION,
                             v1::ERROR_KEY_TOO_WEAK) == 1);
  const v1::StatusReport status = peer.status();
  REQUIRE(status.authorizations_size() == 1);
  CHECK(status.authorizations(0).id() == 1);
  CHECK(peer.probe_token(token).first == 3);
}

TEST_CASE("A11 signature made over one object type is not accepted as another") {
  Rig rig;
  Peer peer(rig);
  const Bytes token = ready(peer, 3);
  const Snapshot before = peer.snapshot();

  // The user's signature over the command bytes under the DeviceToken label,
  // relabelled as a command: the command label is in the signing input.
  peer.bugs.reuse_signature_across_types = true;
  expect_rejected(peer.command("run-assay", assay_args()), v1::ERROR_BAD_SIGNATURE);
  peer.bugs.reuse_signature_across_types = false;

  // Genuine objects offered as something else: the type is checked first.
  const Bytes command = peer.prepare_command("run-assay", assay_args());
  expect_rejected(peer.send_command(token), v1::ERROR_WRONG_TYPE);
  expect_rejected(peer.install(command), v1::ERROR_WRONG_TYPE);
  expect_rejected(peer.offer_token(rig.authorization()), v1::ERROR_WRONG_TYPE);

  // A device-signed status report passed off to the host as a command response.
  v1::HostMessage get;
  get.mutable_get_status()->set_challenge("0123456789abcdef");
  v1::DeviceMessage answer;
  const Bytes raw = peer.raw([&] {
    const std::string s = get.SerializeAsString();
    return Bytes(s.begin(), s.end());
  }());
  REQUIRE(answer.ParseFromArray(raw.data(), static_cast<int>(raw.size())));
  REQUIRE(answer.has_status());
  const Bytes status_bytes(answer.status().begin(), answer.status().end());
  const Bytes some_hash = host::request_hash(command);
  CHECK(host::verify_response(status_bytes, some_hash, rig.device_key()).error() ==
        v1::ERROR_WRONG_TYPE);
  auto relabelled = parse_signed(status_bytes);
  REQUIRE(relabelled.ok());
  relabelled->set_type(v1::Signed::TYPE_COMMAND_RESPONSE);
  CHECK(
      host::verify_response(testkit::serialize(*relabelled), some_hash, rig.device_key()).error() ==
      v1::ERROR_BAD_SIGNATURE);

  const AuditLog log = peer.export_audit();
  expect_nothing_executed(rig, before, log);
  CHECK(log.rejections_since(before.audit_seq, Kind::KIND_COMMAND, v1::ERROR_BAD_SIGNATURE) == 1);
  CHECK(log.rejections_since(before.audit_seq, Kind::KIND_COMMAND, v1::ERROR_WRONG_TYPE) == 1);
  CHECK(log.rejections_since(before.audit_seq, Kind::KIND_INSTALL_AUTHORIZATION,
                             v1::ERROR_WRONG_TYPE) == 1);
  CHECK(log.rejections_since(before.audit_seq, Kind::KIND_OFFER_TOKEN, v1::ERROR_WRONG_TYPE) == 1);
  CHECK(peer.probe_token(token).first == 3);
}

TEST_CASE(
    "A15 flood of bad signatures is slowed and audited, and the legitimate user is served "
    "afterwards") {
  RigOptions options;
  options.config = "[backoff]\nthreshold = 3\ninitial_ms = 20\nmax_ms = 80\n";
  Rig rig(options);
  Peer peer(rig);
  const Bytes token = ready(peer, 5);
  const Snapshot before = peer.snapshot();

  // Six bad signatures, then the genuine user's command.
  peer.bugs.bad_signature_flood = 6;
  const Reply served = peer.command("run-assay", assay_args());
  peer.bugs.bad_signature_flood = 0;
  REQUIRE(peer.flood_replies.size() == 6);
  for (const auto& r : peer.flood_replies) expect_rejected(r, v1::ERROR_BAD_SIGNATURE);
  REQUIRE_MESSAGE(served.ok(), describe(served));
  CHECK(served.uses_left() == 4);

  // Each escalation is in the log: from the 3rd failure 20 ms, doubling, capped at 80 ms.
  AuditLog log = peer.export_audit();
  const auto slowdowns = log.since(before.audit_seq, Kind::KIND_RATE_LIMIT);
  REQUIRE(slowdowns.size() == 3);
  const char* expected[] = {"delay_ms=20 failures=3", "delay_ms=40 failures=4",
                            "delay_ms=80 failures=5"};
  for (std::size_t i = 0; i < slowdowns.size(); ++i) {
    CAPTURE(slowdowns[i].command());
    CHECK_FALSE(slowdowns[i].accepted());
    CHECK(slowdowns[i].reason() == v1::ERROR_BAD_SIGNATURE);
    CHECK(slowdowns[i].command().find(expected[i]) != std::string::npos);
    CHECK(slowdowns[i].command().find("link=vbus:") != std::string::npos);
  }
  CHECK(log.rejections_since(before.audit_seq, Kind::KIND_COMMAND, v1::ERROR_BAD_SIGNATURE) == 6);
  CHECK(log.since(before.audit_seq, Kind::KIND_EXECUTION).size() == 1);
  CHECK(rig.result_count() == before.results + 1);

  // The verified command ended the back-off: two more failures stay below the threshold.
  const Snapshot after = peer.snapshot();
  peer.bugs.bad_signature_flood = 2;
  CHECK(peer.command("status").ok());
  peer.bugs.bad_signature_flood = 0;
  log = peer.export_audit();
  CHECK(log.since(after.audit_seq, Kind::KIND_RATE_LIMIT).empty());
  CHECK(peer.probe_token(token).first == 4);
}

}  // namespace
