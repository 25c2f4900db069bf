#include "xen/stream_v2.h"

#include <algorithm>
#include <cstring>

#include "common/little_endian.h"

namespace romulus::xen {

uint32_t LoadBe32(const uint8_t* p) {
  return uint32_t(p[0]) << 24 | uint32_t(p[1]) << 16 | uint32_t(p[2]) << 8 | uint32_t(p[3]);
}
uint64_t LoadBe64(const uint8_t* p) { return uint64_t(LoadBe32(p)) << 32 | LoadBe32(p + 4); }

bool IsKnownPageType(uint32_t type) {
  // 0x0 NOTAB, 0x1-0x4 L1-L4, 0x9-0xC pinned L1-L4, 0xD BROKEN, 0xE XALLOC, 0xF XTAB.
  return type <= 0x4 || (type >= 0x9 && type <= 0xF);
}

const char* RecordTypeName(uint32_t type) {
  switch (type) {
    case kRecEnd: return "END";
    case kRecPageData: return "PAGE_DATA";
    case kRecX86PvInfo: return "X86_PV_INFO";
    case kRecX86PvP2mFrames: return "X86_PV_P2M_FRAMES";
    case kRecX86PvVcpuBasic: return "X86_PV_VCPU_BASIC";
    case kRecX86PvVcpuExtended: return "X86_PV_VCPU_EXTENDED";
    case kRecX86PvVcpuXsave: return "X86_PV_VCPU_XSAVE";
    case kRecSharedInfo: return "SHARED_INFO";
    case kRecX86TscInfo: return "X86_TSC_INFO";
    case kRecHvmContext: return "HVM_CONTEXT";
    case kRecHvmParams: return "HVM_PARAMS";
    case kRecToolstack: return "TOOLSTACK";
    case kRecX86PvVcpuMsrs: return "X86_PV_VCPU_MSRS";
    case kRecVerify: return "VERIFY";
    case kRecCheckpoint: return "CHECKPOINT";
    case kRecCheckpointDirtyPfnList: return "CHECKPOINT_DIRTY_PFN_LIST";
    case kRecStaticDataEnd: return "STATIC_DATA_END";
    case kRecX86CpuidPolicy: return "X86_CPUID_POLICY";
    case kRecX86MsrPolicy: return "X86_MSR_POLICY";
  }
  return (type & kRecOptionalBit) ? "optional" : "unknown";
}

namespace {
size_t PadOf(uint32_t len) { return (8 - (len & 7)) & 7; }
std::string Hex(uint64_t v) {
  char b[24];
  snprintf(b, sizeof b, "%#llx", static_cast<unsigned long long>(v));
  return b;
}
}  // namespace

// ---- StreamParser -------------------------------------------------------------

StreamParser::StreamParser(StreamVisitor* visitor, ParserLimits limits)
    : visitor_(visitor), limits_(limits), need_(kImageHeaderSize) {}

Status StreamParser::Fail(Status s) {
  state_ = State::kFailed;
  error_ = s.With("migration stream at byte " + std::to_string(stats_.bytes));
  buf_.clear();
  buf_.shrink_to_fit();
  return error_;
}

Status StreamParser::Feed(std::span<const uint8_t> data) {
  if (state_ == State::kFailed) return error_;
  const uint8_t* p = data.data();
  size_t n = data.size();
  while (n > 0) {
    switch (state_) {
      case State::kFailed:
        return error_;
      case State::kDone:
        return Fail(Status::Corruption("data after the END record"));
      case State::kPadding: {
        if (*p != 0) return Fail(Status::Corruption("non-zero record padding"));
        p++, n--, stats_.bytes++;
        if (--pad_left_ == 0) {
          Status s = OnBodyComplete();
          if (!s.ok()) return Fail(s);
        }
        break;
      }
      case State::kPages: {
        // Zero-copy when a whole page sits in this chunk.
        if (page_fill_ == 0 && n >= kXenPageSize) {
          Status s = visitor_->OnPage(page_pfn_, p);
          p += kXenPageSize, n -= kXenPageSize, stats_.bytes += kXenPageSize;
          stats_.pages++;
          if (!s.ok()) return Fail(s);
        } else {
          size_t take = std::min(n, kXenPageSize - page_fill_);
          if (page_.size() != kXenPageSize) page_.resize(kXenPageSize);
          memcpy(page_.data() + page_fill_, p, take);
          page_fill_ += take, p += take, n -= take, stats_.bytes += take;
          if (page_fill_ < kXenPageSize) break;
          page_fill_ = 0;
          stats_.pages++;
          Status s = visitor_->OnPage(page_pfn_, page_.data());
          if (!s.ok()) return Fail(s);
        }
        Status s = NextDataPage();
        if (!s.ok()) return Fail(s);
        break;
      }
      default: {
        // Accumulating states: grow buf_ only with bytes actually received.
        size_t take = std::min(n, need_ - buf_.size());
        buf_.insert(buf_.end(), p, p + take);
        p += take, n -= take, stats_.bytes += take;
        if (buf_.size() < need_) break;
        Status s;
        switch (state_) {
          case State::kImageHeader:
          case State::kDomainHeader: s = OnHeaderComplete(); break;
          case State::kRecordHeader: s = OnRecordHeader(); break;
          case State::kBody:
            if (pad_left_ > 0) {
              state_ = State::kPadding;
            } else {
              s = OnBodyComplete();
            }
            break;
          case State::kPageHeader: {
            count_ = LoadLE32(buf_.data() + kRecordHeaderSize);
            if (count_ == 0) {
              s = Status::Corruption("PAGE_DATA record with count 0");
            } else if (count_ > limits_.max_pfns_per_record) {
              s = Status::OutOfRange("PAGE_DATA record with " + std::to_string(count_) +
                                     " pfns (limit " + std::to_string(limits_.max_pfns_per_record) + ")");
            } else if (uint64_t(kPageDataHeaderSize) + 8ull * count_ > rec_len_) {
              s = Status::Corruption("PAGE_DATA record of " + std::to_string(rec_len_) +
                                     " bytes too short for " + std::to_string(count_) + " pfns");
            } else {
              state_ = State::kPfns;
              need_ = kRecordHeaderSize + kPageDataHeaderSize + 8ull * count_;
            }
            break;
          }
          case State::kPfns: s = OnPfnsComplete(); break;
          default: s = Status::Internal("tap parser in an impossible state");
        }
        if (!s.ok()) return Fail(s);
      }
    }
  }
  return Status::Ok();
}

Status StreamParser::OnHeaderComplete() {
  if (state_ == State::kImageHeader) {
    const uint8_t* h = buf_.data();
    if (LoadBe64(h) != kImageMarker) {
      return Status::Corruption("not a migration v2 stream (bad image marker; a legacy image?)");
    }
    if (LoadBe32(h + 8) != kImageId) return Status::Corruption("not a Xen image (id is not \"XENF\")");
    version_ = LoadBe32(h + 12);
    if (version_ != 2 && version_ != 3) {
      return Status::Unsupported("migration stream version " + std::to_string(version_) +
                                 " (supported: 2, 3)");
    }
    uint16_t options = uint16_t(h[16] << 8 | h[17]);
    if (options & 1) return Status::Unsupported("big-endian migration stream");
    Status s = visitor_->OnImageHeader(std::span(buf_.data(), kImageHeaderSize));
    if (!s.ok()) return s;
    buf_.clear();
    state_ = State::kDomainHeader;
    need_ = kDomainHeaderSize;
    return Status::Ok();
  }
  const uint8_t* h = buf_.data();
  domain_type_ = LoadLE32(h);
  uint32_t page_shift = LoadLE32(h + 4) & 0xffff;
  xen_major_ = uint16_t(LoadLE32(h + 8));
  xen_minor_ = uint16_t(LoadLE32(h + 12));
  if (domain_type_ != kDomainTypeX86Pv && domain_type_ != kDomainTypeX86Hvm) {
    return Status::Unsupported("domain type " + std::to_string(domain_type_) +
                               " in the domain header (1 = x86 PV, 2 = x86 HVM)");
  }
  if (page_shift != 12) {
    return Status::Unsupported("page shift " + std::to_string(page_shift) + " (only 4 KiB pages)");
  }
  Status s = visitor_->OnDomainHeader(std::span(buf_.data(), kDomainHeaderSize));
  if (!s.ok()) return s;
  buf_.clear();
  state_ = State::kRecordHeader;
  need_ = kRecordHeaderSize;
  return Status::Ok();
}

Status StreamParser::OnRecordHeader() {
  rec_type_ = LoadLE32(buf_.data());
  rec_len_ = LoadLE32(buf_.data() + 4);
  std::string what = std::string(RecordTypeName(rec_type_)) + " record (type " + Hex(rec_type_) +
                     ") of " + std::to_string(rec_len_) + " bytes";
  if (rec_len_ > limits_.max_record_length) {
    return Status::OutOfRange(what + " exceeds the " + std::to_string(limits_.max_record_length) +
                              "-byte limit");
  }
  if (rec_type_ == kRecPageData) {
    if (rec_len_ < kPageDataHeaderSize) return Status::Corruption(what + ": truncated header");
    state_ = State::kPageHeader;
    need_ = kRecordHeaderSize + kPageDataHeaderSize;  // the record header stays in buf_
    return Status::Ok();
  }
  if ((rec_type_ == kRecEnd || rec_type_ == kRecCheckpoint || rec_type_ == kRecStaticDataEnd) &&
      rec_len_ != 0) {
    return Status::Corruption(what + ": must be empty");
  }
  if (rec_len_ > limits_.max_state_record_length) {
    return Status::OutOfRange(what + " exceeds the " +
                              std::to_string(limits_.max_state_record_length) +
                              "-byte limit for non-page records");
  }
  buf_.clear();
  pad_left_ = PadOf(rec_len_);
  need_ = rec_len_;
  state_ = State::kBody;
  if (rec_len_ == 0) {
    if (pad_left_ != 0) return Status::Internal("padding on an empty record");
    return OnBodyComplete();
  }
  return Status::Ok();
}

Status StreamParser::OnBodyComplete() {
  stats_.records++;
  Status s;
  uint32_t type = rec_type_;
  if (type == kRecCheckpoint) {
    stats_.checkpoints++;
    s = visitor_->OnCheckpoint();
  } else {
    s = visitor_->OnRecord(type, std::span<const uint8_t>(buf_.data(), rec_len_));
  }
  if (!s.ok()) return s;
  buf_.clear();
  if (type == kRecEnd) {
    state_ = State::kDone;
    return Status::Ok();
  }
  state_ = State::kRecordHeader;
  need_ = kRecordHeaderSize;
  return Status::Ok();
}

Status StreamParser::OnPfnsComplete() {
  auto data_pfns = SkeletonDataPfns(std::span(buf_.data(), buf_.size()), limits_);
  if (!data_pfns.ok()) return data_pfns.status();
  stats_.records++;
  stats_.page_data_records++;
  stats_.pfns += count_;
  Status s = visitor_->OnPageData(std::span(buf_.data(), buf_.size()));
  if (!s.ok()) return s;
  // Keep only the pfn words; walk them to find the pages with data.
  next_pfn_ = 0;
  page_fill_ = 0;
  state_ = State::kPages;
  return NextDataPage();
}

// Positions on the next pfn word that carries data, or ends the record.
Status StreamParser::NextDataPage() {
  const uint8_t* words = buf_.data() + kRecordHeaderSize + kPageDataHeaderSize;
  while (next_pfn_ < count_) {
    uint64_t w = LoadLE64(words + 8ull * next_pfn_++);
    if (PageTypeHasData(uint32_t(w >> kPfnTypeShift))) {
      page_pfn_ = w & kPfnMask;
      state_ = State::kPages;
      return Status::Ok();
    }
  }
  buf_.clear();
  state_ = State::kRecordHeader;
  need_ = kRecordHeaderSize;
  return Status::Ok();
}

Status StreamParser::Finish() const {
  switch (state_) {
    case State::kFailed: return error_;
    case State::kRecordHeader:
      if (buf_.empty()) return Status::Ok();
      return Status::Closed("migration stream ends inside a record header");
    case State::kDone: return Status::Ok();
    case State::kImageHeader:
    case State::kDomainHeader: return Status::Closed("migration stream ends inside its headers");
    default:
      return Status::Closed(std::string("migration stream ends inside a ") + RecordTypeName(rec_type_) +
                            " record");
  }
}

Result<std::vector<uint64_t>> SkeletonDataPfns(std::span<const uint8_t> sk, const ParserLimits& limits) {
  if (sk.size() < kRecordHeaderSize + kPageDataHeaderSize) {
    return Status::Corruption("PAGE_DATA skeleton too short");
  }
  if (LoadLE32(sk.data()) != kRecPageData) return Status::Corruption("skeleton is not a PAGE_DATA record");
  uint32_t len = LoadLE32(sk.data() + 4);
  uint32_t count = LoadLE32(sk.data() + 8);
  if (count == 0) return Status::Corruption("PAGE_DATA record with count 0");
  if (count > limits.max_pfns_per_record) return Status::OutOfRange("PAGE_DATA skeleton with too many pfns");
  if (len > limits.max_record_length) return Status::OutOfRange("PAGE_DATA record too long");
  if (sk.size() != kRecordHeaderSize + kPageDataHeaderSize + 8ull * count) {
    return Status::Corruption("PAGE_DATA skeleton size does not match its count");
  }
  std::vector<uint64_t> out;
  const uint8_t* words = sk.data() + kRecordHeaderSize + kPageDataHeaderSize;
  for (uint32_t i = 0; i < count; i++) {
    uint64_t w = LoadLE64(words + 8ull * i);
    uint32_t type = uint32_t(w >> kPfnTypeShift);
    // Bits 59-52 are reserved; libxc ignores them and so do we (they are
    // carried through byte for byte).
    if (!IsKnownPageType(type)) {
      return Status::Corruption("PAGE_DATA pfn " + Hex(w & kPfnMask) + " has unknown page type " + Hex(type));
    }
    if (PageTypeHasData(type)) out.push_back(w & kPfnMask);
  }
  uint64_t expect = kPageDataHeaderSize + 8ull * count + uint64_t(kXenPageSize) * out.size();
  if (expect != len) {
    return Status::Corruption("PAGE_DATA record length " + std::to_string(len) + ", expected " +
                              std::to_string(expect) + " for " + std::to_string(count) + " pfns of which " +
                              std::to_string(out.size()) + " carry data");
  }
  return out;
}

// ---- StreamReconstructor ------------------------------------------------------

StreamReconstructor::StreamReconstructor(ByteWriter out, ParserLimits limits)
    : out_(std::move(out)), limits_(limits) {}

void StreamReconstructor::Reset() {
  queue_.clear();
  want_.clear();
  want_next_ = 0;
  pages_left_ = 0;
}

Status StreamReconstructor::Write(std::span<const uint8_t> b) {
  if (b.empty()) return Status::Ok();
  bytes_ += b.size();
  return out_(b);
}

Status StreamReconstructor::Enqueue(Item::Kind kind, std::span<const uint8_t> bytes, size_t pad) {
  if (pages_left_ == 0 && queue_.empty()) {
    if (kind == Item::kSkeleton) return StartSkeleton(bytes);
    ROMULUS_RETURN_IF_ERROR(Write(bytes));
    static const uint8_t zeros[8] = {};
    return Write(std::span(zeros, pad));
  }
  Item item{kind, std::vector<uint8_t>(bytes.begin(), bytes.end())};
  item.bytes.resize(bytes.size() + pad, 0);
  queue_.push_back(std::move(item));
  return Status::Ok();
}

Status StreamReconstructor::StartSkeleton(std::span<const uint8_t> skeleton) {
  auto pfns = SkeletonDataPfns(skeleton, limits_);
  if (!pfns.ok()) return pfns.status();
  ROMULUS_RETURN_IF_ERROR(Write(skeleton));
  want_ = std::move(pfns.value());
  want_next_ = 0;
  pages_left_ = want_.size();
  return Status::Ok();
}

// Writes queued items until one waits for pages.
Status StreamReconstructor::Drain() {
  while (pages_left_ == 0 && !queue_.empty()) {
    Item item = std::move(queue_.front());
    queue_.pop_front();
    if (item.kind == Item::kSkeleton) {
      ROMULUS_RETURN_IF_ERROR(StartSkeleton(item.bytes));
    } else {
      ROMULUS_RETURN_IF_ERROR(Write(item.bytes));
    }
  }
  return Status::Ok();
}

Status StreamReconstructor::OnImageHeader(std::span<const uint8_t> hdr) {
  if (hdr.size() != kImageHeaderSize) return Status::Corruption("image header must be 24 bytes");
  return Enqueue(Item::kRaw, hdr, 0);
}

Status StreamReconstructor::OnDomainHeader(std::span<const uint8_t> hdr) {
  if (hdr.size() != kDomainHeaderSize) return Status::Corruption("domain header must be 16 bytes");
  return Enqueue(Item::kRaw, hdr, 0);
}

Status StreamReconstructor::OnRecord(uint32_t type, std::span<const uint8_t> body) {
  if (type == kRecPageData) return Status::Corruption("PAGE_DATA passed as a plain record");
  if (body.size() > limits_.max_state_record_length) return Status::OutOfRange("record too long");
  std::vector<uint8_t> rec(kRecordHeaderSize + body.size());
  StoreLE32(rec.data(), type);
  StoreLE32(rec.data() + 4, uint32_t(body.size()));
  if (!body.empty()) memcpy(rec.data() + kRecordHeaderSize, body.data(), body.size());
  return Enqueue(Item::kRaw, rec, PadOf(uint32_t(body.size())));
}

Status StreamReconstructor::OnPageData(std::span<const uint8_t> skeleton) {
  // Validate now even if queued, so a bad skeleton fails where it arrives.
  auto pfns = SkeletonDataPfns(skeleton, limits_);
  if (!pfns.ok()) return pfns.status();
  return Enqueue(Item::kSkeleton, skeleton, 0);
}

Status StreamReconstructor::OnPage(uint64_t pfn, const uint8_t* page) {
  if (pages_left_ == 0) return Status::Corruption("page " + Hex(pfn) + " without a PAGE_DATA skeleton");
  if (want_[want_next_] != pfn) {
    return Status::Corruption("page " + Hex(pfn) + " arrived where the skeleton expects pfn " +
                              Hex(want_[want_next_]));
  }
  want_next_++;
  pages_left_--;
  ROMULUS_RETURN_IF_ERROR(Write(std::span(page, kXenPageSize)));
  return pages_left_ == 0 ? Drain() : Status::Ok();
}

Status StreamReconstructor::OnCheckpoint() {
  uint8_t rec[kRecordHeaderSize];
  StoreLE32(rec, kRecCheckpoint);
  StoreLE32(rec + 4, 0);
  return Enqueue(Item::kCheckpoint, rec, 0);
}

// ---- Envelope -----------------------------------------------------------------

void WrapEnvelope(EnvelopeKind kind, std::span<const uint8_t> payload, std::vector<uint8_t>* out) {
  out->clear();
  out->reserve(kEnvelopeHeaderSize + payload.size());
  out->push_back('X');
  out->push_back('2');
  out->push_back(uint8_t(kind));
  out->push_back(0);
  out->insert(out->end(), payload.begin(), payload.end());
}

void WrapRecord(uint32_t type, std::span<const uint8_t> body, std::vector<uint8_t>* out) {
  out->clear();
  out->resize(kEnvelopeHeaderSize + kRecordHeaderSize + body.size());
  uint8_t* p = out->data();
  p[0] = 'X', p[1] = '2', p[2] = uint8_t(EnvelopeKind::kRecord), p[3] = 0;
  StoreLE32(p + 4, type);
  StoreLE32(p + 8, uint32_t(body.size()));
  if (!body.empty()) memcpy(p + kEnvelopeHeaderSize + kRecordHeaderSize, body.data(), body.size());
}

uint8_t EnvelopeKindOf(std::span<const uint8_t> blob) {
  if (blob.size() < kEnvelopeHeaderSize || blob[0] != 'X' || blob[1] != '2' || blob[3] != 0) return 0;
  return blob[2];
}

Status DispatchEnvelope(std::span<const uint8_t> blob, StreamVisitor* v) {
  if (blob.size() < kEnvelopeHeaderSize || blob[0] != 'X' || blob[1] != '2' || blob[3] != 0) {
    return Status::Corruption("STATE record is not a Xen stream envelope");
  }
  auto payload = blob.subspan(kEnvelopeHeaderSize);
  switch (EnvelopeKind(blob[2])) {
    case EnvelopeKind::kImageHeader:
      if (payload.size() != kImageHeaderSize) return Status::Corruption("envelope: bad image header size");
      return v->OnImageHeader(payload);
    case EnvelopeKind::kDomainHeader:
      if (payload.size() != kDomainHeaderSize) return Status::Corruption("envelope: bad domain header size");
      return v->OnDomainHeader(payload);
    case EnvelopeKind::kRecord: {
      if (payload.size() < kRecordHeaderSize) return Status::Corruption("envelope: truncated record");
      uint32_t type = LoadLE32(payload.data());
      uint32_t len = LoadLE32(payload.data() + 4);
      if (len != payload.size() - kRecordHeaderSize) {
        return Status::Corruption("envelope: record length does not match its body");
      }
      if (type == kRecPageData) return Status::Corruption("envelope: PAGE_DATA must travel as a skeleton");
      if (type == kRecCheckpoint) return v->OnCheckpoint();
      return v->OnRecord(type, payload.subspan(kRecordHeaderSize));
    }
    case EnvelopeKind::kSkeleton:
      return v->OnPageData(payload);
    case EnvelopeKind::kDomainInfo:
    case EnvelopeKind::kDeviceModelState:
      return Status::Ok();
  }
  return Status::Corruption("envelope: unknown kind " + std::to_string(blob[2]));
}

}  // namespace romulus::xen
