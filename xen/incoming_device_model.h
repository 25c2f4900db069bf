// The replica's device model, started at activation (docs/DEVICE-MODEL.md
// §3): an HVM guest's emulated devices run in a qemu-xen process in dom0,
// which the backup starts from the primary's typed facts and the last
// committed epoch's device state, the way libxl starts one for an incoming
// HVM guest (`xl restore`). Only xen/*.cc include this (Xen headers).
#pragma once

#include <sys/types.h>

#include <chrono>
#include <cstdint>
#include <map>
#include <span>
#include <string>

#include "common/status.h"
#include "devicemodel/device_model_config.h"
#include "devicemodel/device_model_process.h"
#include "xen/xen_env.h"

namespace romulus::xen {

struct IncomingDeviceModelOptions {
  std::string binary;    // qemu-system-xen, as libxl runs it
  std::string log_dir;   // its log (qemu-dm-NAME.log) and file serial ports (serial-NAME[-i].log)
  std::chrono::milliseconds wait{60000};  // until it loaded the state and runs
  std::string kernel;    // a directly booted guest's (already allowed by the backup's policy)
  std::map<unsigned, std::string> ide_paths;  // emulated IDE slot -> the block device of the replica's disk
};

// Starts the device model of paused HVM domain `domid`, hands it `state`
// (the checkpoint's QEVM stream, through an inherited memfd: -incoming
// fd:N), waits until it reports "running" in xenstore (device-model/D/
// state) and QEMU's run state is running (continued if it is not), all
// within opts.wait. On success the domain may be unpaused; the process
// outlives the backup (xl destroy ends it, as libxl's). On failure it is
// killed, its nodes removed, and the error names its log.
// REQUIRES: the domain paused, restored, introduced to xenstore.
Result<devicemodel::ProcessRef> StartIncomingDeviceModel(XenHandles* h, uint32_t domid, const std::string& name,
                                       const devicemodel::DeviceModelConfig& config,
                                       std::span<const uint8_t> state, const IncomingDeviceModelOptions& opts);

// The release of the device model binary the backup would start (its
// `--version`, bounded to 10 s); kInvalidArgument when it says none.
Result<devicemodel::QemuVersion> DeviceModelBinaryVersion(const std::string& binary);

// Stops a device model StartIncomingDeviceModel started (SIGTERM, 3 s, then
// SIGKILL; an invalid `dm` stops nothing) and removes its xenstore nodes and
// QMP sockets (a replica destroyed before or after a failed activation).
void StopIncomingDeviceModel(XenHandles* h, uint32_t domid, const devicemodel::ProcessRef& dm);

// The device model a killed predecessor started for domain `domid` (its
// image/device-model-pid), before that domain is destroyed: stopped only if
// that pid still runs a device model of this domain (a pid can be reused);
// its nodes and QMP sockets are removed either way.
void StopLeftoverDeviceModel(XenHandles* h, uint32_t domid);

}  // namespace romulus::xen
