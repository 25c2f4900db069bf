// libFuzzer: the NBD parsers of disk/nbd_wire on arbitrary bytes. The first
// byte picks the export geometry. Invariants: nothing reads past its span;
// a parsed info request's name and requests lie inside the data and add up
// to it exactly; a request ValidateRequest accepts lies inside the export,
// and a READ/WRITE it accepts is no longer than max_request.
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <span>

#include "disk/nbd_wire.h"

using namespace romulus::disk::nbd;

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size < 1) return 0;
  const uint8_t selector = data[0];
  std::span<const uint8_t> in(data + 1, size - 1);
  const uint64_t export_size = (selector & 1) ? (uint64_t{1} << 20) : UINT64_MAX - 4095;
  const uint32_t max_request = (selector & 2) ? 4096 : (32u << 20);
  uint16_t tx = kTxHasFlags | kTxSendFlush;
  if (selector & 4) tx |= kTxSendFua | kTxSendTrim | kTxSendWriteZeroes;
  if (selector & 8) tx |= kTxReadOnly;

  if (in.size() >= kClientFlagsSize) {
    auto f = DecodeClientFlags(in.first<kClientFlagsSize>(), kFlagFixedNewstyle);
    if (f.ok() && (*f & ~kClientFixedNewstyle)) std::abort();
  }
  if (in.size() >= kOptionHeaderSize) {
    auto h = DecodeOptionHeader(in.first<kOptionHeaderSize>());
    if (h.ok() && LoadBE64(in.data()) != kOptMagic) std::abort();
  }
  auto info = ParseInfoRequest(in);
  if (info.ok()) {
    const uint8_t* name = reinterpret_cast<const uint8_t*>(info->name.data());
    if (info->name.size() > kMaxStringLength) std::abort();
    if (!info->name.empty() && (name < in.data() || name + info->name.size() > in.data() + in.size())) std::abort();
    if (4 + info->name.size() + 2 + 2 * info->count() != in.size()) std::abort();
    for (size_t i = 0; i < info->count(); ++i) (void)info->Wants(info->request(i));
  }
  // Every 28-byte window as a request.
  for (size_t off = 0; off + kRequestSize <= in.size(); off += kRequestSize) {
    auto r = DecodeRequest(in.subspan(off).first<kRequestSize>());
    if (!r.ok()) continue;
    uint32_t err = ValidateRequest(*r, export_size, max_request, tx);
    if (err == 0 && r->type != kCmdDisc && r->type != kCmdFlush) {
      if (r->offset > export_size || r->length > export_size - r->offset) std::abort();
      if ((r->type == kCmdRead || r->type == kCmdWrite) && r->length > max_request) std::abort();
      if (r->type != kCmdRead && (tx & kTxReadOnly)) std::abort();
    }
    uint8_t back[kRequestSize];
    EncodeRequest(back, *r);
    auto again = DecodeRequest(back);
    if (!again.ok() || again->cookie != r->cookie || again->offset != r->offset ||
        again->length != r->length || again->flags != r->flags || again->type != r->type) {
      std::abort();
    }
  }
  return 0;
}
