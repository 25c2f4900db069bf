// romulus-xen: the Xen path on its own, for the lab and for fixtures.
//
//   romulus-xen probe
//   romulus-xen record-stream --domain D --out FILE [--checkpoints N] [--interval MS]
//   romulus-xen verify-stream FILE             (tap -> split -> assemble == FILE)
//   romulus-xen cut-fixture IN OUT             (a small real-record subset of IN)
//   romulus-xen replicate --domain D --to HOST:PORT [--interval MS] [--duration S] [--stats F]
//   romulus-xen restore --listen PORT [--domain-name N] [--timeout MS]
//
// replicate/restore use a bare, unauthenticated, uncompressed framing over TCP
// (no engine): they prove the libxenguest side — tap, split, rebuild,
// continuous restore, failover — independently of the replication engine,
// which `romulus replicate --domain` / `romulus restore --xen` use instead.
#include <arpa/inet.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <signal.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <iterator>
#include <string>
#include <vector>

#include "xen/stream_split.h"
#include "xen/stream_v2.h"
#include "xen/xen_backup.h"
#include "xen/xen_cli.h"
#include "xen/xen_primary.h"

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
  uint32_t count = LoadLe32(&in[off + 8]);
  uint32_t keep = std::min(count, kFixturePfns);
  const uint8_t* words = &in[off + 16];
  const uint8_t* data = words + 8ull * count;
  size_t data_keep = 0;
  for (uint32_t i = 0; i < keep; i++) data_keep += PageTypeHasData(uint32_t(LoadLe64(words + 8ull * i) >> 60));
  uint8_t h[16];
  StoreLe32(h, kRecPageData);
  StoreLe32(h + 4, uint32_t(kPageDataHeaderSize + 8ull * keep + kXenPageSize * data_keep));
  StoreLe32(h + 8, keep);
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
  size_t best_off = 0, best_len = 0, best_pages = SIZE_MAX;
  while (off + kRecordHeaderSize <= in.size()) {
    uint32_t type = LoadLe32(&in[off]);
    uint32_t len = LoadLe32(&in[off + 4]);
    size_t total = kRecordHeaderSize + len + ((8 - (len & 7)) & 7);
    if (off + total > in.size()) break;
    if (type == kRecPageData) {
      size_t pages = (len - kPageDataHeaderSize - 8ull * LoadLe32(&in[off + 8])) / kXenPageSize;
      if (pages < best_pages) best_off = off, best_len = total, best_pages = pages;
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

// ---- bare TCP framing: [u8 type][u32 len][payload] ----------------------------
enum : uint8_t { kBegin = 1, kState = 2, kPage = 3, kEnd = 4, kBye = 5 };

Status WriteAll(int fd, const uint8_t* p, size_t n) {
  while (n) {
    ssize_t w = send(fd, p, n, MSG_NOSIGNAL);
    if (w < 0 && errno == EINTR) continue;
    if (w <= 0) return Status::FromErrno("send", errno);
    p += w, n -= size_t(w);
  }
  return Status::Ok();
}

// Returns Closed on EOF, Timeout when nothing arrives for timeout_ms.
Status ReadAll(int fd, uint8_t* p, size_t n, int timeout_ms) {
  while (n) {
    struct pollfd pf = {fd, POLLIN, 0};
    int r = poll(&pf, 1, timeout_ms);
    if (r < 0 && errno == EINTR) continue;
    if (r == 0) return Status::Timeout("peer silent");
    ssize_t got = recv(fd, p, n, 0);
    if (got < 0 && errno == EINTR) continue;
    if (got == 0) return Status::Closed("peer closed");
    if (got < 0) return Status::FromErrno("recv", errno);
    p += got, n -= size_t(got);
  }
  return Status::Ok();
}

class BareTransport final : public EpochTransport {
 public:
  explicit BareTransport(int fd) : fd_(fd) { buf_.reserve(kCap + 8192); }
  ~BareTransport() override { close(fd_); }
  Status BeginEpoch(uint64_t e) override {
    epoch_ = e;
    stats_ = {};
    stats_.epoch = e;
    uint8_t b[8];
    StoreLe64(b, e);
    return Frame(kBegin, b, 8, nullptr, 0);
  }
  Status AddState(std::span<const uint8_t> blob) override {
    stats_.state_records++;
    stats_.raw_bytes += blob.size();
    return Frame(kState, blob.data(), blob.size(), nullptr, 0);
  }
  Status AddPage(uint64_t pfn, const uint8_t* page) override {
    stats_.pages++;
    stats_.raw_bytes += kXenPageSize;
    uint8_t b[8];
    StoreLe64(b, pfn);
    return Frame(kPage, b, 8, page, kXenPageSize);
  }
  Result<replicator::EpochWireStats> EndEpoch() override {
    uint8_t b[8];
    StoreLe64(b, epoch_);
    ROMULUS_RETURN_IF_ERROR(Frame(kEnd, b, 8, nullptr, 0));
    ROMULUS_RETURN_IF_ERROR(Flush());
    return stats_;
  }
  Status WaitAck(uint64_t epoch, std::chrono::milliseconds timeout, const std::atomic<bool>*) override {
    // This bare lab transport has no heartbeats to tell a live backup from a
    // dead one: "while alive" becomes a 10-minute bound here.
    const int ms = int(std::min<int64_t>(timeout.count(), 600000));
    while (acked_ < epoch) {
      uint8_t b[8];
      ROMULUS_RETURN_IF_ERROR(ReadAll(fd_, b, 8, ms));
      acked_ = LoadLe64(b);
    }
    return Status::Ok();
  }
  Status Stop() override {
    ROMULUS_RETURN_IF_ERROR(Frame(kBye, nullptr, 0, nullptr, 0));
    return Flush();
  }

 private:
  static constexpr size_t kCap = 1 << 20;
  Status Frame(uint8_t type, const uint8_t* a, size_t an, const uint8_t* b, size_t bn) {
    uint8_t h[5];
    h[0] = type;
    StoreLe32(h + 1, uint32_t(an + bn));
    buf_.insert(buf_.end(), h, h + 5);
    if (an) buf_.insert(buf_.end(), a, a + an);
    if (bn) buf_.insert(buf_.end(), b, b + bn);
    stats_.wire_bytes += 5 + an + bn;
    return buf_.size() >= kCap ? Flush() : Status::Ok();
  }
  Status Flush() {
    Status s = WriteAll(fd_, buf_.data(), buf_.size());
    buf_.clear();
    return s;
  }
  int fd_;
  std::vector<uint8_t> buf_;
  uint64_t epoch_ = 0, acked_ = 0;
  replicator::EpochWireStats stats_;
};

Result<int> Connect(const std::string& to) {
  auto colon = to.rfind(':');
  if (colon == std::string::npos) return Status::InvalidArgument("--to HOST:PORT");
  struct addrinfo hints = {}, *res = nullptr;
  hints.ai_socktype = SOCK_STREAM;
  if (getaddrinfo(to.substr(0, colon).c_str(), to.substr(colon + 1).c_str(), &hints, &res) != 0) {
    return Status::InvalidArgument("cannot resolve " + to);
  }
  int fd = socket(res->ai_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
  int rc = connect(fd, res->ai_addr, res->ai_addrlen);
  freeaddrinfo(res);
  if (rc != 0) {
    int err = errno;
    close(fd);
    return Status::FromErrno("connect " + to, err);
  }
  int one = 1;
  setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
  return fd;
}

XenReplicateOptions PrimaryOpts(int argc, char** argv) {
  XenReplicateOptions o;
  o.domain = Arg(argc, argv, "--domain");
  o.reconnect = false;  // the lab tool proves one session; a loss ends it
  o.interval = std::chrono::milliseconds(atoi(Arg(argc, argv, "--interval", "100").c_str()));
  o.duration = std::chrono::milliseconds(int64_t(1000 * atof(Arg(argc, argv, "--duration", "0").c_str())));
  o.max_epochs = strtoull(Arg(argc, argv, "--checkpoints", "0").c_str(), nullptr, 10);
  o.stats_path = Arg(argc, argv, "--stats");
  o.tee_path = Arg(argc, argv, "--tee-stream");
  o.verbose = !Arg(argc, argv, "--verbose").empty();
  int ack = atoi(Arg(argc, argv, "--ack-timeout", "0").c_str());
  if (ack > 0) o.ack_timeout = std::chrono::milliseconds(ack);
  return o;
}

void PrintSummary(const ReplicateSummary& s) {
  fprintf(stderr, "romulus-xen: summary epochs=%llu pages=%llu wire_bytes=%llu pause_median_us=%lld pause_max_us=%lld\n",
          (unsigned long long)s.epochs, (unsigned long long)s.pages, (unsigned long long)s.wire_bytes,
          (long long)s.pause_median.count(), (long long)s.pause_max.count());
}

int CmdRecord(int argc, char** argv) {
  XenReplicateOptions o = PrimaryOpts(argc, argv);
  std::string out = Arg(argc, argv, "--out");
  if (out.empty()) return Fail(Status::InvalidArgument("--out FILE"));
  if (o.max_epochs == 0) o.max_epochs = 3;
  o.tee_path = out;
  // Loop the split stream through an in-process assembler: the stream the
  // backup would rebuild must equal what libxenguest wrote.
  struct Local final : EpochTransport {
    std::vector<uint8_t> rebuilt;
    StreamAssembler a{[this](std::span<const uint8_t> b) {
      rebuilt.insert(rebuilt.end(), b.begin(), b.end());
      return Status::Ok();
    }};
    replicator::EpochWireStats st;
    uint64_t done = 0;
    Status BeginEpoch(uint64_t e) override { st = {}; st.epoch = e; return Status::Ok(); }
    Status AddState(std::span<const uint8_t> b) override {
      st.state_records++;
      st.raw_bytes += b.size();
      if (EnvelopeKindOf(b) == uint8_t(EnvelopeKind::kDomainInfo)) return Status::Ok();
      return a.OnState(b);
    }
    Status AddPage(uint64_t pfn, const uint8_t* p) override { st.pages++; st.raw_bytes += 4096; return a.OnPage(pfn, p); }
    Result<replicator::EpochWireStats> EndEpoch() override {
      ROMULUS_RETURN_IF_ERROR(a.Commit());
      done = st.epoch;
      st.wire_bytes = st.raw_bytes;
      return st;
    }
    Status WaitAck(uint64_t, std::chrono::milliseconds, const std::atomic<bool>*) override { return Status::Ok(); }
    Status Stop() override { return Status::Ok(); }
  };
  Local* local = nullptr;
  TransportFactory f = [&](const replicator::GuestInfo&) -> Result<std::unique_ptr<EpochTransport>> {
    auto l = std::make_unique<Local>();
    local = l.get();
    return std::unique_ptr<EpochTransport>(std::move(l));
  };
  ReplicateSummary sum;
  Status s = RunReplicateDomainWith(o, f, nullptr, &g_stop, &sum);
  PrintSummary(sum);
  if (!s.ok()) return Fail(s);
  auto raw = ReadFile(out);
  if (!raw.ok()) return Fail(raw.status());
  (void)local;
  std::string report;
  Status v = Verify(*raw, &report);
  fprintf(stderr, "romulus-xen: recorded %s: %s\n", out.c_str(), report.c_str());
  return v.ok() ? 0 : Fail(v);
}

int CmdReplicate(int argc, char** argv) {
  XenReplicateOptions o = PrimaryOpts(argc, argv);
  std::string to = Arg(argc, argv, "--to");
  TransportFactory f = [&](const replicator::GuestInfo&) -> Result<std::unique_ptr<EpochTransport>> {
    auto fd = Connect(to);
    if (!fd.ok()) return fd.status();
    return std::unique_ptr<EpochTransport>(new BareTransport(*fd));
  };
  ReplicateSummary sum;
  Status s = RunReplicateDomainWith(o, f, nullptr, &g_stop, &sum);
  PrintSummary(sum);
  return s.ok() ? 0 : Fail(s);
}

int CmdRestore(int argc, char** argv) {
  XenRestoreOptions o;
  o.domain_name = Arg(argc, argv, "--domain-name");
  o.verbose = !Arg(argc, argv, "--verbose").empty();
  int timeout_ms = atoi(Arg(argc, argv, "--timeout", "1000").c_str());
  int port = atoi(Arg(argc, argv, "--listen", "0").c_str());
  auto sink = CreateXenSink(o);
  if (!sink.ok()) return Fail(sink.status());
  int ls = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  int one = 1;
  setsockopt(ls, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
  struct sockaddr_in a = {};
  a.sin_family = AF_INET;
  a.sin_port = htons(uint16_t(port));
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (bind(ls, reinterpret_cast<sockaddr*>(&a), sizeof a) != 0 || listen(ls, 1) != 0) {
    return Fail(Status::FromErrno("listen on port " + std::to_string(port), errno));
  }
  fprintf(stderr, "romulus-xen: listening on 127.0.0.1:%d\n", port);
  int fd = accept(ls, nullptr, nullptr);
  close(ls);
  if (fd < 0) return Fail(Status::FromErrno("accept", errno));
  restore::GuestSink* s = sink->get();
  Status st = s->BeginSession(0, "");
  std::vector<uint8_t> payload;
  uint64_t epoch = 0;
  bool first = true;
  std::string why;
  for (;;) {
    uint8_t h[5];
    // The first checkpoint carries the whole memory: no timeout until it is in.
    Status r = ReadAll(fd, h, 5, first ? -1 : timeout_ms);
    if (!r.ok()) { why = r.ToString(); break; }
    uint32_t len = LoadLe32(h + 1);
    if (len > (16u << 20)) { why = "frame too long"; break; }
    payload.resize(len);
    r = ReadAll(fd, payload.data(), len, timeout_ms);
    if (!r.ok()) { why = r.ToString(); break; }
    if (h[0] == kBye) {
      fprintf(stderr, "romulus-xen: primary said BYE: stopping without failover\n");
      s->Discard();
      close(fd);
      return 0;  // the sink's destructor destroys the replica
    }
    if (h[0] == kBegin && len == 8) { epoch = LoadLe64(payload.data()); continue; }
    if (h[0] == kState) st = s->OnState(epoch, payload);
    else if (h[0] == kPage && len == 8 + kXenPageSize) st = s->OnPage(epoch, LoadLe64(payload.data()), payload.data() + 8);
    else if (h[0] == kEnd) {
      auto t0 = Clock::now();
      st = s->Commit(epoch);
      if (st.ok()) {
        first = false;
        uint8_t ack[8];
        StoreLe64(ack, epoch);
        st = WriteAll(fd, ack, 8);
        if (epoch <= 3 || epoch % 50 == 0) {
          fprintf(stderr, "romulus-xen: committed epoch %llu (commit %lld us)\n", (unsigned long long)epoch,
                  (long long)std::chrono::duration_cast<std::chrono::microseconds>(Clock::now() - t0).count());
        }
      }
    } else {
      st = Status::Corruption("bad frame type");
    }
    if (!st.ok()) { why = st.ToString(); break; }
  }
  close(fd);
  s->Discard();
  fprintf(stderr, "romulus-xen: primary lost (%s); last committed epoch %llu\n", why.c_str(),
          (unsigned long long)s->last_committed_epoch());
  if (!s->has_committed()) return Fail(Status::Closed("no checkpoint committed: nothing to fail over to"));
  Status act = s->Activate(why);
  if (!act.ok()) return Fail(act);
  // Keep the domain: release the sink without destroying it.
  sink->release();
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
  if (cmd == "replicate") return CmdReplicate(argc, argv);
  if (cmd == "restore") return CmdRestore(argc, argv);
  fprintf(stderr, "usage: romulus-xen probe | record-stream | verify-stream FILE | cut-fixture IN OUT | "
                  "replicate | restore (see the source header)\n");
  return 2;
}
