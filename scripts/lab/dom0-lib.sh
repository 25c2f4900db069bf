# shellcheck shell=sh
# /lab/dom0-lib.sh — helpers for scenarios running inside the lab's dom0 (busybox ash).
# A scenario sources it:   . /lab/dom0-lib.sh
# and describes itself in its first lines, read by scripts/xen-lab on the host:
#   #@ title: what it shows          #@ runs: baseline | romulus      #@ order: 30
#   #@ guests: pv pvh hvm (optional, default pv: the guest types it is written for; it runs only
#              in a boot of one of them, scripts/xen-lab --guest)
#   #@ skip-if: LAB_NO_...  (optional)   #@ gate: no ... (optional: a comparison, never fails the lab)
#   #@ only-if: VAR (optional: opt-in, runs only when VAR is set on the host or with --env VAR=...,
#              e.g. the disk benchmark's LAB_DISK_BENCH; no default run sets it)
#
# Reporting (read by scripts/xen-lab from the serial log):
#   lab_figure key=value ...   -> "LAB-FIGURE <scenario> key=value ..."  (measured figures)
#   lab_note text              -> "LAB-NOTE <scenario> text"
#   lab_summary text           -> "LAB-SUMMARY <scenario> text": its part of the lab's last line
#   lab_evidence FILE...       files shown when the scenario fails: events files (*.jsonl,
#                              as short event lines: rj_evidence) and logs (their tails)
#   lab_fail reason            -> prints the evidence, "LAB-FAIL <scenario> reason", exits 1
#   "LAB-DATA <scenario> FILE line" (raw data) -> saved by the host in <out>/data/<scenario>-FILE
#   exit status of the scenario: 0 = PASS, anything else = FAIL.

LAB_SCENARIO=${LAB_SCENARIO:-adhoc}
LAB_WORK=${LAB_WORK:-/run/lab/$LAB_SCENARIO}
# The counter guests' memory (MiB; --env LAB_GUEST_MEM=N). 64 is too little for a PV guest
# (xl create: "segment kernel too large (0x3a00 > 0x4000 - 0x1000 pages)"); 96 boots, but its
# first checkpoint was acked only 3 s sooner than 128's (21 s against 24 s: the wire bytes,
# the pages the guest touched, are about the same), so the scenarios keep 128.
LAB_GUEST_MEM=${LAB_GUEST_MEM:-128}
mkdir -p "$LAB_WORK"
# Romulus' events, stats lines and `ctl --json` answers are read with rj_* (the library
# tests/e2e use too: scripts/lib/romulus-json.sh).
. /lab/romulus-json.sh

LAB_EVIDENCE=""
lab_figure()   { echo "LAB-FIGURE $LAB_SCENARIO $*"; }
lab_note()     { echo "LAB-NOTE $LAB_SCENARIO $*"; }
lab_summary()  { echo "LAB-SUMMARY $LAB_SCENARIO $*"; }
lab_evidence() { for _f in "$@"; do case " $LAB_EVIDENCE " in *" $_f "*) ;; *) LAB_EVIDENCE="$LAB_EVIDENCE $_f" ;; esac; done; }
lab_show_evidence() {
  for _f in $LAB_EVIDENCE; do
    [ -e "$_f" ] || { echo "--- $_f: (none)"; continue; }
    case $_f in
      *events*.jsonl) echo "--- events $_f (last 15):"; rj_evidence "$_f" 15 ;;
      *) echo "--- $_f (last 15 lines):"; tail -n 15 "$_f" | cut -c1-240 ;;
    esac
  done
}
lab_fail() { lab_show_evidence; lab_show_guest_evidence; echo "LAB-FAIL $LAB_SCENARIO $*"; exit 1; }

# lab_guest_evidence NAME... : guests whose console tail lab_fail prints, with the hypervisor's
# word on them (lab_guest_create names every guest it creates). A guest that died under a
# checkpoint (e.g. "shut down (reboot) instead of suspending": Xen turns an HVM/PVH guest's
# triple fault into SHUTDOWN_reboot, see docs/XEN-LAB.md) is diagnosable only from its console
# and `xl dmesg`, which a CI log does not otherwise show: the (XEN) lines on the serial console
# scroll away under the save records, and the host's excerpt of a failure leaves them out.
LAB_GUEST_EVIDENCE=""
lab_guest_evidence() { for _g in "$@"; do case " $LAB_GUEST_EVIDENCE " in *" $_g "*) ;; *) LAB_GUEST_EVIDENCE="$LAB_GUEST_EVIDENCE $_g" ;; esac; done; }
lab_show_guest_evidence() {
  [ -n "$LAB_GUEST_EVIDENCE" ] || return 0
  for _g in $LAB_GUEST_EVIDENCE; do
    for _c in "$(lab_console "$_g")" "$(lab_console "$_g--incoming")"; do
      [ -s "$_c" ] || continue
      echo "--- guest console $_c (last 25 lines, COUNTER lines folded):"
      # the counter prints a line a second: keep only the last of each run of them
      tr -d '\r' <"$_c" | awk '/^COUNTER / { c = $0; next } { if (c != "") print c; c = ""; print } END { if (c != "") print c }' |
        tail -n 25 | cut -c1-240
    done
  done
  echo "--- xl list:"; xl list 2>&1 | head -n 12
  # The hypervisor's own account: shutdowns, crashes, triple faults and vCPU dumps, then its
  # last lines without the per-checkpoint HVM save/restore records.
  xl dmesg >"$LAB_WORK/xl-dmesg.txt" 2>&1
  echo "--- xl dmesg: guest deaths (last 30 matching lines):"
  # (prefixed: the host's excerpt of a failed scenario drops lines that begin with "(XEN)")
  grep -E -i -A14 'triple fault|crash|shutdown action|unexpected|domain_crash|Dumping Dom' "$LAB_WORK/xl-dmesg.txt" |
    grep -v -E '^--$|HVM[0-9]+ restore: |HVM d[0-9]+(v[0-9]+)? save: ' | tail -n 30 | cut -c1-200 | sed 's/^/dmesg| /'
  echo "--- xl dmesg (last 20 lines, HVM save/restore records left out):"
  grep -v -E 'HVM[0-9]+ restore: |HVM d[0-9]+(v[0-9]+)? save: ' "$LAB_WORK/xl-dmesg.txt" | tail -n 20 | cut -c1-200 |
    sed 's/^/dmesg| /'
}

# Seconds since dom0 boot, with centiseconds (from /proc/uptime).
lab_now() { cut -d' ' -f1 /proc/uptime; }
# lab_elapsed T0 -> seconds (2 decimals) since T0 (a lab_now value)
lab_elapsed() { awk -v a="$1" -v b="$(lab_now)" 'BEGIN{printf "%.2f", b-a}'; }

# lab_guest_cfg NAME [MEM_MIB] [VCPUS] [EXTRA_CMDLINE] -> writes $LAB_WORK/NAME.cfg, prints path.
# The guest: the lab's Debian kernel + the counter initramfs (see domu-init.sh), as a
# $LAB_GUEST_TYPE guest (scripts/xen-lab --guest): pv (default), pvh (the same bzImage
# booted directly through its PVH entry point; console hvc0 and xen-netfront as for PV), or
# hvm (qemu-xen boots the same bzImage; console ttyS0 into a file);
# with LAB_GUEST_VIF set, also one PV NIC (its xl vif spec); with LAB_GUEST_DISK, one disk.
lab_guest_cfg() {
  _n=$1; _m=${2:-$LAB_GUEST_MEM}; _v=${3:-1}; _x=${4:-}; _t=${LAB_GUEST_TYPE:-pv}
  case $_t in pv|pvh|hvm) ;; *) echo "lab_guest_cfg: LAB_GUEST_TYPE=$_t (pv, pvh or hvm)" >&2; return 1 ;; esac
  # An HVM guest's console is its emulated serial port, which QEMU writes to a file
  # (lab_guest_serial); PV and PVH guests have the PV console (xenconsoled's log).
  _con=hvc0; [ "$_t" = hvm ] && _con=ttyS0
  cat >"$LAB_WORK/$_n.cfg" <<EOC
name = "$_n"
type = "$_t"
kernel = "$LAB_DOMU_KERNEL"
ramdisk = "$LAB_DOMU_RAMDISK"
extra = "console=$_con quiet $_x"
memory = $_m
maxmem = $_m
vcpus = $_v
on_crash = "preserve"
# An HVM/PVH guest that triple-faults is shut down with reason reboot: keep it (state "s" in
# xl list) for the evidence instead of having xl's monitor recreate it under the same name.
on_reboot = "preserve"
EOC
  if [ "$_t" = hvm ]; then
    # qemu-xen boots the kernel directly (-kernel, QEMU's linuxboot ROM); no display unless
    # LAB_HVM_VGA names an adapter (e.g. "stdvga"): then a VNC server too, on loopback, as
    # xl's defaults give most HVM guests; LAB_HVM_HDTYPE=ahci: its disks on an AHCI controller
    if [ -n "${LAB_HVM_VGA:-}" ]; then _vga=$LAB_HVM_VGA; _vnc=1; else _vga=none; _vnc=0; fi
    cat >>"$LAB_WORK/$_n.cfg" <<EOC
device_model_version = "qemu-xen"
hdtype = "${LAB_HVM_HDTYPE:-ide}"
vnc = $_vnc
sdl = 0
vga = "$_vga"
serial = "file:$LAB_WORK/$_n.serial"
EOC
  fi
  if [ "$_t" = pvh ] || [ "$_t" = hvm ]; then
    cat >>"$LAB_WORK/$_n.cfg" <<'EOC'
# TCG lab artefact, not for real hosts: QEMU/TCG's TSC is not invariant, so Xen intercepts
# RDTSCP; QEMU 7.2 reports it as an RDTSC exit, Xen (no NRIPS under TCG) sees an instruction
# mismatch and injects #GP, and the guest hangs after "ACPI: No IOAPIC entries present"
# (LAB-NOTES "The one trap: RDTSCP"). With tsc_mode "native" Xen does not intercept the TSC.
# On real hardware leave tsc_mode at its default.
tsc_mode = "native"
EOC
    # LAB_GUEST_HAP=0: shadow paging instead of nested paging for the guest (needs a
    # hypervisor built with shadow paging, --xen auto/source).
    [ "${LAB_GUEST_HAP:-}" = 0 ] && echo "hap = 0" >>"$LAB_WORK/$_n.cfg"
  fi
  # LAB_GUEST_VIF: one PV NIC, e.g. "mac=00:16:3e:4c:00:02,script=/lab/vif-lab" (an HVM
  # guest's with "type=ioemu,model=e1000": an emulated NIC too, on the tap vifD.0-emu)
  [ -n "${LAB_GUEST_VIF:-}" ] && echo "vif = [ '$LAB_GUEST_VIF' ]" >>"$LAB_WORK/$_n.cfg"
  # LAB_GUEST_DISK: one xl disk spec, e.g. "vdev=xvdb, access=rw, script=/lab/block-lab,
  # target=/dev/nbd0" (blkback in dom0, xen-blkfront in the guest: domu-init.sh lab_disk=)
  [ -n "${LAB_GUEST_DISK:-}" ] && echo "disk = [ '$LAB_GUEST_DISK' ]" >>"$LAB_WORK/$_n.cfg"
  echo "$LAB_WORK/$_n.cfg"
}

# lab_guest_serial NAME : the file an HVM guest's serial console goes to (lab_guest_cfg).
lab_guest_serial() { echo "$LAB_WORK/$1.serial"; }

# lab_guest_create NAME [MEM_MIB] [VCPUS] [EXTRA_CMDLINE] : xl create; prints the domid.
# (NAME is named for lab_guest_evidence: lab_fail shows its console and Xen's word on it.)
lab_guest_create() {
  _cfg=$(lab_guest_cfg "$@")
  lab_guest_evidence "$1"  # a failing scenario shows its console tail and the hypervisor's log
  # (xl's complaint goes to stderr, i.e. the serial log: callers redirect stdout to a file)
  xl create "$_cfg" >"$LAB_WORK/create-$1.log" 2>&1 || { sed "s/^/xl create $1: /" "$LAB_WORK/create-$1.log" >&2; return 1; }
  lab_domid "$1"
}

# lab_domid NAME -> domid (empty if none)
lab_domid() { xl domid "$1" 2>/dev/null; }

# lab_console NAME -> xenconsoled's log file of a domain *as named when it was created*
# (after a migration/failover it stays guest-NAME--incoming.log: LAB-NOTES pitfall 9).
lab_console() { echo "/var/log/xen/console/guest-$1.log"; }

# lab_lines FILE -> number of lines in FILE (0 if none)
lab_lines() { _v=$(wc -l <"$1" 2>/dev/null); echo "${_v:-0}"; }

# lab_replica_console NAME MARK OUT : the console of NAME's failed-over copy into OUT.
# xenconsoled names a log after the domain's name when it attaches to the console, which
# races with the rename of NAME--incoming to NAME once the primary is gone (LAB-NOTES
# pitfall 9): the copy's output is in guest-NAME--incoming.log, or appended to
# guest-NAME.log after the primary's lines. MARK: the primary log's line count once the
# primary was destroyed (lab_lines). Sets LAB_REPLICA_LOGS to the log(s) that had lines.
lab_replica_console() {
  LAB_REPLICA_LOGS=""
  _ci=$(lab_console "$1--incoming"); _cp=$(lab_console "$1")
  : >"$3"
  if [ -s "$_ci" ]; then cat "$_ci" >>"$3"; LAB_REPLICA_LOGS="$_ci"; fi
  if [ "$(lab_lines "$_cp")" -gt "$2" ]; then
    tail -n +$(($2 + 1)) "$_cp" >>"$3"; LAB_REPLICA_LOGS="$LAB_REPLICA_LOGS${LAB_REPLICA_LOGS:+ + }$_cp after line $2"
  fi
}

# lab_counter_last FILE -> last COUNTER value in a console log (0 if none)
lab_counter_last() {
  _v=$(tr -d '\r' <"$1" 2>/dev/null | sed -n 's/.*COUNTER \([0-9][0-9]*\).*/\1/p' | tail -n1)
  echo "${_v:-0}"
}
# lab_counter_first FILE -> first COUNTER value (0 if none)
lab_counter_first() {
  _v=$(tr -d '\r' <"$1" 2>/dev/null | sed -n 's/.*COUNTER \([0-9][0-9]*\).*/\1/p' | head -n1)
  echo "${_v:-0}"
}

# lab_nbd_requests DEV: a connected /dev/nbdK takes requests of up to 1 MiB, as docs/DISK.md §8
# tells operators (nbd.ko makes every device with 128 KiB); fails if the kernel keeps another value.
lab_nbd_requests() {
  _q=/sys/block/${1#/dev/}/queue/max_sectors_kb
  echo 1024 >"$_q" 2>/dev/null
  [ "$(cat "$_q" 2>/dev/null)" = 1024 ] || lab_fail "$1: max_sectors_kb is '$(cat "$_q" 2>/dev/null)' after writing 1024"
}
# lab_wait_counter FILE MIN TIMEOUT_S : wait until the console log shows COUNTER >= MIN.
lab_wait_counter() {
  _i=0
  while [ "$(lab_counter_last "$1")" -lt "$2" ]; do
    _i=$((_i+1)); [ $_i -le $(($3*5)) ] || return 1
    sleep 0.2
  done
}

# lab_destroy_all : destroy every domain but dom0 (also suspended leftovers: pitfall 8).
lab_destroy_all() {
  for _d in $(xl list 2>/dev/null | awk 'NR>1 && $2!=0 {print $2}'); do xl destroy "$_d" >/dev/null 2>&1; done
}

# lab_pids_by_arg STRING -> pids whose command line contains STRING. One ps and one awk
# (the string passed in the environment, so neither matches itself): forking two programs
# per process in /proc, as this did, took tens of seconds in a busy TCG dom0.
lab_pids_by_arg() {
  ps -o pid,args | LAB_PAT=$1 awk 'NR > 1 { p = $1; sub(/^ *[0-9]+ +/, ""); if (index($0, ENVIRON["LAB_PAT"])) print p }'
}

# lab_wait_listening LOG PID : wait (10 s) until a `romulus restore` started in the background
# with its output in LOG says it is listening; fail the scenario if it exits or never does.
lab_wait_listening() {
  _i=0
  until grep -q 'listening' "$1" 2>/dev/null; do
    _i=$((_i+1))
    kill -0 "$2" 2>/dev/null || { cat "$1"; lab_fail "backup exited before listening"; }
    [ $_i -le 100 ] || { cat "$1"; lab_fail "backup never listened"; }
    sleep 0.1
  done
}

# lab_wait_exit PID SECONDS MESSAGE : wait (SECONDS) until our child PID exits, then reap it;
# its exit status in LAB_RC. Fails the scenario with MESSAGE if it is still running then.
lab_wait_exit() {
  _t0=$(lab_now)
  while kill -0 "$1" 2>/dev/null; do
    [ "$(lab_elapsed "$_t0" | cut -d. -f1)" -lt "$2" ] || lab_fail "$3"
    sleep 0.2
  done
  wait "$1"; LAB_RC=$?
}

# lab_session_committed EVENTS : whether a backup's newest session (its --events-json EVENTS)
# has committed an epoch. A backup whose newest session committed nothing holds its older
# checkpoint rather than activate it (docs/FAILURE-MODEL.md), so a drill that kills the
# primary must wait for this (a loaded host can lose a session and resync it).
lab_session_committed() {
  _ss=$(rj_last_event "$1" session_start) && rj_last_event "$1" commit "$(rj_get "$_ss" seq)" >/dev/null
}

# lab_wait_failover EVENTS LOG : wait (60 s) for the failover event in a backup's
# --events-json file EVENTS (LOG: its output, shown on failure); sets LAB_FO to the event's
# line. Fails the scenario unless the guest was activated.
lab_wait_failover() {
  lab_evidence "$1" "$2"
  LAB_FO=$(rj_wait_event "$1" failover 60) || lab_fail "the backup never failed over ($2)"
  [ "$(rj_get "$LAB_FO" activated)" = true ] || lab_fail "activation failed: $LAB_FO"
}

# lab_wait_resumed GUEST CONSOLE LINES T0 OUT LOG : wait (300 s from the lab_now value T0)
# until the failed-over copy of GUEST counts, its console collected in OUT by
# lab_replica_console (CONSOLE: GUEST's log, LINES: its line count when the primary was
# destroyed). LOG: the backup's output, shown on failure.
lab_wait_resumed() {
  until lab_replica_console "$1" "$3" "$5"; [ "$(lab_counter_last "$5")" -ge 2 ] 2>/dev/null; do
    [ "$(lab_elapsed "$4" | cut -d. -f1)" -lt 300 ] || { xl list; tail -n 20 "$6"; lab_fail "$1: the resumed guest does not count"; }
    sleep 0.2
  done
}

# ---- ping checks of a guest's output (output commit)
# lab_ping_replies FILE -> the replies in a busybox ping log ("... time=1.234 ms")
lab_ping_replies() { _r=$(grep -c 'time=' "$1" 2>/dev/null); echo "${_r:-0}"; }
# lab_ping_lost FILE -> requests never answered among those up to the last one answered
# (busybox "seq=N ... time="): held output is delayed, never dropped
lab_ping_lost() {
  sed -n 's/.*seq=\([0-9]*\) .*time=.*/\1/p' "$1" | sort -n | awk 'NR == 1 { lo = $1 } { hi = $1; n++ }
    END { print n ? hi - lo + 1 - n : 0 }'
}
# lab_ping_missing FILE -> those requests' seq numbers (the first 8), for the notes
lab_ping_missing() {
  sed -n 's/.*seq=\([0-9]*\) .*time=.*/\1/p' "$1" | sort -n | awk 'NR > 1 { for (s = prev + 1; s < $1; s++) if (n++ < 8) printf "%s%d", (n > 1 ? " " : ""), s } { prev = $1 }'
}
# lab_pings FILE IP N LIMIT_S: ping IP every 0.2 s until N replies came (at most LIMIT_S s).
# Not `ping -c`: once one reply came, busybox waits only ~2 RTT after the last request, and
# on a loaded host an epoch's ack (hence its held replies) can take longer than that.
lab_pings() {
  ping -i 0.2 "$2" >"$1" 2>&1 &
  _pp=$!; _t=$(lab_now)
  until [ "$(lab_ping_replies "$1")" -ge "$3" ] || [ "$(lab_elapsed "$_t" | cut -d. -f1)" -ge "$4" ]; do sleep 0.2; done
  kill $_pp 2>/dev/null; wait $_pp 2>/dev/null
}
# lab_held_check LABEL IP BACKUP_PID FILE: SIGSTOP the backup, so that no epoch from now on
# can be acked. Every reply the guest at IP sends to the pings from then on belongs to such an
# epoch and must stay in the plug: none may reach dom0 in a 3 s look (a plug that let output
# through would show it in milliseconds; the session itself lasts the 15 s ack timeout). Then
# SIGCONT: the held replies must all arrive, the first request's among them (delayed, never
# dropped). FILE: the ping log.
# dom0's neighbour entry for IP is pinned for the check: the guest's ARP replies are output
# too, held with the rest, and an entry that reached its PROBE state while the backup was
# stopped would fail after 3 unanswered probes and drop the requests queued behind it (dom0's
# loss, not the plug's; CI saw it once with the HVM guest's slow epochs).
lab_held_check() {
  _nb=$(ip neigh show to "$2" | awk '{ for (i = 1; i < NF; i++) { if ($i == "dev") d = $(i+1); if ($i == "lladdr") m = $(i+1) } } END { if (d != "" && m != "") print d, m }')
  [ -n "$_nb" ] || { ip neigh show; lab_fail "$1: dom0 has no neighbour entry for $2 after answered pings"; }
  # (busybox's arp: its ip neigh only shows; -s without "temp" makes the entry permanent)
  arp -i "${_nb%% *}" -s "$2" "${_nb#* }" || lab_fail "$1: cannot pin dom0's neighbour entry for $2"
  ip neigh show to "$2" | grep -q PERMANENT || { ip neigh show to "$2"; lab_fail "$1: dom0's neighbour entry for $2 is not permanent"; }
  kill -STOP "$3"
  ping -i 0.2 "$2" >"$4" 2>&1 &
  _pp=$!
  sleep 3
  _held=$(lab_ping_replies "$4")
  kill -CONT "$3"
  [ "$_held" -eq 0 ] || { kill $_pp; cat "$4"; lab_fail "$1: $_held replies reached dom0 while the backup could ack nothing: output is not held until the ack"; }
  _t=$(lab_now)
  until [ "$(lab_ping_replies "$4")" -ge 10 ] || [ "$(lab_elapsed "$_t" | cut -d. -f1)" -ge 60 ]; do sleep 0.2; done
  kill $_pp 2>/dev/null; wait $_pp 2>/dev/null
  arp -i "${_nb%% *}" -d "$2" 2>/dev/null
  grep -q 'seq=0 ' "$4" && [ "$(lab_ping_replies "$4")" -ge 10 ] && [ "$(lab_ping_lost "$4")" -le 1 ] ||
    { cat "$4"; lab_fail "$1: the replies held while the backup was stopped did not all arrive once it ran again ($(lab_ping_replies "$4") replies in 60 s, the first request's $(grep -q 'seq=0 ' "$4" && echo among them || echo missing), $(lab_ping_lost "$4") lost (seq $(lab_ping_missing "$4")), $(grep -ci unreachable "$4") unreachable; backup $(kill -0 "$3" 2>/dev/null && echo running || echo gone))"; }
  lab_note "$1: 0 replies while the backup was stopped 3 s; then $(lab_ping_replies "$4") (first request's included, $(lab_ping_lost "$4") lost$([ "$(lab_ping_lost "$4")" -eq 0 ] || echo ": seq $(lab_ping_missing "$4")"))"
}
