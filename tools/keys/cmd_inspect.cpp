// inspect: show every field of a signed object (or a key file), without trusting it.
#include <iostream>
#include <memory>

#include "tools/keys/cli_support.hpp"
#include "tools/keys/commands.hpp"
#include "tools/keys/describe.hpp"

namespace tollgate::keys {

namespace {

struct InspectOptions {
  std::string file;
  std::string passphrase_file;
  bool json = false;
};

bool contains(const Bytes& data, std::string_view needle) {
  return as_chars(data).find(needle) != std::string_view::npos;
}

boost::json::object describe_file(const InspectOptions& o) {
  const Bytes data = read_file(o.file);
  if (contains(data, "-----BEGIN PUBLIC KEY-----")) {
    boost::json::object k{{"type", "PublicKey"}};
    for (auto& kv : describe_public_key(load_public_key(o.file))) k[kv.key()] = kv.value();
    return k;
  }
  if (contains(data, "PRIVATE KEY-----")) {
    const bool encrypted = contains(data, "-----BEGIN ENCRYPTED PRIVATE KEY-----");
    boost::json::object k{{"type", "PrivateKey"}, {"encrypted", encrypted}};
    if (encrypted && o.passphrase_file.empty()) {
      k["public_key"] = "(give --passphrase-file to open it)";
      return k;
    }
    // Only the public half is shown; the private scalar never leaves the file.
    const crypto::PrivateKey key = load_private_key(o.file, o.passphrase_file);
    k["public_key"] = describe_public_key(key.public_key());
    return k;
  }
  return describe_signed(load_signed(o.file));
}

int run_inspect(const InspectOptions& o) {
  const boost::json::object obj = describe_file(o);
  if (o.json) {
    std::cout << boost::json::serialize(obj) << '\n';
  } else {
    std::cout << render_text(obj);
  }
  return kExitOk;
}

}  // namespace

Command add_inspect(CLI::App& root) {
  auto o = std::make_shared<InspectOptions>();
  CLI::App* sub = root.add_subcommand(
      "inspect",
      "Show every field of a signed object (authorization, token, command, response, ...):\n"
      "the type is read from the object itself; UUIDs canonical, times ISO 8601 UTC, key\n"
      "ids and signatures hex. Also accepts PEM key files (shows algorithm and key id).\n"
      "Nothing is verified here: use 'verify' to check signatures and validity.");
  sub->add_option("file", o->file, "Signed object or PEM key file")->type_name("FILE")->required();
  sub->add_flag("--json", o->json, "Print one JSON object instead of text");
  sub->add_option("--passphrase-file", o->passphrase_file, "To open an encrypted private key file")
      ->type_name("FILE");
  return {sub, [o] { return run_inspect(*o); }};
}

}  // namespace tollgate::keys
