// keygen: a fresh key pair on disk.
#include <sys/stat.h>
#include <unistd.h>

#include <iostream>
#include <memory>

#include "tools/keys/cli_support.hpp"
#include "tools/keys/commands.hpp"

namespace tollgate::keys {

namespace {

struct KeygenOptions {
  std::string alg;
  std::string out;
  std::string passphrase_file;
  bool force = false;
};

bool exists(const std::string& path) {
  struct stat st {};
  return ::lstat(path.c_str(), &st) == 0;
}

int run_keygen(const KeygenOptions& o) {
  const auto type = crypto::key_type_from_name(o.alg);
  if (!type) throw Failure("--alg: '" + o.alg + "' is not one of ed25519, p256, rsa2048, rsa3072");
  const std::string key_path = o.out + ".key";
  const std::string pub_path = o.out + ".pub";
  // Checked before the (slow, for RSA) generation, and for both files, so a
  // refusal leaves nothing half-written.
  for (const auto& p : {key_path, pub_path}) {
    if (!o.force && exists(p)) throw Failure(p + " already exists (use --force to replace it)");
  }
  const std::string passphrase =
      o.passphrase_file.empty() ? "" : read_passphrase(o.passphrase_file);

  auto key = crypto::PrivateKey::generate(*type);
  if (!key) throw Failure("key generation failed: " + describe_error(key.error()), kExitInternal);
  auto pem = key->pem(passphrase);
  if (!pem)
    throw Failure("cannot encode the private key: " + describe_error(pem.error()), kExitInternal);

  write_secret_file(key_path, *pem, o.force);
  try {
    write_file(pub_path, as_bytes(key->public_key().pem()));
  } catch (const Failure&) {
    // A private key without its public half is a trap for the next step.
    ::unlink(key_path.c_str());
    throw;
  }
  const crypto::PublicKey& pub = key->public_key();
  std::cout << "key id " << key_id_hex(pub.id()) << " (" << crypto::algorithm_name(pub.algorithm())
            << ", " << pub.bits() << " bits" << (passphrase.empty() ? "" : ", encrypted")
            << "): wrote " << key_path << " and " << pub_path << '\n';
  return kExitOk;
}

}  // namespace

Command add_keygen(CLI::App& root) {
  auto o = std::make_shared<KeygenOptions>();
  CLI::App* sub =
      root.add_subcommand("keygen",
                          "Generate a key pair: NAME.key (PKCS#8 PEM, mode 0600, encrypted when\n"
                          "--passphrase-file is given) and NAME.pub (SPKI PEM). Prints the key id\n"
                          "(first 16 bytes of SHA-256 over the public key's DER, in hex).");
  sub->add_option("--alg", o->alg, "ed25519 | p256 | rsa2048 | rsa3072")
      ->type_name("ALG")
      ->required();
  sub->add_option("--out", o->out, "Path prefix NAME: writes NAME.key and NAME.pub")
      ->type_name("NAME")
      ->required();
  sub->add_option("--passphrase-file", o->passphrase_file,
                  "Encrypt NAME.key (AES-256-CBC) with the first line of this file")
      ->type_name("FILE");
  sub->add_flag("--force", o->force, "Replace existing NAME.key / NAME.pub");
  sub->footer(
      "Example: tollgate-keys keygen --alg rsa3072 --out master --passphrase-file pass.txt");
  return {sub, [o] { return run_keygen(*o); }};
}

}  // namespace tollgate::keys
