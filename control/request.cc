#include "control/request.h"

#include "common/units.h"

namespace romulus::control {

namespace {

// Every command, for the message about an unknown one.
constexpr const char kAllCommands[] =
    "status, stats, set interval D, set cache-size S, pause, resume, failover, digest EPOCH [REGIONS], "
    "switchover, set reverse-to HOST:PORT|none, help, wait EVENT [after SEQ] [within D]";

Status Usage(std::string msg) { return Status::InvalidArgument(std::move(msg)); }

// Strict decimal: digits only, no sign, no overflow (at most 19 digits, so
// the accumulation never wraps).
bool ParseDecimal(std::string_view s, uint64_t* out) {
  if (s.empty() || s.size() > 19) return false;
  uint64_t v = 0;
  for (char c : s) {
    if (c < '0' || c > '9') return false;
    v = v * 10 + static_cast<uint64_t>(c - '0');
  }
  *out = v;
  return true;
}

Status WantAlone(const std::vector<std::string>& w) {
  if (w.size() == 1) return Status::Ok();
  return Usage("'" + w[0] + "' takes no argument");
}

Result<Request> ParseSet(const std::vector<std::string>& w) {
  static constexpr char kSetUsage[] =
      "usage: set interval DURATION | set cache-size SIZE | set reverse-to HOST:PORT|none";
  if (w.size() != 3) return Usage(kSetUsage);
  if (w[1] == "interval") {
    auto d = ParseInterval(w[2]);
    if (!d.ok()) return d.status();
    return Request(SetIntervalReq{*d});
  }
  if (w[1] == "cache-size") {
    auto sz = ParseCacheSize(w[2]);
    if (!sz.ok()) return sz.status();
    return Request(SetCacheSizeReq{*sz});
  }
  if (w[1] == "reverse-to") return Request(SetReverseToReq{w[2] == "none" ? std::string() : w[2]});
  return Usage(kSetUsage);
}

Result<Request> ParseDigest(const std::vector<std::string>& w) {
  static constexpr char kDigestUsage[] = "usage: digest EPOCH [REGIONS 1..4096]";
  if (w.size() != 2 && w.size() != 3) return Usage(kDigestUsage);
  DigestReq d;
  uint64_t regions = kDefaultDigestRegions;
  if (!ParseDecimal(w[1], &d.epoch) || d.epoch == 0) return Usage(kDigestUsage);
  if (w.size() == 3 && (!ParseDecimal(w[2], &regions) || regions == 0 || regions > kMaxDigestRegions)) {
    return Usage(kDigestUsage);
  }
  d.regions = static_cast<uint32_t>(regions);
  return Request(d);
}

Result<Request> ParseWait(const std::vector<std::string>& w) {
  static constexpr char kWaitUsage[] = "usage: wait EVENT [after SEQ] [within DURATION] (EVENT: docs/EVENTS.md)";
  if (w.size() < 2 || w.size() % 2 != 0) return Usage(kWaitUsage);
  WaitReq r;
  r.event = w[1];
  if (r.event.size() > 32) return Usage(kWaitUsage);
  for (char c : r.event) {
    if (!((c >= 'a' && c <= 'z') || c == '_')) return Usage(kWaitUsage);
  }
  bool seen_after = false, seen_within = false;
  for (size_t i = 2; i + 1 < w.size(); i += 2) {
    if (w[i] == "after" && !seen_after) {
      seen_after = true;
      if (!ParseDecimal(w[i + 1], &r.after)) return Usage("wait: after: not a sequence number: '" + w[i + 1].substr(0, 20) + "'");
    } else if (w[i] == "within" && !seen_within) {
      seen_within = true;
      auto d = ParseDuration(w[i + 1]);
      if (!d.ok()) return Usage("wait: within: " + d.status().message());
      const auto ms = std::chrono::duration_cast<std::chrono::milliseconds>(*d);
      if (ms.count() < 1 || ms > kMaxWaitWithin) return Usage("wait: within: must be between 1ms and 60m");
      r.within = ms;
    } else {
      return Usage(kWaitUsage);
    }
  }
  return Request(std::move(r));
}

}  // namespace

std::string_view CommandName(const Request& r) {
  struct Namer {
    std::string_view operator()(const StatusReq&) const { return "status"; }
    std::string_view operator()(const StatsReq&) const { return "stats"; }
    std::string_view operator()(const SetIntervalReq&) const { return "set interval"; }
    std::string_view operator()(const SetCacheSizeReq&) const { return "set cache-size"; }
    std::string_view operator()(const PauseReq&) const { return "pause"; }
    std::string_view operator()(const ResumeReq&) const { return "resume"; }
    std::string_view operator()(const FailoverReq&) const { return "failover"; }
    std::string_view operator()(const DigestReq&) const { return "digest"; }
    std::string_view operator()(const SwitchoverReq&) const { return "switchover"; }
    std::string_view operator()(const SetReverseToReq&) const { return "set reverse-to"; }
    std::string_view operator()(const HelpReq&) const { return "help"; }
    std::string_view operator()(const WaitReq&) const { return "wait"; }
  };
  return std::visit(Namer{}, r);
}

Result<std::vector<std::string>> SplitRequestLine(std::string_view line) {
  if (!line.empty() && line.back() == '\n') line.remove_suffix(1);
  if (!line.empty() && line.back() == '\r') line.remove_suffix(1);
  if (line.size() >= kMaxRequestBytes) {
    return Status::OutOfRange("request longer than " + std::to_string(kMaxRequestBytes - 1) + " bytes");
  }
  std::vector<std::string> words;
  std::string cur;
  for (char c : line) {
    const unsigned char u = static_cast<unsigned char>(c);
    if (c == ' ' || c == '\t') {
      if (!cur.empty()) words.push_back(std::move(cur));
      cur.clear();
      continue;
    }
    if (u < 0x21 || u > 0x7e) return Status::InvalidArgument("request has a non-printable byte");
    cur.push_back(c);
  }
  if (!cur.empty()) words.push_back(std::move(cur));
  if (words.empty()) return Status::InvalidArgument("empty request");
  if (words.size() > kMaxRequestWords) return Status::InvalidArgument("too many words in the request");
  return words;
}

Result<Request> ParseRequest(const std::vector<std::string>& w) {
  if (w.empty() || w[0].empty()) return Usage("empty request");
  const std::string& cmd = w[0];
  auto alone = [&](Request r) -> Result<Request> {
    if (Status st = WantAlone(w); !st.ok()) return st;
    return r;
  };
  if (cmd == "status") return alone(StatusReq{});
  if (cmd == "stats") return alone(StatsReq{});
  if (cmd == "pause") return alone(PauseReq{});
  if (cmd == "resume") return alone(ResumeReq{});
  if (cmd == "failover") return alone(FailoverReq{});
  if (cmd == "switchover") return alone(SwitchoverReq{});
  if (cmd == "help") return alone(HelpReq{});
  if (cmd == "set") return ParseSet(w);
  if (cmd == "digest") return ParseDigest(w);
  if (cmd == "wait") return ParseWait(w);
  // The word is echoed back: bound it so that the answer stays one short line.
  std::string shown = cmd.size() > 40 ? cmd.substr(0, 40) + "..." : cmd;
  return Usage("unknown command '" + shown + "' (" + kAllCommands + ")");
}

Result<Request> ParseRequestLine(std::string_view line) {
  auto words = SplitRequestLine(line);
  if (!words.ok()) return Status::InvalidArgument(words.status().message());
  return ParseRequest(*words);
}

Result<std::chrono::microseconds> ParseInterval(std::string_view word) {
  auto d = ParseDuration(word);
  if (!d.ok()) return Usage("set interval: " + d.status().message());
  if (d->count() < 5000 || d->count() > 60000000) return Usage("set interval: must be between 5ms and 60s");
  return *d;
}

Result<uint64_t> ParseCacheSize(std::string_view word) {
  auto sz = ParseSize(word);
  if (!sz.ok()) return Usage("set cache-size: " + sz.status().message());
  if (*sz % 4096 != 0 || *sz > (uint64_t{64} << 30)) {
    return Usage("set cache-size: must be a multiple of 4K, at most 64G");
  }
  return *sz;
}

}  // namespace romulus::control
