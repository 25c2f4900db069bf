#include "cli/restore_events.h"

#include <chrono>

#include "common/digest.h"

namespace romulus::cli {

namespace {
std::string Escape(const std::string& s) {
  std::string out;
  for (char c : s) {
    if (c == '"' || c == '\\') out += '\\';
    if (static_cast<unsigned char>(c) >= 0x20) out += c;
  }
  return out;
}
long long NowMs() {
  return std::chrono::duration_cast<std::chrono::milliseconds>(
             std::chrono::system_clock::now().time_since_epoch())
      .count();
}
}  // namespace

EventLog::~EventLog() {
  if (f_) std::fclose(f_);
}

bool EventLog::Open(const std::string& path) {
  f_ = std::fopen(path.c_str(), "w");
  return f_ != nullptr;
}

void EventLog::Line(const std::string& json) {
  if (!f_) return;
  std::fprintf(f_, "%s\n", json.c_str());
  std::fflush(f_);
}

void EventLog::Commit(uint64_t epoch, uint64_t digest) {
  if (!f_) return;
  Line("{\"event\":\"commit\",\"epoch\":" + std::to_string(epoch) + ",\"digest\":\"" + DigestHex(digest) +
       "\",\"time_ms\":" + std::to_string(NowMs()) + "}");
}

void EventLog::Failover(const std::string& reason, uint64_t epoch, uint64_t digest, bool activated) {
  Line("{\"event\":\"failover\",\"reason\":\"" + Escape(reason) + "\",\"last_committed_epoch\":" +
       std::to_string(epoch) + ",\"digest\":\"" + DigestHex(digest) + "\",\"activated\":" +
       (activated ? "true" : "false") + ",\"time_ms\":" + std::to_string(NowMs()) + "}");
}

void EventLog::Stop(uint64_t epoch, uint64_t digest) {
  Line("{\"event\":\"stop\",\"last_committed_epoch\":" + std::to_string(epoch) + ",\"digest\":\"" +
       DigestHex(digest) + "\",\"time_ms\":" + std::to_string(NowMs()) + "}");
}

}  // namespace romulus::cli
