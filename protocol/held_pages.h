// The HELD table (docs/PROTOCOL.md §3.9): right after an accepting HELLO_ACK
// with kCapHeldPages, the backup tells the primary what its image holds, as
// one PageHash per page, so that the session's first epoch carries only the
// pages that differ. A resync after a reconnect then costs what changed since
// the backup's last checkpoint (or since an interrupted first sync), and a
// fresh backup gets only the guest's non-zero pages.
//
// Both ends keep the table in the MemoryDigest they check EPOCH_END against:
// the backup's digest of its image is exactly what it announces, and the
// primary's digest starts from it, so the first epoch's digest covers the
// pages sent and the pages kept alike.
#pragma once

#include <chrono>

#include "common/digest.h"
#include "common/status.h"
#include "protocol/frame_io.h"

namespace romulus::protocol {

// Sends `held` as HELD frames: the ranges holding non-zero hashes, ascending,
// then the last frame with the sum. Each frame gets `per_frame` to go out.
Status SendHeldPages(FrameWriter* writer, const MemoryDigest& held, std::chrono::milliseconds per_frame);

// Reads a HELD table into `into` (reset first; its size is the guest's).
// Every range must lie inside the guest, ranges must ascend without
// overlapping, and the hashes must sum to the last frame's digest; anything
// else is Corruption. An ERROR from the backup is returned as its text.
// Heartbeats in between are skipped. Each frame must arrive within
// `per_frame`. Memory: nothing beyond one frame and `into`.
Status ReceiveHeldPages(FrameReader* reader, MemoryDigest* into, std::chrono::milliseconds per_frame);

}  // namespace romulus::protocol
