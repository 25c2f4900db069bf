#include "restore/image_chunk_hashes.h"

#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <string>
#include <vector>

namespace romulus::restore {

Status HashImageChunks(int fd, uint64_t disk_size, uint64_t first_chunk, std::span<protocol::ChunkHash> out) {
  const uint64_t chunks = protocol::DiskChunks(disk_size);
  if (first_chunk > chunks || out.size() > chunks - first_chunk) {
    return Status::InvalidArgument("chunks " + std::to_string(first_chunk) + "+" + std::to_string(out.size()) +
                                   " are beyond the disk's " + std::to_string(chunks));
  }
  std::vector<uint8_t> buf;
  for (size_t k = 0; k < out.size(); ++k) {
    const uint64_t at = (first_chunk + k) * protocol::kDiskChunkBytes;
    const uint64_t len = std::min(protocol::kDiskChunkBytes, disk_size - at);
    // A chunk that is all hole reads as zeros: no need to read it.
    const off_t data = lseek(fd, static_cast<off_t>(at), SEEK_DATA);
    if ((data < 0 && errno == ENXIO) || (data >= 0 && static_cast<uint64_t>(data) >= at + len)) {
      out[k] = protocol::ZeroChunkHash(len);
      continue;
    }
    buf.resize(len);
    uint64_t got = 0;
    while (got < len) {
      const ssize_t n = pread(fd, buf.data() + got, len - got, static_cast<off_t>(at + got));
      if (n < 0 && errno == EINTR) continue;
      if (n < 0) {
        return Status::Storage("reading the disk image at " + std::to_string(at + got) + ": " +
                               std::strerror(errno));
      }
      if (n == 0) break;  // the file ends: the rest of the disk reads as zeros
      got += static_cast<uint64_t>(n);
    }
    std::memset(buf.data() + got, 0, len - got);
    out[k] = protocol::DiskChunkHash(buf);
  }
  return Status::Ok();
}

}  // namespace romulus::restore
