#include "tools/cloud/dev_pki.hpp"

#include <openssl/bio.h>
#include <openssl/bn.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/rand.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>

#include <memory>
#include <stdexcept>

#include "gateway/c_ptr.hpp"

namespace tollgate::cloud {

namespace {

template <auto Fn>
using Deleter = CFree<Fn>;
using Pkey = std::unique_ptr<EVP_PKEY, Deleter<EVP_PKEY_free>>;
using Cert = std::unique_ptr<X509, Deleter<X509_free>>;
using Bio = std::unique_ptr<BIO, Deleter<BIO_free_all>>;
using Ext = std::unique_ptr<X509_EXTENSION, Deleter<X509_EXTENSION_free>>;
using Bn = std::unique_ptr<BIGNUM, Deleter<BN_free>>;

void check(bool ok, const char* what) {
  if (!ok) {
    ERR_clear_error();
    throw std::runtime_error(std::string("OpenSSL ") + what + " failed");
  }
}

Pkey make_p256() {
  Pkey k(EVP_PKEY_Q_keygen(nullptr, nullptr, "EC", "P-256"));
  check(k != nullptr, "EVP_PKEY_Q_keygen");
  return k;
}

std::string bio_text(BIO* b) {
  char* data = nullptr;
  const long n = BIO_get_mem_data(b, &data);
  check(n >= 0 && data != nullptr, "BIO_get_mem_data");
  return std::string(data, static_cast<std::size_t>(n));
}

std::string key_pem(EVP_PKEY* k) {
  Bio b(BIO_new(BIO_s_mem()));
  check(b != nullptr, "BIO_new");
  check(PEM_write_bio_PrivateKey(b.get(), k, nullptr, nullptr, 0, nullptr, nullptr) == 1,
        "PEM_write_bio_PrivateKey");
  return bio_text(b.get());
}

std::string cert_pem(X509* c) {
  Bio b(BIO_new(BIO_s_mem()));
  check(b != nullptr, "BIO_new");
  check(PEM_write_bio_X509(b.get(), c) == 1, "PEM_write_bio_X509");
  return bio_text(b.get());
}

void add_ext(X509* cert, X509* issuer, int nid, const std::string& value) {
  X509V3_CTX ctx;
  X509V3_set_ctx_nodb(&ctx);
  X509V3_set_ctx(&ctx, issuer, cert, nullptr, nullptr, 0);
  Ext ext(X509V3_EXT_conf_nid(nullptr, &ctx, nid, value.c_str()));
  check(ext != nullptr, "X509V3_EXT_conf_nid");
  check(X509_add_ext(cert, ext.get(), -1) == 1, "X509_add_ext");
}

Cert new_cert(EVP_PKEY* subject_key, const std::string& cn, int days) {
  Cert c(X509_new());
  check(c != nullptr, "X509_new");
  check(X509_set_version(c.get(), 2) == 1, "X509_set_version");
  // 159-bit random serial: unique without bookkeeping (RFC 5280 allows 20 octets).
  Bn serial(BN_new());
  check(serial != nullptr, "BN_new");
  check(BN_rand(serial.get(), 159, BN_RAND_TOP_ANY, BN_RAND_BOTTOM_ANY) == 1, "BN_rand");
  check(BN_to_ASN1_INTEGER(serial.get(), X509_get_serialNumber(c.get())) != nullptr,
        "BN_to_ASN1_INTEGER");
  check(X509_gmtime_adj(X509_getm_notBefore(c.get()), -3600) != nullptr, "X509_gmtime_adj");
  check(X509_gmtime_adj(X509_getm_notAfter(c.get()), 86400L * days) != nullptr, "X509_gmtime_adj");
  check(X509_set_pubkey(c.get(), subject_key) == 1, "X509_set_pubkey");
  X509_NAME* name = X509_get_subject_name(c.get());
  check(X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_UTF8,
                                   reinterpret_cast<const unsigned char*>(cn.c_str()), -1, -1,
                                   0) == 1,
        "X509_NAME_add_entry_by_txt");
  return c;
}

}  // namespace

DevPki make_dev_pki(const std::vector<std::string>& dns_names,
                    const std::vector<std::string>& ip_addresses, int days) {
  if (dns_names.empty() && ip_addresses.empty()) {
    throw std::runtime_error("the server certificate needs at least one name or address");
  }
  DevPki out;
  Pkey ca_key = make_p256();
  Cert ca = new_cert(ca_key.get(), "Tollgate development CA", days);
  check(X509_set_issuer_name(ca.get(), X509_get_subject_name(ca.get())) == 1,
        "X509_set_issuer_name");
  add_ext(ca.get(), ca.get(), NID_basic_constraints, "critical,CA:TRUE,pathlen:0");
  add_ext(ca.get(), ca.get(), NID_key_usage, "critical,keyCertSign,cRLSign");
  add_ext(ca.get(), ca.get(), NID_subject_key_identifier, "hash");
  check(X509_sign(ca.get(), ca_key.get(), EVP_sha256()) > 0, "X509_sign");

  Pkey server_key = make_p256();
  const std::string cn = dns_names.empty() ? ip_addresses.front() : dns_names.front();
  Cert server = new_cert(server_key.get(), cn, days);
  check(X509_set_issuer_name(server.get(), X509_get_subject_name(ca.get())) == 1,
        "X509_set_issuer_name");
  std::string san;
  for (const auto& d : dns_names) san += (san.empty() ? "DNS:" : ",DNS:") + d;
  for (const auto& ip : ip_addresses) san += (san.empty() ? "IP:" : ",IP:") + ip;
  add_ext(server.get(), ca.get(), NID_basic_constraints, "critical,CA:FALSE");
  add_ext(server.get(), ca.get(), NID_key_usage, "critical,digitalSignature");
  add_ext(server.get(), ca.get(), NID_ext_key_usage, "serverAuth");
  add_ext(server.get(), ca.get(), NID_subject_alt_name, san);
  add_ext(server.get(), ca.get(), NID_authority_key_identifier, "keyid:always");
  check(X509_sign(server.get(), ca_key.get(), EVP_sha256()) > 0, "X509_sign");

  out.ca_cert_pem = cert_pem(ca.get());
  out.ca_key_pem = key_pem(ca_key.get());
  out.server_cert_pem = cert_pem(server.get());
  out.server_key_pem = key_pem(server_key.get());
  return out;
}

}  // namespace tollgate::cloud
