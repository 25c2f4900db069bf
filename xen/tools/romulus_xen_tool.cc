// romulus-xen: the Xen driver on its own, for the lab and for fixtures.
//
//   romulus-xen probe
//   romulus-xen record-stream --domain D --out FILE [--checkpoints N] [--interval MS]
//   romulus-xen verify-stream FILE             (tap -> split -> assemble == FILE)
//   romulus-xen cut-fixture IN OUT             (a small real-record subset of IN)
//   romulus-xen dm-pause --domain D [--count N] (an HVM guest's device model
//                                               through N checkpoint pauses)
//
// dm-pause drives devicemodel::DeviceModelPause against the device model
// libxl started for an HVM guest (qemu-xen, its QMP socket, libxl's lock):
// per round the domain is paused (the stand-in for the suspend), the device
// model stopped and its state saved into a memfd, then continued and the
// domain unpaused; each round's times and the state's size are printed.
// QEMU's dirty log is switched on before and off after, as libxenguest's
// switch_qemu_logdirty callback will. docs/DEVICE-MODEL.md; the lab's
// hvm-device-model scenario runs it.
//
// record-stream runs the Xen checkpoint driver (xen/xen_driver.cc) under a
// minimal EpochSession of its own — every epoch "acked" at once, the split
// stream rebuilt in process — instead of the PrimaryController: it records
// libxenguest's raw stream and proves the tap/split/rebuild path on a real
// domain without a backup.
#include <signal.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <functional>
#include <iterator>
#include <string>
#include <thread>
#include <vector>

#include "devicemodel/checkpoint_pause.h"
#include "xen/stream_split.h"
#include "xen/stream_v2.h"
#include "replicator/checkpoint_driver.h"
#include "xen/xen_env.h"
#include "xen/xen_facade.h"

using namespace romulus;
using namespace romulus::xen;
using Clock = std::chrono::steady_clock;

namespace {

std::atomic<bool> g_stop{false};

std::string Arg(int argc, char** argv, const char* name, const char* def = "") {
  for (int i = 2; i + 1 < argc; i++)
    if (strcmp(argv[i], name) == 0) return argv[i + 1];
  return def;
}

int Fail(const Status& s) {
  fprintf(stderr, "romulus-xen: %s\n", s.ToString().c_str());
  return 1;
}

Result<std::vector<uint8_t>> ReadFile(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  if (!f) return Status::IoError("cannot open " + path);
  return std::vector<uint8_t>(std::istreambuf_iterator<char>(f), {});
}

// tap -> split -> assemble, compared with the input.
Status Verify(const std::vector<uint8_t>& in, std::string* report) {
  std::vector<uint8_t> out;
  StreamAssembler asmb([&](std::span<const uint8_t> b) {
    out.insert(out.end(), b.begin(), b.end());
    return Status::Ok();
  });
  struct Bridge : EpochSink {
    StreamAssembler* a;
    uint64_t pages = 0, states = 0, epochs = 0;
    Status BeginEpoch(uint64_t) override { return Status::Ok(); }
    Status AddState(std::span<const uint8_t> b) override { states++; return a->OnState(b); }
    Status AddPage(uint64_t pfn, const uint8_t* p) override { pages++; return a->OnPage(pfn, p); }
    Status EndEpoch(uint64_t) override { epochs++; return a->Commit(); }
  } bridge;
  bridge.a = &asmb;
  StreamSplitter split(&bridge);
  StreamParser parser(&split);
  ROMULUS_RETURN_IF_ERROR(parser.Feed(in));
  // A REMUS stream may end anywhere after its last CHECKPOINT (the saver
  // was stopped); compare up to what was rebuilt.
  if (out.size() > in.size() || memcmp(out.data(), in.data(), out.size()) != 0) {
    size_t d = 0;
    while (d < out.size() && d < in.size() && out[d] == in[d]) d++;
    char msg[512];
    snprintf(msg, sizeof msg,
             "rebuilt stream differs from the input: input %zu bytes, rebuilt %zu, first difference at "
             "byte %zu (input %02x rebuilt %02x); parser consumed %llu bytes, %llu records, %llu checkpoints",
             in.size(), out.size(), d, d < in.size() ? in[d] : 0, d < out.size() ? out[d] : 0,
             (unsigned long long)parser.stats().bytes, (unsigned long long)parser.stats().records,
             (unsigned long long)parser.stats().checkpoints);
    return Status::Corruption(msg);
  }
  const auto& st = parser.stats();
  char buf[256];
  snprintf(buf, sizeof buf,
           "bytes=%zu rebuilt=%zu checkpoints=%llu records=%llu page_records=%llu pages=%llu pfns=%llu "
           "version=%u xen=%u.%u",
           in.size(), out.size(), (unsigned long long)st.checkpoints, (unsigned long long)st.records,
           (unsigned long long)st.page_data_records, (unsigned long long)st.pages,
           (unsigned long long)st.pfns, parser.version(), parser.xen_major(), parser.xen_minor());
  *report = buf;
  if (st.checkpoints == 0) return Status::Corruption("no CHECKPOINT record in the stream");
  return Status::Ok();
}

// Appends the PAGE_DATA record at `off` cut to its first kFixturePfns pfn
// words (count and length rewritten, the kept pfn words and page bytes are
// the real ones).
constexpr uint32_t kFixturePfns = 8;
void AppendTruncatedPageData(const std::vector<uint8_t>& in, size_t off, std::vector<uint8_t>* out) {
  uint32_t count = LoadLE32(&in[off + 8]);
  uint32_t keep = std::min(count, kFixturePfns);
  const uint8_t* words = &in[off + 16];
  const uint8_t* data = words + 8ull * count;
  size_t data_keep = 0;
  for (uint32_t i = 0; i < keep; i++) data_keep += PageTypeHasData(uint32_t(LoadLE64(words + 8ull * i) >> 60));
  uint8_t h[16];
  StoreLE32(h, kRecPageData);
  StoreLE32(h + 4, uint32_t(kPageDataHeaderSize + 8ull * keep + kXenPageSize * data_keep));
  StoreLE32(h + 8, keep);
  memcpy(h + 12, &in[off + 12], 4);
  out->insert(out->end(), h, h + 16);
  out->insert(out->end(), words, words + 8ull * keep);
  out->insert(out->end(), data, data + kXenPageSize * data_keep);
}

// Keeps, byte for byte: the headers, every non-page record and CHECKPOINT;
// and per epoch the PAGE_DATA record carrying the fewest pages, cut to its
// first few pfns, so the fixture stays small (tens of KiB).
Status CutFixture(const std::vector<uint8_t>& in, std::vector<uint8_t>* out) {
  size_t off = kImageHeaderSize + kDomainHeaderSize;
  if (in.size() < off) return Status::Corruption("too short");
  out->assign(in.begin(), in.begin() + off);
  std::vector<uint8_t> epoch_nonpage;
  size_t best_off = 0, best_pages = SIZE_MAX;
  while (off + kRecordHeaderSize <= in.size()) {
    uint32_t type = LoadLE32(&in[off]);
    uint32_t len = LoadLE32(&in[off + 4]);
    size_t total = kRecordHeaderSize + len + ((8 - (len & 7)) & 7);
    if (off + total > in.size()) break;
    if (type == kRecPageData) {
      size_t pages = (len - kPageDataHeaderSize - 8ull * LoadLE32(&in[off + 8])) / kXenPageSize;
      if (pages < best_pages) best_off = off, best_pages = pages;
    } else if (type == kRecCheckpoint) {
      if (best_pages != SIZE_MAX) AppendTruncatedPageData(in, best_off, out);
      out->insert(out->end(), epoch_nonpage.begin(), epoch_nonpage.end());
      out->insert(out->end(), in.begin() + off, in.begin() + off + total);
      epoch_nonpage.clear();
      best_pages = SIZE_MAX;
    } else {
      epoch_nonpage.insert(epoch_nonpage.end(), in.begin() + off, in.begin() + off + total);
    }
    off += total;
  }
  return Status::Ok();
}

// The session record-stream gives the driver: paces epochs, "acks" each one
// at once and rebuilds the split stream in process (the stream a backup
// would rebuild must equal what libxenguest wrote).
class RecordingSession final : public replicator::EpochSession {
 public:
  RecordingSession(uint64_t checkpoints, std::chrono::milliseconds interval)
      : checkpoints_(checkpoints), interval_(interval) {}
  uint64_t first_epoch() const override { return 1; }
  Next NextEpoch() override {
    if (taken_ >= checkpoints_ || g_stop.load()) return Next::kStop;
    while (Clock::now() < last_suspend_ + interval_ && !g_stop.load()) {
      std::this_thread::sleep_for(std::chrono::milliseconds(5));
    }
    return Next::kCheckpoint;
  }
  Status Suspended(uint64_t) override {
    ++taken_;
    last_suspend_ = Clock::now();
    return Status::Ok();
  }
  void Reached(replicator::Phase, uint64_t) override {}
  bool stopping() const override { return g_stop.load(); }
  Status BeginEpoch(uint64_t epoch) override {
    st_ = {};
    st_.epoch = epoch;
    return Status::Ok();
  }
  Status AddPage(uint64_t pfn, const uint8_t* page) override {
    st_.pages++;
    st_.raw_bytes += kXenPageSize;
    return assembler_.OnPage(pfn, page);
  }
  Status AddState(std::span<const uint8_t> b) override {
    st_.state_records++;
    st_.raw_bytes += b.size();
    if (EnvelopeKindOf(b) == uint8_t(EnvelopeKind::kDomainInfo)) return Status::Ok();
    if (EnvelopeKindOf(b) == uint8_t(EnvelopeKind::kDeviceModelState)) {
      // An HVM guest's device state: QEMU's own stream, one per epoch.
      const auto state = b.subspan(kEnvelopeHeaderSize);
      if (state.size() < 8 || memcmp(state.data(), "QEVM", 4) != 0) {
        return Status::Corruption("epoch " + std::to_string(st_.epoch) + ": the device model's state is no QEVM stream");
      }
      epoch_dm_states_++;
      dm_state_bytes_ = state.size();
    }
    return assembler_.OnState(b);
  }
  bool SkipKnownZeroPage(uint64_t) override { return false; }
  uint64_t epoch_pages_kept() const override { return 0; }
  Result<replicator::EpochWireStats> EndEpoch() override {
    if (epoch_dm_states_ > 1) {
      return Status::Corruption("epoch " + std::to_string(st_.epoch) + " carries " +
                                std::to_string(epoch_dm_states_) + " device model states");
    }
    epochs_with_dm_state_ += epoch_dm_states_;
    epoch_dm_states_ = 0;
    epochs_++;
    ROMULUS_RETURN_IF_ERROR(assembler_.Commit());
    st_.wire_bytes = st_.raw_bytes;
    return st_;
  }
  Status Commit(uint64_t, replicator::EpochStats* st) override {
    st->acked = true;
    return Status::Ok();
  }
  // Nobody to hand over to: the driver keeps the guest suspended and the
  // session's error says why.
  std::optional<uint64_t> HandOverPoint() const override { return std::nullopt; }
  void Relinquish(uint64_t epoch, Status why, bool) override {
    fprintf(stderr, "romulus-xen: epoch %llu cannot be committed, the guest stays suspended: %s\n",
            (unsigned long long)epoch, why.ToString().c_str());
  }
  void Publish(const replicator::EpochStats& st) override {
    std::string dm;  // an HVM guest's device model: its share of the pause
    for (const auto& [key, value] : st.extra) {
      if (key.rfind("dm_", 0) == 0) dm += " " + key + "=" + std::to_string(value);
    }
    fprintf(stderr, "romulus-xen: checkpoint %llu: %llu pages, paused %lld us (suspending %lld us)%s\n",
            (unsigned long long)st.epoch, (unsigned long long)st.dirty_pages, (long long)st.pause.count(),
            (long long)st.suspend.count(), dm.c_str());
  }
  std::chrono::milliseconds ack_timeout() const override { return std::chrono::milliseconds(60000); }

  // "N epochs, M with a device model state (B bytes, the last)": every
  // epoch of an HVM guest has one, of a PV or PVH guest none.
  std::string DeviceModelReport() const {
    return std::to_string(epochs_) + " epochs, " + std::to_string(epochs_with_dm_state_) +
           " with a device model state (" + std::to_string(dm_state_bytes_) + " bytes, the last)";
  }

 private:
  uint64_t epochs_ = 0;
  uint64_t epochs_with_dm_state_ = 0;
  uint64_t epoch_dm_states_ = 0;
  size_t dm_state_bytes_ = 0;
  const uint64_t checkpoints_;
  const std::chrono::milliseconds interval_;
  uint64_t taken_ = 0;
  Clock::time_point last_suspend_ = Clock::now();
  replicator::EpochWireStats st_;
  StreamAssembler assembler_{[](std::span<const uint8_t>) { return Status::Ok(); }};
};

int CmdRecord(int argc, char** argv) {
  XenDriverOptions o;
  o.domain = Arg(argc, argv, "--domain");
  o.verbose = !Arg(argc, argv, "--verbose").empty();
  o.tee_path = Arg(argc, argv, "--out");
  if (o.tee_path.empty()) return Fail(Status::InvalidArgument("--out FILE"));
  uint64_t checkpoints = strtoull(Arg(argc, argv, "--checkpoints", "3").c_str(), nullptr, 10);
  if (checkpoints == 0) checkpoints = 3;
  const auto interval = std::chrono::milliseconds(atoi(Arg(argc, argv, "--interval", "100").c_str()));
  auto driver = OpenXenDriver(o);
  if (!driver.ok()) return Fail(driver.status());
  RecordingSession session(checkpoints, interval);
  Status s = (*driver)->RunSession(session);
  if (!s.ok()) return Fail(s);
  auto raw = ReadFile(o.tee_path);
  if (!raw.ok()) return Fail(raw.status());
  std::string report;
  Status v = Verify(*raw, &report);
  fprintf(stderr, "romulus-xen: recorded %s: %s\n", o.tee_path.c_str(), report.c_str());
  fprintf(stderr, "romulus-xen: %s\n", session.DeviceModelReport().c_str());
  return v.ok() ? 0 : Fail(v);
}

double Ms(Clock::duration d) { return std::chrono::duration<double, std::milli>(d).count(); }

int CmdDmPause(int argc, char** argv) {
  const std::string domain = Arg(argc, argv, "--domain");
  const std::string count_arg = Arg(argc, argv, "--count", "10");
  if (domain.empty()) return Fail(Status::InvalidArgument("dm-pause needs --domain NAME|DOMID"));
  char* end = nullptr;
  const unsigned long count = strtoul(count_arg.c_str(), &end, 10);
  if (end == count_arg.c_str() || *end != '\0' || count == 0 || count > 100000) {
    return Fail(Status::InvalidArgument("--count " + count_arg + ": want 1..100000"));
  }
  auto h = XenHandles::Open(false);
  if (!h.ok()) return Fail(h.status());
  auto dom = ResolveDomain(**h, domain);
  if (!dom.ok()) return Fail(dom.status());
  if (dom->type != GuestType::kHvm) {
    return Fail(Status::InvalidArgument("domain " + dom->name + " is a " + GuestTypeName(dom->type) +
                                        " guest: it has no device model"));
  }
  const devicemodel::DeviceModelEndpoint ep = devicemodel::LibxlDeviceModelEndpoint(dom->domid, dom->uuid);
  auto file = devicemodel::DeviceStateFile::Create(size_t{16} << 20);
  if (!file.ok()) return Fail(file.status());
  auto dirty_log = [&](bool on) -> Status {
    const auto deadline = transport::DeadlineIn(std::chrono::milliseconds(10000));
    return devicemodel::WithLockedDeviceModel(
        ep, deadline, [&](devicemodel::DeviceModel& dm) { return dm.SetGlobalDirtyLog(on, deadline); });
  };
  Status st = dirty_log(true);
  if (!st.ok()) return Fail(st.With("switching QEMU's dirty log on"));
  // Off again however this ends (a failed round returns early).
  struct DirtyLogOff {
    std::function<Status(bool)> f;
    bool done = false;
    ~DirtyLogOff() {
      if (!done) (void)f(false);
    }
  } off{dirty_log};
  std::vector<uint8_t> state;
  std::vector<double> begins, ends;
  for (unsigned long i = 1; i <= count && !g_stop; ++i) {
    if (xc_domain_pause((*h)->xch(), dom->domid) != 0) return Fail(Status::FromErrno("xc_domain_pause", errno));
    const auto t0 = Clock::now();
    auto p = devicemodel::DeviceModelPause::Begin(ep, &*file, transport::DeadlineIn(std::chrono::milliseconds(10000)));
    const auto t1 = Clock::now();
    Status read = p.ok() ? file->ReadInto(&state) : p.status();
    Status ended = p.ok() ? (*p)->End(transport::DeadlineIn(std::chrono::milliseconds(10000))) : Status::Ok();
    const auto t2 = Clock::now();
    p = Status::Closed("done");  // lets go of an abandoned pause (continues QEMU) before the unpause
    if (xc_domain_unpause((*h)->xch(), dom->domid) != 0) return Fail(Status::FromErrno("xc_domain_unpause", errno));
    if (!read.ok()) return Fail(read.With("round " + std::to_string(i)));
    if (!ended.ok()) return Fail(ended.With("round " + std::to_string(i)));
    const bool qevm = state.size() >= 8 && memcmp(state.data(), "QEVM", 4) == 0;
    printf("dm-pause round=%lu begin_ms=%.2f end_ms=%.2f state_bytes=%zu qevm=%d\n", i, Ms(t1 - t0), Ms(t2 - t1),
           state.size(), qevm ? 1 : 0);
    fflush(stdout);
    if (!qevm) return Fail(Status::Corruption("round " + std::to_string(i) + ": the state is no QEVM stream"));
    begins.push_back(Ms(t1 - t0));
    ends.push_back(Ms(t2 - t1));
    std::this_thread::sleep_for(std::chrono::milliseconds(100));  // the guest runs between checkpoints
  }
  off.done = true;
  st = dirty_log(false);
  if (!st.ok()) return Fail(st.With("switching QEMU's dirty log off"));
  auto median = [](std::vector<double> v) {
    std::sort(v.begin(), v.end());
    return v.empty() ? 0.0 : v[v.size() / 2];
  };
  printf("dm-pause domain=%s rounds=%zu begin_median_ms=%.2f end_median_ms=%.2f state_bytes=%zu lock=%s\n",
         dom->name.c_str(), begins.size(), median(begins), median(ends), state.size(), ep.lock_path.c_str());
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  signal(SIGPIPE, SIG_IGN);
  signal(SIGINT, [](int) { g_stop = true; });
  signal(SIGTERM, [](int) { g_stop = true; });
  std::string cmd = argc > 1 ? argv[1] : "";
  if (cmd == "probe") {
    auto v = ProbeXen();
    if (!v.ok()) return Fail(v.status());
    printf("%s\n", v->c_str());
    return 0;
  }
  if (cmd == "verify-stream" && argc == 3) {
    auto in = ReadFile(argv[2]);
    if (!in.ok()) return Fail(in.status());
    std::string report;
    Status s = Verify(*in, &report);
    printf("%s %s\n", s.ok() ? "OK" : "FAIL", report.c_str());
    return s.ok() ? 0 : Fail(s);
  }
  if (cmd == "cut-fixture" && argc == 4) {
    auto in = ReadFile(argv[2]);
    if (!in.ok()) return Fail(in.status());
    std::vector<uint8_t> out;
    Status s = CutFixture(*in, &out);
    if (!s.ok()) return Fail(s);
    FILE* f = fopen(argv[3], "wb");
    if (!f || fwrite(out.data(), 1, out.size(), f) != out.size()) return Fail(Status::IoError("writing output"));
    fclose(f);
    printf("%zu -> %zu bytes\n", in->size(), out.size());
    return 0;
  }
  if (cmd == "record-stream") return CmdRecord(argc, argv);
  if (cmd == "dm-pause") return CmdDmPause(argc, argv);
  fprintf(stderr, "usage: romulus-xen probe | record-stream | verify-stream FILE | cut-fixture IN OUT | dm-pause | "
                  "replicate | restore (see the source header)\n");
  return 2;
}
