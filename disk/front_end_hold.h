// FrontEndHold: how a disk's streaming copy (disk/sync_copier.h) keeps the
// disk's front end from executing a request while it reads a chunk.
//
//   NbdServer    (disk/nbd_server.h)  holds its request loop;
//   RequestGate  (below)              a front end without a loop (the
//                                     simulated guest's writer) runs each
//                                     whole request inside Enter/Leave.
#pragma once

#include <chrono>
#include <mutex>

#include "common/status.h"

namespace romulus::disk {

class FrontEndHold {
 public:
  virtual ~FrontEndHold() = default;
  // Returns once no request executes and none can start; Timeout when the
  // request executing does not finish by the deadline (nothing is held).
  virtual Status Hold(std::chrono::steady_clock::time_point deadline) = 0;
  virtual void Unhold() = 0;
};

class RequestGate final : public FrontEndHold {
 public:
  Status Hold(std::chrono::steady_clock::time_point deadline) override {
    if (!mu_.try_lock_until(deadline)) return Status::Timeout("the disk's front end did not come to rest");
    return Status::Ok();
  }
  void Unhold() override { mu_.unlock(); }
  // The front end, around each whole request (tag taken to tag released).
  void Enter() { mu_.lock(); }
  void Leave() { mu_.unlock(); }

 private:
  std::timed_mutex mu_;
};

}  // namespace romulus::disk
