// replicator::OutputCommitGroup: every plug of a guest with several
// interfaces gets every command, even after one of them failed.
#include "replicator/output_commit_group.h"

#include <gtest/gtest.h>

#include <memory>
#include <string>
#include <vector>

namespace romulus::replicator {
namespace {

// Records its commands into a shared log; fails the ones named in `fail`.
class Member final : public OutputCommit {
 public:
  Member(std::string name, std::vector<std::string>* log, std::string fail = "", bool commits = true)
      : name_(std::move(name)), log_(log), fail_(std::move(fail)), commits_(commits) {}
  Status Checkpoint(uint64_t e) override { return Do("checkpoint " + std::to_string(e)); }
  Status Release(uint64_t e) override { return Do("release " + std::to_string(e)); }
  Status ReleaseAll() override { return Do("release-all"); }
  Status Discard() override { return Do("discard"); }
  std::string Describe() const override { return name_; }
  bool commits_output() const override { return commits_; }

 private:
  Status Do(const std::string& what) {
    log_->push_back(name_ + " " + what);
    if (what.rfind(fail_, 0) == 0 && !fail_.empty()) return Status::IoError(what + " refused");
    return Status::Ok();
  }
  std::string name_;
  std::vector<std::string>* log_;
  std::string fail_;
  bool commits_;
};

std::unique_ptr<OutputCommitGroup> Group(std::vector<std::string>* log, const std::string& fail_a = "",
                                         const std::string& fail_b = "", bool b_commits = true) {
  std::vector<std::unique_ptr<OutputCommit>> m;
  m.push_back(std::make_unique<Member>("vif3.0", log, fail_a));
  m.push_back(std::make_unique<Member>("vif3.0-emu", log, fail_b, b_commits));
  return std::make_unique<OutputCommitGroup>(std::move(m));
}

TEST(OutputCommitGroup, EveryPlugGetsEveryCommandInOrder) {
  std::vector<std::string> log;
  auto g = Group(&log);
  EXPECT_TRUE(g->Checkpoint(7).ok());
  EXPECT_TRUE(g->Release(7).ok());
  EXPECT_TRUE(g->ReleaseAll().ok());
  EXPECT_TRUE(g->Discard().ok());
  const std::vector<std::string> want = {"vif3.0 checkpoint 7", "vif3.0-emu checkpoint 7", "vif3.0 release 7",
                                         "vif3.0-emu release 7", "vif3.0 release-all", "vif3.0-emu release-all",
                                         "vif3.0 discard",       "vif3.0-emu discard"};
  EXPECT_EQ(log, want);
  EXPECT_EQ(g->Describe(), "vif3.0 + vif3.0-emu");
  EXPECT_TRUE(g->commits_output());
}

// A plug that fails does not keep the others from holding their output (a
// boundary skipped on one would release its next epoch early); the first
// error, naming its plug, is what the engine sees.
TEST(OutputCommitGroup, AFailedPlugStillLetsTheOthersPlaceTheirBoundary) {
  std::vector<std::string> log;
  auto g = Group(&log, "checkpoint", "checkpoint");
  Status s = g->Checkpoint(9);
  EXPECT_EQ(s.code(), Code::kIoError);
  EXPECT_NE(s.ToString().find("vif3.0"), std::string::npos) << s.ToString();
  EXPECT_EQ(s.ToString().find("vif3.0-emu"), std::string::npos) << s.ToString();  // the first one's
  EXPECT_EQ(log, (std::vector<std::string>{"vif3.0 checkpoint 9", "vif3.0-emu checkpoint 9"}));
  log.clear();
  auto h = Group(&log, "", "release ");
  EXPECT_FALSE(h->Release(3).ok());
  EXPECT_TRUE(h->ReleaseAll().ok());
  EXPECT_EQ(log.size(), 4u);
  // A discard one plug refused still drops the other's epochs.
  log.clear();
  auto d = Group(&log, "discard");
  EXPECT_FALSE(d->Discard().ok());
  EXPECT_EQ(log, (std::vector<std::string>{"vif3.0 discard", "vif3.0-emu discard"}));
}

// One member that does not commit output means the guest's output is not
// committed: the stats and the warning must say so.
TEST(OutputCommitGroup, CommitsOutputOnlyWhenEveryMemberDoes) {
  std::vector<std::string> log;
  EXPECT_FALSE(Group(&log, "", "", false)->commits_output());
}

}  // namespace
}  // namespace romulus::replicator
