// Arbitrary bytes offered to a Gateway with a fixed trust setup (master ->
// authorization 1 -> one token for the fixed user), as a token, an
// authorization or a command; or signed by the matching fixed key first, so the
// body checks behind the signature get fuzzed too. Must never crash, leak, read
// out of bounds, or break the invariants checked below.
//
// Input: byte 0 picks the mode, byte 1 the clock (days from a fixed start),
// the rest is the object (or body, for the signing modes).
#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>

#include <google/protobuf/stubs/logging.h>

#include "gateway/gateway.hpp"
#include "gateway/memory_storage.hpp"
#include "gateway/signed.hpp"

using namespace tollgate;

namespace {

// Throw-away Ed25519 keys, fixed so a crash reproduces from its input alone.
constexpr const char* kMasterPem =
    "-----BEGIN PRIVATE KEY-----\n"
    "MC4CAQAwBQYDK2VwBCIEILnxuVLtT4ugpsdCvUkmXbxWkDpRFaS8l5wvHG3uZxFH\n"
    "-----END PRIVATE KEY-----\n";
constexpr const char* kCloudPem =
    "-----BEGIN PRIVATE KEY-----\n"
    "MC4CAQAwBQYDK2VwBCIEIPL7pkA0X22mxvOOd0p/BevR1igr/krWEvwSk2+KhCr+\n"
    "-----END PRIVATE KEY-----\n";
constexpr const char* kUserPem =
    "-----BEGIN PRIVATE KEY-----\n"
    "MC4CAQAwBQYDK2VwBCIEIO8Tm2N1K4Ug0b4vEBwiozfPriKCg9XPzL/VEomv1ADT\n"
    "-----END PRIVATE KEY-----\n";

constexpr UnixTime kStart = 1'700'000'000;
constexpr std::int64_t kDay = 86'400;
const std::string kDevice(16, '\xD1');

enum Mode : std::uint8_t {
  kRawToken,
  kRawAuthorization,
  kRawCommand,
  kSignedTokenBody,
  kSignedAuthorizationBody,
  kSignedCommandBody,
  kModes
};

struct Setup {
  crypto::PrivateKey master = crypto::PrivateKey::from_pem(kMasterPem).value();
  crypto::PrivateKey cloud = crypto::PrivateKey::from_pem(kCloudPem).value();
  crypto::PrivateKey user = crypto::PrivateKey::from_pem(kUserPem).value();
  Bytes authorization;
  Bytes token;
  CommandRules rules;

  Setup() {
    // Bodies with invalid UTF-8 strings are rejected as malformed; protobuf
    // would also log each one, drowning the fuzzer's output.
    google::protobuf::SetLogHandler(nullptr);
    v1::CloudKeyAuthorization a;
    a.set_id(1);
    const auto& cloud_der = cloud.public_key().spki_der();
    a.set_cloud_public_key(std::string(cloud_der.begin(), cloud_der.end()));
    a.set_not_before(kStart - kDay);
    a.set_not_after(kStart + 100 * kDay);
    a.add_revoked_ids(7);
    authorization = sign(v1::Signed::TYPE_CLOUD_KEY_AUTHORIZATION, a.SerializeAsString(), master);

    v1::DeviceToken t;
    t.set_token_id(std::string(16, '\x01'));
    t.set_issued_at(kStart);
    t.set_device_id(kDevice);
    t.set_authorized_uses(3);
    t.set_user_id(std::string(16, '\x02'));
    const auto& user_der = user.public_key().spki_der();
    t.set_user_public_key(std::string(user_der.begin(), user_der.end()));
    t.set_expires_at(kStart + 30 * kDay);
    t.set_authorization_id(1);
    token = sign(v1::Signed::TYPE_DEVICE_TOKEN, t.SerializeAsString(), cloud);

    rules["measure"] = CommandRule{1, {}, {}};
    rules["status"] = CommandRule{0, {}, {}};
    rules["service"] = CommandRule{2, {"service"}, {}};
    rules["dose"] =
        CommandRule{1, {}, [](const CommandArguments& args) -> Status {
                      return args.count("ml") ? Status{} : Status{v1::ERROR_BAD_ARGUMENT};
                    }};
  }

  static Bytes sign(ObjectType type, const std::string& body, const crypto::PrivateKey& key) {
    auto s = sign_object(type, as_bytes(body), key);
    if (!s) return {};
    const std::string out = s->SerializeAsString();
    return Bytes(out.begin(), out.end());
  }
};

void check(bool invariant) {
  if (!invariant) __builtin_trap();
}

const Setup& setup() {
  static const Setup instance;
  return instance;
}

Result<Gateway> open(Storage& storage) {
  std::vector<crypto::PublicKey> masters;
  masters.push_back(setup().master.public_key().clone());
  auto counter = std::make_shared<std::uint64_t>(0);
  auto gw = Gateway::open(as_bytes(kDevice), std::move(masters), DevicePolicy{}, storage,
                          [counter](std::size_t n) {
                            Bytes b(n, 0);
                            for (auto& x : b) x = static_cast<std::uint8_t>(++*counter);
                            return b;
                          });
  check(gw.ok());
  return gw;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const Setup& setup = ::setup();
  if (size < 2) return 0;
  const auto mode = static_cast<Mode>(data[0] % kModes);
  const UnixTime clock = kStart + static_cast<std::int8_t>(data[1]) * kDay;
  const ByteView input(data + 2, size - 2);

  // The trust setup is installed once; each input starts from that state.
  static const DeviceState prepared = [&] {
    MemoryStorage storage;
    auto gw = open(storage);
    check(gw->install_authorization(setup.authorization, kStart).ok());
    check(gw->offer_token(setup.token, kStart).ok());
    check(gw->flush(kStart).ok());
    return storage.state();
  }();
  MemoryStorage storage(prepared);
  auto gw = open(storage);
  const auto uses_before =
      gw->state().tokens.count(Bytes(16, 1)) ? gw->state().tokens.at(Bytes(16, 1)).uses_left : 0u;

  switch (mode) {
    case kRawToken: {
      auto checked = gw->check_token(input, clock);
      auto offered = gw->offer_token(input, clock);
      check(checked.ok() == offered.ok() || offered.error() == v1::ERROR_LIMIT_REACHED);
      break;
    }
    case kRawAuthorization:
      (void)gw->install_authorization(input, clock);
      break;
    case kRawCommand:
      (void)gw->authorize_command(input, clock, setup.rules);
      break;
    case kSignedTokenBody: {
      Bytes signed_bytes =
          Setup::sign(v1::Signed::TYPE_DEVICE_TOKEN, std::string(as_chars(input)), setup.cloud);
      (void)gw->check_token(signed_bytes, clock);
      (void)gw->offer_token(signed_bytes, clock);
      break;
    }
    case kSignedAuthorizationBody: {
      Bytes signed_bytes = Setup::sign(v1::Signed::TYPE_CLOUD_KEY_AUTHORIZATION,
                                       std::string(as_chars(input)), setup.master);
      (void)gw->install_authorization(signed_bytes, clock);
      break;
    }
    case kSignedCommandBody: {
      // Give the fuzzed request a live nonce so the checks behind it are reached.
      v1::CommandRequest req;
      std::string body(as_chars(input));
      if (req.ParseFromString(body)) {
        req.set_nonce(std::string(as_chars(gw->issue_nonce(clock))));
        body = req.SerializeAsString();
      }
      Bytes signed_bytes = Setup::sign(v1::Signed::TYPE_COMMAND_REQUEST, body, setup.user);
      auto d = gw->authorize_command(signed_bytes, clock, setup.rules);
      if (d && d->kind == Decision::Kind::kExecute) {
        check(gw->complete_request(d->key, Bytes{1, 2, 3}).ok());
        auto again = gw->authorize_command(signed_bytes, clock, setup.rules);
        check(again.ok() && again->kind == Decision::Kind::kReplay);
        check(again->stored_response == Bytes({1, 2, 3}));
      }
      break;
    }
    default:
      break;
  }

  // Invariants: no revoked id is installed, uses never grow, the durable state
  // matches memory once flushed.
  const DeviceState& s = gw->state();
  for (const auto& [id, bytes] : s.authorizations) check(s.revoked_ids.count(id) == 0);
  check(s.revoked_ids.count(7) == 1);
  if (auto it = s.tokens.find(Bytes(16, 1)); it != s.tokens.end()) {
    check(it->second.uses_left <= uses_before);
  }
  check(gw->flush(clock).ok());
  check(storage.state() == gw->state());
  return 0;
}
