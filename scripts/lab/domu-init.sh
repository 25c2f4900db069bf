#!/bin/sh
# /init of the lab's PV domU (busybox): a live, checkable workload.
# Every second: prints "COUNTER <n>" on hvc0 and dirties memory in a tmpfs file:
#   lab_rand_kb  KiB of fresh random data (incompressible), default 1024
#   lab_same_kb  KiB rewritten in place with identical content (dirty but unchanged), default 3072
#   lab_ip       A.B.C.D/N for eth0 (PV NIC), default none
#   lab_disk     a data disk (e.g. /dev/xvdb, xen-blkfront) for `labdisk write`: a numbered,
#                checksummed 4 KiB record every lab_disk_ms (default 300) ms, each followed by
#                "DISKREC <n>" once its write returned (labdisk.c); default none
#   lab_disk_max stop the writer after record n (it prints "DISKDONE <n>"), default 0: never
#   lab_fs       a disk holding an ext4 filesystem: mounted on /fs, `labdisk fswrite /fs/records`
#                appends a record every lab_fs_ms (default 200) ms with fsync ("FSREC <n>"),
#                up to lab_fs_max (default 60), then the filesystem is unmounted ("FSUMOUNTED")
# (all can be set on the guest's kernel command line). The counter lives only in the
# guest's memory, so after a Remus failover it must continue, not restart from 1.
mount -t proc proc /proc
mount -t sysfs sys /sys
mount -t devtmpfs dev /dev 2>/dev/null
mount -t tmpfs -o size=32m tmpfs /mnt
rand_kb=1024; same_kb=3072; ip=""; disk=""; disk_ms=300; disk_max=0; fs=""; fs_ms=200; fs_max=60
for a in $(cat /proc/cmdline); do
  case $a in lab_rand_kb=*) rand_kb=${a#*=};; lab_same_kb=*) same_kb=${a#*=};; lab_ip=*) ip=${a#*=};;
    lab_disk=*) disk=${a#*=};; lab_disk_ms=*) disk_ms=${a#*=};; lab_disk_max=*) disk_max=${a#*=};;
    lab_fs=*) fs=${a#*=};; lab_fs_ms=*) fs_ms=${a#*=};; lab_fs_max=*) fs_max=${a#*=};; esac
done
# lab_ip=A.B.C.D/N: bring up the PV NIC (xen-netfront) with that address, so dom0 can
# talk to the guest through its vif (the netbuf-vif scenario).
if [ -n "$ip" ]; then
  lab-load-modules
  i=0; while [ ! -e /sys/class/net/eth0 ] && [ $i -lt 100 ]; do i=$((i+1)); sleep 0.1; done
  ip link set lo up; ip addr add "$ip" dev eth0 && ip link set eth0 up && echo "DOMU-NET eth0 $ip" \
    || echo "DOMU-NET-FAILED"
  # Output commit holds the guest's ARP requests with the rest of its output until the backup
  # acks, and the labs' held checks stop the backup for 3 s. With the kernel's defaults (3
  # probes 1 s apart) the guest's entry for dom0 can fail during such a hold, and the kernel
  # then drops the replies queued behind it (seen in CI: 7 pings lost, seq 9-15, on the
  # emulated NIC). That is the guest's own neighbour table giving up, not the plug dropping:
  # 30 probes keep the checks about the plug (a guest on a real network behind a stalled
  # backup would see the same, and its TCP would retransmit).
  for k in ucast_solicit mcast_solicit; do echo 30 > /proc/sys/net/ipv4/neigh/eth0/$k 2>/dev/null; done
fi
# lab_disk=DEV: the disk writer runs beside the counter, from its own memory (a resumed guest
# continues its loop); its lines go to the console as the counter's do.
if [ -n "$disk" ]; then
  lab-load-modules
  i=0; while [ ! -b "$disk" ] && [ $i -lt 300 ]; do i=$((i+1)); sleep 0.1; done
  if [ -b "$disk" ]; then
    ( labdisk write "$disk" 1 "$disk_ms" "" "$disk_max"; echo "DISKWRITER-EXIT rc=$?" ) &
  else
    echo "DISKERR no $disk after 30 s"
  fi
fi
# lab_fs=DEV: the same through ext4 with fsync; a clean unmount at the end, so that the
# backup's copy must then pass a strict fsck.
if [ -n "$fs" ]; then
  lab-load-modules
  i=0; while [ ! -b "$fs" ] && [ $i -lt 300 ]; do i=$((i+1)); sleep 0.1; done
  mkdir -p /fs
  if mount -t ext4 "$fs" /fs; then
    ( labdisk fswrite /fs/records 1 "$fs_ms" "" "$fs_max"; rc=$?
      if umount /fs; then echo "FSUMOUNTED rc=$rc"; else echo "FSERR umount failed"; fi ) &
  else
    echo "FSERR mount $fs failed"
  fi
fi
dd if=/dev/urandom of=/mnt/base bs=1k count=$same_kb 2>/dev/null
cp /mnt/base /mnt/same
echo "DOMU-UP rand_kb=$rand_kb same_kb=$same_kb"
n=0
while :; do
  n=$((n+1))
  echo "COUNTER $n"
  [ "$rand_kb" -gt 0 ] && dd if=/dev/urandom of=/mnt/rand bs=1k count=$rand_kb conv=notrunc 2>/dev/null
  [ "$same_kb" -gt 0 ] && dd if=/mnt/base of=/mnt/same bs=1k count=$same_kb conv=notrunc 2>/dev/null
  sleep 1
done
