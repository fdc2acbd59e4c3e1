#!/bin/sh
# End to end over one link: the key ceremony, an instrument provisioned and serving, and the host
# pairing, offering a token and running one authorized command. tools/vm runs it in the guest
# (busybox sh) once per CAN backend on vcan0; it is plain POSIX sh, so it runs on any bus:
#
#   e2e.sh NAME DEVICE_ENDPOINT HOST_ENDPOINT
#   e.g. e2e.sh can 'can:vcan0?tx=0x6A8&rx=0x6A0' 'can:vcan0?tx=0x6A0&rx=0x6A8'
#
# Needs TOLLGATE_BIN_DIR with tollgate-keys, tollgate-instrument and tollgate-host. Prints one
# "e2e NAME: ok: ..." line per step; exits 0 when every step passed, 1 at the first failure
# (after printing what the failing program said and the instrument's log).
set -u
name=${1:?usage: e2e.sh NAME DEVICE_ENDPOINT HOST_ENDPOINT}
device_link=${2:?device endpoint}
host_link=${3:?host endpoint}
bin=${TOLLGATE_BIN_DIR:?TOLLGATE_BIN_DIR is not set}
keys=$bin/tollgate-keys
instrument=$bin/tollgate-instrument
host=$bin/tollgate-host

work=$(mktemp -d "${TMPDIR:-/tmp}/tollgate-e2e.XXXXXX") || exit 1
instrument_pid=
cleanup() {
  [ -n "$instrument_pid" ] && kill "$instrument_pid" 2>/dev/null && wait "$instrument_pid" 2>/dev/null
  rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 1' INT TERM

say() { echo "e2e $name: $*"; }
fail() {
  say "FAIL: $*"
  for f in out err; do [ -s "$work/$f" ] && sed 's/^/  | /' "$work/$f"; done
  if [ -s "$work/instrument.err" ]; then
    echo "  instrument log:"
    sed 's/^/  | /' "$work/instrument.err"
  fi
  exit 1
}
# step DESCRIPTION COMMAND...: runs the command with its output in $work/out and $work/err.
step() {
  what=$1
  shift
  "$@" >"$work/out" 2>"$work/err" || fail "$what: exit status $? from: $*"
  say "ok: $what"
}

# Fixed ids: the script creates every key and token itself, fresh each run.
user=0b7e3a52-2f0d-4c47-9d6a-7b1c8e9f0a12
cd "$work" || exit 1
echo "correct horse battery staple" >pass
export TOLLGATE_HOME="$work/host"

step "master (p256) and cloud (ed25519) keys" sh -c \
  "'$keys' keygen --alg p256 --out master && '$keys' keygen --alg ed25519 --out cloud"
step "master authorizes the cloud key (id 1)" "$keys" authorize-cloud --master master.key \
  --cloud-pub cloud.pub --id 1 --not-before 2020-01-01 --not-after 2099-01-01 --out auth1.bin
step "instrument provisioned, trusting only the master key" "$instrument" provision \
  --state device --master master.pub --new-device-id
device=$(sed -n 's/^device_id=//p' "$work/out")
[ -n "$device" ] || fail "provision printed no device_id= line"
step "host identity for user $user" "$host" identity create --user "$user" --passphrase-file pass
step "user public key exported" "$host" identity export-public --user "$user" --out user.pub
step "cloud mints a 3-use token for the device and user" "$keys" mint --cloud-key cloud.key \
  --authorization auth1.bin --device "$device" --user "$user" --user-pub user.pub --uses 3 \
  --valid-for 7d --out token.bin
step "host caches the token and the authorization" sh -c \
  "'$host' tokens import token.bin && '$host' authorizations import auth1.bin"

# The instrument prints exactly "ready" once every link is open.
"$instrument" run --state device --link "$device_link" >instrument.out 2>instrument.err &
instrument_pid=$!
tries=0
until grep -qx ready instrument.out 2>/dev/null; do
  kill -0 "$instrument_pid" 2>/dev/null || fail "tollgate-instrument run --link '$device_link' exited before 'ready'"
  tries=$((tries + 1))
  [ "$tries" -le 600 ] || fail "tollgate-instrument printed no 'ready' within 60 s"
  sleep 0.1
done
say "ok: instrument serving on $device_link"

# Generous per-answer deadline: the guest is emulated and the machine shared.
hostc() { "$host" --timeout 10s "$@"; }
step "host pairs with the device (pins its key)" hostc pair --link "$host_link"
grep -q "$device" "$work/out" || fail "pair did not show device $device"
step "host runs run-assay: the device says unauthorized, the host installs the authorization and offers the token, the device executes" \
  hostc run --link "$host_link" --passphrase-file pass run-assay --protocol elisa --sample S1
grep -q "uses left: 2" "$work/out" || fail "run-assay did not report 'uses left: 2'"
grep -qi "token" "$work/err" || fail "the host's notes do not mention offering the token"
sed 's/^/  | /' "$work/err"
step "the token cache records the charged use" "$host" tokens list
grep -q "uses 2/3" "$work/out" || fail "tokens list does not show 2/3 uses left"

kill "$instrument_pid" 2>/dev/null
wait "$instrument_pid" 2>/dev/null
instrument_pid=
step "the device's audit chain verifies" "$instrument" audit --state device --verify
grep -q "execution accepted command=run-assay" "$work/out" ||
  fail "the audit log has no accepted run-assay execution"
grep -q "offer-token accepted" "$work/out" || fail "the audit log has no accepted token offer"
say "ok: the audit log records the accepted token offer and the run-assay execution"
say "passed"
