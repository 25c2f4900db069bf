#include "replicator/metrics.h"

#include <spdlog/spdlog.h>
#include <unistd.h>

#include <cerrno>
#include <cmath>
#include <cstdio>
#include <cstring>

#include "common/thread_name.h"

namespace romulus::replicator {

namespace {

// Pause bounds in seconds: a Remus pause is normally 0.1 .. 20 ms.
constexpr double kPauseBuckets[] = {0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 1.0};
constexpr size_t kNumPauseBuckets = sizeof kPauseBuckets / sizeof kPauseBuckets[0];

std::string Num(double v) {
  if (std::isfinite(v) && v == std::floor(v) && std::fabs(v) < 1e15) {
    return std::to_string(static_cast<long long>(v));
  }
  char buf[64];
  std::snprintf(buf, sizeof buf, "%.9g", v);
  return buf;
}

// Label values: escape backslash, quote and newline, the only escapes of the
// Prometheus text exposition format. Deliberately not a JSON string: JSON
// would also escape tab, CR and other control characters (\t, \u0001),
// which the exposition parser rejects, and node_exporter then drops the whole
// file. Everything else passes as it is (UTF-8 included).
std::string LabelValue(const std::string& s) {
  std::string out;
  for (char c : s) {
    if (c == '\\' || c == '"') out += '\\';
    if (c == '\n') {
      out += "\\n";
      continue;
    }
    out += c;
  }
  return out;
}

}  // namespace

Result<std::unique_ptr<MetricsTextfile>> MetricsTextfile::Open(const std::string& path, const std::string& guest) {
  if (path.empty()) return Status::InvalidArgument("--metrics-textfile: empty path");
  const std::string tmp = path + ".tmp";
  FILE* f = std::fopen(tmp.c_str(), "w");
  if (!f) return Status::FromErrno("--metrics-textfile: cannot create " + tmp, errno);
  std::fclose(f);
  unlink(tmp.c_str());
  std::unique_ptr<MetricsTextfile> m(new MetricsTextfile());
  m->path_ = path;
  m->guest_label_ = "{guest=\"" + LabelValue(guest) + "\"}";
  m->pause_buckets_.assign(kNumPauseBuckets, 0);
  MetricsTextfile* raw = m.get();
  m->writer_ = std::thread([raw] {
    NameThisThread("metrics");
    std::unique_lock<std::mutex> lock(raw->mu_);
    while (!raw->closed_) {
      raw->cv_.wait_for(lock, std::chrono::seconds(1));
      if (raw->closed_) break;
      lock.unlock();
      {
        std::lock_guard<std::mutex> rl(raw->refresh_mu_);
        if (raw->refresher_) raw->refresher_();
      }
      lock.lock();
      if (!raw->dirty_) continue;
      lock.unlock();
      Status st = raw->WriteNow();
      if (!st.ok()) spdlog::warn("metrics: {}", st.ToString());
      lock.lock();
    }
  });
  return m;
}

MetricsTextfile::~MetricsTextfile() { Close(); }

void MetricsTextfile::SetRefresher(std::function<void()> fn) {
  std::lock_guard<std::mutex> lock(refresh_mu_);
  refresher_ = std::move(fn);
}

void MetricsTextfile::Close() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (closed_) return;
    closed_ = true;
  }
  cv_.notify_all();
  if (writer_.joinable()) writer_.join();
  Status st = WriteNow();
  if (!st.ok()) spdlog::warn("metrics: {}", st.ToString());
}

void MetricsTextfile::Set(const std::string& name, const std::string& type, const std::string& help, double value) {
  std::lock_guard<std::mutex> lock(mu_);
  Metric& m = metrics_[name];
  m.type = type;
  m.help = help;
  m.value = value;
  dirty_ = true;
}

void MetricsTextfile::Add(const std::string& name, const std::string& help, double delta) {
  std::lock_guard<std::mutex> lock(mu_);
  Metric& m = metrics_[name];
  m.type = "counter";
  m.help = help;
  m.value += delta;
  dirty_ = true;
}

void MetricsTextfile::ObservePause(std::chrono::microseconds pause) {
  const double s = pause.count() / 1e6;
  Set("romulus_last_pause_seconds", "gauge", "Guest pause of the last checkpoint.", s);
  std::lock_guard<std::mutex> lock(mu_);
  for (size_t i = 0; i < kNumPauseBuckets; ++i) {
    if (s <= kPauseBuckets[i]) ++pause_buckets_[i];
  }
  ++pause_count_;
  pause_sum_ += s;
}

void MetricsTextfile::OnEpoch(const EpochStats& e, bool output_commits, uint64_t resyncs) {
  Set("romulus_epoch", "gauge", "Last checkpoint epoch taken.", static_cast<double>(e.epoch));
  if (e.acked) {
    Set("romulus_last_acked_epoch", "gauge", "Last epoch the backup acked.", static_cast<double>(e.epoch));
  }
  Set("romulus_protected", "gauge", "1 while a backup holds the latest checkpoint.", e.acked ? 1 : 0);
  Set("romulus_output_committed", "gauge",
      "1 when guest network output is held until the backup acks (sch_plug) and the backup acked.",
      output_commits && e.acked ? 1 : 0);
  Set("romulus_resyncs_total", "counter", "Full resynchronisations after a lost backup.", static_cast<double>(resyncs));
  Add("romulus_epochs_total", "Checkpoints taken.", 1);
  Add("romulus_wire_bytes_total", "Bytes sent to the backup, frame headers included.", static_cast<double>(e.wire_bytes));
  Add("romulus_raw_bytes_total", "Bytes the checkpoints would have taken uncompressed.", static_cast<double>(e.raw_bytes));
  Add("romulus_dirty_pages_total", "Dirty pages checkpointed.", static_cast<double>(e.dirty_pages));
  Add("romulus_cache_hits_total", "Page-cache hits (pages sent as deltas or unchanged).", static_cast<double>(e.cache_hits));
  Add("romulus_cache_misses_total", "Page-cache misses.", static_cast<double>(e.cache_misses));
  Add("romulus_cache_overflows_total", "Deltas too large, sent raw.", static_cast<double>(e.cache_overflows));
  ObservePause(e.pause);
}

void MetricsTextfile::SetLiveState(bool protected_now, bool paused) {
  Set("romulus_protected", "gauge", "1 while a backup holds the latest checkpoint.", protected_now ? 1 : 0);
  Set("romulus_paused", "gauge", "1 while checkpointing is paused by the operator (guest unprotected).",
      paused ? 1 : 0);
}

std::string MetricsTextfile::Render() const {
  std::lock_guard<std::mutex> lock(mu_);
  std::string out;
  for (const auto& [name, m] : metrics_) {
    out += "# HELP " + name + " " + m.help + "\n# TYPE " + name + " " + m.type + "\n";
    out += name + guest_label_ + " " + Num(m.value) + "\n";
  }
  if (pause_count_ > 0) {
    const std::string g = guest_label_.substr(1, guest_label_.size() - 2);  // guest="..."
    out += "# HELP romulus_pause_seconds Guest pause per checkpoint.\n# TYPE romulus_pause_seconds histogram\n";
    for (size_t i = 0; i < kNumPauseBuckets; ++i) {
      out += "romulus_pause_seconds_bucket{" + g + ",le=\"" + Num(kPauseBuckets[i]) + "\"} " +
             std::to_string(pause_buckets_[i]) + "\n";
    }
    out += "romulus_pause_seconds_bucket{" + g + ",le=\"+Inf\"} " + std::to_string(pause_count_) + "\n";
    out += "romulus_pause_seconds_sum" + guest_label_ + " " + Num(pause_sum_) + "\n";
    out += "romulus_pause_seconds_count" + guest_label_ + " " + std::to_string(pause_count_) + "\n";
  }
  return out;
}

Status MetricsTextfile::WriteNow() {
  std::string text = Render();
  {
    std::lock_guard<std::mutex> lock(mu_);
    dirty_ = false;
  }
  const std::string tmp = path_ + ".tmp";
  FILE* f = std::fopen(tmp.c_str(), "w");
  if (!f) return Status::FromErrno("cannot write " + tmp, errno);
  bool ok = std::fwrite(text.data(), 1, text.size(), f) == text.size();
  ok = (std::fclose(f) == 0) && ok;
  if (!ok || std::rename(tmp.c_str(), path_.c_str()) != 0) {
    int err = errno;
    unlink(tmp.c_str());
    return Status::FromErrno("cannot replace " + path_, err);
  }
  return Status::Ok();
}

}  // namespace romulus::replicator
