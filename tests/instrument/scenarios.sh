#!/usr/bin/env bash
# The white paper's scenarios through the CLIs, against real tollgate-instrument
# processes on the virtual CAN bus (tollgate-bus hub, 500 kbit/s airtime), driven
# by tollgate-host and tollgate-keys: initial interaction, typical use,
# exhaustion by uses, exhaustion by time, revocation, several PCs at once. Each
# scenario gets its own instrument and PCs and prints one PASS/FAIL line; the
# script exits 1 on any FAIL.
# Env: TOLLGATE_BIN_DIR (set by ctest), TOLLGATE_SOURCE_DIR (default: this checkout).
set -u
: "${TOLLGATE_BIN_DIR:?run through ctest, or set TOLLGATE_BIN_DIR=build/<preset>/bin}"
SRC=${TOLLGATE_SOURCE_DIR:-$(cd "$(dirname "$0")/../.." && pwd)}
# shellcheck source=tools/lib/story.bash
source "$SRC/tools/lib/story.bash"

WORK=$(mktemp -d "${TMPDIR:-/tmp}/tollgate-scenarios.XXXXXX")
trap 'story_stop_all; rm -rf "$WORK"' EXIT
trap 'exit 130' INT TERM
story_init "$TOLLGATE_BIN_DIR" "$WORK" || exit 1

ALICE=0b7e3a52-2f0d-4c47-9d6a-7b1c8e9f0a12
MALLORY=6d1f0c3e-8a2b-4c5d-9e7f-102132435465
SOCK=$WORK/bus.sock
failures=0

# check WHAT RC REGEX CMD...: one assertion on a CLI call (exit status and output).
check() {
  local what=$1
  shift
  if story_expect "$@"; then
    echo "  ok   $what"
  else
    echo "  FAIL $what"
    return 1
  fi
}
# holds WHAT TEST...: one assertion on anything else.
holds() {
  local what=$1
  shift
  if "$@"; then echo "  ok   $what"; else echo "  FAIL $what" && return 1; fi
}

# scenario NAME FUNCTION: runs one scenario; its instrument is stopped afterwards.
scenario() {
  echo "--- $1"
  INSTRUMENT_PID=
  if "$2"; then
    echo "PASS $1"
  else
    echo "FAIL $1"
    failures=$((failures + 1))
  fi
  [ -z "$INSTRUMENT_PID" ] || story_stop "$INSTRUMENT_PID"
}

# device N: a fresh instrument (UUID ...N) serving the bus on its own CAN ids;
# sets DEV, HOST_LINK, STATE. Extra arguments go to `tollgate-instrument run`.
device() {
  local n=$1
  shift
  DEV=5c3e0000-0000-4000-8000-00000000000$n
  STATE=$WORK/instrument$n
  local base=$((0x600 + n * 0x10))
  HOST_LINK=$(story_vbus_host "$SOCK" $base)
  step story_provision "$STATE" "$DEV" || return 1
  story_start_instrument "$STATE.log" "$STATE" --link "$(story_vbus_device "$SOCK" $base)" "$@"
}

# pc NAME USER: a PC with USER's identity (copied from the one made at start),
# an empty token cache; paired with $HOST_LINK. Sets PC.
pc() {
  PC=$WORK/$1
  cp -a "$WORK/template-$2" "$PC" && cp "$WORK/template-$2.pub" "$PC.pub" || return 1
  step story_host "$PC" pair --link "$HOST_LINK"
}

# step CMD...: a set-up step that must succeed (its output is shown when not).
step() {
  "$@" && return 0
  echo "  FAIL $(story_pretty "$@") (exit $STORY_RC)"
  story_output | sed 's/^/  | /'
  return 1
}

# json_true FILE EXPR: evaluates a Python expression over the JSON in FILE (as j).
json_true() { python3 -c "import json,sys; j=json.load(open(sys.argv[1])); sys.exit(0 if ($2) else 1)" "$1"; }

# ------------------------------------------------------------------ scenarios

# The instrument ships trusting only the master key; the PC installs the cloud
# authorization from its cache before the first token can count.
initial_interaction() {
  device 1 || return 1
  pc s1-alice "$ALICE" || return 1
  step story_mint "$WORK/s1-tok.bin" cloud 7 "$DEV" "$ALICE" "$PC.pub" 3 7d || return 1
  check "a fresh device reports no cloud authorization" 0 '"authorizations":\[\]' \
    story_host "$PC" status --link "$HOST_LINK" --json || return 1
  check "token imported without its authorization" 0 "imported" \
    story_host "$PC" tokens import "$WORK/s1-tok.bin" || return 1
  check "without the authorization cached the PC has no usable token (exit 3)" 3 \
    "authorization 7 is not cached" story_run "$PC" "$HOST_LINK" run-assay --protocol elisa \
    --sample S1 || return 1
  check "the cached authorization is imported" 0 "imported" \
    story_host "$PC" authorizations import "$WORK/auth7.bin" || return 1
  check "the PC installs authorization 7, offers the token, the command runs" 0 \
    "installed authorization 7" story_run "$PC" "$HOST_LINK" run-assay --protocol elisa \
    --sample S1 || return 1
  holds "2 of 3 uses left" [ "$(story_uses_left)" = 2 ] || return 1
  check "the device now reports authorization 7" 0 '"authorizations":\[\{"id":7,' \
    story_host "$PC" status --link "$HOST_LINK" --json || return 1
}

# Front-loaded tokens: commands succeed, a free command costs nothing, the next
# cached token is offered by itself when one runs out.
typical_use() {
  device 2 || return 1
  pc s2-alice "$ALICE" || return 1
  step story_mint "$WORK/s2-tok1.bin" cloud 7 "$DEV" "$ALICE" "$PC.pub" 2 5d || return 1
  step story_mint "$WORK/s2-tok2.bin" cloud 7 "$DEV" "$ALICE" "$PC.pub" 2 6d || return 1
  local t1 t2 result
  t1=$(story_token_id "$WORK/s2-tok1.bin")
  t2=$(story_token_id "$WORK/s2-tok2.bin")
  step story_host "$PC" authorizations import "$WORK/auth7.bin" || return 1
  check "two tokens of 2 uses front-loaded" 0 "" \
    story_host "$PC" tokens import "$WORK/s2-tok1.bin" "$WORK/s2-tok2.bin" || return 1
  check "run-assay runs on the soonest-expiring token" 0 "offered token $t1: accepted, 2 uses" \
    story_run "$PC" "$HOST_LINK" run-assay --protocol elisa --sample S1 || return 1
  holds "1 use left" [ "$(story_uses_left)" = 1 ] || return 1
  result=$(head -n 1 "$STORY_OUT")
  check "get-result returns the stored result and is free" 0 "elisa S1 " \
    story_run "$PC" "$HOST_LINK" get-result "$result" || return 1
  holds "still 1 use left" [ "$(story_uses_left)" = 1 ] || return 1
  check "a malformed argument is refused before any charge (exit 2)" 2 "bad argument" \
    story_run "$PC" "$HOST_LINK" run-assay --protocol 'no spaces' --sample S2 || return 1
  check "run-assay spends the last use of the first token" 0 "^uses left: 0$" \
    story_run "$PC" "$HOST_LINK" run-assay --protocol elisa --sample S2 || return 1
  check "the next cached token is offered automatically" 0 "offered token $t2: accepted, 2 uses" \
    story_run "$PC" "$HOST_LINK" run-assay --protocol elisa --sample S3 || return 1
  holds "1 use left on the second token" [ "$(story_uses_left)" = 1 ] || return 1
  # Steady state: the nonce came with the last answer, so this is one request and one
  # response on the bus (issue 4's acceptance: at most 50 classic CAN frames, Ed25519).
  local before after
  before=$(story_hub_frames "$SOCK") || return 1
  check "a steady-state run-assay" 0 "^uses left: 0$" \
    story_run "$PC" "$HOST_LINK" run-assay --protocol elisa --sample S4 || return 1
  after=$(story_hub_frames "$SOCK") || return 1
  holds "it moved at most 50 CAN frames ($((after - before)))" [ $((after - before)) -le 50 ] ||
    return 1
  story_host "$PC" tokens list --json
  holds "the cache books both tokens spent" json_true "$STORY_OUT" \
    "{t['token_id']: t['uses_left'] for t in j} == {'$t1': 0, '$t2': 0}" || return 1
}

# A token is charged at most its uses, ever; offering it again restores nothing.
exhaustion_by_uses() {
  device 3 || return 1
  pc s3-alice "$ALICE" || return 1
  step story_mint "$WORK/s3-tok.bin" cloud 7 "$DEV" "$ALICE" "$PC.pub" 2 7d || return 1
  local t
  t=$(story_token_id "$WORK/s3-tok.bin")
  step story_host "$PC" authorizations import "$WORK/auth7.bin" || return 1
  step story_host "$PC" tokens import "$WORK/s3-tok.bin" || return 1
  check "use 1 of 2" 0 "^uses left: 1$" \
    story_run "$PC" "$HOST_LINK" run-assay --protocol elisa --sample S1 || return 1
  check "use 2 of 2" 0 "^uses left: 0$" \
    story_run "$PC" "$HOST_LINK" run-assay --protocol elisa --sample S2 || return 1
  check "the third command is denied: no usable token (exit 3)" 3 \
    "no usable token left .*device said: no valid token; no other cached token to offer" \
    story_run "$PC" "$HOST_LINK" run-assay --protocol elisa --sample S3 || return 1
  check "a free command needs a live token too (exit 3)" 3 "no usable token left" \
    story_run "$PC" "$HOST_LINK" get-result 1 || return 1
  # Another PC with a copy of the same token file: the device remembers.
  pc s3-copy "$ALICE" || return 1
  step story_host "$PC" authorizations import "$WORK/auth7.bin" || return 1
  step story_host "$PC" tokens import "$WORK/s3-tok.bin" || return 1
  check "the exhausted token offered again from another PC restores no uses" 3 \
    "offered token $t: uses exhausted" \
    story_run "$PC" "$HOST_LINK" run-assay --protocol elisa --sample S4 || return 1
  story_stop "$INSTRUMENT_PID"
  INSTRUMENT_PID=
  check "the audit log verifies and records exactly 2 executions" 0 "audit chain verified" \
    "$INSTRUMENT" audit --state "$STATE" --verify || return 1
  holds "2 executions in the audit log" [ "$(grep -c ' execution accepted ' "$STORY_OUT")" = 2 ] ||
    return 1
}

# The device's clock (a file here) moves past the token's expiry; setting it
# back afterwards brings nothing back (the time floor).
exhaustion_by_time() {
  local clock=$WORK/clock4 now
  now=$(date +%s)
  echo "$now" >"$clock"
  device 4 --clock "file:$clock" || return 1
  pc s4-alice "$ALICE" || return 1
  step story_mint "$WORK/s4-tok.bin" cloud 7 "$DEV" "$ALICE" "$PC.pub" 5 1h || return 1
  local t
  t=$(story_token_id "$WORK/s4-tok.bin")
  step story_host "$PC" authorizations import "$WORK/auth7.bin" || return 1
  step story_host "$PC" tokens import "$WORK/s4-tok.bin" || return 1
  check "within its hour the token works" 0 "^uses left: 4$" \
    story_run "$PC" "$HOST_LINK" run-assay --protocol elisa --sample S1 || return 1
  echo $((now + 7200)) >"$clock"
  check "the device's clock is two hours later" 0 "\"device_time\":$((now + 7200))" \
    story_host "$PC" status --link "$HOST_LINK" --json || return 1
  check "with uses left but past its expiry the token is refused (exit 3)" 3 \
    "offered token $t: expired" \
    story_run "$PC" "$HOST_LINK" run-assay --protocol elisa --sample S2 || return 1
  story_host "$PC" tokens list --json
  holds "the PC books the token dead (expired)" json_true "$STORY_OUT" \
    "[(t['dead'], t['dead_reason']) for t in j] == [(True, 'expired')]" || return 1
  echo "$now" >"$clock"
  check "setting the clock back does not move the device's time back" 0 \
    "\"device_time\":$((now + 7200))" story_host "$PC" status --link "$HOST_LINK" --json ||
    return 1
  pc s4-copy "$ALICE" || return 1
  step story_host "$PC" authorizations import "$WORK/auth7.bin" || return 1
  step story_host "$PC" tokens import "$WORK/s4-tok.bin" || return 1
  check "the expired token stays refused after the clock is set back (exit 3)" 3 \
    "offered token $t: expired" \
    story_run "$PC" "$HOST_LINK" run-assay --protocol elisa --sample S3 || return 1
}

# The cloud key leaks; a thief mints himself tokens. The master's authorization 8
# revokes 7; Alice's PC carries it to the device with her first token under 8.
revocation() {
  device 5 || return 1
  pc s5-mallory "$MALLORY" || return 1
  local mallory=$PC
  pc s5-alice "$ALICE" || return 1
  local alice=$PC
  step story_mint "$WORK/s5-a1.bin" cloud 7 "$DEV" "$ALICE" "$alice.pub" 1 5d || return 1
  step story_mint "$WORK/s5-a-old.bin" cloud 7 "$DEV" "$ALICE" "$alice.pub" 2 30d || return 1
  step story_mint "$WORK/s5-m.bin" cloud 7 "$DEV" "$MALLORY" "$mallory.pub" 100 30d || return 1
  local a_old m
  a_old=$(story_token_id "$WORK/s5-a-old.bin")
  m=$(story_token_id "$WORK/s5-m.bin")
  step story_host "$alice" authorizations import "$WORK/auth7.bin" || return 1
  step story_host "$alice" tokens import "$WORK/s5-a1.bin" "$WORK/s5-a-old.bin" || return 1
  step story_host "$mallory" authorizations import "$WORK/auth7.bin" || return 1
  step story_host "$mallory" tokens import "$WORK/s5-m.bin" || return 1
  check "Alice's token under authorization 7 works" 0 "^uses left: 0$" \
    story_run "$alice" "$HOST_LINK" run-assay --protocol elisa --sample S1 || return 1
  check "so does the thief's, until the device hears of the revocation" 0 "^uses left: 99$" \
    story_run "$mallory" "$HOST_LINK" run-assay --protocol elisa --sample M1 || return 1

  step story_host "$alice" authorizations import "$WORK/auth8.bin" || return 1
  step story_mint "$WORK/s5-a8.bin" cloud2 8 "$DEV" "$ALICE" "$alice.pub" 2 7d || return 1
  step story_host "$alice" tokens import "$WORK/s5-a8.bin" || return 1
  check "Alice's PC installs authorization 8 with her new token; the command runs" 0 \
    "installed authorization 8" story_run "$alice" "$HOST_LINK" run-assay --protocol elisa \
    --sample S2 || return 1
  check "the device holds authorization 8 only and revokes 7" 0 \
    '"authorizations":\[\{"id":8,[^]]*\],"revoked_ids":\[7\]' \
    story_host "$alice" status --link "$HOST_LINK" --json || return 1
  check "the thief's token is dead: revoked (exit 3)" 3 "offered token $m: revoked" \
    story_run "$mallory" "$HOST_LINK" run-assay --protocol elisa --sample M2 || return 1
  holds "the PC says why in its last line" grep -q "the last token offered was refused: revoked)$" \
    "$STORY_ERR" || return 1
  check "Alice's token under 8 keeps working" 0 "^uses left: 0$" \
    story_run "$alice" "$HOST_LINK" run-assay --protocol elisa --sample S3 || return 1
  check "Alice's older token under 7 is refused as revoked (exit 3)" 3 \
    "offered token $a_old: revoked" \
    story_run "$alice" "$HOST_LINK" run-assay --protocol elisa --sample S4 || return 1
}

# Several PCs on their own links at once (a lab's shared instrument): every
# command runs exactly once and is charged once, whatever the instrument groups
# into one write (docs/PROTOCOL.md "Group commit"); the audit chain holds.
several_pcs() {
  local pcs=4 runs=5 k r base
  DEV=5c3e0000-0000-4000-8000-000000000006
  STATE=$WORK/instrument6
  step story_provision "$STATE" "$DEV" || return 1
  local device_links=() host_links=()
  for k in $(seq 1 $pcs); do
    base=$((0x700 + k * 0x10))
    device_links+=(--link "$(story_vbus_device "$SOCK" $base)")
    host_links+=("$(story_vbus_host "$SOCK" $base)")
  done
  story_start_instrument "$STATE.log" "$STATE" "${device_links[@]}" || return 1
  local user
  for k in $(seq 1 $pcs); do
    # A user of their own per PC: a user's tokens are one pool on the device.
    user=0b7e3a52-2f0d-4c47-9d6a-7b1c8e9f0b0$k
    step story_user "$WORK/template-$user" "$user" || return 1
    HOST_LINK=${host_links[$((k - 1))]}
    pc "s6-pc$k" "$user" || return 1
    step story_mint "$WORK/s6-tok$k.bin" cloud 7 "$DEV" "$user" "$PC.pub" $runs 7d || return 1
    step story_host "$PC" authorizations import "$WORK/auth7.bin" || return 1
    step story_host "$PC" tokens import "$WORK/s6-tok$k.bin" || return 1
  done
  # The first command of each PC installs the authorization and offers its token;
  # then all PCs send at once.
  : >"$WORK/s6-failures"
  local pids=()
  for k in $(seq 1 $pcs); do
    (
      for r in $(seq 1 $runs); do
        "$HOSTPC" --home "$WORK/s6-pc$k" run --link "${host_links[$((k - 1))]}" \
          --passphrase-file "$STORY_PASSPHRASE_FILE" run-assay --protocol elisa \
          --sample "P${k}R$r" >"$WORK/s6-out$k-$r" 2>"$WORK/s6-err$k-$r" ||
          echo "PC $k run $r: exit $?" >>"$WORK/s6-failures"
      done
    ) &
    pids+=($!)
  done
  wait "${pids[@]}"
  holds "all $((pcs * runs)) commands of $pcs PCs at once succeeded" [ ! -s "$WORK/s6-failures" ] ||
    { cat "$WORK/s6-failures" && return 1; }
  for k in $(seq 1 $pcs); do
    holds "PC $k spent its $runs uses" grep -qx "uses left: 0" "$WORK/s6-out$k-$runs" || return 1
  done
  story_stop "$INSTRUMENT_PID"
  INSTRUMENT_PID=
  grep -o 'stopped (.*)' "$STATE.log" | sed 's/^/  /'
  check "the audit chain verifies" 0 "" "$INSTRUMENT" audit --state "$STATE" --verify || return 1
  holds "$((pcs * runs)) executions in the audit log" \
    [ "$(grep -c ' execution accepted' "$STORY_OUT")" = $((pcs * runs)) ] || return 1
  holds "$((pcs * runs)) charges of one use in the audit log" \
    [ "$(grep -c ' command accepted command=run-assay.* charged=1' "$STORY_OUT")" = $((pcs * runs)) ] ||
    return 1
}

# ------------------------------------------------------------------ main

setup() {
  step story_keygen master rsa2048 && step story_keygen cloud ed25519 &&
    step story_keygen cloud2 ed25519 && step story_authorize 7 cloud &&
    step story_authorize 8 cloud2 --revoke 7 || return 1
  step story_user "$WORK/template-$ALICE" "$ALICE" &&
    step story_user "$WORK/template-$MALLORY" "$MALLORY" &&
    story_start_hub "$SOCK" --bitrate 500000
}
if ! setup; then
  echo "FAIL set-up (keys, identities, hub)"
  exit 1
fi

scenario "initial interaction: no cloud authorization yet" initial_interaction
scenario "typical use: front-loaded tokens, automatic offers" typical_use
scenario "exhaustion by uses" exhaustion_by_uses
scenario "exhaustion by time" exhaustion_by_time
scenario "revocation of a leaked cloud key" revocation
scenario "several PCs on their own links at once" several_pcs

if [ $failures -ne 0 ]; then
  echo "scenarios: $failures scenario(s) failed"
  exit 1
fi
echo "scenarios: all passed"
