#!/usr/bin/env bash
# Interop with the OpenSSL command line: anyone can check our signatures
# (Ed25519, RSA-PSS, ECDSA P-256) from the exported signing input and signature,
# one flipped byte makes OpenSSL reject them, and keys travel both ways.
source "$(dirname "$0")/common.bash"
command -v openssl >/dev/null || fail "openssl command line not installed (tools/setup installs it)"

DEVICE=3f2504e0-4f89-41d3-9a0c-0305e82c3301
USER_ID=0b7e3a52-2f0d-4c47-9d6a-7b1c8e9f0a12

"$KEYS" keygen --alg rsa3072 --out master >/dev/null
"$KEYS" keygen --alg ed25519 --out cloud >/dev/null
"$KEYS" keygen --alg p256 --out cloudp >/dev/null
"$KEYS" keygen --alg ed25519 --out user >/dev/null
"$KEYS" authorize-cloud --master master.key --cloud-pub cloud.pub --id 7 --not-after 2099-01-01 \
  --out auth7.bin >/dev/null
"$KEYS" authorize-cloud --master master.key --cloud-pub cloudp.pub --id 9 --not-after 2099-01-01 \
  --out auth9.bin >/dev/null
"$KEYS" mint --cloud-key cloud.key --authorization auth7.bin --device "$DEVICE" --user "$USER_ID" \
  --user-pub user.pub --uses 3 --valid-for 7d --out token.bin >/dev/null
"$KEYS" mint --cloud-key cloudp.key --authorization auth9.bin --device "$DEVICE" --user "$USER_ID" \
  --user-pub user.pub --uses 3 --valid-for 7d --out tokenp.bin >/dev/null
ok "made keys, authorizations 7 (Ed25519 cloud) and 9 (P-256 cloud), and a token under each"

export_pair() { # export_pair OBJECT PREFIX -> PREFIX.input PREFIX.sig
  "$KEYS" export-signing-input "$1" --out "$2.input" >/dev/null
  "$KEYS" export-signature "$1" --out "$2.sig" >/dev/null
}
flip_byte() { # flip_byte IN OUT OFFSET
  python3 -c 'import sys; b = bytearray(open(sys.argv[1], "rb").read()); b[int(sys.argv[3])] ^= 0x01; open(sys.argv[2], "wb").write(b)' "$@"
}
# openssl_rejects WHAT CMD...: OpenSSL must refuse (non-zero exit).
openssl_rejects() {
  local what=$1; shift
  if "$@" >/dev/null 2>&1; then fail "OpenSSL accepted $what"; fi
  ok "OpenSSL rejects $what"
}

export_pair token.bin tok
printf 'tollgate.v1.DeviceToken\0' >label
cmp -s label <(head -c "$(stat -c %s label)" tok.input) || fail "token signing input does not start with its domain label"
ok "token signing input starts with its domain label (tollgate.v1.DeviceToken, NUL)"
[ "$(stat -c %s tok.sig)" -eq 64 ] || fail "Ed25519 signature is not 64 bytes"

ed_verify() { openssl pkeyutl -verify -pubin -inkey cloud.pub -rawin -in "$1" -sigfile "$2"; }
ed_verify tok.input tok.sig >/dev/null || fail "openssl pkeyutl does not verify the Ed25519 token signature"
ok "openssl pkeyutl -verify -rawin accepts the exported Ed25519 token signature"
last=$(( $(stat -c %s tok.input) - 1 ))
for pos in 0 24 "$last"; do
  flip_byte tok.input bad.input "$pos"
  openssl_rejects "the Ed25519 signing input with byte $pos flipped" ed_verify bad.input tok.sig
done
flip_byte tok.sig bad.sig 10
openssl_rejects "the Ed25519 signature with a byte flipped" ed_verify tok.input bad.sig

export_pair auth7.bin auth
pss_verify() {
  openssl dgst -sha256 -sigopt rsa_padding_mode:pss -sigopt rsa_pss_saltlen:32 -verify master.pub \
    -signature "$2" "$1"
}
pss_verify auth.input auth.sig >/dev/null || fail "openssl dgst does not verify the RSA-PSS authorization signature"
ok "openssl dgst -sha256 rsa_padding_mode:pss saltlen 32 accepts the RSA-PSS authorization signature"
last=$(( $(stat -c %s auth.input) - 1 ))
for pos in 0 40 "$last"; do
  flip_byte auth.input bad.input "$pos"
  openssl_rejects "the RSA-PSS signing input with byte $pos flipped" pss_verify bad.input auth.sig
done
if openssl dgst -sha256 -sigopt rsa_padding_mode:pss -sigopt rsa_pss_saltlen:20 -verify master.pub \
     -signature auth.sig auth.input >/dev/null 2>&1; then
  fail "OpenSSL accepted the RSA-PSS signature with salt length 20: ours is not 32"
fi
ok "the RSA-PSS salt length is exactly 32 (salt length 20 does not verify)"

export_pair tokenp.bin p256
ec_verify() { openssl dgst -sha256 -verify cloudp.pub -signature "$2" "$1"; }
ec_verify p256.input p256.sig >/dev/null || fail "openssl dgst does not verify the P-256 token signature (DER)"
ok "openssl dgst -sha256 -verify accepts the exported ECDSA P-256 signature (raw r||s converted to DER)"
last=$(( $(stat -c %s p256.input) - 1 ))
for pos in 0 "$last"; do
  flip_byte p256.input bad.input "$pos"
  openssl_rejects "the P-256 signing input with byte $pos flipped" ec_verify bad.input p256.sig
done

echo "== keys cross the border both ways"
echo "correct horse battery staple" >pass.txt
"$KEYS" keygen --alg ed25519 --out locked --passphrase-file pass.txt >/dev/null
grep -q -- "-----BEGIN ENCRYPTED PRIVATE KEY-----" locked.key || fail "passphrase key not encrypted"
openssl pkey -in locked.key -passin file:pass.txt -pubout -out locked.from-openssl.pub
cmp -s locked.pub locked.from-openssl.pub || fail "OpenSSL derives another public key from our encrypted key"
ok "openssl pkey opens our passphrase-encrypted PKCS#8 key and derives the same public key"

openssl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:3072 -out ossl-master.key 2>/dev/null
openssl pkey -in ossl-master.key -pubout -out ossl-master.pub
openssl genpkey -algorithm ED25519 -out ossl-cloud.key
openssl pkey -in ossl-cloud.key -pubout -out ossl-cloud.pub
"$KEYS" authorize-cloud --master ossl-master.key --cloud-pub ossl-cloud.pub --id 11 \
  --not-after 2099-01-01 --out auth11.bin >/dev/null
"$KEYS" mint --cloud-key ossl-cloud.key --authorization auth11.bin --device "$DEVICE" \
  --user "$USER_ID" --user-pub user.pub --uses 1 --valid-for 1d --out token11.bin >/dev/null
expect_ok "keys made by openssl genpkey serve as master and cloud keys, and the token verifies" \
  "$KEYS" verify --master ossl-master.pub --authorization auth11.bin --token token11.bin --device "$DEVICE"

echo "PASS OpenSSL interop"
