// Internals shared by the XBZRLE encoders (not part of the public API).
//
// Every encoder reduces a block of the page to a "change mask" (which bytes
// differ between old and new) and hands it to RunWalker, which turns mask
// transitions into (zero run, nonzero run, bytes) records. Keeping one walker
// is what makes the scalar, AVX2 and AVX-512 outputs byte-identical: they
// differ only in how the masks are computed.
#pragma once

#include <cstddef>
#include <cstdint>
#include <cstring>

#include "compress/page.h"
#include "compress/xbzrle.h"

namespace romulus::compress::internal {

int EncodeDeltaAvx2(const uint8_t* old_page, const uint8_t* new_page, uint8_t* out, size_t cap);
int EncodeDeltaAvx512(const uint8_t* old_page, const uint8_t* new_page, uint8_t* out, size_t cap);

inline size_t RunLengthSize(uint32_t v) { return v < 0x80 ? 1 : 2; }

// PutRunLength, inlinable into the encoders' hot loops.
inline size_t PutRun(uint8_t* out, uint32_t v) {
  if (v < 0x80) {
    out[0] = static_cast<uint8_t>(v);
    return 1;
  }
  out[0] = static_cast<uint8_t>(v | 0x80);
  out[1] = static_cast<uint8_t>((v >> 7) & 0x7f);  // v <= kMaxRun: nothing is lost
  return 2;
}

// Mask convention: one block covers (64 >> kByteShift) bytes; byte k of the
// block is represented by bit (k << kByteShift) + kBitOffset of a uint64_t.
//   SIMD:   kByteShift = 0, kBitOffset = 0  (64 bytes, one bit per byte)
//   scalar: kByteShift = 3, kBitOffset = 7  (8 bytes, the high bit of each byte)
template <unsigned kByteShift, unsigned kBitOffset>
class RunWalker {
 public:
  // Bits that stand for bytes (the others are always clear in a diff mask).
  static constexpr uint64_t kValid =
      kByteShift == 0 ? ~uint64_t{0} : 0x0101010101010101ull << kBitOffset;
  static constexpr uint32_t kBlockBytes = 64u >> kByteShift;

  RunWalker(const uint8_t* new_page, uint8_t* out, size_t cap)
      : new_page_(new_page), out_(out), cap_(cap) {}

  bool in_change() const { return in_change_; }

  // Consumes the block at page offset `base` whose changed bytes are `diff`.
  // Returns false once the delta is known not to fit in cap.
  [[gnu::always_inline]] inline bool Block(uint32_t base, uint64_t diff) {
    // In a zero run we look for the next changed byte, in a change run for
    // the next unchanged one; bits below the last transition are cleared so
    // tzcnt never sees an already-consumed position (and never sees 0).
    uint64_t cur = in_change_ ? (~diff & kValid) : diff;
    while (cur != 0) {
      const unsigned bit = static_cast<unsigned>(__builtin_ctzll(cur));
      const uint32_t pos = base + (bit >> kByteShift);
      if (!in_change_) {
        if (!PutZeroRun(pos)) return false;
        cur = ~diff & kValid & (~uint64_t{0} << bit);
      } else {
        if (!PutChangeRun(pos)) return false;
        cur = diff & (~uint64_t{0} << bit);
      }
      in_change_ = !in_change_;
      run_start_ = pos;
    }
    // An open change run already needs at least its current length: give up
    // as soon as that cannot fit, instead of scanning a page bound for RAW.
    if (in_change_) {
      const uint32_t len = base + kBlockBytes - run_start_;
      if (d_ + RunLengthSize(len) + len > cap_) return false;
    }
    return true;
  }

  // Closes the page; returns the encoder result (length, 0 or -1).
  int Finish() {
    if (in_change_ && !PutChangeRun(kPageSize)) return -1;
    // A final zero run is omitted; d_ == 0 means no byte changed.
    return static_cast<int>(d_);
  }

 private:
  bool PutZeroRun(uint32_t pos) {
    const uint32_t len = pos - run_start_;
    if (d_ + RunLengthSize(len) > cap_) return false;
    d_ += PutRun(out_ + d_, len);
    return true;
  }

  bool PutChangeRun(uint32_t pos) {
    const uint32_t len = pos - run_start_;
    const size_t need = RunLengthSize(len) + len;
    if (d_ + need > cap_) return false;
    d_ += PutRun(out_ + d_, len);
    const uint8_t* src = new_page_ + run_start_;
    // Short runs dominate busy pages: copy a fixed 16 bytes when both the
    // source page and the output have room, instead of a variable memcpy.
    // The overshoot lands inside [out, out + cap), which the caller gave us.
    if (len <= 16 && run_start_ + 16 <= kPageSize && d_ + 16 <= cap_) {
      std::memcpy(out_ + d_, src, 16);
    } else {
      std::memcpy(out_ + d_, src, len);
    }
    d_ += len;
    return true;
  }

  const uint8_t* new_page_;
  uint8_t* out_;
  size_t cap_;
  size_t d_ = 0;
  uint32_t run_start_ = 0;
  bool in_change_ = false;
};

// The SIMD encoders' walker. They first reduce the whole page to 64 "run
// boundary" masks with no data-dependent branch (so the loads of both pages
// stream at memory speed), then visit only the boundaries here.
//
// bounds[k] bit j is set iff byte 64k+j starts a new run, i.e. its changed-ness
// differs from byte 64k+j-1 (byte -1 counts as unchanged). summary bit k is
// set iff bounds[k] != 0. Runs alternate zero/change starting with a zero
// run, so every boundary closes one run of known kind.
[[gnu::always_inline]] inline int WalkBoundaries(const uint64_t* bounds, uint64_t summary,
                                                 const uint8_t* new_page, uint8_t* out,
                                                 size_t cap) {
  // Fast-path room: a 2-byte varint plus a fixed 16-byte copy.
  constexpr size_t kSlack = 2 + 16;
  size_t d = 0;
  uint32_t run_start = 0;
  uint32_t change = 0;  // ~0u while the open run is a change run, else 0
  while (summary != 0) {
    const unsigned k = static_cast<unsigned>(__builtin_ctzll(summary));
    summary &= summary - 1;
    uint64_t t = bounds[k];
    do {
      const uint32_t pos = 64 * k + static_cast<unsigned>(__builtin_ctzll(t));
      t &= t - 1;
      const uint32_t len = pos - run_start;
      const size_t vs = 1 + (len >= 0x80);
      if (__builtin_expect(d + kSlack <= cap && run_start + 16 <= kPageSize, 1)) {
        // Branch-free for the common short run: always write two varint
        // bytes and 16 bytes of the new page; only the advance of d decides
        // what counts. Stray bytes land in [out, out + cap) and are either
        // overwritten by the next record or lie past the returned length.
        out[d] = static_cast<uint8_t>(len | (len >= 0x80 ? 0x80 : 0));
        out[d + 1] = static_cast<uint8_t>(len >> 7);
        std::memcpy(out + d + vs, new_page + run_start, 16);
        if ((change & len) > 16) {  // a long change run: copy it whole
          if (d + vs + len > cap) return -1;
          std::memcpy(out + d + vs, new_page + run_start, len);
        }
        d += vs + (change & len);
      } else {
        const size_t need = vs + (change & len);
        if (d + need > cap) return -1;
        d += PutRun(out + d, len);
        std::memcpy(out + d, new_page + run_start, change & len);
        d += change & len;
      }
      change = ~change;
      run_start = pos;
    } while (t != 0);
  }
  if (change != 0) {  // the last run is a change run reaching the page end
    const uint32_t len = kPageSize - run_start;
    if (d + RunLengthSize(len) + len > cap) return -1;
    d += PutRun(out + d, len);
    std::memcpy(out + d, new_page + run_start, len);
    d += len;
  }
  // No boundary at all means no byte changed: 0. A trailing zero run is
  // never emitted because the page end is not a boundary.
  return static_cast<int>(d);
}

// Turns one 64-byte change mask into its boundary mask; `carry` holds the
// changed-ness of the previous byte (bit 0) and is updated.
[[gnu::always_inline]] inline uint64_t Boundaries(uint64_t diff, uint64_t* carry) {
  const uint64_t b = diff ^ ((diff << 1) | *carry);
  *carry = diff >> 63;
  return b;
}

}  // namespace romulus::compress::internal
