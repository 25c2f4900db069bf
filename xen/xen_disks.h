// The Xen backup's disks (docs/DISK.md §6, §8): one sparse raw image per
// disk of the session, DIR/<replica name>.<disk name>.img (restore --xen
// --disk-dir DIR), holding the disk as of the checkpoint the sink would
// activate. Xen-free: XenSink (xen/xen_backup.cc) drives it, tests drive it
// alone (tests/xen/xen_disks_test.cc).
//
// Staging. The open epoch's records are staged (restore::DiskStaging: in
// memory up to restore --max-disk-staging, the rest of a larger epoch in a
// spill file in DIR up to --max-disk-spill; beyond both the epoch is
// refused OutOfRange → ERROR resource) and applied only by
// Commit, which XenSink calls after libxenguest took the memory checkpoint
// (CommitMemoryThenDisks). Discard drops them.
//
// Direct first epoch. While the sink has no checkpoint its disks could
// belong to (nothing committed, no held replica, or the images are known to
// differ from the checkpoint's memory), nothing can be lost by writing into
// the images at once: the session's first epoch, a full copy of each disk,
// is then written as it arrives, unbounded by the staging limit, and Commit
// only syncs. Otherwise (a resync while a held replica exists) the first
// epoch is staged like any other, so until the new session's first commit
// the images still hold the held replica's checkpoint.
//
// When applying fails after the memory checkpoint was taken (EIO, ENOSPC),
// memory N and the images are no longer one checkpoint: Commit returns the
// error (no ACK) and activation_refusal() says why from then on, until a
// later session's first epoch (a full copy of every disk) commits whole.
//
// Lineage claims (docs/DISK.md §7.2). Beside each image, IMAGE.lineage
// says "this image holds what front end L had at its tag T, except in
// regions L changed after T" (56 bytes: "RLINEAGE", u64 lineage, u64 tag,
// u64 image size, u64 st_dev, u64 st_ino of the image, u64 XXH3 of the 48
// before; anything else, or an image that was created anew or has another
// size or inode, is no claim), so a restarted backup can be brought up to
// date with only the regions changed since T. It is kept true by these
// rules: (1) before anything of a session whose lineage is not L touches an
// image, any claim file is voided (zeros, fdatasync); so it is before an
// activated guest runs on the images (VoidClaims); (2) a whole
// commit N writes the claim of the session's commit before it (N-1), in
// place and without a sync: whatever version of the file survives a crash
// names a tag whose content was synced before, and everything written over
// it since came from L's later tags, in regions L changed after T (which
// the copy since T rewrites). A failed apply voids the claim too.
//
// Threading: every call comes from the sink's one caller thread.
#pragma once

#include <cstdint>
#include <functional>
#include <span>
#include <string>
#include <vector>

#include "common/status.h"
#include "protocol/disk_digests.h"
#include "protocol/messages.h"
#include "restore/disk_staging.h"
#include "xen/vbd_spec.h"

namespace romulus::xen {

struct XenDiskOptions {
  std::string dir;  // --disk-dir; "" = this backup refuses a primary with disks
  size_t max_staging_bytes = size_t{64} << 20;  // --max-disk-staging
  uint64_t max_spill_bytes = 0;                 // --max-disk-spill, into dir
};

struct XenDiskImage {
  uint32_t id = 0;
  uint64_t size = 0;
  std::string name;  // vdev, "xvdb"
  uint32_t devid = 0;
  std::string path;
  int fd = -1;
  // What the lineage file claims (0: nothing), the session's lineage for
  // this disk (0: none), the tag staged for the open epoch, and the tag of
  // the session's last whole commit (written as the claim at the next).
  uint64_t claim_lineage = 0, claim_tag = 0;
  bool claim_file = false;  // a claim file exists (valid or not)
  uint64_t dev = 0, ino = 0;  // the image file's identity
  uint64_t session_lineage = 0, staged_tag = 0, committed_tag = 0;
};

class XenDiskSet {
 public:
  explicit XenDiskSet(XenDiskOptions options);
  ~XenDiskSet();
  XenDiskSet(const XenDiskSet&) = delete;
  XenDiskSet& operator=(const XenDiskSet&) = delete;

  // A new session's disks. replica_name names the files (validated again
  // here: it becomes part of a path). checkpoint: the sink holds a
  // checkpoint (committed or held) whose disks the images are. Refuses:
  // disks without a --disk-dir, a bad or repeated disk name, and, while a
  // checkpoint whose images are consistent exists, a disk list other than
  // the images' (they are that checkpoint's disks; a checkpoint without
  // disks gets none added either). Creates each image or
  // sizes it (only while no such checkpoint exists: a kept image is left
  // as it is).
  Status BeginSession(const std::string& replica_name, std::span<const protocol::DiskInfo> disks,
                      bool checkpoint);
  // One record of the open epoch: written at once (direct first epoch) or
  // staged. Corruption for an unknown disk or a range beyond it.
  Status OnDisk(uint64_t epoch, uint32_t disk_id, const protocol::DiskRecord& record);
  // Drops the staged records (the images are untouched).
  void Discard();
  // After the memory checkpoint `epoch` was taken: applies the staged
  // records in order (FLUSH: fdatasync of that image), then fdatasync of
  // each image. Storage on failure, and from then on activation_refusal().
  // whole = false: an epoch of a streaming copy whose disks are not whole
  // yet (docs/DISK.md §7.1): nothing is a checkpoint yet, so the session
  // keeps writing its records as they arrive (no staging, no bound) and the
  // images stay refused until the first whole epoch commits.
  Status Commit(uint64_t epoch, bool whole = true);
  // Before memory N is taken: when DIR's free space is short, allocates the
  // blocks the staged writes will fill, so a full disk fails the commit
  // while the images still are N-1's (ERROR resource, still resumable)
  // instead of failing the apply after memory N (which refuses activation).
  Status ReserveForCommit();

  // Lineage claims (see above). After BeginSession: each image's valid
  // claim. SetSessionLineages (one per disk of the session, 0: none; before
  // any record) voids the claims of other lineages durably.
  // StageLineage: the open epoch's tag of the disk.
  std::vector<protocol::DiskHeld> held() const;
  Status SetSessionLineages(std::span<const uint64_t> lineages);
  // Voids every image's claim durably (an activated guest writes them).
  Status VoidClaims();
  void StageLineage(uint32_t disk_id, uint64_t lineage, uint64_t tag);
  static std::string ClaimPath(const std::string& image_path) { return image_path + ".lineage"; }
  // After BeginSession: the hashes of disk `id`'s chunks from first_chunk,
  // as its image is now (DISK_DIGESTS, docs/DISK.md §7.4). Unsupported for
  // a disk the session does not have.
  Status Describe(uint32_t id, uint64_t first_chunk, std::span<protocol::ChunkHash> out);

  // "" when the images are the checkpoint's disks; else why a guest must
  // not be resumed on them.
  std::string activation_refusal() const;
  // The session's images, in HELLO order.
  const std::vector<XenDiskImage>& images() const { return images_; }
  bool has_disks() const { return !images_.empty(); }
  bool direct() const { return direct_; }
  uint64_t staged_bytes() const { return staging_.size(); }
  uint64_t spilled_bytes() const { return staging_.spilled_bytes(); }
  static std::string ImagePath(const std::string& dir, const std::string& replica_name, const std::string& disk);

 private:
  void CloseAll();
  XenDiskImage* Find(uint32_t id);
  void LoadClaim(XenDiskImage& im, bool created, uint64_t found_size);
  Status WriteClaim(XenDiskImage& im, uint64_t lineage, uint64_t tag, bool sync);

  XenDiskOptions options_;
  std::vector<XenDiskImage> images_;
  restore::DiskStaging staging_;
  bool reserve_supported_ = true;  // false once DIR's filesystem refused fallocate
  bool direct_ = false;             // this session's first epoch is written as it arrives
  bool session_committed_ = false;  // a commit happened in this session
  bool dirty_direct_ = false;       // a direct epoch was written and not committed
  std::string refusal_;
};

// Commit(N) of a sink with disks, in the one order that keeps memory and
// disk one checkpoint: memory first (libxenguest's checkpoint callback);
// only when that succeeded, the disks. A failed memory commit drops the
// staged records and leaves the images as they were (the previous
// checkpoint's); a failed disk apply is reported by disks->Commit.
Status CommitMemoryThenDisks(uint64_t epoch, const std::function<Status()>& memory, XenDiskSet* disks,
                             bool whole = true);

}  // namespace romulus::xen
