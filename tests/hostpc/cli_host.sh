#!/bin/bash
# tollgate-host CLI without a device: identity files at rest, cache import and
# listing, usage and link-failure exit codes (1 and 4); and, when an instrument
# is built, audit-export against one on the virtual bus.
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

# --- audit-export: the device's signed audit log, checked under the pinned key ---
# Needs a real instrument on the virtual bus; skipped (not failed) without one.
INSTRUMENT=${TOLLGATE_BIN_DIR}/tollgate-instrument BUS=${TOLLGATE_BIN_DIR}/tollgate-bus
KEYS=${TOLLGATE_BIN_DIR}/tollgate-keys
if [ -x "$INSTRUMENT" ] && [ -x "$BUS" ] && [ -x "$KEYS" ]; then
  pids=()
  stop_all() { local p; for p in "${pids[@]}"; do kill "$p" 2>/dev/null; wait "$p" 2>/dev/null; done; rm -rf "$T"; }
  trap stop_all EXIT
  # Starts an instrument with state $1 on the bus and waits (bounded) for "ready".
  start_instrument() {
    "$INSTRUMENT" run --state "$1" --link "vbus:$T/bus.sock?tx=0x6A8&rx=0x6A0" >"$1.out" 2>"$1.err" &
    inst_pid=$!; pids+=("$inst_pid")
    for _ in $(seq 1 200); do grep -qsx ready "$1.out" && return 0; kill -0 $inst_pid 2>/dev/null || break; sleep 0.05; done
    fail "instrument $1 not ready: $(cat "$1.err")"
  }
  "$KEYS" keygen --alg ed25519 --out "$T/master" >/dev/null || fail keygen
  "$INSTRUMENT" provision --state "$T/instA" --master "$T/master.pub" \
    --device-id 3f2504e0-4f89-41d3-9a0c-0305e82c33a1 >/dev/null || fail provision
  "$INSTRUMENT" provision --state "$T/instB" --master "$T/master.pub" \
    --device-id 3f2504e0-4f89-41d3-9a0c-0305e82c33b2 >/dev/null || fail provision
  "$BUS" hub --socket "$T/bus.sock" --quiet >"$T/hub.out" 2>"$T/hub.err" &
  pids+=("$!")
  for _ in $(seq 1 200); do [ -S "$T/bus.sock" ] && grep -qs listening "$T/hub.err" && break; sleep 0.05; done
  [ -S "$T/bus.sock" ] || fail "hub: $(cat "$T/hub.err")"
  start_instrument "$T/instA"
  L="vbus:$T/bus.sock?tx=0x6A0&rx=0x6A8"

  # export of an unpaired link: nothing to check it against, nothing written
  expect_rc 1 "$BIN" --home "$H" audit-export --link "$L" --out "$T/a.bin"
  [ ! -e "$T/a.bin" ] || fail "unpaired export wrote a file"
  expect_rc 0 "$BIN" --home "$H" pair --link "$L"
  # Refused commands (no token) put records in the device's log.
  expect_rc 3 "$BIN" --home "$H" run --link "$L" --passphrase-file "$T/pw" run-assay --protocol elisa --sample X1
  expect_rc 3 "$BIN" --home "$H" run --link "$L" --passphrase-file "$T/pw" run-assay --protocol elisa --sample X2

  # paired device's export verifies under the pinned key and is written as sent
  expect_rc 0 "$BIN" --home "$H" audit-export --link "$L" --out "$T/a.bin"
  grep -Eq "verified under the pinned key: [0-9]+ record\(s\), 1\.\.[0-9]+ -> " "$T/out" || fail "export: $(cat "$T/out")"
  [ -s "$T/a.bin" ] || fail "export file is empty"
  "$INSTRUMENT" audit --state "$T/instA" --verify >/dev/null 2>&1 || fail "device log does not verify"
  last=$(sed -nE 's/.*, 1\.\.([0-9]+) -> .*/\1/p' "$T/out")
  # export from a later record starts there
  expect_rc 0 "$BIN" --home "$H" audit-export --link "$L" --from 2 --out "$T/b.bin"
  grep -q "record(s), 2\.\.$last -> " "$T/out" || fail "export --from 2: $(cat "$T/out")"
  expect_rc 0 "$BIN" --home "$H" audit-export --link "$L" --from $((last + 100)) --out "$T/c.bin"
  grep -q "no records from $((last + 100))" "$T/out" || fail "export past the end: $(cat "$T/out")"
  expect_rc 1 "$BIN" --home "$H" audit-export --link "$L" --from nonsense --out "$T/d.bin"

  # log longer than one export (64 records) is fetched in rounds: the first
  # says where the next starts, and the next starts there
  # (accepted commands: refusals would slow down under the device's backoff)
  "$KEYS" keygen --alg ed25519 --out "$T/cloud" >/dev/null || fail keygen
  "$KEYS" authorize-cloud --master "$T/master.key" --cloud-pub "$T/cloud.pub" --id 7 \
    --not-after 2099-01-01 --out "$T/auth7.bin" >/dev/null || fail authorize-cloud
  "$KEYS" mint --cloud-key "$T/cloud.key" --authorization "$T/auth7.bin" \
    --device 3f2504e0-4f89-41d3-9a0c-0305e82c33a1 --user $U --user-pub "$T/user.pub" --uses 200 \
    --valid-for 7d --out "$T/token.bin" >/dev/null || fail mint
  expect_rc 0 "$BIN" --home "$H" authorizations import "$T/auth7.bin"
  expect_rc 0 "$BIN" --home "$H" tokens import "$T/token.bin"
  more=
  for i in $(seq 1 100); do
    expect_rc 0 "$BIN" --home "$H" run --link "$L" --passphrase-file "$T/pw" run-assay --protocol elisa --sample "P$i"
    if [ $((i % 10)) -eq 0 ]; then
      expect_rc 0 "$BIN" --home "$H" audit-export --link "$L" --out "$T/p1.bin"
      more=$(sed -nE 's/^more records follow: run again with --from ([0-9]+)$/\1/p' "$T/out")
      [ -n "$more" ] && break
    fi
  done
  [ -n "$more" ] || fail "no second round after 100 commands: $(cat "$T/out")"
  grep -q "record(s), 1\.\.$((more - 1)) -> " "$T/out" || fail "first round: $(cat "$T/out")"
  [ "$more" -le 65 ] || fail "one export held more than 64 records: $(cat "$T/out")"
  expect_rc 0 "$BIN" --home "$H" audit-export --link "$L" --from "$more" --out "$T/p2.bin"
  grep -q "record(s), $more\.\." "$T/out" || fail "second round: $(cat "$T/out")"

  # export signed by another device on the paired link is forged (5), nothing written
  kill "$inst_pid"; wait "$inst_pid" 2>/dev/null
  start_instrument "$T/instB"
  expect_rc 5 "$BIN" --home "$H" audit-export --link "$L" --out "$T/e.bin"
  grep -q "does not verify under the pinned key" "$T/err" || fail "forged export: $(cat "$T/err")"
  [ ! -e "$T/e.bin" ] || fail "a forged export was written"
fi
echo "ok"
