#!/bin/sh
# /lab/block-lab — the lab's block hotplug script (xl: disk = [ '...,script=/lab/block-lab' ]).
# Xen's own /etc/xen/scripts/block is bash and sources a library of helpers; the busybox dom0
# has neither, so the lab brings this one (written for the lab: phy: block devices only).
# libxl runs it with "add" or "remove" and XENBUS_PATH = the vbd's backend directory in
# xenstore. xen-blkback opens the device only once "physical-device" (major:minor in hex)
# appears there; libxl then waits for the script's exit status.
log() { echo "block-lab $*" >>/run/lab/block-lab.log 2>/dev/null; }
case ${1:-} in
  add)
    dev=$(xenstore-read "$XENBUS_PATH/params") || { log "add $XENBUS_PATH: no params"; exit 1; }
    [ -b "$dev" ] || { log "add $XENBUS_PATH: $dev is not a block device";
      xenstore-write "$XENBUS_PATH/hotplug-error" "$dev is not a block device" "$XENBUS_PATH/hotplug-status" error; exit 1; }
    mm=$(stat -L -c '%t:%T' "$dev") || exit 1
    xenstore-write "$XENBUS_PATH/physical-device" "$mm" "$XENBUS_PATH/physical-device-path" "$dev" || exit 1
    xenstore-write "$XENBUS_PATH/hotplug-status" connected || exit 1
    log "add $XENBUS_PATH: $dev ($mm)"
    ;;
  remove)
    log "remove $XENBUS_PATH"
    ;;
esac
exit 0
