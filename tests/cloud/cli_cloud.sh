#!/usr/bin/env bash
# tollgate-cloud end to end through its CLI: init, authorization, users,
# devices, entitlements, serve over TLS (curl verifying the development CA),
# revoke-user and the usage report. Runs once on SQLite and, when
# TOLLGATE_PG_URL names a PostgreSQL server, once more with --db on a scratch
# schema there (every command that opens the store gets the --db).
set -euo pipefail

if [[ -z ${CLI_CLOUD_PASS:-} ]]; then
  CLI_CLOUD_PASS=sqlite bash "$0"
  if [[ -z ${TOLLGATE_PG_URL:-} ]]; then
    echo "SKIP cli_cloud on PostgreSQL: TOLLGATE_PG_URL is not set (tools/pg start DIR prints one)"
    exit 0
  fi
  schema=tollgate_cli_$$_$RANDOM
  psql -q "$TOLLGATE_PG_URL" -c "CREATE SCHEMA $schema" >/dev/null
  case $TOLLGATE_PG_URL in
    postgres://* | postgresql://*)
      sep='?'; [[ $TOLLGATE_PG_URL == *'?'* ]] && sep='&'
      db="$TOLLGATE_PG_URL${sep}options=-csearch_path%3D$schema" ;;
    *) db="$TOLLGATE_PG_URL options='-csearch_path=$schema'" ;;
  esac
  rc=0
  CLI_CLOUD_PASS=postgresql CLI_CLOUD_DB=$db bash "$0" || rc=$?
  psql -q "$TOLLGATE_PG_URL" -c "DROP SCHEMA $schema CASCADE" >/dev/null 2>&1 || true
  exit $rc
fi

BIN=${TOLLGATE_BIN_DIR:?}
CLOUD=$BIN/tollgate-cloud
KEYS=$BIN/tollgate-keys
work=$(mktemp -d /tmp/tollgate-cloud-cli-XXXXXX)
server_pid=""
cleanup() {
  if [[ -n $server_pid ]]; then kill "$server_pid" 2>/dev/null || true; wait "$server_pid" 2>/dev/null || true; fi
  rm -rf "$work"
}
trap cleanup EXIT
fail() { echo "FAIL ($CLI_CLOUD_PASS): $*" >&2; exit 1; }
# The commands that open the store, on this pass's database.
db_args=()
[[ -n ${CLI_CLOUD_DB:-} ]] && db_args=(--db "$CLI_CLOUD_DB")
store() { "$CLOUD" "$@" "${db_args[@]}"; }
command -v curl >/dev/null || fail "curl is needed (tools/setup installs it)"
cd "$work"

store init --dir d >/dev/null
[[ $(stat -c %a d/cloud.key) == 600 && $(stat -c %a d/server.key) == 600 ]] || fail "secret key modes"
openssl verify -CAfile d/ca.pem d/server.pem >/dev/null || fail "server certificate does not chain to the CA"
if "$CLOUD" init --dir d 2>/dev/null; then fail "init ran twice over the same directory"; fi

"$KEYS" keygen --alg ed25519 --out master >/dev/null
"$KEYS" keygen --alg ed25519 --out other >/dev/null
"$KEYS" authorize-cloud --master master.key --cloud-pub d/cloud.pub --id 7 \
  --not-before 2020-01-01 --not-after 2099-01-01 --out auth7.bin >/dev/null
"$KEYS" authorize-cloud --master master.key --cloud-pub other.pub --id 8 \
  --not-before 2020-01-01 --not-after 2099-01-01 --out auth8.bin >/dev/null
if store set-authorization --dir d auth8.bin 2>/dev/null; then
  fail "accepted an authorization for another key"
fi
store set-authorization --dir d auth7.bin >/dev/null

printf 'correct horse battery\n' > pw
store user add --dir d alice --password-file pw >/dev/null
if store user add --dir d alice --password-file pw 2>/dev/null; then fail "duplicate user"; fi
"$KEYS" keygen --alg ed25519 --out device >/dev/null
dev=6f1c0000-0000-4000-8000-000000000001
store device add --dir d --id $dev --public-key device.pub >/dev/null
store entitle --dir d --user alice --device $dev --model pay-per-use --add-balance 10 --uses-per-token 2 >/dev/null
store entitle --dir d --user alice --device $dev --model pay-per-use --add-balance 5 >/dev/null

"$CLOUD" serve --dir d --listen 127.0.0.1:0 "${db_args[@]}" >serve.log 2>&1 &
server_pid=$!
for _ in $(seq 1 100); do
  grep -q '^listening on' serve.log && break
  kill -0 $server_pid 2>/dev/null || fail "serve exited: $(cat serve.log)"
  sleep 0.1
done
port=$(sed -n 's/^listening on https:\/\/127\.0\.0\.1:\([0-9]*\)$/\1/p' serve.log)
[[ -n $port ]] || fail "serve never said where it listens: $(cat serve.log)"
url=https://localhost:$port

code=$(curl -s -o auth.json -w '%{http_code}' --cacert d/ca.pem $url/v1/authorization)
[[ $code == 200 ]] || fail "GET /v1/authorization: $code"
grep -q '"id":7' auth.json || fail "authorization id: $(cat auth.json)"

code=$(curl -s -o login.json -w '%{http_code}' --cacert d/ca.pem -H 'Content-Type: application/json' \
  -d '{"user":"alice","password":"correct horse battery"}' $url/v1/login)
[[ $code == 200 ]] || fail "login: $code $(cat login.json)"
session=$(sed -n 's/.*"session":"\([0-9a-f]*\)".*/\1/p' login.json)

code=$(curl -s -o dev.json -w '%{http_code}' --cacert d/ca.pem -H "Authorization: Bearer $session" \
  $url/v1/devices/$dev)
[[ $code == 200 ]] || fail "GET device: $code $(cat dev.json)"

# No client may talk to it without verifying: a client that trusts another CA fails.
"$CLOUD" init --dir other >/dev/null
if curl -s --cacert other/ca.pem $url/v1/authorization >/dev/null; then fail "TLS verified against the wrong CA"; fi

store revoke-user --dir d alice >/dev/null
code=$(curl -s -o dev2.json -w '%{http_code}' --cacert d/ca.pem -H "Authorization: Bearer $session" \
  $url/v1/devices/$dev)
[[ $code == 401 ]] || fail "revoked session still works: $code"

store usage --dir d --json > usage.json
grep -q '"balance":15' usage.json || fail "usage: $(cat usage.json)"
store usage --dir d | grep -q "^alice" || fail "usage table"

kill -TERM $server_pid
wait $server_pid || fail "serve did not exit cleanly on SIGTERM"
server_pid=""
grep -q '^stopped' serve.log || fail "serve did not report stopping"
echo "cli_cloud ($CLI_CLOUD_PASS): ok"
