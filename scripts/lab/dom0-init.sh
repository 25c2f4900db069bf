#!/bin/sh
# /init of the Xen lab's dom0 (busybox ash). Brings up the Xen toolstack (LAB-NOTES pitfall 6),
# runs every scenario in /lab/scenarios (sorted), reports by serial-log markers, powers off
# through isa-debug-exit. Markers: LAB-DOM0-INIT, LAB-DOM0-READY, LAB-SCENARIO-BEGIN <name>,
# LAB-SCENARIO-END <name> rc=<n>, LAB-ALL-DONE, LAB-FATAL <reason>.
export PATH=/usr/lib/xen-4.17/bin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
export HOME=/root
mount -t proc proc /proc
mount -t sysfs sys /sys
mount -t devtmpfs dev /dev
mkdir -p /dev/pts /dev/shm
mount -t devpts devpts /dev/pts
mount -t tmpfs tmpfs /dev/shm
mount -t tmpfs -o mode=755 tmpfs /run
mkdir -p /run/xen /run/xenstored /run/lab /var/log/xen/console /var/lib/xen /var/lib/xenstored
echo "LAB-DOM0-INIT uptime=$(cut -d' ' -f1 /proc/uptime)"

fatal() { echo "LAB-FATAL $*"; sleep 1; lab-exit 2; }

[ -f /lab/env ] && . /lab/env
# the Xen tools' directory: /usr/lib/xen-4.17/bin (Debian 12) or /usr/lib/xen-4.20/bin (Debian 13)
[ -n "${LAB_XENBIN:-}" ] && export PATH=$LAB_XENBIN:$PATH
lab-load-modules || fatal "loading xen modules failed"
mount -t xenfs xenfs /proc/xen || fatal "mount xenfs failed"
ip link set lo up || fatal "loopback up failed"
hostname dom0

xenstored --pid-file=/run/xenstored.pid || fatal "xenstored failed"
i=0; while [ ! -S /run/xenstored/socket ]; do i=$((i+1)); [ $i -lt 100 ] || fatal "no xenstored socket"; sleep 0.1; done
xen-init-dom0 >/run/lab/xen-init-dom0.log 2>&1 || { cat /run/lab/xen-init-dom0.log; fatal "xen-init-dom0 failed"; }
xenconsoled --log=guest --log-dir=/var/log/xen/console || fatal "xenconsoled failed"
xl info >/run/lab/xl-info.txt 2>&1 || { cat /run/lab/xl-info.txt; fatal "xl info failed"; }
# virt_caps: "pv hvm hap shadow" on the lab's shadow build, "pv hvm hap" on Debian's stock
# hypervisor (TCG's -cpu max has SVM + NPT). PVH guests need hvm; PV log-dirty needs shadow.
caps=$(sed -n 's/^virt_caps *: *//p' /run/lab/xl-info.txt)
echo "LAB-DOM0-READY uptime=$(cut -d' ' -f1 /proc/uptime) xen=$(sed -n 's/^xen_version *: //p' /run/lab/xl-info.txt) free_mb=$(sed -n 's/^free_memory *: //p' /run/lab/xl-info.txt) romulus=${LAB_ROMULUS:-none} guest=${LAB_GUEST_TYPE:-pv} virt_caps=$(echo $caps | tr ' ' ,)"
case ${LAB_GUEST_TYPE:-pv} in
  pvh|hvm) case " $caps " in *" hvm "*) ;; *) fatal "${LAB_GUEST_TYPE} guests need HVM support; this hypervisor has virt_caps '$caps'" ;; esac ;;
  pv) case " $caps " in *" shadow "*) ;; *) echo "LAB-NOTE dom0 no shadow paging (virt_caps '$caps'): PV log-dirty (xl remus, romulus) will fail" ;; esac ;;
esac

. /lab/dom0-lib.sh
for s in /lab/scenarios/*.sh; do
  [ -f "$s" ] || continue
  name=$(basename "$s" .sh); name=${name#[0-9][0-9]-}
  mkdir -p "/run/lab/$name"
  echo "LAB-SCENARIO-BEGIN $name uptime=$(cut -d' ' -f1 /proc/uptime)"
  ( cd "/run/lab/$name" && LAB_SCENARIO=$name LAB_WORK=/run/lab/$name \
      timeout "${LAB_SCENARIO_TIMEOUT:-300}" sh "$s" ) 2>&1
  rc=$?
  echo "LAB-SCENARIO-END $name rc=$rc uptime=$(cut -d' ' -f1 /proc/uptime)"
  dmesg | grep -aiE 'segfault|general protection|traps:' | tail -n 5 | sed "s/^/LAB-NOTE $name dmesg: /"
  # Guests that died in this scenario, in the hypervisor's words (a PVH guest's triple fault is
  # reported as a reboot: docs/XEN-LAB.md), also when the scenario passed (the xl remus
  # baseline kills its primary anyway). The ring is cleared for the next scenario.
  xl dmesg -c 2>/dev/null | grep -aE 'Triple fault|domain_crash|crashed' | tail -n 5 | sed "s/^/LAB-NOTE $name hypervisor: /"
  LAB_SCENARIO=cleanup lab_destroy_all
done
echo "LAB-ALL-DONE uptime=$(cut -d' ' -f1 /proc/uptime)"
lab-exit 1
