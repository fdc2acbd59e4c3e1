#!/bin/bash
# tollgate-host CLI without a device: identity files at rest, cache import and
# listing, usage and link-failure exit codes (1 and 4).
set -u
BIN=${TOLLGATE_BIN_DIR:?}/tollgate-host
[ -x "$BIN" ] || { echo "SKIP: $BIN not built"; exit 0; }
T=$(mktemp -d); trap 'rm -rf "$T"' EXIT
H="$T/home"; U=11111111-2222-4333-8444-555555555555
fail() { echo "FAIL: $*"; exit 1; }
expect_rc() { local want=$1; shift; "$@" >"$T/out" 2>"$T/err"; local rc=$?; [ $rc -eq "$want" ] || { cat "$T/out" "$T/err"; fail "$* -> $rc, want $want"; }; }

echo "correct horse" > "$T/pw"; : > "$T/empty"
expect_rc 1 "$BIN" --home "$H" identity create --user $U --passphrase-file "$T/empty"
expect_rc 0 "$BIN" --home "$H" identity create --user $U --passphrase-file "$T/pw"
[ "$(stat -c %a "$H")" = 700 ] || fail "home is not 0700"
[ "$(stat -c %a "$H/identities/$U.key")" = 600 ] || fail "key file is not 0600"
grep -q "BEGIN ENCRYPTED PRIVATE KEY" "$H/identities/$U.key" || fail "key not encrypted at rest"
expect_rc 1 "$BIN" --home "$H" identity create --user $U --passphrase-file "$T/pw"
expect_rc 0 "$BIN" --home "$H" identity list
grep -q "$U" "$T/out" || fail "identity list lacks the user"
expect_rc 0 "$BIN" --home "$H" identity export-public --user $U --out "$T/user.pub"
grep -q "BEGIN PUBLIC KEY" "$T/user.pub" || fail "exported key is not PEM"
TOLLGATE_HOME="$H" expect_rc 0 "$BIN" identity list

printf 'junk' > "$T/junk.bin"
expect_rc 1 "$BIN" --home "$H" tokens import "$T/junk.bin"
expect_rc 0 "$BIN" --home "$H" tokens list --json
[ "$(cat "$T/out")" = "[]" ] || fail "empty cache lists as []"
expect_rc 1 "$BIN" --home "$H" tokens list --device not-a-uuid
expect_rc 1 "$BIN" --home "$H" run --link "vbus:$T/none.sock?tx=0x6A0&rx=0x6A8" get-result 1
expect_rc 4 "$BIN" --home "$H" --timeout 200ms pair --link "vbus:$T/none.sock?tx=0x6A0&rx=0x6A8"
expect_rc 4 "$BIN" --home "$H" status --link "serial:$T/no-such-tty"
expect_rc 1 "$BIN" --home "$H" --timeout nonsense status --link "vbus:$T/none.sock?tx=0x6A0&rx=0x6A8"
expect_rc 1 "$BIN" --home "$H" bogus
echo "ok"
