#!/bin/sh
# /init of the lab's PV domU (busybox): a live, checkable workload.
# Every second: prints "COUNTER <n>" on hvc0 and dirties memory in a tmpfs file:
#   lab_rand_kb  KiB of fresh random data (incompressible), default 1024
#   lab_same_kb  KiB rewritten in place with identical content (dirty but unchanged), default 3072
# (both can be set on the guest's kernel command line). The counter lives only in the
# guest's memory, so after a Remus failover it must continue, not restart from 1.
mount -t proc proc /proc
mount -t sysfs sys /sys
mount -t devtmpfs dev /dev 2>/dev/null
mount -t tmpfs -o size=32m tmpfs /mnt
rand_kb=1024; same_kb=3072
for a in $(cat /proc/cmdline); do
  case $a in lab_rand_kb=*) rand_kb=${a#*=};; lab_same_kb=*) same_kb=${a#*=};; esac
done
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
