#include "disk/nbd_wire.h"

#include <bit>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <string>

namespace romulus::disk::nbd {
namespace {

template <typename T>
T ToBE(T v) {
  if constexpr (std::endian::native == std::endian::big) return v;
  if constexpr (sizeof(T) == 2) return __builtin_bswap16(v);
  if constexpr (sizeof(T) == 4) return __builtin_bswap32(v);
  if constexpr (sizeof(T) == 8) return __builtin_bswap64(v);
}

template <typename T>
T Load(const uint8_t* p) {
  T v;
  std::memcpy(&v, p, sizeof v);  // unaligned inside a message: no pointer casts
  return ToBE(v);
}

template <typename T>
void Store(uint8_t* p, T v) {
  v = ToBE(v);
  std::memcpy(p, &v, sizeof v);
}

}  // namespace

uint16_t LoadBE16(const uint8_t* p) { return Load<uint16_t>(p); }
uint32_t LoadBE32(const uint8_t* p) { return Load<uint32_t>(p); }
uint64_t LoadBE64(const uint8_t* p) { return Load<uint64_t>(p); }
void StoreBE16(uint8_t* p, uint16_t v) { Store(p, v); }
void StoreBE32(uint8_t* p, uint32_t v) { Store(p, v); }
void StoreBE64(uint8_t* p, uint64_t v) { Store(p, v); }

uint32_t ErrorFromErrno(int err) {
  switch (err) {
    case 0: return 0;
    case EPERM:
    case EROFS: return kEperm;
    case ENOMEM: return kEnomem;
    case EINVAL: return kEinval;
    case ENOSPC:
    case EDQUOT:
    case EFBIG: return kEnospc;  // the spec asks EDQUOT and EFBIG to map here
    case EOVERFLOW: return kEoverflow;
    case EOPNOTSUPP: return kEnotsup;
    case ESHUTDOWN: return kEshutdown;
    default: return kEio;
  }
}

const char* CommandName(uint16_t type) {
  switch (type) {
    case kCmdRead: return "READ";
    case kCmdWrite: return "WRITE";
    case kCmdDisc: return "DISC";
    case kCmdFlush: return "FLUSH";
    case kCmdTrim: return "TRIM";
    case kCmdCache: return "CACHE";
    case kCmdWriteZeroes: return "WRITE_ZEROES";
    case kCmdBlockStatus: return "BLOCK_STATUS";
    case kCmdResize: return "RESIZE";
  }
  return "unknown command";
}

const char* OptionName(uint32_t option) {
  switch (option) {
    case kOptExportName: return "NBD_OPT_EXPORT_NAME";
    case kOptAbort: return "NBD_OPT_ABORT";
    case kOptList: return "NBD_OPT_LIST";
    case kOptPeekExport: return "NBD_OPT_PEEK_EXPORT";
    case kOptStartTls: return "NBD_OPT_STARTTLS";
    case kOptInfo: return "NBD_OPT_INFO";
    case kOptGo: return "NBD_OPT_GO";
    case kOptStructuredReply: return "NBD_OPT_STRUCTURED_REPLY";
    case kOptListMetaContext: return "NBD_OPT_LIST_META_CONTEXT";
    case kOptSetMetaContext: return "NBD_OPT_SET_META_CONTEXT";
  }
  return "unknown option";
}

void EncodeGreeting(std::span<uint8_t, kGreetingSize> out, uint16_t handshake_flags) {
  StoreBE64(out.data(), kNbdMagic);
  StoreBE64(out.data() + 8, kOptMagic);
  StoreBE16(out.data() + 16, handshake_flags);
}

Result<uint32_t> DecodeClientFlags(std::span<const uint8_t, kClientFlagsSize> in,
                                   uint16_t offered_handshake_flags) {
  uint32_t flags = LoadBE32(in.data());
  uint32_t allowed = 0;
  if (offered_handshake_flags & kFlagFixedNewstyle) allowed |= kClientFixedNewstyle;
  if (offered_handshake_flags & kFlagNoZeroes) allowed |= kClientNoZeroes;
  if (flags & ~allowed) {
    char b[96];
    std::snprintf(b, sizeof b, "NBD client flags 0x%x set bits the server did not offer (0x%x)",
                  flags, allowed);
    return Status::Corruption(b);
  }
  return flags;
}

Result<OptionHeader> DecodeOptionHeader(std::span<const uint8_t, kOptionHeaderSize> in) {
  if (LoadBE64(in.data()) != kOptMagic) {
    return Status::Corruption("NBD option without the IHAVEOPT magic");
  }
  return OptionHeader{LoadBE32(in.data() + 8), LoadBE32(in.data() + 12)};
}

void EncodeOptionReplyHeader(std::span<uint8_t, kOptionReplyHeaderSize> out, uint32_t option,
                             uint32_t reply_type, uint32_t length) {
  StoreBE64(out.data(), kOptReplyMagic);
  StoreBE32(out.data() + 8, option);
  StoreBE32(out.data() + 12, reply_type);
  StoreBE32(out.data() + 16, length);
}

bool InfoRequest::Wants(uint16_t info) const {
  for (size_t i = 0; i < count(); ++i) {
    if (request(i) == info) return true;
  }
  return false;
}

Result<InfoRequest> ParseInfoRequest(std::span<const uint8_t> data) {
  if (data.size() < 6) return Status::Corruption("NBD info request shorter than 6 bytes");
  uint32_t name_len = LoadBE32(data.data());
  if (name_len > kMaxStringLength) {
    return Status::Corruption("NBD export name of " + std::to_string(name_len) +
                              " bytes (at most 4096)");
  }
  // Compare without adding to name_len: no overflow whatever it says.
  if (name_len > data.size() - 6) {
    return Status::Corruption("NBD info request: name length beyond the option data");
  }
  InfoRequest r;
  r.name = std::string_view(reinterpret_cast<const char*>(data.data() + 4), name_len);
  size_t pos = 4 + size_t{name_len};
  uint16_t count = LoadBE16(data.data() + pos);
  pos += 2;
  if (data.size() - pos != size_t{count} * 2) {
    return Status::Corruption("NBD info request: " + std::to_string(count) +
                              " information requests do not fill the option data");
  }
  r.requests = data.subspan(pos);
  return r;
}

size_t EncodeInfoExport(std::span<uint8_t> out, uint64_t size, uint16_t transmission_flags) {
  if (out.size() < 12) return 0;
  StoreBE16(out.data(), kInfoExport);
  StoreBE64(out.data() + 2, size);
  StoreBE16(out.data() + 10, transmission_flags);
  return 12;
}

size_t EncodeInfoBlockSize(std::span<uint8_t> out, uint32_t minimum, uint32_t preferred,
                           uint32_t maximum) {
  if (out.size() < 14) return 0;
  StoreBE16(out.data(), kInfoBlockSize);
  StoreBE32(out.data() + 2, minimum);
  StoreBE32(out.data() + 6, preferred);
  StoreBE32(out.data() + 10, maximum);
  return 14;
}

size_t EncodeInfoName(std::span<uint8_t> out, std::string_view name) {
  if (out.size() < 2 || name.size() > out.size() - 2) return 0;
  StoreBE16(out.data(), kInfoName);
  std::memcpy(out.data() + 2, name.data(), name.size());
  return 2 + name.size();
}

size_t EncodeRepServer(std::span<uint8_t> out, std::string_view name) {
  if (out.size() < 4 || name.size() > out.size() - 4) return 0;
  StoreBE32(out.data(), static_cast<uint32_t>(name.size()));
  std::memcpy(out.data() + 4, name.data(), name.size());
  return 4 + name.size();
}

size_t EncodeExportNameReply(std::span<uint8_t> out, uint64_t size, uint16_t transmission_flags,
                             bool no_zeroes) {
  size_t n = kExportNameReplySize + (no_zeroes ? 0 : kExportNameZeroes);
  if (out.size() < n) return 0;
  StoreBE64(out.data(), size);
  StoreBE16(out.data() + 8, transmission_flags);
  std::memset(out.data() + kExportNameReplySize, 0, n - kExportNameReplySize);
  return n;
}

Result<Request> DecodeRequest(std::span<const uint8_t, kRequestSize> in) {
  uint32_t magic = LoadBE32(in.data());
  if (magic != kRequestMagic) {
    char b[96];
    std::snprintf(b, sizeof b, "NBD request magic 0x%08x (expected 0x%08x)", magic, kRequestMagic);
    return Status::Corruption(b);
  }
  Request r;
  r.flags = LoadBE16(in.data() + 4);
  r.type = LoadBE16(in.data() + 6);
  r.cookie = LoadBE64(in.data() + 8);
  r.offset = LoadBE64(in.data() + 16);
  r.length = LoadBE32(in.data() + 24);
  return r;
}

void EncodeRequest(std::span<uint8_t, kRequestSize> out, const Request& r) {
  StoreBE32(out.data(), kRequestMagic);
  StoreBE16(out.data() + 4, r.flags);
  StoreBE16(out.data() + 6, r.type);
  StoreBE64(out.data() + 8, r.cookie);
  StoreBE64(out.data() + 16, r.offset);
  StoreBE32(out.data() + 24, r.length);
}

void EncodeSimpleReply(std::span<uint8_t, kSimpleReplySize> out, uint32_t error, uint64_t cookie) {
  StoreBE32(out.data(), kSimpleReplyMagic);
  StoreBE32(out.data() + 4, error);
  StoreBE64(out.data() + 8, cookie);
}

uint32_t ValidateRequest(const Request& r, uint64_t export_size, uint32_t max_request,
                         uint16_t transmission_flags) {
  // Which flags each command may carry (spec: anything else is EINVAL).
  // FUA is accepted on every command once advertised ("even by ignoring
  // the bit"); DF, REQ_ONE and FAST_ZERO are never advertised here.
  uint16_t allowed = (transmission_flags & kTxSendFua) ? kCmdFlagFua : 0;
  bool writes = false;
  bool carries_data = false;
  switch (r.type) {
    case kCmdRead: carries_data = true; break;
    case kCmdWrite: writes = carries_data = true; break;
    case kCmdDisc: return 0;
    case kCmdFlush:
      if (!(transmission_flags & kTxSendFlush)) return kEinval;
      break;
    case kCmdTrim:
      if (!(transmission_flags & kTxSendTrim)) return kEinval;
      writes = true;
      break;
    case kCmdWriteZeroes:
      if (!(transmission_flags & kTxSendWriteZeroes)) return kEinval;
      allowed |= kCmdFlagNoHole;
      writes = true;
      break;
    default: return kEinval;  // CACHE, BLOCK_STATUS, RESIZE: not advertised; unknown
  }
  if (r.flags & ~allowed) return kEinval;
  if (r.type == kCmdFlush) return 0;  // offset and length are reserved: ignored
  if (writes && (transmission_flags & kTxReadOnly)) return kEperm;
  if (carries_data && r.length > max_request) return kEinval;
  // offset + length <= size, written so that it cannot overflow.
  if (r.offset > export_size || r.length > export_size - r.offset) {
    // The spec asks ENOSPC for writes beyond the end, EINVAL otherwise.
    return (r.type == kCmdWrite || r.type == kCmdWriteZeroes) ? kEnospc : kEinval;
  }
  return 0;
}

}  // namespace romulus::disk::nbd
