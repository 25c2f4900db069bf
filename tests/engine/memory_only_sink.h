// A GuestSink that accepts every session and keeps nothing: for tests of the
// receiver's handshake and policy, where what the sink stores does not matter.
#pragma once

#include <atomic>
#include <string>

#include "restore/guest_sink.h"

namespace romulus::test_engine {

class MemoryOnlySink : public restore::GuestSink {
 public:
  Status BeginSession(uint64_t, const std::string&) override {
    began.store(true);
    return Status::Ok();
  }
  Status OnPage(uint64_t, uint64_t, const uint8_t*) override { return Status::Ok(); }
  Status OnState(uint64_t, std::span<const uint8_t>) override { return Status::Ok(); }
  Status Commit(uint64_t) override { return Status::Ok(); }
  void Discard() override {}
  Status Activate(const std::string&) override { return Status::Ok(); }
  bool has_committed() const override { return false; }
  uint64_t last_committed_epoch() const override { return 0; }

  std::atomic<bool> began{false};  // a session reached the sink
};

}  // namespace romulus::test_engine
