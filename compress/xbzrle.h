// XBZRLE page deltas (format: docs/CODEC.md).
//
// A delta describes a new page relative to an old one as a sequence of
// (zero run, nonzero run, new bytes): a zero run is a count of bytes that did
// not change, a nonzero run is a count of bytes that changed followed by their
// NEW values, so decoding is memcpy. Counts are ULEB128 limited to two bytes
// (< 2^14, enough for a 4 KiB page). A trailing zero run is omitted.
#pragma once

#include <cstddef>
#include <cstdint>
#include <span>

#include "common/status.h"
#include "compress/page.h"

namespace romulus::compress {

// Writes the delta old_page -> new_page (both kPageSize bytes) into out.
// Returns the encoded length (> 0), 0 if the pages are identical, or -1 if
// the delta would not fit in `cap` bytes (then out's content is unspecified).
// Never writes at or beyond out + cap.
using EncodeFn = int (*)(const uint8_t* old_page, const uint8_t* new_page, uint8_t* out,
                         size_t cap);

int EncodeDeltaScalar(const uint8_t* old_page, const uint8_t* new_page, uint8_t* out, size_t cap);

struct EncoderImpl {
  const char* name;  // "scalar", "avx2", "avx512"
  EncodeFn fn;
};
// Every implementation this CPU can run, scalar first. All produce identical bytes.
std::span<const EncoderImpl> AvailableEncoders();
// The fastest available implementation (chosen once, at first call).
EncodeFn BestEncoder();
// Looks an implementation up by name; nullptr if unknown or unsupported here.
EncodeFn EncoderByName(const char* name);

// Applies a delta in place: `page` holds the old page on entry and the new
// page on success. Strict: rejects truncated or over-long varints, a zero-length
// nonzero run, a zero-length zero run anywhere but first, runs that overrun the
// page or the input, and input that does not describe exactly one page.
// On error the page content is unspecified.
Status DecodeDelta(const uint8_t* in, size_t len, uint8_t* page);

// ULEB128 restricted to values < 2^14 (1 or 2 bytes), canonical form only.
inline constexpr uint32_t kMaxRun = (1u << 14) - 1;
// Writes v (must be <= kMaxRun); returns bytes written (1 or 2).
size_t PutRunLength(uint8_t* out, uint32_t v);
// Reads a run length; returns bytes consumed (1 or 2) or 0 if truncated,
// over-long or non-canonical.
size_t GetRunLength(const uint8_t* in, size_t len, uint32_t* v);

}  // namespace romulus::compress
