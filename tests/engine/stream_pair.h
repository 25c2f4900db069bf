// A connected pair of transport streams over a UNIX socketpair: the engine's
// primary and backup talk through it in-process, without TCP.
#pragma once

#include <gtest/gtest.h>
#include <sys/socket.h>

#include <memory>

#include "transport/fd_stream.h"
#include "transport/stream.h"

namespace romulus::test_engine {

struct StreamPair {
  std::unique_ptr<transport::Stream> primary, backup;
};

inline StreamPair MakeStreamPair() {
  int sv[2];
  EXPECT_EQ(socketpair(AF_UNIX, SOCK_STREAM, 0, sv), 0);
  auto a = transport::OpenFdStream(sv[0], sv[0], "primary-end", true);
  auto b = transport::OpenFdStream(sv[1], sv[1], "backup-end", true);
  EXPECT_TRUE(a.ok() && b.ok());
  return {std::move(*a), std::move(*b)};
}

}  // namespace romulus::test_engine
