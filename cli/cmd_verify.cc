// romulus verify: proves a backup image of a simulated guest is a real
// checkpoint. The simulated workload is deterministic, so the guest's memory
// after k steps is a pure function of (spec, k): replay k steps on a fresh
// guest and compare byte for byte with the image. A partial epoch applied to
// the image, a page from the wrong epoch, or a state blob that does not
// match its pages all show up as a mismatch.
//
// Strictly read-only: the files are inspected through sim::ImageView, which
// opens them O_RDONLY, creates nothing and applies a pending journal record
// in memory only. Exit 0 iff exactly one committed checkpoint is recoverable
// (the one a restarted backup would hold) and it verifies.
#include <spdlog/spdlog.h>

#include <sys/mman.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <iostream>

#include "cli/commands.h"
#include "cli/options.h"
#include "common/digest.h"
#include "sim/image_view.h"
#include "sim/sim_disk.h"
#include "sim/sim_guest.h"
#include "sim/sim_spec.h"

namespace romulus::cli {

namespace {
alignas(64) const uint8_t kZeroPage[4096] = {};
}  // namespace

int RunVerify(int argc, char** argv) {
  const char kCmd[] = "verify";
  po::options_description desc("Options");
  desc.add_options()
      ("image", po::value<std::string>(), "backup image written by `romulus restore --image`")
      ("json", po::bool_switch(), "print one JSON object instead of a sentence");
  int code = 0;
  auto vm = ParseOptions(kCmd, "--image PATH [--json]", desc, argc, argv, &code);
  if (!vm) return code;
  if (!vm->count("image")) {
    UsageError(kCmd, "--image PATH is required");
    return kExitUsage;
  }
  const std::string path = (*vm)["image"].as<std::string>();
  auto view = sim::ImageView::Open(path);
  if (!view.ok()) {
    spdlog::error("{}", view.status().ToString());
    return kExitFailure;
  }
  const sim::ImageView& v = **view;
  if (!v.note().empty()) spdlog::info("{}: {}", path, v.note());
  auto spec = sim::ParseSimSpec(v.identity());
  if (!spec.ok()) {
    spdlog::error("the image's guest '{}' is not a simulated guest: {}", v.identity(),
                  spec.status().ToString());
    return kExitFailure;
  }
  if (spec->pages() != v.guest_pages()) {
    spdlog::error("the image's guest '{}' is not {} pages", v.identity(), v.guest_pages());
    return kExitFailure;
  }
  const uint8_t* image = v.image();
  // Only pages that may hold data are read, on either side: a hole of the
  // image and a page the replay never wrote are both zeros (so a sparse
  // 64 GiB image costs its data, not its size).
  auto image_may_hold = [&v](uint64_t pfn) { return v.MayHoldData(pfn); };
  auto restored = sim::SimGuest::Restore(*spec, {image, spec->size_bytes}, v.state(), image_may_hold);
  if (!restored.ok()) {
    spdlog::error("committed state does not load: {}", restored.status().ToString());
    return kExitFailure;
  }
  const uint64_t steps = (*restored)->steps();
  auto replay = sim::SimGuest::Create(*spec);
  if (!replay.ok()) {
    spdlog::error("{}", replay.status().ToString());
    return kExitFailure;
  }
  // A guest with a disk replays its writer too: onto a scratch in-memory
  // file (verify writes nothing next to the image); the committed disk
  // itself is checked below against the records its memory counts.
  int scratch_disk = -1;
  if (spec->disk_bytes > 0) {
    scratch_disk = ::memfd_create("romulus-verify-disk", MFD_CLOEXEC);
    if (scratch_disk < 0 || ::ftruncate(scratch_disk, static_cast<off_t>(spec->disk_bytes)) != 0) {
      spdlog::error("replay: cannot make a scratch disk: {}", std::strerror(errno));
      return kExitFailure;
    }
    Status opened = (*replay)->OpenDisk("/proc/self/fd/" + std::to_string(scratch_disk));
    if (!opened.ok()) {
      spdlog::error("replay: {}", opened.ToString());
      return kExitFailure;
    }
  }
  Status st = (*replay)->RunSteps(steps);
  if (!st.ok()) {
    spdlog::error("replay: {}", st.ToString());
    return kExitFailure;
  }
  uint64_t image_digest = 0, replay_digest = 0, differing_pages = 0;
  const uint8_t* replayed = (*replay)->memory();
  for (uint64_t pfn = 0; pfn < v.guest_pages(); ++pfn) {
    const bool in_image = v.MayHoldData(pfn), in_replay = (*replay)->MayHoldData(pfn);
    if (!in_image && !in_replay) continue;  // zeros on both sides, unread
    const uint8_t* a = image + pfn * 4096;
    const uint8_t* b = replayed + pfn * 4096;
    if (in_image) image_digest += PageHash(pfn, a);
    if (in_replay) replay_digest += PageHash(pfn, b);
    if (std::memcmp(in_image ? a : kZeroPage, in_replay ? b : kZeroPage, 4096) != 0) ++differing_pages;
  }
  bool match = differing_pages == 0 && image_digest == replay_digest &&
               image_digest == v.recorded_digest();
  // Disks (issue 13): each disk as the checkpoint has it must match its
  // recorded digest, and the simulated guest's disk must hold exactly the
  // records its committed memory says were written (never one from beyond
  // the checkpoint, never a hole before it).
  std::string disk_report;
  for (const sim::DiskState& d : v.disks()) {
    if (!d.has_digest) continue;
    auto dg = v.DiskDigest(d.id);
    if (!dg.ok() || *dg != d.digest) {
      match = false;
      disk_report += " disk " + std::to_string(d.id) + " (" + d.name + ") does not match its recorded digest" +
                     (dg.ok() ? "" : ": " + dg.status().ToString()) + ";";
    }
  }
  uint64_t disk_records = 0;
  if (spec->disk_bytes > 0) {
    auto records = sim::SimDiskRecordsInState(v.state());
    if (!records.ok()) {
      match = false;
      disk_report += " " + records.status().ToString() + ";";
    } else if (v.disks().empty()) {
      match = false;
      disk_report += " the guest has a disk but the checkpoint holds none;";
    } else {
      disk_records = *records;
      const uint32_t id = v.disks().front().id;
      Status ds = sim::CheckSimDisk(*spec, disk_records, [&](uint64_t off, std::span<uint8_t> out) {
        return v.ReadDisk(id, off, out);
      });
      if (!ds.ok()) {
        match = false;
        disk_report += " disk: " + ds.ToString() + ";";
      }
    }
  }
  if ((*vm)["json"].as<bool>()) {
    std::printf("{\"epoch\":%llu,\"steps\":%llu,\"digest\":\"%s\",\"replay_digest\":\"%s\","
                "\"recorded_digest\":\"%s\",\"differing_pages\":%llu,\"disks\":%zu,\"disk_records\":%llu,"
                "\"match\":%s}\n",
                static_cast<unsigned long long>(v.epoch()),
                static_cast<unsigned long long>(steps), DigestHex(image_digest).c_str(),
                DigestHex(replay_digest).c_str(), DigestHex(v.recorded_digest()).c_str(),
                static_cast<unsigned long long>(differing_pages), v.disks().size(),
                static_cast<unsigned long long>(disk_records), match ? "true" : "false");
  } else if (match) {
    std::printf("%s: epoch %llu is a consistent checkpoint: the guest after %llu steps, digest %s%s\n",
                path.c_str(), static_cast<unsigned long long>(v.epoch()),
                static_cast<unsigned long long>(steps), DigestHex(image_digest).c_str(),
                spec->disk_bytes > 0 ? (", its disk holding exactly its " + std::to_string(disk_records) +
                                        " records").c_str()
                                     : "");
  } else {
    std::printf("%s: epoch %llu is NOT consistent: %llu pages differ from the guest after %llu steps;%s\n",
                path.c_str(), static_cast<unsigned long long>(v.epoch()),
                static_cast<unsigned long long>(differing_pages), static_cast<unsigned long long>(steps),
                disk_report.c_str());
  }
  return match ? kExitOk : kExitFailure;
}

}  // namespace romulus::cli
