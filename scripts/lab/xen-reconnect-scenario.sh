#!/bin/sh
#@ title: the backup host restarts, stalls, runs out of memory under a running primary: reconnection, resync, held replica, failover
#@ runs: romulus
#@ guests: pv pvh
#@ order: 50
#@ skip-if: LAB_NO_RECONNECT
# Scenario "reconnect-scenario" (Xen lab dom0; scripts/xen-lab --romulus PATH): the backup host
# restarts under a running primary (docs/PROTOCOL.md §6, "Primary on peer death").
#  1. create guest4 (128 MiB PV counter guest), protect it: `romulus restore --xen` (backup A) and
#     `romulus replicate --domain guest4 --control-socket`; wait for 3 acked epochs;
#  2. SIGKILL backup A, leaving its paused replica behind: the primary must say the backup is
#     lost, keep the guest running UNPROTECTED (ctl status) and retry;
#     Before that the operator grew the page cache live (`ctl set cache-size 96M`);
#  3. start backup B on the same address (it destroys A's leftover replica itself), allowing at
#     most 64M of cache: the primary reconnects by
#     itself, is refused the 96M, falls back to its configured 64M (not stuck unprotected), and
#     the new session (a full resync, epochs continuing the numbering) is acked by B;
#     B keeps its replica of the last epoch as NAME--held until the new session commits, then
#     destroys it (docs/XEN-STREAM.md §4);
#  4. the primary host dies (SIGKILL + destroy): B fails over from an epoch of the new session,
#     and the guest counts on from its checkpointed value;
#  4b. guest6, protected by backup D (with a control socket; it first destroys a leftover
#     guest6--held, as a killed predecessor leaves it): D stalls past the primary's ack
#     timeout; its replica of the last epoch is kept as guest6--held for the resync. A paused
#     domain first uses up the free memory: D must refuse the session (ERROR resource, the
#     primary told why) and keep guest6--held. With the memory back, the primary dies while the
#     resync's first (whole-memory) epoch is streaming: D must hold (no automatic activation:
#     the primary ran unprotected in between), and `ctl failover` must resume the guest from
#     exactly the held epoch;
#  5. guest5, protected the same way, loses its backup and is then destroyed while unprotected:
#     the primary must stop retrying and exit with an error (nothing left to protect).
# Read from events and `ctl --json` (scripts/lib/romulus-json.sh): the primary's loss of its
# backup is its "unprotected" event ("backup lost ..."), the reconnection its next
# "protected", cache sizes and the backup's decision come from `ctl status`, epochs from the
# stats lines and failover events. No event says (so their log lines are read): the first
# epoch of a Xen primary's new session (no session_start from the Xen path yet: read from the
# event when there is one), the cache fallback, a backup reclaiming or keeping a replica
# (NAME--incoming/--held), a refusal for lack of memory, a primary exiting for a vanished domain.
. /lab/dom0-lib.sh
I=${LAB_INTERVAL_MS:-100}
PORT=${LAB_RECONNECT_PORT:-7500}
W=$LAB_WORK
G=guest4
timeout 10 romulus restore --help 2>&1 | grep -q -- '--xen' || lab_fail "/usr/bin/romulus has no Xen backend"
head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n' >"$W/psk"
chmod 600 "$W/psk"
acked() { rj_count "$W/stats.jsonl" acked true; }
last_acked() { rj_last_acked "$W/stats.jsonl"; }
# acked_at_least N STATS: N epochs of STATS acked
acked_at_least() { [ "$(rj_count "$2" acked true)" -ge "$1" ]; }
# lost_since EVENTS SEQ: the primary wrote an "unprotected" event after SEQ saying its backup
# is lost (an epoch not acked comes first, with its own reason)
lost_since() {
  rj_events "$1" unprotected "$2" | { while IFS= read -r _l; do
    case $(rj_get "$_l" reason) in "backup lost"*) exit 0 ;; esac; done; exit 1; }
}
# protected_since EVENTS SEQ: a "protected" event after SEQ (an ack after a time without)
protected_since() { rj_first_event "$1" protected "$2" >/dev/null; }
# status_is SOCKET MEMBER VALUE: `ctl status` answers MEMBER = VALUE
status_is() { [ "$(rj_status "$1" "$2")" = "$3" ]; }
# new_session_epoch EVENTS LOG: the first epoch of the primary's latest session: its
# session_start event, else (the Xen primary writes none yet) its "session from epoch N" line
new_session_epoch() {
  _e=$(rj_last_event "$1" session_start) && { rj_get "$_e" first_epoch; return; }
  sed -n 's/.*session from epoch \([0-9]*\).*/\1/p' "$2" | tail -n1
}
backup() {  # backup NAME [FLAG...]: a `romulus restore --xen` on $PORT, events in $W/events-NAME.jsonl
  _b=$1; shift
  romulus restore --xen --no-fence --listen "127.0.0.1:$PORT" --psk-file "$W/psk" --failover-timeout 2s --no-vifs \
    --events-json "$W/events-$_b.jsonl" "$@" >"$W/backup-$_b.log" 2>&1 &
  BP=$!
  lab_evidence "$W/backup-$_b.log" "$W/events-$_b.jsonl"
  lab_wait_listening "$W/backup-$_b.log" $BP
}
# wait_for SECONDS WHAT COMMAND...: until COMMAND succeeds, or fail with WHAT (the primary $RP,
# logging to $PLOG, alive)
PLOG=$W/primary.log
wait_for() {
  _t=$(lab_now); _s=$1; _what=$2; shift 2
  until "$@"; do
    kill -0 $RP 2>/dev/null || lab_fail "the primary exited while waiting: $_what"
    [ "$(lab_elapsed "$_t" | cut -d. -f1)" -lt "$_s" ] || lab_fail "$_what"
    sleep 0.2
  done
}

# ---- 1. protected
rm -f "$(lab_console $G)" "$(lab_console $G--incoming)"
lab_guest_create $G "$LAB_GUEST_MEM" 1 >"$W/domid" || lab_fail "xl create $G failed"
P=$(cat "$W/domid")
C=$(lab_console $G)
lab_wait_counter "$C" 3 90 || { tail -n 20 "$C"; lab_fail "$G never counted to 3"; }
backup a
PEV=$W/pevents.jsonl
lab_evidence "$PLOG" "$PEV"
romulus replicate --domain $G --to "127.0.0.1:$PORT" --psk-file "$W/psk" --interval "${I}ms" \
  --ack-timeout 15s --stats-json "$W/stats.jsonl" --control-socket "$W/ctl.sock" --events-json "$PEV" \
  >"$W/primary.log" 2>&1 &
RP=$!
wait_for 600 "no 3 acked epochs with backup A" acked_at_least 3 "$W/stats.jsonl"
rj_ctl "$W/ctl.sock" set cache-size 96M >/dev/null || lab_fail "ctl set cache-size 96M: $RJ_REPLY $RJ_ERROR"
# status' cache_size is the size in use: 96M once the resize's epoch has begun
wait_for 300 "the 96M cache was never applied" status_is "$W/ctl.sock" cache_size 100663296

# ---- 2. backup A dies (SIGKILL): its paused replica $G--incoming is left behind; backup B,
# started on the same host, must reclaim the name and destroy that leftover itself.
kill -9 $BP; wait $BP 2>/dev/null
xl list "$G--incoming" >/dev/null 2>&1 || lab_fail "backup A left no replica behind (the step tests its cleanup)"
wait_for 120 "the primary did not notice the lost backup (no unprotected event: backup lost)" lost_since "$PEV" 0
LOST_SEQ=$(rj_last_seq "$PEV")
LOST_AT=$(last_acked)
rj_ctl "$W/ctl.sock" status >/dev/null || lab_fail "ctl status while unprotected: $RJ_ERROR"
[ "$(rj_get "$RJ_REPLY" protection)" = UNPROTECTED ] || lab_fail "status after the loss does not say UNPROTECTED: $RJ_REPLY"
CTR=$(lab_counter_last "$C")
lab_wait_counter "$C" $((CTR + 2)) 60 || lab_fail "$G stopped running after its backup was lost"

# ---- 3. backup B: the primary reconnects on its own
backup b --max-cache-size 64M
# reconnected: protected again (the new session's first epoch, the whole memory, acked)
wait_for 600 "the primary did not reconnect to backup B (no protected event after the loss)" protected_since "$PEV" "$LOST_SEQ"
grep -q 'retrying with the configured cache of 64 MiB' "$W/primary.log" || lab_fail "no fallback to the configured cache"
FIRST_B=$(new_session_epoch "$PEV" "$W/primary.log")
# B reclaims the name when the new session's domain record arrives (its first epoch).
wait_for 300 "backup B did not reclaim the replica backup A left" \
  grep -q "left by a stopped predecessor exists: destroying it" "$W/backup-b.log"
[ "$(xl list 2>/dev/null | grep -c "^$G--incoming ")" -eq 1 ] ||
  lab_fail "more than one $G--incoming domain after backup B started: $(xl list 2>&1 | grep incoming)"
[ -n "$FIRST_B" ] && [ "$FIRST_B" -gt "$LOST_AT" ] || lab_fail "the new session starts at epoch '$FIRST_B', not after $LOST_AT"
b_acked() { [ "$(last_acked)" -ge $((FIRST_B + 2)) ]; }
wait_for 600 "no epochs of the new session acked by backup B" b_acked
[ "$(rj_event_count "$W/events-b.jsonl" commit)" -gt 0 ] || lab_fail "backup B committed nothing"
rj_ctl "$W/ctl.sock" status >/dev/null
[ "$(rj_get "$RJ_REPLY" protection)" = PROTECTED ] || lab_fail "status after the reconnection: $RJ_REPLY"
[ "$(rj_get "$RJ_REPLY" cache_size)" = 67108864 ] || lab_fail "the cache after the fallback is not 64M: $RJ_REPLY"
lab_note "backup A killed after epoch $LOST_AT (cache set live to 96M); primary reconnected to B (max 64M): session from epoch $FIRST_B with the configured 64M cache, $(acked) epochs acked in all"

# ---- 3b. backup B stalls (SIGSTOP) past the primary's ack timeout, then continues: the
# primary gives up on it and reconnects; B must never unpause its replica while the primary
# runs (docs/FAILURE-MODEL.md §3), and must take the new session.
S0=$(rj_last_seq "$PEV")
kill -STOP $BP
wait_for 120 "the primary did not give up on the stopped backup B" lost_since "$PEV" "$S0"
LOST_SEQ=$(rj_last_seq "$PEV")
sleep 2  # the stall goes on a little after the primary gave up
kill -CONT $BP
STALL_AT=$(last_acked)
wait_for 600 "the primary did not reconnect to B after its stall (no protected event)" protected_since "$PEV" "$LOST_SEQ"
stall_acked() { [ "$(last_acked)" -gt $((STALL_AT + 2)) ]; }
wait_for 600 "no epoch acked by B after its stall" stall_acked
[ "$(rj_event_count "$W/events-b.jsonl" failover)" -eq 0 ] || lab_fail "backup B FAILED OVER after its stall while the primary ran"
xl list "$G--incoming" 2>/dev/null | awk 'NR==2 {print $5}' | grep -q p ||
  lab_fail "B's replica is not paused after the stall: $(xl list "$G--incoming" 2>&1 | tail -n1)"
kill -0 $BP 2>/dev/null || lab_fail "backup B died after its stall"
# The resync needs a new replica; until its first epoch committed, B kept the old one (EOF
# applied: it holds B's last epoch) as $G--held, and destroyed it once the new session committed.
HELD_B=$(sed -n "s/.*as the held replica $G--held (epoch \([0-9]*\)).*/\1/p" "$W/backup-b.log" | tail -n1)
[ -n "$HELD_B" ] || lab_fail "B did not keep its replica as $G--held during the resync"
grep -q "destroying the held replica $G--held (domid [0-9]*, epoch $HELD_B)" "$W/backup-b.log" ||
  lab_fail "B did not destroy the held replica (epoch $HELD_B) after the new session committed"
xl list "$G--held" >/dev/null 2>&1 && lab_fail "$G--held still exists after the new session committed"
lab_note "backup B SIGSTOPped past the ack timeout at epoch $STALL_AT: the primary reconnected, B acked again, its replica stayed paused, no failover; epoch $HELD_B held as $G--held until the new session committed"

# ---- 4. the primary host dies: B takes over
LAST_PRIMARY=$(lab_counter_last "$C")
kill -9 $RP; wait $RP 2>/dev/null
TK=$(lab_now)
xl destroy "$P" >/dev/null 2>&1
CN=$(lab_lines "$C")
LAST_ACKED=$(last_acked)
lab_wait_failover "$W/events-b.jsonl" "$W/backup-b.log"
FO_EPOCH=$(rj_get "$LAB_FO" last_committed_epoch)
# The backup may hold one epoch more than the primary saw acked (the ack was on its way).
[ "$FO_EPOCH" -ge "$LAST_ACKED" ] && [ "$FO_EPOCH" -le $((LAST_ACKED + 1)) ] ||
  lab_fail "backup B resumed from epoch $FO_EPOCH; the primary's last acked was $LAST_ACKED"
CB=$W/backup-console.log
lab_wait_resumed $G "$C" "$CN" "$TK" "$CB" "$W/backup-b.log"
FIRST=$(lab_counter_first "$CB")
[ "$FIRST" -gt 1 ] || lab_fail "the resumed guest restarted its counter ($FIRST)"
lab_note "primary killed (last acked epoch $LAST_ACKED, counter $LAST_PRIMARY); backup B resumed from epoch $FO_EPOCH, counter $FIRST.. after $(lab_elapsed "$TK")s"
lab_figure "tool=romulus lost_after_epoch=$LOST_AT reconnect_first_epoch=$FIRST_B resumed_epoch=$FO_EPOCH"
lab_summary "backup restart: reconnected from epoch $FIRST_B, failover from $FO_EPOCH"
kill $BP 2>/dev/null; wait $BP 2>/dev/null
xl destroy "$G" >/dev/null 2>&1  # the failed-over copy: its CPU and memory go to the next steps

# ---- 4b. the primary dies during a resync's first sync: the backup holds its held replica
G=guest6
T4B=$(lab_now)
rm -f "$(lab_console $G)" "$(lab_console $G--incoming)" "$(lab_console $G--held)"
lab_guest_create $G "$LAB_GUEST_MEM" 1 >"$W/domid6" || lab_fail "xl create $G failed"
P=$(cat "$W/domid6")
C=$(lab_console $G)
lab_wait_counter "$C" 3 90 || { tail -n 20 "$C"; lab_fail "$G never counted to 3"; }
PORT6=$((PORT + 2))
# A leftover under the held name, as a backup killed during a resync leaves it (made here by xl,
# paused): D owns NAME--incoming and NAME--held through its name lock and must destroy it when it
# builds its first replica.
xl create -p "$(lab_guest_cfg $G--held "$LAB_GUEST_MEM")" >"$W/create-leftover.log" 2>&1 ||
  { cat "$W/create-leftover.log"; lab_fail "could not create a leftover $G--held"; }
romulus restore --xen --no-fence --listen "127.0.0.1:$PORT6" --psk-file "$W/psk" --failover-timeout 2s --no-vifs \
  --events-json "$W/events-d.jsonl" --control-socket "$W/ctl-d.sock" >"$W/backup-d.log" 2>&1 &
DP=$!
LAB_EVIDENCE=""
lab_evidence "$W/backup-d.log" "$W/events-d.jsonl"
lab_wait_listening "$W/backup-d.log" $DP
PLOG=$W/primary6.log
PEV6=$W/pevents6.jsonl
lab_evidence "$PLOG" "$PEV6"
# A short ack timeout: the primary gives up on the stopped backup quickly.
romulus replicate --domain $G --to "127.0.0.1:$PORT6" --psk-file "$W/psk" --interval "${I}ms" \
  --ack-timeout 3s --stats-json "$W/stats6.jsonl" --events-json "$PEV6" >"$PLOG" 2>&1 &
RP=$!
wait_for 600 "no 3 acked epochs of $G" acked_at_least 3 "$W/stats6.jsonl"
ACKED6=$(rj_last_acked "$W/stats6.jsonl")
T4B_SYNC=$(lab_elapsed "$T4B")
grep -q "a replica domain $G--held (domid [0-9]*) left by a stopped predecessor exists: destroying it" "$W/backup-d.log" ||
  lab_fail "backup D did not reclaim the leftover $G--held"
xl list "$G--held" >/dev/null 2>&1 && lab_fail "the leftover $G--held still exists after D's first epochs"
kill -STOP $DP
wait_for 120 "the primary of $G did not give up on the stopped backup D" lost_since "$PEV6" 0
# Every epoch D can hold was captured before the primary gave up on it: the held checkpoint's
# counter is at most what the guest showed by now.
CTR_LOST=$(lab_counter_last "$C")
# A resync needs room for two copies of the guest on the backup host (the held replica and the
# new one). Take that room away first: a paused domain holding all but 64 MiB of the free memory.
FREE=$(xl info | sed -n 's/^free_memory *: *//p')
xl create -p "$(lab_guest_cfg memhog $((FREE - 64)))" >"$W/create-memhog.log" 2>&1 ||
  { cat "$W/create-memhog.log"; lab_fail "could not create a paused $((FREE - 64)) MiB domain to use up the free memory"; }
kill -CONT $DP
CTLD=$W/ctl-d.sock
# D keeps its replica as $G--held as soon as the primary's new session begins, then finds no room
# for the new replica: it must refuse the session as its own resource failure (the primary is
# told why and retries), and keep the held replica.
wait_for 300 "backup D did not refuse the new replica for lack of memory" \
  grep -q 'not enough free hypervisor memory for a replica' "$W/backup-d.log"
HELD=$(sed -n "s/.*as the held replica $G--held (epoch \([0-9]*\)).*/\1/p" "$W/backup-d.log" | tail -n1)
[ -n "$HELD" ] || lab_fail "D did not keep its replica as $G--held for the resync"
grep -q "held replica $G--held (epoch $HELD) is kept" "$W/backup-d.log" ||
  lab_fail "D's refusal does not say it keeps the held replica"
wait_for 120 "the primary of $G was not told why the backup refused" \
  grep -q 'resource.*not enough free hypervisor memory' "$PLOG"
xl list "$G--held" 2>/dev/null | awk 'NR==2 {print $5}' | grep -q p ||
  lab_fail "no paused $G--held after the refusal: $(xl list 2>&1 | grep "$G")"
rj_ctl "$CTLD" status >/dev/null || lab_fail "ctl status of backup D: $RJ_ERROR"
[ "$(rj_get "$RJ_REPLY" epoch)" = "$HELD" ] || lab_fail "backup D keeps epoch $HELD but reports: $RJ_REPLY"
[ "$(rj_event_count "$W/events-d.jsonl" failover)" -eq 0 ] || lab_fail "backup D activated after refusing a session"
lab_note "$G: backup D stalled after epoch $ACKED6 acked; the resync found no room for a second copy: session refused ($(grep -m1 -o 'not enough free hypervisor memory[^;]*' "$W/backup-d.log")), epoch $HELD kept as $G--held"
# Room again: the primary's next retry builds the new replica, whose first epoch streams the
# whole memory (seconds under TCG). Kill the primary as soon as that replica exists: the host
# of the primary dies in the middle of the resync.
CREATED=$(grep -c "created replica domain $G--incoming" "$W/backup-d.log")
xl destroy memhog >/dev/null 2>&1 || lab_fail "xl destroy memhog"
TH=$(lab_now)
until [ "$(grep -c "created replica domain $G--incoming" "$W/backup-d.log")" -gt "$CREATED" ]; do
  kill -0 $RP 2>/dev/null || lab_fail "the primary of $G exited before the resync began"
  kill -0 $DP 2>/dev/null || lab_fail "backup D exited after its stall"
  [ "$(lab_elapsed "$TH" | cut -d. -f1)" -lt 300 ] ||
    lab_fail "backup D built no new replica within 300 s of the memory coming back"
  sleep 0.1
done
CTR_HELD=$(lab_counter_last "$C")
kill -9 $RP; wait $RP 2>/dev/null
HELD_S=$(lab_elapsed "$TH")
xl destroy "$P" >/dev/null 2>&1
NEW_FIRST=$(new_session_epoch "$PEV6" "$PLOG")
# D must end the session (the connection died with the primary) and hold.
TD=$(lab_now)
until status_is "$CTLD" decision hold; do
  if grep -q "destroying the held replica $G--held" "$W/backup-d.log" || [ "$(rj_event_count "$W/events-d.jsonl" failover)" -gt 0 ]; then
    lab_fail "the primary was killed too late: the new session committed its first epoch before it died (the provocation missed; rerun)"
  fi
  [ "$(lab_elapsed "$TD" | cut -d. -f1)" -lt 60 ] || lab_fail "backup D does not hold after the primary died mid-resync: $RJ_REPLY"
  sleep 0.2
done
# Hold means hold: give the judge more than its failover timeout (2 s of running time) to
# get it wrong, then look again.
sleep 5
rj_ctl "$CTLD" status >/dev/null || lab_fail "ctl status of backup D: $RJ_ERROR"
[ "$(rj_get "$RJ_REPLY" decision)" = hold ] || lab_fail "backup D stopped holding: $RJ_REPLY"
[ "$(rj_event_count "$W/events-d.jsonl" failover)" -eq 0 ] || lab_fail "backup D activated on its own after the primary died mid-resync"
grep -q "destroying the held replica $G--held" "$W/backup-d.log" &&
  lab_fail "the new session committed before the primary died (the provocation missed; rerun)"
[ -n "$HELD" ] && [ "$(rj_get "$RJ_REPLY" epoch)" = "$HELD" ] || lab_fail "backup D holds epoch $HELD but reports: $RJ_REPLY"
[ "$HELD" -ge "$ACKED6" ] && [ -n "$NEW_FIRST" ] && [ "$HELD" -lt "$NEW_FIRST" ] ||
  lab_fail "held epoch '$HELD' is not between the last acked before the stall ($ACKED6) and the new session ($NEW_FIRST)"
xl list "$G--held" 2>/dev/null | awk 'NR==2 {print $5}' | grep -q p ||
  lab_fail "no paused $G--held while D holds: $(xl list 2>&1 | grep "$G")"
# The operator's word activates the held checkpoint.
rj_ctl "$CTLD" failover >/dev/null || lab_fail "ctl failover on backup D: $RJ_REPLY $RJ_ERROR"
[ "$(rj_get "$RJ_REPLY" activated)" = true ] && [ "$(rj_get "$RJ_REPLY" epoch)" = "$HELD" ] || lab_fail "ctl failover: $RJ_REPLY"
lab_wait_failover "$W/events-d.jsonl" "$W/backup-d.log"
[ "$(rj_get "$LAB_FO" last_committed_epoch)" = "$HELD" ] || lab_fail "D activated epoch $(rj_get "$LAB_FO" last_committed_epoch), not the held $HELD"
# Its console: xenconsoled names the log after the name at activation ($G--incoming, the held
# replica takes it back); $G--held's and the dead primary's later lines are looked at too.
CB=$W/backup6-console.log
CN=$(lab_lines "$C")
TR=$(lab_now)
until { cat "$(lab_console $G--incoming)" "$(lab_console $G--held)" 2>/dev/null; tail -n +$((CN + 1)) "$C"; } >"$CB"
      [ "$(lab_counter_last "$CB")" -ge 2 ] 2>/dev/null; do
  [ "$(lab_elapsed "$TR" | cut -d. -f1)" -lt 300 ] || { xl list; lab_fail "$G: the guest resumed from the held replica does not count"; }
  sleep 0.2
done
FIRST=$(lab_counter_first "$CB")
# The held checkpoint predates the primary giving up on D: the guest counts on from a value it
# had shown by then (+1 for the line it was printing, +1 for the console's lag), never from 1,
# and not from the state it reached while unprotected afterwards.
[ "$FIRST" -gt 1 ] && [ "$FIRST" -le $((CTR_LOST + 2)) ] ||
  lab_fail "the guest resumed from the held replica counts from $FIRST (the primary showed $CTR_LOST when it gave up on D, $CTR_HELD at its death)"
[ "$(xl list 2>/dev/null | grep -c "^$G")" -eq 1 ] ||
  lab_fail "more than the activated $G is left (the half-built replica must go): $(xl list 2>&1 | grep "$G")"
lab_note "$G: with room again, D built the new replica $HELD_S s later (session from epoch $NEW_FIRST) and the primary was killed at once; D held epoch $HELD, then ctl failover resumed it, counter $FIRST.. (the primary showed $CTR_LOST when it gave up on D, $CTR_HELD at its death)"
lab_note "step 4b took $(lab_elapsed "$T4B")s ($T4B_SYNC s to boot $G and ack 3 epochs)"
lab_figure "tool=romulus held_epoch=$HELD held_resumed_counter=$FIRST"
kill $DP 2>/dev/null; wait $DP 2>/dev/null
xl destroy "$G" >/dev/null 2>&1
PLOG=$W/primary.log

# ---- 5. a domain destroyed while its primary looks for a backup
G=guest5
rm -f "$(lab_console $G)"
lab_guest_create $G "$LAB_GUEST_MEM" 1 >"$W/domid5" || lab_fail "xl create $G failed"
P=$(cat "$W/domid5")
lab_wait_counter "$(lab_console $G)" 3 90 || lab_fail "$G never counted to 3"
PORT=$((PORT + 1))
backup c
PLOG=$W/primary5.log
PEV5=$W/pevents5.jsonl
lab_evidence "$PLOG" "$PEV5"
romulus replicate --domain $G --to "127.0.0.1:$PORT" --psk-file "$W/psk" --interval "${I}ms" \
  --ack-timeout 15s --stats-json "$W/stats5.jsonl" --events-json "$PEV5" >"$PLOG" 2>&1 &
RP=$!
wait_for 600 "no acked epoch for $G" acked_at_least 1 "$W/stats5.jsonl"
kill -9 $BP; wait $BP 2>/dev/null
xl destroy "$G--incoming" >/dev/null 2>&1
wait_for 120 "the primary of $G did not notice the lost backup" lost_since "$PEV5" 0
xl destroy "$P" >/dev/null 2>&1
TD=$(lab_now)
lab_wait_exit $RP 60 "the primary kept looking for a backup for a destroyed domain"
RC=$LAB_RC
[ "$RC" -ne 0 ] && grep -q 'went away while unprotected' "$PLOG" ||
  lab_fail "the primary of the destroyed $G exited $RC without saying why"
lab_note "$G destroyed while unprotected: its primary exited $RC after $(lab_elapsed "$TD")s ($(grep -m1 'went away' "$PLOG" | cut -c1-80))"
exit 0
