#!/usr/bin/env bash
# e2e: a damaged link and unwelcome peers.
#
# Through lib/faultproxy.py (plaintext, --insecure), once the backup has
# committed a few epochs:
#   flip (payload) one byte of a PAGES payload  -> payload checksum error
#   flip (header)  the length byte of a header  -> header checksum error
#   oversize       a header with a VALID check and a 64 MiB length -> OutOfRange
#        For these three the primary is alive: the backup logs the reason, keeps
#        its last epoch, the primary reconnects and resynchronises, commits
#        resume with digests equal to the primary's acked digests, and the run
#        ends with a clean stop (no failover).
#   truncate       EOF in the middle of a frame: EOF proves nothing about the
#        primary (docs/FAILURE-MODEL.md §2), so the backup waits for it; the
#        primary reconnects and resynchronises (no failover).
#   flip, and the primary cannot reconnect (proxy --single) -> the primary
#        was alive at the corruption and runs UNPROTECTED since, so its
#        silence never activates the older checkpoint: the backup holds and
#        says why (however long it waits); `romulus ctl failover` (the
#        operator's word) then fences (the fence SIGKILLs the primary) and
#        fails over.
#   stall          nothing forwarded for 4 s (sockets open): a partition.
#        "primary silent" -> fence (SIGKILL the primary) -> failover to the
#        last complete epoch. Without the fence this would be a split brain;
#        with it exactly one copy lives.
# In every case: the backup names the reason in its log, never crashes, and
# `romulus verify` proves its image is an exact checkpoint.
#
# Without the proxy, over TLS-PSK:
#   wrong key   -> refused, both logs say Unauthenticated / different key; the
#                  backup keeps serving and then accepts the right primary.
#   plaintext primary against a TLS backup -> refused clearly on both ends.
source "$(dirname "$0")/lib/common.sh"
e2e_init "$@"

PROXY="$E2E_LIB/faultproxy.py"
GUEST="sim:size=16M,workload=hotset"
python3 "$PROXY" --selftest --to x:0 >/dev/null || fail "faultproxy's XXH3 implementation fails its self-test"

# proxy_case NAME EXPECT(resync|failover|hold) BACKUP_LOG_REGEX PROXY_ARGS...
proxy_case() {
  local name=$1 expect=$2 reason_rx=$3
  shift 3
  local d="$T/$name" bport pport bpid ppid xpid
  mkdir -p "$d"
  bport=$(free_port)
  # The fence is STONITH for the test: it kills the primary, so a failover
  # never leaves two copies. In the resync cases it must never run.
  local fence="kill -9 \$(cat $d/primary.pid)"
  [[ $expect == resync ]] && fence="false"
  start_backup bpid "$T/$name-backup.log" --listen "127.0.0.1:$bport" --insecure \
    --image "$d/img" --events-json "$d/events.json" --failover-timeout 2s --fence-cmd "$fence" \
    --control-socket "$d/b.sock"
  bg xpid "$T/$name-proxy.log" python3 "$PROXY" --to "127.0.0.1:$bport" --port-file "$d/proxy.port" "$@"
  wait_until 10 "$name: faultproxy listening" test -s "$d/proxy.port"
  pport=$(cat "$d/proxy.port")
  local epochs=60
  bg ppid "$T/$name-primary.log" "$ROMULUS" replicate --guest "$GUEST" --to "127.0.0.1:$pport" \
    --insecure --interval 20ms --epochs $epochs --stats-json "$d/stats.json"
  echo "$ppid" >"$d/primary.pid"
  wait_until 30 "$name: the proxy injects its fault" \
    grep -Eq "FLIPPED|TRUNCATING|INJECTED|STALLING" "$T/$name-proxy.log"
  log "$name: $(grep -E "FLIPPED|TRUNCATING|INJECTED|STALLING" "$T/$name-proxy.log")"
  if grep -q "SELF-CHECK MISMATCH" "$T/$name-proxy.log"; then
    check_fail "$name: faultproxy's XXH3 disagrees with the primary's header checks"
  fi

  if [[ $expect == resync ]]; then
    # The primary finishes its epochs and stops cleanly; the backup follows.
    wait_exit "$ppid" 45
    [[ $EXIT_CODE -eq 0 ]] || check_fail "$name: primary exited $EXIT_CODE"
    wait_exit "$bpid" 10
    [[ $EXIT_CODE -eq 0 ]] || check_fail "$name: backup exited $EXIT_CODE"
    assert_grep "$T/$name-backup.log" "$reason_rx" "$name: backup log names the fault"
    assert_grep "$T/$name-backup.log" "keeping epoch [0-9]+; waiting" \
      "$name: backup keeps its last epoch and waits for the primary"
    assert_grep "$T/$name-primary.log" "backup lost: .*UNPROTECTED" "$name: primary notices the loss"
    assert_grep "$T/$name-backup.log" "first epoch [0-9]+ \(backup-reconnect\)" \
      "$name: primary reconnects and resynchronises"
    local resyncs
    resyncs=$(python3 -c 'import json,sys
for l in open(sys.argv[1]):
    j=json.loads(l)
    if j.get("totals"): print(j["resyncs"])' "$d/stats.json")
    [[ ${resyncs:-0} -ge 1 ]] || check_fail "$name: primary's totals say $resyncs resyncs, want >= 1"
    # Commits resumed after the fault, and every acked digest matches.
    local fault_epoch last
    fault_epoch=$(grep -Eo "epoch ~?[0-9]+" "$T/$name-proxy.log" | grep -Eo "[0-9]+" | head -n1)
    last=$(last_commit "$d/events.json")
    [[ $last -gt $((fault_epoch + 5)) ]] ||
      check_fail "$name: last commit $last, not well past the fault at epoch $fault_epoch"
    local out
    if out=$(jcheck join "$d/stats.json" "$d/events.json" --from "$fault_epoch" --require-stop); then
      log "$name: after the fault: $out"
    else
      check_fail "$name: after the fault: $out"
    fi
    out=$(jcheck join "$d/stats.json" "$d/events.json" --require-stop) || check_fail "$name: whole run: $out"
  else
    if [[ $expect == hold ]]; then
      # The primary ended the session alive: however long it stays silent,
      # the backup holds and says why; only the operator's word activates.
      wait_until 30 "$name: the backup holds" grep -q "not activating: .*ended the session alive" \
        "$T/$name-backup.log"
      # Three failover timeouts of the primary's silence: a backup that
      # activated on silence would have done so by now. (An observation
      # window for something that must NOT happen; nothing waits on it.)
      sleep 6
      "$ROMULUS" ctl --json --socket "$d/b.sock" status 2>&1 | grep -q '"decision":"hold"' ||
        check_fail "$name: the backup's status is not holding after 6 s: $("$ROMULUS" ctl --json --socket "$d/b.sock" status 2>&1)"
      has_event "$d/events.json" failover && check_fail "$name: the backup ACTIVATED on the silence of a primary that ended the session alive"
      alive "$ppid" || check_fail "$name: the primary died before the operator's failover"
      alive "$bpid" || check_fail "$name: the backup exited while holding"
      log "$name: holding: $(grep -m1 -o "not activating: .*ended the session alive.*" "$T/$name-backup.log")"
      "$ROMULUS" ctl --json --socket "$d/b.sock" failover >"$d/ctl.out" 2>&1 ||
        check_fail "$name: ctl failover failed: $(cat "$d/ctl.out")"
    fi
    # The backup fails over to its last complete epoch.
    wait_exit "$bpid" 20
    [[ $EXIT_CODE -eq 0 ]] || check_fail "$name: backup exited $EXIT_CODE after failover, expected 0"
    alive "$ppid" && check_fail "$name: the primary lives on after the backup activated (two copies)"
    assert_grep "$T/$name-backup.log" "fence command confirmed" "$name: the backup fenced before activating"
    kill9 "$ppid"
    assert_grep "$T/$name-backup.log" "$reason_rx" "$name: backup log names the fault"
    if has_event "$d/events.json" failover; then
      local fo_epoch fo_digest cd out
      fo_epoch=$(jcheck field "$d/events.json" failover last_committed_epoch)
      fo_digest=$(jcheck field "$d/events.json" failover digest)
      cd=$(jcheck commit-digest "$d/events.json" "$fo_epoch")
      log "$name: failover at epoch $fo_epoch: $(jcheck field "$d/events.json" failover reason)"
      [[ $fo_epoch -eq $(last_commit "$d/events.json") ]] ||
        check_fail "$name: failover epoch $fo_epoch is not the last committed one"
      [[ $fo_digest == "$cd" ]] || check_fail "$name: failover digest $fo_digest != commit digest $cd"
      out=$(jcheck join "$d/stats.json" "$d/events.json") || check_fail "$name: $out"
    else
      check_fail "$name: no failover event"
    fi
  fi
  kill9 "$xpid"
  assert_no_crash "$T/$name-backup.log" "$T/$name-primary.log"
  verify_image "$d/img"
}

proxy_case flip-payload resync "Corruption: frame payload checksum mismatch" \
  --fault flip --after 200000 --min-epoch 5
proxy_case flip-header resync "Corruption: frame header checksum mismatch" \
  --fault flip --flip-in header --after 200000 --min-epoch 5
proxy_case oversize resync "(OutOfRange|Out of range): frame length 67108864 exceeds limit 8388608" \
  --fault oversize --after 200000 --min-epoch 5
# (The primary may reconnect before the backup reads the EOF: its new session
# then supersedes the truncated one, which is as good.)
proxy_case truncate resync "truncated frame|supersedes the open one" \
  --fault truncate --after 200000 --min-epoch 5
# The primary is alive but cannot reach the backup again after the corrupt
# frame: it runs unprotected, so the backup holds its epoch until the
# operator says otherwise, then fences and fails over.
proxy_case flip-noreturn hold "failover requested by the operator" \
  --fault flip --after 200000 --min-epoch 5 --single
# A stalled connection is not a partition: the primary gives up on it after
# its 1 s ack timeout and reconnects; the backup takes the new session.
proxy_case stall resync "supersedes the open one" \
  --fault stall --stall-for 4 --after 200000 --min-epoch 5
# A partition (the stall, and no new connection gets through): the backup's
# 2 s of silence, then the fence (STONITH), then exactly one copy.
proxy_case partition failover "primary silent for [0-9]+ ms" \
  --fault stall --stall-for 8 --after 200000 --min-epoch 5 --single

# ---- wrong key, then the right one (TLS-PSK, no proxy) ----
make_key "$T/key"
make_key "$T/otherkey"
d="$T/wrongkey"
mkdir -p "$d"
port=$(free_port)
start_backup bpid "$T/wrongkey-backup.log" --listen "127.0.0.1:$port" --psk-file "$T/key" \
  --image "$d/img" --events-json "$d/events.json"
bg wpid "$T/wrongkey-primary.log" "$ROMULUS" replicate --guest "$GUEST" --to "127.0.0.1:$port" \
  --psk-file "$T/otherkey" --interval 20ms --epochs 20
wait_until 15 "wrong-key primary's log reports the refusal" \
  grep -q "Unauthenticated" "$T/wrongkey-primary.log"
wait_until 15 "backup's log reports the wrong key" grep -q "different pre-shared key" "$T/wrongkey-backup.log"
kill9 "$wpid"
log "wrong key, primary: $(grep -m1 Unauthenticated "$T/wrongkey-primary.log")"
log "wrong key, backup:  $(grep -m1 "different pre-shared key" "$T/wrongkey-backup.log")"
assert_grep "$T/wrongkey-backup.log" "[Uu]nauthenticated" "wrong key: backup reports an unauthenticated peer"
has_event "$d/events.json" commit && check_fail "wrong key: the backup committed data from an unauthenticated primary"
alive "$bpid" || check_fail "wrong key: the backup died after refusing a wrong key"
# The right primary is accepted by the same backup process.
bg ppid "$T/wrongkey-right-primary.log" "$ROMULUS" replicate --guest "$GUEST" --to "127.0.0.1:$port" \
  --psk-file "$T/key" --interval 20ms --epochs 30 --stats-json "$d/stats.json"
wait_exit "$ppid" 30
[[ $EXIT_CODE -eq 0 ]] || check_fail "right key after a wrong one: primary exited $EXIT_CODE"
wait_exit "$bpid" 10
[[ $EXIT_CODE -eq 0 ]] || check_fail "right key after a wrong one: backup exited $EXIT_CODE"
out=$(jcheck join "$d/stats.json" "$d/events.json" --min-acked 30 --require-stop) ||
  check_fail "right key after a wrong one: $out"
log "right key after a wrong one: $out"
assert_no_crash "$T/wrongkey-backup.log" "$T/wrongkey-primary.log" "$T/wrongkey-right-primary.log"
verify_image "$d/img"

# ---- plaintext primary against a TLS backup ----
d="$T/plaintext"
mkdir -p "$d"
port=$(free_port)
start_backup bpid "$T/plaintext-backup.log" --listen "127.0.0.1:$port" --psk-file "$T/key" \
  --image "$d/img" --events-json "$d/events.json"
bg ppid "$T/plaintext-primary.log" "$ROMULUS" replicate --guest "$GUEST" --to "127.0.0.1:$port" \
  --insecure --interval 20ms --epochs 20
wait_until 15 "TLS backup's log reports the plaintext peer" \
  grep -Eq "[Uu]nauthenticated|TLS handshake failed" "$T/plaintext-backup.log"
wait_until 15 "plaintext primary's log reports the refusal" grep -q "UNPROTECTED" "$T/plaintext-primary.log"
kill9 "$ppid"
log "plaintext vs TLS, backup:  $(grep -Em1 "[Uu]nauthenticated|TLS handshake failed" "$T/plaintext-backup.log")"
log "plaintext vs TLS, primary: $(grep -Em1 "UNPROTECTED|backup lost" "$T/plaintext-primary.log")"
# The primary must say something actionable (TLS / authentication), not just
# "peer closed the connection" (docs/PROTOCOL.md §1.2: both ends name the
# reason). KNOWN ENGINE GAP at the time of writing: the TLS backup closes
# without sending a TLS alert, so the plaintext primary only logs "waiting for
# the backup's HELLO_ACK: peer closed the connection". This check stays strict.
if ! grep -E "UNPROTECTED: no backup|backup lost" "$T/plaintext-primary.log" | grep -Eq "TLS|Unauthenticated"; then
  check_fail "plaintext vs TLS: the primary does not say why it was refused (KNOWN ENGINE GAP, see above): $(grep -Em1 "UNPROTECTED: no backup" "$T/plaintext-primary.log")"
fi
has_event "$d/events.json" commit && check_fail "plaintext vs TLS: the backup committed data from a plaintext primary"
alive "$bpid" || check_fail "plaintext vs TLS: the backup died"
kill -TERM "$bpid" 2>/dev/null
wait_exit "$bpid" 10
assert_no_crash "$T/plaintext-backup.log" "$T/plaintext-primary.log"

# ---- stray connections to a backup that holds a checkpoint ----
# A backup restarted on an image with a committed epoch (here: flip-payload's,
# which ended with a clean stop) is LISTENING/AWAIT_HELLO. A peer that never
# sent a valid HELLO never was the primary: per docs/PROTOCOL.md §11 the
# backup drops it and keeps listening; it must NOT fail over (activating the
# old guest while the real primary may be running elsewhere is split brain).
# KNOWN ENGINE BUG at the time of writing: cli/cmd_restore.cc treats the end
# of ANY session as "primary lost" once the sink has a committed epoch, so a
# port probe that connects and closes makes this backup activate the guest.
d="$T/stray"
mkdir -p "$d"
port=$(free_port)
start_backup bpid "$T/stray-backup.log" --listen "127.0.0.1:$port" --insecure \
  --image "$T/flip-payload/img" --events-json "$d/events.json" --failover-timeout 1s
assert_grep "$T/stray-backup.log" "image holds committed epoch" "stray: the backup holds a checkpoint"
stray_ok=1
for kind in close garbage tls; do
  python3 - "$port" "$kind" <<'PY'
import os, socket, sys, time
s = socket.create_connection(("127.0.0.1", int(sys.argv[1])), timeout=5)
if sys.argv[2] == "garbage":
    s.sendall(os.urandom(64))
elif sys.argv[2] == "tls":
    s.sendall(bytes.fromhex("160301002e010000") + os.urandom(50))  # a TLS record header + junk
time.sleep(0.2)
s.close()
PY
  # The backup has 2 s (twice its failover timeout) to do something wrong.
  deadline=$(($(date +%s%N) + 2500000000))
  while (($(date +%s%N) < deadline)) && alive "$bpid" && ! has_event "$d/events.json" failover; do
    sleep 0.05
  done
  if has_event "$d/events.json" failover || ! alive "$bpid"; then
    check_fail "ENGINE BUG: stray connection ($kind) to a backup holding a checkpoint made it fail over: $(jcheck field "$d/events.json" failover reason)"
    stray_ok=0
    break
  fi
  log "stray connection ($kind): backup still listening, no failover"
done
if [[ $stray_ok -eq 1 ]]; then
  # The real primary is still welcome afterwards.
  bg ppid "$T/stray-primary.log" "$ROMULUS" replicate --guest "$GUEST" --to "127.0.0.1:$port" \
    --insecure --interval 20ms --epochs 20 --stats-json "$d/stats.json"
  wait_exit "$ppid" 30
  [[ $EXIT_CODE -eq 0 ]] || check_fail "stray: the real primary exited $EXIT_CODE"
  wait_exit "$bpid" 10
  out=$(jcheck join "$d/stats.json" "$d/events.json" --min-acked 20 --require-stop) || check_fail "stray: $out"
else
  kill9 "$bpid"
fi
assert_no_crash "$T/stray-backup.log"

# Same over TLS with a properly authenticated peer whose HELLO is refused (a
# different guest: 32M instead of the 16M the image holds). The refusal must
# be logged on both ends and the backup must keep its checkpoint and keep
# listening, not activate the old guest. (Same KNOWN ENGINE BUG: a refused
# session counts as "primary lost" and, after the grace period, fails over.)
d="$T/refused"
mkdir -p "$d"
port=$(free_port)
start_backup bpid "$T/refused-backup.log" --listen "127.0.0.1:$port" --psk-file "$T/key" \
  --image "$T/wrongkey/img" --events-json "$d/events.json" --failover-timeout 1s
bg ppid "$T/refused-primary.log" "$ROMULUS" replicate --guest "sim:size=32M,workload=hotset" \
  --to "127.0.0.1:$port" --psk-file "$T/key" --interval 20ms --epochs 20
wait_until 15 "the refused primary logs the refusal" grep -q "backup refused the session" "$T/refused-primary.log"
kill9 "$ppid"
log "refused HELLO, primary: $(grep -m1 "backup refused the session" "$T/refused-primary.log" | cut -c1-250)"
assert_grep "$T/refused-backup.log" "refus" "refused HELLO: backup logs the refusal"
deadline=$(($(date +%s%N) + 2500000000))
while (($(date +%s%N) < deadline)) && alive "$bpid" && ! has_event "$d/events.json" failover; do
  sleep 0.05
done
if has_event "$d/events.json" failover || ! alive "$bpid"; then
  check_fail "ENGINE BUG: a refused HELLO (different guest) made the backup fail over: $(jcheck field "$d/events.json" failover reason)"
else
  log "refused HELLO: backup still listening, no failover"
  kill -TERM "$bpid" 2>/dev/null
  wait_exit "$bpid" 10
fi
kill9 "$bpid"
assert_no_crash "$T/refused-backup.log" "$T/refused-primary.log"

# ---- and the other way round: a TLS primary against a plaintext backup ----
d="$T/tls-vs-plain"
mkdir -p "$d"
port=$(free_port)
start_backup bpid "$T/tlsplain-backup.log" --listen "127.0.0.1:$port" --insecure \
  --image "$d/img" --events-json "$d/events.json"
bg ppid "$T/tlsplain-primary.log" "$ROMULUS" replicate --guest "$GUEST" --to "127.0.0.1:$port" \
  --psk-file "$T/key" --interval 20ms --epochs 20
wait_until 15 "plaintext backup's log reports the TLS peer" grep -q "peer speaks TLS" "$T/tlsplain-backup.log"
wait_until 15 "TLS primary's log reports the refusal" grep -q "UNPROTECTED: no backup" "$T/tlsplain-primary.log"
kill9 "$ppid"
log "TLS vs plaintext, backup:  $(grep -m1 "peer speaks TLS" "$T/tlsplain-backup.log")"
log "TLS vs plaintext, primary: $(grep -m1 "UNPROTECTED: no backup" "$T/tlsplain-primary.log")"
has_event "$d/events.json" commit && check_fail "TLS vs plaintext: the backup committed something"
alive "$bpid" || check_fail "TLS vs plaintext: the backup died"
kill -TERM "$bpid" 2>/dev/null
wait_exit "$bpid" 10
assert_no_crash "$T/tlsplain-backup.log" "$T/tlsplain-primary.log"

finish
