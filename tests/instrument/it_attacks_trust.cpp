// THREATS A3, A6, A7, A8, A9, A17 mounted through the virtual bus against the
// real tollgate-instrument process: tokens and authorizations that must not
// count (wrong device, revoked, expired, used up, unknown signer) and a device
// clock set back. Each case shows nothing ran or was charged, the specific
// signed error, and the audit records (exported over the link, device
// signature and hash chain verified).
#include <doctest/doctest.h>

#include <algorithm>

#include "tests/instrument/peer.hpp"

namespace {

using namespace tollgate;
using namespace tollgate::attack;
using Kind = v1::AuditRecord;

bool contains(const google::protobuf::RepeatedField<std::uint64_t>& ids, std::uint64_t id) {
  return std::find(ids.begin(), ids.end(), id) != ids.end();
}

std::vector<std::uint64_t> installed_ids(const v1::StatusReport& s) {
  std::vector<std::uint64_t> out;
  for (const auto& a : s.authorizations()) out.push_back(a.id());
  std::sort(out.begin(), out.end());
  return out;
}

TEST_CASE("A3 token minted for another device is rejected as wrong device") {
  Rig rig;
  Peer peer(rig);
  const Bytes token = ready(peer, 3);
  const Snapshot before = peer.snapshot();

  peer.bugs.token_for_other_device = true;
  const Bytes foreign = peer.token(2);
  peer.bugs.token_for_other_device = false;
  expect_rejected(peer.offer_token(foreign), v1::ERROR_WRONG_DEVICE);

  // A command addressed to another device, from a user holding a token here.
  peer.bugs.command_for_other_device = true;
  expect_rejected(peer.command("run-assay", assay_args()), v1::ERROR_WRONG_DEVICE);
  peer.bugs.command_for_other_device = false;

  const AuditLog log = peer.export_audit();
  expect_nothing_executed(rig, before, log);
  CHECK(log.rejections_since(before.audit_seq, Kind::KIND_OFFER_TOKEN, v1::ERROR_WRONG_DEVICE) ==
        1);
  CHECK(log.rejections_since(before.audit_seq, Kind::KIND_COMMAND, v1::ERROR_WRONG_DEVICE) == 1);
  CHECK(peer.probe_token(token).first == 3);
  // The foreign token was not stored: offered again it is refused again.
  CHECK(peer.probe_token(foreign).second == v1::ERROR_WRONG_DEVICE);
}

TEST_CASE("A6 older authorization lacking a newer revocation does not revive the revoked key") {
  Rig rig;
  Peer peer(rig);
  const Bytes token = ready(peer, 3);  // under authorization 1 (cloud key 1)
  REQUIRE(peer.command("run-assay", assay_args()).ok());
  const Bytes old_authorization = rig.authorization(1);

  // Cloud key 1 leaked: authorization 2 revokes 1.
  const auto cloud2 = testkit::make_key();
  const Reply revocation = peer.install(rig.authorization(2, {1}, &cloud2));
  REQUIRE_MESSAGE(revocation.ok(), describe(revocation));
  const Snapshot before = peer.snapshot();

  // The old authorization 1 again: refused, its key stays dead.
  expect_rejected(peer.install(old_authorization), v1::ERROR_REVOKED);
  // An earlier version of authorization 2, from before its list named 1: it
  // is accepted (the installed version lasts longer) and revives nothing.
  const Reply earlier = peer.install(rig.authorization(2, {}, &cloud2, kT0 + 100 * kDay));
  REQUIRE_MESSAGE(earlier.ok(), describe(earlier));
  // Another authorization issued before the revocation (its list lacks id 1):
  // it installs, and revives nothing.
  const auto cloud3 = testkit::make_key();
  const Reply older = peer.install(rig.authorization(3, {}, &cloud3));
  REQUIRE_MESSAGE(older.ok(), describe(older));
  expect_rejected(peer.offer_token(token), v1::ERROR_REVOKED);
  expect_rejected(peer.command("run-assay", assay_args()), v1::ERROR_NO_VALID_TOKEN);

  v1::StatusReport status = peer.status();
  CHECK(contains(status.revoked_ids(), 1));
  CHECK(installed_ids(status) == std::vector<std::uint64_t>{2, 3});

  // Durable: after a restart the revocation holds.
  rig.restart_instrument();
  status = peer.status();
  CHECK(contains(status.revoked_ids(), 1));
  expect_rejected(peer.install(old_authorization), v1::ERROR_REVOKED);
  expect_rejected(peer.offer_token(token), v1::ERROR_REVOKED);

  const AuditLog log = peer.export_audit();
  expect_nothing_executed(rig, before, log);
  CHECK(log.rejections_since(before.audit_seq, Kind::KIND_INSTALL_AUTHORIZATION,
                             v1::ERROR_REVOKED) == 2);
  CHECK(log.rejections_since(before.audit_seq, Kind::KIND_OFFER_TOKEN, v1::ERROR_REVOKED) == 2);
  CHECK(log.rejections_since(before.audit_seq, Kind::KIND_COMMAND, v1::ERROR_NO_VALID_TOKEN) == 1);
}

TEST_CASE("A7 token minted under a revoked or expired cloud authorization is rejected") {
  Rig rig;
  Peer peer(rig);
  ready(peer, 3);
  const auto cloud2 = testkit::make_key();
  REQUIRE(peer.install(rig.authorization(2, {1}, &cloud2)).ok());
  // Authorization 4 ends soon; a token minted under it is stored while it holds.
  const auto cloud4 = testkit::make_key();
  REQUIRE(peer.install(rig.authorization(4, {}, &cloud4, kT0 + 1000)).ok());
  REQUIRE(peer.offer_token(rig.token(4, 3, kT0 + 7 * kDay, 4, &cloud4)).ok());
  const Snapshot before = peer.snapshot();

  // Minted with the leaked (revoked) cloud key 1 after the revocation.
  expect_rejected(peer.offer_token(rig.token(5, 3, kT0 + 7 * kDay, 1)), v1::ERROR_REVOKED);

  // Authorization 4 has ended: its stored token no longer counts, a new one neither.
  rig.set_clock(kT0 + 2000);
  expect_rejected(peer.command("run-assay", assay_args()), v1::ERROR_EXPIRED);
  expect_rejected(peer.offer_token(rig.token(6, 3, kT0 + 7 * kDay, 4, &cloud4)), v1::ERROR_EXPIRED);

  const AuditLog log = peer.export_audit();
  expect_nothing_executed(rig, before, log);
  CHECK(log.rejections_since(before.audit_seq, Kind::KIND_OFFER_TOKEN, v1::ERROR_REVOKED) == 1);
  CHECK(log.rejections_since(before.audit_seq, Kind::KIND_OFFER_TOKEN, v1::ERROR_EXPIRED) == 1);
  CHECK(log.rejections_since(before.audit_seq, Kind::KIND_COMMAND, v1::ERROR_EXPIRED) == 1);
}

TEST_CASE("A8 expired token and token used beyond its uses are rejected") {
  Rig rig;
  Peer peer(rig);
  const Bytes token = ready(peer, 2);
  REQUIRE(peer.command("run-assay", assay_args()).ok());
  const Reply last = peer.command("run-assay", assay_args());
  REQUIRE(last.ok());
  CHECK(last.uses_left() == 0);
  Snapshot before = peer.snapshot();

  // Beyond its uses: the spent token is a tombstone, the user holds no token.
  expect_rejected(peer.command("run-assay", assay_args()), v1::ERROR_NO_VALID_TOKEN);
  expect_rejected(peer.offer_token(token), v1::ERROR_USES_EXHAUSTED);
  CHECK(before.results == 2);

  // Offered already expired.
  expect_rejected(peer.offer_token(rig.token(3, 3, kT0 - 10)), v1::ERROR_EXPIRED);
  // Stored while valid, used after its end.
  REQUIRE(peer.offer_token(rig.token(4, 3, kT0 + 100)).ok());
  rig.set_clock(kT0 + 200);
  expect_rejected(peer.command("run-assay", assay_args()), v1::ERROR_EXPIRED);

  const AuditLog log = peer.export_audit();
  expect_nothing_executed(rig, before, log);
  CHECK(log.rejections_since(before.audit_seq, Kind::KIND_COMMAND, v1::ERROR_NO_VALID_TOKEN) == 1);
  CHECK(log.rejections_since(before.audit_seq, Kind::KIND_COMMAND, v1::ERROR_EXPIRED) == 1);
  CHECK(log.rejections_since(before.audit_seq, Kind::KIND_OFFER_TOKEN, v1::ERROR_USES_EXHAUSTED) ==
        1);
  CHECK(log.rejections_since(before.audit_seq, Kind::KIND_OFFER_TOKEN, v1::ERROR_EXPIRED) == 1);
  CHECK(peer.probe_token(rig.token(4, 3, kT0 + 100)).second == v1::ERROR_EXPIRED);
}

TEST_CASE("A9 clock set back or reset to zero keeps the time floor: expired stays expired") {
  Rig rig;
  Peer peer(rig);
  REQUIRE(peer.install(rig.authorization()).ok());
  REQUIRE(peer.offer_token(rig.token(1, 5, kT0 + 1000)).ok());
  REQUIRE(peer.command("run-assay", assay_args()).ok());

  rig.set_clock(kT0 + 2000);
  expect_rejected(peer.command("run-assay", assay_args()), v1::ERROR_EXPIRED);
  const Snapshot before = peer.snapshot();

  for (UnixTime back : {kT0, UnixTime{0}}) {
    CAPTURE(back);
    rig.set_clock(back);
    expect_rejected(peer.command("run-assay", assay_args()), v1::ERROR_EXPIRED);
    CHECK(peer.status().device_time() >= kT0 + 2000);
  }
  // A power cycle with the clock reset to zero: the floor was persisted.
  rig.restart_instrument();
  CHECK(peer.status().device_time() >= kT0 + 2000);
  expect_rejected(peer.command("run-assay", assay_args()), v1::ERROR_EXPIRED);
  CHECK(peer.probe_token(rig.token(1, 5, kT0 + 1000)).second == v1::ERROR_EXPIRED);

  const AuditLog log = peer.export_audit();
  expect_nothing_executed(rig, before, log);
  CHECK(log.rejections_since(before.audit_seq, Kind::KIND_COMMAND, v1::ERROR_EXPIRED) == 3);
  for (const auto& r : log.records) {
    if (r.seq() > before.audit_seq) CHECK(r.time() >= kT0 + 2000);
  }
}

TEST_CASE("A17 authorization or token signed by an unknown key is rejected") {
  Rig rig;
  Peer peer(rig);
  const Bytes token = ready(peer, 3);
  const Snapshot before = peer.snapshot();

  // A token naming the installed authorization 1, signed by a key it does not authorize.
  peer.bugs.unknown_cloud_key = true;
  expect_rejected(peer.offer_token(peer.token(2)), v1::ERROR_UNKNOWN_SIGNER);
  peer.bugs.unknown_cloud_key = false;

  // An authorization from a master the device does not hold, revoking 1.
  const auto cloud2 = testkit::make_key();
  peer.bugs.unknown_master_key = true;
  expect_rejected(peer.install(peer.authorization(2, {1}, &cloud2)), v1::ERROR_UNKNOWN_SIGNER);
  peer.bugs.unknown_master_key = false;

  const v1::StatusReport status = peer.status();
  CHECK(status.revoked_ids().empty());  // an unknown signer's list is not merged
  CHECK(installed_ids(status) == std::vector<std::uint64_t>{1});

  const AuditLog log = peer.export_audit();
  expect_nothing_executed(rig, before, log);
  CHECK(log.rejections_since(before.audit_seq, Kind::KIND_OFFER_TOKEN, v1::ERROR_UNKNOWN_SIGNER) ==
        1);
  CHECK(log.rejections_since(before.audit_seq, Kind::KIND_INSTALL_AUTHORIZATION,
                             v1::ERROR_UNKNOWN_SIGNER) == 1);
  CHECK(peer.probe_token(token).first == 3);
  // The genuine user is still served under authorization 1.
  const Reply served = peer.command("run-assay", assay_args());
  CHECK(served.ok());
  CHECK(served.uses_left() == 2);
}

}  // namespace
