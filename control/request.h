// The control socket's requests, typed (docs/CONTROL.md). A request line is
// split into words once (SplitRequestLine) and parsed once (ParseRequest)
// into one of the structs below; every usage mistake is found here, with
// one message per mistake, so that the per-role dispatchers only ever see
// well-formed requests and never re-parse a word.
#pragma once

#include <chrono>
#include <cstdint>
#include <string>
#include <string_view>
#include <variant>
#include <vector>

#include "common/status.h"

namespace romulus::control {

inline constexpr size_t kMaxRequestBytes = 512;  // newline included
inline constexpr size_t kMaxRequestWords = 8;
inline constexpr uint32_t kDefaultDigestRegions = 16;
inline constexpr uint32_t kMaxDigestRegions = 4096;

struct StatusReq {};
struct StatsReq {};
struct SetIntervalReq {
  std::chrono::microseconds interval{0};  // 5ms .. 60s
};
struct SetCacheSizeReq {
  uint64_t bytes = 0;  // a multiple of 4 KiB, at most 64 GiB; 0 disables the cache
};
struct PauseReq {};
struct ResumeReq {};
struct FailoverReq {};
struct DigestReq {
  uint64_t epoch = 0;  // >= 1
  uint32_t regions = kDefaultDigestRegions;  // 1 .. kMaxDigestRegions
};
struct SwitchoverReq {};
struct SetReverseToReq {
  std::string target;  // HOST:PORT as given (checked by the backup), "" for `none`
};
struct HelpReq {};
// `wait EVENT [after SEQ] [within D]`: the first event of that type
// (docs/EVENTS.md) with seq > SEQ (default 0: any since the process
// started), waiting up to D (default 60s, at most 60m) for one to happen.
inline constexpr std::chrono::milliseconds kDefaultWaitWithin{60000};
inline constexpr std::chrono::milliseconds kMaxWaitWithin{3600000};
struct WaitReq {
  std::string event;  // [a-z_]{1,32}
  uint64_t after = 0;
  std::chrono::milliseconds within = kDefaultWaitWithin;
};

using Request = std::variant<StatusReq, StatsReq, SetIntervalReq, SetCacheSizeReq, PauseReq, ResumeReq, FailoverReq,
                             DigestReq, SwitchoverReq, SetReverseToReq, HelpReq, WaitReq>;

// The command as an operator types it: "status", "set interval", "digest"...
std::string_view CommandName(const Request& r);

// Splits a request line (with or without its '\n') into words.
// InvalidArgument/OutOfRange for an empty, over-long or non-printable request
// or one of more than kMaxRequestWords words.
Result<std::vector<std::string>> SplitRequestLine(std::string_view line);

// The typed request, or InvalidArgument with the usage message to answer.
Result<Request> ParseRequest(const std::vector<std::string>& words);

// Line to request in one step (what the server does).
Result<Request> ParseRequestLine(std::string_view line);

// The shared value parsers (also for flags that take the same values).
Result<std::chrono::microseconds> ParseInterval(std::string_view word);  // "set interval: ..." messages
Result<uint64_t> ParseCacheSize(std::string_view word);                  // "set cache-size: ..." messages

}  // namespace romulus::control
