#!/bin/sh
#@ title: disk benchmark (opt-in, LAB_DISK_BENCH=1): fio O_DIRECT writes on the raw device, through DRBD protocol C to a same-host peer, through romulus disk-export alone and while a guest is replicated with it; one table
#@ guests: pv pvh
#@ runs: romulus
#@ only-if: LAB_DISK_BENCH
#@ order: 90
# Issue 13's disk figures, measured in one boot, one after the other, by the same fio in dom0
# against four block devices over the same kind of backing (a loop device on a tmpfs file of
# LAB_BENCH_MB MiB, default 64; tmpfs itself refuses O_DIRECT, the loop device takes it):
#   raw      the loop device itself;
#   drbd     /dev/drbd0, DRBD 8.4 (Debian's drbd.ko) protocol C, Primary, connected over TCP on
#            127.0.0.1 to a second resource in the same kernel (/dev/drbd1, Secondary) whose
#            backing is another loop device: two resources back to back (7789 <-> 7790), made
#            with drbdsetup-84 alone (no drbdadm: no host names to match). Both start UpToDate
#            on fresh zeroed backings (new-current-uuid --clear-bitmap: no initial sync);
#   nbd      /dev/nbd0 served by `romulus disk-export` (the store: a loop device) with no
#            replicator attached: the NBD path's own cost (the export logs nothing then);
#            requests of up to 1 MiB (lab_nbd_requests, as DISK.md §8 tells operators);
#   nbd128   the same with nbd.ko's default 128 KiB requests (a 1 MiB write = 8 requests);
#   romulus  the same /dev/nbd0 while `romulus replicate --domain --disk-tap` checkpoints the
#            guest below at --interval 100ms to `restore --xen --disk-dir` in the same dom0,
#            after the streaming copy completed: every epoch seals and ships its writes.
# The guest (128 MiB counter guest, the disk is its xvdb: it writes one 4 KiB record at boot
# and then leaves it alone) runs through every measurement, protected only in phase B, so all
# share the same background. Phase A (nothing replicated): LAB_BENCH_ROUNDS rounds (default 3)
# of raw, drbd, nbd, nbd128; phase B (the guest replicated): as many rounds of raw_rep (the raw device
# again, now beside the replicator: what its CPU costs dom0 under TCG) and romulus. Figures:
# medians over the rounds. A 5 s fio run first warms TCG's translation cache (not reported).
# Workloads (fio 3.33, psync, iodepth 1, --direct=1): rand4k = 4 KiB random writes over the
# whole device for LAB_BENCH_SECONDS (default 10); seq1m = 1 MiB sequential writes of
# LAB_BENCH_SEQ_MB (default 32: under the 64 MiB an epoch may carry; a time-based seq1m, tried,
# ran the lab's 1 GiB dom0 out of memory while replicating: docs/benchmarks.md). For romulus also, from
# its --stats-json: the guest's pause (pause_us; pause_us - suspend_us, the guest stopped) and
# dirty pages in idle epochs (LAB_BENCH_IDLE_EPOCHS before and after the fio runs), in epochs
# of fio on the raw device and in epochs carrying fio's writes through the export, and the
# part of the pause the disk's cut took (disk_cut_us); the DISK frames' wire bytes
# (disk_wire_bytes) against the bytes fio wrote; in the idle windows, each thread's CPU
# (docs/STATS.md, "Thread names") and dom0's.
# Asserts only what can fail: fio ran without error and wrote; DRBD was Connected and
# UpToDate/UpToDate around its runs and both backings hold the same data after; the Romulus
# backup's image equals the primary's store after the run. No timing is a pass criterion.
. /lab/dom0-lib.sh
W=$LAB_WORK
MB=${LAB_BENCH_MB:-64}
SECS=${LAB_BENCH_SECONDS:-10}
ROUNDS=${LAB_BENCH_ROUNDS:-3}
SEQMB=${LAB_BENCH_SEQ_MB:-32}
IDLE=${LAB_BENCH_IDLE_EPOCHS:-20}
DS=/lab/drbd/drbdsetup-84; DM=/lab/drbd/drbdmeta
NBD=/dev/nbd0
command -v fio >/dev/null || lab_fail "no fio in dom0 (scripts/xen-lab stages it with LAB_DISK_BENCH=1)"
[ -x $DS ] && [ -x $DM ] || lab_fail "no drbdsetup-84/drbdmeta in /lab/drbd"
[ -e /proc/drbd ] || lab_fail "drbd.ko is not loaded (no /proc/drbd)"
lab_note "fio: $(fio --version 2>&1); drbd: $(head -n1 /proc/drbd); load: $(cat /proc/loadavg)"

# loop_attach FILE -> the loop device it is now attached to
loop_attach() {
  _d=$(losetup -f) && losetup "$_d" "$1" && echo "$_d"
}
# ticks PID: the process's user + system CPU time so far in USER_HZ (1/100 s) ticks; 0 without one
# (an empty PID is no process: "/proc//stat" would be the system's own statistics)
ticks() { [ -n "$1" ] && awk 'NR == 1 { print $14 + $15 }' "/proc/$1/stat" 2>/dev/null || echo 0; }
# threads PID: "TID NAME USER SYS" per thread of PID (USER_HZ ticks; the names: docs/STATS.md)
threads() {
  for _t in /proc/$1/task/*; do
    [ -r "$_t/stat" ] && echo "${_t##*/} $(cat "$_t/comm" 2>/dev/null) $(awk '{ print $14, $15 }' "$_t/stat" 2>/dev/null)"
  done
}
# thread_cpu BEFORE AFTER: the CPU each thread name used between two `threads` listings, summed by
# name, busiest first: "name=USER+SYS" in ticks (a thread started meanwhile counts from 0; one
# that ended meanwhile, such as a control client's, is not counted)
thread_cpu() {
  awk 'FILENAME == ARGV[1] { u[$1] = $3; s[$1] = $4; next }
    { du[$2] += $3 - u[$1]; ds[$2] += $4 - s[$1] }
    END { for (n in du) if (du[n] + ds[n] > 0) printf "%d %s=%d+%d\n", du[n] + ds[n], n, du[n], ds[n] }' "$1" "$2" |
    sort -rn | cut -d' ' -f2 | tr '\n' ' '
}
# fio_job NAME DEV rand4k|seq1m : fio's JSON report in $W/NAME.json; fails on an error or no writes.
# Also the CPU time the export ($EP), the replicator ($RP) and the backup ($BP) spent meanwhile.
fio_job() {
  _t0="$(ticks "$EP") $(ticks "$RP") $(ticks "$BP")"; _w0=$(lab_now)
  case $3 in
    rand4k) _a="--rw=randwrite --bs=4k --size=${MB}M --time_based --runtime=$SECS" ;;
    seq1m) _a="--rw=write --bs=1M --size=${SEQMB}M" ;;
  esac
  # shellcheck disable=SC2086
  fio --name="$1" --filename="$2" --ioengine=psync --iodepth=1 --direct=1 $_a \
    --percentile_list=50:99 --output-format=json --output="$W/$1.json" >"$W/$1.out" 2>&1 ||
    { cat "$W/$1.out" "$W/$1.json" 2>/dev/null | tail -n 20; lab_fail "fio $1 on $2 failed"; }
  _r=$(fio_parse "$W/$1.json")
  [ "$(kv "$_r" err)" = 0 ] || lab_fail "fio $1: error $(kv "$_r" err)"
  [ "$(kv "$_r" io)" -gt 0 ] 2>/dev/null || lab_fail "fio $1 wrote nothing: $_r"
  _c=$(echo "$_t0 $(ticks "$EP") $(ticks "$RP") $(ticks "$BP")" |
    awk -v w="$(lab_elapsed "$_w0")" '{ printf "cpu_export=%d cpu_replicator=%d cpu_backup=%d wall_cs=%d", $4 - $1, $5 - $2, $6 - $3, w * 100 }')
  echo "$1 $_r $_c" >>"$W/results.txt"
}
# fio_parse JSON -> "err= io= bw= iops= mean_ns= p50_ns= p99_ns=" of the job's writes (completion
# latency: psync has no submission part)
fio_parse() {
  awk 'function num(s) { sub(/^[^:]*: */, "", s); gsub(/[ ,]/, "", s); return s }
    /"error" :/ && err == "" { err = num($0) }
    /"write" : \{/ { w = 1 }
    w && /"io_bytes" :/ && io == "" { io = num($0) }
    w && /"bw_bytes" :/ && bw == "" { bw = num($0) }
    w && /"iops" :/ && iops == "" { iops = num($0) }
    w && /"clat_ns" : \{/ { c = 1 }
    c && /"mean" :/ && mean == "" { mean = num($0) }
    c && /"50.000000" :/ && p50 == "" { p50 = num($0) }
    c && /"99.000000" :/ && p99 == "" { p99 = num($0) }
    END { printf "err=%s io=%s bw=%s iops=%s mean_ns=%s p50_ns=%s p99_ns=%s\n", err, io, bw, iops, mean, p50, p99 }' "$1"
}
kv() { echo "$1" | tr ' ' '\n' | sed -n "s/^$2=//p" | head -n1; }
# md5 of the first $MB MiB of FILE (the data area: DRBD's internal metadata lies past it)
data_md5() { dd if="$1" bs=1M count="$MB" 2>/dev/null | md5sum | cut -d' ' -f1; }
: >"$W/results.txt"

# ---------------------------------------------------------------- the export and the guest
D=$W/romulus; mkdir -p "$D/disks"
truncate -s ${MB}M "$D/store.img"
LS=$(loop_attach "$D/store.img") || lab_fail "losetup store"
SOCK=$D/nbd.sock; TAP=$D/tap.sock
romulus disk-export --store "$LS" --name xvdb --nbd-socket "$SOCK" --tap-socket "$TAP" >"$D/export.log" 2>&1 &
EP=$!
lab_evidence "$D/export.log"
i=0; until grep -q ready "$D/export.log"; do i=$((i+1)); [ $i -le 300 ] || lab_fail "export not ready"; sleep 0.1; done
nbd-client -unix "$SOCK" "$NBD" -N xvdb >"$D/nbdc.log" 2>&1 || lab_fail "nbd-client: $(cat "$D/nbdc.log")"
NBDQ=/sys/block/${NBD#/dev/}/queue/max_sectors_kb
MS0=$(cat $NBDQ)
lab_nbd_requests "$NBD"
lab_note "$NBD: max_sectors_kb $MS0 as connected (nbd.ko's default), raised to $(cat $NBDQ) (max_hw_sectors_kb $(cat /sys/block/${NBD#/dev/}/queue/max_hw_sectors_kb))"
lab_note "export: $(grep -m1 -iE 'o_direct|buffered|store' "$D/export.log" | sed 's/.*disk export/disk export/' | cut -c1-120)"

# the guest, protected only in phase B: its disk is xvdb on /dev/nbd0
G=guest9; head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n' >"$W/psk"; chmod 600 "$W/psk"
rm -f "$(lab_console $G)" "$(lab_console $G--incoming)"
LAB_GUEST_DISK="backendtype=phy, format=raw, vdev=xvdb, access=rw, script=/lab/block-lab, target=$NBD" \
  lab_guest_create $G "$LAB_GUEST_MEM" 1 "lab_disk=/dev/xvdb lab_disk_max=1" >"$D/domid" || lab_fail "create $G"
# (one record written at boot, so that blkfront is loaded and the disk connected; then idle)
i=0; until grep -q 'DISKDONE 1' "$(lab_console $G)" 2>/dev/null; do
  i=$((i+1)); [ $i -le 1500 ] || lab_fail "$G never wrote its one record"; sleep 0.2
done
lab_wait_counter "$(lab_console $G)" 2 120 || lab_fail "$G never counted"

# ---------------------------------------------------------------- raw and DRBD protocol C
truncate -s ${MB}M "$W/raw.img"
LR=$(loop_attach "$W/raw.img") || lab_fail "losetup raw"
# drbd.ko calls its user-mode helper (drbdadm) on state changes; dom0 has none: a no-op.
echo /bin/true >/sys/module/drbd/parameters/usermode_helper 2>/dev/null
mkdir -p /var/lock /var/run/drbd /var/lib/drbd  # drbdmeta's lock files
truncate -s $((MB + 4))M "$W/drbd-a.img" "$W/drbd-b.img"
LA=$(loop_attach "$W/drbd-a.img") || lab_fail "losetup drbd-a"
LB=$(loop_attach "$W/drbd-b.img") || lab_fail "losetup drbd-b"
lab_evidence "$W/drbd.log"
drbd() { echo "+ $*" >>"$W/drbd.log"; "$@" >>"$W/drbd.log" 2>&1 </dev/null || lab_fail "drbd: $* failed: $(tail -n 3 "$W/drbd.log" | tr '\n' ' ')"; }
drbd $DM --force 0 v08 "$LA" internal create-md
drbd $DM --force 1 v08 "$LB" internal create-md
drbd $DS new-resource rbench0
drbd $DS new-minor rbench0 0 0
drbd $DS attach 0 "$LA" "$LA" internal
drbd $DS new-resource rbench1
drbd $DS new-minor rbench1 1 0
drbd $DS attach 1 "$LB" "$LB" internal
drbd $DS connect rbench0 ipv4:127.0.0.1:7789 ipv4:127.0.0.1:7790 --protocol=C
drbd $DS connect rbench1 ipv4:127.0.0.1:7790 ipv4:127.0.0.1:7789 --protocol=C
# drbd_wait MINOR cstate|dstate VALUE SECONDS
drbd_wait() {
  _i=0
  until [ "$($DS "$2" "$1" 2>/dev/null)" = "$3" ]; do
    _i=$((_i + 1)); [ $_i -le $(($4 * 5)) ] || { cat /proc/drbd; lab_fail "drbd minor $1: $2 is '$($DS "$2" "$1" 2>&1)', want $3 (after $4 s)"; }
    sleep 0.2
  done
}
T=$(lab_now)
drbd_wait 0 cstate Connected 120
drbd_wait 1 cstate Connected 30
lab_note "drbd: both resources Connected after $(lab_elapsed "$T") s"
# Both backings are fresh zeros: declare them in sync instead of copying them.
if $DS new-current-uuid 0 --clear-bitmap >>"$W/drbd.log" 2>&1; then
  drbd_wait 0 dstate UpToDate/UpToDate 60
else
  lab_note "drbd: new-current-uuid --clear-bitmap refused ($(tail -n1 "$W/drbd.log")); initial sync with primary --force"
  drbd $DS primary 0 --force
  drbd_wait 0 dstate UpToDate/UpToDate 600
fi
drbd $DS primary 0
lab_note "drbd: $(sed -n '/^ *0:/p' /proc/drbd | tr -s ' ')"

# ---------------------------------------------------------------- phase A: nothing replicated
fio --name=warmup --filename="$LR" --ioengine=psync --direct=1 --rw=randwrite --bs=4k --size=${MB}M \
  --time_based --runtime=5 >"$W/warmup.out" 2>&1 || lab_fail "fio warm-up: $(tail -n 3 "$W/warmup.out")"
r=1
while [ $r -le "$ROUNDS" ]; do
  for wl in rand4k seq1m; do
    fio_job raw-$wl-r$r "$LR" $wl
    fio_job drbd-$wl-r$r /dev/drbd0 $wl
    fio_job nbd-$wl-r$r "$NBD" $wl
    # the same export with the kernel's default request size (8 requests per 1 MiB write)
    echo "$MS0" >$NBDQ; [ "$(cat $NBDQ)" = "$MS0" ] || lab_fail "$NBD: max_sectors_kb not back to $MS0"
    fio_job nbd128-$wl-r$r "$NBD" $wl
    lab_nbd_requests "$NBD"
  done
  r=$((r + 1))
done
[ "$($DS cstate 0)" = Connected ] && [ "$($DS dstate 0)" = UpToDate/UpToDate ] ||
  { cat /proc/drbd; lab_fail "drbd after the runs: $($DS cstate 0) $($DS dstate 0)"; }
lab_note "drbd after the runs: $(sed -n '/^ *0:/,/^ *1:/p' /proc/drbd | tr -s ' ' | tr '\n' ' ' | cut -c1-300)"
drbd $DS secondary 0
drbd $DS down rbench0
drbd $DS down rbench1
losetup -d "$LA"; losetup -d "$LB"
A=$(data_md5 "$W/drbd-a.img"); B=$(data_md5 "$W/drbd-b.img")
[ "$A" = "$B" ] || lab_fail "drbd: the peer's backing differs from the primary's ($A vs $B)"
lab_note "drbd: the peer's backing equals the primary's (md5 $A)"
rm -f "$W/drbd-a.img" "$W/drbd-b.img"

# ---------------------------------------------------------------- phase B: the guest replicated
romulus restore --xen --no-fence --listen 127.0.0.1:7390 --psk-file "$W/psk" --failover-timeout 5s \
  --disk-dir "$D/disks" --events-json "$D/events.jsonl" >"$D/backup.log" 2>&1 &
BP=$!
lab_evidence "$D/backup.log" "$D/events.jsonl" "$D/primary.log"
lab_wait_listening "$D/backup.log" $BP
romulus replicate --domain $G --disk-tap "$TAP" --to 127.0.0.1:7390 --psk-file "$W/psk" --interval 100ms \
  --ack-timeout 30s --stats-json "$D/stats.jsonl" --control-socket "$D/ctl.sock" >"$D/primary.log" 2>&1 &
RP=$!
# Memory while replicating, every 2 s: dom0's MemAvailable and Shmem (tmpfs), and the resident
# set of the export, the replicator and the backup (kB), to mem.txt; the peaks are noted.
rss() { awk '/^VmRSS:/ { print $2 }' "/proc/$1/status" 2>/dev/null || echo 0; }
( while kill -0 $RP 2>/dev/null; do
    echo "$(lab_now) avail=$(awk '/^MemAvailable:/ { print $2 }' /proc/meminfo) shmem=$(awk '/^Shmem:/ { print $2 }' /proc/meminfo) export=$(rss $EP) replicator=$(rss $RP) backup=$(rss $BP)"
    sleep 2
  done ) >"$D/mem.txt" 2>/dev/null &
MP=$!
lab_evidence "$D/mem.txt"
acked() { rj_last_acked "$D/stats.jsonl"; }
# the epoch the replicator started last (its stats line comes only after the ack, epochs later)
epoch_now() {
  _j=$(romulus ctl --socket "$D/ctl.sock" --json status 2>/dev/null) && _v=$(rj_get "$_j" epoch) && [ -n "$_v" ] ||
    lab_fail "romulus ctl status: $_j"
  echo "$_v"
}
# idle_window: IDLE epochs with no fio running, into windows.txt
# (epoch_now's lab_fail runs in the command substitution: its output is printed and we exit)
# Each also notes where the replicator's and the backup's CPU went, by thread (memory alone: the
# guest idles, no disk writes).
idle_window() {
  threads $RP >"$D/thr-r0"; threads $BP >"$D/thr-b0"; _w=$(lab_now); _k0=$(head -n1 /proc/stat)
  _s=$(epoch_now) || { echo "$_s"; exit 1; }
  wait_acked $((_s + IDLE)) 300
  _e=$(epoch_now) || { echo "$_e"; exit 1; }
  echo "idle $_s $_e" >>"$D/windows.txt"
  threads $RP >"$D/thr-r1"; threads $BP >"$D/thr-b1"
  _k=$(echo "$_k0 $(head -n1 /proc/stat)" | awk '{ n = (NF / 2); printf "user %d sys %d irq+softirq %d idle %d iowait %d steal %d",
    $(n+2) + $(n+3) - $2 - $3, $(n+4) - $4, $(n+7) + $(n+8) - $7 - $8, $(n+5) - $5, $(n+6) - $6, $(n+9) - $9 }')
  lab_note "idle window, dom0 all CPUs (ticks): $_k"
  lab_note "idle window, epochs $_s..$_e in $(lab_elapsed "$_w") s, CPU ticks (1/100 s) user+sys by thread: replicator $(thread_cpu "$D/thr-r0" "$D/thr-r1")| backup $(thread_cpu "$D/thr-b0" "$D/thr-b1")"
}
alive() { kill -0 $RP 2>/dev/null || lab_fail "the replicator exited: $(grep -E ' (error|critical) ' "$D/primary.log" | tail -n1 | cut -c1-300)"; }
# wait_acked N SECONDS: until epoch N is acked
wait_acked() {
  _t=$(lab_now)
  until [ "$(acked)" -ge "$1" ] 2>/dev/null; do
    alive; [ "$(lab_elapsed "$_t" | cut -d. -f1)" -lt "$2" ] || lab_fail "epoch $1 not acked within $2 s (last acked $(acked))"
    sleep 0.2
  done
}
T=$(lab_now)
until C=$(sed -n 's/.*copy to the backup complete with epoch \([0-9]*\).*/\1/p' "$D/primary.log" | head -n1); [ -n "$C" ]; do
  alive; [ "$(lab_elapsed "$T" | cut -d. -f1)" -lt 600 ] || lab_fail "the disk's copy never completed"
  sleep 0.5
done
# a few epochs for the backup to settle after the copy, then epochs with no fio at all
wait_acked $((C + 5)) 120
: >"$D/windows.txt"
idle_window
# bjob NAME DEV WORKLOAD: fio_job, and the epochs it ran in (started last at its start .. at its
# end, + 1) into windows.txt
bjob() {
  alive; _s=$(epoch_now) || { echo "$_s"; exit 1; }
  fio_job "$@"
  alive; _e=$(epoch_now) || { echo "$_e"; exit 1; }
  echo "${1%%-*} $_s $((_e + 1))" >>"$D/windows.txt"
}
r=1
while [ $r -le "$ROUNDS" ]; do
  for wl in rand4k seq1m; do
    bjob raw_rep-$wl-r$r "$LR" $wl
    bjob romulus-$wl-r$r "$NBD" $wl
  done
  r=$((r + 1))
done
alive
# every epoch that can hold fio's writes must be acked (the last write's epoch ends at the next
# suspend): then the backup's image must equal the store
E1=$(epoch_now) || { echo "$E1"; exit 1; }
wait_acked $((E1 + 2)) 120
E2=$(acked)
A=$(data_md5 "$D/store.img"); n=0
for f in "$D"/disks/*.img; do
  n=$((n + 1)); B=$(data_md5 "$f")
  [ "$A" = "$B" ] || lab_fail "the backup's image $f differs from the primary's store after epoch $E2 acked ($B vs $A)"
done
[ $n -eq 1 ] || lab_fail "$n images in $D/disks, want 1"
lab_note "romulus: the backup's image equals the primary's store (md5 $A) after epoch $E2 acked"
idle_window
alive
kill $MP 2>/dev/null
lab_note "memory while replicating (kB): $(awk '{ for (i = 2; i <= NF; i++) { split($i, f, "="); k = f[1]; v = f[2] + 0
    if (k == "avail") { if (!(k in m) || v < m[k]) m[k] = v } else if (v > m[k]) m[k] = v } }
  END { printf "MemAvailable min %d, Shmem max %d, RSS max: export %d, replicator %d, backup %d", m["avail"], m["shmem"], m["export"], m["replicator"], m["backup"] }' "$D/mem.txt")"
kill $RP; wait $RP 2>/dev/null
kill $BP 2>/dev/null; wait $BP 2>/dev/null
xl destroy $G--incoming >/dev/null 2>&1
xl destroy $G >/dev/null 2>&1
nbd-client -d $NBD >/dev/null 2>&1
kill $EP 2>/dev/null; wait $EP 2>/dev/null
losetup -d "$LS" 2>/dev/null
losetup -d "$LR"; rm -f "$W/raw.img"

# ---------------------------------------------------------------- the epochs
rj_csv "$D/stats.jsonl" acked true epoch pause_us suspend_us disk_records disk_bytes disk_wire_bytes wire_bytes dirty_pages disk_cut_us >"$D/stats.csv"
sed "s/^/LAB-DATA $LAB_SCENARIO stats.csv /" "$D/stats.csv"
sed "s/^/LAB-DATA $LAB_SCENARIO windows.txt /" "$D/windows.txt"
sed "s/^/LAB-DATA $LAB_SCENARIO mem.txt /" "$D/mem.txt"
# each acked epoch after the copy with its label: "romulus" if it carries disk data (nothing but
# fio writes /dev/nbd0 then), else the window it lies in: idle, raw_rep (fio on the raw device
# while replicating), romulus (fio starting or ending: not counted), or - (between the windows)
awk -F, -v c="$C" 'NR == FNR { split($0, f, " "); n++; L[n] = f[1]; S[n] = f[2] + 0; E[n] = f[3] + 0; next }
  $1 + 0 <= c { next }
  { l = "-"; if ($4 > 0) l = "romulus"; else for (i = 1; i <= n; i++) if ($1 + 0 >= S[i] && $1 + 0 <= E[i]) l = L[i]
    print $0 "," l }' "$D/windows.txt" "$D/stats.csv" >"$D/epochs.csv"
# pstat LABEL DISK(0: no disk records, 1: some) pause|stopped|pages|cut -> "n= p50= p90=" (ms; pages)
# (cut: the part of the pause spent on the disk's PAUSE round trip, `disk_cut_us`)
pstat() {
  awk -F, -v l="$1" -v d="$2" -v m="$3" '$10 == l && (d ? $4 > 0 : $4 == 0) {
      print (m == "stopped" ? ($2 - $3) / 1000 : m == "pause" ? $2 / 1000 : m == "cut" ? $9 / 1000 : $8) }' "$D/epochs.csv" |
    sort -n | awk '{ v[NR] = $1 } END { if (!NR) { print "n=0 p50=- p90=-"; exit }
      i = int((NR + 1) / 2); j = int(NR * 0.9 + 0.999); if (j < 1) j = 1
      printf "n=%d p50=%.1f p90=%.1f\n", NR, v[i], v[j] }'
}
SUMS=$(awk -F, '{ r += $4; d += $5; w += $6 } END { printf "records=%d disk_bytes=%d disk_wire_bytes=%d", r, d, w }' "$D/epochs.csv")
FIO_W=$(awk '$1 ~ /^romulus-/ { for (i = 2; i <= NF; i++) if ($i ~ /^io=/) { sub(/^io=/, "", $i); s += $i } } END { print s + 0 }' "$W/results.txt")

# ---------------------------------------------------------------- the table
# agg TARGET WORKLOAD -> "bw= iops= p50_ns= p99_ns= io= bw_min= bw_max= n=": medians over the
# rounds (io: their sum)
agg() {
  grep "^$1-$2-r" "$W/results.txt" | tr ' ' '\n' | awk -F= '
    $1 ~ /^(bw|iops|p50_ns|p99_ns)$/ { k = $1; c[k]++; v[k, c[k]] = $2 + 0 }
    $1 == "io" { io += $2 }
    function med(k,   i, j, t, m) { m = c[k]
      for (i = 1; i <= m; i++) for (j = i + 1; j <= m; j++) if (v[k, j] < v[k, i]) { t = v[k, i]; v[k, i] = v[k, j]; v[k, j] = t }
      return m % 2 ? v[k, (m + 1) / 2] : (v[k, m / 2] + v[k, m / 2 + 1]) / 2 }
    END { b = med("bw"); printf "bw=%d iops=%.1f p50_ns=%d p99_ns=%d io=%d bw_min=%d bw_max=%d n=%d\n",
      b, med("iops"), med("p50_ns"), med("p99_ns"), io, v["bw", 1], v["bw", c["bw"]], c["bw"] }'
}
# cpu TARGET WORKLOAD -> the CPU time of the export, the replicator and the backup over all the
# rounds' fio runs (fio's start-up included): ms per MiB fio wrote, and % of one CPU
cpu() {
  grep "^$1-$2-r" "$W/results.txt" | tr ' ' '\n' | awk -F= '$1 == "io" { io += $2 } $1 ~ /^(cpu_|wall_)/ { c[$1] += $2 }
    END { m = io / 1048576; if (m <= 0) m = 1; w = c["wall_cs"]; if (w <= 0) w = 1
      printf "export_ms_per_mib=%.1f replicator_ms_per_mib=%.1f backup_ms_per_mib=%.1f export_pct=%.0f replicator_pct=%.0f backup_pct=%.0f wall_s=%.1f\n",
        c["cpu_export"] * 10 / m, c["cpu_replicator"] * 10 / m, c["cpu_backup"] * 10 / m,
        100 * c["cpu_export"] / w, 100 * c["cpu_replicator"] / w, 100 * c["cpu_backup"] / w, w / 100 }'
}
row() {  # row TARGET WORKLOAD REFERENCE
  echo "$(agg "$1" "$2") $(agg "$3" "$2" | sed 's/\([a-z0-9_]*\)=/ref_\1=/g')" | tr ' ' '\n' | awk -F= -v t="$1" -v w="$2" -v r="$3" '
    { v[$1] = $2 } END {
      printf "| %-7s | %-6s | %7.2f (%.2f-%.2f) | %6.0f | %8.0f | %8.0f | %6.1f | %-7s | %5.0f%% | %5.2fx |\n", t, w,
        v["bw"] / 1048576, v["bw_min"] / 1048576, v["bw_max"] / 1048576, v["iops"], v["p50_ns"] / 1000,
        v["p99_ns"] / 1000, v["io"] / 1048576, r, 100 * v["bw"] / v["ref_bw"], v["p99_ns"] / v["ref_p99_ns"] }'
}
{
  echo "| target  | load   | MiB/s median (min-max) | IOPS | p50 (us) | p99 (us) | MiB written | vs | MiB/s vs | p99 vs |"
  echo "|---------|--------|------------------------|------|----------|----------|-------------|----|----------|--------|"
  for wl in rand4k seq1m; do
    row raw $wl raw; row drbd $wl raw; row nbd128 $wl raw; row nbd $wl raw; row raw_rep $wl raw; row romulus $wl raw; row romulus $wl raw_rep
  done
} >"$W/table.md"
sed "s/^/LAB-NOTE $LAB_SCENARIO table /" "$W/table.md"
for wl in rand4k seq1m; do for t in raw drbd nbd128 nbd raw_rep romulus; do
  lab_figure "target=$t load=$wl $(agg $t $wl)"
done; done
for wl in rand4k seq1m; do for t in nbd128 nbd raw_rep romulus; do
  lab_note "cpu $t $wl: $(cpu $t $wl)"
  lab_figure "cpu target=$t load=$wl $(cpu $t $wl)"
done; done
lab_note "romulus epochs: copy complete with epoch $C; $(tr '\n' ';' <"$D/windows.txt" | cut -c1-400)"
for m in pause stopped cut pages; do
  lab_note "romulus $m: idle $(pstat idle 0 $m); fio on raw (no disk data) $(pstat raw_rep 0 $m); fio through romulus (epochs with disk data) $(pstat romulus 1 $m)"
  lab_figure "romulus_$m idle: $(pstat idle 0 $m) raw_rep: $(pstat raw_rep 0 $m) romulus: $(pstat romulus 1 $m)"
done
lab_note "romulus disk data of every epoch after the copy: $SUMS; fio wrote $FIO_W bytes through the export"
lab_figure "romulus_bytes $SUMS fio_written=$FIO_W"
lab_summary "disk bench: rand4k MiB/s raw $(agg raw rand4k | sed 's/ .*//;s/bw=//' | awk '{printf "%.2f", $1/1048576}'), drbd $(agg drbd rand4k | sed 's/ .*//;s/bw=//' | awk '{printf "%.2f", $1/1048576}'), romulus $(agg romulus rand4k | sed 's/ .*//;s/bw=//' | awk '{printf "%.2f", $1/1048576}')"
exit 0
