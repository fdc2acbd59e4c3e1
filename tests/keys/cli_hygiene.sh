#!/usr/bin/env bash
# tollgate-keys behaves like a good command-line citizen: --help everywhere,
# every error one clear line on stderr with a non-zero status, no clobbered keys.
source "$(dirname "$0")/common.bash"

DEVICE=3f2504e0-4f89-41d3-9a0c-0305e82c3301
USER_ID=0b7e3a52-2f0d-4c47-9d6a-7b1c8e9f0a12
SUBCOMMANDS=(keygen authorize-cloud mint inspect verify export-signing-input export-signature)

echo "== --help"
expect_ok "tollgate-keys --help" "$KEYS" --help
for sub in "${SUBCOMMANDS[@]}"; do
  grep -q "$sub" "$WORK/out" || fail "top-level help does not list $sub"
done
ok "top-level help lists every subcommand"
for sub in "${SUBCOMMANDS[@]}"; do
  expect_ok "tollgate-keys $sub --help" "$KEYS" "$sub" --help
  if ! grep -q -- "--help" "$WORK/out" || [ "$(wc -l <"$WORK/out")" -lt 4 ]; then
    fail "$sub --help is not a usage text: $(cat "$WORK/out")"
  fi
done

echo "== usage errors: one line, exit 2"
expect_one_line_error "no subcommand" 2 "subcommand" "$KEYS"
expect_one_line_error "unknown subcommand" 2 "frobnicate" "$KEYS" frobnicate
expect_one_line_error "unknown option" 2 "--colour" "$KEYS" inspect x --colour
expect_one_line_error "missing required option" 2 "--out" "$KEYS" keygen --alg ed25519
expect_one_line_error "bad --alg" 2 "--alg: 'dsa'" "$KEYS" keygen --alg dsa --out k

"$KEYS" keygen --alg ed25519 --out master >/dev/null
"$KEYS" keygen --alg ed25519 --out cloud >/dev/null
"$KEYS" keygen --alg ed25519 --out cloud2 >/dev/null
"$KEYS" keygen --alg ed25519 --out user >/dev/null
"$KEYS" authorize-cloud --master master.key --cloud-pub cloud.pub --id 7 --not-after 2099-01-01 \
  --out auth7.bin >/dev/null
mint() {
  "$KEYS" mint --cloud-key cloud.key --authorization auth7.bin --user "$USER_ID" --user-pub user.pub \
    --uses 1 --out token.bin "$@"
}

expect_one_line_error "missing file" 2 "cannot read nowhere/master.pub: No such file" \
  "$KEYS" verify --master nowhere/master.pub --authorization auth7.bin --token auth7.bin --device "$DEVICE"
expect_one_line_error "missing token file" 2 "cannot read no-token.bin" \
  "$KEYS" verify --master master.pub --authorization auth7.bin --token no-token.bin --device "$DEVICE"
expect_one_line_error "bad UUID" 2 "--device: 'not-a-uuid' is not a UUID" mint --device not-a-uuid --valid-for 1d
expect_one_line_error "bad UUID (one digit short)" 2 "--user: " \
  "$KEYS" mint --cloud-key cloud.key --authorization auth7.bin --device "$DEVICE" \
  --user 0b7e3a52-2f0d-4c47-9d6a-7b1c8e9f0a1 --user-pub user.pub --uses 1 --valid-for 1d --out t.bin
expect_one_line_error "bad date" 2 "--not-after: '2026-13-45' is not an ISO 8601 time" \
  "$KEYS" authorize-cloud --master master.key --cloud-pub cloud.pub --id 8 --not-after 2026-13-45 --out a.bin
expect_one_line_error "date-time without a zone" 2 "--expires: '2026-12-01T10:00:00' is not an ISO 8601" \
  mint --device "$DEVICE" --expires 2026-12-01T10:00:00
expect_one_line_error "bad --at" 2 "--at: 'yesterday'" \
  "$KEYS" verify --master master.pub --authorization auth7.bin --token auth7.bin --device "$DEVICE" --at yesterday
expect_one_line_error "bad duration" 2 "--valid-for: '7' is not a duration" mint --device "$DEVICE" --valid-for 7
expect_one_line_error "neither --expires nor --valid-for" 2 "exactly one of --expires and --valid-for" \
  mint --device "$DEVICE"
expect_one_line_error "both --expires and --valid-for" 2 "excludes" \
  mint --device "$DEVICE" --valid-for 1d --expires 2099-01-01
expect_one_line_error "zero uses" 2 "--uses: '0'" \
  "$KEYS" mint --cloud-key cloud.key --authorization auth7.bin --device "$DEVICE" --user "$USER_ID" \
  --user-pub user.pub --uses 0 --valid-for 1d --out t.bin
expect_one_line_error "expiry before issue" 2 "expire .* before it is issued" \
  mint --device "$DEVICE" --issued-at 2030-01-02 --expires 2030-01-01
expect_one_line_error "id 0" 2 "--id: '0'" \
  "$KEYS" authorize-cloud --master master.key --cloud-pub cloud.pub --id 0 --not-after 2099-01-01 --out a.bin
expect_one_line_error "authorization revoking itself" 2 "cannot revoke itself" \
  "$KEYS" authorize-cloud --master master.key --cloud-pub cloud.pub --id 8 --revoke 8 --not-after 2099-01-01 --out a.bin
expect_one_line_error "window ends before it starts" 2 "must be later than --not-before" \
  "$KEYS" authorize-cloud --master master.key --cloud-pub cloud.pub --id 8 --not-before 2030-01-01 \
  --not-after 2029-01-01 --out a.bin
expect_one_line_error "public key given as a private key" 2 "is a public key" \
  "$KEYS" authorize-cloud --master master.pub --cloud-pub cloud.pub --id 8 --not-after 2099-01-01 --out a.bin
expect_one_line_error "not a signed object" 2 "master.pub is not a Tollgate signed object|is a PublicKey" \
  "$KEYS" export-signature master.pub --out s.bin
mint --device "$DEVICE" --valid-for 1d >/dev/null
expect_one_line_error "token given as an authorization" 2 "is a DeviceToken, expected a CloudKeyAuthorization" \
  "$KEYS" mint --cloud-key cloud.key --authorization token.bin --device "$DEVICE" --user "$USER_ID" \
  --user-pub user.pub --uses 1 --valid-for 1d --out t.bin
expect_one_line_error "cloud key that the authorization does not authorize" 2 \
  "is not the cloud key that authorization 7 authorizes" \
  "$KEYS" mint --cloud-key cloud2.key --authorization auth7.bin --device "$DEVICE" --user "$USER_ID" \
  --user-pub user.pub --uses 1 --valid-for 1d --out t.bin
[ ! -e t.bin ] || fail "a refused mint left an output file"
ok "refused commands leave no output file"

echo "== keys are never clobbered; passphrases"
expect_one_line_error "keygen refuses to overwrite" 2 "user.key already exists \\(use --force" \
  "$KEYS" keygen --alg ed25519 --out user
expect_ok "keygen --force replaces" "$KEYS" keygen --alg p256 --out user --force
[ "$(stat -c %a user.key)" = 600 ] || fail "replaced key is not mode 0600"
ok "a replaced private key is still mode 0600"
printf 'secret\n' >pass.txt
: >empty.txt
"$KEYS" keygen --alg ed25519 --out locked --passphrase-file pass.txt >/dev/null
expect_one_line_error "encrypted key without passphrase" 2 "locked.key is encrypted: give its passphrase" \
  "$KEYS" authorize-cloud --master locked.key --cloud-pub cloud.pub --id 8 --not-after 2099-01-01 --out a.bin
printf 'wrong\n' >wrong.txt
expect_one_line_error "wrong passphrase" 2 "wrong passphrase" \
  "$KEYS" authorize-cloud --master locked.key --passphrase-file wrong.txt --cloud-pub cloud.pub --id 8 \
  --not-after 2099-01-01 --out a.bin
expect_one_line_error "empty passphrase file" 2 "empty.txt is empty" \
  "$KEYS" keygen --alg ed25519 --out other --passphrase-file empty.txt
expect_ok "the right passphrase opens the key" \
  "$KEYS" authorize-cloud --master locked.key --passphrase-file pass.txt --cloud-pub cloud.pub --id 8 \
  --not-after 2099-01-01 --out a.bin
expect_ok "a passphrase can come from a pipe, never touching the disk" \
  "$KEYS" inspect locked.key --passphrase-file <(printf 'secret\n')
expect_one_line_error "a directory is not a file" 2 "cannot read .: is a directory" "$KEYS" inspect .

echo "== exit statuses: 0 valid, 1 invalid, 2 usage"
expect_ok "valid token: exit 0" "$KEYS" verify --master master.pub --authorization auth7.bin \
  --token token.bin --device "$DEVICE"
expect_one_line_error "token for no installed authorization: exit 1, one line" 1 \
  "invalid: cloud authorization not installed" \
  "$KEYS" verify --master locked.pub --authorization a.bin --token token.bin --device "$DEVICE"
expect_rejected "authorization signed by an unknown master (A17): the token finds no authorization" \
  "cloud authorization not installed" \
  "$KEYS" verify --master cloud2.pub --authorization auth7.bin --token token.bin --device "$DEVICE"
grep -q "^note: authorization 7 (auth7.bin) not installed: unknown signer" "$WORK/err" ||
  fail "the refused install was not reported: $(cat "$WORK/err")"
ok "the refused install names the reason: $(head -n 1 "$WORK/err")"
printf 'not a token' >junk.bin
expect_one_line_error "junk bytes as a token: malformed, exit 1" 1 "invalid: malformed" \
  "$KEYS" verify --master master.pub --authorization auth7.bin --token junk.bin --device "$DEVICE"

echo "PASS CLI hygiene"
