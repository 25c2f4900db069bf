// IovecCursor (transport/iovec_cursor.h): what is left of a gathered write
// after each partial send, checked against the bytes a socket pair really
// carried.
#include "transport/iovec_cursor.h"

#include <gtest/gtest.h>
#include <sys/socket.h>
#include <unistd.h>

#include <numeric>
#include <random>
#include <vector>

namespace romulus::transport {
namespace {

std::vector<uint8_t> Left(IovecCursor<4>& c) {
  std::vector<uint8_t> out;
  msghdr m = c.Message();
  for (size_t i = 0; i < m.msg_iovlen; ++i) {
    const auto* b = static_cast<const uint8_t*>(m.msg_iov[i].iov_base);
    out.insert(out.end(), b, b + m.msg_iov[i].iov_len);
  }
  return out;
}

TEST(IovecCursor, EmptyPartsAreSkippedAndTooManyRefused) {
  const std::vector<uint8_t> a{1, 2}, empty, b{3};
  const std::span<const uint8_t> parts[] = {a, empty, b, empty};
  IovecCursor<4> c;
  ASSERT_TRUE(c.Init(parts));
  EXPECT_EQ(c.Message().msg_iovlen, 2u);
  EXPECT_EQ(Left(c), (std::vector<uint8_t>{1, 2, 3}));
  const std::span<const uint8_t> five[] = {a, a, a, a, b};
  EXPECT_FALSE(c.Init(five));
  EXPECT_TRUE(c.done()) << "a refused Init leaves nothing to send";
  const std::span<const uint8_t> none[] = {empty};
  ASSERT_TRUE(c.Init(none));
  EXPECT_TRUE(c.done());
}

TEST(IovecCursor, EveryPartialSendLeavesExactlyTheRest) {
  std::vector<uint8_t> a(5), b(1), c3(7);
  std::iota(a.begin(), a.end(), 0);
  std::iota(b.begin(), b.end(), 10);
  std::iota(c3.begin(), c3.end(), 20);
  std::vector<uint8_t> all(a);
  all.insert(all.end(), b.begin(), b.end());
  all.insert(all.end(), c3.begin(), c3.end());
  const std::span<const uint8_t> parts[] = {a, b, c3};
  // Every way of cutting the 13 bytes into two sends, and one send per byte.
  for (size_t first = 0; first <= all.size(); ++first) {
    IovecCursor<4> cur;
    ASSERT_TRUE(cur.Init(parts));
    cur.Advance(first);
    EXPECT_EQ(Left(cur), std::vector<uint8_t>(all.begin() + first, all.end())) << first;
    EXPECT_EQ(cur.done(), first == all.size());
  }
  IovecCursor<4> cur;
  ASSERT_TRUE(cur.Init(parts));
  for (size_t i = 0; i < all.size(); ++i) {
    EXPECT_EQ(Left(cur).front(), all[i]);
    cur.Advance(1);
  }
  EXPECT_TRUE(cur.done());
}

TEST(IovecCursor, ASocketCarriesTheWholeWriteInOrder) {
  int sv[2];
  ASSERT_EQ(::socketpair(AF_UNIX, SOCK_STREAM, 0, sv), 0);
  int small = 4096;
  ASSERT_EQ(::setsockopt(sv[0], SOL_SOCKET, SO_SNDBUF, &small, sizeof small), 0);
  std::mt19937 rng(5);
  std::vector<std::vector<uint8_t>> bufs;
  for (size_t n : {100000u, 3u, 70001u, 1u}) {
    bufs.emplace_back(n);
    for (auto& x : bufs.back()) x = static_cast<uint8_t>(rng());
  }
  const std::span<const uint8_t> parts[] = {bufs[0], bufs[1], bufs[2], bufs[3]};
  std::vector<uint8_t> want;
  for (const auto& b : bufs) want.insert(want.end(), b.begin(), b.end());
  std::vector<uint8_t> got;
  IovecCursor<4> cur;
  ASSERT_TRUE(cur.Init(parts));
  size_t sends = 0;
  while (!cur.done()) {
    msghdr m = cur.Message();
    const ssize_t w = ::sendmsg(sv[0], &m, MSG_DONTWAIT | MSG_NOSIGNAL);
    if (w > 0) {
      cur.Advance(static_cast<size_t>(w));
      ++sends;
    }
    uint8_t buf[8192];
    const ssize_t r = ::recv(sv[1], buf, sizeof buf, MSG_DONTWAIT);
    if (r > 0) got.insert(got.end(), buf, buf + r);
  }
  ::shutdown(sv[0], SHUT_WR);
  for (;;) {
    uint8_t buf[8192];
    const ssize_t r = ::recv(sv[1], buf, sizeof buf, 0);
    if (r <= 0) break;
    got.insert(got.end(), buf, buf + r);
  }
  ::close(sv[0]);
  ::close(sv[1]);
  EXPECT_GT(sends, 1u) << "the socket buffer should have forced partial sends";
  EXPECT_EQ(got, want);
}

}  // namespace
}  // namespace romulus::transport
