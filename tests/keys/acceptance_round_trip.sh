#!/usr/bin/env bash
# Issue 2 acceptance: the whole key ceremony through tollgate-keys, then every
# way a token must fail `verify` (THREATS A3, A5, A6, A7, A8 from the command line).
source "$(dirname "$0")/common.bash"

DEVICE=3f2504e0-4f89-41d3-9a0c-0305e82c3301
OTHER_DEVICE=9b2d7c10-5e6f-4a8b-8c9d-0e1f2a3b4c5d
USER_ID=0b7e3a52-2f0d-4c47-9d6a-7b1c8e9f0a12

echo "== key ceremony: master rsa3072, cloud ed25519, user ed25519"
expect_ok "keygen master rsa3072" "$KEYS" keygen --alg rsa3072 --out master
expect_ok "keygen cloud ed25519" "$KEYS" keygen --alg ed25519 --out cloud
expect_ok "keygen user ed25519" "$KEYS" keygen --alg ed25519 --out user
[ "$(stat -c %a master.key)" = 600 ] || fail "master.key is not mode 0600"
ok "private key files are mode 0600"

echo "== authorize cloud key (id 7) and mint a token (3 uses, 7 days)"
NOT_AFTER=$(iso_from_now '+365 days')
expect_ok "authorize-cloud id 7" "$KEYS" authorize-cloud --master master.key --cloud-pub cloud.pub \
  --id 7 --not-after "$NOT_AFTER" --out auth7.bin
expect_ok "mint 3 uses for 7 days" "$KEYS" mint --cloud-key cloud.key --authorization auth7.bin \
  --device "$DEVICE" --user "$USER_ID" --user-pub user.pub --uses 3 --valid-for 7d --out token.bin

verify_token() { # verify_token TOKEN [extra verify args...]
  local token=$1; shift
  "$KEYS" verify --master master.pub --authorization auth7.bin --token "$token" --device "$DEVICE" "$@"
}

expect_ok "verify accepts the token (now)" verify_token token.bin
grep -q '^valid: token .*3 of 3 uses' "$WORK/out" || fail "verify output lacks 'valid: ... 3 of 3 uses': $(cat "$WORK/out")"
ok "verify prints: $(tail -n 1 "$WORK/out")"

echo "== inspect shows every field of the token and the authorization"
expect_ok "inspect --json token" "$KEYS" inspect --json token.bin
python3 - "$WORK/out" "$DEVICE" "$USER_ID" <<'PY'
import json, re, sys
o = json.load(open(sys.argv[1]))
b = o["body"]
assert o["type"] == "DeviceToken", o["type"]
assert o["algorithm"] == "Ed25519", o["algorithm"]
assert re.fullmatch(r"[0-9a-f]{32}", o["signer_key_id"]), o["signer_key_id"]
assert re.fullmatch(r"[0-9a-f]{128}", o["signature"]), o["signature"]
assert b["device_id"] == sys.argv[2] and b["user_id"] == sys.argv[3], b
assert re.fullmatch(r"[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}", b["token_id"]), b["token_id"]
assert b["authorized_uses"] == 3 and b["authorization_id"] == 7, b
for t in ("issued_at", "expires_at"):
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", b[t]), b[t]
assert b["user_public_key"]["algorithm"] == "Ed25519", b["user_public_key"]
assert b["roles"] == [], b["roles"]
PY
ok "token JSON: type, algorithm, key id, signature, UUIDs, times, uses, authorization id, user key"
expect_ok "inspect (text) token" "$KEYS" inspect token.bin
for field in token_id issued_at device_id authorized_uses user_id user_public_key expires_at \
             authorization_id roles signer_key_id algorithm signature; do
  grep -q "^ *$field:" "$WORK/out" || fail "inspect text lacks $field"
done
ok "token text view lists every field"
expect_ok "inspect --json authorization" "$KEYS" inspect --json auth7.bin
python3 -c '
import json, sys
o = json.load(open(sys.argv[1])); b = o["body"]
assert o["type"] == "CloudKeyAuthorization" and o["algorithm"] == "RSA-PSS-SHA256", o
assert b["id"] == 7 and b["revoked_ids"] == [] and b["cloud_public_key"]["algorithm"] == "Ed25519", b
assert b["not_after"] == sys.argv[2], (b["not_after"], sys.argv[2])
' "$WORK/out" "$NOT_AFTER"
ok "authorization JSON: id 7, RSA-PSS by master, Ed25519 cloud key, not_after $NOT_AFTER"

echo "== every flipped byte of the token file is rejected (A5)"
python3 - token.bin flips <<'PY'
import os, sys
data = open(sys.argv[1], "rb").read()
os.makedirs(sys.argv[2])
for i in range(len(data)):
    for mask in (0x01, 0xFF):
        b = bytearray(data); b[i] ^= mask
        open(f"{sys.argv[2]}/{i:04d}-{mask:02x}", "wb").write(b)
PY
declare -A reasons=()
count=0
for f in flips/*; do
  run_capture verify_token "$f"
  [ "$RC" -eq 1 ] || fail "flipped token $(basename "$f"): exit $RC (expected 1): $(cat "$WORK/out" "$WORK/err")"
  [ "$(wc -l <"$WORK/err")" -eq 1 ] || fail "flipped token $(basename "$f"): not one line: $(cat "$WORK/err")"
  line=$(cat "$WORK/err")
  [[ "$line" == "tollgate-keys verify: invalid: "* ]] || fail "flipped token $(basename "$f"): $line"
  reason=${line#tollgate-keys verify: invalid: }
  reason=${reason%%:*}
  reasons[$reason]=$(( ${reasons[$reason]:-0} + 1 ))
  count=$((count + 1))
done
summary=""
for r in "${!reasons[@]}"; do summary+="$r=${reasons[$r]}; "; done
ok "every flipped byte of the token file is rejected (A5): $count variants ($(stat -c %s token.bin) bytes x {^0x01, ^0xff}): $summary"

echo "== other rejections, each with its specific reason"
expect_rejected "another device UUID (A3)" "wrong device" \
  "$KEYS" verify --master master.pub --authorization auth7.bin --token token.bin --device "$OTHER_DEVICE"
expect_rejected "--at past expiry (A8)" "expired" verify_token token.bin --at "$(iso_from_now '+8 days')"

expect_ok "keygen second cloud key" "$KEYS" keygen --alg ed25519 --out cloud2
expect_ok "authorize-cloud id 8 revoking 7" "$KEYS" authorize-cloud --master master.key \
  --cloud-pub cloud2.pub --id 8 --revoke 7 --not-after "$NOT_AFTER" --out auth8.bin
expect_rejected "authorization 8 (revokes 7) given after 7 (A7)" "revoked" \
  "$KEYS" verify --master master.pub --authorization auth7.bin --authorization auth8.bin \
  --token token.bin --device "$DEVICE"
expect_rejected "authorization 8 given before 7: the old one cannot undo the revocation (A6)" "revoked" \
  "$KEYS" verify --master master.pub --authorization auth8.bin --authorization auth7.bin \
  --token token.bin --device "$DEVICE"
grep -q "^note: authorization 7 (auth7.bin) not installed: revoked" "$WORK/err" ||
  fail "refused install of 7 not reported: $(cat "$WORK/err")"
ok "the refused install of authorization 7 is reported on stderr"

expect_ok "mint under authorization 8" "$KEYS" mint --cloud-key cloud2.key --authorization auth8.bin \
  --device "$DEVICE" --user "$USER_ID" --user-pub user.pub --uses 1 --valid-for 1d --out token8.bin
for order in "auth7.bin auth8.bin" "auth8.bin auth7.bin"; do
  read -r first second <<<"$order"
  expect_ok "token under the new authorization stays valid ($order)" "$KEYS" verify --master master.pub \
    --authorization "$first" --authorization "$second" --token token8.bin --device "$DEVICE"
done

echo "PASS acceptance round trip"
