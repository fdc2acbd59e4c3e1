#include "hostpc/online.hpp"

#include <fcntl.h>
#include <openssl/evp.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <boost/json.hpp>
#include <cstdio>
#include <fstream>
#include <sstream>

#include "gateway/signed.hpp"

namespace tollgate::host {

namespace json = boost::json;

namespace {
bool same(ByteView a, ByteView b) {
  return std::equal(a.begin(), a.end(), b.begin(), b.end());
}
}  // namespace

int exit_code(CloudFailure failure) {
  switch (failure) {
    case CloudFailure::kUnreachable:
      return kExitCloudUnreachable;
    case CloudFailure::kRefused:
      return kExitCloudRefused;
    case CloudFailure::kGarbage:
      return kExitCloudGarbage;
  }
  return kExitCloudGarbage;
}

std::string base64_encode(ByteView data) {
  std::string out(4 * ((data.size() + 2) / 3), '\0');
  if (data.empty()) return out;
  const int n = EVP_EncodeBlock(reinterpret_cast<unsigned char*>(out.data()), data.data(),
                                static_cast<int>(data.size()));
  out.resize(n < 0 ? 0 : static_cast<std::size_t>(n));
  return out;
}

std::optional<Bytes> base64_decode(std::string_view text) {
  if (text.size() % 4 != 0) return std::nullopt;
  if (text.empty()) return Bytes{};
  Bytes out(text.size() / 4 * 3);
  const int n = EVP_DecodeBlock(out.data(), reinterpret_cast<const unsigned char*>(text.data()),
                                static_cast<int>(text.size()));
  if (n < 0) return std::nullopt;
  std::size_t len = static_cast<std::size_t>(n);
  // EVP_DecodeBlock keeps the zero bytes the padding stands for.
  if (text.back() == '=') --len;
  if (text[text.size() - 2] == '=') --len;
  out.resize(len);
  // Canonical only: whitespace, stray '=' or non-zero pad bits do not round-trip.
  if (base64_encode(out) != text) return std::nullopt;
  return out;
}

std::string session_path(const std::string& home, ByteView user_id) {
  return home + "/identities/" + uuid_to_string(user_id) + ".session";
}

bool save_session(const std::string& home, const CloudSession& s, std::string* error) {
  const json::object o{{"cloud", s.cloud},     {"ca_pem", s.ca_pem},
                       {"account", s.account}, {"user_id", uuid_to_string(s.user_id)},
                       {"session", s.session}, {"expires_at", s.expires_at}};
  const std::string text = json::serialize(o) + "\n";
  const std::string path = session_path(home, s.user_id);
  const std::string tmp = path + ".tmp";
  const int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
  if (fd < 0) {
    if (error) *error = "cannot write " + tmp;
    return false;
  }
  // An older file created under a looser umask keeps its mode on O_TRUNC.
  bool ok = ::fchmod(fd, 0600) == 0;
  std::size_t done = 0;
  while (ok && done < text.size()) {
    const ssize_t n = ::write(fd, text.data() + done, text.size() - done);
    if (n <= 0)
      ok = false;
    else
      done += static_cast<std::size_t>(n);
  }
  ok = ::fsync(fd) == 0 && ok;
  ok = ::close(fd) == 0 && ok;
  if (!ok || std::rename(tmp.c_str(), path.c_str()) != 0) {
    std::remove(tmp.c_str());
    if (error) *error = "cannot write " + path;
    return false;
  }
  return true;
}

std::optional<CloudSession> load_session(const std::string& home, ByteView user_id,
                                         std::string* error) {
  const std::string path = session_path(home, user_id);
  std::ifstream in(path);
  if (!in) {
    if (error) {
      *error = "not logged in as " + uuid_to_string(user_id) +
               ": run `tollgate-host login --cloud URL --account NAME` first";
    }
    return std::nullopt;
  }
  std::ostringstream ss;
  ss << in.rdbuf();
  boost::system::error_code ec;
  const json::value v = json::parse(ss.str(), ec);
  auto bad = [&]() -> std::optional<CloudSession> {
    if (error) *error = path + " is damaged: log in again";
    return std::nullopt;
  };
  if (ec || !v.is_object()) return bad();
  const auto& o = v.as_object();
  auto str = [&](const char* k) -> std::optional<std::string> {
    auto* p = o.if_contains(k);
    if (!p || !p->is_string()) return std::nullopt;
    return std::string(p->as_string().c_str());
  };
  CloudSession s;
  auto cloud = str("cloud"), ca = str("ca_pem"), account = str("account"), uid = str("user_id"),
       sess = str("session");
  auto* exp = o.if_contains("expires_at");
  if (!cloud || !ca || !account || !uid || !sess || !exp || !exp->is_int64()) return bad();
  auto id = uuid_from_string(*uid);
  if (!id || !same(*id, user_id)) return bad();
  s.cloud = *cloud;
  s.ca_pem = *ca;
  s.account = *account;
  s.user_id = *id;
  s.session = *sess;
  s.expires_at = exp->as_int64();
  return s;
}

Bytes enrollment_message(ByteView challenge, ByteView user_id, ByteView spki_der) {
  static constexpr std::string_view kLabel{"tollgate.cloud.v1.Enrollment\0", 29};
  Bytes m(kLabel.begin(), kLabel.end());
  m.insert(m.end(), challenge.begin(), challenge.end());
  m.insert(m.end(), user_id.begin(), user_id.end());
  m.insert(m.end(), spki_der.begin(), spki_der.end());
  return m;
}

Result<crypto::PublicKey> authorized_cloud_key(ByteView signed_authorization) {
  auto s = parse_signed(signed_authorization);
  if (!s) return s.error();
  if (s->type() != v1::Signed::TYPE_CLOUD_KEY_AUTHORIZATION) return v1::ERROR_WRONG_TYPE;
  v1::CloudKeyAuthorization body;
  if (!body.ParseFromString(s->body())) return v1::ERROR_MALFORMED;
  return crypto::PublicKey::from_spki_der(as_bytes(body.cloud_public_key()));
}

std::optional<CachedToken> check_minted_token(ByteView signed_token, const TokenExpectation& want,
                                              std::string* why) {
  auto refuse = [&](const std::string& reason) -> std::optional<CachedToken> {
    if (why) *why = reason;
    return std::nullopt;
  };
  auto shape = parse_token(signed_token);
  if (!shape) return refuse(std::string("not a token: ") + std::string(error_name(shape.error())));
  if (!want.cloud_key) return refuse("no cloud key to check it with");
  auto s = parse_signed(signed_token);
  if (!s) return refuse(std::string("not a token: ") + std::string(error_name(s.error())));
  auto body = verify_and_parse<v1::DeviceToken>(*s, v1::Signed::TYPE_DEVICE_TOKEN, *want.cloud_key,
                                                AlgorithmPolicy{});
  if (!body) {
    return refuse(std::string("not signed by the authorized cloud key: ") +
                  std::string(error_name(body.error())));
  }
  if (body->authorization_id() != want.authorization_id) {
    return refuse("minted under authorization " + std::to_string(body->authorization_id()) +
                  ", not the current " + std::to_string(want.authorization_id));
  }
  if (!same(as_bytes(body->device_id()), want.device_id)) return refuse("for another device");
  if (!same(as_bytes(body->user_id()), want.user_id)) return refuse("for another user");
  if (!same(as_bytes(body->user_public_key()), want.user_spki)) {
    return refuse("for another user key than this identity's");
  }
  if (body->expires_at() <= want.now) return refuse("already expired");
  return *shape;
}

}  // namespace tollgate::host
