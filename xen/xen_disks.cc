#include "xen/xen_disks.h"

#include <fcntl.h>
#include <spdlog/spdlog.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <unistd.h>

#include <xxhash.h>

#include <cctype>
#include <cerrno>
#include <cstring>

#include "common/little_endian.h"
#include "common/units.h"
#include "restore/image_chunk_hashes.h"

namespace romulus::xen {

namespace {

// The replica name is part of a file name: the sink's own rules
// (alphanumerics, '-', '_', '.'), and never "." or "..".
bool ValidFilePart(const std::string& n) {
  if (n.empty() || n.size() > 64 || n == "." || n == "..") return false;
  for (char c : n) {
    if (!(std::isalnum(static_cast<unsigned char>(c)) || c == '-' || c == '_' || c == '.')) return false;
  }
  return true;
}

std::string DiskList(std::span<const protocol::DiskInfo> disks) {
  std::string s;
  for (const protocol::DiskInfo& d : disks) {
    s += (s.empty() ? "" : ", ") + protocol::Printable(d.name) + " (id " + std::to_string(d.id) + ", " +
         FormatSize(d.size_bytes) + ")";
  }
  return s.empty() ? "none" : s;
}

constexpr char kClaimMagic[8] = {'R', 'L', 'I', 'N', 'E', 'A', 'G', 'E'};
constexpr size_t kClaimSize = 56;

}  // namespace

void XenDiskSet::LoadClaim(XenDiskImage& im, bool created, uint64_t found_size) {
  im.claim_lineage = im.claim_tag = 0;
  int fd = ::open(ClaimPath(im.path).c_str(), O_RDONLY | O_CLOEXEC);
  im.claim_file = fd >= 0;
  if (fd < 0) return;
  uint8_t b[kClaimSize + 1];
  const ssize_t n = ::pread(fd, b, sizeof b, 0);
  ::close(fd);
  // The claim belongs to the image it was written for: one created anew,
  // resized, or another file under the same name is not that image.
  if (created || found_size != im.size || n != static_cast<ssize_t>(kClaimSize) ||
      std::memcmp(b, kClaimMagic, 8) != 0 || LoadLE64(b + 48) != XXH3_64bits(b, 48) ||
      LoadLE64(b + 24) != im.size || LoadLE64(b + 32) != im.dev || LoadLE64(b + 40) != im.ino) {
    return;
  }
  im.claim_lineage = LoadLE64(b + 8);
  im.claim_tag = im.claim_lineage != 0 ? LoadLE64(b + 16) : 0;
}

Status XenDiskSet::WriteClaim(XenDiskImage& im, uint64_t lineage, uint64_t tag, bool sync) {
  uint8_t b[kClaimSize] = {};
  if (lineage != 0) {
    std::memcpy(b, kClaimMagic, 8);
    StoreLE64(b + 8, lineage);
    StoreLE64(b + 16, tag);
    StoreLE64(b + 24, im.size);
    StoreLE64(b + 32, im.dev);
    StoreLE64(b + 40, im.ino);
    StoreLE64(b + 48, XXH3_64bits(b, 48));
  }
  const std::string path = ClaimPath(im.path);
  int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_CLOEXEC, 0600);
  if (fd < 0) return Status::StorageErrno("opening " + path, errno);
  Status s;
  if (::pwrite(fd, b, sizeof b, 0) != static_cast<ssize_t>(sizeof b)) {
    s = Status::StorageErrno("writing " + path, errno);
  } else if (sync && ::fdatasync(fd) != 0) {
    s = Status::StorageErrno("syncing " + path, errno);
  }
  ::close(fd);
  if (s.ok()) {
    im.claim_file = true;
    im.claim_lineage = lineage;
    im.claim_tag = lineage != 0 ? tag : 0;
  }
  return s;
}

Status XenDiskSet::VoidClaims() {
  for (XenDiskImage& im : images_) {
    im.session_lineage = im.staged_tag = im.committed_tag = 0;
    if (im.claim_file) {
      ROMULUS_RETURN_IF_ERROR(WriteClaim(im, 0, 0, /*sync=*/true).With("voiding the lineage claim of " + im.name));
    }
  }
  return Status::Ok();
}

std::vector<protocol::DiskHeld> XenDiskSet::held() const {
  std::vector<protocol::DiskHeld> out;
  if (!refusal_.empty()) return out;
  for (const XenDiskImage& im : images_) {
    if (im.claim_lineage != 0) out.push_back({im.id, im.claim_lineage, im.claim_tag});
  }
  return out;
}

Status XenDiskSet::SetSessionLineages(std::span<const uint64_t> lineages) {
  for (size_t i = 0; i < images_.size(); ++i) {
    XenDiskImage& im = images_[i];
    im.session_lineage = i < lineages.size() ? lineages[i] : 0;
    im.staged_tag = im.committed_tag = 0;
    if (im.claim_file && (im.claim_lineage == 0 || im.claim_lineage != im.session_lineage)) {
      // Rule 1: this session's writes are not of the claimed front end (or
      // the file claims nothing valid: it must not come back to life).
      ROMULUS_RETURN_IF_ERROR(WriteClaim(im, 0, 0, /*sync=*/true).With("voiding the lineage claim of " + im.name));
    }
  }
  return Status::Ok();
}

void XenDiskSet::StageLineage(uint32_t disk_id, uint64_t lineage, uint64_t tag) {
  XenDiskImage* im = Find(disk_id);
  if (im == nullptr) return;
  im->staged_tag = lineage != 0 && lineage == im->session_lineage ? tag : 0;
}

XenDiskSet::XenDiskSet(XenDiskOptions options)
    : options_(std::move(options)),
      staging_(options_.max_staging_bytes, restore::DiskSpill{options_.dir, options_.max_spill_bytes}) {}

XenDiskSet::~XenDiskSet() { CloseAll(); }

void XenDiskSet::CloseAll() {
  for (XenDiskImage& im : images_) {
    if (im.fd >= 0) ::close(im.fd);
    im.fd = -1;
  }
  images_.clear();
}

std::string XenDiskSet::ImagePath(const std::string& dir, const std::string& replica_name, const std::string& disk) {
  return dir + "/" + replica_name + "." + disk + ".img";
}

Status XenDiskSet::Describe(uint32_t id, uint64_t first_chunk, std::span<protocol::ChunkHash> out) {
  XenDiskImage* im = Find(id);
  if (im == nullptr || im->fd < 0) return Status::Unsupported("disk " + std::to_string(id) + " is not open");
  return restore::HashImageChunks(im->fd, im->size, first_chunk, out);
}

XenDiskImage* XenDiskSet::Find(uint32_t id) {
  for (XenDiskImage& im : images_) {
    if (im.id == id) return &im;
  }
  return nullptr;
}

Status XenDiskSet::BeginSession(const std::string& replica_name, std::span<const protocol::DiskInfo> disks,
                                bool checkpoint) {
  staging_.Clear();
  // The images hold a checkpoint's disks only when one exists and nothing
  // since broke them (a failed apply, a direct epoch never committed).
  const bool keep = checkpoint && refusal_.empty() && !dirty_direct_;
  if (disks.empty()) {
    if (keep && !images_.empty()) {
      return Status::InvalidArgument("this backup holds a checkpoint with disks (" + std::to_string(images_.size()) +
                                     " image(s) in " + options_.dir +
                                     "); refusing a session of the same guest without disks");
    }
    CloseAll();
    direct_ = false;
    session_committed_ = false;
    return Status::Ok();
  }
  if (keep && images_.empty()) {
    // The checkpoint has no disks: images written now would be given to it
    // at activation, and a first epoch written into them would make it
    // refuse. Like any other disk list, wait until it is not the only one.
    return Status::InvalidArgument("this backup's checkpoint has no disks; refusing a session with the disks " +
                                   DiskList(disks) + " while it is the only checkpoint");
  }
  if (options_.dir.empty()) {
    return Status::InvalidArgument("the primary replicates the guest's disks (" + DiskList(disks) +
                                   ") but this backup has no place for them: restart it with restore --xen "
                                   "--disk-dir DIR");
  }
  if (!ValidFilePart(replica_name)) {
    return Status::InvalidArgument("replica name \"" + replica_name + "\" cannot name a disk image file");
  }
  std::vector<XenDiskImage> want;
  for (const protocol::DiskInfo& d : disks) {
    Result<uint32_t> devid = VbdDevid(d.name);
    if (!devid.ok()) return devid.status();
    if (d.size_bytes == 0 || d.size_bytes % 512 != 0) {
      return Status::InvalidArgument("disk " + d.name + ": a size of " + std::to_string(d.size_bytes) +
                                     " bytes is not a whole number of 512-byte sectors");
    }
    for (const XenDiskImage& w : want) {
      if (w.id == d.id || w.devid == *devid) {
        return Status::InvalidArgument("the primary lists disk " + d.name + " (id " + std::to_string(d.id) +
                                       ") twice, or with another disk's id or device number");
      }
    }
    XenDiskImage im;
    im.id = d.id;
    im.size = d.size_bytes;
    im.name = d.name;
    im.devid = *devid;
    im.path = ImagePath(options_.dir, replica_name, d.name);
    want.push_back(std::move(im));
  }
  if (keep && !images_.empty()) {
    // The images are the checkpoint failover would use until this session
    // commits: a session with other disks must not touch them.
    bool same = want.size() == images_.size();
    for (size_t i = 0; same && i < want.size(); ++i) {
      same = want[i].id == images_[i].id && want[i].size == images_[i].size && want[i].name == images_[i].name &&
             want[i].path == images_[i].path;
    }
    if (!same) {
      std::string had;
      for (const XenDiskImage& im : images_) {
        had += (had.empty() ? "" : ", ") + im.name + " (id " + std::to_string(im.id) + ", " + FormatSize(im.size) + ")";
      }
      return Status::InvalidArgument("this backup's checkpoint has the disks " + had + " in " + options_.dir +
                                     "; refusing a session with the disks " + DiskList(disks) +
                                     " (they would overwrite the only checkpoint)");
    }
    direct_ = false;
    session_committed_ = false;
    for (XenDiskImage& im : images_) {
      // The same open images: a new session starts with no lineage state.
      im.session_lineage = im.staged_tag = im.committed_tag = 0;
      LoadClaim(im, /*created=*/false, im.size);
    }
    return Status::Ok();
  }
  // No checkpoint to protect: (re)open and size every image. What an image
  // held before is overwritten by the first epoch's full copy.
  CloseAll();
  std::vector<std::pair<bool, uint64_t>> found;  // per image: created now, size as found
  for (XenDiskImage& im : want) {
    bool created = false;
    im.fd = ::open(im.path.c_str(), O_RDWR | O_CLOEXEC);
    if (im.fd < 0 && errno == ENOENT) {
      im.fd = ::open(im.path.c_str(), O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
      created = true;
    }
    Status s;
    struct stat st {};
    if (im.fd < 0) {
      s = Status::StorageErrno("creating disk image " + im.path, errno);
    } else if (::fstat(im.fd, &st) != 0) {
      s = Status::StorageErrno("examining disk image " + im.path, errno);
    } else if (::ftruncate(im.fd, static_cast<off_t>(im.size)) != 0) {
      s = Status::StorageErrno("sizing disk image " + im.path + " to " + std::to_string(im.size) + " bytes", errno);
    }
    if (!s.ok()) {
      for (XenDiskImage& o : want) {
        if (o.fd >= 0) ::close(o.fd);
      }
      return s;
    }
    im.dev = static_cast<uint64_t>(st.st_dev);
    im.ino = static_cast<uint64_t>(st.st_ino);
    found.emplace_back(created, static_cast<uint64_t>(st.st_size));
  }
  images_ = std::move(want);
  for (size_t i = 0; i < images_.size(); ++i) LoadClaim(images_[i], found[i].first, found[i].second);
  direct_ = true;
  session_committed_ = false;
  spdlog::info("disks of the session: {} image(s) in {}, first epoch written directly (no checkpoint to keep)",
               images_.size(), options_.dir);
  return Status::Ok();
}

Status XenDiskSet::OnDisk(uint64_t epoch, uint32_t disk_id, const protocol::DiskRecord& record) {
  XenDiskImage* im = Find(disk_id);
  if (im == nullptr) return Status::Corruption("Xen sink: record for unknown disk " + std::to_string(disk_id));
  Result<restore::DiskEntry> e = restore::DiskEntryFromRecord(disk_id, im->size, record);
  if (!e.ok()) return e.status().With("Xen sink");
  if (direct_ && !session_committed_) {
    dirty_direct_ = true;  // the images hold an uncommitted epoch from now on
    return restore::ApplyDiskEntry(im->fd, *e, "writing disk " + im->name + " (" + im->path + ")");
  }
  return staging_.Stage(epoch, *e).With("Xen sink");
}

void XenDiskSet::Discard() { staging_.Clear(); }

std::string XenDiskSet::activation_refusal() const {
  if (!refusal_.empty()) return refusal_;
  if (dirty_direct_) {
    return "the disk images hold part of an epoch that never committed; the backup will not resume a guest whose "
           "disk and memory differ";
  }
  return "";
}

Status XenDiskSet::Commit(uint64_t epoch, bool whole) {
  std::string failed;
  Status s = staging_.ForEachEntry([&](const restore::DiskEntry& e) -> Status {
    XenDiskImage* im = Find(e.disk_id);
    if (im == nullptr) return Status::Internal("a staged record for unknown disk " + std::to_string(e.disk_id));
    failed = im->name;
    return restore::ApplyDiskEntry(im->fd, e, im->path);
  });
  staging_.Clear();
  for (size_t i = 0; s.ok() && i < images_.size(); ++i) {
    failed = images_[i].name;
    if (::fdatasync(images_[i].fd) != 0) s = Status::StorageErrno("syncing " + images_[i].path, errno);
  }
  if (!s.ok()) {
    // When in doubt, no claim: the next session copies the disks whole
    // (and this one writes none again).
    for (XenDiskImage& im : images_) {
      (void)WriteClaim(im, 0, 0, /*sync=*/true);
      im.session_lineage = im.committed_tag = 0;
    }
    refusal_ = "disk " + failed + " failed to apply epoch " + std::to_string(epoch) + ": " + s.message() +
               "; the backup will not resume a guest whose disk and memory differ";
    spdlog::error("{} (until a new session's first epoch, a full copy, commits)", refusal_);
    return Status::Storage(refusal_);
  }
  if (!whole) return Status::Ok();  // still a first sync: direct, refused
  // Rule 2: the claim names the session's previous whole commit (synced
  // above, in that commit), never this one.
  for (XenDiskImage& im : images_) {
    if (im.session_lineage != 0 && im.committed_tag != 0) {
      Status c = WriteClaim(im, im.session_lineage, im.committed_tag, /*sync=*/false);
      if (!c.ok()) spdlog::warn("{} (the next session copies {} whole)", c.ToString(), im.name);
    }
    im.committed_tag = im.staged_tag;
  }
  if (!session_committed_) {
    // The session's first epoch carries a full copy of every disk
    // (docs/DISK.md §5.1), so the images are exactly this checkpoint's
    // disks now, whatever an earlier failure left in them. (An incremental
    // resync, §7, must keep this true or keep the refusal.)
    if (!refusal_.empty()) spdlog::info("the disks are consistent again with epoch {}", epoch);
    refusal_.clear();
    dirty_direct_ = false;
  }
  session_committed_ = true;
  return Status::Ok();
}

Status XenDiskSet::ReserveForCommit() {
  const uint64_t need = staging_.write_bytes();
  if (need == 0 || !reserve_supported_ || options_.dir.empty()) return Status::Ok();
  // Plenty of room: skip the fallocate calls (each an extent update). The
  // image sink's rule (sim/image_commit.cc ReserveImageBlocks).
  struct statvfs vfs;
  if (::statvfs(options_.dir.c_str(), &vfs) == 0 && uint64_t{vfs.f_bavail} * vfs.f_frsize > 2 * need + restore::kReserveMargin) {
    return Status::Ok();
  }
  return staging_.ReserveWrites(
      [&](uint32_t id) {
        XenDiskImage* im = Find(id);
        return im == nullptr ? -1 : im->fd;
      },
      &reserve_supported_);
}

Status CommitMemoryThenDisks(uint64_t epoch, const std::function<Status()>& memory, XenDiskSet* disks,
                             bool whole) {
  // A full disk found now fails the commit before memory N is taken.
  Status r = disks->ReserveForCommit();
  if (!r.ok()) {
    disks->Discard();
    return r.With("epoch " + std::to_string(epoch) + " (the images still hold the previous checkpoint)");
  }
  Status m = memory();
  if (!m.ok()) {
    // Memory N was not taken: the images must stay the previous checkpoint's.
    disks->Discard();
    return m;
  }
  return disks->Commit(epoch, whole);
}

}  // namespace romulus::xen
