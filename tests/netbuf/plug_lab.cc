// netbuf_lab_test: proves PlugQdisc on a kernel WITH sch_plug. Runs as root
// inside the netbuf lab VM (scripts/netbuf-lab boots the Debian kernel under
// QEMU); it needs sch_plug, veth, ifb, sch_ingress, cls_u32, act_mirred and
// iproute2's `ip`/`tc`. Do not run it on a workstation you care about: it makes
// and deletes network namespaces named rnb-guest / rnb-peer.
//
// Topology, made here:  [netns rnb-guest] rnbg0 10.77.0.1 <-veth-> rnbp0 10.77.0.2 [netns rnb-peer]
// The "guest" sends UDP datagrams numbered 0,1,2,... to the peer; the checks
// are on which numbers the peer receives, and when.
//
// Prints one "LAB-CHECK <name> ok|FAIL <why>" line per check, RTT figures, and
// finally "NETBUF-LAB-RESULT pass=P fail=F ..." that the script parses.
#include <netinet/ip.h>
#include <netinet/ip_icmp.h>
#include <signal.h>
#include <sys/wait.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <functional>
#include <string>
#include <thread>
#include <vector>

#include "netbuf/plug_qdisc.h"
#include "tests/netbuf/netns_util.h"

using namespace romulus;
using namespace romulus::netbuf;
using namespace romulus::netbuf::testing;
using Clock = std::chrono::steady_clock;

namespace {

constexpr const char* kGuestIp = "10.77.0.1";
constexpr const char* kPeerIp = "10.77.0.2";
constexpr const char* kG = "rnbg0";
constexpr const char* kP = "rnbp0";
constexpr uint16_t kPort = 5001;
constexpr int kPingIntervalMs = 37;  // prime, so sends drift across the epoch phase

int g_pass = 0, g_fail = 0;

void Check(bool ok, const std::string& name, const std::string& why = "") {
  if (ok) {
    ++g_pass;
    std::printf("LAB-CHECK %s ok\n", name.c_str());
  } else {
    ++g_fail;
    std::printf("LAB-CHECK %s FAIL %s\n", name.c_str(), why.c_str());
  }
  std::fflush(stdout);
}

std::string Seqs(const std::vector<uint32_t>& v) {
  std::string s;
  for (size_t i = 0; i < v.size() && i < 40; ++i) s += (i ? "," : "") + std::to_string(v[i]);
  if (v.size() > 40) s += ",...(" + std::to_string(v.size()) + ")";
  return "[" + s + "]";
}

double Ms(Clock::duration d) { return std::chrono::duration<double, std::milli>(d).count(); }

struct Lab {
  std::unique_ptr<Netns> guest, peer;
  int tx = -1, rx = -1;  // UDP: sender in guest, receiver in peer
  sockaddr_in to{};

  bool Setup() {
    guest = Netns::Create("rnb-guest");
    peer = Netns::Create("rnb-peer");
    if (!guest || !peer) {
      std::printf("setup failed: ip netns add: %s\n",
                  ShOut(IpBin() + " netns add rnb-probe 2>&1; " + IpBin() + " netns del rnb-probe 2>&1").c_str());
      return false;
    }
    std::string g = guest->ip(), p = peer->ip();
    for (const std::string& cmd : {
             g + "link add " + kG + " type veth peer name " + kP + " netns " + peer->name(),
             g + "addr add " + kGuestIp + "/24 dev " + kG, p + "addr add " + kPeerIp + "/24 dev " + kP,
             g + "link set lo up", p + "link set lo up", g + "link set " + kG + " up",
             p + "link set " + kP + " up"}) {
      if (Sh(cmd) != 0) {
        std::printf("setup failed: %s\n", cmd.c_str());
        return false;
      }
    }
    // Permanent neighbours: an ARP request would itself sit in the plug and
    // make the first datagrams of every check wait an extra epoch.
    // (/sys/class/net shows the namespace sysfs was mounted in: ask ip instead.)
    auto mac = [](const Netns& ns, const char* dev) {
      return ShOut(ns.ip() + "link show dev " + dev + " | awk '/link\\/ether/ {print $2}'");
    };
    std::string gmac = mac(*guest, kG), pmac = mac(*peer, kP);
    gmac.erase(gmac.find_last_not_of(" \n") + 1);
    pmac.erase(pmac.find_last_not_of(" \n") + 1);
    if (Sh(g + "neigh replace " + kPeerIp + " lladdr " + pmac + " dev " + kG + " nud permanent") ||
        Sh(p + "neigh replace " + kGuestIp + " lladdr " + gmac + " dev " + kP + " nud permanent")) {
      std::printf("setup failed: static neighbours (%s / %s)\n", gmac.c_str(), pmac.c_str());
      return false;
    }
    // No IPv6 chatter (router solicitations, MLD) through the plug.
    for (auto* ns : {guest.get(), peer.get()}) {
      Sh(IpBin() + " netns exec " + ns->name() + " sh -c 'echo 1 > /proc/sys/net/ipv6/conf/all/disable_ipv6'");
    }
    {
      InNetns in(*guest);
      tx = UdpSocket(kGuestIp, 0);
    }
    {
      InNetns in(*peer);
      rx = UdpSocket(kPeerIp, kPort);
    }
    to = Addr(kPeerIp, kPort);
    if (tx < 0 || rx < 0) std::printf("setup failed: UDP sockets (%d, %d)\n", tx, rx);
    return tx >= 0 && rx >= 0;
  }

  ~Lab() {
    if (tx >= 0) close(tx);
    if (rx >= 0) close(rx);
  }

  void Send(uint32_t from, uint32_t to_incl) {
    char buf[256] = {};
    for (uint32_t s = from; s <= to_incl; ++s) {
      std::memcpy(buf, &s, sizeof(s));
      sendto(tx, buf, sizeof(buf), 0, reinterpret_cast<const sockaddr*>(&to), sizeof(to));
    }
  }

  // Everything the peer receives within WINDOW_MS (stops early once WANT
  // datagrams came and QUIET_MS passed without another).
  std::vector<uint32_t> Receive(int window_ms, size_t want = SIZE_MAX, int quiet_ms = 150) {
    std::vector<uint32_t> got;
    auto end = Clock::now() + std::chrono::milliseconds(window_ms);
    while (Clock::now() < end) {
      int left = static_cast<int>(Ms(end - Clock::now())) + 1;
      if (got.size() >= want) left = std::min(left, quiet_ms);
      if (!Readable(rx, left)) {
        if (got.size() >= want) break;
        continue;
      }
      uint32_t s = 0;
      char buf[512];
      ssize_t n = recv(rx, buf, sizeof(buf), 0);
      if (n >= 4) {
        std::memcpy(&s, buf, 4);
        got.push_back(s);
      }
    }
    return got;
  }

  void ExpectNone(const std::string& name, int window_ms) {
    auto got = Receive(window_ms, SIZE_MAX);
    Check(got.empty(), name, "peer received " + Seqs(got) + " while it must not");
  }
  void ExpectExactly(const std::string& name, uint32_t from, uint32_t to_incl, int window_ms = 2000) {
    std::vector<uint32_t> want;
    for (uint32_t s = from; s <= to_incl; ++s) want.push_back(s);
    auto got = Receive(window_ms, want.size());
    Check(got == want, name, "expected " + Seqs(want) + " got " + Seqs(got));
  }

  std::string GuestQdiscs() { return ShOut(guest->tc() + "qdisc show dev " + kG); }
  std::string PeerQdiscs() { return ShOut(peer->tc() + "qdisc show"); }
  std::string PeerLinks() { return ShOut(peer->ip() + "link show"); }
};

bool Has(const std::string& hay, const std::string& needle) { return hay.find(needle) != std::string::npos; }

// (a1) the plug on the guest's own egress: boundaries, release-one, coalescing,
// discard at failover, tear-down.
void TestDirect(Lab& lab) {
  std::unique_ptr<PlugQdisc> plug;
  {
    InNetns in(*lab.guest);
    auto p = PlugQdisc::Create(kG);
    Check(p.ok(), "direct.create", p.ok() ? "" : p.status().ToString());
    if (!p.ok()) return;
    plug = std::move(*p);
  }
  Check(Has(lab.GuestQdiscs(), "plug 524d:"), "direct.installed", lab.GuestQdiscs());
  // Before the first checkpoint nothing is protected yet: output flows.
  lab.Send(500, 504);
  lab.ExpectExactly("direct.passthrough_before_first_checkpoint", 500, 504, 1000);

  Status s = plug->Checkpoint(1);
  Check(s.ok(), "direct.checkpoint1", s.ToString());
  s = plug->Release(1);
  Check(s.ok(), "direct.release1", s.ToString());
  lab.Send(0, 19);  // epoch 2's output
  lab.ExpectNone("direct.unacked_output_held", 400);
  s = plug->Checkpoint(2);
  Check(s.ok(), "direct.checkpoint2", s.ToString());
  lab.ExpectNone("direct.boundary_is_not_a_release", 250);
  s = plug->Release(2);
  Check(s.ok(), "direct.release2", s.ToString());
  lab.ExpectExactly("direct.release2_delivers_all_in_order", 0, 19);

  // Acks lagging one epoch: checkpoint 4 while 3 is unacked.
  lab.Send(20, 29);
  (void)plug->Checkpoint(3);
  lab.Send(30, 39);
  (void)plug->Checkpoint(4);
  lab.ExpectNone("direct.pipelined_nothing_before_ack", 250);
  (void)plug->Release(3);
  lab.ExpectExactly("direct.release3_exactly_epoch3", 20, 29);
  (void)plug->Release(4);
  lab.ExpectNone("direct.coalesced_epoch4_not_early", 250);
  lab.Send(40, 44);
  (void)plug->Checkpoint(5);
  (void)plug->Release(5);
  lab.ExpectExactly("direct.release5_delivers_epochs4_5", 30, 44);
  auto st = plug->Stats();
  Check(st.ok() && st->kernel_drops == 0 && st->coalesced == 1 && st->boundaries == 4 &&
            st->releases == 4 && st->kernel_qlen == 0 && st->undrained == 0,
        "direct.stats",
        st.ok() ? "drops=" + std::to_string(st->kernel_drops) + " coalesced=" +
                      std::to_string(st->coalesced) + " boundaries=" + std::to_string(st->boundaries) +
                      " releases=" + std::to_string(st->releases) + " qlen=" +
                      std::to_string(st->kernel_qlen) + " undrained=" + std::to_string(st->undrained)
                : st.status().ToString());

  // Failover: epoch 6 checkpointed but never acked, plus output after it.
  lab.Send(45, 54);
  (void)plug->Checkpoint(6);
  lab.Send(55, 64);
  st = plug->Stats();
  Check(st.ok() && st->kernel_qlen == 20, "direct.held_in_kernel",
        st.ok() ? "qlen=" + std::to_string(st->kernel_qlen) : st.status().ToString());
  s = plug->Discard();
  Check(s.ok(), "direct.discard", s.ToString());
  Check(Has(lab.GuestQdiscs(), "plug 524e:"), "direct.discard_swapped_plug", lab.GuestQdiscs());
  lab.Send(65, 69);  // after the discard: still plugged
  lab.ExpectNone("direct.discarded_output_never_appears", 400);
  s = plug->Close();
  Check(s.ok(), "direct.close", s.ToString());
  lab.ExpectNone("direct.teardown_drops_unreleased", 400);
  Check(!Has(lab.GuestQdiscs(), "plug"), "direct.nothing_left_behind", lab.GuestQdiscs());
  lab.Send(70, 70);
  lab.ExpectExactly("direct.unbuffered_after_close", 70, 70, 1000);
}

// (a2) ReleaseAll: a clean stop lets everything through, in order, and later
// output flows unbuffered.
void TestReleaseAll(Lab& lab) {
  std::unique_ptr<PlugQdisc> plug;
  {
    InNetns in(*lab.guest);
    auto p = PlugQdisc::Create(kG);
    Check(p.ok(), "releaseall.create", p.ok() ? "" : p.status().ToString());
    if (!p.ok()) return;
    plug = std::move(*p);
  }
  (void)plug->Checkpoint(1);
  (void)plug->Release(1);
  lab.Send(80, 89);
  (void)plug->Checkpoint(2);
  lab.Send(90, 99);
  lab.ExpectNone("releaseall.held", 250);
  Status s = plug->ReleaseAll();
  Check(s.ok(), "releaseall.call", s.ToString());
  lab.ExpectExactly("releaseall.everything_in_order", 80, 99);
  lab.Send(100, 100);
  lab.ExpectExactly("releaseall.then_unbuffered", 100, 100, 1000);
  // Plugging again after ReleaseAll (a reconnected backup) is exact too.
  (void)plug->Checkpoint(3);
  (void)plug->Release(3);
  lab.Send(111, 115);
  lab.ExpectNone("releaseall.replugged", 250);
  (void)plug->Checkpoint(4);
  (void)plug->Release(4);
  lab.ExpectExactly("releaseall.replugged_release_exact", 111, 115);
  (void)plug->ReleaseAll();
  lab.Send(101, 110);  // Close right after: the drain wait lets these leave
  s = plug->Close();
  Check(s.ok(), "releaseall.close", s.ToString());
  lab.ExpectExactly("releaseall.close_drains_released", 101, 110, 1000);
  Check(!Has(lab.GuestQdiscs(), "plug"), "releaseall.nothing_left_behind", lab.GuestQdiscs());
}

// Runs FN in a child process that is SIGKILLed once it reports ready: what a
// crashed Romulus leaves behind.
bool CrashAfter(const std::function<bool()>& fn) {
  int pfd[2];
  if (pipe(pfd) != 0) return false;
  pid_t pid = fork();
  if (pid == 0) {
    close(pfd[0]);
    char ok = fn() ? 'y' : 'n';
    (void)!write(pfd[1], &ok, 1);
    pause();
    _exit(0);
  }
  close(pfd[1]);
  char c = 0;
  bool ok = read(pfd[0], &c, 1) == 1 && c == 'y';
  close(pfd[0]);
  kill(pid, SIGKILL);
  waitpid(pid, nullptr, 0);
  return ok;
}

// (a3) crash-restart: the stale plug / IFB / redirect of a killed run are
// removed by the next Create, and the held output of the dead run never leaves.
void TestStale(Lab& lab) {
  bool ok = CrashAfter([&] {
    InNetns in(*lab.guest);
    auto p = PlugQdisc::Create(kG);
    if (!p.ok() || !(*p)->Checkpoint(1).ok()) return false;
    (void)p->release();  // leak: the process dies with the plug installed
    return true;
  });
  Check(ok, "stale.crashed_run_setup");
  Check(Has(lab.GuestQdiscs(), "plug 524d:"), "stale.plug_left_by_crash", lab.GuestQdiscs());
  lab.Send(200, 204);
  lab.ExpectNone("stale.crashed_plug_holds", 250);
  {
    InNetns in(*lab.guest);
    auto p = PlugQdisc::Create(kG);
    Check(p.ok(), "stale.recreate", p.ok() ? "" : p.status().ToString());
    if (p.ok()) {
      auto st = (*p)->Stats();
      Check(st.ok() && st->stale_removed == 1, "stale.plug_removed_at_create",
            st.ok() ? std::to_string(st->stale_removed) : st.status().ToString());
      (void)(*p)->ReleaseAll();
      Check((*p)->Close().ok(), "stale.close");
    }
  }
  lab.Send(205, 205);
  // 200..204 belonged to the dead run's unacked epoch: dropped with its plug.
  lab.ExpectExactly("stale.dead_runs_output_dropped", 205, 205, 1000);

  ok = CrashAfter([&] {
    InNetns in(*lab.peer);
    auto p = PlugQdisc::CreateForVif(kP);
    if (!p.ok()) {
      std::printf("crash child: %s\n", p.status().ToString().c_str());
      return false;
    }
    (void)p->release();
    return true;
  });
  Check(ok, "stale.crashed_vif_run_setup");
  std::string ifb = IfbNameFor(kP);
  Check(Has(lab.PeerLinks(), ifb), "stale.ifb_left_by_crash", lab.PeerLinks());
  {
    InNetns in(*lab.peer);
    auto p = PlugQdisc::CreateForVif(kP);
    Check(p.ok(), "stale.vif_recreate", p.ok() ? "" : p.status().ToString());
    if (p.ok()) {
      auto st = (*p)->Stats();
      Check(st.ok() && st->stale_removed == 2, "stale.redirect_and_ifb_removed_at_create",
            st.ok() ? std::to_string(st->stale_removed) : st.status().ToString());
      Check((*p)->Close().ok(), "stale.vif_close");
    }
  }
  Check(!Has(lab.PeerLinks(), ifb) && !Has(lab.PeerQdiscs(), "ingress"),
        "stale.vif_nothing_left_behind", lab.PeerLinks() + lab.PeerQdiscs());
  lab.Send(206, 206);
  lab.ExpectExactly("stale.vif_unbuffered_after_close", 206, 206, 1000);
}

// (a4) the Xen path: the guest's transmit is the vif's ingress, redirected to
// an IFB whose egress is plugged. Here rnbp0 plays the vif (dom0 side).
void TestVif(Lab& lab) {
  std::unique_ptr<PlugQdisc> plug;
  {
    InNetns in(*lab.peer);
    auto p = PlugQdisc::CreateForVif(kP);
    Check(p.ok(), "vif.create", p.ok() ? "" : p.status().ToString());
    if (!p.ok()) return;
    plug = std::move(*p);
  }
  Check(Has(lab.PeerQdiscs(), "plug 524d:") && Has(lab.PeerQdiscs(), "ingress"), "vif.installed",
        lab.PeerQdiscs());
  lab.Send(501, 501);
  lab.ExpectExactly("vif.passthrough_before_first_checkpoint", 501, 501, 1000);
  (void)plug->Checkpoint(1);
  (void)plug->Release(1);
  lab.Send(300, 319);
  lab.ExpectNone("vif.unacked_output_held", 400);
  (void)plug->Checkpoint(2);
  lab.ExpectNone("vif.boundary_is_not_a_release", 250);
  lab.Send(320, 329);
  (void)plug->Release(2);
  lab.ExpectExactly("vif.release2_delivers_epoch2_only", 300, 319);
  (void)plug->Checkpoint(3);
  (void)plug->Release(3);
  lab.ExpectExactly("vif.release3", 320, 329);
  lab.Send(330, 339);
  (void)plug->Checkpoint(4);
  lab.Send(340, 349);
  Status s = plug->Discard();
  Check(s.ok(), "vif.discard", s.ToString());
  lab.ExpectNone("vif.discarded_output_never_appears", 400);
  s = plug->Close();
  Check(s.ok(), "vif.close", s.ToString());
  lab.ExpectNone("vif.teardown_drops_unreleased", 300);
  Check(!Has(lab.PeerLinks(), IfbNameFor(kP)) && !Has(lab.PeerQdiscs(), "ingress") &&
            !Has(lab.PeerQdiscs(), "plug"),
        "vif.nothing_left_behind", lab.PeerLinks() + lab.PeerQdiscs());
  lab.Send(350, 350);
  lab.ExpectExactly("vif.unbuffered_after_close", 350, 350, 1000);
}

// ---- (b) ping RTT through the buffer, epoch loop with immediate acks.

uint16_t IcmpSum(const void* data, size_t len) {
  const auto* p = static_cast<const uint8_t*>(data);
  uint32_t sum = 0;
  for (size_t i = 0; i + 1 < len; i += 2) sum += (p[i] << 8) | p[i + 1];
  if (len & 1) sum += p[len - 1] << 8;
  while (sum >> 16) sum = (sum & 0xffff) + (sum >> 16);
  return htons(static_cast<uint16_t>(~sum));
}

struct RttStats {
  std::vector<double> ms;
  int lost = 0;
  std::string Summary() const {
    if (ms.empty()) return "no replies";
    auto v = ms;
    std::sort(v.begin(), v.end());
    double sum = 0;
    for (double x : v) sum += x;
    char b[160];
    std::snprintf(b, sizeof(b), "min=%.2f avg=%.2f p50=%.2f p90=%.2f max=%.2f n=%zu lost=%d", v.front(),
                  sum / v.size(), v[v.size() / 2], v[v.size() * 9 / 10], v.back(), v.size(), lost);
    return b;
  }
  double Avg() const {
    double sum = 0;
    for (double x : ms) sum += x;
    return ms.empty() ? -1 : sum / ms.size();
  }
};

// COUNT echo requests guest -> peer on a fixed schedule, one every INTERVAL_MS
// whether or not the previous reply came (as ping(8) does): waiting for each
// reply would phase-lock the sends to the epoch releases and bias the figure.
// An interval prime to the epoch makes the sends sample every phase of it.
RttStats Ping(Lab& lab, int count, int interval_ms) {
  RttStats r;
  int fd;
  {
    InNetns in(*lab.guest);
    fd = socket(AF_INET, SOCK_RAW | SOCK_CLOEXEC, IPPROTO_ICMP);
  }
  if (fd < 0) {
    r.lost = count;
    return r;
  }
  sockaddr_in dst = Addr(kPeerIp, 0);
  uint16_t id = static_cast<uint16_t>(getpid());
  std::vector<Clock::time_point> sent(count);
  std::vector<bool> answered(count, false);
  auto start = Clock::now();
  int next = 0;
  auto deadline = start + std::chrono::milliseconds(interval_ms) * count + std::chrono::seconds(1);
  while (Clock::now() < deadline && static_cast<int>(r.ms.size()) < count) {
    auto now = Clock::now();
    if (next < count && now >= start + std::chrono::milliseconds(interval_ms) * next) {
      char pkt[64] = {};
      auto* icmp = reinterpret_cast<struct icmphdr*>(pkt);
      icmp->type = ICMP_ECHO;
      icmp->un.echo.id = htons(id);
      icmp->un.echo.sequence = htons(static_cast<uint16_t>(next));
      icmp->checksum = IcmpSum(pkt, sizeof(pkt));
      sent[next] = Clock::now();
      sendto(fd, pkt, sizeof(pkt), 0, reinterpret_cast<sockaddr*>(&dst), sizeof(dst));
      ++next;
      continue;
    }
    if (!Readable(fd, 1)) continue;
    char buf[512];
    ssize_t n = recv(fd, buf, sizeof(buf), 0);
    auto t = Clock::now();
    if (n < static_cast<ssize_t>(sizeof(struct iphdr) + sizeof(struct icmphdr))) continue;
    auto* ip = reinterpret_cast<struct iphdr*>(buf);
    auto* rep = reinterpret_cast<struct icmphdr*>(buf + ip->ihl * 4);
    int seq = ntohs(rep->un.echo.sequence);
    if (rep->type == ICMP_ECHOREPLY && ntohs(rep->un.echo.id) == id && seq < next && !answered[seq]) {
      answered[seq] = true;
      r.ms.push_back(Ms(t - sent[seq]));
    }
  }
  r.lost = count - static_cast<int>(r.ms.size());
  close(fd);
  return r;
}

struct EpochLoop {
  PlugQdisc* plug;
  int epoch_ms;
  std::atomic<bool> stop{false};
  std::vector<double> op_us;  // Checkpoint + Release, per epoch
  uint64_t epochs = 0;
  Status error;
  std::thread th;

  void Start() {
    th = std::thread([this] {
      auto next = Clock::now();
      for (uint64_t n = 2; !stop; ++n) {
        next += std::chrono::milliseconds(epoch_ms);
        std::this_thread::sleep_until(next);
        auto t0 = Clock::now();
        Status s = plug->Checkpoint(n);
        if (s.ok()) s = plug->Release(n);  // the backup acks at once
        op_us.push_back(Ms(Clock::now() - t0) * 1000);
        if (!s.ok()) {
          error = s;
          return;
        }
        epochs = n;
      }
    });
  }
  void Stop() {
    stop = true;
    th.join();
  }
};

void TestRtt(Lab& lab, int epoch_ms, int pings, std::string* result) {
  RttStats unbuffered = Ping(lab, pings, kPingIntervalMs);
  std::printf("LAB-RTT unbuffered %s\n", unbuffered.Summary().c_str());
  Check(unbuffered.lost == 0, "rtt.unbuffered_all_replied", unbuffered.Summary());

  RttStats buffered, ifb;
  double op_avg = 0, op_max = 0;
  for (int mode = 0; mode < 2; ++mode) {
    std::unique_ptr<PlugQdisc> plug;
    {
      InNetns in(mode == 0 ? *lab.guest : *lab.peer);
      auto p = mode == 0 ? PlugQdisc::Create(kG) : PlugQdisc::CreateForVif(kP);
      if (!p.ok()) {
        Check(false, mode == 0 ? "rtt.create" : "rtt.vif_create", p.status().ToString());
        return;
      }
      plug = std::move(*p);
    }
    // Plug before the first ping (output before the first checkpoint flows).
    (void)plug->Checkpoint(1);
    (void)plug->Release(1);
    EpochLoop loop;
    loop.plug = plug.get();
    loop.epoch_ms = epoch_ms;
    loop.Start();
    RttStats r = Ping(lab, pings, kPingIntervalMs);
    loop.Stop();
    Check(loop.error.ok(), mode == 0 ? "rtt.epoch_loop" : "rtt.vif_epoch_loop", loop.error.ToString());
    (void)plug->ReleaseAll();
    (void)plug->Close();
    if (mode == 0) {
      buffered = r;
      for (double x : loop.op_us) op_avg += x / loop.op_us.size(), op_max = std::max(op_max, x);
      std::printf("LAB-RTT buffered_%dms %s\n", epoch_ms, r.Summary().c_str());
      std::printf("LAB-OPS checkpoint+release netlink round trips: avg=%.0fus max=%.0fus epochs=%llu\n",
                  op_avg, op_max, static_cast<unsigned long long>(loop.epochs));
    } else {
      ifb = r;
      std::printf("LAB-RTT buffered_ifb_%dms %s\n", epoch_ms, r.Summary().c_str());
    }
  }
  // With immediate acks a request waits for the next suspend: on average half
  // an epoch, at most one epoch (plus scheduling noise under TCG).
  double lo = epoch_ms * 0.25, hi = epoch_ms * 0.85;
  Check(buffered.lost == 0 && buffered.Avg() > lo && buffered.Avg() < hi, "rtt.buffered_about_half_epoch",
        buffered.Summary());
  Check(ifb.lost == 0 && ifb.Avg() > lo && ifb.Avg() < hi, "rtt.ifb_about_half_epoch", ifb.Summary());
  char b[200];
  std::snprintf(b, sizeof(b), "rtt_unbuffered_ms=%.2f rtt_buffered_ms=%.1f rtt_ifb_ms=%.1f epoch_ms=%d op_us=%.0f",
                unbuffered.Avg(), buffered.Avg(), ifb.Avg(), epoch_ms, op_avg);
  *result = b;
}

// ---- (c) end to end: romulus replicate --netbuf-dev on the guest's veth.

int64_t NowUs() {
  return std::chrono::duration_cast<std::chrono::microseconds>(
             std::chrono::system_clock::now().time_since_epoch())
      .count();
}

// Starts ARGV in namespace NS with stdout+stderr to LOG.
pid_t SpawnIn(const Netns& ns, const std::vector<std::string>& argv, const std::string& log) {
  pid_t pid = fork();
  if (pid != 0) return pid;
  if (setns(ns.fd(), CLONE_NEWNET) != 0) _exit(126);
  int fd = open(log.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (fd >= 0) {
    dup2(fd, 1);
    dup2(fd, 2);
  }
  std::vector<char*> args;
  for (const auto& a : argv) args.push_back(const_cast<char*>(a.c_str()));
  args.push_back(nullptr);
  execv(args[0], args.data());
  _exit(127);
}

// Waits up to TIMEOUT_MS for PID; returns its exit status (-1 still running,
// 128+sig if killed by a signal).
int WaitPid(pid_t pid, int timeout_ms) {
  auto end = Clock::now() + std::chrono::milliseconds(timeout_ms);
  for (;;) {
    int st = 0;
    pid_t r = waitpid(pid, &st, WNOHANG);
    if (r == pid) return WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
    if (Clock::now() >= end) return -1;
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
}

void Stop(pid_t pid) {
  if (pid <= 0) return;
  kill(pid, SIGTERM);
  if (WaitPid(pid, 3000) < 0) {
    kill(pid, SIGKILL);
    waitpid(pid, nullptr, 0);
  }
}

bool ListeningIn(const Netns& ns, uint16_t port, int timeout_ms) {
  char want[16];
  std::snprintf(want, sizeof(want), ":%04X ", port);
  auto end = Clock::now() + std::chrono::milliseconds(timeout_ms);
  while (Clock::now() < end) {
    std::string tcp;
    {
      InNetns in(ns);
      tcp = ShOut("cat /proc/thread-self/net/tcp");
    }
    for (size_t pos = tcp.find(want); pos != std::string::npos; pos = tcp.find(want, pos + 1)) {
      size_t eol = tcp.find('\n', pos);
      std::string rest = tcp.substr(pos, eol - pos);
      // local_address ... st == 0A (LISTEN): the state follows the remote address.
      if (rest.find(" 0A ") != std::string::npos) return true;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  return false;
}

std::string ReadFile(const std::string& path) { return ShOut("cat " + path); }

// time_ms of every {"event":"commit",...} line.
std::vector<int64_t> CommitTimesMs(const std::string& events) {
  std::vector<int64_t> out;
  size_t pos = 0;
  while ((pos = events.find("\"event\":\"commit\"", pos)) != std::string::npos) {
    size_t t = events.find("\"time_ms\":", pos);
    if (t == std::string::npos) break;
    out.push_back(std::atoll(events.c_str() + t + 10));
    pos = t;
  }
  return out;
}

struct Datagram {
  uint32_t seq;
  int64_t sent_us, recv_us;
};

// Sends a numbered, timestamped datagram every 5 ms from the guest; the peer
// records when each arrives.
struct Traffic {
  Lab* lab;
  std::atomic<bool> stop{false};
  std::atomic<uint32_t> sent{0};
  std::vector<Datagram> got;
  std::vector<int64_t> sent_at;
  std::thread tx, rx;

  void Start() {
    rx = std::thread([this] {
      while (!stop || Readable(lab->rx, 0)) {
        if (!Readable(lab->rx, 50)) continue;
        char buf[256];
        ssize_t n = recv(lab->rx, buf, sizeof(buf), 0);
        if (n < 12) continue;
        Datagram d;
        std::memcpy(&d.seq, buf, 4);
        std::memcpy(&d.sent_us, buf + 4, 8);
        d.recv_us = NowUs();
        got.push_back(d);
      }
    });
    tx = std::thread([this] {
      auto next = Clock::now();
      for (uint32_t seq = 0; !stop; ++seq) {
        char buf[64] = {};
        int64_t now = NowUs();
        std::memcpy(buf, &seq, 4);
        std::memcpy(buf + 4, &now, 8);
        sent_at.push_back(now);
        sendto(lab->tx, buf, sizeof(buf), 0, reinterpret_cast<const sockaddr*>(&lab->to),
               sizeof(lab->to));
        sent = seq + 1;
        next += std::chrono::milliseconds(5);
        std::this_thread::sleep_until(next);
      }
    });
  }
  // Stops sending; keeps receiving for LINGER_MS more.
  void Finish(int linger_ms) {
    std::this_thread::sleep_for(std::chrono::milliseconds(linger_ms));
    stop = true;
    tx.join();
    rx.join();
  }
};

struct E2eRun {
  int primary_rc = -1;
  std::vector<Datagram> got;
  std::vector<int64_t> sent_at;
  std::vector<int64_t> commits_ms;
  std::string primary_log, stats, events;
};

E2eRun RunReplicate(Lab& lab, const std::string& romulus, const std::vector<std::string>& extra,
                    const std::string& tag, int after_ms) {
  E2eRun r;
  const std::string dir = "/tmp/e2e-" + tag;
  Sh("rm -rf " + dir + " && mkdir -p " + dir);
  pid_t backup = SpawnIn(*lab.guest,
                         {romulus, "restore", "--listen", "127.0.0.1:7411", "--image", dir + "/backup.img",
                          "--start-over", "--insecure", "--events-json", dir + "/events.jsonl",
                          // TCG on a shared host: a slow epoch is not a dead primary.
                          "--failover-timeout", "3s"},
                         dir + "/backup.log");
  if (!ListeningIn(*lab.guest, 7411, 20000)) {
    Stop(backup);
    r.primary_log = "backup never listened: " + ReadFile(dir + "/backup.log");
    return r;
  }
  Traffic t;
  t.lab = &lab;
  t.Start();
  std::vector<std::string> argv = {romulus, "replicate", "--guest", "sim:size=16M,workload=sparse", "--to",
                                   "127.0.0.1:7411", "--insecure", "--interval", "100ms", "--ack-timeout", "5s",
                                   "--stats-json", dir + "/stats.jsonl"};
  argv.insert(argv.end(), extra.begin(), extra.end());
  pid_t primary = SpawnIn(*lab.guest, argv, dir + "/primary.log");
  r.primary_rc = WaitPid(primary, 60000);
  if (r.primary_rc < 0) {
    kill(primary, SIGKILL);
    waitpid(primary, nullptr, 0);
  }
  t.Finish(after_ms);
  // The backup fails over after a kill (1 s) or stops after a clean stop.
  if (WaitPid(backup, 5000) < 0) Stop(backup);
  r.got = std::move(t.got);
  r.sent_at = std::move(t.sent_at);
  r.primary_log = ReadFile(dir + "/primary.log");
  std::string tail = r.primary_log.size() > 1500 ? r.primary_log.substr(r.primary_log.size() - 1500) : r.primary_log;
  std::printf("E2E %s primary rc=%d, log tail:\n%s\n", tag.c_str(), r.primary_rc, tail.c_str());
  r.stats = ReadFile(dir + "/stats.jsonl");
  r.events = ReadFile(dir + "/events.jsonl");
  r.commits_ms = CommitTimesMs(r.events);
  return r;
}

// Datagrams sent while protected (between the first and the last commit) that
// arrived without a backup commit between their send and their arrival.
int Unacked(const E2eRun& r, int* considered) {
  *considered = 0;
  if (r.commits_ms.size() < 2) return -1;
  int bad = 0;
  for (const auto& d : r.got) {
    int64_t s_ms = d.sent_us / 1000, r_ms = d.recv_us / 1000;
    if (s_ms <= r.commits_ms.front() || s_ms >= r.commits_ms.back() - 150) continue;
    ++*considered;
    auto it = std::lower_bound(r.commits_ms.begin(), r.commits_ms.end(), s_ms);
    if (it == r.commits_ms.end() || *it > r_ms) ++bad;
  }
  return bad;
}

std::string Delays(const E2eRun& r) {
  std::vector<double> d;
  for (const auto& g : r.got) {
    int64_t s_ms = g.sent_us / 1000;
    if (r.commits_ms.size() >= 2 && s_ms > r.commits_ms.front() && s_ms < r.commits_ms.back() - 150) {
      d.push_back((g.recv_us - g.sent_us) / 1000.0);
    }
  }
  if (d.empty()) return "no datagrams in the protected window";
  std::sort(d.begin(), d.end());
  double sum = 0;
  for (double x : d) sum += x;
  char b[160];
  std::snprintf(b, sizeof(b), "delay min=%.1f avg=%.1f p50=%.1f p90=%.1f max=%.1f ms n=%zu", d.front(),
                sum / d.size(), d[d.size() / 2], d[d.size() * 9 / 10], d.back(), d.size());
  return b;
}

bool InOrderNoDup(const std::vector<Datagram>& got) {
  for (size_t i = 1; i < got.size(); ++i) {
    if (got[i].seq <= got[i - 1].seq) return false;
  }
  return true;
}

int CountAcked(const std::string& stats) {
  int n = 0;
  for (size_t p = 0; (p = stats.find("\"acked\":true", p)) != std::string::npos; ++p) ++n;
  return n;
}

void TestE2e(Lab& lab, const std::string& romulus, std::string* result) {
  // 1. Buffered, clean stop.
  E2eRun b = RunReplicate(lab, romulus, {"--netbuf-dev", kG, "--duration", "8s"}, "buffered", 300);
  if (b.primary_rc != 0 && (Has(b.primary_log, "not available in this build") ||
                            Has(b.primary_log, "unrecognised option") ||
                            Has(b.primary_log, "unrecognized option"))) {
    std::printf("E2E-RESULT skipped: this romulus cannot buffer yet (%s)\n",
                b.primary_log.substr(b.primary_log.rfind('\n', b.primary_log.size() - 2) + 1).c_str());
    *result = "e2e=skipped";
    return;
  }
  std::printf("E2E buffered primary rc=%d acked=%d commits=%zu sent=%zu got=%zu\n", b.primary_rc,
              CountAcked(b.stats), b.commits_ms.size(), b.sent_at.size(), b.got.size());
  if (b.primary_rc != 0) std::printf("E2E primary log tail:\n%s\n", b.primary_log.c_str());
  Check(b.primary_rc == 0, "e2e.replicate_clean_exit", std::to_string(b.primary_rc));
  Check(Has(b.stats, "\"output_commit\":\"sch_plug on rnbg0\""), "e2e.stats_say_sch_plug",
        b.stats.substr(0, 300));
  Check(CountAcked(b.stats) >= 10 && b.commits_ms.size() >= 10, "e2e.epochs_acked",
        std::to_string(CountAcked(b.stats)));
  Check(b.got.size() == b.sent_at.size() && InOrderNoDup(b.got), "e2e.all_output_delivered_in_order",
        "sent " + std::to_string(b.sent_at.size()) + " got " + std::to_string(b.got.size()));
  int considered = 0;
  int bad = Unacked(b, &considered);
  Check(bad == 0 && considered > 200, "e2e.released_only_after_a_backup_commit",
        std::to_string(bad) + " of " + std::to_string(considered) + " arrived with no commit in between");
  std::string bdelay = Delays(b);
  std::printf("E2E buffered %s\n", bdelay.c_str());
  Check(!Has(lab.GuestQdiscs(), "plug"), "e2e.nothing_left_after_clean_stop", lab.GuestQdiscs());

  // 2. Control: the same run unbuffered must violate the property (the check has teeth).
  E2eRun u = RunReplicate(lab, romulus, {"--no-net-buffering", "--duration", "5s"}, "unbuffered", 300);
  int ubad = Unacked(u, &considered);
  std::printf("E2E unbuffered %s, %d of %d arrived with no commit in between\n", Delays(u).c_str(), ubad,
              considered);
  Check(u.primary_rc == 0 && considered > 100 && ubad > considered / 2, "e2e.control_unbuffered_is_detected",
        std::to_string(ubad) + " of " + std::to_string(considered));

  // 3. Failover drill: the primary is SIGKILLed before epoch 25's ack.
  E2eRun k = RunReplicate(lab, romulus, {"--netbuf-dev", kG, "--kill-at", "c:10"}, "kill", 1500);
  Check(k.primary_rc == 128 + SIGKILL, "e2e.kill_drill_killed", std::to_string(k.primary_rc));
  Check(Has(k.events, "\"event\":\"failover\""), "e2e.backup_failed_over", k.events.substr(0, 300));
  int64_t last_commit = k.commits_ms.empty() ? 0 : k.commits_ms.back();
  int late = 0;
  for (const auto& d : k.got) {
    if (d.sent_us / 1000 > last_commit + 1) ++late;
  }
  size_t after = 0;
  for (int64_t s_us : k.sent_at) after += s_us / 1000 > last_commit + 1;
  Check(last_commit > 0 && late == 0 && after > 100, "e2e.unacked_output_never_appears_after_kill",
        std::to_string(late) + " datagrams sent after the last commit arrived (" + std::to_string(after) +
            " sent)");
  Check(Has(lab.GuestQdiscs(), "plug 524d:"), "e2e.killed_primary_fails_closed", lab.GuestQdiscs());
  // The next start (here: Create, as `romulus replicate` does) drops the held output.
  {
    InNetns in(*lab.guest);
    auto p = PlugQdisc::Create(kG);
    Check(p.ok() && (*p)->Stats().ok() && (*p)->Stats()->stale_removed == 1, "e2e.restart_removes_stale_plug",
          p.ok() ? "" : p.status().ToString());
  }
  lab.ExpectNone("e2e.held_output_dropped_at_restart", 400);
  Check(!Has(lab.GuestQdiscs(), "plug"), "e2e.nothing_left_after_restart", lab.GuestQdiscs());
  std::printf("E2E-RESULT %s: %s\n", g_fail == 0 ? "pass" : "fail", bdelay.c_str());
  *result = "e2e=done";
}

}  // namespace

int main(int argc, char** argv) {
  int epoch_ms = 100, pings = 40;
  bool only_rtt = false;
  std::string e2e;
  for (int i = 1; i < argc; ++i) {
    std::string a = argv[i];
    if (a == "--epoch-ms" && i + 1 < argc) epoch_ms = std::atoi(argv[++i]);
    else if (a == "--pings" && i + 1 < argc) pings = std::atoi(argv[++i]);
    else if (a == "--rtt-only") only_rtt = true;
    else if (a == "--e2e" && i + 1 < argc) e2e = argv[++i];
    else {
      std::fprintf(stderr, "usage: %s [--epoch-ms N] [--pings N] [--rtt-only] | --e2e ROMULUS\n", argv[0]);
      return 2;
    }
  }
  setvbuf(stdout, nullptr, _IOLBF, 0);
  if (geteuid() != 0) {
    std::printf("NETBUF-LAB-RESULT pass=0 fail=1 reason=needs-root\n");
    return 1;
  }
  std::string rtt = "rtt=not-measured";
  {
    Lab lab;
    if (!lab.Setup()) {
      std::printf("NETBUF-LAB-RESULT pass=0 fail=1 reason=setup\n");
      return 1;
    }
    auto t0 = Clock::now();
    if (!e2e.empty()) {
      std::string r;
      TestE2e(lab, e2e, &r);
      std::printf("LAB-TIME e2e took %.1f s\n", Ms(Clock::now() - t0) / 1000);
      std::printf("E2E-COUNTS pass=%d fail=%d %s\n", g_pass, g_fail, r.c_str());
      return g_fail == 0 ? 0 : 1;
    }
    if (!only_rtt) {
      TestDirect(lab);
      TestReleaseAll(lab);
      TestStale(lab);
      TestVif(lab);
    }
    TestRtt(lab, epoch_ms, pings, &rtt);
    std::printf("LAB-TIME checks took %.1f s\n", Ms(Clock::now() - t0) / 1000);
  }  // namespaces deleted here
  std::printf("NETBUF-LAB-RESULT pass=%d fail=%d %s\n", g_pass, g_fail, rtt.c_str());
  return g_fail == 0 ? 0 : 1;
}
