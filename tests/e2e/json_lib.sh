#!/usr/bin/env bash
# e2e: scripts/lib/romulus-json.sh, the one reader of Romulus' JSON that the
# Xen lab's dom0 (busybox ash + awk) and these tests (bash + the host's awk)
# share.
#   1. fixed lines, under every shell/awk pair present (bash + awk, busybox sh
#      + busybox awk = what dom0 runs): values, nesting, escapes, missing
#      members, lines that do not parse (torn by a crash) skipped, a bounded
#      wait that gives up;
#   2. a real pair (simulated guest over TLS): events and `ctl --json` answers
#      read by the library agree with python's json module (check.py), and
#      `ctl wait` through rj_ctl_wait returns the event the file holds.
source "$(dirname "$0")/lib/common.sh"
e2e_init "$@"

lib=$E2E_LIB/../../../scripts/lib/romulus-json.sh
[[ -f $lib ]] || fail "no $lib"

# ---- 1. fixed lines
ev=$T/fixed-events.json
cat >"$ev" <<'EOF'
{"event":"session_start","peer":"127.0.0.1:4000","time_ms":1000,"seq":1,"role":"backup"}
{"event":"commit","epoch":1,"digest":"00ff","time_ms":1001,"seq":2,"role":"backup"}
{"event":"commit","epoch":2,"digest":"01ff","time_ms":1002,"seq":3,"role":"backup"}
{"event":"commit","epoch":3,"dig
{"event":"decision","decision":"hold","why":"a \"quoted\" reason\\with a backslash, \u0041 and a tab\tend","time_ms":1003,"seq":4,"role":"backup"}
not json at all
{"event":"commit","epoch":10,"digest":"0aff","time_ms":1004,"seq":5,"role":"backup"}
{"event":"failover","reason":"silence: no heartbeat for 2s","last_committed_epoch":10,"digest":"0aff","activated":true,"time_ms":1005,"seq":6,"role":"backup"}
EOF
status_json='{"ok":true,"role":"primary","guest":"sim:size=64M","last":{"epoch":7,"acked":true,"sizes":[1,2,{"x":null}]},"unprotected_reason":null,"paused":false,"neg":-1.5e3,"empty":{},"list":[]}'

# The cases: "expected<TAB>shell code"; "!N" as expected means exit status N
# and no output.
cases=$T/cases.txt
cat >"$cases" <<EOF
primary	rj_get '$status_json' role
7	rj_get '$status_json' last.epoch
true	rj_get '$status_json' last.acked
2	rj_get '$status_json' last.sizes.1
null	rj_get '$status_json' last.sizes.2.x
null	rj_get '$status_json' unprotected_reason
false	rj_get '$status_json' paused
-1.5e3	rj_get '$status_json' neg
{}	rj_get '$status_json' empty
[]	rj_get '$status_json' list
[1,2,{"x":null}]	rj_get '$status_json' last.sizes
!1	rj_get '$status_json' nope
!1	rj_get '$status_json' last.sizes.3
!1	rj_get '{"a":1' a
!1	rj_get '{"a":1} x' a
!1	rj_get '' a
3	rj_event_count $ev commit
1	rj_event_count $ev commit 3
0	rj_event_count $ev stop
0	rj_event_count $T/no-such-file commit
10	rj_get "\$(rj_last_event $ev commit)" epoch
1	rj_get "\$(rj_first_event $ev commit)" epoch
10	rj_get "\$(rj_first_event $ev commit 3)" epoch
!1	rj_last_event $ev stop
6	rj_last_seq $ev
0	rj_last_seq $T/no-such-file
10	rj_max $ev epoch
2	rj_max $ev epoch digest 01ff
a "quoted" reason\\with a backslash, A and a tab	end	rj_get "\$(rj_last_event $ev decision)" why
true	rj_get "\$(rj_wait_event $ev failover 1)" activated
!1	rj_wait_event $ev stop 1
2	rj_count $ev digest 0aff
7	rj_last_acked $T/fixed-stats.json
6,,1|7,,1	rj_csv $T/fixed-stats.json acked true epoch nope 1 | paste -sd'|'
6|7|8|	rj_csv $T/fixed-stats.json '' '' epoch | paste -sd'|'
seq 6 failover reason=silence: no heartbeat for 2s last_committed_epoch=10 digest=0aff activated=true	rj_evidence $ev 1
EOF
printf '%s\n' '{"epoch":6,"acked":true,"1":1}' '{"epoch":7,"acked":true,"1":1}' '{"epoch":8,"acked":false}' \
  '{"totals":true,"epochs":8}' >"$T/fixed-stats.json"

# run_cases SHELL: every case under SHELL (which sources the library), one
# report line per mismatch.
run_cases() {
  local sh=$1 n=0 bad=0 want code got rc
  while IFS=$'\t' read -r want code; do
    # the expected text of the decision case holds a tab: the last field is the code
    if [[ $code == *$'\t'* ]]; then want="$want"$'\t'"${code%%$'\t'*}"; code=${code#*$'\t'}; fi
    n=$((n + 1))
    got=$($sh -c ". '$lib'; $code" 2>&1); rc=$?
    if [[ $want == '!'* ]]; then
      [[ $rc -eq ${want#!} && -z $got ]] && continue
    else
      [[ $rc -eq 0 && $got == "$want" ]] && continue
    fi
    bad=$((bad + 1))
    check_fail "[$sh] $code: want '$want', got '$got' (status $rc)"
  done <"$cases"
  log "[$sh] $n cases, $bad failed"
}
run_cases bash
run_cases sh
if command -v busybox >/dev/null && busybox awk 'BEGIN{}' 2>/dev/null; then
  # dom0's pair: busybox ash, and busybox's own awk (its applets come first in
  # ash when PATH names a directory of busybox links)
  bb=$T/bb; mkdir -p "$bb"
  for a in sh awk grep head tail cat sleep rm; do ln -sf "$(command -v busybox)" "$bb/$a"; done
  PATH=$bb:$PATH run_cases "$bb/sh"
  out=$(PATH=$bb:$PATH "$bb/sh" -c 'awk --version' 2>&1)
  [[ $out == *BusyBox* ]] || check_fail "the busybox run did not use busybox awk: $out"
else
  log "no busybox on this host: dom0's shell/awk pair not tried"
fi

# ---- 2. a real pair
make_key "$T/key"
port=$(free_port)
start_backup bpid "$T/backup.log" --listen "127.0.0.1:$port" --psk-file "$T/key" --image "$T/img" \
  --events-json "$T/events.json" --control-socket "$T/b.sock"
bg ppid "$T/primary.log" "$ROMULUS" replicate --guest "sim:size=32M,workload=hotset" --to "127.0.0.1:$port" \
  --psk-file "$T/key" --interval 20ms --stats-json "$T/stats.json" --control-socket "$T/p.sock" \
  --events-json "$T/pevents.json"
rj_wait_ctl "$T/p.sock" 30 || fail "the primary's control socket does not answer: $RJ_ERROR"
rj_wait_ctl "$T/b.sock" 30 || fail "the backup's control socket does not answer: $RJ_ERROR"
# ctl wait blocks in the daemon until the primary is protected
pe=$(rj_ctl_wait "$T/p.sock" protected 60) || fail "rj_ctl_wait protected: $RJ_REPLY $RJ_ERROR"
[[ $(rj_get "$pe" event) == protected && $(rj_get "$pe" role) == primary ]] || check_fail "ctl wait answer: $pe"
# the same event in the file (written before ctl wait can answer it)
fe=$(rj_wait_event "$T/pevents.json" protected 10) || fail "no protected event in the primary's file"
[[ $(rj_get "$fe" seq) == $(rj_get "$pe" seq) && $(rj_get "$fe" epoch) == $(rj_get "$pe" epoch) ]] ||
  check_fail "ctl wait and the events file disagree: $pe / $fe"
[[ $(rj_status "$T/p.sock" protection) == PROTECTED ]] || check_fail "rj_status protection: $RJ_REPLY"
[[ $(rj_status "$T/b.sock" role) == backup ]] || check_fail "rj_status role of the backup: $RJ_REPLY"
rj_status "$T/p.sock" no_such_member >/dev/null && check_fail "rj_status of a missing member succeeded"
# a malformed request is refused by ctl itself (exit 2, no answer line);
# a command the role does not have by the daemon (exit 1, ok:false)
rj_ctl "$T/p.sock" frobnicate >/dev/null
[[ $? -eq 2 && -z $RJ_REPLY && $RJ_ERROR == *frobnicate* ]] || check_fail "rj_ctl of a bad request: '$RJ_REPLY' '$RJ_ERROR'"
rj_ctl "$T/p.sock" failover >/dev/null
[[ $? -eq 1 && $(rj_get "$RJ_REPLY" ok) == false && $(rj_get "$RJ_REPLY" usage) == false ]] ||
  check_fail "rj_ctl failover on the primary: $RJ_REPLY"
# a wait that cannot be answered gives up within its bound
t0=$(date +%s)
rj_ctl_wait "$T/b.sock" failover 1 >/dev/null && check_fail "ctl wait failover answered while the primary lives"
(( $(date +%s) - t0 <= 10 )) || check_fail "ctl wait within 1s took $(( $(date +%s) - t0 )) s"
wait_until 60 "10 commits" commit_at_least "$T/events.json" 10
kill9 "$ppid"
fo=$(rj_wait_event "$T/events.json" failover 60) || fail "no failover after the primary was killed"
# against python's json (check.py)
for kind in commit session_start decision failover; do
  [[ $(rj_event_count "$T/events.json" $kind) == $(jcheck count "$T/events.json" $kind) ]] ||
    check_fail "count of $kind: library $(rj_event_count "$T/events.json" $kind), python $(jcheck count "$T/events.json" $kind)"
done
for f in last_committed_epoch digest reason activated; do
  [[ $(rj_get "$fo" $f) == "$(jcheck field "$T/events.json" failover $f)" ]] ||
    check_fail "failover $f: library '$(rj_get "$fo" $f)', python '$(jcheck field "$T/events.json" failover $f)'"
done
[[ $(rj_last_acked "$T/stats.json") == $(jcheck last-acked "$T/stats.json") ]] ||
  check_fail "last acked: library $(rj_last_acked "$T/stats.json"), python $(jcheck last-acked "$T/stats.json")"
[[ $(last_commit "$T/events.json") == $(jcheck last-commit "$T/events.json") ]] ||
  check_fail "last commit: library $(last_commit "$T/events.json"), python $(jcheck last-commit "$T/events.json")"
log "failover: $(rj_evidence "$T/events.json" 1)"
finish
