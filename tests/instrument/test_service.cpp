// The instrument service driven directly: HostMessage bytes in, DeviceMessage
// bytes out, a real SqliteStore in a temporary folder, simulated time.
#include "tests/instrument/service_fixture.hpp"

using namespace tollgate;
using namespace tollgate::instrument;
using namespace tollgate::instrument::servicetest;
using namespace tollgate::testkit;

namespace {

Bytes first16(ByteView bytes) {
  auto h = crypto::sha256(bytes);
  return Bytes(h.begin(), h.begin() + 16);
}

// Classic CAN ISO-TP frames for one message plus its 4-byte CRC trailer:
// a single frame up to 7 bytes, else a first frame (6), consecutive frames
// (7 each) and one flow control from the receiver.
std::size_t classic_frames(std::size_t message_size) {
  std::size_t n = message_size + 4;
  if (n <= 7) return 1;
  return 1 + (n - 6 + 6) / 7 + 1;
}

}  // namespace

TEST_CASE("status needs no token and is signed by the device key with a fresh nonce") {
  Device d;
  auto st = d.status("challenge-1");
  CHECK(st.device_id() == s(d.device));
  CHECK(st.device_public_key() == s(d.device_key.public_key().spki_der()));
  CHECK(st.firmware_version() == "sim 1.0");
  CHECK(st.challenge() == "challenge-1");
  CHECK(st.nonce().size() == kNonceSize);
  CHECK(st.device_time() == kT0);
  CHECK(st.authorizations_size() == 0);
  CHECK(d.status().nonce() != st.nonce());
}

TEST_CASE("status lists installed authorizations and revoked ids") {
  Device d;
  REQUIRE(d.install(d.authorization(1, {7, 9})).status() == v1::CommandResponse::STATUS_OK);
  auto st = d.status();
  REQUIRE(st.authorizations_size() == 1);
  CHECK(st.authorizations(0).id() == 1);
  CHECK(st.authorizations(0).not_after() == kT0 + 365 * kDay);
  auto cloud_id = d.cloud.public_key().id();
  CHECK(st.authorizations(0).cloud_key_id() == std::string(cloud_id.begin(), cloud_id.end()));
  CHECK(std::vector<std::uint64_t>(st.revoked_ids().begin(), st.revoked_ids().end()) ==
        std::vector<std::uint64_t>{7, 9});
}

TEST_CASE("install answers with a signed decision bound to the authorization's hash") {
  Device d;
  Bytes auth = d.authorization();
  auto ok = d.install(auth);
  CHECK(ok.status() == v1::CommandResponse::STATUS_OK);
  CHECK(ok.request_hash() == s(first16(auth)));
  CHECK(ok.next_nonce().size() == kNonceSize);

  auto forged = sign_authorization(d.cloud, authorization_body(2, d.cloud.public_key()));
  auto no = d.install(forged);
  CHECK(no.status() == v1::CommandResponse::STATUS_REJECTED);
  CHECK(no.error() == v1::ERROR_UNKNOWN_SIGNER);
  CHECK(no.request_hash() == s(first16(forged)));
}

TEST_CASE("offered tokens get one outcome each, in order") {
  Device d;
  REQUIRE(d.install(d.authorization()).status() == v1::CommandResponse::STATUS_OK);
  auto stranger = make_key();
  auto r = d.offer({d.token(1, 3), d.token(2, 5, {}, &stranger)});
  CHECK(r.status() == v1::CommandResponse::STATUS_OK);
  v1::TokenOfferResult outcomes;
  REQUIRE(outcomes.ParseFromString(r.result()));
  REQUIRE(outcomes.outcomes_size() == 2);
  CHECK(outcomes.outcomes(0).token_id() == s(uuid(1)));
  CHECK(outcomes.outcomes(0).error() == v1::ERROR_UNSPECIFIED);
  CHECK(outcomes.outcomes(0).uses_left() == 3);
  CHECK(outcomes.outcomes(1).token_id() == s(uuid(2)));
  CHECK(outcomes.outcomes(1).error() == v1::ERROR_UNKNOWN_SIGNER);

  v1::HostMessage::OfferTokens sent;
  sent.add_tokens(s(d.token(1, 3)));
  sent.add_tokens(s(d.token(2, 5, {}, &stranger)));
  CHECK(r.request_hash() == s(first16(as_bytes(sent.SerializeAsString()))));
}

TEST_CASE("an offer where no token is accepted is rejected with the first token's reason") {
  Device d;
  auto r = d.offer({d.token(1)});
  CHECK(r.status() == v1::CommandResponse::STATUS_REJECTED);
  CHECK(r.error() == v1::ERROR_AUTHORIZATION_NOT_INSTALLED);
}

TEST_CASE("more than eight tokens in one offer are refused as too large") {
  Device d;
  REQUIRE(d.install(d.authorization()).status() == v1::CommandResponse::STATUS_OK);
  std::vector<Bytes> nine;
  for (std::uint8_t i = 1; i <= 9; ++i) nine.push_back(d.token(i));
  auto r = d.offer(nine);
  CHECK(r.status() == v1::CommandResponse::STATUS_REJECTED);
  CHECK(r.error() == v1::ERROR_TOO_LARGE);
  CHECK(d.gw->state().tokens.empty());
}

TEST_CASE("run-assay executes once, stores a result and returns its id") {
  Device d;
  d.ready(3);
  Bytes req = d.command_bytes("run-assay", {{"protocol", "elisa"}, {"sample", "S1"}});
  auto r = d.response(d.send_command(req));
  CHECK(r.status() == v1::CommandResponse::STATUS_OK);
  CHECK(r.result() == "1");
  CHECK(r.uses_left() == 2);
  CHECK(r.request_hash() == s(first16(req)));
  auto stored = d.store->get_result(1);
  REQUIRE(stored.ok());
  REQUIRE(stored->has_value());
  CHECK((*stored)->protocol == "elisa");
  CHECK((*stored)->sample == "S1");
  CHECK((*stored)->token_id == uuid(1));

  auto log = d.audit();
  REQUIRE(log.size() >= 2);
  // The charge record comes first, the execution record right after it.
  CHECK(log[log.size() - 2].kind() == v1::AuditRecord::KIND_COMMAND);
  CHECK(log.back().kind() == v1::AuditRecord::KIND_EXECUTION);
  CHECK(log.back().accepted());
  CHECK(log.back().command() == "run-assay");
  CHECK(log.back().uses_charged() == 1);
  CHECK(log.back().uses_left() == 2);
  CHECK(log.back().request_hash() == s(first16(req)));
}

TEST_CASE("the next nonce rides on every response: no status round trip in steady state") {
  Device d;
  d.ready(5);
  for (int i = 0; i < 4; ++i) {
    auto r = d.run("run-assay", {{"protocol", "p"}, {"sample", "s" + std::to_string(i)}});
    CHECK(r.status() == v1::CommandResponse::STATUS_OK);
  }
  CHECK(d.store->count_results().value() == 4);
}

TEST_CASE("a retried request gets the identical response bytes and runs once") {
  Device d;
  d.ready(3);
  Bytes req = d.command_bytes("run-assay", {{"protocol", "elisa"}, {"sample", "S1"}});
  d.send_command(req);
  Bytes first = d.last_reply;
  d.send_command(req);
  CHECK(d.last_reply == first);
  CHECK(d.store->count_results().value() == 1);
  CHECK(d.count(v1::AuditRecord::KIND_EXECUTION) == 1);
  CHECK(d.gw->state().tokens.at(uuid(1)).uses_left == 2);
}

TEST_CASE(
    "a retry after a power cut between charge and response reports interrupted, not a rerun") {
  Device d;
  d.ready(3);
  Bytes req = d.command_bytes("run-assay", {{"protocol", "elisa"}, {"sample", "S1"}});
  // The charge commits, then the device dies before executing or answering.
  auto decision = d.gw->authorize_command(req, d.clock, d.service->registry().rules());
  REQUIRE(decision.ok());
  REQUIRE(decision->kind == Decision::Kind::kExecute);
  REQUIRE(d.service->group().sync().ok());
  d.open();
  auto r = d.response(d.send_command(req));
  CHECK(r.status() == v1::CommandResponse::STATUS_FAILED);
  CHECK(r.error() == v1::ERROR_COMMAND_FAILED);
  CHECK(r.result() == "interrupted");
  CHECK(r.uses_left() == 2);
  CHECK(d.store->count_results().value() == 0);
  Bytes first = d.last_reply;
  d.send_command(req);
  CHECK(d.last_reply == first);
}

TEST_CASE("arguments out of range are rejected before anything is charged") {
  Device d;
  d.ready(3, {"operator"});
  auto r = d.run("set-temperature", {{"celsius", "120"}});
  CHECK(r.status() == v1::CommandResponse::STATUS_REJECTED);
  CHECK(r.error() == v1::ERROR_BAD_ARGUMENT);
  CHECK(r.next_nonce().size() == kNonceSize);
  auto ok = d.run("set-temperature", {{"celsius", "42.5"}});
  CHECK(ok.status() == v1::CommandResponse::STATUS_OK);
  CHECK(ok.result() == "42.5");
  CHECK(ok.uses_left() == 3);
  CHECK(d.service->instrument().temperature_celsius == doctest::Approx(42.5));
}

TEST_CASE("a command outside the token's roles is refused") {
  Device d;
  d.ready(3);
  auto r = d.run("calibrate");
  CHECK(r.status() == v1::CommandResponse::STATUS_REJECTED);
  CHECK(r.error() == v1::ERROR_ROLE_NOT_ALLOWED);
  CHECK(d.run("set-temperature", {{"celsius", "20"}}).error() == v1::ERROR_ROLE_NOT_ALLOWED);
  CHECK(d.count(v1::AuditRecord::KIND_EXECUTION) == 0);
}

TEST_CASE("calibrate runs for a service token and costs one use") {
  Device d;
  d.ready(3, {"service"});
  d.clock = kT0 + 10;
  auto r = d.run("calibrate");
  CHECK(r.status() == v1::CommandResponse::STATUS_OK);
  CHECK(r.uses_left() == 2);
  CHECK(d.service->instrument().last_calibration == kT0 + 10);
}

TEST_CASE("get-result of an unknown id fails after running, charging nothing") {
  Device d;
  d.ready(3);
  auto missing = d.run("get-result", {{"id", "42"}});
  CHECK(missing.status() == v1::CommandResponse::STATUS_FAILED);
  CHECK(missing.error() == v1::ERROR_BAD_ARGUMENT);
  CHECK(missing.uses_left() == 3);
  auto id = d.run("run-assay", {{"protocol", "elisa"}, {"sample", "S9"}}).result();
  auto got = d.run("get-result", {{"id", id}});
  CHECK(got.status() == v1::CommandResponse::STATUS_OK);
  CHECK(got.result().find("elisa S9 ") == 0);
  CHECK(got.uses_left() == 2);
}

TEST_CASE("status command is free but still needs a valid token") {
  Device d;
  CHECK(d.run("status").error() == v1::ERROR_NO_VALID_TOKEN);
  d.ready(1);
  auto r = d.run("status");
  CHECK(r.status() == v1::CommandResponse::STATUS_OK);
  CHECK(r.result() == "temp=37.0 cal=none");
  CHECK(r.uses_left() == 1);
}

TEST_CASE("exhausted uses are denied after the last charged run") {
  Device d;
  d.ready(1);
  CHECK(d.run("run-assay", {{"protocol", "p"}, {"sample", "s"}}).status() ==
        v1::CommandResponse::STATUS_OK);
  auto r = d.run("run-assay", {{"protocol", "p"}, {"sample", "s"}});
  CHECK(r.status() == v1::CommandResponse::STATUS_REJECTED);
  // The exhausted token is only a tombstone now: the user holds no usable token.
  CHECK(r.error() == v1::ERROR_NO_VALID_TOKEN);
  CHECK(d.store->count_results().value() == 1);
}

TEST_CASE("an unparseable or oversized envelope gets an unsigned error and changes nothing") {
  Device d;
  Bytes junk{0xFF, 0xFF, 0xFF};
  auto e = d.send_raw(junk);
  CHECK(e.kind_case() == v1::DeviceMessage::kError);
  CHECK(e.error() == v1::ERROR_MALFORMED);
  CHECK(d.send_raw(Bytes{}).error() == v1::ERROR_MALFORMED);
  Bytes big(kMaxHostMessageSize + 1, 0);
  CHECK(d.send_raw(big).error() == v1::ERROR_TOO_LARGE);
  CHECK(d.gw->state().nonces.empty());
}

TEST_CASE("a flood of bad signatures slows the link's replies, and a verified request ends it") {
  Device d;
  d.ready(3);
  auto attacker = make_key();
  std::vector<std::int64_t> delays;
  for (int i = 0; i < 6; ++i) {
    auto r = d.response(d.send_command(d.command_bytes("status", {}, &attacker)));
    CHECK(r.error() == v1::ERROR_NO_VALID_TOKEN);
    delays.push_back(d.link.reply_delay_us);
  }
  CHECK(delays == std::vector<std::int64_t>{0, 0, 50'000, 100'000, 200'000, 400'000});
  CHECK(d.count(v1::AuditRecord::KIND_RATE_LIMIT) == 4);

  // A forged signature in the user's name counts too.
  Bytes forged = d.command_bytes("status");
  forged[forged.size() - 3] ^= 0x01;
  d.send_command(forged);
  CHECK(d.link.reply_delay_us == 800'000);

  auto ok = d.run("status");
  CHECK(ok.status() == v1::CommandResponse::STATUS_OK);
  CHECK(d.link.reply_delay_us == 0);
  d.send_command(d.command_bytes("status", {}, &attacker));
  CHECK(d.link.reply_delay_us == 0);
}

TEST_CASE("back-off is per link: a flood on one link does not slow another") {
  Device d;
  d.ready(3);
  auto attacker = make_key();
  for (int i = 0; i < 5; ++i) d.send_command(d.command_bytes("status", {}, &attacker));
  CHECK(d.link.reply_delay_us > 0);
  LinkContext other;
  other.name = "other";
  v1::HostMessage m;
  m.set_command(s(d.command_bytes("status")));
  Bytes out = d.service->handle(as_bytes(m.SerializeAsString()), d.clock, other);
  CHECK(other.reply_delay_us == 0);
}

TEST_CASE("audit export is signed, chained and pages from a sequence number") {
  Device d;
  REQUIRE(d.service->boot(d.clock).ok());
  d.ready(3);
  d.run("run-assay", {{"protocol", "p"}, {"sample", "s"}});
  v1::HostMessage m;
  m.mutable_export_audit()->set_from_seq(1);
  m.mutable_export_audit()->set_max_records(3);
  auto e1 = d.send(m);
  REQUIRE(e1.kind_case() == v1::DeviceMessage::kAuditExport);
  auto page1 = d.verified<v1::AuditExport>(e1.audit_export(), v1::Signed::TYPE_AUDIT_EXPORT);
  CHECK(page1.device_id() == s(d.device));
  REQUIRE(page1.records_size() == 3);
  CHECK(page1.records(0).kind() == v1::AuditRecord::KIND_BOOT);
  CHECK(page1.records(0).command() == "sim 1.0");
  CHECK(page1.next_seq() == 4);
  std::vector<v1::AuditRecord> all(page1.records().begin(), page1.records().end());

  m.mutable_export_audit()->set_from_seq(page1.next_seq());
  m.mutable_export_audit()->set_max_records(1000);
  auto page2 = d.verified<v1::AuditExport>(d.send(m).audit_export(), v1::Signed::TYPE_AUDIT_EXPORT);
  all.insert(all.end(), page2.records().begin(), page2.records().end());
  auto head = verify_audit_run(all, AuditHead{});
  REQUIRE(head.ok());
  CHECK(std::string(head->hash.begin(), head->hash.end()) == page2.head_hash());
  CHECK(all.back().kind() == v1::AuditRecord::KIND_EXECUTION);
}

TEST_CASE("state survives a restart: uses, results and the audit chain") {
  Device d;
  d.ready(3);
  d.run("run-assay", {{"protocol", "p"}, {"sample", "s"}});
  REQUIRE(d.service->idle(d.clock).ok());
  d.open();
  d.nonce.clear();
  auto r = d.run("run-assay", {{"protocol", "p"}, {"sample", "t"}});
  CHECK(r.status() == v1::CommandResponse::STATUS_OK);
  CHECK(r.result() == "2");
  CHECK(r.uses_left() == 1);
  CHECK(d.store->verify_audit_chain().ok());
}

TEST_CASE("an authorized run-assay round trip fits 50 classic CAN frames with Ed25519") {
  Device d;
  d.ready(3);
  // Realistic sizes: random 32-bit request ids, as the host sends them.
  d.next_request_id = 0xF1234567;
  Bytes req = d.command_bytes("run-assay", {{"protocol", "elisa"}, {"sample", "S1"}});
  v1::HostMessage m;
  m.set_command(s(req));
  std::size_t request_size = m.ByteSizeLong();
  d.send_command(req);
  std::size_t response_size = d.last_reply.size();
  CAPTURE(request_size);
  CAPTURE(response_size);
  CHECK(req.size() <= 160 + 23);  // LIMITS: signed command <= 160 B + arguments
  CHECK(classic_frames(request_size) + classic_frames(response_size) <= 50);
  MESSAGE("run-assay: request ", request_size, " B, response ", response_size, " B, ",
          classic_frames(request_size) + classic_frames(response_size), " classic CAN frames");
}

// A measurement hook, not a test (skipped by default; never asserts time):
//   instrument_test_service --no-skip -tc='*pipeline rate*'
TEST_CASE("service pipeline rate against raw verify (measurement)" * doctest::skip()) {
  Device d;
  d.ready(1'000'000);
  auto rate = [](auto&& f, int n) {
    auto t0 = std::chrono::steady_clock::now();
    for (int i = 0; i < n; ++i) f();
    double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    return n / s;
  };
  Bytes msg = signing_input(v1::Signed::TYPE_COMMAND_REQUEST, as_bytes("x"));
  auto sig = d.user.sign(msg).value();
  double verify = rate([&] { (void)d.user.public_key().verify(msg, sig); }, 4000);
  double sign = rate([&] { (void)d.device_key.sign(msg); }, 4000);
  double service = rate([&] { d.run("status"); }, 2000);
  MESSAGE("raw verify ", verify, "/s, device sign ", sign, "/s, service status command ", service,
          "/s (includes the host-side signing in this loop), ratio ", service / verify);
}

TEST_CASE(
    "a charge that cannot be written runs nothing, answers ERROR_STORAGE, and the retry runs "
    "once") {
  Device d;
  d.ready(3);
  Bytes req = d.command_bytes("run-assay", {{"protocol", "elisa"}, {"sample", "S1"}});
  REQUIRE(d.service->idle(d.clock).ok());  // the nonce the host holds is on disk
  d.store->fail_write(1);
  auto r = d.response(d.send_command(req));
  CHECK(r.status() == v1::CommandResponse::STATUS_REJECTED);
  CHECK(r.error() == v1::ERROR_STORAGE);
  CHECK(d.service->stats().executions == 0);
  CHECK(d.store->count_results().value() == 0);
  // The gateway was reloaded from the database: nothing charged, nothing consumed.
  CHECK_FALSE(d.service->group().failed());
  CHECK(d.gw->state().tokens.at(uuid(1)).uses_left == 3);

  auto again = d.response(d.send_command(req));
  CHECK(again.status() == v1::CommandResponse::STATUS_OK);
  CHECK(again.uses_left() == 2);
  CHECK(d.store->count_results().value() == 1);
  CHECK(d.count(v1::AuditRecord::KIND_EXECUTION) == 1);
}
