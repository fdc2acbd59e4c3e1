#!/usr/bin/env bash
# tollgate-bus end to end through a real hub: --help of every subcommand,
# send/recv (hex, files, --out), dump (live, candump log, pcap), play, bench
# --json, and the one-line errors with non-zero exits.
# Env: TOLLGATE_BIN_DIR (set by ctest; default build/dev/bin).
set -euo pipefail

bin=${TOLLGATE_BIN_DIR:-$(dirname "$0")/../../build/dev/bin}
bus="$bin/tollgate-bus"
[ -x "$bus" ] || { echo "FAIL: $bus not built"; exit 1; }

work=$(mktemp -d)
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT
trap 'echo "FAIL: unexpected error at line $LINENO: $BASH_COMMAND"' ERR

failures=0
pass() { printf 'ok   %s\n' "$*"; }
fail() { printf 'FAIL %s\n' "$*"; failures=$((failures + 1)); }
check() {  # check NAME CMD...: passes when CMD succeeds
  local name=$1; shift
  if "$@"; then pass "$name"; else fail "$name"; fi
}
# Polls (bounded) until CMD succeeds: for a process to become ready, never for a result.
wait_until() {
  local tries=200
  until "$@"; do
    tries=$((tries - 1))
    [ $tries -gt 0 ] || return 1
    sleep 0.05
  done
}
# Runs CMD expecting failure; its stderr must be one line containing TEXT.
expect_error() {
  local name=$1 text=$2; shift 2
  local err rc=0
  err=$("$@" 2>&1 >/dev/null) || rc=$?
  if [ $rc -eq 0 ]; then fail "$name: exited 0"; return; fi
  if ! grep -qF -- "$text" <<<"$err"; then fail "$name: stderr lacks '$text': $err"; return; fi
  pass "$name (exit $rc)"
}

start_hub() {  # start_hub SOCKET ARGS...
  local sock=$1; shift
  "$bus" hub --socket "$sock" --quiet "$@" >"$sock.out" 2>"$sock.err" &
  pids+=($!)
  wait_until test -S "$sock" || { echo "FAIL: hub did not start: $(cat "$sock.err")"; exit 1; }
}
start_recv() {  # start_recv OUTFILE ARGS...: background recv, returns once it listens
  local out=$1; shift
  "$bus" recv -v "$@" >"$out" 2>"$out.err" &
  recv_pid=$!
  pids+=($recv_pid)
  wait_until grep -qs "listening on" "$out.err" || { echo "FAIL: recv did not start: $(cat "$out.err")"; exit 1; }
}

# --- help ---------------------------------------------------------------------------------------
check "--help lists every subcommand" bash -c "'$bus' --help | grep -q can-config"
for cmd in hub send recv dump play bench can-config; do
  check "$cmd --help" bash -c "'$bus' $cmd --help | grep -q 'Usage: tollgate-bus $cmd'"
done

# --- send / recv through a hub --------------------------------------------------------------------
sock="$work/bus.sock"
start_hub "$sock" --no-airtime --candump-log "$work/hub.log" --pcap "$work/hub.pcap"
A="vbus:$sock?tx=0x6A0&rx=0x6A8"
B="vbus:$sock?tx=0x6A8&rx=0x6A0"

head -c 3000 /dev/urandom >"$work/big.bin"
big_hex=$(od -An -v -tx1 "$work/big.bin" | tr -d ' \n' | tr a-f A-F)

start_recv "$work/recv.out" --link "$B" --count 3 --out "$work/msgs"
"$bus" dump -v --link "vbus:$sock" >"$work/live.dump" 2>"$work/live.dump.err" &
dump_pid=$!
pids+=($dump_pid)
wait_until grep -qs "watching" "$work/live.dump.err" || { echo "FAIL: dump did not start"; exit 1; }
check "send hex" "$bus" send --link "$A" DEADBEEF
check "send spaced hex" "$bus" send --link "$A" "01 02:03"
check "send --file (3000 bytes)" "$bus" send --link "$A" --file "$work/big.bin" --timeout 10s
check "recv got all three" wait "$recv_pid"
check "recv printed the hex lines" diff <(printf 'DEADBEEF\n010203\n%s\n' "$big_hex") "$work/recv.out"
check "recv --out wrote the files" cmp "$work/big.bin" "$work/msgs/msg-000003.bin"
check "recv --out first file" bash -c "[ \"\$(od -An -tx1 '$work/msgs/msg-000001.bin' | tr -d ' \n')\" = deadbeef ]"

# --- errors -------------------------------------------------------------------------------------
expect_error "send to a missing hub says how to start one" "tollgate-bus hub --socket $work/none.sock" \
  "$bus" send --link "vbus:$work/none.sock?tx=1&rx=2" AA
expect_error "bad endpoint option is named" "unknown option 'bogus'" \
  "$bus" send --link "vbus:$sock?tx=1&rx=2&bogus=1" AA
expect_error "11-bit id overflow is named" "tx=0x800 is not an 11-bit CAN id" \
  "$bus" send --link "vbus:$sock?tx=0x800&rx=2" AA
expect_error "odd hex is refused" "odd number of digits" "$bus" send --link "$A" ABC
expect_error "send without data" "give the message as hex or with --file" "$bus" send --link "$A"
expect_error "nobody answers a multi-frame send: N_Bs" "N_Bs timeout" \
  "$bus" send --link "vbus:$sock?tx=0x700&rx=0x708&nbs=200ms" "$(printf 'AB%.0s' $(seq 100))"
expect_error "recv --timeout with nothing sent" "no message within 200ms" \
  "$bus" recv --link "vbus:$sock?tx=0x710&rx=0x718" --timeout 200ms
expect_error "dump needs a source" "give one of --link, --candump-log or --pcap" "$bus" dump
expect_error "dump refuses a serial endpoint" "needs a can: or vbus: endpoint" \
  "$bus" dump --link serial:/dev/null
expect_error "can-config on a missing interface" "tgnosuch0" "$bus" can-config tgnosuch0
expect_error "bench refuses serial" "bench measures CAN links" \
  "$bus" bench --link serial:/dev/null --size 10
expect_error "play a missing log" "cannot read $work/nope.log" "$bus" play --link "vbus:$sock" "$work/nope.log"
printf 'not a candump line\n' >"$work/bad.log"
expect_error "play a malformed log names the line" "bad.log:1: not a candump log line" \
  "$bus" play --link "vbus:$sock" "$work/bad.log"
expect_error "unknown subcommand option" "--bogus" "$bus" send --link "$A" --bogus AA

# --- dump (live): frames and the reassembled message -------------------------------------------
kill -INT "$dump_pid"
check "live dump stops cleanly on SIGINT" wait "$dump_pid"
check "live dump shows the 3000-byte message" grep -q "^# message 6A0 len=3000 crc=ok data=$big_hex\$" "$work/live.dump"
check "live dump shows the short message" grep -q "^# message 6A0 len=4 crc=ok data=DEADBEEF\$" "$work/live.dump"
check "live dump frames are candump lines" grep -qE '^\([0-9]+\.[0-9]{6}\) vbus0 6A8#30' "$work/live.dump"

# --- play: the dumped frames replayed reach a fresh receiver --------------------------------------
start_recv "$work/replay.out" --link "$B" --count 3 --timeout 10s
check "play the live dump" "$bus" play --link "vbus:$sock" "$work/live.dump"
check "replayed messages arrive intact" wait "$recv_pid"
check "replayed payloads equal the originals" diff "$work/recv.out" "$work/replay.out"
awk '!/^#/ && n++ < 5' "$work/live.dump" >"$work/five.log"
check "play --keep-timing" "$bus" play --link "vbus:$sock" --keep-timing "$work/five.log"

# --- bench --------------------------------------------------------------------------------------
fsock="$work/fd.sock"
start_hub "$fsock" --bitrate 1000000 --fd-data-bitrate 8000000
check "bench --json (FD, both ends in one process)" bash -c "
  '$bus' bench --link 'vbus:$fsock?tx=0x6A0&rx=0x6A8&fd=1' --peer 'vbus:$fsock?tx=0x6A8&rx=0x6A0&fd=1' \
    --size 10,100,1000 --count 3 --json >'$work/bench.json'"
check "bench JSON has a row per size with frames and no errors" python3 - "$work/bench.json" <<'EOF'
import json, sys
r = json.load(open(sys.argv[1]))
assert r["bitrate"] == 1000000 and r["data_bitrate"] == 8000000 and r["rates_from_hub"], r
rows = r["results"]
assert [x["size"] for x in rows] == [10, 100, 1000], rows
for x in rows:
    assert x["errors"] == 0 and x["count"] == 3, x
    assert x["frames"] == x["min_frames"], x       # our ISO-TP sends the standard's minimum
    assert x["bus_frames"] == x["frames"], x       # and the hub saw exactly those
    assert x["measured_ns"] > 0 and x["min_ns"] > 0 and x["ratio"] > 0, x
EOF
# Without --peer the other end is a recv in another process (warm-up + 3 messages).
start_recv "$work/sink.out" --link "vbus:$fsock?tx=0x7A8&rx=0x7A0" --count 4 -q
check "bench table (classic, sender only)" "$bus" bench --link "vbus:$fsock?tx=0x7A0&rx=0x7A8" \
  --size 300 --count 3 -t 5s >"$work/bench.txt"
check "the sink received every bench message" wait "$recv_pid"
check "bench table has the size row" grep -qE '^ +300 +3 ' "$work/bench.txt"

# --- captures written by the hub: dump --candump-log / --pcap -----------------------------------
kill -INT "${pids[0]}"
wait "${pids[0]}" || true
check "dump --candump-log finds the message" grep -q "^# message 6A0 len=3000 crc=ok data=$big_hex\$" \
  <("$bus" dump --candump-log "$work/hub.log" --no-frames)
check "dump --pcap finds the message" grep -q "^# message 6A0 len=3000 crc=ok data=$big_hex\$" \
  <("$bus" dump --pcap "$work/hub.pcap" --no-frames)
check "dump --pcap --count stops early" bash -c "[ \$('$bus' dump --pcap '$work/hub.pcap' --no-messages --count 7 | wc -l) -eq 7 ]"

if [ $failures -ne 0 ]; then
  echo "it_bus_cli: $failures check(s) failed"
  exit 1
fi
echo "it_bus_cli: all checks passed"
