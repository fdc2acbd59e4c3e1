// THREATS A1, A2, A13, A16 mounted through the virtual bus against the real
// tollgate-instrument process: replays, re-offered tokens, lost responses and
// a misbehaving bus. Each case shows that nothing ran or was charged beyond
// what the host paid for, the specific signed error, and the audit records
// (exported over the link, device signature and hash chain verified).
#include <doctest/doctest.h>

#include <set>

#include "tests/instrument/peer.hpp"

namespace {

using namespace tollgate;
using namespace tollgate::attack;
using Kind = v1::AuditRecord;

TEST_CASE("A1 replayed signed command is rejected and not executed") {
  // A one-entry idempotency cache lets the test push a command out of it.
  RigOptions options;
  options.config = "[policy]\nidempotency_cache_size = 1\n";
  Rig rig(options);
  Peer peer(rig);
  const Bytes token = ready(peer, 5);
  const Reply first = peer.command("run-assay", assay_args());
  REQUIRE_MESSAGE(first.ok(), describe(first));
  CHECK(first.uses_left() == 4);

  // While the device still remembers it, a byte-identical replay gets the
  // recorded answer: not run, not charged.
  Snapshot before = peer.snapshot();
  peer.bugs.replay_recorded_command = true;
  const Reply replayed = peer.command("run-assay", assay_args());
  CHECK(replayed.signed_response == first.signed_response);
  AuditLog log = peer.export_audit();
  expect_nothing_executed(rig, before, log);
  CHECK(log.since(before.audit_seq, Kind::KIND_REPLAY).size() == 1);

  // Once another command pushed it out, the replay meets its used nonce.
  peer.bugs.replay_recorded_command = false;
  REQUIRE(peer.command("status").ok());
  before = peer.snapshot();
  const Reply stale = peer.send_command(peer.recorded_commands.front());
  expect_rejected(stale, v1::ERROR_STALE_NONCE);

  // A command withheld on the way and delivered after its nonce died.
  const Bytes withheld = peer.prepare_command("run-assay", assay_args());
  rig.set_clock(kT0 + 200);  // nonce lifetime 120 s
  expect_rejected(peer.send_command(withheld), v1::ERROR_STALE_NONCE);

  log = peer.export_audit();
  expect_nothing_executed(rig, before, log);
  CHECK(log.rejections_since(before.audit_seq, Kind::KIND_COMMAND, v1::ERROR_STALE_NONCE) == 2);
  CHECK(peer.probe_token(token).first == 4);
}

TEST_CASE("A2 re-offered exhausted or installed token restores no uses") {
  Rig rig;
  Peer peer(rig);
  const Bytes token = ready(peer, 2);
  REQUIRE(peer.command("run-assay", assay_args()).ok());

  // Already installed, one use spent: offering it again keeps the device's count.
  Reply again = peer.offer_token(token);
  REQUIRE_MESSAGE(again.ok(), describe(again));
  CHECK(again.offer->outcomes(0).uses_left() == 1);

  const Reply last = peer.command("run-assay", assay_args());
  REQUIRE(last.ok());
  CHECK(last.uses_left() == 0);

  const Snapshot before = peer.snapshot();
  peer.bugs.reoffer_exhausted_token = true;
  const Reply reoffered = peer.offer_token(rig.token(9));
  expect_rejected(reoffered, v1::ERROR_USES_EXHAUSTED);
  REQUIRE(reoffered.offer.has_value());
  CHECK(reoffered.offer->outcomes(0).uses_left() == 0);
  CHECK(reoffered.offer->outcomes(0).token_id() == testkit::str(testkit::uuid(1)));
  // The exhausted token is a tombstone, not a candidate: the user holds no token.
  expect_rejected(peer.command("run-assay", assay_args()), v1::ERROR_NO_VALID_TOKEN);

  // The tombstone is durable: after a restart the token is still spent.
  rig.restart_instrument();
  expect_rejected(peer.offer_token(token), v1::ERROR_USES_EXHAUSTED);
  expect_rejected(peer.command("run-assay", assay_args()), v1::ERROR_NO_VALID_TOKEN);

  const AuditLog log = peer.export_audit();
  expect_nothing_executed(rig, before, log);
  CHECK(log.rejections_since(before.audit_seq, Kind::KIND_OFFER_TOKEN, v1::ERROR_USES_EXHAUSTED) ==
        2);
  CHECK(log.rejections_since(before.audit_seq, Kind::KIND_COMMAND, v1::ERROR_NO_VALID_TOKEN) == 2);
  CHECK(rig.audit_verify_exit_code() == 0);
}

TEST_CASE("A13 dropped response: the retry gets the same response, executed once, charged once") {
  Rig rig;
  Peer peer(rig);
  const Bytes token = ready(peer, 3);
  const Snapshot before = peer.snapshot();

  peer.bugs.drop_response = true;
  const Reply r = peer.command("run-assay", assay_args());
  REQUIRE_MESSAGE(r.ok(), describe(r));
  REQUIRE(r.lost.size() == 1);
  CHECK(r.lost.front() == r.message);  // the identical signed bytes, not a second run
  CHECK(r.uses_left() == 2);
  peer.bugs.drop_response = false;

  AuditLog log = peer.export_audit();
  CHECK(rig.result_count() == before.results + 1);
  CHECK(log.since(before.audit_seq, Kind::KIND_EXECUTION).size() == 1);
  std::uint32_t charged = 0;
  for (const auto& c : log.since(before.audit_seq, Kind::KIND_COMMAND)) charged += c.uses_charged();
  CHECK(charged == 1);
  CHECK(log.since(before.audit_seq, Kind::KIND_REPLAY).size() == 1);
  CHECK(peer.probe_token(token).first == 2);

  // The same request id with other bytes is refused, not run.
  const Snapshot mid = peer.snapshot();
  const Bytes other =
      peer.reuse_request_id(r.request, "run-assay", {{"protocol", "elisa"}, {"sample", "S2"}});
  expect_rejected(peer.send_command(other), v1::ERROR_REQUEST_ID_REUSED);
  log = peer.export_audit();
  expect_nothing_executed(rig, mid, log);
  CHECK(log.rejections_since(mid.audit_seq, Kind::KIND_COMMAND, v1::ERROR_REQUEST_ID_REUSED) == 1);
  CHECK(peer.probe_token(token).first == 2);
}

TEST_CASE(
    "A16 commands stay at-most-once on a bus that drops, duplicates, reorders, corrupts and "
    "alters frames") {
  RigOptions options;
  options.hub_args = {"--drop",    "0.003", "--duplicate", "0.003", "--reorder", "0.003",
                      "--corrupt", "0.01",  "--tamper",    "0.002", "--seed",    "1604"};
  options.isotp_options = "&nbs=250ms&ncr=250ms";
  options.clean_link = true;
  Rig rig(options);
  Peer peer(rig);
  peer.timeout = std::chrono::milliseconds(500);
  peer.resends = 8;
  constexpr std::uint32_t kUses = 40;
  const Bytes token = ready(peer, kUses);

  constexpr int kCommands = 20;
  int ok = 0;
  for (int i = 0; i < kCommands; ++i) {
    const Reply r =
        peer.command("run-assay", {{"protocol", "elisa"}, {"sample", "S" + std::to_string(i)}});
    INFO("command " << i << ": " << describe(r));
    REQUIRE(r.verified());
    if (r.ok()) ++ok;
  }
  MESSAGE("resent " << peer.resent << ", late answers skipped " << peer.stale_answers);

  // Read the log over the fault-free second link.
  Peer auditor(rig, true);
  const AuditLog log = auditor.export_audit();
  const auto executions = log.since(0, Kind::KIND_EXECUTION);
  MESSAGE("executions " << executions.size() << ", answered again from the idempotency cache "
                        << log.since(0, Kind::KIND_REPLAY).size());
  std::set<std::string> executed_requests;
  for (const auto& e : executions) {
    CHECK_MESSAGE(executed_requests.insert(e.request_hash()).second, "a request ran twice");
  }
  std::uint32_t charged = 0;
  for (const auto& c : log.since(0, Kind::KIND_COMMAND)) charged += c.uses_charged();
  CHECK(executions.size() == static_cast<std::size_t>(ok));
  CHECK(executions.size() <= peer.recorded_commands.size());
  CHECK(charged == executions.size());
  CHECK(rig.result_count() == executions.size());
  CHECK(auditor.probe_token(token).first == kUses - executions.size());
}

}  // namespace
