#include "replicator/output_commit_group.h"

#include <cassert>

namespace romulus::replicator {

OutputCommitGroup::OutputCommitGroup(std::vector<std::unique_ptr<OutputCommit>> members)
    : members_(std::move(members)) {
  assert(!members_.empty());
}

template <typename Op>
Status OutputCommitGroup::ForEach(Op op) {
  Status first;
  for (auto& m : members_) {
    Status s = op(*m);
    if (!s.ok() && first.ok()) first = s.With(m->Describe());
  }
  return first;
}

Status OutputCommitGroup::Checkpoint(uint64_t epoch) {
  return ForEach([&](OutputCommit& m) { return m.Checkpoint(epoch); });
}

Status OutputCommitGroup::Release(uint64_t epoch) {
  return ForEach([&](OutputCommit& m) { return m.Release(epoch); });
}

Status OutputCommitGroup::ReleaseAll() {
  return ForEach([](OutputCommit& m) { return m.ReleaseAll(); });
}

Status OutputCommitGroup::Discard() {
  return ForEach([](OutputCommit& m) { return m.Discard(); });
}

std::string OutputCommitGroup::Describe() const {
  std::string out;
  for (const auto& m : members_) out += (out.empty() ? "" : " + ") + m->Describe();
  return out;
}

bool OutputCommitGroup::commits_output() const {
  for (const auto& m : members_) {
    if (!m->commits_output()) return false;
  }
  return true;
}

}  // namespace romulus::replicator
