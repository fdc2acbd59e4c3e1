#!/usr/bin/env bash
# tollgate-host's online side against a real tollgate-cloud over TLS on
# loopback: login, identity enroll, prefetch (tokens verified, then cached),
# sync; the exit codes for a refusal (7), an unreachable cloud (6) and a peer
# answering garbage (8), which caches nothing.
set -uo pipefail

BIN=${TOLLGATE_BIN_DIR:?}
HOST=$BIN/tollgate-host
CLOUD=$BIN/tollgate-cloud
KEYS=$BIN/tollgate-keys
for b in "$HOST" "$CLOUD" "$KEYS"; do [[ -x $b ]] || { echo "SKIP: $b not built"; exit 0; }; done
command -v python3 >/dev/null || { echo "FAIL: python3 is needed"; exit 1; }
T=$(mktemp -d /tmp/tollgate-online-XXXXXX)
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null; wait "$p" 2>/dev/null; done
  rm -rf "$T"
}
trap cleanup EXIT
fail() { echo "FAIL: $*" >&2; exit 1; }
expect_rc() {
  local want=$1; shift
  "$@" >"$T/out" 2>"$T/err"; local rc=$?
  [[ $rc -eq $want ]] || { cat "$T/out" "$T/err" >&2; fail "$* -> $rc, want $want"; }
}
# Waits (bounded) for a line "PREFIX PORT" or "PREFIX https://HOST:PORT" in a log.
wait_port() {
  local log=$1 pid=$2
  for _ in $(seq 1 200); do
    if grep -q "^$3" "$log"; then sed -n "s/^$3.*[: ]\([0-9][0-9]*\)\$/\1/p" "$log" | head -1; return; fi
    kill -0 "$pid" 2>/dev/null || fail "server exited: $(cat "$log")"
    sleep 0.05
  done
  fail "server never became ready: $(cat "$log")"
}
cd "$T"

# --- the cloud ---------------------------------------------------------------
"$CLOUD" init --dir d >/dev/null || fail "cloud init"
"$KEYS" keygen --alg ed25519 --out master >/dev/null || fail keygen
"$KEYS" authorize-cloud --master master.key --cloud-pub d/cloud.pub --id 7 \
  --not-before 2020-01-01 --not-after 2099-01-01 --out auth7.bin >/dev/null || fail authorize
"$CLOUD" set-authorization --dir d auth7.bin >/dev/null || fail set-authorization
printf 'correct horse battery\n' > pw
printf 'wrong horse battery\n' > badpw
uid=$("$CLOUD" user add --dir d alice --password-file pw | grep -Eo '[0-9a-f]{8}(-[0-9a-f]{4}){3}-[0-9a-f]{12}' | head -1)
[[ -n $uid ]] || fail "user add printed no UUID"
dev=6f1c0000-0000-4000-8000-000000000001
# The device key comes from a real instrument when one is built (the tokens are
# then run on it at the end), else from a bare key pair.
INSTRUMENT=$BIN/tollgate-instrument BUS=$BIN/tollgate-bus
if [[ -x $INSTRUMENT && -x $BUS ]]; then
  "$INSTRUMENT" provision --state inst --master master.pub --device-id $dev >/dev/null || fail provision
  cp inst/device.pub device.pub
else
  "$KEYS" keygen --alg ed25519 --out device >/dev/null
fi
other=6f1c0000-0000-4000-8000-000000000002
"$CLOUD" device add --dir d --id $dev --public-key device.pub >/dev/null || fail "device add"
"$CLOUD" device add --dir d --id $other --public-key device.pub >/dev/null 2>&1 || true
"$CLOUD" entitle --dir d --user alice --device $dev --model pay-per-use --add-balance 10 \
  --uses-per-token 2 >/dev/null || fail entitle

"$CLOUD" serve --dir d --listen 127.0.0.1:0 >serve.log 2>&1 &
cloud_pid=$!; pids+=($cloud_pid)
port=$(wait_port serve.log $cloud_pid 'listening on')
url=https://localhost:$port

# --- login, enroll, prefetch ------------------------------------------------------
H=$T/home
printf 'host passphrase\n' > hostpw
expect_rc 0 "$HOST" --home "$H" identity create --user "$uid" --passphrase-file hostpw

# A wrong password is the cloud's refusal, with its code; no session is stored.
expect_rc 7 "$HOST" --home "$H" login --cloud "$url" --account alice --password-file badpw --ca d/ca.pem
grep -q bad_credentials "$T/err" || fail "wrong password: no server code: $(cat "$T/err")"
[[ ! -e $H/identities/$uid.session ]] || fail "a refused login stored a session"
# A cloud certificate from another CA is not the cloud.
"$CLOUD" init --dir otherca >/dev/null
expect_rc 8 "$HOST" --home "$H" login --cloud "$url" --account alice --password-file pw --ca otherca/ca.pem
expect_rc 1 "$HOST" --home "$H" login --cloud "http://localhost:$port" --account alice --password-file pw

expect_rc 0 "$HOST" --home "$H" login --cloud "$url" --account alice --password-file pw --ca d/ca.pem
[[ $(stat -c %a "$H/identities/$uid.session") == 600 ]] || fail "session file is not 0600"
# Tokens need an enrolled key (the device key is pinned before that refusal).
expect_rc 7 "$HOST" --home "$H" prefetch --device $dev
grep -q no_enrolled_key "$T/err" || fail "no server code: $(cat "$T/err")"
grep -q "pinned (from the cloud)" "$T/out" || fail "device key not pinned: $(cat "$T/out")"
expect_rc 0 "$HOST" --home "$H" identity enroll --passphrase-file hostpw
grep -q "enrolled key" "$T/out" || fail "enroll output: $(cat "$T/out")"

# 5 uses at 2 per token: one probe token, then two more.
expect_rc 0 "$HOST" --home "$H" prefetch --device $dev --uses 5
grep -q "matches the pin" "$T/out" || fail "device key pin not checked: $(cat "$T/out")"
[[ $(grep -c '^token ' "$T/out") == 3 ]] || fail "want a progress line per token: $(cat "$T/out")"
expect_rc 0 "$HOST" --home "$H" tokens list --device $dev --json
python3 - "$T/out" "$dev" "$uid" <<'PY' || fail "cache after prefetch: $(cat "$T/out")"
import json, sys
toks = json.load(open(sys.argv[1]))
assert len(toks) == 3, toks
assert all(t["device_id"] == sys.argv[2] and t["user_id"] == sys.argv[3] for t in toks), toks
assert sum(t["authorized_uses"] for t in toks) == 6 and all(t["authorization_id"] == 7 for t in toks)
PY
# The balance has 4 uses left: 3 tokens of 2 are refused (402), nothing is cached.
expect_rc 7 "$HOST" --home "$H" prefetch --device $dev --tokens 3
grep -q insufficient_balance "$T/err" || fail "no server code: $(cat "$T/err")"
# Not entitled to the other device.
expect_rc 7 "$HOST" --home "$H" prefetch --device $other
expect_rc 1 "$HOST" --home "$H" prefetch --device $dev --uses 2 --tokens 2
expect_rc 0 "$HOST" --home "$H" sync
grep -q "matches the pin" "$T/out" || fail "sync did not check the device key: $(cat "$T/out")"
# A receipt upload reaches the cloud's check (a junk export is refused with its code).
printf 'not an export' > junk.export
expect_rc 7 "$HOST" --home "$H" sync --receipts junk.export
grep -q malformed_export "$T/err" || fail "receipt upload: $(cat "$T/out" "$T/err")"
expect_rc 0 "$HOST" --home "$H" tokens list --device $dev --json
[[ $(python3 -c 'import json,sys; print(len(json.load(open(sys.argv[1]))))' "$T/out") == 3 ]] \
  || fail "a refused prefetch changed the cache"

# --- the cloud goes away -------------------------------------------------------------
cp "$H/identities/$uid.session" session.saved
kill -TERM $cloud_pid; wait $cloud_pid; pids=()
expect_rc 6 timeout 20 "$HOST" --home "$H" --cloud-timeout 2s prefetch --device $dev
grep -qi unreachable "$T/err" || fail "unreachable: $(cat "$T/err")"
expect_rc 6 timeout 20 "$HOST" --home "$H" --cloud-timeout 2s sync

# --- a peer that answers garbage ----------------------------------------------------
# Speaks TLS with the cloud's own certificate (so only the content is wrong) on
# one port, and plain junk without TLS on another.
cat > junk.py <<'PY'
import json, socket, ssl, sys, threading
from http.server import BaseHTTPRequestHandler, HTTPServer
uid, dev = sys.argv[1], sys.argv[2]
class H(BaseHTTPRequestHandler):
    def log_message(self, *a): pass
    def reply(self, code, body, ctype="application/json"):
        data = body.encode()
        self.send_response(code); self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(data))); self.end_headers(); self.wfile.write(data)
    def do_POST(self):
        n = int(self.headers.get("Content-Length", 0)); req = json.loads(self.rfile.read(n) or b"{}")
        if self.path == "/v1/login":
            if req.get("user") == "html":
                return self.reply(200, "<html>welcome</html>", "text/html")
            return self.reply(200, json.dumps({"session": "ab" * 32, "user_id": uid, "expires_at": 4102444800}))
        if self.path == "/v1/tokens":
            return self.reply(200, json.dumps({"authorization_id": 7, "tokens": [
                {"token_id": "x", "token": "AAAA", "uses": 2, "issued_at": 1, "expires_at": 2}]}))
        self.reply(418, "teapot", "text/plain")
    def do_GET(self):
        if self.path == "/v1/authorization":
            return self.reply(200, open("auth.json").read())
        if self.path.startswith("/v1/devices/"):
            return self.reply(200, open("dev.json").read())
        self.reply(500, "oops", "text/plain")
httpd = HTTPServer(("127.0.0.1", 0), H)
ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER); ctx.load_cert_chain("d/server.pem", "d/server.key")
httpd.socket = ctx.wrap_socket(httpd.socket, server_side=True)
raw = socket.socket(); raw.bind(("127.0.0.1", 0)); raw.listen(8)
def junk():
    while True:
        c, _ = raw.accept(); c.sendall(b"HTTP/1.1 200 OK\r\nthis is not TLS\r\n\r\n"); c.close()
threading.Thread(target=junk, daemon=True).start()
silent = socket.socket(); silent.bind(("127.0.0.1", 0)); silent.listen(8)
held = []
def hold():
    while True:
        c, _ = silent.accept(); held.append(c)  # accepts, never answers
threading.Thread(target=hold, daemon=True).start()
print("silent", silent.getsockname()[1])
print("tls", httpd.server_address[1]); print("raw", raw.getsockname()[1], flush=True)
httpd.serve_forever()
PY
# Real authorization and device answers, saved from the real cloud, so the
# junk peer fails only at the tokens.
python3 - "$dev" <<'PY' || fail "could not prepare the junk peer's answers"
import base64, json, sys
auth = open("auth7.bin", "rb").read()
json.dump({"authorization": base64.b64encode(auth).decode(), "id": 7, "not_before": 0, "not_after": 0}, open("auth.json", "w"))
json.dump({"device_id": sys.argv[1], "public_key": open("device.pub").read(), "key_id": "00" * 16, "name": ""}, open("dev.json", "w"))
PY
python3 junk.py "$uid" $dev >junk.log 2>&1 &
junk_pid=$!; pids+=($junk_pid)
tls_port=$(wait_port junk.log $junk_pid 'tls')
raw_port=$(sed -n 's/^raw \([0-9]*\)$/\1/p' junk.log)
silent_port=$(sed -n 's/^silent \([0-9]*\)$/\1/p' junk.log)
[[ -n $raw_port && -n $silent_port ]] || fail "junk peer: $(cat junk.log)"

H2=$T/home2
expect_rc 0 "$HOST" --home "$H2" identity create --user "$uid" --passphrase-file hostpw
# A cloud too slow to answer counts as unreachable (the deadline, not garbage).
expect_rc 6 timeout 20 "$HOST" --home "$H2" --cloud-timeout 300ms login --cloud "https://localhost:$silent_port" --account alice --password-file pw --ca d/ca.pem
grep -q "did not answer in time" "$T/err" || fail "slow cloud: $(cat "$T/err")"
expect_rc 8 "$HOST" --home "$H2" login --cloud "https://localhost:$raw_port" --account alice --password-file pw --ca d/ca.pem
expect_rc 8 "$HOST" --home "$H2" login --cloud "https://localhost:$tls_port" --account html --password-file pw --ca d/ca.pem
grep -qi garbage "$T/err" || fail "html login: $(cat "$T/err")"
expect_rc 0 "$HOST" --home "$H2" login --cloud "https://localhost:$tls_port" --account alice --password-file pw --ca d/ca.pem
expect_rc 8 "$HOST" --home "$H2" prefetch --device $dev --tokens 2
grep -q "token refused" "$T/err" || fail "junk token: $(cat "$T/err")"
expect_rc 0 "$HOST" --home "$H2" tokens list --json
[[ $(cat "$T/out") == "[]" ]] || fail "garbage landed in the cache: $(cat "$T/out")"

# --- the real cloud again: the first home's session still works -------------------------
"$CLOUD" serve --dir d --listen 127.0.0.1:$port >serve2.log 2>&1 &
cloud_pid=$!; pids+=($cloud_pid)
wait_port serve2.log $cloud_pid 'listening on' >/dev/null
expect_rc 0 "$HOST" --home "$H" prefetch --device $dev --tokens 2
expect_rc 0 "$HOST" --home "$H" tokens list --device $dev --json
[[ $(python3 -c 'import json,sys; print(len(json.load(open(sys.argv[1]))))' "$T/out") == 5 ]] \
  || fail "top-up after the outage: $(cat "$T/out")"

# --- the cloud's tokens run on the instrument ----------------------------------------
if [[ -x $INSTRUMENT && -x $BUS ]]; then
  rm -f bus.sock
  "$BUS" hub --socket "$T/bus.sock" --quiet >hub.out 2>hub.err &
  hub_pid=$!; pids+=($hub_pid)
  for _ in $(seq 1 200); do [[ -S bus.sock ]] && grep -qs listening hub.err && break; sleep 0.05; done
  [[ -S bus.sock ]] || fail "hub: $(cat hub.err)"
  "$INSTRUMENT" run --state inst --link "vbus:$T/bus.sock?tx=0x618&rx=0x610" >inst.out 2>inst.err &
  inst_pid=$!; pids+=($inst_pid)
  for _ in $(seq 1 200); do grep -qsx ready inst.out && break; kill -0 $inst_pid || break; sleep 0.05; done
  grep -qsx ready inst.out || fail "instrument: $(cat inst.err)"
  link="vbus:$T/bus.sock?tx=0x610&rx=0x618"
  # The key pinned from the cloud must be the one the device proves.
  expect_rc 0 "$HOST" --home "$H" pair --link "$link"
  grep -q "matches the pin" "$T/out" || fail "pair vs the cloud's pin: $(cat "$T/out")"
  expect_rc 0 "$HOST" --home "$H" run --link "$link" --passphrase-file hostpw run-assay --protocol elisa --sample S1
  grep -q "^uses left: 1$" "$T/out" || fail "run with a cloud token: $(cat "$T/out" "$T/err")"
  # Front-loading: 9 uses cached; keeping 12 tops up 2 tokens of 2 uses first.
  "$CLOUD" entitle --dir d --user alice --device $dev --model pay-per-use --add-balance 10 >/dev/null \
    || fail "add balance"
  expect_rc 0 "$HOST" --home "$H" run --link "$link" --passphrase-file hostpw --keep-uses 12 \
    run-assay --protocol elisa --sample S2
  grep -q "topped up: 2 token(s), 4 use(s)" "$T/err" || fail "top-up: $(cat "$T/out" "$T/err")"
  expect_rc 0 "$HOST" --home "$H" tokens list --device $dev --json
  [[ $(python3 -c 'import json,sys; print(len(json.load(open(sys.argv[1]))))' "$T/out") == 7 ]] \
    || fail "tokens after the top-up: $(cat "$T/out")"
  # Enough cached: no top-up at all.
  expect_rc 0 "$HOST" --home "$H" run --link "$link" --passphrase-file hostpw --keep-uses 2 \
    run-assay --protocol elisa --sample S3
  ! grep -q "top" "$T/err" || fail "topped up needlessly: $(cat "$T/err")"
  # The cloud gone: the run falls back to the cache and still succeeds.
  kill -TERM $cloud_pid; wait $cloud_pid
  expect_rc 0 timeout 20 "$HOST" --home "$H" run --link "$link" --passphrase-file hostpw \
    --keep-uses 100 run-assay --protocol elisa --sample S4
  grep -q "top-up skipped: cloud unreachable" "$T/err" || fail "fallback: $(cat "$T/out" "$T/err")"
fi
echo "online: ok"
