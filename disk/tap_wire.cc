#include "disk/tap_wire.h"

#include <algorithm>
#include <cstdio>
#include <cstring>

#include "common/little_endian.h"
#include "protocol/disk_records.h"

namespace romulus::disk::tap {
namespace {

std::string Str(uint64_t v) { return std::to_string(v); }

bool AllZero(const uint8_t* p, size_t n) {
  for (size_t i = 0; i < n; ++i) {
    if (p[i] != 0) return false;
  }
  return true;
}

Status ExactSize(const char* what, std::span<const uint8_t> payload, size_t want) {
  if (payload.size() != want) {
    return Status::Corruption(std::string("tap ") + what + " payload is " + Str(payload.size()) +
                              " bytes, not " + Str(want));
  }
  return Status::Ok();
}

}  // namespace

const char* MsgTypeName(MsgType t) {
  switch (t) {
    case MsgType::kHello: return "HELLO";
    case MsgType::kPause: return "PAUSE";
    case MsgType::kPaused: return "PAUSED";
    case MsgType::kSeal: return "SEAL";
    case MsgType::kRecords: return "RECORDS";
    case MsgType::kSealed: return "SEALED";
    case MsgType::kError: return "ERROR";
    case MsgType::kAcked: return "ACKED";
    case MsgType::kDigests: return "DIGESTS";
    case MsgType::kFloorQuery: return "FLOOR?";
    case MsgType::kFloor: return "FLOOR";
  }
  return "unknown";
}

bool IsKnownType(MsgType t) {
  switch (t) {
    case MsgType::kHello:
    case MsgType::kPause:
    case MsgType::kPaused:
    case MsgType::kSeal:
    case MsgType::kRecords:
    case MsgType::kSealed:
    case MsgType::kError:
    case MsgType::kAcked:
    case MsgType::kDigests:
    case MsgType::kFloorQuery:
    case MsgType::kFloor:
      return true;
  }
  return false;
}

size_t MaxPayload(MsgType t) {
  switch (t) {
    case MsgType::kHello: return kHelloFixed + kMaxName;
    case MsgType::kPause: return kPauseChangedSize;
    case MsgType::kPaused: return kPausedChangedSize;
    case MsgType::kSeal: return kSealSize;
    case MsgType::kRecords: return kMaxRecordsPayload;
    case MsgType::kSealed: return kSealedSyncSize;
    case MsgType::kError: return kErrorFixed + kMaxErrorText;
    case MsgType::kAcked: return kAckedSize;
    case MsgType::kDigests: return kDigestsFixed + 16 * kMaxDigestsPerMessage;
    case MsgType::kFloorQuery: return 0;
    case MsgType::kFloor: return kFloorSize;
  }
  return 0;
}

size_t MinPayload(MsgType t) {
  switch (t) {
    case MsgType::kHello: return kHelloFixed + 1;
    case MsgType::kPause: return kPauseSize;
    case MsgType::kPaused: return kPausedSize;
    case MsgType::kSeal: return kSealSize;
    case MsgType::kRecords: return 8;  // a DISK payload's head
    case MsgType::kSealed: return kSealedSize;
    case MsgType::kError: return kErrorFixed;
    case MsgType::kAcked: return kAckedSize;
    case MsgType::kDigests: return kDigestsFixed + 16;
    case MsgType::kFloorQuery: return 0;
    case MsgType::kFloor: return kFloorSize;
  }
  return 0;
}

void EncodeHeader(std::span<uint8_t, kHeaderSize> out, MsgType type, uint32_t length) {
  StoreLE32(out.data(), kMagic);
  StoreLE16(out.data() + 4, kVersion);
  StoreLE16(out.data() + 6, static_cast<uint16_t>(type));
  StoreLE32(out.data() + 8, length);
  StoreLE32(out.data() + 12, 0);
}

Result<Header> DecodeHeader(std::span<const uint8_t, kHeaderSize> in) {
  const uint32_t magic = LoadLE32(in.data());
  if (magic != kMagic) {
    return Status::Corruption("not a tap message (magic 0x" + [&] {
      char b[9];
      std::snprintf(b, sizeof b, "%08x", magic);
      return std::string(b);
    }() + ", want \"RTAP\")");
  }
  const uint16_t version = LoadLE16(in.data() + 4);
  if (version != kVersion) {
    return Status::Corruption("tap protocol version " + Str(version) + ", this side speaks " + Str(kVersion));
  }
  if (LoadLE32(in.data() + 12) != 0) return Status::Corruption("tap header reserved bytes are not zero");
  const uint16_t raw_type = LoadLE16(in.data() + 6);
  const MsgType type = static_cast<MsgType>(raw_type);
  if (!IsKnownType(type)) return Status::Corruption("unknown tap message type " + Str(raw_type));
  const size_t max = MaxPayload(type);
  const uint32_t length = LoadLE32(in.data() + 8);
  if (length > max || length < MinPayload(type)) {
    return Status::OutOfRange(std::string("tap ") + MsgTypeName(type) + " of " + Str(length) +
                              " bytes (allowed " + Str(MinPayload(type)) + ".." + Str(max) + ")");
  }
  return Header{type, length};
}

bool IsCleanName(std::string_view name) {
  if (name.empty() || name.size() > kMaxName) return false;
  for (char c : name) {
    const bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '.' ||
                    c == '_' || c == '-';
    if (!ok) return false;
  }
  return true;
}

size_t EncodeHello(const Hello& h, std::span<uint8_t> out) {
  const size_t n = std::min(h.name.size(), kMaxName);
  std::memset(out.data(), 0, kHelloFixed);
  StoreLE64(out.data(), h.instance_id);
  StoreLE64(out.data() + 8, h.disk_size);
  StoreLE64(out.data() + 16, h.log_budget);
  StoreLE64(out.data() + 24, h.next_tag);
  StoreLE16(out.data() + 32, static_cast<uint16_t>(n));
  out[34] = h.features;
  std::memcpy(out.data() + kHelloFixed, h.name.data(), n);
  return kHelloFixed + n;
}

Result<Hello> DecodeHello(std::span<const uint8_t> p) {
  if (p.size() < kHelloFixed) return Status::Corruption("tap HELLO shorter than its fixed part");
  Hello h;
  h.instance_id = LoadLE64(p.data());
  h.disk_size = LoadLE64(p.data() + 8);
  h.log_budget = LoadLE64(p.data() + 16);
  h.next_tag = LoadLE64(p.data() + 24);
  const size_t n = LoadLE16(p.data() + 32);
  h.features = p[34];
  if (!AllZero(p.data() + 35, 5)) return Status::Corruption("tap HELLO reserved bytes are not zero");
  if (p.size() != kHelloFixed + n) {
    return Status::Corruption("tap HELLO name of " + Str(n) + " bytes in a payload of " + Str(p.size()));
  }
  h.name.assign(reinterpret_cast<const char*>(p.data() + kHelloFixed), n);
  if (!IsCleanName(h.name)) {
    return Status::Corruption("tap HELLO export name is not 1.." + Str(kMaxName) + " bytes of [A-Za-z0-9._-]");
  }
  if (h.disk_size == 0 || h.disk_size % 512 != 0) {
    return Status::Corruption("tap HELLO disk size " + Str(h.disk_size) + " is not a non-zero multiple of 512");
  }
  if (h.next_tag == 0) return Status::Corruption("tap HELLO next tag is 0");
  return h;
}

size_t EncodePause(std::span<uint8_t, kPauseChangedSize> out, const Pause& p) {
  std::memset(out.data(), 0, kPauseChangedSize);
  out[0] = p.changed ? 3 : p.stream ? 2 : p.full_copy ? 1 : 0;
  if (!p.changed) return kPauseSize;
  StoreLE64(out.data() + 8, p.since);
  StoreLE64(out.data() + 16, p.lineage);
  return kPauseChangedSize;
}

Result<Pause> DecodePause(std::span<const uint8_t> p) {
  if (p.empty()) return Status::Corruption("tap PAUSE is empty");
  const bool changed = p[0] == 3;
  ROMULUS_RETURN_IF_ERROR(ExactSize("PAUSE", p, changed ? kPauseChangedSize : kPauseSize));
  if (p[0] > 3 || !AllZero(p.data() + 1, kPauseSize - 1)) {
    return Status::Corruption("tap PAUSE: the mode must be 0, 1, 2 or 3 and the reserved bytes zero");
  }
  Pause r{p[0] == 1, p[0] == 2, changed, 0, 0};
  if (changed) {
    r.since = LoadLE64(p.data() + 8);
    r.lineage = LoadLE64(p.data() + 16);
  }
  return r;
}

size_t EncodePaused(std::span<uint8_t, kPausedChangedSize> out, const Paused& p) {
  StoreLE64(out.data(), p.tag);
  if (!p.with_regions) return kPausedSize;
  StoreLE64(out.data() + 8, p.regions);
  return kPausedChangedSize;
}

Result<Paused> DecodePaused(std::span<const uint8_t> p) {
  if (p.size() != kPausedSize && p.size() != kPausedChangedSize) {
    return Status::Corruption("tap PAUSED is " + Str(p.size()) + " bytes, not 8 or 16");
  }
  Paused r{LoadLE64(p.data()), p.size() == kPausedChangedSize, 0};
  if (r.with_regions) r.regions = LoadLE64(p.data() + 8);
  if (r.tag == 0) return Status::Corruption("tap PAUSED tag is 0");
  return r;
}

void EncodeAcked(std::span<uint8_t, kAckedSize> out, uint64_t tag) { StoreLE64(out.data(), tag); }

Result<uint64_t> DecodeAcked(std::span<const uint8_t> p) {
  ROMULUS_RETURN_IF_ERROR(ExactSize("ACKED", p, kAckedSize));
  const uint64_t tag = LoadLE64(p.data());
  if (tag == 0) return Status::Corruption("tap ACKED tag is 0");
  return tag;
}

void EncodeFloor(std::span<uint8_t, kFloorSize> out, uint64_t forgotten_through) {
  StoreLE64(out.data(), forgotten_through);
}

Result<uint64_t> DecodeFloor(std::span<const uint8_t> p) {
  ROMULUS_RETURN_IF_ERROR(ExactSize("FLOOR", p, kFloorSize));
  return LoadLE64(p.data());
}

size_t EncodeDigests(const Digests& d, std::span<uint8_t> out) {
  const size_t n = kDigestsFixed + 16 * d.hashes.size();
  StoreLE64(out.data(), d.first_chunk);
  StoreLE32(out.data() + 8, static_cast<uint32_t>(d.hashes.size()));
  StoreLE32(out.data() + 12, d.last ? 1 : 0);
  for (size_t i = 0; i < d.hashes.size(); ++i) {
    StoreLE64(out.data() + kDigestsFixed + 16 * i, d.hashes[i].lo);
    StoreLE64(out.data() + kDigestsFixed + 16 * i + 8, d.hashes[i].hi);
  }
  return n;
}

Result<Digests> DecodeDigests(std::span<const uint8_t> p) {
  if (p.size() < kDigestsFixed) return Status::Corruption("tap DIGESTS of " + Str(p.size()) + " bytes");
  Digests d;
  d.first_chunk = LoadLE64(p.data());
  const uint32_t count = LoadLE32(p.data() + 8);
  const uint32_t flags = LoadLE32(p.data() + 12);
  if ((flags & ~1u) != 0) return Status::Corruption("tap DIGESTS flags " + Str(flags));
  d.last = (flags & 1) != 0;
  if (count == 0 || count > kMaxDigestsPerMessage || p.size() != kDigestsFixed + 16 * size_t{count}) {
    return Status::Corruption("tap DIGESTS of " + Str(p.size()) + " bytes for " + Str(count) + " hashes");
  }
  d.hashes.resize(count);
  for (uint32_t i = 0; i < count; ++i) {
    d.hashes[i].lo = LoadLE64(p.data() + kDigestsFixed + 16 * size_t{i});
    d.hashes[i].hi = LoadLE64(p.data() + kDigestsFixed + 16 * size_t{i} + 8);
  }
  return d;
}

void EncodeSeal(std::span<uint8_t, kSealSize> out, const Seal& s) {
  StoreLE64(out.data(), s.tag);
  StoreLE32(out.data() + 8, s.timeout_ms);
  StoreLE32(out.data() + 12, 0);
}

Result<Seal> DecodeSeal(std::span<const uint8_t> p) {
  ROMULUS_RETURN_IF_ERROR(ExactSize("SEAL", p, kSealSize));
  Seal s{LoadLE64(p.data()), LoadLE32(p.data() + 8)};
  if (LoadLE32(p.data() + 12) != 0) return Status::Corruption("tap SEAL reserved bytes are not zero");
  if (s.tag == 0) return Status::Corruption("tap SEAL tag is 0");
  if (s.timeout_ms == 0 || s.timeout_ms > kMaxSealTimeoutMs) {
    return Status::OutOfRange("tap SEAL timeout " + Str(s.timeout_ms) + " ms (allowed 1.." +
                              Str(kMaxSealTimeoutMs) + ")");
  }
  return s;
}

size_t EncodeSealed(std::span<uint8_t, kSealedSyncSize> out, const Sealed& s) {
  StoreLE64(out.data(), s.tag);
  StoreLE64(out.data() + 8, s.record_count);
  StoreLE64(out.data() + 16, s.data_bytes);
  StoreLE64(out.data() + 24, s.digest);
  if (!s.with_sync) return kSealedSize;
  StoreLE32(out.data() + 32, s.sync_state);
  StoreLE32(out.data() + 36, 0);
  return kSealedSyncSize;
}

Result<Sealed> DecodeSealed(std::span<const uint8_t> p) {
  if (p.size() != kSealedSize && p.size() != kSealedSyncSize) {
    return Status::Corruption("tap SEALED of " + Str(p.size()) + " bytes (32 or 40)");
  }
  Sealed s;
  s.tag = LoadLE64(p.data());
  s.record_count = LoadLE64(p.data() + 8);
  s.data_bytes = LoadLE64(p.data() + 16);
  s.digest = LoadLE64(p.data() + 24);
  if (s.tag == 0) return Status::Corruption("tap SEALED tag is 0");
  if (p.size() == kSealedSyncSize) {
    s.with_sync = true;
    s.sync_state = LoadLE32(p.data() + 32);
    if (LoadLE32(p.data() + 36) != 0) return Status::Corruption("tap SEALED reserved bytes are not zero");
    if (s.sync_state > protocol::DiskEnd::kMaxSyncState) {
      return Status::Corruption("tap SEALED sync state " + Str(s.sync_state) + " is above 1001");
    }
  }
  return s;
}

size_t EncodeError(std::span<uint8_t> out, Code code, std::string_view text) {
  const size_t n = std::min(text.size(), kMaxErrorText);
  StoreLE16(out.data(), static_cast<uint16_t>(code));
  StoreLE16(out.data() + 2, 0);
  std::memcpy(out.data() + kErrorFixed, text.data(), n);
  return kErrorFixed + n;
}

Result<ErrorMsg> DecodeError(std::span<const uint8_t> p) {
  if (p.size() < kErrorFixed || p.size() > kErrorFixed + kMaxErrorText) {
    return Status::Corruption("tap ERROR of " + Str(p.size()) + " bytes");
  }
  const uint16_t code = LoadLE16(p.data());
  if (code == 0 || code > static_cast<uint16_t>(Code::kStorage)) {
    return Status::Corruption("tap ERROR with unknown status code " + Str(code));
  }
  if (LoadLE16(p.data() + 2) != 0) return Status::Corruption("tap ERROR reserved bytes are not zero");
  ErrorMsg e;
  e.code = static_cast<Code>(code);
  // Printable for log lines: control and non-ASCII bytes become '?'.
  e.text.reserve(p.size() - kErrorFixed);
  for (size_t i = kErrorFixed; i < p.size(); ++i) {
    const uint8_t c = p[i];
    e.text.push_back(c >= 0x20 && c < 0x7f ? static_cast<char>(c) : '?');
  }
  return e;
}

}  // namespace romulus::disk::tap
