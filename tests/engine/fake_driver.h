// A checkpoint driver for tests of the PrimaryController: a small guest of
// its own (deterministic writes between epochs) driven the way the Xen
// driver drives a domain — the checkpoint calls on the thread that runs the
// session, the page path on a worker thread of its own, the first epoch's
// pages streamed before the first suspend (libxenguest's live pass) — and
// facts that can impersonate either guest type. No hypervisor needed.
#pragma once

#include <atomic>
#include <condition_variable>
#include <cstring>
#include <deque>
#include <functional>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "compress/page.h"
#include "replicator/checkpoint_driver.h"

namespace romulus::testing {

class FakeDriver final : public replicator::CheckpointDriver {
 public:
  explicit FakeDriver(replicator::GuestFacts facts, uint64_t pages = 64) : facts_(std::move(facts)) {
    facts_.guest_pages = pages;
    mem_.assign(pages * compress::kPageSize, 0);
    for (uint64_t pfn = 0; pfn < pages; ++pfn) Write(pfn, pfn + 1);
  }
  static replicator::GuestFacts XenLike() {
    replicator::GuestFacts f;
    f.backend = "xen";
    f.identity = "fake-domain";
    f.domain = "fake-domain";
    f.domid = 7;
    f.guest_type = "pvh";
    f.unbounded_first_epoch_writes = true;
    return f;
  }

  replicator::GuestFacts facts() const override { return facts_; }
  bool GuestLives() override { return lives_.load(); }

  Status RunSession(replicator::EpochSession& s) override {
    Worker worker;
    const uint64_t first = s.first_epoch();
    uint64_t epoch = first;
    // The live pass: every page, from the worker, while the guest "runs".
    std::vector<uint64_t> all;
    for (uint64_t pfn = 0; pfn < facts_.guest_pages; ++pfn) all.push_back(pfn);
    auto live = Copy(all);
    worker.Post([&s, epoch, live] {
      ROMULUS_RETURN_IF_ERROR(s.BeginEpoch(epoch));
      return Add(s, epoch, live, true);
    });
    bool final = false;
    for (;;) {
      paused_.store(true);
      s.Reached(replicator::Phase::kBeforeSuspend, epoch);
      if (die_at_.load() == epoch) {
        // As the Xen driver sees a guest that crashed: asked to suspend, it
        // shut down instead, and the domain does not live any more.
        lives_.store(false);
        return Status::Closed(die_why_);
      }
      Status oc = s.Suspended(epoch);
      if (!oc.ok()) {
        paused_.store(false);
        return oc;
      }
      if ((lose_writes_ && lose_writes_(epoch, first)) || (final && lose_final_.load())) {
        // As the Xen driver does when an emulated disk lost a write: the
        // epoch is not streamed, the guest stays suspended for good.
        Status why = Status::Storage(lose_why_);
        s.Relinquish(epoch, why, s.HandOverPoint().has_value() && !lose_unrecorded_);
        return why;
      }
      s.Reached(replicator::Phase::kAfterSuspend, epoch);
      auto snap = Copy(dirty_);
      dirty_.clear();
      s.Reached(replicator::Phase::kBeforeResume, epoch);
      if (!final) paused_.store(false);
      s.Reached(replicator::Phase::kAfterResume, epoch);
      replicator::EpochWireStats wire;
      const bool begun = epoch == first;
      worker.Post([&s, &wire, epoch, begun, snap] {
        if (!begun) ROMULUS_RETURN_IF_ERROR(s.BeginEpoch(epoch));
        ROMULUS_RETURN_IF_ERROR(Add(s, epoch, snap, !begun));
        auto w = s.EndEpoch();
        if (!w.ok()) return w.status();
        wire = *w;
        return Status::Ok();
      });
      Status sent = worker.Drain();
      replicator::EpochStats st;
      st.epoch = epoch;
      st.dirty_pages = snap.size();
      if (sent.ok()) {
        replicator::ApplyWireStats(wire, &st);
        sent = s.Commit(epoch, &st);
      }
      s.Publish(st);
      if (!sent.ok()) {
        paused_.store(false);  // the driver resumes a guest a failed final epoch left paused
        return sent;
      }
      ++committed_;
      if (final) {
        handed_over_.store(true);
        return Status::Ok();
      }
      switch (s.NextEpoch()) {
        case replicator::EpochSession::Next::kStop: return Status::Ok();
        case replicator::EpochSession::Next::kFinal: final = true; break;
        case replicator::EpochSession::Next::kCheckpoint: break;
      }
      // The guest runs between epochs: a few deterministic writes.
      ++epoch;
      for (uint64_t i = 0; i < 3; ++i) Write((epoch * 5 + i * 11) % facts_.guest_pages, epoch * 1000 + i);
    }
  }

  // The guest's current content of pfn (word 0), for comparisons.
  uint64_t Word(uint64_t pfn) const {
    uint64_t v;
    std::memcpy(&v, &mem_[pfn * compress::kPageSize], 8);
    return v;
  }
  bool paused() const { return paused_.load(); }
  bool handed_over() const { return handed_over_.load(); }
  void set_lives(bool lives) { lives_.store(lives); }
  // The guest dies when epoch `epoch` asks it to suspend: the session ends
  // with `why`, and GuestLives() is false from then on.
  void DieAt(uint64_t epoch, std::string why) {
    die_why_ = std::move(why);
    die_at_.store(epoch);
  }
  // At the suspend of the first epoch for which when(epoch, the session's
  // first epoch) holds, the guest "loses a write": the driver relinquishes
  // it (EpochSession::Relinquish) and keeps it paused. Set before Run.
  // `unrecorded`: the driver could not record that its copy must never
  // run again (it passes hand_over = false).
  // The final epoch of a switchover loses a write (why: as LoseWritesWhen).
  void LoseWritesInTheFinalEpoch(std::string why) {
    lose_why_ = std::move(why);
    lose_final_.store(true);
  }
  void LoseWritesWhen(std::function<bool(uint64_t, uint64_t)> when, std::string why, bool unrecorded = false) {
    lose_writes_ = std::move(when);
    lose_why_ = std::move(why);
    lose_unrecorded_ = unrecorded;
  }

 private:
  struct Page {
    uint64_t pfn;
    std::vector<uint8_t> bytes;
  };
  // Runs posted steps in order on its own thread; Drain waits for them and
  // returns the first error.
  class Worker {
   public:
    Worker() : thread_([this] { Loop(); }) {}
    ~Worker() {
      {
        std::lock_guard<std::mutex> lock(mu_);
        done_ = true;
      }
      cv_.notify_all();
      thread_.join();
    }
    void Post(std::function<Status()> step) {
      std::lock_guard<std::mutex> lock(mu_);
      steps_.push_back(std::move(step));
      cv_.notify_all();
    }
    Status Drain() {
      std::unique_lock<std::mutex> lock(mu_);
      cv_.wait(lock, [&] { return steps_.empty() && !busy_; });
      return error_;
    }

   private:
    void Loop() {
      std::unique_lock<std::mutex> lock(mu_);
      for (;;) {
        cv_.wait(lock, [&] { return done_ || !steps_.empty(); });
        if (steps_.empty()) return;
        auto step = std::move(steps_.front());
        steps_.pop_front();
        busy_ = true;
        lock.unlock();
        Status st = error_.ok() ? step() : Status::Ok();  // after a failure: drain, do nothing
        lock.lock();
        if (error_.ok() && !st.ok()) error_ = st;
        busy_ = false;
        cv_.notify_all();
      }
    }
    std::mutex mu_;
    std::condition_variable cv_;
    std::deque<std::function<Status()>> steps_;
    bool busy_ = false, done_ = false;
    Status error_;
    std::thread thread_;
  };

  // As the Xen driver does: m is reached once the epoch's first page went out.
  static Status Add(replicator::EpochSession& s, uint64_t epoch, const std::vector<Page>& pages, bool announce) {
    for (size_t i = 0; i < pages.size(); ++i) {
      ROMULUS_RETURN_IF_ERROR(s.AddPage(pages[i].pfn, pages[i].bytes.data()));
      if (i == 0 && announce) s.Reached(replicator::Phase::kStreaming, epoch);
    }
    return Status::Ok();
  }
  std::vector<Page> Copy(const std::vector<uint64_t>& pfns) const {
    std::vector<Page> out;
    for (uint64_t pfn : pfns) {
      const uint8_t* p = &mem_[pfn * compress::kPageSize];
      out.push_back(Page{pfn, std::vector<uint8_t>(p, p + compress::kPageSize)});
    }
    return out;
  }
  void Write(uint64_t pfn, uint64_t value) {
    std::memcpy(&mem_[pfn * compress::kPageSize], &value, 8);
    for (uint64_t d : dirty_) {
      if (d == pfn) return;
    }
    dirty_.push_back(pfn);
  }

  replicator::GuestFacts facts_;
  std::vector<uint8_t> mem_;
  std::vector<uint64_t> dirty_;
  std::atomic<bool> paused_{false}, handed_over_{false}, lives_{true};
  std::atomic<uint64_t> die_at_{0};  // 0: never
  std::string die_why_;
  std::function<bool(uint64_t, uint64_t)> lose_writes_;
  std::string lose_why_;
  bool lose_unrecorded_ = false;
  std::atomic<bool> lose_final_{false};
  uint64_t committed_ = 0;
};

}  // namespace romulus::testing
