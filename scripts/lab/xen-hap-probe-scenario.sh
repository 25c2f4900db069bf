#!/bin/sh
#@ title: probe of TCG's nested-paging artefact: PVH guests booted, run and live-migrated in turn, triple faults counted
#@ guests: pvh hvm
#@ gate: no — a measurement: its figures are the result
# Scenario "hap-probe-scenario": not discovered (no "#@ runs:" line), run it by name, e.g.
#   scripts/xen-lab --xen-version 4.20 --guest pvh --scenario scripts/lab/xen-hap-probe-scenario.sh
# (no --romulus needed). It measures how often a guest on nested paging (HAP, on TCG's
# emulated SVM/NPT) dies by itself, the artefact that keeps the 4.20 boot out of CI
# (docs/XEN-420.md "What is left" 2, "Outer QEMU"): LAB_PROBE_GUESTS (default 8) guests, one
# at a time, each
#  1. created ($LAB_GUEST_MEM MiB, 1 vCPU) and waited for until it counts to 3 (boot);
#  2. left running LAB_PROBE_RUN_S (default 20) seconds (it dirties 4 MiB a second);
#  3. with LAB_PROBE_MIGRATE=1 (default), live-migrated to this host (`xl migrate -s ""`: the
#     log-dirty rounds that the checkpointing scenarios also drive) and waited for until the
#     copy counts on;
#  4. destroyed.
# A guest that stops counting is dead; Xen's ring (`xl dmesg -c`) is read after each guest for
# "Triple fault" lines. Figures: LAB-FIGURE hap-probe-scenario guests=N booted=N ran=N
# migrated=N dead=N triple_faults=N boot_s_median=S. Exit 0 when no guest died, 1 otherwise
# (it does not gate the lab: "#@ gate: no").
. /lab/dom0-lib.sh
W=$LAB_WORK
N=${LAB_PROBE_GUESTS:-8}
RUN_S=${LAB_PROBE_RUN_S:-20}
MIGRATE=${LAB_PROBE_MIGRATE:-1}
cleanup() { lab_destroy_all; }
trap cleanup EXIT

xl dmesg -c >/dev/null 2>&1
booted=0; ran=0; migrated=0; dead=0; tf=0; boots=""
i=1
while [ "$i" -le "$N" ]; do
  g=probe$i
  rm -f "$(lab_console "$g")" "$(lab_console "$g--incoming")"
  T0=$(lab_now)
  if ! lab_guest_create "$g" "$LAB_GUEST_MEM" 1 >"$W/domid" 2>"$W/create.err"; then
    cat "$W/create.err"; lab_note "$g: xl create failed"; dead=$((dead + 1))
  else
    C=$(lab_console "$g")
    what=""
    if lab_wait_counter "$C" 3 240; then
      booted=$((booted + 1)); bs=$(lab_elapsed "$T0"); boots="$boots $bs"; lab_note "$g: counting ${bs} s after xl create"
      at=$(lab_counter_last "$C")
      sleep "$RUN_S"
      if lab_wait_counter "$C" $((at + 2)) 30; then
        ran=$((ran + 1))
        if [ "$MIGRATE" = 1 ]; then
          T1=$(lab_now); mark=$(lab_lines "$C"); from=$(lab_counter_last "$C")
          if timeout 300 xl migrate -s "" "$g" "xl migrate-receive" >"$W/migrate-$g.log" 2>&1; then
            # the copy's console goes to either log (LAB-NOTES pitfall 9): it must count past
            # where the original was when the migration began
            m=0; k=0
            while [ $k -lt 150 ]; do
              lab_replica_console "$g" "$mark" "$W/copy-$g.txt"
              [ "$(lab_counter_last "$W/copy-$g.txt")" -gt $((from + 1)) ] && { m=1; break; }
              k=$((k + 1)); sleep 0.2
            done
            if [ $m = 1 ]; then migrated=$((migrated + 1)); lab_note "$g: migrated in $(lab_elapsed "$T1") s"
            else what="stopped counting after its migration"; fi
          else
            tail -n 5 "$W/migrate-$g.log"; what="xl migrate failed"
          fi
        fi
      else
        what="stopped counting while running (at $(lab_counter_last "$C"))"
      fi
    else
      what="never counted to 3 (boot)"
    fi
    [ -z "$what" ] || { dead=$((dead + 1)); lab_note "$g: $what; xl list: $(xl list 2>/dev/null | awk -v g="$g" '$1 ~ g {printf "%s %s; ", $1, $5}')"; }
  fi
  xl dmesg -c >"$W/dmesg-$g.txt" 2>&1
  n=$(grep -c 'Triple fault' "$W/dmesg-$g.txt")
  [ "$n" = 0 ] || { tf=$((tf + n)); grep -m3 'Triple fault' "$W/dmesg-$g.txt" | sed "s/^/LAB-NOTE $LAB_SCENARIO $g: /"; }
  lab_note "$g: done (${what:-ok}), triple faults so far $tf"
  lab_destroy_all
  i=$((i + 1))
done
# shellcheck disable=SC2086  # (one boot time a word)
med=$(printf '%s\n' $boots | sort -n | awk '{a[NR] = $1} END { if (NR) print a[int((NR + 1) / 2)]; else print "-" }')
lab_figure "guests=$N booted=$booted ran=$ran migrated=$migrated dead=$dead triple_faults=$tf boot_s_median=$med run_s=$RUN_S migrate=$MIGRATE"
lab_summary "hap probe: $N guests, $booted booted, $ran ran ${RUN_S}s, $migrated migrated, $dead dead, $tf triple faults (boot median ${med}s)"
[ "$dead" = 0 ] && [ "$tf" = 0 ]
