// romulus bench e2e: the whole engine on one machine — a simulated guest,
// EpochLoop + CheckpointSender, a socket, CheckpointReceiver + ImageSink —
// measured at fixed checkpoint intervals. Prints, per interval: sustained
// epochs/s against the target, the guest's pause against a plain memcpy of
// the same dirty pages, wire bytes per dirty page, the backup's
// reallocations after the first epoch, and peak RSS against the buffers the
// design accounts for. Figures, not pass/fail: see docs/benchmarks.md.
#include <spdlog/spdlog.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cstring>
#include <iostream>
#include <thread>
#include <utility>
#include <vector>

#include "cli/commands.h"
#include "cli/options.h"
#include "common/thread_name.h"
#include "common/units.h"
#include "compress/page.h"
#include "replicator/primary_controller.h"
#include "replicator/timer_driver.h"
#include "restore/checkpoint_receiver.h"
#include "sim/image_sink.h"
#include "sim/sim_guest.h"
#include "sim/sim_spec.h"
#include "transport/fd_stream.h"

namespace romulus::cli {

namespace {

using Clock = std::chrono::steady_clock;
using std::chrono::microseconds;

struct RunResult {
  double interval_ms = 0;
  double epochs_per_s = 0, target_per_s = 0;
  double pause_mean_us = 0, pause_p50_us = 0, pause_p99_us = 0, copy_mean_us = 0, memcpy_mean_us = 0;
  double dirty_mean = 0, wire_per_page = 0;
  uint64_t epochs = 0, backup_reallocs = 0;
  double peak_rss_mib = 0, accounted_mib = 0;
};

double Percentile(std::vector<double> v, double p) {
  if (v.empty()) return 0;
  std::sort(v.begin(), v.end());
  return v[std::min(v.size() - 1, static_cast<size_t>(p * v.size()))];
}

// Time to memcpy the given pages into a staging buffer: the floor any pause
// that copies the dirty set must pay.
double MemcpyMicros(const uint8_t* mem, const std::vector<uint64_t>& pfns, std::vector<uint8_t>* dst) {
  if (pfns.empty()) return 0;
  dst->resize(pfns.size() * 4096);
  auto t0 = Clock::now();
  for (size_t i = 0; i < pfns.size(); ++i) std::memcpy(dst->data() + i * 4096, mem + pfns[i] * 4096, 4096);
  return std::chrono::duration<double, std::micro>(Clock::now() - t0).count();
}

// Pages like the ones an epoch copies: the first n pages the workload has
// written (non-zero), spread over the guest like the real dirty set.
std::vector<uint64_t> WrittenPages(const uint8_t* mem, uint64_t guest_pages, uint64_t n) {
  std::vector<uint64_t> out;
  for (uint64_t pfn = 0; pfn < guest_pages && out.size() < n; ++pfn) {
    if (!compress::IsZeroPage(mem + pfn * 4096)) out.push_back(pfn);
  }
  return out;
}

// The two ends of the in-process link between the primary and the backup.
using StreamPair = std::pair<std::unique_ptr<transport::Stream>, std::unique_ptr<transport::Stream>>;
Result<StreamPair> MakeStreamPair() {
  int sv[2];
  if (socketpair(AF_UNIX, SOCK_STREAM, 0, sv) != 0) return Status::FromErrno("socketpair", errno);
  auto a = transport::OpenFdStream(sv[0], sv[0], "primary", true);
  auto b = transport::OpenFdStream(sv[1], sv[1], "backup", true);
  if (!a.ok() || !b.ok()) return Status::IoError("fd streams");
  return StreamPair(std::move(*a), std::move(*b));
}

Result<RunResult> RunOnce(const sim::SimSpec& spec, microseconds interval, microseconds measure, uint64_t cache_pages) {
  auto guest = sim::SimGuest::Create(spec);
  if (!guest.ok()) return guest.status();
  sim::ImageSinkOptions so;
  so.run_activated = false;
  auto sink = sim::ImageSink::Open(so);
  if (!sink.ok()) return sink.status();
  auto pair = MakeStreamPair();
  if (!pair.ok()) return pair.status();
  // Named variables, not a structured binding: clang 14 cannot capture one in a lambda.
  std::unique_ptr<transport::Stream> a = std::move(pair->first);
  std::unique_ptr<transport::Stream> b = std::move(pair->second);
  restore::CheckpointReceiver receiver(restore::ReceiverOptions{});
  restore::SessionEnd end;
  std::thread backup([&] {
    NameThisThread("bench-backup");
    end = receiver.Serve(*b, **sink, nullptr);
  });

  replicator::SenderOptions sopt;
  sopt.codec.cache_pages = cache_pages;
  replicator::ControllerOptions lopt;
  lopt.interval = interval;
  lopt.ack_timeout = std::chrono::seconds(30);
  std::vector<double> pauses, copies, dirty;
  uint64_t wire = 0, pages = 0;
  Clock::time_point measure_start{};
  std::atomic<bool> stop{false};
  lopt.on_epoch = [&](const replicator::EpochStats& e) {
    if (!e.acked) return;
    if (measure_start == Clock::time_point{}) {  // the first epoch is the full sync
      measure_start = Clock::now();
      return;
    }
    pauses.push_back(e.pause.count());
    copies.push_back((e.pause - e.suspend).count());
    dirty.push_back(e.dirty_pages);
    wire += e.wire_bytes;
    pages += e.dirty_pages;
    if (Clock::now() - measure_start >= measure) stop.store(true);
  };
  std::unique_ptr<transport::Stream> primary_end = std::move(a);
  auto connect = [&]() -> Result<std::unique_ptr<transport::Stream>> {
    if (!primary_end) {
      stop.store(true);
      return Status::Closed("benchmark: one connection only");
    }
    return std::move(primary_end);
  };
  replicator::NoOutputCommit output;
  ROMULUS_RETURN_IF_ERROR((*guest)->Start());
  replicator::PrimaryController loop(replicator::MakeTimerDriver(**guest), output, connect, sopt, lopt, nullptr);
  Status st = loop.Run(stop);
  auto elapsed = Clock::now() - measure_start;
  (*guest)->Stop();
  backup.join();
  ROMULUS_RETURN_IF_ERROR(st);

  RunResult r;
  r.interval_ms = interval.count() / 1e3;
  r.epochs = pauses.size();
  r.epochs_per_s = r.epochs / std::chrono::duration<double>(elapsed).count();
  r.target_per_s = 1e6 / interval.count();
  for (double p : pauses) r.pause_mean_us += p / pauses.size();
  for (double c : copies) r.copy_mean_us += c / copies.size();
  r.pause_p50_us = Percentile(pauses, 0.5);
  r.pause_p99_us = Percentile(pauses, 0.99);
  for (double d : dirty) r.dirty_mean += d / dirty.size();
  r.wire_per_page = pages ? static_cast<double>(wire) / pages : 0;
  std::vector<uint8_t> scratch;
  // The pause copies pages the guest wrote a few bytes of, so most of each
  // page comes from DRAM; a baseline repeated on the same pages would run
  // from the CPU cache instead. Evict the caches before every sample.
  std::vector<uint8_t> evict(size_t{256} << 20);
  const auto sample = WrittenPages((*guest)->memory(), spec.pages(), static_cast<uint64_t>(r.dirty_mean));
  double memcpy_sum = 0;
  const int kSamples = 10;
  for (int i = 0; i < kSamples; ++i) {
    std::memset(evict.data(), i, evict.size());
    memcpy_sum += MemcpyMicros((*guest)->memory(), sample, &scratch);
  }
  r.memcpy_mean_us = memcpy_sum / kSamples;
  r.backup_reallocs = end.receive_reallocations;
  rusage ru{};
  getrusage(RUSAGE_SELF, &ru);
  r.peak_rss_mib = ru.ru_maxrss / 1024.0;
  // What the design accounts for, both sides in this one process: the guest
  // (as far as touched), the backup image, two caches, the outbuf, receive
  // buffers and staging of one epoch.
  r.accounted_mib = (2.0 * cache_pages * 4096 + sopt.outbuf_bytes + 8.0 * (1 << 20) +
                     2 * r.dirty_mean * 4096) / (1 << 20);
  return r;
}

// ---- First synchronisation per guest size (docs/benchmarks.md) ----

struct FirstSyncResult {
  uint64_t guest_bytes = 0, nonzero_bytes = 0, wire_bytes = 0;
  double streamed_s = 0;   // connect to the last page of the full sync written
  double protected_s = 0;  // connect to the first epoch's ack: PROTECTED
};

// Removes the image and the files the sink keeps next to it.
void RemoveImageFiles(const std::string& path) {
  for (const char* suffix : {"", ".state", ".state.tmp", ".journal", ".lock"}) ::unlink((path + suffix).c_str());
}

// One full sync of a fresh guest of spec.size_bytes into a fresh image file
// under `dir`, the whole engine in this process over a socketpair: the time
// to PROTECTED is what an operator waits for after `replicate` starts.
Result<FirstSyncResult> RunFirstSync(const sim::SimSpec& spec, const std::string& dir, uint64_t cache_pages) {
  auto guest = sim::SimGuest::Create(spec);
  if (!guest.ok()) return guest.status();
  sim::ImageSinkOptions so;
  so.path = dir + "/romulus-bench-first-sync-" + std::to_string(::getpid()) + ".img";
  so.start_over = true;
  so.run_activated = false;
  RemoveImageFiles(so.path);
  auto sink = sim::ImageSink::Open(so);
  if (!sink.ok()) return sink.status().With("opening the bench image " + so.path);
  auto pair = MakeStreamPair();
  if (!pair.ok()) return pair.status();
  // Named variables, not a structured binding: clang 14 cannot capture one in a lambda.
  std::unique_ptr<transport::Stream> a = std::move(pair->first);
  std::unique_ptr<transport::Stream> b = std::move(pair->second);
  restore::CheckpointReceiver receiver(restore::ReceiverOptions{});
  std::thread backup([&] {
    NameThisThread("bench-backup");
    (void)receiver.Serve(*b, **sink, nullptr);
  });

  replicator::SenderOptions sopt;
  sopt.codec.cache_pages = cache_pages;
  replicator::ControllerOptions lopt;
  lopt.max_epochs = 1;  // the full sync and its checkpoint
  Clock::time_point t0{}, streamed{}, acked{};
  FirstSyncResult r;
  lopt.phase_hook = [&](replicator::Phase p, uint64_t) {
    if (p == replicator::Phase::kBeforeSuspend && streamed == Clock::time_point{}) streamed = Clock::now();
  };
  lopt.on_epoch = [&](const replicator::EpochStats& e) {
    if (!e.acked) return;
    acked = Clock::now();
    r.wire_bytes = e.wire_bytes;
    uint64_t sent = 0;  // the full sync, then the paused part's pages again
    for (uint64_t n : e.pages_by_kind) sent += n;
    r.nonzero_bytes = (sent - e.pages_by_kind[static_cast<int>(compress::PageKind::kZero)]) * 4096;
  };
  std::unique_ptr<transport::Stream> primary_end = std::move(a);
  std::atomic<bool> stop{false};
  auto connect = [&]() -> Result<std::unique_ptr<transport::Stream>> {
    if (!primary_end) {
      stop.store(true);
      return Status::Closed("benchmark: one connection only");
    }
    t0 = Clock::now();
    return std::move(primary_end);
  };
  replicator::NoOutputCommit output;
  ROMULUS_RETURN_IF_ERROR((*guest)->Start());
  replicator::PrimaryController loop(replicator::MakeTimerDriver(**guest), output, connect, sopt, lopt, nullptr);
  Status st = loop.Run(stop);
  (*guest)->Stop();
  backup.join();
  sink->reset();
  RemoveImageFiles(so.path);
  ROMULUS_RETURN_IF_ERROR(st);
  if (acked == Clock::time_point{}) return Status::Closed("the first epoch was not acked");
  r.guest_bytes = spec.size_bytes;
  r.streamed_s = std::chrono::duration<double>(streamed - t0).count();
  r.protected_s = std::chrono::duration<double>(acked - t0).count();
  return r;
}

// --first-sync 1G,4G,16G: the guest spec's size replaced by each of these.
int RunFirstSyncSizes(const sim::SimSpec& base, const std::string& sizes, const std::string& dir, uint64_t cache,
                      bool json) {
  const char kCmd[] = "bench e2e";
  std::vector<uint64_t> list;
  for (size_t pos = 0; pos <= sizes.size();) {
    size_t comma = sizes.find(',', pos);
    if (comma == std::string::npos) comma = sizes.size();
    auto n = ParseSize(sizes.substr(pos, comma - pos));
    sim::SimSpec spec = base;
    if (n.ok()) spec.size_bytes = *n;
    Status valid = n.ok() ? spec.Validate() : n.status();
    if (!valid.ok()) {
      UsageError(kCmd, "--first-sync: '" + sizes.substr(pos, comma - pos) + "': " + valid.message());
      return kExitUsage;
    }
    list.push_back(*n);
    pos = comma + 1;
  }
  if (!json) {
    std::printf("romulus bench e2e --first-sync: %s, image files in %s\n", base.ToString().c_str(), dir.c_str());
    std::printf("%8s %10s %10s %10s %12s %12s %12s\n", "guest", "non-zero", "wire", "streamed", "PROTECTED",
                "guest rate", "data rate");
  }
  for (uint64_t size : list) {
    sim::SimSpec spec = base;
    spec.size_bytes = size;
    auto r = RunFirstSync(spec, dir, cache / 4096);
    if (!r.ok()) {
      spdlog::error("bench e2e --first-sync {}: {}", FormatSize(size), r.status().ToString());
      return kExitFailure;
    }
    const double guest_rate = r->guest_bytes / r->protected_s / 1e6;
    const double data_rate = r->nonzero_bytes / r->protected_s / 1e6;
    if (json) {
      std::printf("{\"guest_bytes\":%llu,\"nonzero_bytes\":%llu,\"wire_bytes\":%llu,\"streamed_s\":%.2f,"
                  "\"protected_s\":%.2f,\"guest_mb_per_s\":%.0f,\"data_mb_per_s\":%.0f}\n",
                  static_cast<unsigned long long>(r->guest_bytes), static_cast<unsigned long long>(r->nonzero_bytes),
                  static_cast<unsigned long long>(r->wire_bytes), r->streamed_s, r->protected_s, guest_rate, data_rate);
    } else {
      std::printf("%8s %10s %10s %9.2fs %11.2fs %7.0f MB/s %7.0f MB/s\n", FormatSize(r->guest_bytes).c_str(),
                  FormatSize(r->nonzero_bytes).c_str(), FormatSize(r->wire_bytes).c_str(), r->streamed_s,
                  r->protected_s, guest_rate, data_rate);
    }
    std::fflush(stdout);
  }
  if (!json) {
    std::printf("streamed = connect to the full sync's last page written; PROTECTED = connect to the backup's ack\n"
                "of the first epoch (its commit included); rates = bytes / PROTECTED time.\n");
  }
  return kExitOk;
}

}  // namespace

int RunBenchE2e(int argc, char** argv) {
  const char kCmd[] = "bench e2e";
  po::options_description desc("Options");
  desc.add_options()
      ("guest", po::value<std::string>()->default_value("sim:size=1G,workload=seed"), "simulated guest")
      ("intervals", po::value<std::string>()->default_value("25ms,10ms"), "comma-separated checkpoint intervals")
      ("measure", po::value<std::string>()->default_value("5s"), "measured time per interval (after the full sync)")
      ("cache-size", po::value<std::string>()->default_value("64M"), "page cache")
      ("json", po::bool_switch(), "one JSON object per interval")
      ("first-sync", po::value<std::string>(),
       "instead: time the first synchronisation to PROTECTED for each guest size, e.g. 1G,4G,16G")
      ("image-dir", po::value<std::string>()->default_value("/tmp"),
       "with --first-sync: where the backup's image file is written (and removed)");
  int code = 0;
  auto vm = ParseOptions(kCmd, "[--guest SPEC] [--intervals 25ms,10ms] [--measure 5s] [--json] [--first-sync 1G,4G,16G]",
                         desc, argc, argv, &code);
  if (!vm) return code;
  auto spec = sim::ParseSimSpec((*vm)["guest"].as<std::string>());
  if (!spec.ok()) {
    UsageError(kCmd, "--guest: " + spec.status().message());
    return kExitUsage;
  }
  microseconds measure{};
  uint64_t cache = 0;
  if (!GetDuration(kCmd, *vm, "measure", &measure) || !GetSize(kCmd, *vm, "cache-size", &cache) ||
      !CheckRange(kCmd, "measure", static_cast<double>(measure.count()), 100e3, 3600e6, "100ms", "1h") ||
      !CheckRange(kCmd, "cache-size", static_cast<double>(cache), 0, 64.0 * (1ull << 30), "0", "64G")) {
    return kExitUsage;
  }
  if (cache % 4096 != 0) {
    UsageError(kCmd, "--cache-size: must be a multiple of 4K");
    return kExitUsage;
  }
  std::vector<microseconds> intervals;
  std::string list = (*vm)["intervals"].as<std::string>();
  for (size_t pos = 0; pos <= list.size();) {
    size_t comma = list.find(',', pos);
    if (comma == std::string::npos) comma = list.size();
    auto d = ParseDuration(list.substr(pos, comma - pos));
    if (!d.ok() || d->count() < 1000 || d->count() > 60000000) {
      UsageError(kCmd, "--intervals: '" + list.substr(pos, comma - pos) + "' is not a duration from 1ms to 60s");
      return kExitUsage;
    }
    intervals.push_back(*d);
    pos = comma + 1;
  }
  spdlog::set_level(spdlog::level::warn);
  const bool json = (*vm)["json"].as<bool>();
  if (vm->count("first-sync")) {
    return RunFirstSyncSizes(*spec, (*vm)["first-sync"].as<std::string>(), (*vm)["image-dir"].as<std::string>(),
                             cache, json);
  }
  if (!json) {
    std::printf("romulus bench e2e: %s, cache %s, %s measured per interval\n", spec->ToString().c_str(),
                FormatSize(cache).c_str(), FormatDuration(measure).c_str());
    std::printf("%9s %9s %8s %10s %10s %10s %10s %8s %9s %10s %9s %12s\n", "interval", "epochs/s", "target",
                "dirty/ep", "pause", "pause p99", "copy", "memcpy", "pause/cp", "B/page", "reallocs", "peak RSS");
  }
  for (auto interval : intervals) {
    auto r = RunOnce(*spec, interval, measure, cache / 4096);
    if (!r.ok()) {
      spdlog::error("bench e2e at {}: {}", FormatDuration(interval), r.status().ToString());
      return kExitFailure;
    }
    const double ratio = r->memcpy_mean_us > 0 ? r->pause_mean_us / r->memcpy_mean_us : 0;
    if (json) {
      std::printf("{\"interval_ms\":%.1f,\"epochs\":%llu,\"epochs_per_s\":%.2f,\"target_per_s\":%.2f,"
                  "\"dirty_pages_mean\":%.0f,\"pause_mean_us\":%.0f,\"pause_p50_us\":%.0f,\"pause_p99_us\":%.0f,"
                  "\"copy_mean_us\":%.0f,\"memcpy_mean_us\":%.0f,\"pause_over_memcpy\":%.2f,"
                  "\"wire_bytes_per_page\":%.2f,\"backup_reallocations\":%llu,\"peak_rss_mib\":%.0f,"
                  "\"accounted_mib\":%.0f}\n",
                  r->interval_ms, static_cast<unsigned long long>(r->epochs), r->epochs_per_s, r->target_per_s,
                  r->dirty_mean, r->pause_mean_us, r->pause_p50_us, r->pause_p99_us, r->copy_mean_us,
                  r->memcpy_mean_us, ratio, r->wire_per_page, static_cast<unsigned long long>(r->backup_reallocs),
                  r->peak_rss_mib, r->accounted_mib);
    } else {
      std::printf("%7.1fms %9.1f %8.1f %10.0f %8.2fms %8.2fms %8.2fms %6.2fms %8.2fx %10.2f %9llu %8.0f MiB\n",
                  r->interval_ms, r->epochs_per_s, r->target_per_s, r->dirty_mean, r->pause_mean_us / 1e3,
                  r->pause_p99_us / 1e3, r->copy_mean_us / 1e3, r->memcpy_mean_us / 1e3, ratio,
                  r->wire_per_page, static_cast<unsigned long long>(r->backup_reallocs), r->peak_rss_mib);
    }
    std::fflush(stdout);
  }
  if (!json) {
    std::printf("pause = suspend wait + dirty-log harvest + copy + resume; copy = pause without the suspend wait;\n"
                "memcpy = copying the same number of pages, nothing else (the floor). reallocs = backup receive\n"
                "buffer growths after the first epoch (goal 0).\n");
  }
  return kExitOk;
}

}  // namespace romulus::cli
