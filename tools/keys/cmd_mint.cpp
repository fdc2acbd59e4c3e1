// mint: the cloud key issues a use-limited device token for one user key.
#include <iostream>
#include <limits>
#include <memory>
#include <vector>

#include "tools/keys/cli_support.hpp"
#include "tools/keys/commands.hpp"

namespace tollgate::keys {

namespace {

struct MintOptions {
  std::string cloud_key;
  std::string passphrase_file;
  std::string authorization;
  std::string device;
  std::string user;
  std::string user_pub;
  std::string uses;
  std::string expires;
  std::string valid_for;
  std::vector<std::string> roles;
  std::string issued_at;
  std::string out;
};

bool valid_role(const std::string& r) {
  if (r.empty() || r.size() > 64) return false;
  for (char c : r) {
    const bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
                    c == '.' || c == '_' || c == '-';
    if (!ok) return false;
  }
  return true;
}

int run_mint(const MintOptions& o) {
  if (o.expires.empty() == o.valid_for.empty()) {
    throw Failure("give exactly one of --expires and --valid-for");
  }
  v1::DeviceToken body;
  const Bytes device = parse_uuid_arg(o.device, "--device");
  const Bytes user = parse_uuid_arg(o.user, "--user");
  const auto uses = parse_unsigned_arg(o.uses, "--uses", std::numeric_limits<std::uint32_t>::max());
  const UnixTime issued_at =
      o.issued_at.empty() ? now() : parse_time_arg(o.issued_at, "--issued-at");
  UnixTime expires_at = 0;
  if (!o.expires.empty()) {
    expires_at = parse_time_arg(o.expires, "--expires");
  } else {
    const std::int64_t d = parse_duration_arg(o.valid_for, "--valid-for");
    if (issued_at > std::numeric_limits<UnixTime>::max() - d)
      throw Failure("--valid-for is too long");
    expires_at = issued_at + d;
  }
  if (expires_at <= issued_at) {
    throw Failure("the token would expire (" + format_iso8601(expires_at) +
                  ") before it is issued (" + format_iso8601(issued_at) + ")");
  }
  for (const auto& r : o.roles) {
    if (!valid_role(r)) {
      throw Failure("--role: '" + r + "' is not a role name (1-64 of A-Z a-z 0-9 . _ -)");
    }
  }

  // The authorization is the cloud key's credential: the token names it, and a
  // device only accepts the token from the key that authorization vouches for.
  const v1::Signed auth_signed =
      load_signed_as(o.authorization, v1::Signed::TYPE_CLOUD_KEY_AUTHORIZATION);
  v1::CloudKeyAuthorization auth;
  if (!auth.ParseFromString(auth_signed.body()) || auth.id() == 0) {
    throw Failure(o.authorization + ": the authorization body is malformed");
  }
  const crypto::PublicKey user_key = load_public_key(o.user_pub);
  const crypto::PrivateKey cloud = load_private_key(o.cloud_key, o.passphrase_file);
  if (as_chars(cloud.public_key().spki_der()) != auth.cloud_public_key()) {
    throw Failure(o.cloud_key + " (key id " + key_id_hex(cloud.public_key().id()) +
                  ") is not the cloud key that authorization " + std::to_string(auth.id()) +
                  " authorizes; a device would reject every token it signs");
  }

  const Bytes token_id = random_uuid();
  body.set_token_id(std::string(as_chars(token_id)));
  body.set_issued_at(issued_at);
  body.set_device_id(std::string(as_chars(device)));
  body.set_authorized_uses(static_cast<std::uint32_t>(uses));
  body.set_user_id(std::string(as_chars(user)));
  body.set_user_public_key(std::string(as_chars(user_key.spki_der())));
  body.set_expires_at(expires_at);
  body.set_authorization_id(auth.id());
  for (const auto& r : o.roles) body.add_roles(r);

  const Bytes out = sign_to_bytes(v1::Signed::TYPE_DEVICE_TOKEN, body, cloud);
  write_file(o.out, out);

  std::cout << "token " << uuid_to_string(token_id) << ": " << uses << " use"
            << (uses == 1 ? "" : "s") << " on device " << uuid_to_string(device) << " for user "
            << uuid_to_string(user) << " (key " << key_id_hex(user_key.id()) << "), valid "
            << format_iso8601(issued_at) << " to " << format_iso8601(expires_at)
            << ", under authorization " << auth.id() << " -> " << o.out << " (" << out.size()
            << " bytes)\n";
  // Not an error: the device simply stops accepting the token when the
  // authorization ends, which the operator may not expect.
  if (expires_at > auth.not_after()) {
    std::cout << "note: the token outlives authorization " << auth.id() << " (not after "
              << format_iso8601(auth.not_after()) << "); devices reject it after that\n";
  }
  return kExitOk;
}

}  // namespace

Command add_mint(CLI::App& root) {
  auto o = std::make_shared<MintOptions>();
  CLI::App* sub = root.add_subcommand(
      "mint",
      "Mint a Device Token with the cloud key: --uses uses of device --device by the\n"
      "holder of --user-pub, until --expires (or --valid-for after issue). The token id\n"
      "is a fresh random UUID; the authorization id comes from --authorization, whose\n"
      "cloud public key must match --cloud-key. Writes the serialized Signed object.");
  sub->add_option("--cloud-key", o->cloud_key, "Cloud private key (PEM)")
      ->type_name("FILE")
      ->required();
  sub->add_option("--passphrase-file", o->passphrase_file,
                  "Passphrase of the cloud key, if encrypted")
      ->type_name("FILE");
  sub->add_option("--authorization", o->authorization,
                  "The cloud key's authorization (from authorize-cloud)")
      ->type_name("FILE")
      ->required();
  sub->add_option("--device", o->device, "Device UUID the token is bound to")
      ->type_name("UUID")
      ->required();
  sub->add_option("--user", o->user, "User UUID")->type_name("UUID")->required();
  sub->add_option("--user-pub", o->user_pub, "User public key (PEM) that signs commands")
      ->type_name("FILE")
      ->required();
  sub->add_option("--uses", o->uses, "Number of authorized uses (1..4294967295)")
      ->type_name("N")
      ->required();
  auto* expires =
      sub->add_option("--expires", o->expires, "Expiry time (ISO 8601)")->type_name("TIME");
  auto* valid_for = sub->add_option("--valid-for", o->valid_for,
                                    "Lifetime after --issued-at: 7d, 12h, 30m, 90s, 1d12h")
                        ->type_name("DURATION");
  expires->excludes(valid_for);
  sub->add_option("--role", o->roles, "Role (command class) the token unlocks (repeatable)")
      ->type_name("ROLE");
  sub->add_option("--issued-at", o->issued_at, "Issue time (ISO 8601; default: now)")
      ->type_name("TIME");
  sub->add_option("--out", o->out, "Output file (serialized Signed DeviceToken)")
      ->type_name("FILE")
      ->required();
  sub->footer(
      "Example: tollgate-keys mint --cloud-key cloud.key --authorization auth7.bin \\\n"
      "           --device 6f1c...-... --user 0b7e...-... --user-pub alice.pub --uses 3 \\\n"
      "           --valid-for 7d --out token.bin");
  return {sub, [o] { return run_mint(*o); }};
}

}  // namespace tollgate::keys
