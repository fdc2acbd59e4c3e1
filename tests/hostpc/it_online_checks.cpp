// The online side's pure parts: what a token minted by the cloud must be before
// the host caches it, the session file, the enrollment proof and the URL and
// base64 parsers. (The end-to-end flows against a real cloud: online.sh.)
#include <doctest/doctest.h>
#include <sys/stat.h>

#include "host_testkit.hpp"
#include "hostpc/online.hpp"

using namespace tollgate;
using namespace tollgate::host;
using namespace tollgate::hosttest;

namespace {

struct Minting {
  crypto::PrivateKey master = make_key();
  crypto::PrivateKey cloud = make_key();
  crypto::PrivateKey user_key = make_key();
  Bytes device = uuid(0xD1, 0xDE);
  Bytes user = uuid(0x01, 0x05);
  Bytes auth = make_authorization(master, cloud, 7);
  crypto::PublicKey cloud_pub = cloud.public_key().clone();

  TokenExpectation want() const {
    return TokenExpectation{&cloud_pub, 7, device, user, user_key.public_key().spki_der(), kT0};
  }
  Bytes token(std::uint8_t tag, std::int64_t expires = kT0 + kDay, std::uint64_t auth_id = 7) {
    return make_token(cloud, uuid(tag), device, user, user_key, 2, expires, auth_id);
  }
};

}  // namespace

TEST_CASE("a token the authorized cloud key signed for this user, key and device is accepted") {
  Minting m;
  std::string why;
  auto t = check_minted_token(m.token(1), m.want(), &why);
  REQUIRE_MESSAGE(t.has_value(), why);
  CHECK(t->token_id == uuid(1));
  CHECK(t->authorized_uses == 2);
  CHECK(t->bytes == m.token(1));
}

TEST_CASE("a token signed by another key than the authorized cloud key is refused") {
  Minting m;
  auto other = make_key();
  const Bytes forged = make_token(other, uuid(1), m.device, m.user, m.user_key, 2, kT0 + kDay, 7);
  std::string why;
  CHECK_FALSE(check_minted_token(forged, m.want(), &why).has_value());
  CHECK(why.find("cloud key") != std::string::npos);
}

TEST_CASE("a token with one flipped bit is refused") {
  Minting m;
  Bytes t = m.token(1);
  t[t.size() / 2] ^= 0x01;
  std::string why;
  CHECK_FALSE(check_minted_token(t, m.want(), &why).has_value());
}

TEST_CASE("a token for another device, user, user key or authorization is refused") {
  Minting m;
  std::string why;
  auto w = m.want();
  w.device_id = uuid(0xD2, 0xDE);
  CHECK_FALSE(check_minted_token(m.token(1), w, &why).has_value());
  w = m.want();
  w.user_id = uuid(0x02, 0x05);
  CHECK_FALSE(check_minted_token(m.token(1), w, &why).has_value());
  w = m.want();
  auto other_user_key = make_key();
  w.user_spki = other_user_key.public_key().spki_der();
  CHECK_FALSE(check_minted_token(m.token(1), w, &why).has_value());
  CHECK_FALSE(check_minted_token(m.token(1, kT0 + kDay, 8), m.want(), &why).has_value());
}

TEST_CASE("an already expired token and junk bytes are refused") {
  Minting m;
  std::string why;
  CHECK_FALSE(check_minted_token(m.token(1, kT0), m.want(), &why).has_value());
  const Bytes junk{'j', 'u', 'n', 'k'};
  CHECK_FALSE(check_minted_token(junk, m.want(), &why).has_value());
  CHECK_FALSE(check_minted_token(m.auth, m.want(), &why).has_value());
}

TEST_CASE("the authorization names the cloud key tokens are checked under") {
  Minting m;
  auto k = authorized_cloud_key(m.auth);
  REQUIRE(k.ok());
  CHECK(k->spki_der() == m.cloud.public_key().spki_der());
  CHECK_FALSE(authorized_cloud_key(m.token(1)).ok());
}

TEST_CASE("the enrollment proof covers label, challenge, user id and key") {
  const Bytes challenge(32, 0xCC), user = uuid(1), spki{1, 2, 3};
  const Bytes msg = enrollment_message(challenge, user, spki);
  const std::string label("tollgate.cloud.v1.Enrollment\0", 29);
  REQUIRE(msg.size() == label.size() + 32 + 16 + 3);
  CHECK(std::string(msg.begin(), msg.begin() + 29) == label);
  CHECK(Bytes(msg.end() - 3, msg.end()) == spki);
}

TEST_CASE("base64 decodes only canonical padded text") {
  const Bytes data{0x00, 0xFF, 0x10, 0x20};
  CHECK(base64_encode(data) == "AP8QIA==");
  CHECK(base64_decode("AP8QIA==") == data);
  CHECK(base64_decode("") == Bytes{});
  CHECK_FALSE(base64_decode("AP8QIA=").has_value());
  CHECK_FALSE(base64_decode("AP8QIB==").has_value());  // non-zero pad bits
  CHECK_FALSE(base64_decode("AP8Q IA=").has_value());
  CHECK_FALSE(base64_decode("A===").has_value());
}

TEST_CASE("the session file round-trips and only its owner can read it") {
  TempDir home;
  REQUIRE(::mkdir(home.str("identities").c_str(), 0700) == 0);
  CloudSession s{"https://localhost:8443", "PEM", "alice", uuid(1), std::string(64, 'a'), 42};
  std::string err;
  REQUIRE_MESSAGE(save_session(home.str(), s, &err), err);
  struct stat st {};
  REQUIRE(::stat(session_path(home.str(), uuid(1)).c_str(), &st) == 0);
  CHECK((st.st_mode & 0777) == 0600);
  auto back = load_session(home.str(), uuid(1), &err);
  REQUIRE_MESSAGE(back.has_value(), err);
  CHECK(back->cloud == s.cloud);
  CHECK(back->session == s.session);
  CHECK(back->expires_at == 42);
  CHECK_FALSE(load_session(home.str(), uuid(2), &err).has_value());
}

TEST_CASE("only https URLs without a path name a cloud") {
  std::string err;
  auto u = parse_cloud_url("https://localhost:8443", &err);
  REQUIRE(u.has_value());
  CHECK(u->host == "localhost");
  CHECK(u->port == 8443);
  CHECK(parse_cloud_url("https://cloud.example/", &err)->port == 443);
  CHECK(parse_cloud_url("https://127.0.0.1:9", &err)->host == "127.0.0.1");
  CHECK_FALSE(parse_cloud_url("http://localhost:8443", &err).has_value());
  CHECK_FALSE(parse_cloud_url("https://localhost:8443/v1", &err).has_value());
  CHECK_FALSE(parse_cloud_url("localhost:8443", &err).has_value());
  CHECK_FALSE(parse_cloud_url("https://u@localhost", &err).has_value());
}

TEST_CASE("an unreachable cloud is reported as unreachable, not as garbage") {
  CloudClientOptions o;
  o.url = CloudUrl{"127.0.0.1", 1};  // nothing listens on port 1
  o.timeout = std::chrono::milliseconds(2000);
  CloudClient c(o);
  auto r = c.call("GET", "/v1/authorization");
  REQUIRE(r.index() == 1);
  CHECK(std::get<1>(r).kind == CloudFailure::kUnreachable);
  CHECK(exit_code(CloudFailure::kUnreachable) == kExitCloudUnreachable);
}
