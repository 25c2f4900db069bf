// libFuzzer target for the XBZRLE decoder, plus an encoder round-trip property.
//
// Input layout: byte 0 selects the mode.
//   even: the rest is a delta, decoded onto a fixed pseudo-random page. It may
//         be rejected, but must never crash, and an accepted delta must only
//         change bytes inside the page.
//   odd:  the rest seeds two pages (old = a pattern, new = old with the input
//         bytes applied as (offset, value) edits); every encoder must produce
//         the same delta, decoding it must give the new page back, and with
//         a cap one byte short each encoder must report -1.
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <vector>

#include "common/little_endian.h"
#include "compress/page.h"
#include "compress/xbzrle.h"
#include "compress/xbzrle_reference.h"

using namespace romulus::compress;

namespace {

void Check(bool ok) {
  if (!ok) std::abort();  // a property failed: let libFuzzer record the input
}

void FillPattern(uint8_t* page) {
  uint32_t x = 0x12345678;
  for (size_t i = 0; i < kPageSize; ++i) {
    x = x * 1103515245 + 12345;
    page[i] = static_cast<uint8_t>(x >> 24);
  }
}

void DecodeMode(const uint8_t* data, size_t size) {
  // Decode into a page with guard bytes on both sides to catch stray writes
  // (ASan would as well; this also works in a plain build).
  std::vector<uint8_t> buf(kPageSize + 64);
  uint8_t* page = buf.data() + 32;
  FillPattern(page);
  std::memset(buf.data(), 0xa5, 32);
  std::memset(page + kPageSize, 0xa5, 32);
  // Copy the input so ASan sees its exact extent.
  std::vector<uint8_t> in(data, data + size);
  (void)DecodeDelta(in.data(), in.size(), page).ok();
  for (size_t i = 0; i < 32; ++i) Check(buf[i] == 0xa5 && page[kPageSize + i] == 0xa5);
}

void RoundTripMode(const uint8_t* data, size_t size) {
  std::vector<uint8_t> a(kPageSize), b;
  FillPattern(a.data());
  b = a;
  // Each 3-byte group: 12-bit offset, new value; long inputs make busy pages.
  for (size_t i = 0; i + 3 <= size; i += 3) {
    const size_t off = romulus::LoadLE16(data + i) % kPageSize;
    b[off] = data[i + 2];
  }
  std::vector<uint8_t> want(2 * kPageSize + 16);
  const int n = EncodeDeltaScalar(a.data(), b.data(), want.data(), want.size());
  Check(n >= 0);
  Check((n == 0) == (a == b));
  if (n > 0) {
    std::vector<uint8_t> page = a;
    Check(DecodeDelta(want.data(), n, page.data()).ok());
    Check(page == b);
  }
  std::vector<EncodeFn> fns = {&EncodeDeltaQemuStyle};
  for (const EncoderImpl& e : AvailableEncoders()) fns.push_back(e.fn);
  for (EncodeFn fn : fns) {
    std::vector<uint8_t> out(n > 0 ? n : 1);  // exactly the needed size
    Check(fn(a.data(), b.data(), out.data(), n) == n);
    Check(n == 0 || std::memcmp(out.data(), want.data(), n) == 0);
    if (n > 0) {
      std::vector<uint8_t> small(n - 1 > 0 ? n - 1 : 1);
      Check(fn(a.data(), b.data(), n - 1 > 0 ? small.data() : nullptr, n - 1) == -1);
    }
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size == 0) return 0;
  if (data[0] & 1)
    RoundTripMode(data + 1, size - 1);
  else
    DecodeMode(data + 1, size - 1);
  return 0;
}
