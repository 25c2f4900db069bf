// Builds synthetic migration-v2 streams for the tap tests and the fuzz seeds.
#pragma once

#include <cstdint>
#include <cstring>
#include <span>
#include <string>
#include <utility>
#include <vector>

#include "common/little_endian.h"
#include "xen/stream_v2.h"

namespace romulus::xen::testing {

class StreamBuilder {
 public:
  std::vector<uint8_t> bytes;

  StreamBuilder& ImageHeader(uint32_t version = 3, uint16_t options = 0) {
    PutBe64(kImageMarker);
    PutBe32(kImageId);
    PutBe32(version);
    bytes.push_back(uint8_t(options >> 8));
    bytes.push_back(uint8_t(options));
    for (int i = 0; i < 6; i++) bytes.push_back(0);
    return *this;
  }
  StreamBuilder& DomainHeader(uint32_t type = 1, uint32_t page_shift = 12) {
    PutLe32(type);
    PutLe32(page_shift);  // u16 page_shift + u16 reserved
    PutLe32(4);
    PutLe32(17);
    return *this;
  }
  StreamBuilder& Record(uint32_t type, std::span<const uint8_t> body) {
    PutLe32(type);
    PutLe32(uint32_t(body.size()));
    bytes.insert(bytes.end(), body.begin(), body.end());
    while (bytes.size() % 8) bytes.push_back(0);
    return *this;
  }
  StreamBuilder& Record(uint32_t type, size_t len, uint8_t seed) {
    std::vector<uint8_t> body(len);
    for (size_t i = 0; i < len; i++) body[i] = uint8_t(seed + i * 7);
    return Record(type, body);
  }
  StreamBuilder& Checkpoint() { return Record(kRecCheckpoint, {}); }
  // pfns: (type, pfn); each page with data is filled from (pfn, seed).
  StreamBuilder& PageData(const std::vector<std::pair<uint32_t, uint64_t>>& pfns, uint8_t seed) {
    size_t with_data = 0;
    for (auto& [t, p] : pfns) with_data += PageTypeHasData(t);
    PutLe32(kRecPageData);
    PutLe32(uint32_t(8 + 8 * pfns.size() + 4096 * with_data));
    PutLe32(uint32_t(pfns.size()));
    PutLe32(0);
    for (auto& [t, p] : pfns) PutLe64(uint64_t(t) << 60 | p);
    for (auto& [t, p] : pfns) {
      if (!PageTypeHasData(t)) continue;
      for (size_t i = 0; i < 4096; i++) bytes.push_back(uint8_t(p * 13 + i * 3 + seed));
    }
    return *this;
  }

  void PutLe32(uint32_t v) {
    bytes.resize(bytes.size() + 4);
    StoreLE32(bytes.data() + bytes.size() - 4, v);
  }
  void PutLe64(uint64_t v) {
    bytes.resize(bytes.size() + 8);
    StoreLE64(bytes.data() + bytes.size() - 8, v);
  }
  void PutBe32(uint32_t v) { for (int i = 3; i >= 0; i--) bytes.push_back(uint8_t(v >> (8 * i))); }
  void PutBe64(uint64_t v) { for (int i = 7; i >= 0; i--) bytes.push_back(uint8_t(v >> (8 * i))); }
};

// A PV-like REMUS stream: static records, a live phase with repeated pfns,
// mixed page types (pinned tables, XTAB, BROKEN, XALLOC), then checkpoints.
inline std::vector<uint8_t> SampleRemusStream(int checkpoints = 3) {
  StreamBuilder b;
  b.ImageHeader().DomainHeader();
  b.Record(kRecX86PvInfo, 8, 1).Record(kRecX86CpuidPolicy, 1248, 2).Record(kRecX86MsrPolicy, 40, 3);
  b.Record(kRecStaticDataEnd, {}).Record(kRecX86PvP2mFrames, 24, 4);
  // Live iterations: pfn 5 and 7 appear several times.
  b.PageData({{0x0, 5}, {0x0, 6}, {0x0, 7}, {0xF, 9}, {0x9, 10}, {0xC, 11}}, 1);
  b.PageData({{0x0, 5}, {0xD, 12}, {0xE, 13}, {0x1, 7}}, 2);
  b.PageData({{0xF, 20}}, 3);  // no data at all
  for (int c = 0; c < checkpoints; c++) {
    b.PageData({{0x0, 5}, {0x0, uint64_t(30 + c)}, {0x4, 7}}, uint8_t(10 + c));
    b.Record(kRecX86TscInfo, 24, uint8_t(c)).Record(kRecSharedInfo, 4096, uint8_t(c));
    b.Record(kRecX86PvVcpuBasic, 5176, uint8_t(c)).Record(kRecX86PvVcpuExtended, 72, uint8_t(c));
    b.Record(kRecX86PvVcpuXsave, 853, uint8_t(c));  // odd length: padded
    b.Record(0x80000123, 3, uint8_t(c));            // an optional record
    b.Checkpoint();
  }
  return b.bytes;
}

}  // namespace romulus::xen::testing
