#include "compress/page_cache.h"

#include <gtest/gtest.h>

#include <cstring>
#include <list>
#include <map>
#include <random>
#include <vector>

namespace romulus::compress {
namespace {

using Page = std::vector<uint8_t>;

Page Fill(uint64_t pfn, uint32_t version) {
  Page p(kPageSize);
  for (size_t i = 0; i < kPageSize; ++i) p[i] = static_cast<uint8_t>(pfn * 131 + version * 7 + i);
  return p;
}

std::unique_ptr<PageCache> Make(uint64_t cap, uint64_t guest) {
  auto r = PageCache::Create(cap, guest);
  EXPECT_TRUE(r.ok()) << r.status().ToString();
  return std::move(r).value();
}

bool Holds(const PageCache& c, uint64_t pfn, const Page& p) {
  const uint8_t* got = c.Peek(pfn);
  return got != nullptr && std::memcmp(got, p.data(), kPageSize) == 0;
}

// A deliberately naive model of the documented policy, to compare against.
class ModelCache {
 public:
  ModelCache(size_t cap) : cap_(cap) {}
  void OnSend(uint64_t pfn, const Page& p) {
    if (cap_ == 0) return;
    auto it = map_.find(pfn);
    if (it != map_.end()) {
      lru_.remove(pfn);
      lru_.push_front(pfn);
      it->second = p;
      return;
    }
    if (!sent_.count(pfn)) {
      sent_[pfn] = true;
      return;
    }
    if (map_.size() == cap_) {
      map_.erase(lru_.back());
      lru_.pop_back();
    }
    map_[pfn] = p;
    lru_.push_front(pfn);
  }
  const Page* Find(uint64_t pfn) const {
    auto it = map_.find(pfn);
    return it == map_.end() ? nullptr : &it->second;
  }
  const std::list<uint64_t>& lru() const { return lru_; }
  // The documented resize: keep the `cap` most recently used entries; a
  // disabled cache (before or after) has no sent-once memory.
  void Resize(size_t cap) {
    if (cap == 0 || cap_ == 0) sent_.clear();
    while (lru_.size() > cap) {
      map_.erase(lru_.back());
      lru_.pop_back();
    }
    cap_ = cap;
  }

 private:
  size_t cap_;
  std::map<uint64_t, Page> map_;
  std::map<uint64_t, bool> sent_;
  std::list<uint64_t> lru_;
};

TEST(PageCacheTest, CapacityZeroIsDisabled) {
  auto c = Make(0, 100);
  Page p = Fill(5, 1);
  for (int i = 0; i < 3; ++i) c->OnSend(5, p.data());
  EXPECT_EQ(c->Lookup(5), nullptr);
  EXPECT_EQ(c->size_pages(), 0u);
  EXPECT_EQ(c->capacity_pages(), 0u);
  EXPECT_EQ(c->counters().misses, 1u);
  EXPECT_EQ(c->counters().inserts, 0u);
  c->Reset();
}

TEST(PageCacheTest, CapacityIsClampedToGuestAndBounded) {
  auto c = Make(1000, 10);
  EXPECT_EQ(c->capacity_pages(), 10u);
  // 2^33 slots cannot be indexed by the uint32 slot numbers: refused before
  // any allocation is attempted.
  auto big = PageCache::Create(uint64_t{1} << 33, uint64_t{1} << 34);
  EXPECT_FALSE(big.ok());
  EXPECT_EQ(big.status().code(), Code::kOutOfRange);
}

TEST(PageCacheTest, InsertedOnlyFromSecondSend) {
  auto c = Make(4, 16);
  Page v1 = Fill(3, 1), v2 = Fill(3, 2);
  c->OnSend(3, v1.data());
  EXPECT_EQ(c->Lookup(3), nullptr);
  EXPECT_EQ(c->size_pages(), 0u);
  EXPECT_EQ(c->counters().inserts, 0u);
  c->OnSend(3, v2.data());
  EXPECT_TRUE(Holds(*c, 3, v2));
  EXPECT_EQ(c->size_pages(), 1u);
  EXPECT_EQ(c->counters().inserts, 1u);
}

TEST(PageCacheTest, LaterSendsRefreshBytes) {
  auto c = Make(4, 16);
  for (uint32_t v = 1; v <= 5; ++v) {
    Page p = Fill(7, v);
    c->OnSend(7, p.data());
    if (v >= 2) {
      EXPECT_TRUE(Holds(*c, 7, p)) << v;
    }
  }
  EXPECT_EQ(c->counters().inserts, 1u);
  EXPECT_EQ(c->size_pages(), 1u);
}

TEST(PageCacheTest, EvictsLeastRecentlySentInDocumentedOrder) {
  auto c = Make(3, 16);
  // Bulk pass: pages 0..4 once each (nothing cached).
  for (uint64_t pfn = 0; pfn < 5; ++pfn) c->OnSend(pfn, Fill(pfn, 0).data());
  EXPECT_EQ(c->size_pages(), 0u);
  // Second pass: 0,1,2 fill the cache; 3 evicts 0; 4 evicts 1.
  for (uint64_t pfn = 0; pfn < 5; ++pfn) c->OnSend(pfn, Fill(pfn, 1).data());
  EXPECT_EQ(c->Peek(0), nullptr);
  EXPECT_EQ(c->Peek(1), nullptr);
  EXPECT_TRUE(Holds(*c, 2, Fill(2, 1)));
  EXPECT_TRUE(Holds(*c, 3, Fill(3, 1)));
  EXPECT_TRUE(Holds(*c, 4, Fill(4, 1)));
  EXPECT_EQ(c->counters().evictions, 2u);
  // LRU order now (MRU first): 4 3 2. Refresh 2 -> 2 4 3.
  c->OnSend(2, Fill(2, 2).data());
  // Page 0 was sent before and was evicted: its next send re-inserts it at
  // once, evicting the LRU page, 3.
  c->OnSend(0, Fill(0, 2).data());
  EXPECT_EQ(c->Peek(3), nullptr);
  EXPECT_TRUE(Holds(*c, 0, Fill(0, 2)));
  EXPECT_TRUE(Holds(*c, 2, Fill(2, 2)));
  EXPECT_TRUE(Holds(*c, 4, Fill(4, 1)));
  // Order 0 2 4: next victim is 4, then 2.
  c->OnSend(1, Fill(1, 3).data());
  EXPECT_EQ(c->Peek(4), nullptr);
  c->OnSend(3, Fill(3, 3).data());
  EXPECT_EQ(c->Peek(2), nullptr);
  EXPECT_TRUE(Holds(*c, 0, Fill(0, 2)));
  EXPECT_TRUE(Holds(*c, 1, Fill(1, 3)));
  EXPECT_TRUE(Holds(*c, 3, Fill(3, 3)));
  EXPECT_EQ(c->counters().evictions, 5u);
  EXPECT_EQ(c->counters().inserts, 8u);  // 5 + re-inserts of 0, 1, 3
}

TEST(PageCacheTest, LookupDoesNotChangeOrder) {
  auto c = Make(2, 8);
  for (int round = 0; round < 2; ++round) {
    c->OnSend(0, Fill(0, round).data());
    c->OnSend(1, Fill(1, round).data());
  }
  const uint64_t before = c->StateDigest();
  for (int i = 0; i < 10; ++i) ASSERT_NE(c->Lookup(0), nullptr);  // 0 is LRU
  EXPECT_EQ(c->StateDigest(), before);
  c->OnSend(2, Fill(2, 0).data());
  c->OnSend(2, Fill(2, 1).data());  // inserts, evicting the LRU: still 0
  EXPECT_EQ(c->Peek(0), nullptr);
  EXPECT_NE(c->Peek(1), nullptr);
}

TEST(PageCacheTest, CountersCountHitsMissesOverflows) {
  auto c = Make(2, 8);
  EXPECT_EQ(c->Lookup(1), nullptr);
  c->OnSend(1, Fill(1, 0).data());
  EXPECT_EQ(c->Lookup(1), nullptr);
  c->OnSend(1, Fill(1, 1).data());
  EXPECT_NE(c->Lookup(1), nullptr);
  EXPECT_NE(c->Lookup(1), nullptr);
  EXPECT_NE(c->Peek(1), nullptr);  // not counted
  c->CountLookup(false);
  c->CountOverflow();
  const CacheCounters& k = c->counters();
  EXPECT_EQ(k.hits, 2u);
  EXPECT_EQ(k.misses, 3u);
  EXPECT_EQ(k.inserts, 1u);
  EXPECT_EQ(k.evictions, 0u);
  EXPECT_EQ(k.overflows, 1u);
}

TEST(PageCacheTest, PfnBoundsAreEnforced) {
  auto c = Make(4, 8);
  Page p = Fill(8, 0);
  c->OnSend(8, p.data());
  c->OnSend(8, p.data());
  c->OnSend(~uint64_t{0}, p.data());
  c->OnSend(~uint64_t{0}, p.data());
  EXPECT_EQ(c->size_pages(), 0u);
  EXPECT_EQ(c->Lookup(8), nullptr);
  EXPECT_EQ(c->Lookup(~uint64_t{0}), nullptr);
  // The last valid pfn works.
  c->OnSend(7, p.data());
  c->OnSend(7, p.data());
  EXPECT_TRUE(Holds(*c, 7, p));
}

TEST(PageCacheTest, ResetForgetsEverythingButKeepsWorking) {
  auto fresh = Make(3, 32);
  auto c = Make(3, 32);
  for (int round = 0; round < 3; ++round)
    for (uint64_t pfn = 0; pfn < 6; ++pfn) c->OnSend(pfn, Fill(pfn, round).data());
  EXPECT_EQ(c->size_pages(), 3u);
  ASSERT_NE(c->Lookup(5), nullptr);
  c->Reset();
  EXPECT_EQ(c->size_pages(), 0u);
  EXPECT_EQ(c->counters().hits, 0u);
  EXPECT_EQ(c->counters().inserts, 0u);
  EXPECT_EQ(c->counters().evictions, 0u);
  EXPECT_EQ(c->StateDigest(), fresh->StateDigest());
  for (uint64_t pfn = 0; pfn < 6; ++pfn) EXPECT_EQ(c->Peek(pfn), nullptr);
  // The sent-once memory is gone too: the next send is a "first" send again.
  c->OnSend(5, Fill(5, 9).data());
  EXPECT_EQ(c->Peek(5), nullptr);
  c->OnSend(5, Fill(5, 10).data());
  EXPECT_TRUE(Holds(*c, 5, Fill(5, 10)));
}

TEST(PageCacheTest, DigestSeesOrderBytesAndSentOnceSet) {
  auto a = Make(4, 16), b = Make(4, 16);
  EXPECT_EQ(a->StateDigest(), b->StateDigest());
  for (int r = 0; r < 2; ++r) {
    a->OnSend(1, Fill(1, r).data());
    a->OnSend(2, Fill(2, r).data());
  }
  for (int r = 0; r < 2; ++r) {
    b->OnSend(2, Fill(2, r).data());
    b->OnSend(1, Fill(1, r).data());
  }
  EXPECT_NE(a->StateDigest(), b->StateDigest());  // same pages, other order
  b->OnSend(2, Fill(2, 1).data());
  EXPECT_EQ(a->StateDigest(), b->StateDigest());
  Page p = Fill(2, 1);
  p[100] ^= 1;
  b->OnSend(2, p.data());
  EXPECT_NE(a->StateDigest(), b->StateDigest());  // one bit
  b->OnSend(2, Fill(2, 1).data());
  EXPECT_EQ(a->StateDigest(), b->StateDigest());
  a->OnSend(9, Fill(9, 0).data());  // only marks 9 as sent once
  EXPECT_NE(a->StateDigest(), b->StateDigest());
}

// Two caches fed one random sequence stay identical, and both agree with the
// model of the documented policy after every step.
TEST(PageCacheTest, MirrorsStayIdenticalOnRandomSequences) {
  for (uint64_t cap : {1u, 7u, 64u}) {
    constexpr uint64_t kGuest = 200;
    auto a = Make(cap, kGuest), b = Make(cap, kGuest);
    ModelCache model(cap);
    std::mt19937_64 rng(cap * 1000 + 3);
    std::vector<uint32_t> version(kGuest, 0);
    for (int step = 0; step < 20000; ++step) {
      // Skewed: a hot set of 16 pages plus everything else.
      uint64_t pfn = (rng() % 4 == 0) ? rng() % kGuest : rng() % 16;
      if (rng() % 3 == 0) {
        // Only side a looks up (the encoder does, the decoder often does not):
        // lookups must not perturb the mirror.
        (void)a->Lookup(rng() % kGuest);
        continue;
      }
      Page p = Fill(pfn, ++version[pfn]);
      a->OnSend(pfn, p.data());
      b->OnSend(pfn, p.data());
      model.OnSend(pfn, p);
      if (step % 97 == 0) {
        ASSERT_EQ(a->StateDigest(), b->StateDigest()) << "step " << step;
        for (uint64_t q = 0; q < kGuest; ++q) {
          const Page* m = model.Find(q);
          const uint8_t* pa = a->Peek(q);
          const uint8_t* pb = b->Peek(q);
          ASSERT_EQ(m != nullptr, pa != nullptr) << "cap " << cap << " step " << step << " pfn " << q;
          ASSERT_EQ(pa != nullptr, pb != nullptr);
          if (m) {
            ASSERT_EQ(0, std::memcmp(pa, m->data(), kPageSize));
            ASSERT_EQ(0, std::memcmp(pb, m->data(), kPageSize));
          }
        }
        ASSERT_EQ(a->size_pages(), model.lru().size());
      }
    }
    EXPECT_EQ(a->StateDigest(), b->StateDigest());
    EXPECT_EQ(a->counters().inserts, b->counters().inserts);
    EXPECT_EQ(a->counters().evictions, b->counters().evictions);
    EXPECT_GT(a->counters().evictions, 0u);
  }
}

// ---- Resize (docs/CACHE-AND-BATCH.md §1.6) ---------------------------------

// Sends pfns 0..n-1 twice, in order: all cached, pfn n-1 most recent.
void FillInOrder(PageCache* c, uint64_t n) {
  for (int round = 0; round < 2; ++round)
    for (uint64_t pfn = 0; pfn < n; ++pfn) c->OnSend(pfn, Fill(pfn, round).data());
}

TEST(PageCacheResize, ShrinkKeepsTheMostRecentlyUsedInOrder) {
  auto c = Make(8, 64);
  FillInOrder(c.get(), 8);
  c->OnSend(2, Fill(2, 5).data());  // 2 becomes MRU: order 2,7,6,5,4,3,1,0
  ASSERT_TRUE(c->Resize(3).ok());
  EXPECT_EQ(c->capacity_pages(), 3u);
  EXPECT_EQ(c->size_pages(), 3u);
  EXPECT_TRUE(Holds(*c, 2, Fill(2, 5)));
  EXPECT_TRUE(Holds(*c, 7, Fill(7, 1)));
  EXPECT_TRUE(Holds(*c, 6, Fill(6, 1)));
  for (uint64_t pfn : {0, 1, 3, 4, 5}) EXPECT_EQ(c->Peek(pfn), nullptr) << pfn;
  EXPECT_EQ(c->counters().evictions, 5u);  // the dropped entries
  // The LRU order survived: a new entry (0 was sent before, so it re-enters
  // at once) evicts 6, the least recently used of the three kept.
  c->OnSend(0, Fill(0, 9).data());
  EXPECT_EQ(c->Peek(6), nullptr);
  EXPECT_TRUE(Holds(*c, 0, Fill(0, 9)));
  EXPECT_TRUE(Holds(*c, 2, Fill(2, 5)));
  EXPECT_TRUE(Holds(*c, 7, Fill(7, 1)));
}

// LRU's stack property: a large cache shrunk to k is exactly the cache of
// capacity k that saw the same sends all along.
TEST(PageCacheResize, ShrunkCacheEqualsOneThatWasAlwaysThatSmall) {
  constexpr uint64_t kGuest = 300;
  auto big = Make(100, kGuest), small = Make(10, kGuest);
  std::mt19937_64 rng(7);
  for (int step = 0; step < 5000; ++step) {
    uint64_t pfn = rng() % 2 ? rng() % 40 : rng() % kGuest;
    Page p = Fill(pfn, step);
    big->OnSend(pfn, p.data());
    small->OnSend(pfn, p.data());
  }
  ASSERT_NE(big->StateDigest(), small->StateDigest());
  ASSERT_TRUE(big->Resize(10).ok());
  EXPECT_EQ(big->StateDigest(), small->StateDigest());
}

TEST(PageCacheResize, GrowKeepsEverythingAndFillsTheNewSlots) {
  auto c = Make(3, 64);
  FillInOrder(c.get(), 3);
  const CacheCounters before = c->counters();
  ASSERT_TRUE(c->Resize(6).ok());
  EXPECT_EQ(c->capacity_pages(), 6u);
  EXPECT_EQ(c->size_pages(), 3u);
  for (uint64_t pfn = 0; pfn < 3; ++pfn) EXPECT_TRUE(Holds(*c, pfn, Fill(pfn, 1))) << pfn;
  EXPECT_EQ(c->counters().inserts, before.inserts);
  EXPECT_EQ(c->counters().evictions, before.evictions);
  // Three more pages fit without evicting anything; a fourth evicts pfn 0,
  // still the least recently used.
  for (int round = 0; round < 2; ++round)
    for (uint64_t pfn = 3; pfn < 6; ++pfn) c->OnSend(pfn, Fill(pfn, round).data());
  EXPECT_EQ(c->size_pages(), 6u);
  EXPECT_EQ(c->counters().evictions, 0u);
  c->OnSend(10, Fill(10, 0).data());
  c->OnSend(10, Fill(10, 1).data());
  EXPECT_EQ(c->Peek(0), nullptr);
  EXPECT_TRUE(Holds(*c, 1, Fill(1, 1)));
  EXPECT_TRUE(Holds(*c, 10, Fill(10, 1)));
}

TEST(PageCacheResize, ToZeroDisablesAndBackStartsEmpty) {
  auto c = Make(4, 32);
  FillInOrder(c.get(), 4);
  ASSERT_TRUE(c->Resize(0).ok());
  EXPECT_EQ(c->capacity_pages(), 0u);
  EXPECT_EQ(c->size_pages(), 0u);
  EXPECT_EQ(c->Peek(3), nullptr);
  ASSERT_TRUE(c->Resize(4).ok());
  EXPECT_EQ(c->StateDigest(), Make(4, 32)->StateDigest()) << "nothing survives a disabled cache";
  // Larger than the guest: clamped like Create.
  ASSERT_TRUE(c->Resize(1000).ok());
  EXPECT_EQ(c->capacity_pages(), 32u);
}

TEST(PageCacheResize, ResizeIntoRefusesAWrongFreshCacheAndChangesNothing) {
  auto c = Make(4, 32);
  FillInOrder(c.get(), 4);
  const uint64_t digest = c->StateDigest();
  EXPECT_EQ(c->ResizeInto(nullptr).code(), Code::kInvalidArgument);
  EXPECT_EQ(c->ResizeInto(Make(8, 33)).code(), Code::kInvalidArgument);  // other guest
  auto used = Make(8, 32);
  FillInOrder(used.get(), 1);
  EXPECT_EQ(c->ResizeInto(std::move(used)).code(), Code::kInvalidArgument);  // not empty
  EXPECT_EQ(c->StateDigest(), digest);
  EXPECT_EQ(c->capacity_pages(), 4u);
  EXPECT_TRUE(c->ResizeInto(Make(8, 32)).ok());
  EXPECT_EQ(c->capacity_pages(), 8u);
  EXPECT_EQ(c->size_pages(), 4u);
}

// Two caches fed the same sends and the same resizes stay identical, and
// agree with the model, across shrinks, grows, disabling and clamping.
TEST(PageCacheResize, MirrorsResizedAlikeStayIdentical) {
  constexpr uint64_t kGuest = 150;
  auto a = Make(16, kGuest), b = Make(16, kGuest);
  ModelCache model(16);
  std::mt19937_64 rng(11);
  const uint64_t sizes[] = {0, 1, 5, 16, 40, 149, 150, 400};
  for (int step = 0; step < 20000; ++step) {
    if (step % 500 == 499) {
      const uint64_t cap = sizes[rng() % std::size(sizes)];
      ASSERT_TRUE(a->Resize(cap).ok());
      ASSERT_TRUE(b->Resize(cap).ok());
      model.Resize(std::min(cap, kGuest));
      ASSERT_EQ(a->StateDigest(), b->StateDigest()) << "step " << step;
    }
    uint64_t pfn = rng() % 3 ? rng() % 30 : rng() % kGuest;
    Page p = Fill(pfn, step);
    a->OnSend(pfn, p.data());
    b->OnSend(pfn, p.data());
    model.OnSend(pfn, p);
    if (step % 89 == 0) {
      ASSERT_EQ(a->StateDigest(), b->StateDigest()) << "step " << step;
      ASSERT_EQ(a->size_pages(), model.lru().size()) << "step " << step;
      for (uint64_t q = 0; q < kGuest; ++q) {
        const Page* m = model.Find(q);
        const uint8_t* pa = a->Peek(q);
        ASSERT_EQ(m != nullptr, pa != nullptr) << "step " << step << " pfn " << q;
        if (m) {
          ASSERT_EQ(0, std::memcmp(pa, m->data(), kPageSize));
        }
      }
    }
  }
}

}  // namespace
}  // namespace romulus::compress
