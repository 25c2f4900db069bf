// What a backup's copy of a disk holds, chunk by chunk (DISK_DIGESTS,
// docs/PROTOCOL.md §3.11, docs/DISK.md §7.4): the one reader both sinks
// that keep disk images use (sim/image_sink, xen/xen_disks).
#pragma once

#include <cstdint>
#include <span>

#include "common/status.h"
#include "protocol/disk_digests.h"

namespace romulus::restore {

// Fills out[k] with protocol::DiskChunkHash of chunk first_chunk + k of the
// disk image `fd` (a disk of `disk_size` bytes; bytes beyond the file's end
// read as zeros). A hole (SEEK_DATA) is hashed without being read.
// InvalidArgument for chunks beyond the disk; Storage for a failed read.
Status HashImageChunks(int fd, uint64_t disk_size, uint64_t first_chunk, std::span<protocol::ChunkHash> out);

}  // namespace romulus::restore
