#!/bin/sh
#@ title: without shadow paging a PV guest is refused at start, with the reason, and keeps running untouched
#@ runs: romulus
#@ guests: pvh
#@ order: 15
#@ skip-if: LAB_NO_GUEST_TYPES
# Scenario "guest-types-scenario" (the PVH boot, on Debian's stock hypervisor package, which
# has no shadow paging: `xl info` virt_caps without "shadow"):
#  1. romulus names what this host can protect (its probe line: "protects: pvh");
#  2. create a PV counter guest ($LAB_GUEST_MEM MiB like the other scenarios; 64 MiB is too little for the kernel's segment), wait until it counts;
#  3. `romulus replicate --domain pvguest` must exit non-zero at once with the reason
#     ("no shadow paging") before any connection or save: it never suspends the guest and
#     never turns log-dirty on;
#  4. the guest keeps counting and is neither paused nor suspended.
# On a hypervisor with shadow paging there is nothing to refuse: the scenario says so and
# passes without steps 2-4.
. /lab/dom0-lib.sh
W=$LAB_WORK
PORT=${LAB_GUEST_TYPES_PORT:-7390}
cleanup() { xl destroy pvguest >/dev/null 2>&1; }
trap cleanup EXIT

caps=$(xl info 2>/dev/null | sed -n 's/^virt_caps *: *//p')
lab_note "virt_caps: $caps"
case " $caps " in
  *" shadow "*) lab_note "this hypervisor has shadow paging: PV guests can be protected, nothing to refuse"
                lab_summary "guest types: hypervisor has shadow paging (nothing to refuse)"; exit 0 ;;
esac

rm -f "$(lab_console pvguest)"
LAB_GUEST_TYPE=pv
export LAB_GUEST_TYPE
lab_guest_create pvguest "$LAB_GUEST_MEM" 1 >"$W/domid" || { cat "$W/domid"; cat "$W/pvguest.cfg"; lab_fail "xl create pvguest (PV) failed"; }
P=$(cat "$W/domid")
C=$(lab_console pvguest)
lab_wait_counter "$C" 2 240 || { tail -n 20 "$C"; lab_fail "pvguest never counted"; }

timeout 60 romulus replicate --domain pvguest --to "127.0.0.1:$PORT" --interval 100ms --insecure >"$W/replicate.log" 2>&1
rc=$?
lab_evidence "$W/replicate.log"
[ "$rc" -ne 124 ] || lab_fail "romulus replicate of a PV guest without shadow paging did not exit within 60 s"
[ "$rc" -ne 0 ] || lab_fail "romulus replicate of a PV guest without shadow paging exited 0"
# the refusal itself, not the probe line (which also says "no shadow paging")
grep -q 'cannot protect domain pvguest: .*is a PV guest and this hypervisor has no shadow paging' "$W/replicate.log" ||
  lab_fail "the refusal does not name the missing shadow paging"
grep -q 'protects: pvh' "$W/replicate.log" || lab_fail "the probe line does not say this host protects PVH guests"
lab_note "refused (exit $rc): $(grep -m1 'cannot protect domain pvguest' "$W/replicate.log" | cut -c1-240)"

before=$(lab_counter_last "$C")
lab_wait_counter "$C" $((before + 2)) 60 || { xl list; lab_fail "pvguest stopped counting after the refusal (at $before)"; }
state=$(xl list pvguest 2>/dev/null | awk 'NR==2 {print $5}')
case $state in
  *p*|*s*) xl list; lab_fail "pvguest is left in state $state after the refusal" ;;
esac
lab_summary "guest types: PV refused without shadow paging (exit $rc), guest untouched (counter $before -> $(lab_counter_last "$C"), state $state)"
