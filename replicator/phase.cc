#include "replicator/phase.h"

namespace romulus::replicator {

const char* PhaseName(Phase p) {
  switch (p) {
    case Phase::kBeforeSuspend: return "before-suspend";
    case Phase::kAfterSuspend: return "after-suspend";
    case Phase::kBeforeResume: return "before-resume";
    case Phase::kAfterResume: return "after-resume";
    case Phase::kBeforeCommit: return "before-commit";
    case Phase::kAfterCommit: return "after-commit";
    case Phase::kStreaming: return "streaming";
  }
  return "?";
}

bool ParsePhase(const std::string& text, Phase* out) {
  static const struct {
    const char* shortname;
    Phase phase;
  } kNames[] = {{"s", Phase::kBeforeSuspend}, {"s2", Phase::kAfterSuspend},
                {"r", Phase::kBeforeResume},  {"r2", Phase::kAfterResume},
                {"c", Phase::kBeforeCommit},  {"c2", Phase::kAfterCommit},
                {"m", Phase::kStreaming}};
  for (const auto& n : kNames) {
    if (text == n.shortname || text == PhaseName(n.phase)) {
      *out = n.phase;
      return true;
    }
  }
  return false;
}

}  // namespace romulus::replicator
