#!/usr/bin/env bash
# ACCEPTANCE (issue 3): a hub --pcap capture opens in tshark, and Wireshark's
# ISO-TP dissector (-d can.subdissector,iso15765) reassembles exactly the ISO-TP
# payloads that went on the bus: each message followed by the CAN message
# link's CRC-32C trailer (4 bytes, little-endian), classic CAN and CAN FD,
# single frames, first frames with the 12-bit length and with the 32-bit escape.
# Skips (exit 0, a SKIP line) when tshark is not installed.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
bin_dir=${TOLLGATE_BIN_DIR:-$here/../../build/dev/bin}
bus="$bin_dir/tollgate-bus"

if ! command -v tshark >/dev/null 2>&1; then
  echo "SKIP: tshark is not installed (apt-get install tshark); the pcap acceptance needs it"
  exit 0
fi
if [ ! -x "$bus" ]; then
  echo "FAIL: $bus is not built"
  exit 1
fi

tmp=$(mktemp -d /tmp/tollgate-tshark.XXXXXX)
hub_pid=""
cleanup() {
  if [ -n "$hub_pid" ]; then kill "$hub_pid" 2>/dev/null || true; fi
  rm -rf "$tmp"
}
trap cleanup EXIT

sock="$tmp/bus.sock"
"$bus" hub --socket "$sock" --bitrate 1000000 --fd-data-bitrate 5000000 --pcap "$tmp/cap.pcap" \
  --quiet >"$tmp/hub.out" 2>&1 &
hub_pid=$!
for _ in $(seq 200); do [ -S "$sock" ] && break; sleep 0.05; done
[ -S "$sock" ] || { echo "FAIL: the hub did not start"; cat "$tmp/hub.out"; exit 1; }

# The messages, and the ISO-TP payloads we expect tshark to reassemble from them.
python3 - "$tmp" <<'EOF'
import os, random, sys
tmp = sys.argv[1]
def crc32c(data):
    c = 0xFFFFFFFF
    for b in data:
        c ^= b
        for _ in range(8):
            c = (c >> 1) ^ 0x82F63B78 if c & 1 else c >> 1
    return c ^ 0xFFFFFFFF
rng = random.Random(2024)
plan = {"classic": [1, 3, 50, 200, 1000, 4091, 4092, 5000],
        "fd": [1, 3, 58, 59, 200, 1000, 4091, 5000]}
with open(os.path.join(tmp, "expected.txt"), "w") as expected:
    for channel, sizes in plan.items():
        os.makedirs(os.path.join(tmp, channel), exist_ok=True)
        for i, n in enumerate(sizes):
            m = bytes(rng.randrange(256) for _ in range(n))
            with open(os.path.join(tmp, channel, "m%02d.bin" % i), "wb") as f:
                f.write(m)
            expected.write(channel + " " + (m + crc32c(m).to_bytes(4, "little")).hex() + "\n")
EOF

run_channel() {  # name, sender endpoint, receiver endpoint
  local name=$1 tx=$2 rx=$3
  local count
  count=$(ls "$tmp/$name"/m*.bin | wc -l)
  mkdir -p "$tmp/$name/rx"
  "$bus" recv --link "$rx" --count "$count" --quiet --verbose --timeout 30s --out "$tmp/$name/rx" \
    2>"$tmp/$name/recv.err" &
  local recv_pid=$!
  for _ in $(seq 200); do grep -q listening "$tmp/$name/recv.err" 2>/dev/null && break; sleep 0.05; done
  for f in "$tmp/$name"/m*.bin; do
    "$bus" send --link "$tx" --file "$f" --timeout 10s
  done
  wait "$recv_pid" || { echo "FAIL: $name receiver"; cat "$tmp/$name/recv.err"; exit 1; }
}
run_channel classic "vbus:$sock?tx=0x6A0&rx=0x6A8" "vbus:$sock?tx=0x6A8&rx=0x6A0"
run_channel fd "vbus:$sock?tx=0x7A0&rx=0x7A8&fd=1" "vbus:$sock?tx=0x7A8&rx=0x7A0&fd=1"

kill "$hub_pid"
wait "$hub_pid" || true
hub_pid=""

# The capture opens at all.
tshark -r "$tmp/cap.pcap" >"$tmp/plain.txt" 2>"$tmp/tshark.err" ||
  { echo "FAIL: tshark cannot read the capture"; cat "$tmp/tshark.err"; exit 1; }

# Every single frame and every reassembled message, in bus order.
tshark -r "$tmp/cap.pcap" -d can.subdissector,iso15765 -T fields -E separator=';' \
  -e can.id -e iso15765.message_type -e iso15765.reassembled.length -e data.data \
  >"$tmp/fields.txt" 2>"$tmp/tshark.err" ||
  { echo "FAIL: tshark's ISO-TP dissection failed"; cat "$tmp/tshark.err"; exit 1; }

python3 - "$tmp" <<'EOF'
import os, sys
tmp = sys.argv[1]
expected = {"classic": [], "fd": []}
for line in open(os.path.join(tmp, "expected.txt")):
    channel, payload = line.split()
    expected[channel].append(payload)
got = {"classic": [], "fd": []}
frames = 0
for line in open(os.path.join(tmp, "fields.txt")):
    frames += 1
    can_id, mtype, reassembled, data = (line.rstrip("\n").split(";") + ["", "", "", ""])[:4]
    channel = {"1696": "classic", "1952": "fd"}.get(can_id)  # 0x6A0, 0x7A0: the senders
    if channel is None:
        continue  # flow control from the receivers
    single = mtype in ("0", "0x00", "0x0")
    if single or reassembled:
        got[channel].append(data.replace(":", "").lower())
ok = True
for channel in ("classic", "fd"):
    e, g = expected[channel], got[channel]
    if e != g:
        ok = False
        print("FAIL: %s: tshark reassembled %d payloads, expected %d" % (channel, len(g), len(e)))
        for i, (a, b) in enumerate(zip(e, g)):
            if a != b:
                print("  first difference at message %d: %d vs %d bytes" % (i, len(a) // 2, len(b) // 2))
                break
    else:
        sizes = ", ".join(str(len(p) // 2) for p in g)
        print("ok: %s: tshark reassembled all %d ISO-TP payloads exactly (bytes: %s)" % (channel, len(g), sizes))
print("tshark read %d frames" % frames)
sys.exit(0 if ok else 1)
EOF
