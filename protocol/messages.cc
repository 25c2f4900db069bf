#include "protocol/messages.h"

#include <cstring>

#include "protocol/wire.h"

namespace romulus::protocol {
namespace {

std::string Str(size_t v) { return std::to_string(v); }

// Peer-supplied names and texts: printable ASCII or UTF-8 bytes >= 0x80, no
// control characters (they end up in log lines and file names).
bool IsCleanText(std::string_view s) {
  for (unsigned char c : s) {
    if (c < 0x20 || c == 0x7f) return false;
  }
  return true;
}

// id, size, name length: the fixed part of one HELLO disk entry.
constexpr size_t kDiskEntryFixed = 4 + 8 + 1;
// disk id, lineage, tag: one HELLO_ACK held-disk entry.
constexpr size_t kDiskHeldSize = 4 + 8 + 8;

Status CheckDiskList(const std::vector<DiskInfo>& disks) {
  if (disks.size() > kMaxDisks) {
    return Status::Corruption("HELLO lists " + Str(disks.size()) + " disks, at most " + Str(kMaxDisks));
  }
  for (size_t i = 0; i < disks.size(); ++i) {
    const DiskInfo& d = disks[i];
    if (d.name.empty() || d.name.size() > kMaxDiskName || !IsCleanText(d.name)) {
      return Status::Corruption("HELLO disk name must be 1.." + Str(kMaxDiskName) +
                                " bytes without control characters");
    }
    if (d.size_bytes == 0 || d.size_bytes % kDiskSectorSize != 0) {
      return Status::Corruption("HELLO disk " + d.name + " size " + Str(d.size_bytes) +
                                " is not a non-zero multiple of " + Str(kDiskSectorSize));
    }
    for (size_t j = 0; j < i; ++j) {
      if (disks[j].id == d.id) return Status::Corruption("HELLO disk id " + Str(d.id) + " listed twice");
    }
  }
  return Status::Ok();
}

Status CheckLineages(const std::vector<uint64_t>& lineages, size_t disks) {
  if (lineages.size() != disks) {
    return Status::Corruption("HELLO names " + Str(lineages.size()) + " disk lineages for " + Str(disks) + " disks");
  }
  for (uint64_t l : lineages) {
    if (l == 0) return Status::Corruption("HELLO disk lineage 0 (reserved for none)");
  }
  return Status::Ok();
}

Status CheckDisksHeld(const std::vector<DiskHeld>& held) {
  if (held.size() > kMaxDisks) {
    return Status::Corruption("HELLO_ACK lists " + Str(held.size()) + " held disks, at most " + Str(kMaxDisks));
  }
  for (size_t i = 0; i < held.size(); ++i) {
    if (held[i].lineage == 0) return Status::Corruption("HELLO_ACK held disk lineage 0 (reserved for none)");
    for (size_t j = 0; j < i; ++j) {
      if (held[j].disk_id == held[i].disk_id) {
        return Status::Corruption("HELLO_ACK held disk id " + Str(held[i].disk_id) + " listed twice");
      }
    }
  }
  return Status::Ok();
}

Status Truncated(const char* what) {
  return Status::Corruption(std::string(what) + " payload truncated");
}

Status ExactSize(const char* what, size_t got, size_t want) {
  if (got == want) return Status::Ok();
  return Status::Corruption(std::string(what) + " payload is " + Str(got) + " bytes, expected " +
                            Str(want));
}

// Encodes with a Writer over a vector resized to exactly `size`.
template <typename Fn>
Status EncodeExact(std::vector<uint8_t>* out, size_t size, Fn fn) {
  out->resize(size);
  Writer w(*out);
  fn(w);
  if (!w.ok() || w.size() != size) return Status::Internal("message encoding size mismatch");
  return Status::Ok();
}

}  // namespace

const char* ResyncReasonName(ResyncReason r) {
  switch (r) {
    case ResyncReason::kInitial: return "initial";
    case ResyncReason::kBackupReconnect: return "backup-reconnect";
    case ResyncReason::kLinkReset: return "link-reset";
    case ResyncReason::kPrimaryRestart: return "primary-restart";
  }
  return "unknown";
}

const char* ByeReasonName(ByeReason r) {
  switch (r) {
    case ByeReason::kOperatorStop: return "operator-stop";
    case ByeReason::kGuestShutdown: return "guest-shutdown";
    case ByeReason::kBackupStopping: return "backup-stopping";
    case ByeReason::kHandover: return "handover";
  }
  return "unknown";
}

std::string ErrorCodeName(uint16_t code) {
  switch (static_cast<ErrorCode>(code)) {
    case ErrorCode::kNone: return "none";
    case ErrorCode::kProtocol: return "protocol";
    case ErrorCode::kChecksum: return "checksum";
    case ErrorCode::kVersion: return "version";
    case ErrorCode::kCapabilities: return "capabilities";
    case ErrorCode::kGeometry: return "geometry";
    case ErrorCode::kResource: return "resource";
    case ErrorCode::kDigestMismatch: return "digest-mismatch";
    case ErrorCode::kDecode: return "decode";
    case ErrorCode::kBusy: return "busy";
    case ErrorCode::kIdentity: return "identity";
    case ErrorCode::kInternal: return "internal";
    case ErrorCode::kShutdown: return "shutdown";
    case ErrorCode::kResync: return "resync";
  }
  return "code-" + std::to_string(code);
}

ErrorCode ErrorCodeFor(const Status& status) {
  switch (status.code()) {
    case Code::kOk: return ErrorCode::kNone;
    case Code::kCorruption:
      return status.message().find("checksum") != std::string::npos ? ErrorCode::kChecksum
                                                                     : ErrorCode::kProtocol;
    case Code::kOutOfRange: return ErrorCode::kResource;
    case Code::kStorage: return ErrorCode::kResource;  // the backup's disk, not the stream
    case Code::kUnsupported: return ErrorCode::kProtocol;
    case Code::kInvalidArgument: return ErrorCode::kProtocol;
    case Code::kInternal: return ErrorCode::kInternal;
    default: return ErrorCode::kShutdown;
  }
}

std::string Printable(std::string_view text) {
  std::string out(text);
  for (char& c : out) {
    unsigned char u = static_cast<unsigned char>(c);
    if (u < 0x20 || u >= 0x7f) c = '?';
  }
  return out;
}

std::string DescribeErrorPayload(std::span<const uint8_t> payload) {
  auto err = Error::Decode(payload);
  return err.ok() ? ErrorCodeName(err->code) + ": " + Printable(err->text) : std::string("malformed ERROR");
}

// ---- HELLO ----------------------------------------------------------------

size_t Hello::EncodedSize() const {
  size_t n = kHelloFixedSize + identity.size();
  if ((capabilities & kCapDisk) != 0) {
    n += 2;
    for (const DiskInfo& d : disks) n += kDiskEntryFixed + d.name.size();
  }
  if ((capabilities & kCapDiskDelta) != 0) n += 8 * disk_lineages.size();
  if ((capabilities & kCapXenRelease) != 0) n += 4;
  if ((capabilities & kCapDiskFloor) != 0) n += 8 * disk_change_floors.size();
  return n;
}

Status Hello::EncodeTo(std::vector<uint8_t>* out) const {
  if (identity.empty() || identity.size() > kMaxIdentity || !IsCleanText(identity)) {
    return Status::InvalidArgument("guest identity must be 1.." + Str(kMaxIdentity) +
                                   " bytes without control characters");
  }
  if ((required & ~capabilities) != 0) {
    return Status::InvalidArgument("required capabilities are not a subset of offered ones");
  }
  const bool with_disks = (capabilities & kCapDisk) != 0;
  if (!with_disks && !disks.empty()) {
    return Status::InvalidArgument("HELLO lists disks without offering the disk capability");
  }
  const bool with_lineages = (capabilities & kCapDiskDelta) != 0;
  if (with_lineages && !with_disks) {
    return Status::InvalidArgument("HELLO offers disk lineages without the disk capability");
  }
  if (!with_lineages && !disk_lineages.empty()) {
    return Status::InvalidArgument("HELLO names disk lineages without offering kCapDiskDelta");
  }
  if (with_disks) {
    if (Status s = CheckDiskList(disks); !s.ok()) return Status::InvalidArgument(s.message());
  }
  if (with_lineages) {
    if (Status s = CheckLineages(disk_lineages, disks.size()); !s.ok()) return Status::InvalidArgument(s.message());
  }
  const bool with_release = (capabilities & kCapXenRelease) != 0;
  if (with_release != (xen_release != 0)) {
    return Status::InvalidArgument("HELLO: a Xen release is sent exactly when kCapXenRelease is offered");
  }
  const bool with_floors = (capabilities & kCapDiskFloor) != 0;
  if (with_floors && !with_lineages) {
    return Status::InvalidArgument("HELLO offers disk change floors without kCapDiskDelta");
  }
  if (with_floors ? disk_change_floors.size() != disks.size() : !disk_change_floors.empty()) {
    return Status::InvalidArgument("HELLO: one disk change floor per disk, exactly when kCapDiskFloor is offered");
  }
  const size_t size = EncodedSize();
  if (size > MaxPayloadFor(static_cast<uint8_t>(kType))) {
    return Status::InvalidArgument("HELLO of " + Str(size) + " bytes exceeds its bound of " +
                                   Str(MaxPayloadFor(static_cast<uint8_t>(kType))));
  }
  return EncodeExact(out, size, [&](Writer& w) {
    w.Bytes(std::span<const uint8_t>(kHelloMagic, sizeof kHelloMagic));
    w.U16(version_min);
    w.U16(version_max);
    w.U32(page_size);
    w.U64(capabilities);
    w.U64(required);
    w.U64(cache_pages);
    w.U64(guest_pages);
    w.U64(session_id);
    w.U64(first_epoch);
    w.U32(heartbeat_ms);
    w.U32(peer_timeout_ms);
    w.U8(static_cast<uint8_t>(resync_reason));
    w.U8(0);
    w.U16(static_cast<uint16_t>(identity.size()));
    w.Bytes(identity);
    if (with_disks) {
      w.U16(static_cast<uint16_t>(disks.size()));
      for (const DiskInfo& d : disks) {
        w.U32(d.id);
        w.U64(d.size_bytes);
        w.U8(static_cast<uint8_t>(d.name.size()));
        w.Bytes(d.name);
      }
    }
    if (with_lineages) {
      for (uint64_t l : disk_lineages) w.U64(l);
    }
    if (with_release) {
      w.U32(xen_release);
    }
    if (with_floors) {
      for (uint64_t f : disk_change_floors) w.U64(f);
    }
  });
}

Result<Hello> Hello::Decode(std::span<const uint8_t> payload) {
  if (payload.size() > MaxPayloadFor(static_cast<uint8_t>(kType))) {
    return Status::Corruption("HELLO payload too large");
  }
  Reader r(payload);
  std::span<const uint8_t> magic;
  if (!r.Bytes(sizeof kHelloMagic, &magic)) return Truncated("HELLO");
  if (std::memcmp(magic.data(), kHelloMagic, sizeof kHelloMagic) != 0) {
    return Status::Corruption("HELLO magic mismatch: peer is not a Romulus primary");
  }
  Hello h;
  uint8_t reason = 0, reserved = 0;
  uint16_t id_len = 0;
  if (!(r.U16(&h.version_min) && r.U16(&h.version_max) && r.U32(&h.page_size) &&
        r.U64(&h.capabilities) && r.U64(&h.required) && r.U64(&h.cache_pages) &&
        r.U64(&h.guest_pages) && r.U64(&h.session_id) && r.U64(&h.first_epoch) &&
        r.U32(&h.heartbeat_ms) && r.U32(&h.peer_timeout_ms) && r.U8(&reason) &&
        r.U8(&reserved) && r.U16(&id_len))) {
    return Truncated("HELLO");
  }
  if (reserved != 0) return Status::Corruption("HELLO reserved byte is not zero");
  if (reason > static_cast<uint8_t>(ResyncReason::kPrimaryRestart)) {
    return Status::Corruption("HELLO resync reason " + Str(reason) + " is unknown");
  }
  h.resync_reason = static_cast<ResyncReason>(reason);
  if (id_len == 0 || id_len > kMaxIdentity) {
    return Status::Corruption("HELLO identity length " + Str(id_len) + " outside 1.." +
                              Str(kMaxIdentity));
  }
  if (!r.String(id_len, &h.identity)) return Truncated("HELLO");
  if (!IsCleanText(h.identity)) {
    return Status::Corruption("HELLO identity contains control characters");
  }
  if ((h.required & ~h.capabilities) != 0) {
    return Status::Corruption("HELLO requires capabilities it does not offer");
  }
  if ((h.capabilities & kCapDisk) != 0) {
    uint16_t count = 0;
    if (!r.U16(&count)) return Truncated("HELLO disk list");
    if (count > kMaxDisks) {
      return Status::Corruption("HELLO lists " + Str(count) + " disks, at most " + Str(kMaxDisks));
    }
    h.disks.resize(count);
    for (DiskInfo& d : h.disks) {
      uint8_t name_len = 0;
      if (!(r.U32(&d.id) && r.U64(&d.size_bytes) && r.U8(&name_len))) return Truncated("HELLO disk list");
      if (name_len == 0 || name_len > kMaxDiskName) {
        return Status::Corruption("HELLO disk name length " + Str(name_len) + " outside 1.." +
                                  Str(kMaxDiskName));
      }
      if (!r.String(name_len, &d.name)) return Truncated("HELLO disk list");
    }
    if (Status s = CheckDiskList(h.disks); !s.ok()) return s;
  }
  if ((h.capabilities & kCapDiskDelta) != 0) {
    if ((h.capabilities & kCapDisk) == 0) return Status::Corruption("HELLO offers disk lineages without disks");
    h.disk_lineages.resize(h.disks.size());
    for (uint64_t& l : h.disk_lineages) {
      if (!r.U64(&l)) return Truncated("HELLO disk lineages");
    }
    if (Status s = CheckLineages(h.disk_lineages, h.disks.size()); !s.ok()) return s;
  }
  if ((h.capabilities & kCapXenRelease) != 0) {
    if (!r.U32(&h.xen_release)) return Truncated("HELLO Xen release");
    if (h.xen_release == 0) return Status::Corruption("HELLO offers kCapXenRelease with release 0");
  }
  if ((h.capabilities & kCapDiskFloor) != 0) {
    if ((h.capabilities & kCapDiskDelta) == 0) {
      return Status::Corruption("HELLO offers disk change floors without disk lineages");
    }
    h.disk_change_floors.resize(h.disks.size());
    for (uint64_t& f : h.disk_change_floors) {
      if (!r.U64(&f)) return Truncated("HELLO disk change floors");
    }
  }
  // Bytes after the last known field: extensions from later versions, ignored.
  return h;
}

std::string XenReleaseName(uint32_t release) {
  return Str(release >> 16) + "." + Str(release & 0xffff);
}

// ---- HELLO_ACK --------------------------------------------------------------

Status HelloAck::EncodeTo(std::vector<uint8_t>* out) const {
  if (text.size() > kMaxShortText) {
    return Status::InvalidArgument("HELLO_ACK text longer than " + Str(kMaxShortText));
  }
  if (accepted != (error == ErrorCode::kNone)) {
    return Status::InvalidArgument("HELLO_ACK: an error code is required exactly when refusing");
  }
  size_t ext = has_max_cache() ? 8 : 0;
  if (has_disks_held()) {
    if (Status s = CheckDisksHeld(disks_held); !s.ok()) return Status::InvalidArgument(s.message());
    ext += 2 + kDiskHeldSize * disks_held.size();
  } else if (!disks_held.empty()) {
    return Status::InvalidArgument("HELLO_ACK lists held disks without accepting kCapDiskDelta");
  }
  return EncodeExact(out, kHelloAckFixedSize + text.size() + ext, [&](Writer& w) {
    w.U8(accepted ? 0 : 1);
    w.U8(0);
    w.U16(version);
    w.U16(static_cast<uint16_t>(error));
    w.U16(static_cast<uint16_t>(text.size()));
    w.U64(capabilities);
    w.U64(session_id);
    w.U64(backup_epoch);
    w.Bytes(text);
    if (has_max_cache()) w.U64(max_cache_pages);
    if (has_disks_held()) {
      w.U16(static_cast<uint16_t>(disks_held.size()));
      for (const DiskHeld& d : disks_held) {
        w.U32(d.disk_id);
        w.U64(d.lineage);
        w.U64(d.tag);
      }
    }
  });
}

Result<HelloAck> HelloAck::Decode(std::span<const uint8_t> payload) {
  if (payload.size() > MaxPayloadFor(static_cast<uint8_t>(kType))) {
    return Status::Corruption("HELLO_ACK payload too large");
  }
  Reader r(payload);
  HelloAck a;
  uint8_t result = 0, reserved = 0;
  uint16_t error = 0, text_len = 0;
  if (!(r.U8(&result) && r.U8(&reserved) && r.U16(&a.version) && r.U16(&error) &&
        r.U16(&text_len) && r.U64(&a.capabilities) && r.U64(&a.session_id) &&
        r.U64(&a.backup_epoch))) {
    return Truncated("HELLO_ACK");
  }
  if (result > 1) return Status::Corruption("HELLO_ACK result " + Str(result) + " is unknown");
  if (reserved != 0) return Status::Corruption("HELLO_ACK reserved byte is not zero");
  a.accepted = result == 0;
  if (a.accepted != (error == 0)) {
    return Status::Corruption("HELLO_ACK error code inconsistent with its result");
  }
  a.error = static_cast<ErrorCode>(error);  // unknown refusal codes are kept as numbers
  if (text_len > kMaxShortText) {
    return Status::Corruption("HELLO_ACK text length " + Str(text_len) + " exceeds " +
                              Str(kMaxShortText));
  }
  if (!r.String(text_len, &a.text)) return Truncated("HELLO_ACK");
  // The kCapCacheResize extension; a backup that agrees to the capability
  // must say how far the primary may grow the cache.
  if (a.has_max_cache() && !r.U64(&a.max_cache_pages)) {
    return Status::Corruption("HELLO_ACK agrees to cache resizing without the backup's cache limit");
  }
  if (a.has_disks_held()) {
    uint16_t count = 0;
    if (!r.U16(&count)) return Status::Corruption("HELLO_ACK agrees to disk lineages without its held disks");
    if (count > kMaxDisks) {
      return Status::Corruption("HELLO_ACK lists " + Str(count) + " held disks, at most " + Str(kMaxDisks));
    }
    a.disks_held.resize(count);
    for (DiskHeld& d : a.disks_held) {
      if (!(r.U32(&d.disk_id) && r.U64(&d.lineage) && r.U64(&d.tag))) return Truncated("HELLO_ACK held disks");
    }
    if (Status s = CheckDisksHeld(a.disks_held); !s.ok()) return s;
  }
  // Anything further: extensions from later versions, ignored.
  return a;
}

// ---- EPOCH_END, ACK, HEARTBEAT ----------------------------------------------

Status EpochEnd::EncodeTo(std::vector<uint8_t>* out) const {
  return EncodeExact(out, kEpochEndSize, [&](Writer& w) {
    w.U64(page_count);
    w.U32(state_count);
    w.U32(frame_count);
    w.U64(payload_bytes);
    w.U64(digest);
  });
}

Result<EpochEnd> EpochEnd::Decode(std::span<const uint8_t> payload) {
  ROMULUS_RETURN_IF_ERROR(ExactSize("EPOCH_END", payload.size(), kEpochEndSize));
  Reader r(payload);
  EpochEnd e;
  if (!(r.U64(&e.page_count) && r.U32(&e.state_count) && r.U32(&e.frame_count) &&
        r.U64(&e.payload_bytes) && r.U64(&e.digest))) {
    return Truncated("EPOCH_END");
  }
  return e;
}

Status Ack::EncodeTo(std::vector<uint8_t>* out) const {
  return EncodeExact(out, kAckSize, [&](Writer& w) {
    w.U64(epoch);
    w.U64(digest);
  });
}

Result<Ack> Ack::Decode(std::span<const uint8_t> payload) {
  ROMULUS_RETURN_IF_ERROR(ExactSize("ACK", payload.size(), kAckSize));
  Reader r(payload);
  Ack a;
  if (!(r.U64(&a.epoch) && r.U64(&a.digest))) return Truncated("ACK");
  return a;
}

Result<Ack> DecodeAckFrame(uint64_t header_epoch, std::span<const uint8_t> payload) {
  auto a = Ack::Decode(payload);
  if (!a.ok()) return a;
  if (a->epoch != header_epoch) {
    return Status::Corruption("ACK for epoch " + std::to_string(a->epoch) +
                              " arrived in a frame of epoch " + std::to_string(header_epoch));
  }
  return a;
}

Status CacheResize::EncodeTo(std::vector<uint8_t>* out) const {
  return EncodeExact(out, kCacheResizeSize, [&](Writer& w) {
    w.U64(cache_pages);
    w.U64(0);  // reserved
  });
}

Result<CacheResize> CacheResize::Decode(std::span<const uint8_t> payload) {
  ROMULUS_RETURN_IF_ERROR(ExactSize("CACHE_RESIZE", payload.size(), kCacheResizeSize));
  Reader r(payload);
  CacheResize c;
  uint64_t reserved = 0;
  if (!(r.U64(&c.cache_pages) && r.U64(&reserved))) return Truncated("CACHE_RESIZE");
  if (reserved != 0) return Status::Corruption("CACHE_RESIZE reserved bytes are not zero");
  return c;
}

// ---- HELD -------------------------------------------------------------------

Status Held::EncodeTo(std::vector<uint8_t>* out) const {
  if (last() ? !hashes.empty() : (hashes.empty() || hashes.size() > kMaxHashes)) {
    return Status::InvalidArgument("HELD: " + std::to_string(hashes.size()) + " hashes in a " +
                                   (last() ? "last" : "range") + " frame");
  }
  if ((flags & ~kLast) != 0) return Status::InvalidArgument("HELD: unknown flags");
  const size_t size = 16 + (last() ? 8 : 8 * hashes.size());
  return EncodeExact(out, size, [&](Writer& w) {
    w.U64(first_pfn);
    w.U32(last() ? 0 : static_cast<uint32_t>(hashes.size()));
    w.U32(flags);
    if (last()) {
      w.U64(digest);
    } else {
      for (uint64_t h : hashes) w.U64(h);
    }
  });
}

Result<Held> Held::Decode(std::span<const uint8_t> payload) {
  Reader r(payload);
  Held h;
  uint32_t count = 0;
  if (!(r.U64(&h.first_pfn) && r.U32(&count) && r.U32(&h.flags))) return Truncated("HELD");
  if ((h.flags & ~kLast) != 0) return Status::Corruption("HELD: unknown flags " + std::to_string(h.flags));
  if (h.last()) {
    if (count != 0) return Status::Corruption("HELD: the last frame carries hashes");
    ROMULUS_RETURN_IF_ERROR(ExactSize("HELD", payload.size(), 24));
    r.U64(&h.digest);
    return h;
  }
  if (count == 0 || count > kMaxHashes) {
    return Status::Corruption("HELD: " + std::to_string(count) + " hashes (1.." + std::to_string(kMaxHashes) + ")");
  }
  ROMULUS_RETURN_IF_ERROR(ExactSize("HELD", payload.size(), 16 + 8 * size_t{count}));
  h.hashes.resize(count);
  for (auto& v : h.hashes) r.U64(&v);
  return h;
}

Status Heartbeat::EncodeTo(std::vector<uint8_t>* out) const {
  return EncodeExact(out, kHeartbeatSize, [&](Writer& w) {
    w.U64(send_ns);
    w.U64(echo_ns);
    w.U64(committed);
  });
}

Result<Heartbeat> Heartbeat::Decode(std::span<const uint8_t> payload) {
  ROMULUS_RETURN_IF_ERROR(ExactSize("HEARTBEAT", payload.size(), kHeartbeatSize));
  Reader r(payload);
  Heartbeat h;
  if (!(r.U64(&h.send_ns) && r.U64(&h.echo_ns) && r.U64(&h.committed))) {
    return Truncated("HEARTBEAT");
  }
  return h;
}

// ---- BYE, ERROR -------------------------------------------------------------

Status Bye::EncodeTo(std::vector<uint8_t>* out) const {
  if (text.size() > kMaxShortText) {
    return Status::InvalidArgument("BYE text longer than " + Str(kMaxShortText));
  }
  return EncodeExact(out, 4 + text.size(), [&](Writer& w) {
    w.U8(static_cast<uint8_t>(reason));
    w.U8(0);
    w.U16(static_cast<uint16_t>(text.size()));
    w.Bytes(text);
  });
}

Result<Bye> Bye::Decode(std::span<const uint8_t> payload) {
  Reader r(payload);
  Bye b;
  uint8_t reason = 0, reserved = 0;
  uint16_t len = 0;
  if (!(r.U8(&reason) && r.U8(&reserved) && r.U16(&len))) return Truncated("BYE");
  if (reason > static_cast<uint8_t>(ByeReason::kHandover)) {
    return Status::Corruption("BYE reason " + Str(reason) + " is unknown");
  }
  if (reserved != 0) return Status::Corruption("BYE reserved byte is not zero");
  if (len > kMaxShortText) return Status::Corruption("BYE text length " + Str(len) + " too long");
  b.reason = static_cast<ByeReason>(reason);
  if (!r.String(len, &b.text)) return Truncated("BYE");
  if (r.remaining() != 0) return Status::Corruption("BYE payload has trailing bytes");
  return b;
}

Error Error::Make(ErrorCode code, std::string text) {
  Error e;
  e.code = static_cast<uint16_t>(code);
  if (text.size() > kMaxErrorText) text.resize(kMaxErrorText);
  e.text = std::move(text);
  return e;
}

Status Error::EncodeTo(std::vector<uint8_t>* out) const {
  if (text.size() > kMaxErrorText) {
    return Status::InvalidArgument("ERROR text longer than " + Str(kMaxErrorText));
  }
  return EncodeExact(out, 4 + text.size(), [&](Writer& w) {
    w.U16(code);
    w.U16(static_cast<uint16_t>(text.size()));
    w.Bytes(text);
  });
}

Result<Error> Error::Decode(std::span<const uint8_t> payload) {
  Reader r(payload);
  Error e;
  uint16_t len = 0;
  if (!(r.U16(&e.code) && r.U16(&len))) return Truncated("ERROR");
  if (len > kMaxErrorText) return Status::Corruption("ERROR text length " + Str(len) + " too long");
  if (!r.String(len, &e.text)) return Truncated("ERROR");
  if (r.remaining() != 0) return Status::Corruption("ERROR payload has trailing bytes");
  return e;
}

}  // namespace romulus::protocol
