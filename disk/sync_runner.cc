#include "disk/sync_runner.h"

#include <utility>

#include "common/thread_name.h"

namespace romulus::disk {

namespace {
// How long one chunk's hold may wait for the request executing; a longer
// request (a stalled client's WRITE payload) makes the copy try again later.
constexpr std::chrono::milliseconds kHoldWait{500};
// Paced out and not kicked: look again after this (the guest's writes may
// have been sealed by an engine that does not kick, e.g. a test).
constexpr std::chrono::milliseconds kIdleWait{100};
}  // namespace

SyncRunner::SyncRunner(EpochDiskLog* log, EpochCounter* clock, BackingStore* store, FrontEndHold* hold,
                       SyncCopierOptions options)
    : log_(log), clock_(clock), store_(store), hold_(hold), options_(options) {}

SyncRunner::~SyncRunner() { Stop(); }

void SyncRunner::Start(std::shared_ptr<const protocol::DiskChunkTable> backup) {
  Stop();
  {
    std::lock_guard<std::mutex> lock(mu_);
    backup_ = std::move(backup);
    walked_ = 0;
    skipped_ = 0;
    stop_ = false;
    kicked_ = false;
    advanced_ = false;
    active_ = true;
    done_ = false;
    complete_tag_ = 0;
    permille_ = 0;
    marks_.clear();
    sealed_permille_ = 0;
    error_ = Status::Ok();
  }
  thread_ = std::thread([this] {
    NameThisThread("disk-sync");
    Run();
  });
}

void SyncRunner::Stop() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    stop_ = true;
    active_ = false;
    backup_.reset();
    // An abandoned copy's failure is not the next session's.
    error_ = Status::Ok();
  }
  cv_.notify_all();
  if (thread_.joinable()) thread_.join();
}

void SyncRunner::EpochAdvanced() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    advanced_ = true;
    kicked_ = true;
  }
  cv_.notify_all();
}

void SyncRunner::Kick() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    kicked_ = true;
  }
  cv_.notify_all();
}

bool SyncRunner::active() const {
  std::lock_guard<std::mutex> lock(mu_);
  return active_;
}

uint32_t SyncRunner::permille() const {
  std::lock_guard<std::mutex> lock(mu_);
  return permille_;
}

uint64_t SyncRunner::walked_bytes() const {
  std::lock_guard<std::mutex> lock(mu_);
  return walked_;
}

uint64_t SyncRunner::skipped_bytes() const {
  std::lock_guard<std::mutex> lock(mu_);
  return skipped_;
}

Result<uint32_t> SyncRunner::SyncStateAt(uint64_t tag) {
  std::lock_guard<std::mutex> lock(mu_);
  if (!error_.ok()) {
    Status e = std::move(error_);
    error_ = Status::Ok();
    active_ = false;
    return e;
  }
  if (!active_) return protocol::kSyncWhole;
  if (done_ && complete_tag_ <= tag) {
    // Every chunk is tagged <= tag and sealed with it: from this epoch on
    // the backup's disk is whole.
    active_ = false;
    return protocol::kSyncWhole;
  }
  while (!marks_.empty() && marks_.front().tag <= tag) {
    sealed_permille_ = marks_.front().permille;
    marks_.pop_front();
  }
  return protocol::SyncStateOfPermille(sealed_permille_);
}

void SyncRunner::Run() {
  std::shared_ptr<const protocol::DiskChunkTable> backup;
  {
    std::lock_guard<std::mutex> lock(mu_);
    backup = backup_;
  }
  SyncCopier copier(log_, clock_, store_, hold_, options_, std::move(backup));
  while (true) {
    {
      std::lock_guard<std::mutex> lock(mu_);
      if (stop_) return;
      kicked_ = false;
      if (advanced_) {
        advanced_ = false;
        copier.OnEpochAdvanced();
      }
    }
    Result<bool> stepped = copier.Step(std::chrono::steady_clock::now() + kHoldWait);
    std::unique_lock<std::mutex> lock(mu_);
    permille_ = copier.permille();
    walked_ = copier.copied_bytes();
    skipped_ = copier.skipped_bytes();
    if (stepped.ok() && *stepped) {
      if (!marks_.empty() && marks_.back().tag == copier.last_tag()) {
        marks_.back().permille = permille_;
      } else {
        marks_.push_back(Mark{copier.last_tag(), permille_});
      }
    }
    if (!stepped.ok()) {
      if (stepped.status().code() == Code::kTimeout) {
        // The front end did not come to rest in time: nothing was copied.
        cv_.wait_for(lock, kIdleWait, [&] { return stop_ || kicked_; });
        continue;
      }
      error_ = stepped.status().With("initial copy of the disk at " + std::to_string(copier.copied_bytes()) +
                                     " of " + std::to_string(copier.total_bytes()) + " bytes");
      return;
    }
    if (copier.done()) {
      done_ = true;
      complete_tag_ = copier.complete_epoch();
      backup_.reset();  // the copier's reference goes with it: the table is freed
      return;
    }
    if (!*stepped) {
      cv_.wait_for(lock, kIdleWait, [&] { return stop_ || kicked_; });
    } else {
      // Let a request that waited for this chunk's hold run before the next
      // chunk takes the hold again (the holds are not fair).
      lock.unlock();
      std::this_thread::yield();
    }
  }
}

}  // namespace romulus::disk
