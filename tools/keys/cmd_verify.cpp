// verify: decide a token exactly as a device would, with a throw-away in-memory state.
#include <iostream>
#include <memory>
#include <vector>

#include "gateway/gateway.hpp"
#include "gateway/memory_storage.hpp"
#include "tools/keys/cli_support.hpp"
#include "tools/keys/commands.hpp"

namespace tollgate::keys {

namespace {

struct VerifyOptions {
  std::vector<std::string> masters;
  std::vector<std::string> authorizations;
  std::string token;
  std::string device;
  std::string at;
};

// Best-effort look inside an object that may be forged, only to make messages
// readable ("authorization 8"); never used for a decision.
template <class Body>
std::optional<Body> peek_body(const Bytes& data) {
  v1::Signed s;
  Body b;
  if (!s.ParseFromArray(data.data(), static_cast<int>(data.size())) ||
      !b.ParseFromString(s.body())) {
    return std::nullopt;
  }
  return b;
}

std::string authorization_label(const std::string& path, const Bytes& data) {
  auto body = peek_body<v1::CloudKeyAuthorization>(data);
  return body ? "authorization " + std::to_string(body->id()) + " (" + path + ")"
              : "authorization " + path;
}

// Adds what the user needs to act on a rejection. Only for reasons reached after
// the token's signature held, so the detail comes from signed data.
std::string rejection_detail(Error e, const Bytes& token_bytes, UnixTime at, const Bytes& device) {
  auto token = peek_body<v1::DeviceToken>(token_bytes);
  if (!token) return "";
  switch (e) {
    case v1::ERROR_WRONG_DEVICE:
      return "the token is bound to device " + uuid_to_string(as_bytes(token->device_id())) +
             ", not " + uuid_to_string(device);
    case v1::ERROR_EXPIRED:
      if (token->expires_at() <= at) {
        return "the token expired at " + format_iso8601(token->expires_at()) + ", checked at " +
               format_iso8601(at);
      }
      return "authorization " + std::to_string(token->authorization_id()) +
             ", under which it was minted, has expired (checked at " + format_iso8601(at) + ")";
    case v1::ERROR_NOT_YET_VALID:
      return "the token is issued at " + format_iso8601(token->issued_at()) + ", checked at " +
             format_iso8601(at);
    case v1::ERROR_REVOKED:
      return "authorization " + std::to_string(token->authorization_id()) +
             ", under which it was minted, is revoked";
    case v1::ERROR_AUTHORIZATION_NOT_INSTALLED:
      return "it was minted under authorization " + std::to_string(token->authorization_id()) +
             ", which is not installed";
    default:
      break;
  }
  return "";
}

int run_verify(const VerifyOptions& o) {
  const Bytes device = parse_uuid_arg(o.device, "--device");
  const UnixTime at = o.at.empty() ? now() : parse_time_arg(o.at, "--at");
  std::vector<crypto::PublicKey> masters;
  for (const auto& m : o.masters) masters.push_back(load_public_key(m));
  // Read everything before deciding anything: a missing file is a usage error,
  // not a verdict on the token.
  std::vector<Bytes> auths;
  for (const auto& a : o.authorizations) auths.push_back(read_file(a));
  const Bytes token = read_file(o.token);

  MemoryStorage storage;
  auto gw = Gateway::open(device, std::move(masters), DevicePolicy{}, storage);
  if (!gw)
    throw Failure("cannot set up the device model: " + describe_error(gw.error()), kExitInternal);

  // In the order given, as a device meets them: a refused authorization still
  // merges its revocations (the master signed them), so keep going.
  for (std::size_t i = 0; i < auths.size(); ++i) {
    auto installed = gw->install_authorization(auths[i], at);
    if (installed) {
      std::cout << "installed authorization " << installed->id << " (cloud key "
                << key_id_hex(installed->cloud_key_id) << ", until "
                << format_iso8601(installed->not_after) << ")";
      if (installed->revocations_added > 0) {
        std::cout << ", revoked " << installed->revocations_added << " id"
                  << (installed->revocations_added == 1 ? "" : "s");
      }
      std::cout << '\n';
    } else {
      std::cout.flush();  // keep the story in order when both streams go to one place
      std::cerr << "note: " << authorization_label(o.authorizations[i], auths[i])
                << " not installed: " << describe_error(installed.error()) << '\n';
    }
  }

  auto checked = gw->check_token(token, at);
  if (!checked) {
    const std::string detail = rejection_detail(checked.error(), token, at, device);
    throw Failure(
        "invalid: " + describe_error(checked.error()) + (detail.empty() ? "" : ": " + detail),
        kExitRejected);
  }
  const v1::DeviceToken& t = checked->token;
  std::string roles;
  for (const auto& r : t.roles()) roles += (roles.empty() ? "" : ",") + r;
  std::cout << "valid: token " << uuid_to_string(as_bytes(t.token_id())) << ", "
            << checked->uses_left << " of " << t.authorized_uses() << " uses, user "
            << uuid_to_string(as_bytes(t.user_id())) << " (key " << key_id_hex(checked->user_key_id)
            << "), device " << uuid_to_string(as_bytes(t.device_id())) << ", expires "
            << format_iso8601(t.expires_at()) << ", authorization " << t.authorization_id()
            << " (cloud key " << key_id_hex(checked->cloud_key_id) << ")"
            << (roles.empty() ? "" : ", roles " + roles) << ", checked at " << format_iso8601(at)
            << '\n';
  return kExitOk;
}

}  // namespace

Command add_verify(CLI::App& root) {
  auto o = std::make_shared<VerifyOptions>();
  CLI::App* sub = root.add_subcommand(
      "verify",
      "Check a device token as a device would: start from a device that trusts only the\n"
      "--master keys, install each --authorization in the order given (a refused one is\n"
      "reported and its revocations still count), then check --token for --device at --at.\n"
      "Exit 0 and 'valid: ...' when the device would accept it; otherwise exit 1 and one\n"
      "line on stderr naming the specific reason (bad signature, revoked, expired, ...).");
  sub->add_option("--master", o->masters, "Master public key (PEM); repeatable")
      ->type_name("FILE")
      ->required();
  sub->add_option("--authorization", o->authorizations,
                  "Cloud key authorization file; repeatable, installed in order")
      ->type_name("FILE")
      ->required();
  sub->add_option("--token", o->token, "Device token file")->type_name("FILE")->required();
  sub->add_option("--device", o->device, "UUID of the device doing the check")
      ->type_name("UUID")
      ->required();
  sub->add_option("--at", o->at, "Device time (ISO 8601; default: now)")->type_name("TIME");
  return {sub, [o] { return run_verify(*o); }};
}

}  // namespace tollgate::keys
