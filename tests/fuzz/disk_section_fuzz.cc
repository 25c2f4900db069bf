// libFuzzer: a disk section as the backup stores it (a journal's disk
// section, a staging spill file; docs/IMAGE-FORMAT.md, restore/disk_staging.h),
// read back after a crash or a commit. Invariants: the in-memory walk and
// the file walk (through its bounded window) yield the same entries and stop
// at the same damaged one with the same code; a valid section repeated past
// the window (so the window refills at the input's alignments) walks as
// the same entries repeated; and the entries of the valid prefix, staged
// through a DiskStaging whose memory holds almost nothing (so they spill),
// read back as exactly the same bytes and entries.
#include <sys/mman.h>
#include <unistd.h>

#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <span>
#include <vector>

#include "restore/disk_staging.h"

using namespace romulus;
using namespace romulus::restore;

namespace {

struct Seen {
  DiskEntry e;
  std::vector<uint8_t> data;
};

std::vector<Seen> Collect(const std::function<Status(const DiskEntryFn&)>& walk, Status* st) {
  std::vector<Seen> out;
  *st = walk([&](const DiskEntry& e) {
    Seen s{e, {}};
    if (e.kind == kDiskEntryWrite) s.data.assign(e.data, e.data + e.length);
    s.e.data = nullptr;
    out.push_back(std::move(s));
    return Status::Ok();
  });
  return out;
}

bool Same(const std::vector<Seen>& a, const std::vector<Seen>& b) {
  if (a.size() != b.size()) return false;
  for (size_t i = 0; i < a.size(); ++i) {
    const DiskEntry &x = a[i].e, &y = b[i].e;
    if (x.disk_id != y.disk_id || x.kind != y.kind || x.flags != y.flags || x.offset != y.offset ||
        x.length != y.length || a[i].data != b[i].data) {
      return false;
    }
  }
  return true;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static const int fd = ::memfd_create("disk-section-fuzz", MFD_CLOEXEC);
  static DiskStaging staging(64, DiskSpill{"/tmp", uint64_t{1} << 30});
  static std::vector<uint8_t> window;
  if (fd < 0) std::abort();
  std::span<const uint8_t> in(data, size);

  Status mem_st;
  std::vector<Seen> mem = Collect([&](const DiskEntryFn& fn) { return ForEachDiskEntry(in, fn); }, &mem_st);

  // The same bytes at an odd offset of a file, with junk around them.
  constexpr uint64_t kAt = 13;
  if (::ftruncate(fd, 0) != 0) std::abort();
  std::vector<uint8_t> file(kAt, 0xa5);
  file.insert(file.end(), in.begin(), in.end());
  file.resize(file.size() + 7, 0x5a);
  if (::pwrite(fd, file.data(), file.size(), 0) != static_cast<ssize_t>(file.size())) std::abort();
  Status file_st;
  std::vector<Seen> from_file = Collect(
      [&](const DiskEntryFn& fn) { return ForEachDiskEntryInFile(fd, kAt, size, &window, fn, "fuzz section"); },
      &file_st);
  if (!Same(mem, from_file) || mem_st.code() != file_st.code()) std::abort();
  if (window.size() > kDiskSectionWindow) std::abort();

  // A whole section repeated past the window: the file walk refills its
  // window at every alignment the input's entry sizes give, and must still
  // yield the entries, in order, as many times as they were repeated.
  if (mem_st.ok() && size >= kDiskEntryHead) {
    const size_t reps = kDiskSectionWindow / size + 2;
    if (::ftruncate(fd, 0) != 0) std::abort();
    for (size_t r = 0; r < reps; ++r) {
      if (::pwrite(fd, data, size, static_cast<off_t>(kAt + r * size)) != static_cast<ssize_t>(size)) std::abort();
    }
    size_t i = 0;
    Status rep_st = ForEachDiskEntryInFile(
        fd, kAt, reps * size, &window,
        [&](const DiskEntry& e) {
          const Seen& want = mem[i % mem.size()];
          ++i;
          if (e.disk_id != want.e.disk_id || e.kind != want.e.kind || e.offset != want.e.offset ||
              e.length != want.e.length ||
              (e.kind == kDiskEntryWrite && e.length > 0 && std::memcmp(e.data, want.data.data(), e.length) != 0)) {
            std::abort();
          }
          return Status::Ok();
        },
        "fuzz section");
    if (!rep_st.ok() || i != reps * mem.size() || window.size() > kDiskSectionWindow) std::abort();
  }

  // The valid prefix through the staging, spilled: same entries, same bytes.
  staging.Clear();
  std::vector<uint8_t> encoding;
  for (const Seen& s : mem) {
    DiskEntry e = s.e;
    e.data = s.data.data();
    if (!staging.Stage(1, e).ok()) std::abort();
    uint8_t head[kDiskEntryHead];
    EncodeDiskEntryHead(e, head);
    encoding.insert(encoding.end(), head, head + kDiskEntryHead);
    encoding.insert(encoding.end(), s.data.begin(), s.data.end());
  }
  if (staging.size() != encoding.size()) std::abort();
  Status st;
  std::vector<Seen> staged = Collect([&](const DiskEntryFn& fn) { return staging.ForEachEntry(fn); }, &st);
  if (!st.ok() || !Same(mem, staged)) std::abort();
  std::vector<uint8_t> pieces;
  st = staging.ForEachPiece([&](std::span<const uint8_t> p) {
    pieces.insert(pieces.end(), p.begin(), p.end());
    return Status::Ok();
  });
  if (!st.ok() || pieces != encoding) std::abort();
  return 0;
}
