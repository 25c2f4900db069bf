#!/bin/sh
# /lab/vif-lab — the lab's vif hotplug script (xl: vif = [ '...,script=/lab/vif-lab' ]).
# libxl runs it with "online"/"offline" and the vif's name in $vif. No bridge: dom0 gets
# 10.77.0.1/24 on the vif itself, the guest 10.77.0.2/24 (domu-init.sh, lab_ip=).
# xen-netback connects the vif only once hotplug-status says "connected".
# An HVM guest's emulated NIC (type=ioemu): libxl (and a Romulus backup, the same way) runs it
# with "add type_if=tap" as arguments and the tap vifD.N-emu in $INTERFACE ($vif still names
# the netback vif); the tap gets 10.78.0.1/24 (the guest 10.78.0.2), a subnet of its own so
# that dom0 routes to the tap, not to the vif beside it.
# A vif with xl's vifname= (the backend's vifname node) is renamed to it, its tap to
# <vifname>-emu, as Xen's vif-common.sh does: only while no interface has that name.
for _a in "$@"; do case $_a in type_if=*) type_if=${_a#type_if=} ;; esac; done
vifname=$(xenstore-read "$XENBUS_PATH/vifname" 2>/dev/null)
# rename DEV NAME -> the interface's name afterwards
rename() {
  if [ -n "$2" ] && ! ip link show "$2" >/dev/null 2>&1 && ip link set "$1" name "$2"; then echo "$2"; else echo "$1"; fi
}
case ${1:-} in
  add)
    [ "${type_if:-}" = tap ] || exit 0
    dev=$(rename "$INTERFACE" "${vifname:+$vifname-emu}")
    ip link set "$dev" up || exit 1
    ip addr add 10.78.0.1/24 dev "$dev" 2>/dev/null
    ;;
  online)
    dev=$(rename "$vif" "$vifname")
    ip link set "$dev" up || exit 1
    ip addr add 10.77.0.1/24 dev "$dev" 2>/dev/null
    xenstore-write "$XENBUS_PATH/hotplug-status" connected || exit 1
    ;;
  offline)
    ip link set "$vif" down 2>/dev/null  # (a renamed one is gone with its guest)
    ;;
esac
exit 0
