// The serial path: the same attacks through a pseudo-terminal (serial:
// endpoint, COBS + CRC-32C framing) instead of the CAN bus, against the real
// tollgate-instrument process.
#include <doctest/doctest.h>

#include "tests/instrument/peer.hpp"

namespace {

using namespace tollgate;
using namespace tollgate::attack;
using Kind = v1::AuditRecord;

RigOptions serial(std::string config = {}) {
  RigOptions o;
  o.serial = true;
  o.config = std::move(config);
  return o;
}

TEST_CASE("A1 over a serial line: replayed signed command is rejected and not executed") {
  Rig rig(serial("[policy]\nidempotency_cache_size = 1\n"));
  Peer peer(rig);
  const Bytes token = ready(peer, 5);
  const Reply first = peer.command("run-assay", assay_args());
  REQUIRE_MESSAGE(first.ok(), describe(first));
  REQUIRE(peer.command("status").ok());  // pushes the first out of the idempotency cache

  const Snapshot before = peer.snapshot();
  expect_rejected(peer.send_command(peer.recorded_commands.front()), v1::ERROR_STALE_NONCE);
  const AuditLog log = peer.export_audit();
  expect_nothing_executed(rig, before, log);
  CHECK(log.rejections_since(before.audit_seq, Kind::KIND_COMMAND, v1::ERROR_STALE_NONCE) == 1);
  CHECK(peer.probe_token(token).first == 4);
}

TEST_CASE("A4 over a serial line: command signed with another key than the token's is rejected") {
  Rig rig(serial());
  Peer peer(rig);
  const Bytes token = ready(peer, 3);
  const Snapshot before = peer.snapshot();
  peer.bugs.sign_with_other_user_key = true;
  expect_rejected(peer.command("run-assay", assay_args()), v1::ERROR_BAD_SIGNATURE);
  peer.bugs.sign_with_other_user_key = false;
  const AuditLog log = peer.export_audit();
  expect_nothing_executed(rig, before, log);
  CHECK(log.rejections_since(before.audit_seq, Kind::KIND_COMMAND, v1::ERROR_BAD_SIGNATURE) == 1);
  CHECK(peer.probe_token(token).first == 3);
}

TEST_CASE("A13 over a serial line: dropped response is answered again, executed and charged once") {
  Rig rig(serial());
  Peer peer(rig);
  const Bytes token = ready(peer, 3);
  const Snapshot before = peer.snapshot();
  peer.bugs.drop_response = true;
  const Reply r = peer.command("run-assay", assay_args());
  peer.bugs.drop_response = false;
  REQUIRE_MESSAGE(r.ok(), describe(r));
  REQUIRE(r.lost.size() == 1);
  CHECK(r.lost.front() == r.message);
  const AuditLog log = peer.export_audit();
  CHECK(log.since(before.audit_seq, Kind::KIND_EXECUTION).size() == 1);
  CHECK(log.since(before.audit_seq, Kind::KIND_REPLAY).size() == 1);
  CHECK(rig.result_count() == before.results + 1);
  CHECK(peer.probe_token(token).first == 2);
}

}  // namespace
