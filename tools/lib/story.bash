# The white paper's story as shell steps, shared by tools/demo (which narrates
# them) and tests/instrument/scenarios.sh (which asserts on them). Sourced, not
# run. Every step runs the real CLIs: tollgate-keys, tollgate-instrument,
# tollgate-host and tollgate-bus, and for the online steps tollgate-cloud (not
# required by story_init: callers that use it check story_have_cloud).
#
#   story_init BIN_DIR WORK_DIR    programs and a scratch folder (created by the caller)
#   story_exec CMD...              runs CMD; its exit status in STORY_RC (also returned), its
#                                  output in $STORY_OUT / $STORY_ERR
#   story_expect RC REGEX CMD...   runs CMD (a program, or one of the story_* steps below), then
#                                  checks its exit status and that its stdout+stderr match the
#                                  extended REGEX ('' = anything); returns 1 with a reason if not
#   story_stop_all                 stops every process started here (call it from an EXIT trap)
#
# With STORY_NARRATE=1 each command is printed the way a user would type it
# (paths relative to the scratch folder) and its output is shown indented.
#
# Readiness is waited for by polling a line or a socket (bounded); results are
# never waited for by sleeping.

STORY_PIDS=()
STORY_NARRATE=${STORY_NARRATE:-0}
STORY_PASSPHRASE_FILE=
STORY_DIM=${STORY_DIM:-}
STORY_OFF=${STORY_OFF:-}

story_init() {
  STORY_BIN=$1
  STORY_WORK=$2
  KEYS=$STORY_BIN/tollgate-keys
  INSTRUMENT=$STORY_BIN/tollgate-instrument
  HOSTPC=$STORY_BIN/tollgate-host
  BUS=$STORY_BIN/tollgate-bus
  CLOUD=$STORY_BIN/tollgate-cloud
  local p
  for p in "$KEYS" "$INSTRUMENT" "$HOSTPC" "$BUS"; do
    [ -x "$p" ] || { echo "story: $p is not built" >&2; return 1; }
  done
  STORY_OUT=$STORY_WORK/.out
  STORY_ERR=$STORY_WORK/.err
  STORY_PASSPHRASE_FILE=$STORY_WORK/passphrase
  printf 'correct horse battery staple\n' >"$STORY_PASSPHRASE_FILE"
  chmod 600 "$STORY_PASSPHRASE_FILE"
}

# ------------------------------------------------------------------ running commands

# The command line as a user in the scratch folder would type it.
story_pretty() {
  local s="" w
  for w in "$@"; do
    w=${w//"$STORY_BIN/"/}
    w=${w//"$STORY_WORK/"/}
    if [[ "$w" =~ [^A-Za-z0-9_./:=,+@%-] ]]; then w="'$w'"; fi
    s+="${s:+ }$w"
  done
  printf '%s' "$s"
}

story_exec() {
  STORY_RC=0
  "$@" >"$STORY_OUT" 2>"$STORY_ERR" || STORY_RC=$?
  if [ "$STORY_NARRATE" = 1 ]; then
    printf '%s$ %s%s\n' "$STORY_DIM" "$(story_pretty "$@")" "$STORY_OFF"
    cat "$STORY_OUT" "$STORY_ERR" | sed -e "s|$STORY_WORK/||g" -e 's/^/    /'
    [ "$STORY_RC" -eq 0 ] || printf '    %s(exit %s)%s\n' "$STORY_DIM" "$STORY_RC" "$STORY_OFF"
  fi
  return "$STORY_RC"
}

story_output() { cat "$STORY_OUT" "$STORY_ERR"; }

story_expect() {
  local want=$1 pattern=$2
  shift 2
  # A story step function runs its programs through story_exec itself.
  if declare -F "$1" >/dev/null; then "$@" || true; else story_exec "$@" || true; fi
  if [ "$STORY_RC" -ne "$want" ]; then
    echo "expected exit $want, got $STORY_RC from: $(story_pretty "$@")" >&2
    story_output | sed 's/^/  | /' >&2
    return 1
  fi
  # grep on the files, not a pipe: grep -q quits at the first match, and under
  # pipefail the writer's SIGPIPE would turn that match into a failure.
  if [ -n "$pattern" ] && ! grep -Eq -- "$pattern" "$STORY_OUT" "$STORY_ERR"; then
    echo "output of '$(story_pretty "$@")' lacks /$pattern/:" >&2
    story_output | sed 's/^/  | /' >&2
    return 1
  fi
  return 0
}

# ------------------------------------------------------------------ processes

# story_wait_for WHAT CMD...: polls CMD (up to ~10 s) until it succeeds; CMD
# exiting 2 means "will never happen" and ends the wait at once.
story_wait_for() {
  local what=$1 tries=200 rc
  shift
  while :; do
    rc=0
    "$@" || rc=$?
    [ $rc -eq 0 ] && return 0
    tries=$((tries - 1))
    if [ $rc -eq 2 ] || [ $tries -le 0 ]; then
      [ $rc -eq 2 ] && echo "story: gave up waiting for $what" >&2
      [ $rc -eq 2 ] || echo "story: timed out waiting for $what" >&2
      return 1
    fi
    sleep 0.05
  done
}

story_alive() { kill -0 "$1" 2>/dev/null; }

# Stops one process we started: SIGTERM, then SIGKILL if it lingers (~5 s).
story_stop() {
  local pid=$1 tries=100
  story_alive "$pid" || { wait "$pid" 2>/dev/null || true; return 0; }
  kill -TERM "$pid" 2>/dev/null || true
  while story_alive "$pid" && [ $tries -gt 0 ]; do
    sleep 0.05
    tries=$((tries - 1))
  done
  story_alive "$pid" && kill -KILL "$pid" 2>/dev/null
  wait "$pid" 2>/dev/null || true
  local kept=() p
  for p in "${STORY_PIDS[@]}"; do [ "$p" = "$pid" ] || kept+=("$p"); done
  STORY_PIDS=("${kept[@]}")
}

story_stop_all() {
  local i
  for ((i = ${#STORY_PIDS[@]} - 1; i >= 0; i--)); do story_stop "${STORY_PIDS[i]}"; done
  STORY_PIDS=()
}

# story_start_hub SOCKET [HUB OPTIONS]...: a virtual CAN bus; sets HUB_PID. Its
# counters (printed on SIGUSR1 and at exit) go to SOCKET.out, its log to SOCKET.err.
story_start_hub() {
  local sock=$1
  shift
  rm -f "$sock"
  if [ "$STORY_NARRATE" = 1 ]; then
    printf '%s$ %s &%s\n' "$STORY_DIM" "$(story_pretty "$BUS" hub --socket "$sock" "$@")" \
      "$STORY_OFF"
  fi
  "$BUS" hub --socket "$sock" --quiet "$@" >"$sock.out" 2>"$sock.err" &
  HUB_PID=$!
  STORY_PIDS+=("$HUB_PID")
  if ! story_wait_for "the hub on $sock" story_hub_listening "$sock"; then
    cat "$sock.err" >&2
    return 1
  fi
  [ "$STORY_NARRATE" = 1 ] && sed -e "s|$STORY_WORK/||g" -e 's/^/    /' "$sock.err"
  return 0
}
story_hub_listening() { story_alive "$HUB_PID" && [ -S "$1" ] && grep -qs "listening" "$1.err"; }

# story_start_instrument LOG STATE ARGS...: `tollgate-instrument run --state STATE ARGS...`
# in the background, returning once it printed "ready" (every link open); sets
# INSTRUMENT_PID. Its stderr goes to LOG.
story_start_instrument() {
  local log=$1 state=$2
  shift 2
  if [ "$STORY_NARRATE" = 1 ]; then
    printf '%s$ %s &%s\n' "$STORY_DIM" "$(story_pretty "$INSTRUMENT" run --state "$state" "$@")" \
      "$STORY_OFF"
  fi
  "$INSTRUMENT" run --state "$state" "$@" >"$log.out" 2>"$log" &
  INSTRUMENT_PID=$!
  STORY_PIDS+=("$INSTRUMENT_PID")
  if ! story_wait_for "the instrument to be ready" story_instrument_ready "$log.out"; then
    cat "$log" >&2
    return 1
  fi
  [ "$STORY_NARRATE" = 1 ] && sed -e "s|$STORY_WORK/||g" -e 's/^/    /' "$log"
  return 0
}
story_instrument_ready() {
  grep -qsx ready "$1" && return 0
  story_alive "$INSTRUMENT_PID" || { echo "story: the instrument exited" >&2; return 2; }
  return 1
}

# story_pty_pair A B: a pair of connected pseudo-terminals (raw, no echo), as
# symlinks A and B; sets SOCAT_PID.
story_pty_pair() {
  local a=$1 b=$2
  socat pty,raw,echo=0,link="$a" pty,raw,echo=0,link="$b" 2>"$a.socat.err" &
  SOCAT_PID=$!
  STORY_PIDS+=("$SOCAT_PID")
  story_wait_for "socat's pseudo-terminals" story_ptys_up "$a" "$b"
}
story_ptys_up() {
  if [ -e "$1" ] && [ -e "$2" ]; then return 0; fi
  story_alive "$SOCAT_PID" || return 2
  return 1
}

# story_hub_frames SOCKET: the hub's total frame count so far (asks it with SIGUSR1).
# Each report starts with "hub: T s, bus busy ..., N frames, ...".
story_hub_frames() {
  local sock=$1 before
  before=$(grep -c ' bus busy ' "$sock.out" 2>/dev/null || true)
  kill -USR1 "$HUB_PID"
  story_wait_for "the hub's counters" story_hub_printed "$sock" "$before" || return 1
  grep ' bus busy ' "$sock.out" | tail -n 1 | sed -E 's/.*, ([0-9]+) frames, .*/\1/'
}
story_hub_printed() {
  [ "$(grep -c ' bus busy ' "$1.out" 2>/dev/null || true)" -gt "$2" ]
}

# ------------------------------------------------------------------ endpoints

# story_vbus_host SOCKET BASE / story_vbus_device SOCKET BASE: the two ends of one
# ISO-TP connection on the virtual bus; the host sends on BASE, the device on BASE+8.
story_vbus_host() { printf 'vbus:%s?tx=0x%X&rx=0x%X' "$1" "$2" $(($2 + 8)); }
story_vbus_device() { printf 'vbus:%s?tx=0x%X&rx=0x%X' "$1" $(($2 + 8)) "$2"; }

# ------------------------------------------------------------------ the steps

# story_keygen NAME ALG: NAME.key and NAME.pub in the scratch folder.
story_keygen() { story_exec "$KEYS" keygen --alg "$2" --out "$STORY_WORK/$1"; }

story_not_after() { date -u -d "+1 year" +%Y-%m-%dT%H:%M:%SZ; }

# story_authorize ID CLOUD [--revoke N]...: the master signs authorization ID for
# CLOUD.pub into authID.bin.
story_authorize() {
  local id=$1 cloud=$2
  shift 2
  story_exec "$KEYS" authorize-cloud --master "$STORY_WORK/master.key" \
    --cloud-pub "$STORY_WORK/$cloud.pub" --id "$id" --not-after "$(story_not_after)" "$@" \
    --out "$STORY_WORK/auth$id.bin"
}

# story_provision STATE DEVICE_UUID: a factory-fresh instrument trusting master.pub only.
story_provision() {
  story_exec "$INSTRUMENT" provision --state "$1" --master "$STORY_WORK/master.pub" \
    --device-id "$2"
}

# story_user HOME USER_UUID: the user's key pair on their PC, public key in HOME.pub.
story_user() {
  story_exec "$HOSTPC" --home "$1" identity create --user "$2" \
    --passphrase-file "$STORY_PASSPHRASE_FILE" || return
  story_exec "$HOSTPC" --home "$1" identity export-public --user "$2" --out "$1.pub"
}

# story_mint OUT CLOUD AUTH_ID DEVICE USER USER_PUB USES VALID_FOR [MINT OPTIONS]...
story_mint() {
  local out=$1 cloud=$2 auth=$3 device=$4 user=$5 pub=$6 uses=$7 valid=$8
  shift 8
  story_exec "$KEYS" mint --cloud-key "$STORY_WORK/$cloud.key" \
    --authorization "$STORY_WORK/auth$auth.bin" --device "$device" --user "$user" \
    --user-pub "$pub" --uses "$uses" --valid-for "$valid" "$@" --out "$out"
}

# story_token_id FILE: the token's UUID.
story_token_id() {
  "$KEYS" inspect --json "$1" | sed -E 's/.*"token_id":"([0-9a-f-]+)".*/\1/'
}

# story_host HOME ARGS...: tollgate-host on the PC whose state is HOME.
story_host() { story_exec "$HOSTPC" --home "$1" "${@:2}"; }

# story_run HOME LINK COMMAND [ARGS]...: a command on the device, signed by the
# PC's only user.
story_run() {
  story_exec "$HOSTPC" --home "$1" run --link "$2" --passphrase-file "$STORY_PASSPHRASE_FILE" \
    "${@:3}"
}

# story_uses_left: the "uses left: N" of the last story_run ('' if none).
story_uses_left() { sed -nE 's/^uses left: ([0-9]+)$/\1/p' "$STORY_OUT" | tail -n 1; }

# ------------------------------------------------------------------ the cloud

story_have_cloud() { [ -x "$CLOUD" ]; }

# story_cloud ARGS...: an operator command, `tollgate-cloud ARGS...`.
story_cloud() { story_exec "$CLOUD" "$@"; }

# story_start_cloud DIR LOG ADDRESS:PORT: `tollgate-cloud serve` in the background
# (port 0 picks a free one), returning once it accepts connections; sets CLOUD_PID,
# CLOUD_URL (https://localhost:PORT, the name its development certificate
# carries) and CLOUD_PORT. Its output goes to LOG.
story_start_cloud() {
  local dir=$1 log=$2 listen=$3
  if [ "$STORY_NARRATE" = 1 ]; then
    printf '%s$ %s &%s\n' "$STORY_DIM" "$(story_pretty "$CLOUD" serve --dir "$dir" --listen "$listen")" \
      "$STORY_OFF"
  fi
  "$CLOUD" serve --dir "$dir" --listen "$listen" >"$log" 2>&1 &
  CLOUD_PID=$!
  STORY_PIDS+=("$CLOUD_PID")
  if ! story_wait_for "the cloud to listen" story_cloud_listening "$log"; then
    cat "$log" >&2
    return 1
  fi
  CLOUD_PORT=$(sed -nE 's|^listening on https://[^ ]*:([0-9]+)$|\1|p' "$log" | head -n 1)
  [ -n "$CLOUD_PORT" ] || { echo "story: no port in: $(cat "$log")" >&2; return 1; }
  # shellcheck disable=SC2034 # read by the caller
  CLOUD_URL=https://localhost:$CLOUD_PORT
  [ "$STORY_NARRATE" = 1 ] && sed -e "s|$STORY_WORK/||g" -e 's/^/    /' "$log"
  return 0
}
story_cloud_listening() {
  grep -qs "^listening on https://" "$1" && return 0
  story_alive "$CLOUD_PID" || { echo "story: the cloud exited" >&2; return 2; }
  return 1
}

# story_stop_cloud: stops the cloud started last (SIGTERM: it finishes what it
# was doing and exits).
story_stop_cloud() {
  if [ "$STORY_NARRATE" = 1 ]; then
    printf '%s$ kill %s   # tollgate-cloud serve%s\n' "$STORY_DIM" "$CLOUD_PID" "$STORY_OFF"
  fi
  story_stop "$CLOUD_PID"
}

# story_uuid: the first UUID in the last command's output ('' if none).
story_uuid() {
  grep -Eoh '[0-9a-f]{8}(-[0-9a-f]{4}){3}-[0-9a-f]{12}' "$STORY_OUT" "$STORY_ERR" | head -n 1
}

# story_audit_export HOME LINK PREFIX: the paired device's whole audit log as
# signed exports PREFIX-1.bin, PREFIX-2.bin, ... (one per round of at most 64
# records; each verified by tollgate-host under the pinned key). Sets
# STORY_EXPORTS to the files, in order.
story_audit_export() {
  local home=$1 link=$2 prefix=$3 from=0 n=0 more
  STORY_EXPORTS=()
  while :; do
    n=$((n + 1))
    story_exec "$HOSTPC" --home "$home" audit-export --link "$link" --from "$from" \
      --out "$prefix-$n.bin" || return
    STORY_EXPORTS+=("$prefix-$n.bin")
    more=$(sed -nE 's/^more records follow: run again with --from ([0-9]+)$/\1/p' "$STORY_OUT")
    [ -n "$more" ] || return 0
    if [ "$n" -ge 100 ] || [ "$more" -le "$from" ]; then
      echo "story: the audit export does not advance" >&2
      return 1
    fi
    from=$more
  done
}
