#include "sim/image_sink.h"

#include <fcntl.h>
#include <spdlog/spdlog.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>
#include <xxhash.h>

#include <cerrno>
#include <cstring>
#include <new>

#include "sim/sim_spec.h"

namespace romulus::sim {

namespace {

constexpr uint64_t kPage = 4096;
constexpr uint32_t kNoSlot = UINT32_MAX;
// Slots are uint32_t; this is far beyond any guest the receiver accepts.
constexpr uint64_t kMaxSinkPages = uint64_t{1} << 32;
constexpr size_t kMaxIdentity = 4096;

// PATH.state, format version 1, little-endian:
//   0  "RIMGSTAT"   8 u32 version   12 u32 flags (bit 0: holds a committed epoch)
//  16 u64 epoch    24 u64 guest pages   32 u64 image digest
//  40 u32 identity length   44 u32 state length   48 identity, state
//  then u64 XXH3 of every byte before it.
constexpr char kStateMagic[8] = {'R', 'I', 'M', 'G', 'S', 'T', 'A', 'T'};
constexpr uint32_t kStateFileVersion = 1;
constexpr size_t kStateHeader = 48;
constexpr uint32_t kFlagCommitted = 1;

void PutU32(uint8_t* p, uint32_t v) {
  for (int i = 0; i < 4; ++i) p[i] = static_cast<uint8_t>(v >> (8 * i));
}
void PutU64(uint8_t* p, uint64_t v) {
  for (int i = 0; i < 8; ++i) p[i] = static_cast<uint8_t>(v >> (8 * i));
}
uint32_t GetU32(const uint8_t* p) {
  uint32_t v = 0;
  for (int i = 0; i < 4; ++i) v |= uint32_t{p[i]} << (8 * i);
  return v;
}
uint64_t GetU64(const uint8_t* p) {
  uint64_t v = 0;
  for (int i = 0; i < 8; ++i) v |= uint64_t{p[i]} << (8 * i);
  return v;
}

Status WriteAll(int fd, const uint8_t* p, size_t n, const std::string& what) {
  while (n > 0) {
    ssize_t w = ::write(fd, p, n);
    if (w < 0) {
      if (errno == EINTR) continue;
      return Status::FromErrno(what, errno);
    }
    p += w;
    n -= static_cast<size_t>(w);
  }
  return Status::Ok();
}

struct StateFile {
  bool committed = false;
  uint64_t epoch = 0;
  uint64_t pages = 0;
  uint64_t digest = 0;
  std::string identity;
  std::vector<uint8_t> state;
};

// NotFound is reported as ok() with *exists = false.
Status ReadStateFile(const std::string& path, size_t max_state, bool* exists, StateFile* out) {
  *exists = false;
  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) {
    if (errno == ENOENT) return Status::Ok();
    return Status::FromErrno("opening " + path, errno);
  }
  *exists = true;
  // Bounded read: never trust a length from the file before checking it.
  const size_t limit = kStateHeader + kMaxIdentity + max_state + 8;
  std::vector<uint8_t> buf(limit + 1);
  size_t n = 0;
  while (n < buf.size()) {
    ssize_t r = ::read(fd, buf.data() + n, buf.size() - n);
    if (r < 0) {
      if (errno == EINTR) continue;
      int err = errno;
      ::close(fd);
      return Status::FromErrno("reading " + path, err);
    }
    if (r == 0) break;
    n += static_cast<size_t>(r);
  }
  ::close(fd);
  if (n > limit) return Status::Corruption(path + ": larger than any state file");
  if (n < kStateHeader + 8) return Status::Corruption(path + ": truncated");
  const uint8_t* p = buf.data();
  if (std::memcmp(p, kStateMagic, 8) != 0) return Status::Corruption(path + ": bad magic");
  if (GetU32(p + 8) != kStateFileVersion) {
    return Status::Corruption(path + ": unsupported version " + std::to_string(GetU32(p + 8)));
  }
  const uint32_t id_len = GetU32(p + 40);
  const uint32_t st_len = GetU32(p + 44);
  if (id_len > kMaxIdentity || st_len > max_state || kStateHeader + id_len + st_len + 8 != n) {
    return Status::Corruption(path + ": lengths do not match the file");
  }
  if (GetU64(p + n - 8) != XXH3_64bits(p, n - 8)) return Status::Corruption(path + ": checksum mismatch");
  out->committed = (GetU32(p + 12) & kFlagCommitted) != 0;
  out->epoch = GetU64(p + 16);
  out->pages = GetU64(p + 24);
  out->digest = GetU64(p + 32);
  out->identity.assign(reinterpret_cast<const char*>(p + kStateHeader), id_len);
  out->state.assign(p + kStateHeader + id_len, p + kStateHeader + id_len + st_len);
  return Status::Ok();
}

}  // namespace

ImageSink::ImageSink(const ImageSinkOptions& options) : options_(options) {}

ImageSink::~ImageSink() {
  activated_.reset();  // stops its workload thread
  UnmapImage();
  if (fd_ >= 0) ::close(fd_);
}

Result<std::unique_ptr<ImageSink>> ImageSink::Open(const ImageSinkOptions& options) {
  std::unique_ptr<ImageSink> sink(new ImageSink(options));
  if (!options.path.empty()) ROMULUS_RETURN_IF_ERROR(sink->LoadExisting());
  return sink;
}

Status ImageSink::LoadExisting() {
  const std::string& path = options_.path;
  int flags = O_RDWR | O_CREAT | O_CLOEXEC | (options_.start_over ? O_TRUNC : 0);
  // 0600: the image is a copy of the guest's memory.
  fd_ = ::open(path.c_str(), flags, 0600);
  if (fd_ < 0) return Status::FromErrno("image " + path, errno);
  if (options_.start_over) {
    if (::unlink(state_path().c_str()) != 0 && errno != ENOENT) {
      return Status::FromErrno("removing " + state_path(), errno);
    }
    return Status::Ok();
  }
  struct stat st;
  if (::fstat(fd_, &st) != 0) return Status::FromErrno("image " + path, errno);
  const uint64_t size = static_cast<uint64_t>(st.st_size);

  bool exists = false;
  StateFile sf;
  Status s = ReadStateFile(state_path(), options_.max_state_bytes, &exists, &sf);
  if (!exists && s.ok()) {
    if (size == 0) return Status::Ok();  // new (or never used) image
    return Status::InvalidArgument("image " + path + " exists (" + std::to_string(size) +
                                   " bytes) but " + state_path() +
                                   " does not: it is not a Romulus image; refusing to overwrite it "
                                   "(remove it or start over)");
  }
  if (!s.ok()) {
    return Status::Corruption("image " + path + ": " + s.message() +
                              "; its committed epoch cannot be trusted (remove it or start over)");
  }
  if (!sf.committed) return Status::Ok();  // ours, but no epoch was ever committed
  if (sf.pages == 0 || sf.pages >= kMaxSinkPages || sf.pages * kPage != size) {
    return Status::Corruption("image " + path + " is " + std::to_string(size) + " bytes but " + state_path() +
                              " describes a guest of " + std::to_string(sf.pages) +
                              " pages (remove it or start over)");
  }
  ROMULUS_RETURN_IF_ERROR(MapImage(sf.pages, /*zero=*/false));
  ROMULUS_RETURN_IF_ERROR(ResetDigestFromImage());
  if (digest_->value() != sf.digest) {
    // The previous backup stopped while applying an epoch: the image is a mix
    // of two epochs and nothing in it may be resumed.
    recovery_note_ = "image " + path + " does not match the digest of epoch " + std::to_string(sf.epoch) +
                     " in " + state_path() + " (a commit was interrupted): holding no committed epoch";
    spdlog::warn("{}", recovery_note_);
    return Status::Ok();
  }
  committed_identity_ = std::move(sf.identity);
  committed_state_ = std::move(sf.state);
  last_committed_.store(sf.epoch, std::memory_order_release);
  has_committed_.store(true, std::memory_order_release);
  return Status::Ok();
}

Status ImageSink::MapImage(uint64_t pages, bool zero) {
  const uint64_t bytes = pages * kPage;
  void* p;
  if (fd_ >= 0) {
    if (zero) {
      // Truncating to 0 and back gives a sparse all-zero file without
      // writing a byte.
      if (::ftruncate(fd_, 0) != 0 || ::ftruncate(fd_, static_cast<off_t>(bytes)) != 0) {
        return Status::FromErrno("sizing image " + options_.path, errno);
      }
    }
    p = ::mmap(nullptr, bytes, PROT_READ | PROT_WRITE, MAP_SHARED, fd_, 0);
  } else {
    p = ::mmap(nullptr, bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
  }
  if (p == MAP_FAILED) return Status::FromErrno("mapping a " + std::to_string(bytes) + "-byte image", errno);
  image_ = static_cast<uint8_t*>(p);

  if (pages != pages_ || !digest_) {
    Result<std::unique_ptr<MemoryDigest>> d = MemoryDigest::Create(pages);
    if (!d.ok()) return d.status();
    digest_ = std::move(*d);
    slot_.reset(new (std::nothrow) uint32_t[pages]);
    if (!slot_) return Status::FromErrno("image sink: allocating the staging index", ENOMEM);
    std::memset(slot_.get(), 0xff, pages * sizeof(uint32_t));
    if (staged_pfns_) retired_reallocations_ += staged_pfns_->reallocations() + staged_bytes_->reallocations();
    staged_pfns_ = std::make_unique<buffer::ReceiveBuffer>(0, pages * sizeof(uint64_t));
    staged_bytes_ = std::make_unique<buffer::ReceiveBuffer>(0, pages * kPage);
  } else {
    digest_->Reset();
  }
  pages_ = pages;
  digest_value_.store(digest_->value(), std::memory_order_release);
  return Status::Ok();
}

void ImageSink::UnmapImage() {
  if (image_ != nullptr) ::munmap(image_, pages_ * kPage);
  image_ = nullptr;
}

Status ImageSink::ResetDigestFromImage() {
  digest_->Reset();
  for (uint64_t pfn = 0; pfn < pages_; ++pfn) digest_->Update(pfn, image_ + pfn * kPage);
  digest_value_.store(digest_->value(), std::memory_order_release);
  return Status::Ok();
}

uint64_t ImageSink::ComputeImageDigest() const {
  uint64_t sum = 0;
  for (uint64_t pfn = 0; pfn < pages_ && image_ != nullptr; ++pfn) sum += PageHash(pfn, image_ + pfn * kPage);
  return sum;
}

uint64_t ImageSink::staging_reallocations() const {
  uint64_t n = retired_reallocations_;
  if (staged_pfns_) n += staged_pfns_->reallocations() + staged_bytes_->reallocations();
  return n;
}

Status ImageSink::BeginSession(uint64_t guest_pages, const std::string& identity) {
  Discard();
  in_session_ = false;
  if (guest_pages == 0 || guest_pages >= kMaxSinkPages) {
    return Status::OutOfRange("image sink: a guest of " + std::to_string(guest_pages) + " pages is out of range");
  }
  if (identity.size() > kMaxIdentity) return Status::InvalidArgument("image sink: guest identity too long");

  if (has_committed()) {
    if (guest_pages != pages_) {
      if (!options_.start_over) {
        return Status::InvalidArgument(
            "image " + (options_.path.empty() ? std::string("(memory)") : options_.path) + " holds epoch " +
            std::to_string(last_committed_epoch()) + " of a guest of " + std::to_string(pages_) +
            " pages; refusing a guest of " + std::to_string(guest_pages) + " pages (start over to replace it)");
      }
      spdlog::warn("image sink: dropping committed epoch {} of a {}-page guest for a {}-page guest",
                   last_committed_epoch(), pages_, guest_pages);
      has_committed_.store(false, std::memory_order_release);
      committed_identity_.clear();
      committed_state_.clear();
    }
  }
  if (!has_committed()) {
    // Nothing to protect: start from an all-zero image of the right size, so
    // leftovers of an unfinished first sync or of an interrupted commit can
    // never mix with the new session's pages.
    UnmapImage();
    ROMULUS_RETURN_IF_ERROR(MapImage(guest_pages, /*zero=*/true));
  }
  in_session_ = true;
  session_committed_ = false;
  need_resync_ = false;
  session_identity_ = identity;
  if (!has_committed() && fd_ >= 0) ROMULUS_RETURN_IF_ERROR(WriteStateFile(/*committed=*/false));
  return Status::Ok();
}

Status ImageSink::CheckEpoch(uint64_t epoch, const char* what) {
  if (!in_session_) return Status::InvalidArgument(std::string("image sink: ") + what + " outside a session");
  if (need_resync_) {
    return Status::Corruption("image sink: the discarded first epoch was written into the image; "
                              "a new session (full resync) is required");
  }
  if (session_committed_ && epoch <= last_committed_epoch()) {
    return Status::Corruption(std::string("image sink: ") + what + " for epoch " + std::to_string(epoch) +
                              ", but epoch " + std::to_string(last_committed_epoch()) + " is already committed");
  }
  if (staging_active_ && epoch != staging_epoch_) {
    return Status::Corruption(std::string("image sink: ") + what + " for epoch " + std::to_string(epoch) +
                              " while epoch " + std::to_string(staging_epoch_) + " is being received");
  }
  if (!staging_active_) {
    staging_active_ = true;
    staging_epoch_ = epoch;
    direct_ = !has_committed();
  }
  return Status::Ok();
}

Status ImageSink::OnPage(uint64_t epoch, uint64_t pfn, const uint8_t* page) {
  if (!in_session_) return Status::InvalidArgument("image sink: page outside a session");
  if (pfn >= pages_) {
    return Status::Corruption("image sink: page " + std::to_string(pfn) + " is beyond the guest's " +
                              std::to_string(pages_) + " pages");
  }
  ROMULUS_RETURN_IF_ERROR(CheckEpoch(epoch, "page"));
  if (direct_) {
    std::memcpy(image_ + pfn * kPage, page, kPage);
    digest_->Update(pfn, page);
    digest_value_.store(digest_->value(), std::memory_order_release);
    return Status::Ok();
  }
  uint32_t slot = slot_[pfn];
  if (slot != kNoSlot) {  // sent twice in this epoch: the later copy wins
    std::memcpy(staged_bytes_->data() + uint64_t{slot} * kPage, page, kPage);
    return Status::Ok();
  }
  // Both appends are bounded by the guest size (one slot per pfn at most),
  // so they only fail if memory runs out.
  Result<uint8_t*> pf = staged_pfns_->Append(sizeof(uint64_t));
  if (!pf.ok()) return pf.status().With("staging page " + std::to_string(pfn));
  std::memcpy(*pf, &pfn, sizeof pfn);
  Result<uint8_t*> pb = staged_bytes_->Append(kPage);
  if (!pb.ok()) return pb.status().With("staging page " + std::to_string(pfn));
  std::memcpy(*pb, page, kPage);
  staged_pfns_->Commit(sizeof(uint64_t));
  staged_bytes_->Commit(kPage);
  slot_[pfn] = static_cast<uint32_t>(staged_count_++);
  return Status::Ok();
}

Status ImageSink::OnState(uint64_t epoch, std::span<const uint8_t> record) {
  ROMULUS_RETURN_IF_ERROR(CheckEpoch(epoch, "state"));
  if (record.size() > options_.max_state_bytes - staged_state_.size()) {
    return Status::OutOfRange("image sink: epoch " + std::to_string(epoch) + " state exceeds " +
                              std::to_string(options_.max_state_bytes) + " bytes");
  }
  staged_state_.insert(staged_state_.end(), record.begin(), record.end());
  staged_has_state_ = true;
  return Status::Ok();
}

Status ImageSink::Commit(uint64_t epoch) {
  ROMULUS_RETURN_IF_ERROR(CheckEpoch(epoch, "commit"));
  const uint8_t* bytes = staged_bytes_->data();
  const uint8_t* pfns = staged_pfns_->data();
  for (uint64_t i = 0; i < staged_count_; ++i) {
    uint64_t pfn;
    std::memcpy(&pfn, pfns + i * sizeof(uint64_t), sizeof pfn);
    const uint8_t* page = bytes + i * kPage;
    std::memcpy(image_ + pfn * kPage, page, kPage);
    digest_->Update(pfn, page);
  }
  digest_value_.store(digest_->value(), std::memory_order_release);
  if (staged_has_state_) committed_state_.swap(staged_state_);  // capacity of both is kept
  committed_identity_ = session_identity_;
  last_committed_.store(epoch, std::memory_order_release);
  has_committed_.store(true, std::memory_order_release);
  session_committed_ = true;
  ClearStaging();
  if (fd_ < 0) return Status::Ok();
  if (options_.durable && ::msync(image_, pages_ * kPage, MS_SYNC) != 0) {
    return Status::FromErrno("syncing image " + options_.path, errno);
  }
  return WriteStateFile(/*committed=*/true);
}

void ImageSink::ClearStaging() {
  if (staged_pfns_) {
    const uint8_t* pfns = staged_pfns_->data();
    for (uint64_t i = 0; i < staged_count_; ++i) {
      uint64_t pfn;
      std::memcpy(&pfn, pfns + i * sizeof(uint64_t), sizeof pfn);
      slot_[pfn] = kNoSlot;
    }
    staged_pfns_->Clear();
    staged_bytes_->Clear();
  }
  staged_count_ = 0;
  staged_state_.clear();
  staged_has_state_ = false;
  staging_active_ = false;
  direct_ = false;
}

void ImageSink::Discard() {
  // A discarded first epoch has already been written into the image (the
  // shortcut): the image is no longer a clean base for the session's later
  // epochs, so only a new session, which resyncs everything, may continue.
  if (staging_active_ && direct_) need_resync_ = true;
  ClearStaging();
}

Status ImageSink::WriteStateFile(bool committed) {
  const std::string& id = committed ? committed_identity_ : session_identity_;
  const std::span<const uint8_t> st =
      committed ? std::span<const uint8_t>(committed_state_) : std::span<const uint8_t>();
  std::vector<uint8_t>& b = state_file_buf_;
  b.resize(kStateHeader + id.size() + st.size() + 8);
  uint8_t* p = b.data();
  std::memcpy(p, kStateMagic, 8);
  PutU32(p + 8, kStateFileVersion);
  PutU32(p + 12, committed ? kFlagCommitted : 0);
  PutU64(p + 16, committed ? last_committed_epoch() : 0);
  PutU64(p + 24, pages_);
  PutU64(p + 32, digest());
  PutU32(p + 40, static_cast<uint32_t>(id.size()));
  PutU32(p + 44, static_cast<uint32_t>(st.size()));
  if (!id.empty()) std::memcpy(p + kStateHeader, id.data(), id.size());
  if (!st.empty()) std::memcpy(p + kStateHeader + id.size(), st.data(), st.size());
  PutU64(p + b.size() - 8, XXH3_64bits(p, b.size() - 8));

  // Write to a temporary and rename over: a reader (or a restarted backup)
  // sees the old file or the new one, never a mix.
  const std::string tmp = state_path() + ".tmp";
  int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
  if (fd < 0) return Status::FromErrno("writing " + tmp, errno);
  Status s = WriteAll(fd, b.data(), b.size(), "writing " + tmp);
  if (s.ok() && options_.durable && ::fsync(fd) != 0) s = Status::FromErrno("syncing " + tmp, errno);
  if (::close(fd) != 0 && s.ok()) s = Status::FromErrno("closing " + tmp, errno);
  if (s.ok() && ::rename(tmp.c_str(), state_path().c_str()) != 0) {
    s = Status::FromErrno("renaming " + tmp + " to " + state_path(), errno);
  }
  if (!s.ok()) {
    ::unlink(tmp.c_str());
    return s;
  }
  if (options_.durable) {
    // The rename itself is durable only once the directory is synced.
    std::string dir = options_.path;
    size_t slash = dir.rfind('/');
    dir = slash == std::string::npos ? "." : (slash == 0 ? "/" : dir.substr(0, slash));
    int dfd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (dfd < 0) return Status::FromErrno("syncing directory " + dir, errno);
    int rc = ::fsync(dfd);
    int err = errno;
    ::close(dfd);
    if (rc != 0) return Status::FromErrno("syncing directory " + dir, err);
  }
  return Status::Ok();
}

Status ImageSink::Activate(const std::string& reason) {
  Discard();
  if (!has_committed()) {
    return Status::InvalidArgument("image sink: cannot activate (" + reason + "): no epoch was ever committed");
  }
  if (activated_) return Status::InvalidArgument("image sink: already activated");
  Result<SimSpec> spec = ParseSimSpec(committed_identity_);
  if (!spec.ok()) {
    return Status::Unsupported("image sink: can only resume a simulated guest, not '" + committed_identity_ +
                               "': " + spec.status().message());
  }
  if (spec->pages() != pages_) {
    return Status::Corruption("image sink: committed identity '" + committed_identity_ +
                              "' does not match the image's " + std::to_string(pages_) + " pages");
  }
  Result<std::unique_ptr<SimGuest>> guest =
      SimGuest::Restore(*spec, std::span<const uint8_t>(image_, pages_ * kPage), committed_state_);
  if (!guest.ok()) {
    return guest.status().With("resuming the guest from epoch " + std::to_string(last_committed_epoch()));
  }
  if (options_.run_activated) ROMULUS_RETURN_IF_ERROR((*guest)->Start());
  activated_ = std::move(*guest);
  activation_reason_ = reason;
  spdlog::warn("failover: resumed {} from epoch {} (digest {}): {}", committed_identity_, last_committed_epoch(),
               DigestHex(digest()), reason);
  return Status::Ok();
}

}  // namespace romulus::sim
