// PageCache: the last-sent copy of recently sent pages, the base of deltas.
//
// The primary and the backup each hold one; fed the same sequence of
// OnSend() calls they stay byte-identical (the backup's is the "mirror").
// Policy (docs/CACHE-AND-BATCH.md): true LRU over a fixed number of slots in one
// preallocated slab; a page enters the cache only on its second send (the
// first full-sync pass would only thrash it); every later send refreshes the
// cached bytes and makes the page most recently used. Memory is allocated
// only at construction and by a resize (Resize / a fresh cache handed to
// ResizeInto, allocated beforehand), never while pages flow.
#pragma once

#include <cstdint>
#include <memory>
#include <vector>

#include "common/status.h"
#include "compress/page.h"

namespace romulus::compress {

struct CacheCounters {
  uint64_t hits = 0;       // Lookup found the page
  uint64_t misses = 0;     // Lookup did not
  uint64_t inserts = 0;    // a page took a slot
  uint64_t evictions = 0;  // a page lost its slot to another
  uint64_t overflows = 0;  // a delta was too large and the page went RAW (counted by the encoder)
};

class PageCache {
 public:
  // capacity_pages may be 0 (cache disabled). guest_pages bounds the pfns
  // (pfn < guest_pages). Fails cleanly (no abort) if memory cannot be had.
  static Result<std::unique_ptr<PageCache>> Create(uint64_t capacity_pages, uint64_t guest_pages);

  // The cached copy of pfn, or nullptr. Counts a hit or a miss. Does not
  // change LRU order (OnSend does), so a lookup alone is policy-neutral.
  const uint8_t* Lookup(uint64_t pfn);
  // Lookup without counting: for the encoder, which must be able to back out
  // (batch full) without a trace and then records the outcome itself with
  // CountLookup(). Peek + CountLookup(hit) == Lookup.
  const uint8_t* Peek(uint64_t pfn) const;
  void CountLookup(bool hit);
  // Records that `page` (kPageSize bytes) is now the receiver's copy of pfn.
  void OnSend(uint64_t pfn, const uint8_t* page);
  // Forgets everything (new connection, resync). Keeps the slab.
  void Reset();

  // Changes the capacity, keeping as much state as fits: the min(size,
  // new capacity) most recently used entries, in the same LRU order, with
  // their bytes; the sent-once set; the counters (entries that no longer fit
  // count as evictions). A pure function of the current state and the new
  // capacity (clamped to guest_pages like Create), so two identical caches
  // resized alike stay identical (docs/CACHE-AND-BATCH.md §1.6).
  //
  // Resize allocates the new slab, then moves the state into it; on failure
  // nothing changes. ResizeInto is the second half alone, for a caller that
  // must know the allocation succeeded before committing to the resize:
  // `fresh` comes from Create(new capacity, same guest_pages) and is still
  // empty (InvalidArgument otherwise, nothing changed). No allocation.
  Status Resize(uint64_t capacity_pages);
  Status ResizeInto(std::unique_ptr<PageCache> fresh);

  uint64_t capacity_pages() const;
  uint64_t guest_pages() const;
  uint64_t size_pages() const;
  const CacheCounters& counters() const;
  void CountOverflow();
  // Order-sensitive digest of the cache's full state (pfns in LRU order and
  // their bytes); equal digests mean identical caches. For tests and drills.
  uint64_t StateDigest() const;

  ~PageCache();
  PageCache(const PageCache&) = delete;
  PageCache& operator=(const PageCache&) = delete;

 private:
  PageCache() = default;
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace romulus::compress
