#include "protocol/held_pages.h"

#include <algorithm>

#include "protocol/messages.h"

namespace romulus::protocol {

Status SendHeldPages(FrameWriter* writer, const MemoryDigest& held, std::chrono::milliseconds per_frame) {
  const uint64_t pages = held.guest_pages();
  Held frame;
  frame.hashes.reserve(Held::kMaxHashes);
  for (uint64_t pfn = 0; pfn < pages;) {
    if (held.hash(pfn) == 0) {  // a zero page: named by no frame
      ++pfn;
      continue;
    }
    const uint64_t end = std::min(pages, pfn + Held::kMaxHashes);
    uint64_t last = end;
    while (held.hash(last - 1) == 0) --last;  // stops at pfn, whose hash is not 0
    frame.first_pfn = pfn;
    frame.hashes.clear();
    for (uint64_t p = pfn; p < last; ++p) frame.hashes.push_back(held.hash(p));
    ROMULUS_RETURN_IF_ERROR(writer->Send(frame, 0, transport::DeadlineIn(per_frame)).With("sending HELD"));
    pfn = last;
  }
  Held end;
  end.flags = Held::kLast;
  end.first_pfn = pages;
  end.digest = held.value();
  return writer->Send(end, 0, transport::DeadlineIn(per_frame)).With("sending HELD");
}

Status ReceiveHeldPages(FrameReader* reader, MemoryDigest* into, std::chrono::milliseconds per_frame) {
  into->Reset();
  const uint64_t pages = into->guest_pages();
  uint64_t next = 0;  // the lowest pfn the next range may start at
  for (;;) {
    auto f = reader->Next(transport::DeadlineIn(per_frame));
    if (!f.ok()) return f.status().With("reading the backup's HELD table");
    if (f->type() == FrameType::kHeartbeat) continue;
    if (f->type() == FrameType::kError) {
      return Status::Corruption("backup reported an error instead of its HELD table: " +
                                DescribeErrorPayload(f->payload));
    }
    if (f->type() != FrameType::kHeld) {
      return Status::Corruption("expected HELD, got " + FrameTypeName(f->header.type));
    }
    auto held = Held::Decode(f->payload);
    if (!held.ok()) return held.status();
    if (held->last()) {
      if (held->digest != into->value()) {
        return Status::Corruption("HELD table sums to " + DigestHex(into->value()) + ", its last frame says " +
                                  DigestHex(held->digest));
      }
      return Status::Ok();
    }
    const uint64_t count = held->hashes.size();
    if (held->first_pfn < next || held->first_pfn >= pages || count > pages - held->first_pfn) {
      return Status::Corruption("HELD range of " + std::to_string(count) + " pages at pfn " +
                                std::to_string(held->first_pfn) + " is outside the guest's " +
                                std::to_string(pages) + " pages or overlaps the previous one");
    }
    for (uint64_t i = 0; i < count; ++i) into->SetHash(held->first_pfn + i, held->hashes[i]);
    next = held->first_pfn + count;
  }
}

}  // namespace romulus::protocol
