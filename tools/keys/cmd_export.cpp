// export-signing-input / export-signature: the exact bytes a signature covers and
// the signature itself, so any OpenSSL command line can check our signatures.
#include <openssl/bn.h>
#include <openssl/ecdsa.h>
#include <openssl/err.h>

#include <iostream>
#include <memory>

#include "tools/keys/cli_support.hpp"
#include "tools/keys/commands.hpp"

namespace tollgate::keys {

namespace {

struct ExportOptions {
  std::string file;
  std::string out;
};

struct EcdsaSigDeleter {
  void operator()(ECDSA_SIG* s) const { ECDSA_SIG_free(s); }
};
struct BignumDeleter {
  void operator()(BIGNUM* b) const { BN_free(b); }
};

// Our wire form is raw r || s (fixed 64 bytes, smaller on a CAN bus); OpenSSL's
// tools expect the ASN.1 DER SEQUENCE { r INTEGER, s INTEGER }.
Bytes ecdsa_raw_to_der(ByteView raw) {
  if (raw.size() != 64) {
    throw Failure("the ECDSA signature is " + std::to_string(raw.size()) +
                  " bytes; P-256 r || s must be 64");
  }
  std::unique_ptr<BIGNUM, BignumDeleter> r(BN_bin2bn(raw.data(), 32, nullptr));
  std::unique_ptr<BIGNUM, BignumDeleter> s(BN_bin2bn(raw.data() + 32, 32, nullptr));
  std::unique_ptr<ECDSA_SIG, EcdsaSigDeleter> sig(ECDSA_SIG_new());
  if (!r || !s || !sig || ECDSA_SIG_set0(sig.get(), r.get(), s.get()) != 1) {
    ERR_clear_error();
    throw Failure("cannot convert the ECDSA signature to DER", kExitInternal);
  }
  // ECDSA_SIG_set0 took ownership of both numbers.
  (void)r.release();
  (void)s.release();
  const int len = i2d_ECDSA_SIG(sig.get(), nullptr);
  if (len <= 0) {
    ERR_clear_error();
    throw Failure("cannot convert the ECDSA signature to DER", kExitInternal);
  }
  Bytes der(static_cast<std::size_t>(len));
  unsigned char* p = der.data();
  if (i2d_ECDSA_SIG(sig.get(), &p) != len) {
    ERR_clear_error();
    throw Failure("cannot convert the ECDSA signature to DER", kExitInternal);
  }
  return der;
}

int run_export_input(const ExportOptions& o) {
  const v1::Signed s = load_signed(o.file);
  const Bytes input = signing_input(s.type(), as_bytes(s.body()));
  write_file(o.out, input);
  std::cout << "signing input of " << object_type_name(s.type()) << ": "
            << domain_label(s.type()).size() << "-byte domain label + " << s.body().size()
            << "-byte body -> " << o.out << '\n';
  return kExitOk;
}

int run_export_signature(const ExportOptions& o) {
  const v1::Signed s = load_signed(o.file);
  const ByteView raw = as_bytes(s.signature());
  const bool ecdsa = s.algorithm() == v1::Signed::ALGORITHM_ECDSA_P256_SHA256;
  const Bytes out = ecdsa ? ecdsa_raw_to_der(raw) : Bytes(raw.begin(), raw.end());
  write_file(o.out, out);
  std::cout << crypto::algorithm_name(s.algorithm()) << " signature of "
            << object_type_name(s.type()) << " by key " << hex(as_bytes(s.signer_key_id()))
            << (ecdsa ? " (converted to DER)" : "") << " -> " << o.out << '\n';
  return kExitOk;
}

constexpr const char* kOpensslHelp =
    "Check a signature with the OpenSSL command line (input = export-signing-input,\n"
    "sig = export-signature):\n"
    "  Ed25519:     openssl pkeyutl -verify -pubin -inkey signer.pub -rawin -in input -sigfile "
    "sig\n"
    "  ECDSA P-256: openssl dgst -sha256 -verify signer.pub -signature sig input\n"
    "  RSA-PSS:     openssl dgst -sha256 -sigopt rsa_padding_mode:pss -sigopt rsa_pss_saltlen:32 "
    "\\\n"
    "                 -verify signer.pub -signature sig input";

}  // namespace

Command add_export_signing_input(CLI::App& root) {
  auto o = std::make_shared<ExportOptions>();
  CLI::App* sub = root.add_subcommand(
      "export-signing-input",
      "Write the exact bytes the object's signature covers: its type's domain label\n"
      "(e.g. \"tollgate.v1.DeviceToken\" and a NUL byte) followed by the body bytes.\n"
      "RSA-PSS and ECDSA hash this with SHA-256; Ed25519 signs it directly.");
  sub->add_option("file", o->file, "Signed object")->type_name("FILE")->required();
  sub->add_option("--out", o->out, "Output file")->type_name("FILE")->required();
  sub->footer(kOpensslHelp);
  return {sub, [o] { return run_export_input(*o); }};
}

Command add_export_signature(CLI::App& root) {
  auto o = std::make_shared<ExportOptions>();
  CLI::App* sub = root.add_subcommand(
      "export-signature",
      "Write the object's signature in the form OpenSSL expects: Ed25519 (64 bytes) and\n"
      "RSA-PSS as they are; ECDSA P-256 converted from our raw r || s (64 bytes) to DER,\n"
      "so 'openssl dgst -verify' can check it.");
  sub->add_option("file", o->file, "Signed object")->type_name("FILE")->required();
  sub->add_option("--out", o->out, "Output file")->type_name("FILE")->required();
  sub->footer(kOpensslHelp);
  return {sub, [o] { return run_export_signature(*o); }};
}

}  // namespace tollgate::keys
