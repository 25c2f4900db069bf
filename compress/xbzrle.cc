#include "compress/xbzrle.h"

#include <cstring>
#include <string>
#include <vector>

#include "compress/xbzrle_internal.h"

namespace romulus::compress {

size_t PutRunLength(uint8_t* out, uint32_t v) { return internal::PutRun(out, v); }

size_t GetRunLength(const uint8_t* in, size_t len, uint32_t* v) {
  if (len == 0) return 0;
  if (in[0] < 0x80) {
    *v = in[0];
    return 1;
  }
  if (len < 2) return 0;  // truncated
  // Bit 7 set would announce a third byte (over-long); a zero second byte
  // would encode a value < 128 in two bytes (non-canonical).
  if (in[1] >= 0x80 || in[1] == 0) return 0;
  *v = (in[0] & 0x7fu) | (uint32_t{in[1]} << 7);
  return 2;
}

int EncodeDeltaScalar(const uint8_t* old_page, const uint8_t* new_page, uint8_t* out, size_t cap) {
  constexpr uint64_t kLow7 = 0x7f7f7f7f7f7f7f7full;
  internal::RunWalker<3, 7> walker(new_page, out, cap);
  for (uint32_t off = 0; off < kPageSize; off += 8) {
    uint64_t a, b;
    std::memcpy(&a, old_page + off, 8);
    std::memcpy(&b, new_page + off, 8);
    const uint64_t x = a ^ b;
    // Equal words inside a zero run need no work at all.
    if (x == 0 && !walker.in_change()) continue;
    // High bit of each byte set iff that byte of x is nonzero. Exact (no
    // false positives): the low-7-bit sum cannot carry into the next byte.
    const uint64_t diff = (((x & kLow7) + kLow7) | x) & ~kLow7;
    if (!walker.Block(off, diff)) return -1;
  }
  return walker.Finish();
}

namespace {

Status Bad(const char* what, size_t at) {
  return Status::Corruption(std::string("xbzrle delta: ") + what + " at input byte " +
                            std::to_string(at));
}

}  // namespace

Status DecodeDelta(const uint8_t* in, size_t len, uint8_t* page) {
  // An unchanged page travels as PageKind::kUnchanged; the encoder never
  // produces an empty delta, so an empty one is not canonical.
  if (len == 0) return Status::Corruption("xbzrle delta: empty");
  size_t i = 0;  // input position
  size_t d = 0;  // page position
  while (i < len) {
    uint32_t zrun, nzrun;
    size_t n = GetRunLength(in + i, len - i, &zrun);
    if (n == 0) return Bad("truncated, over-long or non-canonical zero-run length", i);
    if (zrun == 0 && i != 0) return Bad("zero-length zero run after the first", i);
    i += n;
    // A zero run must be followed by a change run, so it has to stop short
    // of the page end; the canonical form omits a trailing zero run.
    if (zrun > kPageSize - d) return Bad("zero run overruns the page", i - n);
    if (zrun == kPageSize - d) return Bad("trailing zero run (must be omitted)", i - n);
    d += zrun;
    if (i == len) return Bad("input ends after a zero run", i - n);
    n = GetRunLength(in + i, len - i, &nzrun);
    if (n == 0) return Bad("truncated, over-long or non-canonical change-run length", i);
    if (nzrun == 0) return Bad("zero-length change run", i);
    i += n;
    if (nzrun > kPageSize - d) return Bad("change run overruns the page", i - n);
    if (nzrun > len - i) return Bad("change run overruns the input", i - n);
    std::memcpy(page + d, in + i, nzrun);
    i += nzrun;
    d += nzrun;
  }
  // Every byte after d keeps its old value (trailing zero run omitted), so
  // any d <= kPageSize describes exactly one page.
  return Status::Ok();
}

namespace {

std::vector<EncoderImpl> DetectEncoders() {
  std::vector<EncoderImpl> v{{"scalar", &EncodeDeltaScalar}};
#if defined(__x86_64__)
  __builtin_cpu_init();
  // tzcnt (BMI1) is used by the SIMD walkers' target flags, so require it too.
  const bool bmi = __builtin_cpu_supports("bmi") && __builtin_cpu_supports("bmi2");
  if (bmi && __builtin_cpu_supports("avx2")) v.push_back({"avx2", &internal::EncodeDeltaAvx2});
  if (bmi && __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw"))
    v.push_back({"avx512", &internal::EncodeDeltaAvx512});
#endif
  return v;
}

const std::vector<EncoderImpl>& Encoders() {
  static const std::vector<EncoderImpl> encoders = DetectEncoders();
  return encoders;
}

}  // namespace

std::span<const EncoderImpl> AvailableEncoders() { return Encoders(); }

EncodeFn BestEncoder() {
  // Entries are in increasing order of speed: on pages with few changes
  // AVX2 and AVX-512 are both bound by loading the two pages; AVX-512 is
  // ahead on busy pages (docs/benchmarks.md).
  static const EncodeFn best = Encoders().back().fn;
  return best;
}

EncodeFn EncoderByName(const char* name) {
  if (name == nullptr) return nullptr;
  for (const EncoderImpl& e : Encoders())
    if (std::strcmp(e.name, name) == 0) return e.fn;
  return nullptr;
}

}  // namespace romulus::compress
