// THREATS A12, power cut at any point of a command: the real tollgate-instrument
// is killed with SIGKILL at random moments while a host (the hostpc library's
// HostClient) runs `run-assay` (cost 1) through the virtual bus hub, and started
// again at once. After every cut, from the dead device's database, and at the
// end: no execution without an earlier charge for the same request, no request
// executed twice, charged uses - executions <= cuts (at most one use lost per
// cut), result rows = execution records, the token's uses match the charge
// records, the audit chain verifies and PRAGMA integrity_check is ok. After
// every restart the host retries with the same bytes (HostClient's resend) and
// the test resends the cut command once more: it is answered, never run again.
//
//   TOLLGATE_CRASH_CUTS=N          cuts (default 200)
//   TOLLGATE_CRASH_SEED=S          delay RNG seed (default: random; printed)
//   TOLLGATE_CRASH_MAX_DELAY_US=U  kill delays after the command's last frame went
//                                  out: uniform in [0, U] or, for half the cuts,
//                                  in [0, U/8] (default U: twice the measured
//                                  command turnaround, 1..20 ms)
//   TOLLGATE_KEEP_TMP=1            keep the state folder for a post-mortem
//
// SIGKILL keeps what the kernel already has (page cache), so this proves the
// ordering (charge committed before the command runs, one transaction per
// step), not the fsync path of a real power cut; synchronous=FULL and the
// store's fault hooks (tests/instrument/test_store.cpp) cover that side.
#include <doctest/doctest.h>

#include <algorithm>
#include <boost/asio/io_context.hpp>
#include <cstdio>
#include <fstream>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "hostpc/client.hpp"
#include "hostpc/protocol.hpp"
#include "tests/hostpc/host_testkit.hpp"
#include "tests/instrument/crash_support.hpp"
#include "tests/transport/it_hub_support.hpp"
#include "transport/links/endpoint.hpp"

namespace {

using namespace tollgate;
namespace hk = tollgate::hosttest;
namespace cr = tollgate::crash;
using std::chrono::microseconds;
using std::chrono::milliseconds;

struct Tally {
  std::uint64_t cuts = 0;
  // Where the cuts landed, from the dead device's database.
  std::uint64_t before_charge = 0;    // nothing committed for the cut command
  std::uint64_t charged_not_run = 0;  // charged, not executed: the one use a cut may lose
  std::uint64_t after_run = 0;        // charged and executed
  std::uint64_t startup_cuts = 0;     // restarts killed before they said ready
  // What the host saw for the cut command after its retries.
  std::uint64_t answered = 0;     // host got the cut command's own answer (live or replayed)
  std::uint64_t interrupted = 0;  // charged, unanswered at the cut: "interrupted", not rerun
  std::uint64_t fresh_retry = 0;  // not charged at the cut: the host ran it again, fresh nonce
  std::uint64_t other = 0;        // any other outcome (listed)
  std::uint64_t probes = 0;       // the cut command's bytes resent once more after the run
  std::uint64_t same_answer = 0;  // ... and answered with the very response the host had
  std::uint64_t answer_lost = 0;  // ... and answered "interrupted" (the answer was not durable)
  std::vector<std::string> others;
};

// The invariants that hold after any number of cuts.
void check_ledger(const cr::Ledger& l, std::uint64_t cuts, const std::string& when) {
  INFO(when << ": charged " << l.charged << ", executed " << l.executions << ", results "
            << l.results << ", cuts " << cuts);
  for (const auto& p : l.problems) FAIL_CHECK(p);
  CHECK(l.problems.empty());
  CHECK(l.executions <= l.charged);
  CHECK(l.charged - std::min(l.charged, l.executions) <= cuts);
  REQUIRE(l.problems.empty());
}

v1::HostMessage parse_host_message(const std::vector<std::uint8_t>& bytes) {
  v1::HostMessage m;
  REQUIRE(m.ParseFromArray(bytes.data(), static_cast<int>(bytes.size())));
  return m;
}

// Sends `message` (a HostMessage.command) as is and returns the verified
// response to it, skipping late answers to anything else.
v1::CommandResponse resend_raw(boost::asio::io_context& io, transport::MessageLink& link,
                               const std::vector<std::uint8_t>& message,
                               const crypto::PublicKey& device_key) {
  const v1::HostMessage m = parse_host_message(message);
  const Bytes hash = host::request_hash(as_bytes(m.command()));
  for (int attempt = 0; attempt < 4; ++attempt) {
    auto sent = test::run_coroutine(io, link.send(message, milliseconds(2000)));
    if (sent.index() != 0) continue;
    for (int skipped = 0; skipped < 16; ++skipped) {
      auto got = test::run_coroutine(io, link.receive(milliseconds(1000)));
      if (got.index() != 0) break;
      const auto& bytes = std::get<0>(got);
      v1::DeviceMessage dm;
      if (!dm.ParseFromArray(bytes.data(), static_cast<int>(bytes.size())) ||
          dm.kind_case() != v1::DeviceMessage::kResponse) {
        continue;
      }
      auto r = host::verify_response(as_bytes(dm.response()), hash, device_key);
      if (r) return std::move(*r);
    }
  }
  FAIL("no verified answer to the resent command");
  return {};
}

}  // namespace

TEST_CASE(
    "A12 SIGKILL at random moments of run-assay never executes uncharged, never twice, and "
    "loses at most one use per cut") {
  const std::uint64_t cuts_wanted = cr::env_number("TOLLGATE_CRASH_CUTS", 200);
  std::uint64_t seed = cr::env_number("TOLLGATE_CRASH_SEED", 0);
  if (seed == 0) seed = (std::uint64_t{std::random_device{}()} << 32) | std::random_device{}();
  std::printf("it_crash: seed %llu (TOLLGATE_CRASH_SEED=%llu repeats the delays), %llu cuts\n",
              static_cast<unsigned long long>(seed), static_cast<unsigned long long>(seed),
              static_cast<unsigned long long>(cuts_wanted));
  std::fflush(stdout);
  MESSAGE("seed " << seed);
  std::mt19937_64 rng(seed);

  cr::TempDir tmp;
  const std::string bin = (cr::bin_dir() / "tollgate-instrument").string();
  REQUIRE_MESSAGE(std::filesystem::exists(bin), bin << " is not built");

  // The bus: a hub without airtime (the test is about the device, not the wire).
  bus::HubOptions hub_options;
  hub_options.socket_path = tmp.str("bus.sock");
  hub_options.no_airtime = true;
  test::HubProcess hub(hub_options);

  // Key ceremony and one token with uses enough for every command the test sends.
  const std::uint32_t uses = static_cast<std::uint32_t>(2 * cuts_wanted + 64);
  auto master = hk::make_key();
  auto cloud = hk::make_key();
  auto user_key = hk::make_key();
  const Bytes device_id = hk::uuid(0xC1, 0xDE);
  const Bytes user_id = hk::uuid(0x05, 0x05);
  const Bytes token_id = hk::uuid(0x7A);
  const Bytes authorization = hk::make_authorization(master, cloud, 1);
  const Bytes token =
      hk::make_token(cloud, token_id, device_id, user_id, user_key, uses, hk::kT0 + 30 * hk::kDay);
  std::ofstream(tmp.str("master.pem")) << master.public_key().pem();
  // The device clock (--clock file:PATH) and the host's advance one second per
  // cut, so nonces age in order as they do in the field.
  std::int64_t now = hk::kT0;
  auto set_clock = [&](std::int64_t t) {
    now = t;
    // Replaced by rename: the instrument never reads a half-written file.
    std::ofstream(tmp.str("clock.new")) << t << "\n";
    std::filesystem::rename(tmp.str("clock.new"), tmp.str("clock"));
  };
  set_clock(hk::kT0);
  const std::string state = tmp.str("state");
  const auto setup_log = tmp.path / "setup.log";
  REQUIRE_MESSAGE(cr::run_program({bin, "provision", "--state", state, "--master",
                                   tmp.str("master.pem"), "--device-id", uuid_to_string(device_id)},
                                  setup_log) == 0,
                  cr::tail_of(setup_log));
  const std::string db = state + "/state.db";

  const std::string bus = "vbus:" + hub.socket_path();
  cr::InstrumentProcess instrument(
      {bin, "run", "--state", state, "--link", bus + "?tx=0x6A8&rx=0x6A0", "--clock",
       "file:" + tmp.str("clock")},
      tmp.path / "instrument.log");
  instrument.start();

  // The host: a token cache holding the authorization and the token, and the client.
  auto cache = host::TokenCache::open(tmp.str("cache.db"));
  REQUIRE(cache.ok());
  REQUIRE((*cache)->import_authorization(authorization).ok());
  REQUIRE((*cache)->import_token(token).ok());

  boost::asio::io_context io;
  auto opened = transport::open_link(io.get_executor(), bus + "?tx=0x6A0&rx=0x6A8");
  REQUIRE_MESSAGE(opened.index() == 0, std::get<1>(opened).message);
  auto& link = *std::get<0>(opened);

  Tally tally;
  std::uint64_t cut_at = 0;  // the cut being made (for messages)
  cr::Ledger before;         // read just before the cut command goes out
  std::uniform_int_distribution<int> startup_cut(0, 7);  // 1 in 8 restarts is cut too
  std::uniform_int_distribution<std::uint64_t> startup_delay_us(0, 1);  // set after warm-up
  auto cut = [&] {
    instrument.kill_hard();
    ++tally.cuts;
    const cr::Ledger at = cr::read_ledger(db, token_id, uses);
    check_ledger(at, tally.cuts, "after cut " + std::to_string(cut_at));
    // Only the cut command ran since `before`: it charged at most once, ran
    // at most once, and only if charged.
    const std::uint64_t charged = at.charged - before.charged;
    const std::uint64_t executed = at.executions - before.executions;
    INFO("cut " << cut_at << ": charged " << charged << ", executed " << executed);
    REQUIRE(charged <= 1);
    REQUIRE(executed <= charged);
    if (charged == 0) {
      ++tally.before_charge;
    } else if (executed == 0) {
      ++tally.charged_not_run;
    } else {
      ++tally.after_run;
    }
    // Now and then the restart itself is cut, somewhere in opening the state
    // (SQLite recovery, loading, the boot record) before it says ready.
    if (startup_cut(rng) == 0) {
      const auto t = microseconds(startup_delay_us(rng));
      instrument.spawn();
      std::this_thread::sleep_for(t);  // the chosen moment of the cut, not a wait for a state
      instrument.kill_hard();
      ++tally.startup_cuts;
      check_ledger(cr::read_ledger(db, token_id, uses), tally.cuts + tally.startup_cuts,
                   "after the cut of the restart after cut " + std::to_string(cut_at));
    }
    instrument.start();
  };
  cr::CuttingLink cutting(link, cut);
  host::ClientOptions options;
  // Generous: a resend only costs time, and the box running this is loaded.
  options.timeout = milliseconds(600);
  options.max_resends = 6;
  host::HostClient client(cutting, **cache, options, [&now] { return now; });

  auto paired = test::run_coroutine(io, client.pair(bus + "?tx=0x6A0&rx=0x6A8"));
  REQUIRE_MESSAGE(paired.index() == 0, std::get<1>(paired).message);
  auto device_key =
      crypto::PublicKey::from_spki_der(as_bytes(std::get<0>(paired).report.device_public_key()));
  REQUIRE(device_key.ok());

  const host::CommandSpec assay{"run-assay", {{"protocol", "elisa"}, {"sample", "S1"}}};
  auto run = [&](const host::CommandSpec& spec) {
    return test::run_coroutine(io, client.run(device_id, user_id, user_key, spec));
  };
  auto run_ok = [&](const host::CommandSpec& spec) {
    auto r = run(spec);
    INFO(spec.command << ": " << r.message);
    REQUIRE(r.outcome == host::Outcome::kOk);
    return r;
  };

  // Warm-up without cuts (the first run offers the token): also measures the
  // command turnaround the kill delays are scaled to.
  std::vector<cr::Clock::duration> turnarounds;
  for (int i = 0; i < 7; ++i) {
    run_ok(assay);
    if (auto t = cutting.last_turnaround()) turnarounds.push_back(*t);
  }
  REQUIRE(!turnarounds.empty());
  std::sort(turnarounds.begin(), turnarounds.end());
  const auto median = std::chrono::duration_cast<microseconds>(turnarounds[turnarounds.size() / 2]);
  const std::uint64_t max_delay_us = cr::env_number(
      "TOLLGATE_CRASH_MAX_DELAY_US",
      std::clamp<std::uint64_t>(2 * static_cast<std::uint64_t>(median.count()), 1000, 20000));
  std::printf("it_crash: command turnaround %lld us (median of %zu); kill delays 0..%llu us\n",
              static_cast<long long>(median.count()), turnarounds.size(),
              static_cast<unsigned long long>(max_delay_us));
  std::fflush(stdout);
  std::uniform_int_distribution<std::uint64_t> delay_us(0, max_delay_us);
  std::uniform_int_distribution<int> early(0, 1);
  startup_delay_us = std::uniform_int_distribution<std::uint64_t>(
      0, static_cast<std::uint64_t>(
             std::chrono::duration_cast<microseconds>(instrument.last_start()).count()));

  for (cut_at = 1; cut_at <= cuts_wanted; ++cut_at) {
    INFO("cut " << cut_at << " of " << cuts_wanted << ", seed " << seed);
    set_clock(now + 1);
    // Half the cuts in the first eighth of the range: receiving and verifying
    // the command is short next to the charge's fsync, and deserves its share.
    const auto delay = microseconds(early(rng) == 0 ? delay_us(rng) / 8 : delay_us(rng));
    before = cr::read_ledger(db, token_id, uses);
    REQUIRE(before.problems.empty());
    cutting.arm(delay);
    auto r = run(assay);
    REQUIRE_MESSAGE(!cutting.armed(), "the host sent no command: " << r.message);
    REQUIRE_MESSAGE(r.outcome != host::Outcome::kForged, r.message);

    const v1::HostMessage cut_message = parse_host_message(cutting.cut_message());
    const Bytes cut_hash = host::request_hash(as_bytes(cut_message.command()));
    const bool same_request = as_bytes(r.response.request_hash()).size() == cut_hash.size() &&
                              r.response.request_hash() == std::string(as_chars(cut_hash));
    if (r.outcome == host::Outcome::kOk && same_request) {
      ++tally.answered;
    } else if (r.outcome == host::Outcome::kOk) {
      ++tally.fresh_retry;
    } else if (r.outcome == host::Outcome::kDenied && same_request &&
               r.response.status() == v1::CommandResponse::STATUS_FAILED &&
               r.response.result() == "interrupted") {
      ++tally.interrupted;
    } else {
      ++tally.other;
      if (tally.others.size() < 10) {
        std::string notes;
        for (const auto& n : r.notes) notes += " [" + n + "]";
        tally.others.push_back("cut " + std::to_string(cut_at) + ": " + r.message + notes +
                               (cutting.answer_was_queued()
                                    ? " (the first answer came from the killed process)"
                                    : ""));
      }
    }

    // The host's retries are done; the same bytes once more must be answered
    // from the idempotency cache (or refused), never run again. A second run
    // would show in the ledger at the next cut as a request executed twice.
    auto again = resend_raw(io, link, cutting.cut_message(), *device_key);
    ++tally.probes;
    if (same_request && r.response.status() != v1::CommandResponse::STATUS_REJECTED) {
      if (again.SerializeAsString() == r.response.SerializeAsString()) {
        ++tally.same_answer;
      } else {
        // The answer was recorded in memory only (Gateway::complete_request:
        // persisted with the next commit) and the cut took it: the device now
        // says "interrupted" instead. Never another result, never a second run.
        CHECK(r.response.result() != "interrupted");
        CHECK(again.status() == v1::CommandResponse::STATUS_FAILED);
        CHECK(again.result() == "interrupted");
        ++tally.answer_lost;
      }
    }

    // Now and then an uncut command and its result: the restarted device serves normally.
    if (cut_at % 25 == 0) {
      auto ok = run_ok(assay);
      auto got = run_ok(host::CommandSpec{"get-result", {{"id", ok.response.result()}}});
      CHECK(got.response.result().rfind("elisa S1 ", 0) == 0);
    }
  }

  // A clean stop, then the final ledger and the CLI's own chain verification.
  CHECK(instrument.terminate() == 0);
  const cr::Ledger l = cr::read_ledger(db, token_id, uses);
  check_ledger(l, tally.cuts, "at the end");
  const auto audit_log = tmp.path / "audit.log";
  CHECK_MESSAGE(cr::run_program({bin, "audit", "--state", state, "--verify"}, audit_log) == 0,
                cr::tail_of(audit_log));
  std::ifstream audit_in(audit_log);
  const std::string audit_text((std::istreambuf_iterator<char>(audit_in)),
                               std::istreambuf_iterator<char>());
  CHECK(audit_text.find("audit chain verified") != std::string::npos);

  const std::uint64_t lost = l.charged - l.executions;
  std::printf(
      "it_crash: %llu cuts of commands + %llu of restarts, %llu starts; charged %llu, executed "
      "%llu, lost %llu "
      "(<= 1 per cut); audit records %llu (boots %llu, replays %llu)\n"
      "it_crash: cuts landed: before the charge %llu, charged but not run %llu, after the run "
      "%llu\n"
      "it_crash: cut commands: answered %llu, interrupted %llu, re-run with a fresh nonce %llu, "
      "other %llu; resent once more %llu (none ran again): same answer %llu, answer lost to "
      "the cut (now \"interrupted\") %llu\n",
      static_cast<unsigned long long>(tally.cuts),
      static_cast<unsigned long long>(tally.startup_cuts),
      static_cast<unsigned long long>(instrument.starts()),
      static_cast<unsigned long long>(l.charged), static_cast<unsigned long long>(l.executions),
      static_cast<unsigned long long>(lost), static_cast<unsigned long long>(l.audit_records),
      static_cast<unsigned long long>(l.boots), static_cast<unsigned long long>(l.replays),
      static_cast<unsigned long long>(tally.before_charge),
      static_cast<unsigned long long>(tally.charged_not_run),
      static_cast<unsigned long long>(tally.after_run),
      static_cast<unsigned long long>(tally.answered),
      static_cast<unsigned long long>(tally.interrupted),
      static_cast<unsigned long long>(tally.fresh_retry),
      static_cast<unsigned long long>(tally.other), static_cast<unsigned long long>(tally.probes),
      static_cast<unsigned long long>(tally.same_answer),
      static_cast<unsigned long long>(tally.answer_lost));
  for (const auto& o : tally.others) std::printf("it_crash:   %s\n", o.c_str());
  std::fflush(stdout);
  CHECK(tally.cuts == cuts_wanted);
  // A restart cut before its boot record committed leaves none.
  CHECK(l.boots >= instrument.ready());
  CHECK(l.boots <= instrument.starts());
  CHECK(lost <= tally.cuts);
  CHECK(lost == tally.charged_not_run);
}
