// Kill-points: where in an epoch a failover drill (--kill-at) or a test can
// act. Named after legacy Remus' (s, s2, r, r2, c, c2); where each falls for
// each guest type: docs/FAILURE-MODEL.md and docs/XEN-STREAM.md.
#pragma once

#include <string>

namespace romulus::replicator {

enum class Phase {
  kBeforeSuspend,  // s
  kAfterSuspend,   // s2: guest paused, snapshot not yet taken
  kBeforeResume,   // r:  snapshot taken, guest still paused
  kAfterResume,    // r2: guest running, epoch not yet streamed
  kBeforeCommit,   // c:  epoch streamed (EPOCH_END sent), ack not yet received
  kAfterCommit,    // c2: ack received, output released
  kStreaming,      // m:  in the middle of streaming the epoch's pages
};
const char* PhaseName(Phase p);
// Accepts "s", "s2", ..., "m" and the long names ("before-suspend", "streaming").
bool ParsePhase(const std::string& text, Phase* out);

}  // namespace romulus::replicator
