// OutputCommitGroup: one OutputCommit over several plugs, for a guest whose
// output leaves through more than one interface (two vifs; an HVM guest's
// vif and the tap of its emulated NIC, either of which it may use). Every
// command goes to every member, in order, even after one failed: a boundary
// placed on the others still holds their output, and the first error is
// what the engine sees (it then ends the session, as for a single plug).
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "replicator/output_commit.h"

namespace romulus::replicator {

class OutputCommitGroup final : public OutputCommit {
 public:
  // REQUIRES: members non-empty, none null.
  explicit OutputCommitGroup(std::vector<std::unique_ptr<OutputCommit>> members);

  Status Checkpoint(uint64_t epoch) override;
  Status Release(uint64_t epoch) override;
  Status ReleaseAll() override;
  Status Discard() override;
  // The members' descriptions joined by " + ".
  std::string Describe() const override;
  // Only when every member commits: one that does not leaks output.
  bool commits_output() const override;

 private:
  template <typename Op>
  Status ForEach(Op op);

  std::vector<std::unique_ptr<OutputCommit>> members_;
};

}  // namespace romulus::replicator
