#include "sim/image_journal.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>
#include <xxhash.h>

#include <algorithm>
#include <cerrno>
#include <csignal>
#include <cstring>
#include <memory>

#include "common/little_endian.h"

namespace romulus::sim {

namespace {

// PATH.state, format version 1, little-endian:
//   0  "RIMGSTAT"   8 u32 version   12 u32 flags (bit 0: holds a committed epoch)
//  16 u64 epoch    24 u64 guest pages   32 u64 image digest
//  40 u32 identity length   44 u32 state length   48 identity, state
//  then u64 XXH3 of every byte before it.
constexpr char kStateMagic[8] = {'R', 'I', 'M', 'G', 'S', 'T', 'A', 'T'};
// Version 2 (written when the guest has disks) appends, after the state:
//   u32 disk count, per disk: u32 id, u32 flags (bit 0: digest kept),
//   u64 size, u64 digest, u32 name length, name.
// Version 3 (written when some disk's lineage or tag is known; else version
// 2, which older readers know) adds to each disk, after the name length:
// u64 lineage, u64 tag (what the disk holds, docs/DISK.md §7.2; 0, 0: not
// known).
constexpr uint32_t kStateFileVersion = 1;
constexpr uint32_t kStateFileVersionDisks = 2;
constexpr uint32_t kStateFileVersionLineage = 3;
constexpr size_t kDiskStateHeadV2 = 28;
constexpr size_t kDiskStateHead = 44;
constexpr size_t kMaxDiskSection = 4 + kMaxImageDisks * (kDiskStateHead + kMaxImageDiskName);
constexpr size_t kStateHeader = 48;
constexpr uint32_t kFlagCommitted = 1;

// PATH.journal record header (first 64 bytes of its first page):
//   0 "RIMGJRNL"  8 u32 version  12 u32 reserved  16 u64 epoch
//  24 u64 guest pages  32 u64 page count  40 u64 state file length
//  48 u64 XXH3 of bytes 0..48
// Version 2 (a guest with disks): 48 u64 disk section length, 56 u64 XXH3
// of bytes 0..56; the disk section follows the pages, the marker follows it
// (the body hash covers head, pages and disk section).
// Commit marker (32 bytes at marker_offset):
//   0 "RIMGCMIT"  8 u64 epoch  16 u64 body hash  24 u64 XXH3 of bytes 0..24
constexpr char kJournalMagic[8] = {'R', 'I', 'M', 'G', 'J', 'R', 'N', 'L'};
constexpr char kMarkerMagic[8] = {'R', 'I', 'M', 'G', 'C', 'M', 'I', 'T'};
constexpr uint32_t kJournalVersion = 1;
constexpr uint32_t kJournalVersionDisks = 2;
constexpr size_t kJournalHeaderV2 = 64;
constexpr size_t kMarkerSize = 32;

const std::vector<std::pair<CommitStep, std::string>>& Steps() {
  static const std::vector<std::pair<CommitStep, std::string>> steps = {
      {CommitStep::kJournalPages, "journal-pages"}, {CommitStep::kJournalBody, "journal-body"},
      {CommitStep::kStateTmp, "state-tmp"},         {CommitStep::kJournalMarker, "journal-marker"},
      {CommitStep::kApplyHalf, "apply-half"},       {CommitStep::kApplied, "applied"},
      {CommitStep::kStateRename, "state-rename"},   {CommitStep::kJournalReset, "journal-reset"},
  };
  return steps;
}


uint64_t RoundUpPage(uint64_t n) { return (n + kImagePage - 1) / kImagePage * kImagePage; }

std::string DirOf(const std::string& path) {
  size_t slash = path.rfind('/');
  return slash == std::string::npos ? "." : (slash == 0 ? "/" : path.substr(0, slash));
}

}  // namespace

const std::vector<std::string>& CommitStepNames() {
  static const std::vector<std::string> names = [] {
    std::vector<std::string> v;
    for (const auto& s : Steps()) v.push_back(s.second);
    return v;
  }();
  return names;
}

const char* CommitStepName(CommitStep step) {
  for (const auto& s : Steps()) {
    if (s.first == step) return s.second.c_str();
  }
  return "none";
}

bool ParseCommitStep(const std::string& name, CommitStep* out) {
  for (const auto& s : Steps()) {
    if (s.second == name) {
      *out = s.first;
      return true;
    }
  }
  return false;
}

void CrashIfAt(CommitStep at, CommitStep step) {
  if (at != CommitStep::kNone && at == step) ::raise(SIGKILL);
}

bool IsZeroImagePage(const uint8_t* page) {
  uint64_t acc = 0;
  for (size_t i = 0; i < kImagePage; i += 64) {
    uint64_t w[8];
    std::memcpy(w, page + i, 64);
    acc |= w[0] | w[1] | w[2] | w[3] | w[4] | w[5] | w[6] | w[7];
    if (acc != 0) return false;
  }
  return true;
}

// ---------------------------------------------------------------------------
// PATH.state

void EncodeStateFile(const StateFile& sf, std::vector<uint8_t>* out) {
  std::vector<uint8_t>& b = *out;
  // The oldest version that says it all, so an image a newer romulus wrote
  // stays readable by an older one unless it needs the newer fields:
  // version 3 only when some disk's lineage or tag is known.
  const bool lineage = std::any_of(sf.disks.begin(), sf.disks.end(),
                                   [](const DiskState& d) { return d.lineage != 0 || d.tag != 0; });
  const uint32_t version =
      sf.disks.empty() ? kStateFileVersion : lineage ? kStateFileVersionLineage : kStateFileVersionDisks;
  const size_t head = lineage ? kDiskStateHead : kDiskStateHeadV2;
  size_t disk_bytes = 0;
  if (!sf.disks.empty()) {
    disk_bytes = 4;
    for (const DiskState& d : sf.disks) disk_bytes += head + d.name.size();
  }
  b.resize(kStateHeader + sf.identity.size() + sf.state.size() + disk_bytes + 8);
  uint8_t* p = b.data();
  std::memcpy(p, kStateMagic, 8);
  StoreLE32(p + 8, version);
  StoreLE32(p + 12, sf.committed ? kFlagCommitted : 0);
  StoreLE64(p + 16, sf.epoch);
  StoreLE64(p + 24, sf.pages);
  StoreLE64(p + 32, sf.digest);
  StoreLE32(p + 40, static_cast<uint32_t>(sf.identity.size()));
  StoreLE32(p + 44, static_cast<uint32_t>(sf.state.size()));
  if (!sf.identity.empty()) std::memcpy(p + kStateHeader, sf.identity.data(), sf.identity.size());
  if (!sf.state.empty()) std::memcpy(p + kStateHeader + sf.identity.size(), sf.state.data(), sf.state.size());
  if (!sf.disks.empty()) {
    uint8_t* q = p + kStateHeader + sf.identity.size() + sf.state.size();
    StoreLE32(q, static_cast<uint32_t>(sf.disks.size()));
    q += 4;
    for (const DiskState& d : sf.disks) {
      StoreLE32(q, d.id);
      StoreLE32(q + 4, d.has_digest ? 1 : 0);
      StoreLE64(q + 8, d.size);
      StoreLE64(q + 16, d.digest);
      StoreLE32(q + 24, static_cast<uint32_t>(d.name.size()));
      if (lineage) {
        StoreLE64(q + 28, d.lineage);
        StoreLE64(q + 36, d.tag);
      }
      std::memcpy(q + head, d.name.data(), d.name.size());
      q += head + d.name.size();
    }
  }
  StoreLE64(p + b.size() - 8, XXH3_64bits(p, b.size() - 8));
}

Status DecodeStateFile(std::span<const uint8_t> bytes, size_t max_state, const std::string& what, StateFile* out) {
  const size_t n = bytes.size();
  if (n > kStateHeader + kMaxImageIdentity + max_state + kMaxDiskSection + 8) {
    return Status::Corruption(what + ": larger than any state file");
  }
  if (n < kStateHeader + 8) return Status::Corruption(what + ": truncated");
  const uint8_t* p = bytes.data();
  if (std::memcmp(p, kStateMagic, 8) != 0) return Status::Corruption(what + ": bad magic");
  const uint32_t version = LoadLE32(p + 8);
  if (version != kStateFileVersion && version != kStateFileVersionDisks && version != kStateFileVersionLineage) {
    return Status::Corruption(what + ": unsupported version " + std::to_string(version));
  }
  const uint32_t id_len = LoadLE32(p + 40);
  const uint32_t st_len = LoadLE32(p + 44);
  if (id_len > kMaxImageIdentity || st_len > max_state ||
      (version == kStateFileVersion ? kStateHeader + id_len + st_len + 8 != n
                                    : kStateHeader + id_len + st_len + 4 + 8 > n)) {
    return Status::Corruption(what + ": lengths do not match the file");
  }
  if (LoadLE64(p + n - 8) != XXH3_64bits(p, n - 8)) return Status::Corruption(what + ": checksum mismatch");
  out->disks.clear();
  if (version != kStateFileVersion) {
    const size_t head = version == kStateFileVersionDisks ? kDiskStateHeadV2 : kDiskStateHead;
    size_t pos = kStateHeader + id_len + st_len;
    const size_t end = n - 8;
    const uint32_t count = LoadLE32(p + pos);
    pos += 4;
    if (count == 0 || count > kMaxImageDisks) return Status::Corruption(what + ": bad disk count");
    for (uint32_t i = 0; i < count; ++i) {
      if (end - pos < head) return Status::Corruption(what + ": truncated disk list");
      DiskState d;
      d.id = LoadLE32(p + pos);
      d.has_digest = (LoadLE32(p + pos + 4) & 1) != 0;
      d.size = LoadLE64(p + pos + 8);
      d.digest = LoadLE64(p + pos + 16);
      const uint32_t name_len = LoadLE32(p + pos + 24);
      if (head == kDiskStateHead) {
        d.lineage = LoadLE64(p + pos + 28);
        d.tag = LoadLE64(p + pos + 36);
      }
      pos += head;
      if (name_len > kMaxImageDiskName || end - pos < name_len) return Status::Corruption(what + ": bad disk name");
      d.name.assign(reinterpret_cast<const char*>(p + pos), name_len);
      pos += name_len;
      out->disks.push_back(std::move(d));
    }
    if (pos != end) return Status::Corruption(what + ": lengths do not match the file");
  }
  out->committed = (LoadLE32(p + 12) & kFlagCommitted) != 0;
  out->epoch = LoadLE64(p + 16);
  out->pages = LoadLE64(p + 24);
  out->digest = LoadLE64(p + 32);
  out->identity.assign(reinterpret_cast<const char*>(p + kStateHeader), id_len);
  out->state.assign(p + kStateHeader + id_len, p + kStateHeader + id_len + st_len);
  return Status::Ok();
}

Status ReadStateFile(const std::string& path, size_t max_state, bool* exists, StateFile* out) {
  *exists = false;
  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) {
    if (errno == ENOENT) return Status::Ok();
    return Status::StorageErrno("opening " + path, errno);
  }
  *exists = true;
  // Bounded read: never trust a length from the file before checking it.
  const size_t limit = kStateHeader + kMaxImageIdentity + max_state + kMaxDiskSection + 8;
  std::vector<uint8_t> buf(limit + 1);
  size_t n = 0;
  while (n < buf.size()) {
    ssize_t r = ::read(fd, buf.data() + n, buf.size() - n);
    if (r < 0) {
      if (errno == EINTR) continue;
      int err = errno;
      ::close(fd);
      return Status::StorageErrno("reading " + path, err);
    }
    if (r == 0) break;
    n += static_cast<size_t>(r);
  }
  ::close(fd);
  buf.resize(n);
  return DecodeStateFile(buf, max_state, path, out);
}

Status WriteStateTmp(const std::string& path, std::span<const uint8_t> bytes, bool durable) {
  const std::string tmp = path + ".tmp";
  int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
  if (fd < 0) return Status::StorageErrno("writing " + tmp, errno);
  Status s = PwriteAll(fd, bytes.data(), bytes.size(), 0, "writing " + tmp);
  if (s.ok() && durable && ::fsync(fd) != 0) s = Status::StorageErrno("syncing " + tmp, errno);
  if (::close(fd) != 0 && s.ok()) s = Status::StorageErrno("closing " + tmp, errno);
  if (!s.ok()) ::unlink(tmp.c_str());
  return s;
}

Status InstallStateTmp(const std::string& path, bool durable) {
  const std::string tmp = path + ".tmp";
  if (::rename(tmp.c_str(), path.c_str()) != 0) {
    Status s = Status::StorageErrno("renaming " + tmp + " to " + path, errno);
    ::unlink(tmp.c_str());
    return s;
  }
  if (!durable) return Status::Ok();
  // The rename itself is durable only once the directory is synced.
  return SyncDirOf(path);
}

Status SyncDirOf(const std::string& path) {
  const std::string dir = DirOf(path);
  int dfd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (dfd < 0) return Status::StorageErrno("syncing directory " + dir, errno);
  int rc = ::fsync(dfd);
  int err = errno;
  ::close(dfd);
  if (rc != 0) return Status::StorageErrno("syncing directory " + dir, err);
  return Status::Ok();
}

// ---------------------------------------------------------------------------
// PATH.journal

void BuildJournalHead(uint64_t epoch, uint64_t guest_pages, std::span<const uint64_t> pfns,
                      std::span<const uint8_t> state_file, JournalLayout* out, uint64_t disk_bytes, bool with_disks) {
  const bool v2 = with_disks || disk_bytes > 0;
  const uint64_t n = pfns.size();
  const uint64_t body = kImagePage + n * 8 + state_file.size();
  std::vector<uint8_t>& h = out->head;
  h.assign(RoundUpPage(body), 0);
  uint8_t* p = h.data();
  std::memcpy(p, kJournalMagic, 8);
  StoreLE32(p + 8, v2 ? kJournalVersionDisks : kJournalVersion);
  StoreLE64(p + 16, epoch);
  StoreLE64(p + 24, guest_pages);
  StoreLE64(p + 32, n);
  StoreLE64(p + 40, state_file.size());
  if (v2) {
    StoreLE64(p + 48, disk_bytes);
    StoreLE64(p + 56, XXH3_64bits(p, 56));
  } else {
    StoreLE64(p + 48, XXH3_64bits(p, 48));
  }
  for (uint64_t i = 0; i < n; ++i) StoreLE64(p + kImagePage + i * 8, pfns[i]);
  if (!state_file.empty()) std::memcpy(p + kImagePage + n * 8, state_file.data(), state_file.size());
  out->pages_offset = h.size();
  out->disk_offset = out->pages_offset + n * kImagePage;
  out->marker_offset = out->disk_offset + disk_bytes;
}

std::vector<uint8_t> BuildJournalMarker(uint64_t epoch, uint64_t body_hash) {
  std::vector<uint8_t> m(kMarkerSize);
  std::memcpy(m.data(), kMarkerMagic, 8);
  StoreLE64(m.data() + 8, epoch);
  StoreLE64(m.data() + 16, body_hash);
  StoreLE64(m.data() + 24, XXH3_64bits(m.data(), 24));
  return m;
}

Status ReadJournal(int fd, uint64_t max_pages, size_t max_state, JournalRecord* out) {
  *out = JournalRecord{};
  struct stat st;
  if (::fstat(fd, &st) != 0) return Status::StorageErrno("journal", errno);
  const uint64_t size = static_cast<uint64_t>(st.st_size);
  if (size < kImagePage) return Status::Ok();  // empty (or never begun)
  uint8_t hdr[kJournalHeaderV2];
  ROMULUS_RETURN_IF_ERROR(PreadAll(fd, hdr, sizeof hdr, 0, "reading the journal header"));
  const uint32_t version = LoadLE32(hdr + 8);
  const bool v2 = version == kJournalVersionDisks;
  if (std::memcmp(hdr, kJournalMagic, 8) != 0 || (version != kJournalVersion && !v2) ||
      (v2 ? LoadLE64(hdr + 56) != XXH3_64bits(hdr, 56) : LoadLE64(hdr + 48) != XXH3_64bits(hdr, 48))) {
    return Status::Ok();  // reset, or a header that never fully reached the disk
  }
  const uint64_t n = LoadLE64(hdr + 32);
  const uint64_t state_len = LoadLE64(hdr + 40);
  const uint64_t disk_len = v2 ? LoadLE64(hdr + 48) : 0;
  const size_t state_limit = 64 + kMaxImageIdentity + max_state + kMaxDiskSection;
  // Bounds first: a damaged header must not size an allocation (the disk
  // section is never read whole; bounding it by the file keeps the offsets
  // below from overflowing).
  if (n > max_pages || state_len > state_limit || disk_len > size) return Status::Ok();
  out->present = true;
  out->epoch = LoadLE64(hdr + 16);
  out->guest_pages = LoadLE64(hdr + 24);
  const uint64_t head_len = RoundUpPage(kImagePage + n * 8 + state_len);
  out->pages_offset = head_len;
  const uint64_t disk_off = head_len + n * kImagePage;
  const uint64_t marker_off = disk_off + disk_len;
  if (size < marker_off + kMarkerSize) return Status::Ok();  // the body never fully arrived

  uint8_t marker[kMarkerSize];
  ROMULUS_RETURN_IF_ERROR(PreadAll(fd, marker, sizeof marker, marker_off, "reading the journal marker"));
  if (std::memcmp(marker, kMarkerMagic, 8) != 0 || LoadLE64(marker + 8) != out->epoch ||
      LoadLE64(marker + 24) != XXH3_64bits(marker, 24)) {
    return Status::Ok();  // no commit marker: the commit point was never reached
  }
  // The body hash covers head and pages: a torn write (power loss between
  // the body and the marker reaching the disk) shows up here.
  std::unique_ptr<XXH3_state_t, decltype(&XXH3_freeState)> h(XXH3_createState(), XXH3_freeState);
  if (!h) return Status::Internal("journal: XXH3 state");
  XXH3_64bits_reset(h.get());
  std::vector<uint8_t> head(head_len);
  ROMULUS_RETURN_IF_ERROR(PreadAll(fd, head.data(), head.size(), 0, "reading the journal"));
  XXH3_64bits_update(h.get(), head.data(), head.size());
  std::vector<uint8_t> chunk(256 * kImagePage);
  for (uint64_t off = head_len; off < marker_off;) {
    size_t len = static_cast<size_t>(std::min<uint64_t>(chunk.size(), marker_off - off));
    ROMULUS_RETURN_IF_ERROR(PreadAll(fd, chunk.data(), len, off, "reading the journal"));
    XXH3_64bits_update(h.get(), chunk.data(), len);
    off += len;
  }
  if (XXH3_64bits_digest(h.get()) != LoadLE64(marker + 16)) return Status::Ok();
  out->pfns.resize(n);
  for (uint64_t i = 0; i < n; ++i) out->pfns[i] = LoadLE64(head.data() + kImagePage + i * 8);
  out->state_file.assign(head.data() + kImagePage + n * 8, head.data() + kImagePage + n * 8 + state_len);
  out->disk_offset = disk_off;
  out->disk_len = disk_len;
  out->complete = true;
  return Status::Ok();
}

Status ResetJournal(int fd, bool durable) {
  uint8_t zero[kJournalHeaderV2] = {};
  ROMULUS_RETURN_IF_ERROR(PwriteAll(fd, zero, sizeof zero, 0, "resetting the journal"));
  if (durable && ::fdatasync(fd) != 0) return Status::StorageErrno("syncing the journal", errno);
  return Status::Ok();
}

}  // namespace romulus::sim
