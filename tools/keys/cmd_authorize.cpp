// authorize-cloud: the master key vouches for one cloud signing key.
#include <algorithm>
#include <iostream>
#include <memory>
#include <vector>

#include "tools/keys/cli_support.hpp"
#include "tools/keys/commands.hpp"

namespace tollgate::keys {

namespace {

struct AuthorizeOptions {
  std::string master;
  std::string passphrase_file;
  std::string cloud_pub;
  std::string id;
  std::string not_before;
  std::string not_after;
  std::vector<std::string> revoke;
  std::string out;
};

constexpr std::uint64_t kMaxId = UINT64_MAX;

int run_authorize(const AuthorizeOptions& o) {
  v1::CloudKeyAuthorization body;
  body.set_id(parse_unsigned_arg(o.id, "--id", kMaxId));
  const UnixTime not_before =
      o.not_before.empty() ? now() : parse_time_arg(o.not_before, "--not-before");
  const UnixTime not_after = parse_time_arg(o.not_after, "--not-after");
  if (not_after <= not_before) {
    throw Failure("--not-after (" + format_iso8601(not_after) +
                  ") must be later than --not-before (" + format_iso8601(not_before) + ")");
  }
  std::vector<std::uint64_t> revoked;
  for (const auto& r : o.revoke) revoked.push_back(parse_unsigned_arg(r, "--revoke", kMaxId));
  std::sort(revoked.begin(), revoked.end());
  revoked.erase(std::unique(revoked.begin(), revoked.end()), revoked.end());
  // A device merges the list before judging the authorization itself, so this
  // would be dead on arrival.
  if (std::binary_search(revoked.begin(), revoked.end(), body.id())) {
    throw Failure("--revoke " + std::to_string(body.id()) +
                  ": an authorization cannot revoke itself");
  }

  const crypto::PublicKey cloud = load_public_key(o.cloud_pub);
  const crypto::PrivateKey master = load_private_key(o.master, o.passphrase_file);
  if (cloud.id() == master.public_key().id()) {
    throw Failure("--cloud-pub is the master key itself; the cloud key must be a separate key");
  }
  body.set_cloud_public_key(std::string(as_chars(cloud.spki_der())));
  body.set_not_before(not_before);
  body.set_not_after(not_after);
  for (auto r : revoked) body.add_revoked_ids(r);

  const Bytes out = sign_to_bytes(v1::Signed::TYPE_CLOUD_KEY_AUTHORIZATION, body, master);
  write_file(o.out, out);

  std::string revokes;
  for (auto r : revoked) revokes += (revokes.empty() ? "" : ",") + std::to_string(r);
  std::cout << "authorization " << body.id() << ": cloud key " << key_id_hex(cloud.id()) << " ("
            << crypto::algorithm_name(cloud.algorithm()) << ") valid " << format_iso8601(not_before)
            << " to " << format_iso8601(not_after) << ", revokes "
            << (revokes.empty() ? "none" : revokes) << "; signed by master key "
            << key_id_hex(master.public_key().id()) << " -> " << o.out << " (" << out.size()
            << " bytes)\n";
  return kExitOk;
}

}  // namespace

Command add_authorize_cloud(CLI::App& root) {
  auto o = std::make_shared<AuthorizeOptions>();
  CLI::App* sub = root.add_subcommand(
      "authorize-cloud",
      "Sign a Cloud Key Authorization with the master key: it lets the cloud key mint\n"
      "device tokens between --not-before and --not-after, and carries the current\n"
      "revocation list. Writes the serialized Signed object (binary) to --out.");
  sub->add_option("--master", o->master, "Master private key (PEM)")->type_name("FILE")->required();
  sub->add_option("--passphrase-file", o->passphrase_file,
                  "Passphrase of the master key, if encrypted")
      ->type_name("FILE");
  sub->add_option("--cloud-pub", o->cloud_pub, "Cloud public key to authorize (PEM)")
      ->type_name("FILE")
      ->required();
  sub->add_option("--id", o->id, "Numeric id of this authorization (> 0)")
      ->type_name("N")
      ->required();
  sub->add_option("--not-after", o->not_after, "End of validity (ISO 8601)")
      ->type_name("TIME")
      ->required();
  sub->add_option("--not-before", o->not_before, "Start of validity (ISO 8601; default: now)")
      ->type_name("TIME");
  sub->add_option("--revoke", o->revoke,
                  "Authorization id to revoke (repeatable); list every id revoked so far, since\n"
                  "devices merge lists and a revocation is permanent")
      ->type_name("ID");
  sub->add_option("--out", o->out, "Output file (serialized Signed CloudKeyAuthorization)")
      ->type_name("FILE")
      ->required();
  sub->footer(
      "Example: tollgate-keys authorize-cloud --master master.key --cloud-pub cloud.pub --id 7 \\\n"
      "           --not-after 2027-01-01 --out auth7.bin");
  return {sub, [o] { return run_authorize(*o); }};
}

}  // namespace tollgate::keys
