// PageCache implementation. The whole policy (docs/CACHE-AND-BATCH.md):
//
//  1. A slot holds one page; slots live in one slab allocated at Create().
//  2. OnSend(pfn, page):
//     a. pfn cached          -> copy the bytes into its slot, move it to MRU;
//     b. pfn never sent since the last Reset() -> only remember that it was
//        sent once (bitmap); nothing is cached;
//     c. otherwise           -> take a slot (the lowest never-used one while
//        the cache is filling, else the LRU slot, whose page is evicted),
//        copy the bytes, make it MRU.
//     An evicted page keeps its "sent once" bit, so its next send re-inserts
//     it at once (rule c).
//  3. Lookup/Peek never change any of this state.
//  4. Resize(n): the n most recently used entries survive, in order; the
//     rest are dropped as if evicted; the sent-once set is kept.
//
// Everything above is a pure function of the sequence of OnSend() (and
// Resize) arguments:
// no clocks, no hashing with random seeds, no dependence on addresses or on
// Lookup traffic. That is the whole determinism argument for the backup's
// mirror: same capacity, same guest size, same OnSend sequence with the same
// bytes => same state, which StateDigest() makes checkable.

#include "compress/page_cache.h"

#define XXH_STATIC_LINKING_ONLY
#include <xxhash.h>

#include <algorithm>
#include <bit>
#include <cerrno>
#include <cstring>
#include <limits>
#include <new>
#include <string>

#include "common/little_endian.h"

namespace romulus::compress {

namespace {

constexpr uint32_t kNil = std::numeric_limits<uint32_t>::max();

// Slab memory is page-aligned so encoders may use aligned vector loads on it.
struct SlabDeleter {
  void operator()(uint8_t* p) const { ::operator delete[](p, std::align_val_t{kPageSize}); }
};

template <typename T>
std::unique_ptr<T[]> TryAllocArray(uint64_t n) {
  if (n > std::numeric_limits<size_t>::max() / sizeof(T)) return nullptr;
  if (n == 0) n = 1;  // keep the pointer non-null so "nullptr" only means failure
  return std::unique_ptr<T[]>(new (std::nothrow) T[n]);
}

}  // namespace

struct PageCache::Impl {
  uint64_t capacity = 0;     // slots
  uint64_t guest_pages = 0;  // valid pfns are [0, guest_pages)
  uint64_t size = 0;         // slots in use; slots [0, size) are in use
  std::unique_ptr<uint8_t[], SlabDeleter> slab;
  std::unique_ptr<uint32_t[]> slot_of;    // pfn -> slot or kNil
  std::unique_ptr<uint64_t[]> sent_once;  // bitmap over pfns
  std::unique_ptr<uint64_t[]> slot_pfn;   // slot -> pfn
  std::unique_ptr<uint32_t[]> prev;       // towards MRU
  std::unique_ptr<uint32_t[]> next;       // towards LRU
  uint32_t head = kNil;                   // MRU
  uint32_t tail = kNil;                   // LRU
  CacheCounters counters;

  uint64_t BitmapWords() const { return (guest_pages + 63) / 64; }
  uint8_t* Slot(uint32_t s) const { return slab.get() + static_cast<size_t>(s) * kPageSize; }

  void Unlink(uint32_t s) {
    if (prev[s] != kNil) next[prev[s]] = next[s]; else head = next[s];
    if (next[s] != kNil) prev[next[s]] = prev[s]; else tail = prev[s];
  }
  void PushFront(uint32_t s) {
    prev[s] = kNil;
    next[s] = head;
    if (head != kNil) prev[head] = s; else tail = s;
    head = s;
  }
};

Result<std::unique_ptr<PageCache>> PageCache::Create(uint64_t capacity_pages, uint64_t guest_pages) {
  // A cache larger than the guest could never fill its extra slots; both
  // sides clamp the same way, so the mirror is unaffected.
  const uint64_t capacity = std::min(capacity_pages, guest_pages);
  if (capacity >= kNil) {
    return Status::OutOfRange("page cache: " + std::to_string(capacity) + " slots exceeds 2^32-1");
  }
  if (capacity > std::numeric_limits<size_t>::max() / kPageSize) {
    return Status::OutOfRange("page cache: capacity overflows the address space");
  }
  std::unique_ptr<PageCache> cache(new (std::nothrow) PageCache());
  if (!cache) return Status::FromErrno("page cache", ENOMEM);
  cache->impl_.reset(new (std::nothrow) Impl());
  if (!cache->impl_) return Status::FromErrno("page cache", ENOMEM);
  Impl& m = *cache->impl_;
  m.capacity = capacity;
  m.guest_pages = guest_pages;
  if (capacity == 0) return cache;  // disabled: no memory at all

  const std::string what = "page cache (" + std::to_string(capacity) + " pages for a guest of " +
                           std::to_string(guest_pages) + " pages)";
  // The slab is not touched here: the kernel backs it lazily as slots fill.
  m.slab.reset(static_cast<uint8_t*>(
      ::operator new[](static_cast<size_t>(capacity) * kPageSize, std::align_val_t{kPageSize}, std::nothrow)));
  m.slot_of = TryAllocArray<uint32_t>(guest_pages);
  m.sent_once = TryAllocArray<uint64_t>(m.BitmapWords());
  m.slot_pfn = TryAllocArray<uint64_t>(capacity);
  m.prev = TryAllocArray<uint32_t>(capacity);
  m.next = TryAllocArray<uint32_t>(capacity);
  if (!m.slab || !m.slot_of || !m.sent_once || !m.slot_pfn || !m.prev || !m.next) {
    return Status::FromErrno("allocating " + what, ENOMEM);
  }
  std::fill_n(m.slot_of.get(), guest_pages, kNil);
  std::fill_n(m.sent_once.get(), m.BitmapWords(), 0);
  return cache;
}

PageCache::~PageCache() = default;

const uint8_t* PageCache::Peek(uint64_t pfn) const {
  const Impl& m = *impl_;
  if (m.capacity == 0 || pfn >= m.guest_pages) return nullptr;
  const uint32_t s = m.slot_of[pfn];
  return s == kNil ? nullptr : m.Slot(s);
}

void PageCache::CountLookup(bool hit) {
  if (hit) ++impl_->counters.hits; else ++impl_->counters.misses;
}

const uint8_t* PageCache::Lookup(uint64_t pfn) {
  const uint8_t* p = Peek(pfn);
  CountLookup(p != nullptr);
  return p;
}

void PageCache::OnSend(uint64_t pfn, const uint8_t* page) {
  Impl& m = *impl_;
  // Out-of-range pfns are ignored identically on both sides (the batch
  // reader never yields one, so this only guards against caller bugs).
  if (m.capacity == 0 || pfn >= m.guest_pages) return;
  uint32_t s = m.slot_of[pfn];
  if (s != kNil) {  // rule a: refresh, make MRU
    std::memcpy(m.Slot(s), page, kPageSize);
    if (m.head != s) {
      m.Unlink(s);
      m.PushFront(s);
    }
    return;
  }
  uint64_t& word = m.sent_once[pfn / 64];
  const uint64_t bit = uint64_t{1} << (pfn % 64);
  if ((word & bit) == 0) {  // rule b: first send, remember only
    word |= bit;
    return;
  }
  // rule c: insert.
  if (m.size < m.capacity) {
    s = static_cast<uint32_t>(m.size++);
  } else {
    s = m.tail;
    m.Unlink(s);
    m.slot_of[m.slot_pfn[s]] = kNil;
    ++m.counters.evictions;
  }
  m.slot_pfn[s] = pfn;
  m.slot_of[pfn] = s;
  std::memcpy(m.Slot(s), page, kPageSize);
  m.PushFront(s);
  ++m.counters.inserts;
}

void PageCache::Reset() {
  Impl& m = *impl_;
  m.counters = CacheCounters{};
  if (m.capacity == 0) return;
  // Only the pfns that hold a slot need clearing: O(size), not O(guest).
  for (uint64_t s = 0; s < m.size; ++s) m.slot_of[m.slot_pfn[s]] = kNil;
  std::fill_n(m.sent_once.get(), m.BitmapWords(), 0);
  m.size = 0;
  m.head = m.tail = kNil;
}

Status PageCache::Resize(uint64_t capacity_pages) {
  auto fresh = Create(capacity_pages, impl_->guest_pages);
  if (!fresh.ok()) return fresh.status();
  return ResizeInto(std::move(*fresh));
}

Status PageCache::ResizeInto(std::unique_ptr<PageCache> fresh) {
  Impl& from = *impl_;
  if (!fresh || fresh->impl_->guest_pages != from.guest_pages || fresh->impl_->size != 0) {
    return Status::InvalidArgument("page cache resize: the new cache must be empty and for the same guest");
  }
  Impl& to = *fresh->impl_;
  // Walk from the MRU end and give the i-th most recent entry slot i, so the
  // new cache has slots [0, kept) in use (the fill rule's invariant) and the
  // list 0 -> 1 -> ... -> kept-1 from MRU to LRU.
  const uint64_t kept = std::min(from.size, to.capacity);
  uint32_t s = from.head;
  for (uint64_t i = 0; i < kept; ++i, s = from.next[s]) {
    const auto slot = static_cast<uint32_t>(i);
    const uint64_t pfn = from.slot_pfn[s];
    std::memcpy(to.Slot(slot), from.Slot(s), kPageSize);
    to.slot_pfn[slot] = pfn;
    to.slot_of[pfn] = slot;
    to.prev[slot] = i == 0 ? kNil : slot - 1;
    to.next[slot] = i + 1 == kept ? kNil : slot + 1;
  }
  to.size = kept;
  to.head = kept == 0 ? kNil : 0;
  to.tail = kept == 0 ? kNil : static_cast<uint32_t>(kept - 1);
  // A page sent before stays "sent once" (as after an eviction), so its next
  // send re-enters the cache at once. A disabled cache keeps no set: the new
  // one starts with an empty set (Create zeroed it), identically on both sides.
  if (from.capacity != 0 && to.capacity != 0) {
    std::copy_n(from.sent_once.get(), from.BitmapWords(), to.sent_once.get());
  }
  to.counters = from.counters;
  to.counters.evictions += from.size - kept;
  impl_.swap(fresh->impl_);  // the old state goes with `fresh`
  return Status::Ok();
}

uint64_t PageCache::capacity_pages() const { return impl_->capacity; }
uint64_t PageCache::guest_pages() const { return impl_->guest_pages; }
uint64_t PageCache::size_pages() const { return impl_->size; }
const CacheCounters& PageCache::counters() const { return impl_->counters; }
void PageCache::CountOverflow() { ++impl_->counters.overflows; }

uint64_t PageCache::StateDigest() const {
  const Impl& m = *impl_;
  XXH3_state_t st;
  XXH3_INITSTATE(&st);
  XXH3_64bits_reset(&st);
  // Explicit little-endian so digests compare across hosts. Slot numbers are
  // deliberately not hashed: only what a lookup can observe (which pfns, in
  // which LRU order, with which bytes) and what drives future insertions
  // (the sent-once set) is state.
  uint8_t le[8];
  StoreLE64(le, m.capacity);
  XXH3_64bits_update(&st, le, 8);
  StoreLE64(le, m.guest_pages);
  XXH3_64bits_update(&st, le, 8);
  StoreLE64(le, m.size);
  XXH3_64bits_update(&st, le, 8);
  for (uint32_t s = m.head; s != kNil; s = m.next[s]) {
    StoreLE64(le, m.slot_pfn[s]);
    XXH3_64bits_update(&st, le, 8);
    XXH3_64bits_update(&st, m.Slot(s), kPageSize);
  }
  if (m.capacity != 0) {
    for (uint64_t i = 0; i < m.BitmapWords(); ++i) {
      StoreLE64(le, m.sent_once[i]);
      XXH3_64bits_update(&st, le, 8);
    }
  }
  return XXH3_64bits_digest(&st);
}

}  // namespace romulus::compress
