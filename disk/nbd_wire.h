// The NBD protocol's bytes, in one home (docs/DISK.md §1): the fixed-newstyle
// handshake, option replies, transmission requests and simple replies.
// Pure functions over byte spans: no I/O, no allocation beyond what a caller
// hands in, so they are unit-tested and fuzzed on their own and a future
// front end (or a test client) can reuse them.
//
// NBD is big-endian ("network byte order") everywhere, unlike every layout
// Romulus defines itself (common/little_endian.h); the loads and stores here
// are the only big-endian ones in the tree.
//
// Decoders are total: any input gives a value or a Status (Corruption for
// bad magic or syntax, OutOfRange for a length beyond a bound), never a read
// past the span.
#pragma once

#include <cstddef>
#include <cstdint>
#include <span>
#include <string_view>

#include "common/status.h"

namespace romulus::disk::nbd {

// ---- magics ----
inline constexpr uint64_t kNbdMagic = 0x4e42444d41474943ull;       // "NBDMAGIC"
inline constexpr uint64_t kOptMagic = 0x49484156454F5054ull;       // "IHAVEOPT"
inline constexpr uint64_t kOptReplyMagic = 0x0003e889045565a9ull;  // option replies
inline constexpr uint32_t kRequestMagic = 0x25609513u;
inline constexpr uint32_t kSimpleReplyMagic = 0x67446698u;

// ---- handshake flags (server, 16 bits) and client flags (32 bits) ----
inline constexpr uint16_t kFlagFixedNewstyle = 1u << 0;
inline constexpr uint16_t kFlagNoZeroes = 1u << 1;
inline constexpr uint32_t kClientFixedNewstyle = 1u << 0;
inline constexpr uint32_t kClientNoZeroes = 1u << 1;

// ---- transmission flags (16 bits) ----
inline constexpr uint16_t kTxHasFlags = 1u << 0;
inline constexpr uint16_t kTxReadOnly = 1u << 1;
inline constexpr uint16_t kTxSendFlush = 1u << 2;
inline constexpr uint16_t kTxSendFua = 1u << 3;
inline constexpr uint16_t kTxRotational = 1u << 4;
inline constexpr uint16_t kTxSendTrim = 1u << 5;
inline constexpr uint16_t kTxSendWriteZeroes = 1u << 6;
inline constexpr uint16_t kTxSendDf = 1u << 7;
inline constexpr uint16_t kTxCanMultiConn = 1u << 8;
inline constexpr uint16_t kTxSendResize = 1u << 9;
inline constexpr uint16_t kTxSendCache = 1u << 10;
inline constexpr uint16_t kTxSendFastZero = 1u << 11;

// ---- options ----
enum Option : uint32_t {
  kOptExportName = 1,
  kOptAbort = 2,
  kOptList = 3,
  kOptPeekExport = 4,
  kOptStartTls = 5,
  kOptInfo = 6,
  kOptGo = 7,
  kOptStructuredReply = 8,
  kOptListMetaContext = 9,
  kOptSetMetaContext = 10,
};

// ---- option reply types ----
inline constexpr uint32_t kRepAck = 1;
inline constexpr uint32_t kRepServer = 2;
inline constexpr uint32_t kRepInfo = 3;
inline constexpr uint32_t kRepErrBit = 1u << 31;
inline constexpr uint32_t kRepErrUnsup = kRepErrBit | 1;
inline constexpr uint32_t kRepErrPolicy = kRepErrBit | 2;
inline constexpr uint32_t kRepErrInvalid = kRepErrBit | 3;
inline constexpr uint32_t kRepErrPlatform = kRepErrBit | 4;
inline constexpr uint32_t kRepErrTlsReqd = kRepErrBit | 5;
inline constexpr uint32_t kRepErrUnknown = kRepErrBit | 6;
inline constexpr uint32_t kRepErrShutdown = kRepErrBit | 7;
inline constexpr uint32_t kRepErrBlockSizeReqd = kRepErrBit | 8;
inline constexpr uint32_t kRepErrTooBig = kRepErrBit | 9;

// ---- NBD_INFO_* (inside NBD_REP_INFO) ----
inline constexpr uint16_t kInfoExport = 0;
inline constexpr uint16_t kInfoName = 1;
inline constexpr uint16_t kInfoDescription = 2;
inline constexpr uint16_t kInfoBlockSize = 3;

// ---- commands and command flags ----
enum Command : uint16_t {
  kCmdRead = 0,
  kCmdWrite = 1,
  kCmdDisc = 2,
  kCmdFlush = 3,
  kCmdTrim = 4,
  kCmdCache = 5,
  kCmdWriteZeroes = 6,
  kCmdBlockStatus = 7,
  kCmdResize = 8,
};
inline constexpr uint16_t kCmdFlagFua = 1u << 0;
inline constexpr uint16_t kCmdFlagNoHole = 1u << 1;
inline constexpr uint16_t kCmdFlagDf = 1u << 2;
inline constexpr uint16_t kCmdFlagReqOne = 1u << 3;
inline constexpr uint16_t kCmdFlagFastZero = 1u << 4;

// ---- error values of a simple reply (the NBD spec's fixed set) ----
inline constexpr uint32_t kEperm = 1;
inline constexpr uint32_t kEio = 5;
inline constexpr uint32_t kEnomem = 12;
inline constexpr uint32_t kEinval = 22;
inline constexpr uint32_t kEnospc = 28;
inline constexpr uint32_t kEoverflow = 75;
inline constexpr uint32_t kEnotsup = 95;
inline constexpr uint32_t kEshutdown = 108;
// Maps a local errno to the spec's set: EDQUOT/EFBIG/ENOSPC -> ENOSPC, ... ,
// anything unknown -> EIO.
uint32_t ErrorFromErrno(int err);
const char* CommandName(uint16_t type);   // "WRITE", "cmd-42"
const char* OptionName(uint32_t option);  // "NBD_OPT_GO", "option"

// ---- sizes ----
inline constexpr size_t kGreetingSize = 18;       // NBDMAGIC, IHAVEOPT, handshake flags
inline constexpr size_t kClientFlagsSize = 4;
inline constexpr size_t kOptionHeaderSize = 16;   // IHAVEOPT, option, length
inline constexpr size_t kOptionReplyHeaderSize = 20;
inline constexpr size_t kExportNameReplySize = 10;  // size, flags (then 124 zeros unless NO_ZEROES)
inline constexpr size_t kExportNameZeroes = 124;
inline constexpr size_t kRequestSize = 28;
inline constexpr size_t kSimpleReplySize = 16;
inline constexpr size_t kMaxStringLength = 4096;  // export names, per the spec
// An option's data is read whole before it is parsed; a name plus a few info
// requests fits in far less. Larger is a hostile or broken client.
inline constexpr size_t kMaxOptionData = 8192;

// ---- big-endian loads and stores (the only ones in Romulus) ----
uint16_t LoadBE16(const uint8_t* p);
uint32_t LoadBE32(const uint8_t* p);
uint64_t LoadBE64(const uint8_t* p);
void StoreBE16(uint8_t* p, uint16_t v);
void StoreBE32(uint8_t* p, uint32_t v);
void StoreBE64(uint8_t* p, uint64_t v);

// ---- handshake ----
void EncodeGreeting(std::span<uint8_t, kGreetingSize> out, uint16_t handshake_flags);
// The client's flags. Corruption for bits the server did not offer or the
// spec does not define (the server MUST then drop the connection).
Result<uint32_t> DecodeClientFlags(std::span<const uint8_t, kClientFlagsSize> in,
                                   uint16_t offered_handshake_flags);

struct OptionHeader {
  uint32_t option = 0;
  uint32_t length = 0;  // option data that follows; unchecked here
};
// Corruption for a bad IHAVEOPT magic.
Result<OptionHeader> DecodeOptionHeader(std::span<const uint8_t, kOptionHeaderSize> in);
void EncodeOptionReplyHeader(std::span<uint8_t, kOptionReplyHeaderSize> out, uint32_t option,
                             uint32_t reply_type, uint32_t length);

// The data of NBD_OPT_INFO / NBD_OPT_GO: u32 name length, name, u16 count,
// count × u16 info requests; nothing more, nothing less.
struct InfoRequest {
  std::string_view name;               // points into the parsed span
  std::span<const uint8_t> requests;   // count × 2 bytes, big-endian
  size_t count() const { return requests.size() / 2; }
  uint16_t request(size_t i) const { return LoadBE16(requests.data() + 2 * i); }
  bool Wants(uint16_t info) const;
};
// Corruption when the lengths do not add up or the name is longer than
// kMaxStringLength (the caller answers NBD_REP_ERR_INVALID and goes on).
Result<InfoRequest> ParseInfoRequest(std::span<const uint8_t> data);

// NBD_REP_INFO payloads; each returns the bytes written (0 if `out` is too small).
size_t EncodeInfoExport(std::span<uint8_t> out, uint64_t size, uint16_t transmission_flags);
size_t EncodeInfoBlockSize(std::span<uint8_t> out, uint32_t minimum, uint32_t preferred,
                           uint32_t maximum);
size_t EncodeInfoName(std::span<uint8_t> out, std::string_view name);
// NBD_REP_SERVER payload: u32 name length, name.
size_t EncodeRepServer(std::span<uint8_t> out, std::string_view name);
// The answer to NBD_OPT_EXPORT_NAME: size, flags, and the 124 zeros unless
// NO_ZEROES was agreed; `out` must hold kExportNameReplySize + 124 bytes.
size_t EncodeExportNameReply(std::span<uint8_t> out, uint64_t size, uint16_t transmission_flags,
                             bool no_zeroes);

// ---- transmission ----
struct Request {
  uint16_t flags = 0;
  uint16_t type = 0;
  uint64_t cookie = 0;  // "handle": echoed in the reply
  uint64_t offset = 0;
  uint32_t length = 0;
};
// Corruption for a bad request magic: the stream cannot be resynchronised.
Result<Request> DecodeRequest(std::span<const uint8_t, kRequestSize> in);
void EncodeRequest(std::span<uint8_t, kRequestSize> out, const Request& r);  // tests, tools
void EncodeSimpleReply(std::span<uint8_t, kSimpleReplySize> out, uint32_t error, uint64_t cookie);

// What a server serving `export_size` bytes with `transmission_flags` does
// with a request, before touching anything: 0 to execute it, else the NBD
// error to reply. max_request bounds READ and WRITE lengths (the bytes the
// server must hold); TRIM and WRITE_ZEROES carry no data and are bounded by
// the export only. A length of 0 is accepted (nothing to do). DISC is valid
// here; what follows it is the caller's business.
uint32_t ValidateRequest(const Request& r, uint64_t export_size, uint32_t max_request,
                         uint16_t transmission_flags);

}  // namespace romulus::disk::nbd
