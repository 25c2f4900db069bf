#include "common/thread_name.h"

#include <pthread.h>

#include <algorithm>
#include <cstring>

namespace romulus {

namespace {
constexpr size_t kMaxThreadName = 15;  // TASK_COMM_LEN - 1
}  // namespace

void NameThisThread(std::string_view name) {
  char buf[kMaxThreadName + 1] = {};
  const size_t n = std::min(name.size(), kMaxThreadName);
  std::memcpy(buf, name.data(), n);
  (void)pthread_setname_np(pthread_self(), buf);
}

std::string ThisThreadName() {
  char buf[kMaxThreadName + 1] = {};
  if (pthread_getname_np(pthread_self(), buf, sizeof buf) != 0) return "";
  return buf;
}

}  // namespace romulus
