#include "sim/sim_disk.h"

#include <xxhash.h>

#include <algorithm>
#include <cstring>
#include <vector>

#include "common/little_endian.h"

namespace romulus::sim {

namespace {

// DATA record layout (little-endian): 0 u64 magic, 8 u64 k, 16 u64 seed,
// 24 … 4087 pattern, 4088 u64 XXH3-64 of bytes 0 … 4087.
constexpr size_t kHead = 24;
constexpr size_t kSumAt = kSimDiskBlock - 8;

// The pattern: a SplitMix64 stream keyed by (seed, k), so two records never
// share their bytes and a block from record k' != k fails the check even if
// its header were rewritten.
void FillPattern(uint64_t seed, uint64_t k, uint8_t* p, size_t len) {
  uint64_t x = seed * 0x9e3779b97f4a7c15ull ^ (k + 0x5349'4d44'4953'4bull);
  for (size_t i = 0; i < len; i += 8) {
    uint64_t z = (x += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    z ^= z >> 31;
    std::memcpy(p + i, &z, std::min<size_t>(8, len - i));
  }
}

bool AllZero(std::span<const uint8_t> b) {
  for (uint8_t c : b) {
    if (c != 0) return false;
  }
  return true;
}

}  // namespace

SimDiskRecordKind SimDiskKindOf(uint64_t k) {
  if (k % kSimDiskZeroEvery != kSimDiskZeroPhase) return SimDiskRecordKind::kData;
  return k % (2 * kSimDiskZeroEvery) == kSimDiskZeroPhase ? SimDiskRecordKind::kTrim : SimDiskRecordKind::kZero;
}

void FillSimDiskRecord(uint64_t seed, uint64_t k, std::span<uint8_t> out) {
  uint8_t* p = out.data();
  StoreLE64(p, kSimDiskRecordMagic);
  StoreLE64(p + 8, k);
  StoreLE64(p + 16, seed);
  FillPattern(seed, k, p + kHead, kSumAt - kHead);
  StoreLE64(p + kSumAt, XXH3_64bits(p, kSumAt));
}

Result<SimDiskBlockContent> ParseSimDiskBlock(uint64_t seed, std::span<const uint8_t> block) {
  if (block.size() != kSimDiskBlock) return Status::InvalidArgument("sim disk: a block is 4096 bytes");
  if (AllZero(block)) return SimDiskBlockContent{.zero = true};
  const uint8_t* p = block.data();
  if (LoadLE64(p) != kSimDiskRecordMagic) return Status::Corruption("not a record (bad magic): torn or garbled");
  if (LoadLE64(p + kSumAt) != XXH3_64bits(p, kSumAt)) {
    return Status::Corruption("record " + std::to_string(LoadLE64(p + 8)) + " fails its checksum: torn or garbled");
  }
  uint64_t k = LoadLE64(p + 8);
  if (LoadLE64(p + 16) != seed) return Status::Corruption("record " + std::to_string(k) + " has another seed");
  uint8_t expect[kSimDiskBlock];
  FillPattern(seed, k, expect, kSumAt - kHead);
  if (std::memcmp(expect, p + kHead, kSumAt - kHead) != 0) {
    return Status::Corruption("record " + std::to_string(k) + " does not hold its pattern");
  }
  return SimDiskBlockContent{.zero = false, .k = k};
}

Status CheckSimDisk(const SimSpec& spec, uint64_t records_written, const SimDiskReadFn& read) {
  const uint64_t blocks = SimDiskBlocks(spec);
  if (blocks == 0) return Status::InvalidArgument("sim disk check: " + spec.ToString() + " has no disk");
  std::vector<uint8_t> buf(kSimDiskBlock);
  for (uint64_t b = 0; b < blocks; ++b) {
    const std::string where = "sim disk block " + std::to_string(b) + " (offset " +
                              std::to_string(b * kSimDiskBlock) + ")";
    ROMULUS_RETURN_IF_ERROR(read(b * kSimDiskBlock, buf));
    // The newest record due in this block: the largest k < records_written
    // with k mod blocks == b.
    bool due = records_written > b;
    uint64_t k_due = due ? b + ((records_written - 1 - b) / blocks) * blocks : 0;
    Result<SimDiskBlockContent> got = ParseSimDiskBlock(spec.seed, buf);
    if (!got.ok()) {
      return Status::Corruption(where + ": " + got.status().message() +
                                (due ? "; record " + std::to_string(k_due) + " was due" : ""));
    }
    if (!got->zero && got->k >= records_written) {
      return Status::Corruption(where + " holds record " + std::to_string(got->k) +
                                ", from beyond the checkpoint (the guest wrote " +
                                std::to_string(records_written) + " records)");
    }
    if (!got->zero && got->k % blocks != b) {
      return Status::Corruption(where + " holds record " + std::to_string(got->k) + ", which belongs to block " +
                                std::to_string(got->k % blocks));
    }
    const bool want_zero = !due || SimDiskKindOf(k_due) != SimDiskRecordKind::kData;
    if (want_zero && !got->zero) {
      return Status::Corruption(where + " holds record " + std::to_string(got->k) + " but should read as zeros" +
                                (due ? " (record " + std::to_string(k_due) + " zeroed it)" : " (never written)"));
    }
    if (!want_zero && (got->zero || got->k != k_due)) {
      return Status::Corruption(where + ": a hole before the checkpoint: record " + std::to_string(k_due) +
                                " is missing (the block holds " +
                                (got->zero ? std::string("zeros") : "older record " + std::to_string(got->k)) + ")");
    }
  }
  return Status::Ok();
}

}  // namespace romulus::sim
