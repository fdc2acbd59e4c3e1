// The host's flows against an in-process fake instrument over an in-memory
// MessageLink: pairing and pins, the unauthorized -> install -> offer -> retry
// loop, exhaustion, lost answers retried with the same bytes, and forged
// answers refused. Time is the fixture's, driven by hand.
#include "tests/hostpc/host_testkit.hpp"

using namespace tollgate;
using namespace tollgate::host;
using namespace tollgate::hosttest;

namespace {

struct World {
  TempDir dir;
  std::unique_ptr<TokenCache> cache;
  FakeDevice device;
  FakeLink link{device};
  crypto::PrivateKey master = make_key();
  crypto::PrivateKey cloud = make_key();
  crypto::PrivateKey user_key = make_key();
  Bytes user = uuid(1, 0x05);
  std::int64_t now = kT0;
  HostClient client;

  World() : cache(open()), client(link, *cache, ClientOptions{}, [this] { return now; }) {}
  std::unique_ptr<TokenCache> open() {
    auto c = TokenCache::open(dir.str("cache.db"));
    REQUIRE(c.ok());
    return std::move(*c);
  }
  void add_token(std::uint8_t tag, std::uint32_t uses, std::int64_t expires,
                 std::uint64_t auth = 1) {
    REQUIRE(cache
                ->import_token(make_token(cloud, uuid(tag), device.device_id, user, user_key, uses,
                                          expires, auth))
                .ok());
  }
  void add_authorization(std::uint64_t id) {
    REQUIRE(cache->import_authorization(make_authorization(master, cloud, id)).ok());
  }
  void pair() {
    auto r = run_sync(client.pair("fake:device"));
    REQUIRE(r.index() == 0);
  }
  RunReport run(const std::vector<std::string>& words) {
    std::string err;
    auto spec = parse_command_args(words, &err);
    REQUIRE(spec.has_value());
    return run_sync(client.run(device.device_id, user, user_key, *spec));
  }
  CachedToken token(std::uint8_t tag) {
    auto t = cache->token(uuid(tag));
    REQUIRE(t.ok());
    REQUIRE(t->has_value());
    return **t;
  }
};

}  // namespace

TEST_CASE("pairing pins the device key and a later key change is refused as forged") {
  World w;
  w.pair();
  auto rec = w.cache->device(w.device.device_id);
  REQUIRE(rec.ok());
  REQUIRE(rec->has_value());
  CHECK((*rec)->public_key == w.device.key.public_key().spki_der());
  CHECK((*rec)->endpoint == "fake:device");
  CHECK_FALSE((*rec)->last_nonce.empty());

  auto again = run_sync(w.client.pair("fake:device"));
  REQUIRE(again.index() == 0);
  CHECK(std::get<0>(again).pinned);

  w.device.sign_with_other_key = true;
  auto st = run_sync(w.client.status());
  REQUIRE(st.index() == 1);
  CHECK(std::get<1>(st).outcome == Outcome::kForged);
  CHECK(exit_code(std::get<1>(st).outcome) == kExitForged);
  rec = w.cache->device(w.device.device_id);
  CHECK((*rec)->public_key == w.device.key.public_key().spki_der());  // pin unchanged
}

TEST_CASE("first command installs the cached authorization, offers the token and succeeds") {
  World w;
  w.add_authorization(1);
  w.add_token(1, 3, kT0 + 2 * kDay);
  w.pair();
  auto r = w.run({"run-assay", "--protocol", "elisa", "--sample", "S1"});
  INFO(r.message);
  REQUIRE(r.outcome == Outcome::kOk);
  CHECK(r.response.result() == "ok run-assay protocol=elisa sample=S1");
  CHECK(r.response.uses_left() == 2);
  CHECK(w.device.installed.count(1) == 1);
  CHECK(w.device.executions == 1);
  CHECK(w.token(1).uses_left == 2);
  CHECK(w.token(1).accepted);
  REQUIRE(r.charged_token.has_value());
  CHECK(*r.charged_token == uuid(1));
}

TEST_CASE("steady state uses the nonce from the previous answer: one exchange per command") {
  World w;
  w.add_authorization(1);
  w.add_token(1, 5, kT0 + 2 * kDay);
  w.pair();
  REQUIRE(w.run({"run-assay", "--protocol", "p", "--sample", "a"}).outcome == Outcome::kOk);
  const int before = w.device.messages;
  REQUIRE(w.run({"get-result", "1"}).outcome == Outcome::kOk);
  CHECK(w.device.messages == before + 1);
}

TEST_CASE("a cached nonce older than 100 s is not tried: a status round trip fetches a fresh one") {
  World w;
  w.add_authorization(1);
  w.add_token(1, 5, kT0 + 2 * kDay);
  w.pair();
  w.now += 101;
  const int before = w.device.messages;
  auto r = w.run({"get-result", "1"});
  REQUIRE(r.outcome == Outcome::kOk);
  // status, command -> unauthorized, install, offer again... at least the status came first
  CHECK(w.device.messages > before + 1);
}

TEST_CASE("when a token runs out the next cached token is offered automatically, soonest first") {
  World w;
  w.add_authorization(1);
  w.add_token(1, 1, kT0 + 1 * kDay);
  w.add_token(2, 2, kT0 + 3 * kDay);
  w.add_token(3, 1, kT0 + 2 * kDay);
  w.pair();
  CHECK(w.run({"run-assay", "--protocol", "p", "--sample", "1"}).outcome == Outcome::kOk);
  CHECK(w.token(1).uses_left == 0);
  CHECK(w.run({"run-assay", "--protocol", "p", "--sample", "2"}).outcome == Outcome::kOk);
  CHECK(w.token(3).accepted);
  CHECK_FALSE(w.token(2).accepted);
  CHECK(w.run({"run-assay", "--protocol", "p", "--sample", "3"}).outcome == Outcome::kOk);
  CHECK(w.run({"run-assay", "--protocol", "p", "--sample", "4"}).outcome == Outcome::kOk);
  CHECK(w.token(2).uses_left == 0);
  auto last = w.run({"run-assay", "--protocol", "p", "--sample", "5"});
  CHECK(last.outcome == Outcome::kNoToken);
  CHECK(exit_code(last.outcome) == kExitNoToken);
  CHECK(w.device.executions == 4);
}

TEST_CASE("a lost answer is retried with the same bytes and the command executes once") {
  World w;
  w.add_authorization(1);
  w.add_token(1, 3, kT0 + 2 * kDay);
  w.pair();
  REQUIRE(w.run({"get-result", "1"}).outcome == Outcome::kOk);  // installs and offers
  const auto sent_before = w.link.sent.size();
  w.device.drop_replies = 2;
  auto r = w.run({"run-assay", "--protocol", "p", "--sample", "x"});
  REQUIRE(r.outcome == Outcome::kOk);
  CHECK(w.device.executions == 2);
  CHECK(r.response.uses_left() == 2);
  REQUIRE(w.link.sent.size() == sent_before + 3);
  CHECK(w.link.sent[sent_before] == w.link.sent[sent_before + 1]);
  CHECK(w.link.sent[sent_before] == w.link.sent[sent_before + 2]);
}

TEST_CASE("late duplicate answers to earlier requests are skipped, not taken as forged") {
  World w;
  w.add_authorization(1);
  w.add_token(1, 5, kT0 + 2 * kDay);
  w.device.duplicate_replies = true;
  w.pair();
  auto first = w.run({"run-assay", "--protocol", "p", "--sample", "a"});
  INFO(first.message);
  REQUIRE(first.outcome == Outcome::kOk);
  auto second = w.run({"run-assay", "--protocol", "p", "--sample", "b"});
  INFO(second.message);
  REQUIRE(second.outcome == Outcome::kOk);
  CHECK(second.response.result() == "ok run-assay protocol=p sample=b");
  CHECK(w.device.executions == 2);
  auto st = run_sync(w.client.status());
  CHECK(st.index() == 0);
}

TEST_CASE("a silent device is a link failure after bounded resends") {
  World w;
  w.pair();
  w.device.silent = true;
  const auto sent_before = w.link.sent.size();
  auto r = w.run({"get-result", "1"});
  CHECK(r.outcome == Outcome::kLink);
  CHECK(exit_code(r.outcome) == kExitLink);
  CHECK(w.link.sent.size() - sent_before == 4);  // 1 + max_resends
}

TEST_CASE("a late genuine answer to an earlier run's request is skipped, not taken as forged") {
  World w;
  w.add_authorization(1);
  w.add_token(1, 3, kT0 + 2 * kDay);
  w.pair();
  REQUIRE(w.run({"run-assay", "--protocol", "p", "--sample", "a"}).outcome == Outcome::kOk);
  // A device slowed by back-off answered an earlier run after it had given up:
  // that answer reaches the next run first.
  w.link.late_message = w.link.replies.back();
  // A new process: nothing remembers the earlier request.
  HostClient fresh(w.link, *w.cache, ClientOptions{}, [&w] { return w.now; });
  std::string err;
  auto spec = parse_command_args({"run-assay", "--protocol", "p", "--sample", "b"}, &err);
  REQUIRE(spec.has_value());
  auto r = run_sync(fresh.run(w.device.device_id, w.user, w.user_key, *spec));
  CHECK(r.outcome == Outcome::kOk);
  CHECK(w.device.executions == 2);
  CHECK(w.token(1).uses_left == 1);
}

TEST_CASE("a forged answer ends the run as forged and changes no cached uses") {
  World w;
  w.add_authorization(1);
  w.add_token(1, 3, kT0 + 2 * kDay);
  w.pair();
  REQUIRE(w.run({"get-result", "1"}).outcome == Outcome::kOk);

  SUBCASE("a flipped bit") {
    w.device.flip_reply_bit = true;
  }
  SUBCASE("a wrong request hash") {
    w.device.wrong_request_hash = true;
  }
  SUBCASE("an unpinned key") {
    w.device.sign_with_other_key = true;
  }

  auto r = w.run({"run-assay", "--protocol", "p", "--sample", "x"});
  CHECK(r.outcome == Outcome::kForged);
  CHECK(exit_code(r.outcome) == kExitForged);
  CHECK(w.token(1).uses_left == 3);
}

TEST_CASE("tokens the device refuses for good are marked dead and skipped") {
  World w;
  w.add_authorization(1);
  w.add_authorization(2);
  w.add_token(1, 3, kT0 + 1 * kDay, 2);  // minted under a revoked authorization
  w.add_token(2, 3, kT0 + 2 * kDay, 1);
  w.device.revoked_authorizations.insert(2);
  w.pair();
  auto r = w.run({"run-assay", "--protocol", "p", "--sample", "x"});
  REQUIRE(r.outcome == Outcome::kOk);
  CHECK(w.token(1).dead);
  CHECK(w.token(1).dead_reason == v1::ERROR_REVOKED);
  CHECK(w.token(2).uses_left == 2);
}

TEST_CASE("a token whose authorization is not cached is skipped, not killed") {
  World w;
  w.add_token(1, 3, kT0 + 2 * kDay, 9);
  w.pair();
  auto r = w.run({"get-result", "1"});
  CHECK(r.outcome == Outcome::kNoToken);
  CHECK_FALSE(w.token(1).dead);
}

TEST_CASE("a refusal other than unauthorized is denied without offering tokens") {
  World w;
  w.add_authorization(1);
  w.add_token(1, 3, kT0 + 2 * kDay);
  w.pair();
  auto r = w.run({"explode"});
  CHECK(r.outcome == Outcome::kDenied);
  CHECK(r.error == v1::ERROR_UNKNOWN_COMMAND);
  CHECK(exit_code(r.outcome) == kExitDenied);
  CHECK_FALSE(w.token(1).accepted);
}

TEST_CASE("a stale nonce is retried once with the nonce the rejection carries") {
  World w;
  w.add_authorization(1);
  w.add_token(1, 3, kT0 + 2 * kDay);
  w.pair();
  REQUIRE(w.run({"get-result", "1"}).outcome == Outcome::kOk);
  // Another host used the device meanwhile: our cached nonce is stale.
  auto st = run_sync(w.client.status());
  REQUIRE(st.index() == 0);
  auto r = w.run({"get-result", "2"});
  CHECK(r.outcome == Outcome::kOk);
}

TEST_CASE("run refuses a device that was never paired") {
  World w;
  auto r = w.run({"get-result", "1"});
  CHECK(r.outcome == Outcome::kLocal);
  CHECK(w.link.sent.empty());
}
