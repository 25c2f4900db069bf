// romulus bench codec: XBZRLE encoders (and LZ4/zstd for comparison) over two
// page images, or generation of such images. Definitions (docs/benchmarks.md):
//   GB/s       = image bytes (one image, not old+new) / best time of
//                --repeat passes over every page; 1 GB = 1e9 bytes. Time is
//                this thread's CPU time, so other processes on a shared
//                machine stretch it less than wall time would.
//   bytes/page = payload bytes over all pages / page count, where zero and
//                unchanged pages cost 0 and a delta longer than
//                --max-delta-len (default 4096/3) costs a raw page (4096).
// (Over 500 lines: one benchmark command — image generation, the encoders'
// timing loops and the report — whose parts share its flags and its table.)
#include <fcntl.h>
#include <lz4.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>
#include <zstd.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <functional>
#include <iostream>
#include <random>
#include <string>
#include <vector>

#include "cli/commands.h"
#include "cli/options.h"
#include "common/units.h"
#include "compress/page.h"
#include "compress/xbzrle.h"
#include "compress/xbzrle_reference.h"

namespace romulus::cli {

namespace {

using compress::kPageSize;
const char* const kCmd = "bench codec";

// ------------------------------------------------------------------ files

Status ReadImage(const std::string& path, uint64_t max_bytes, std::vector<uint8_t>* out) {
  const int fd = open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return Status::FromErrno("open " + path, errno);
  struct stat st;
  Status s;
  if (fstat(fd, &st) != 0) {
    s = Status::FromErrno("stat " + path, errno);
  } else if (!S_ISREG(st.st_mode)) {
    s = Status::InvalidArgument(path + ": not a regular file");
  } else if (st.st_size == 0 || st.st_size % kPageSize != 0) {
    s = Status::InvalidArgument(path + ": size " + std::to_string(st.st_size) +
                                " is not a nonzero multiple of 4096");
  } else if (static_cast<uint64_t>(st.st_size) > max_bytes) {
    s = Status::InvalidArgument(path + ": " + FormatSize(st.st_size) + " is larger than --max-size " +
                                FormatSize(max_bytes));
  } else {
    out->resize(st.st_size);
    size_t got = 0;
    while (got < out->size()) {
      const ssize_t n = read(fd, out->data() + got, out->size() - got);
      if (n < 0 && errno == EINTR) continue;
      if (n < 0) {
        s = Status::FromErrno("read " + path, errno);
        break;
      }
      if (n == 0) {
        s = Status::IoError(path + ": file shrank while reading");
        break;
      }
      got += n;
    }
  }
  close(fd);
  return s;
}

Status WriteImage(const std::string& path, const std::vector<uint8_t>& data) {
  FILE* f = std::fopen(path.c_str(), "wb");
  if (!f) return Status::FromErrno("create " + path, errno);
  const bool ok = std::fwrite(data.data(), 1, data.size(), f) == data.size();
  const int err = errno;
  if (std::fclose(f) != 0 || !ok) return Status::FromErrno("write " + path, err);
  return Status::Ok();
}

// ------------------------------------------------------------------ generation

// Fills `old` with random bytes (some pages zero) and derives `new` by the
// workload's rule, page by page. Deterministic for a given seed.
bool Generate(const std::string& kind, uint64_t seed, std::vector<uint8_t>* old_img,
              std::vector<uint8_t>* new_img) {
  std::mt19937_64 rng(seed);
  for (size_t i = 0; i + 8 <= old_img->size(); i += 8) {
    const uint64_t v = rng();
    std::memcpy(old_img->data() + i, &v, 8);
  }
  *new_img = *old_img;
  const size_t pages = old_img->size() / kPageSize;
  auto flip = [&](uint8_t* page, size_t pos) { page[pos] ^= static_cast<uint8_t>(1 + rng() % 255); };
  auto scatter = [&](uint8_t* page, int n) {
    for (int i = 0; i < n; ++i) flip(page, rng() % kPageSize);
  };
  auto runs = [&](uint8_t* page) {
    const int n = 1 + static_cast<int>(rng() % 8);
    for (int r = 0; r < n; ++r) {
      const size_t start = rng() % kPageSize, len = 1 + rng() % 256;
      for (size_t i = start; i < std::min(kPageSize, start + len); ++i) flip(page, i);
    }
  };
  for (size_t p = 0; p < pages; ++p) {
    uint8_t* np = new_img->data() + p * kPageSize;
    uint8_t* op = old_img->data() + p * kPageSize;
    if (kind == "seed") {
      for (size_t off : {0, 1024, 2048, 3072}) flip(np, off);
    } else if (kind == "random8") {
      scatter(np, 8);
    } else if (kind == "random64") {
      scatter(np, 64);
    } else if (kind == "runs") {
      runs(np);
    } else if (kind == "rewrite") {
      for (size_t i = 0; i < kPageSize; ++i) flip(np, i);
    } else if (kind == "mixed") {
      // A rough guest mix: 10% zero, 30% unchanged, 30% sparse, 20% runs, 10% rewritten.
      const int r = static_cast<int>(rng() % 10);
      if (r == 0) {
        std::memset(op, 0, kPageSize);
        std::memset(np, 0, kPageSize);
      } else if (r <= 3) {
      } else if (r <= 6) {
        scatter(np, 1 + static_cast<int>(rng() % 16));
      } else if (r <= 8) {
        runs(np);
      } else {
        for (size_t i = 0; i < kPageSize; ++i) flip(np, i);
      }
    } else {
      return false;
    }
  }
  return true;
}

// ------------------------------------------------------------------ measurement

struct Kinds {
  uint64_t zero = 0, unchanged = 0, delta = 0, raw = 0, delta_bytes = 0;
};

struct Line {
  std::string name;
  double encode_gbps = 0, decode_gbps = 0, bytes_per_page = 0;
  std::string note;
};

double Now() {
  timespec ts;
  clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
  return ts.tv_sec + ts.tv_nsec * 1e-9;
}

double Gbps(size_t bytes, double seconds) { return seconds > 0 ? bytes / seconds / 1e9 : 0; }

// Runs fn `repeat` times, returns the best wall time in seconds.
double BestOf(int repeat, const std::function<void()>& fn) {
  double best = 1e30;
  for (int r = 0; r < repeat; ++r) {
    const double t0 = Now();
    fn();
    best = std::min(best, Now() - t0);
  }
  return best;
}

struct Images {
  const std::vector<uint8_t>& old_img;
  const std::vector<uint8_t>& new_img;
  size_t pages() const { return old_img.size() / kPageSize; }
  const uint8_t* o(size_t p) const { return old_img.data() + p * kPageSize; }
  const uint8_t* n(size_t p) const { return new_img.data() + p * kPageSize; }
};

// Encodes every page with fn (cap = max_delta), then decodes the stream onto a
// copy of the old image and checks it equals the new one. Fills kinds.
bool BenchXbzrle(const Images& im, const std::string& name, compress::EncodeFn fn, size_t max_delta,
                 int repeat, Line* line, Kinds* kinds) {
  const size_t pages = im.pages();
  std::vector<uint8_t> stream(pages * max_delta + 64);
  std::vector<int> lens(pages);
  // One pass here makes the stream; the reported encode speed comes from the
  // interleaved timing in RunBenchCodec.
  const double enc = BestOf(1, [&] {
    size_t off = 0;
    for (size_t p = 0; p < pages; ++p) {
      const int n = fn(im.o(p), im.n(p), stream.data() + off, max_delta);
      lens[p] = n;
      if (n > 0) off += n;
    }
  });
  // Classify and verify (untimed): every page must come back exactly.
  *kinds = Kinds{};
  std::vector<uint8_t> work = im.old_img;
  size_t off = 0;
  for (size_t p = 0; p < pages; ++p) {
    uint8_t* page = work.data() + p * kPageSize;
    if (compress::IsZeroPage(im.n(p))) {
      ++kinds->zero;
    } else if (lens[p] == 0) {
      ++kinds->unchanged;
    } else if (lens[p] < 0) {
      ++kinds->raw;
    } else {
      ++kinds->delta;
      kinds->delta_bytes += lens[p];
    }
    if (lens[p] < 0) {
      std::memcpy(page, im.n(p), kPageSize);
    } else if (lens[p] > 0) {
      Status s = compress::DecodeDelta(stream.data() + off, lens[p], page);
      if (!s.ok()) {
        std::cerr << "romulus bench codec: FAILED: " << name << " page " << p << ": " << s.ToString()
                  << "\n";
        return false;
      }
      off += lens[p];
    }
    if (std::memcmp(page, im.n(p), kPageSize) != 0) {
      std::cerr << "romulus bench codec: FAILED: " << name << " page " << p
                << " does not round-trip\n";
      return false;
    }
  }
  // Decode timing: apply the same stream to a fresh copy of the old image.
  double dec = 1e30;
  for (int r = 0; r < repeat; ++r) {
    std::memcpy(work.data(), im.old_img.data(), work.size());
    const double t0 = Now();
    size_t o2 = 0;
    for (size_t p = 0; p < pages; ++p) {
      uint8_t* page = work.data() + p * kPageSize;
      if (lens[p] < 0) {
        std::memcpy(page, im.n(p), kPageSize);
      } else if (lens[p] > 0) {
        if (!compress::DecodeDelta(stream.data() + o2, lens[p], page).ok()) return false;
        o2 += lens[p];
      }
    }
    dec = std::min(dec, Now() - t0);
  }
  line->name = name;
  line->encode_gbps = Gbps(im.old_img.size(), enc);
  line->decode_gbps = Gbps(im.old_img.size(), dec);
  line->bytes_per_page =
      static_cast<double>(kinds->delta_bytes + kinds->raw * kPageSize) / std::max<size_t>(pages, 1);
  return true;
}

// A general-purpose compressor applied per page to `src(p)` (the new page or
// the XOR delta). Zero and unchanged pages cost 0 as for XBZRLE; a page that
// does not shrink costs 4096 (sent raw).
using CompressFn = std::function<size_t(const uint8_t* src, uint8_t* dst, size_t cap)>;
using DecompressFn = std::function<bool(const uint8_t* src, size_t len, uint8_t* dst)>;

bool BenchGeneric(const Images& im, const std::string& name, bool xor_input, const CompressFn& comp,
                  const DecompressFn& decomp, size_t bound, int repeat, Line* line) {
  const size_t pages = im.pages();
  std::vector<uint8_t> stream(pages * bound);
  std::vector<size_t> lens(pages);
  alignas(64) uint8_t x[kPageSize];
  const double enc = BestOf(repeat, [&] {
    size_t off = 0;
    for (size_t p = 0; p < pages; ++p) {
      const uint8_t* src = im.n(p);
      if (xor_input) {
        for (size_t i = 0; i < kPageSize; ++i) x[i] = im.o(p)[i] ^ im.n(p)[i];
        src = x;
      }
      lens[p] = comp(src, stream.data() + off, bound);
      off += lens[p];
    }
  });
  uint64_t payload = 0;
  alignas(64) uint8_t back[kPageSize];
  std::vector<size_t> offs(pages);
  size_t off = 0;
  for (size_t p = 0; p < pages; ++p) {
    offs[p] = off;
    off += lens[p];
    if (lens[p] == 0 || !decomp(stream.data() + offs[p], lens[p], back)) {
      std::cerr << "romulus bench codec: FAILED: " << name << " page " << p << " did not decompress\n";
      return false;
    }
    if (xor_input)
      for (size_t i = 0; i < kPageSize; ++i) back[i] ^= im.o(p)[i];
    if (std::memcmp(back, im.n(p), kPageSize) != 0) {
      std::cerr << "romulus bench codec: FAILED: " << name << " page " << p
                << " does not round-trip\n";
      return false;
    }
    const bool free_page = compress::IsZeroPage(im.n(p)) || !std::memcmp(im.o(p), im.n(p), kPageSize);
    if (!free_page) payload += std::min(lens[p], kPageSize);
  }
  const double dec = BestOf(repeat, [&] {
    for (size_t p = 0; p < pages; ++p) decomp(stream.data() + offs[p], lens[p], back);
  });
  line->name = name;
  line->encode_gbps = Gbps(im.old_img.size(), enc);
  line->decode_gbps = Gbps(im.old_img.size(), dec);
  line->bytes_per_page = static_cast<double>(payload) / std::max<size_t>(pages, 1);
  return true;
}

std::string Fixed(double v, int prec) {
  char buf[64];
  std::snprintf(buf, sizeof buf, "%.*f", prec, v);
  return buf;
}

bool Wanted(const std::string& filter, const std::string& name) {
  return filter == "all" || filter == name;
}

int RunGenerate(const po::variables_map& vm) {
  uint64_t size = 16ull << 20;
  if (!GetSize(kCmd, vm, "size", &size)) return kExitUsage;
  if (size == 0 || size % kPageSize != 0 || size > (64ull << 30)) {
    UsageError(kCmd, "--size: must be a nonzero multiple of 4096 up to 64G");
    return kExitUsage;
  }
  if (!vm.count("out-old") || !vm.count("out-new")) {
    UsageError(kCmd, "--generate needs --out-old and --out-new");
    return kExitUsage;
  }
  uint64_t seed = 1;
  if (!GetCount(kCmd, vm, "seed", 0, 9999999999999999999ull, &seed)) return kExitUsage;
  const std::string kind = vm["generate"].as<std::string>();
  std::vector<uint8_t> old_img(size), new_img;
  if (!Generate(kind, seed, &old_img, &new_img)) {
    UsageError(kCmd, "--generate: unknown workload '" + kind +
                         "' (seed, random8, random64, runs, rewrite, mixed)");
    return kExitUsage;
  }
  for (auto [path, img] : {std::pair{vm["out-old"].as<std::string>(), &old_img},
                           std::pair{vm["out-new"].as<std::string>(), &new_img}}) {
    Status s = WriteImage(path, *img);
    if (!s.ok()) {
      std::cerr << "romulus bench codec: " << s.ToString() << "\n";
      return kExitFailure;
    }
  }
  std::cout << "wrote " << kind << " images of " << FormatSize(size) << "\n";
  return kExitOk;
}

}  // namespace

int RunBenchCodec(int argc, char** argv) {
  po::options_description desc("Options");
  desc.add_options()
      ("old", po::value<std::string>(), "old page image (size a multiple of 4096)")
      ("new", po::value<std::string>(), "new page image, same size")
      ("json", "one JSON object per line per implementation")
      ("encoder", po::value<std::string>()->default_value("all"),
       "only this implementation (scalar, avx2, avx512, qemu-style-scalar, lz4-new, ...)")
      ("repeat", po::value<int>()->default_value(5), "passes per implementation; the best counts")
      ("max-delta-len", po::value<std::string>()->default_value("1365"),
       "a longer delta is sent raw (default 4096/3)")
      ("max-size", po::value<std::string>()->default_value("4G"), "refuse larger images")
      ("generate", po::value<std::string>(),
       "write a synthetic image pair instead: seed, random8, random64, runs, rewrite, mixed")
      ("out-old", po::value<std::string>(), "with --generate: old image path")
      ("out-new", po::value<std::string>(), "with --generate: new image path")
      ("size", po::value<std::string>()->default_value("16M"), "with --generate: image size")
      ("seed", po::value<std::string>()->default_value("1"), "with --generate: random seed");
  int code = 0;
  auto vm = ParseOptions(kCmd,
                         "--old OLD.img --new NEW.img [--json] [--encoder NAME] [--repeat N]\n"
                         "       romulus bench codec --generate KIND --out-old A --out-new B [--size 16M]",
                         desc, argc, argv, &code);
  if (!vm) return code;
  if (vm->count("generate")) return RunGenerate(*vm);

  if (!vm->count("old") || !vm->count("new")) {
    UsageError(kCmd, "--old and --new are required (or --generate)");
    return kExitUsage;
  }
  const int repeat = (*vm)["repeat"].as<int>();
  if (!CheckRange(kCmd, "repeat", repeat, 1, 1000, "1", "1000")) return kExitUsage;
  uint64_t max_delta = 0, max_size = 0;
  // --max-size 0 would refuse every image: one page is the smallest image there is.
  if (!GetSize(kCmd, *vm, "max-delta-len", &max_delta) ||
      !GetSizeAtLeast(kCmd, *vm, "max-size", kPageSize, &max_size))
    return kExitUsage;
  if (!CheckRange(kCmd, "max-delta-len", static_cast<double>(max_delta), 3, 2 * kPageSize + 3, "3",
                  "8195"))
    return kExitUsage;
  const std::string filter = (*vm)["encoder"].as<std::string>();
  const bool json = vm->count("json") > 0;

  std::vector<uint8_t> old_img, new_img;
  for (auto [flag, img] : {std::pair{"old", &old_img}, std::pair{"new", &new_img}}) {
    Status s = ReadImage((*vm)[flag].as<std::string>(), max_size, img);
    if (!s.ok()) {
      UsageError(kCmd, std::string("--") + flag + ": " + s.ToString());
      return kExitUsage;
    }
  }
  if (old_img.size() != new_img.size()) {
    UsageError(kCmd, "--old and --new differ in size (" + std::to_string(old_img.size()) + " vs " +
                         std::to_string(new_img.size()) + " bytes)");
    return kExitUsage;
  }
  const Images im{old_img, new_img};

  // Implementations: the dispatched encoders, the QEMU-shaped baseline, the
  // general-purpose compressors, and the read-both-pages ceiling.
  std::vector<std::pair<std::string, compress::EncodeFn>> xbzrle;
  for (const auto& e : compress::AvailableEncoders()) xbzrle.emplace_back(e.name, e.fn);
  xbzrle.emplace_back("qemu-style-scalar", &compress::EncodeDeltaQemuStyle);

  std::vector<Line> lines;
  Kinds kinds;
  bool matched = false;
  for (const auto& [name, fn] : xbzrle) {
    if (!Wanted(filter, name)) continue;
    matched = true;
    Line line;
    if (!BenchXbzrle(im, name, fn, max_delta, repeat, &line, &kinds)) return kExitFailure;
    if (name == "qemu-style-scalar") line.note = "reimplementation of QEMU's scalar design";
    lines.push_back(line);
  }

  const size_t lz4_bound = LZ4_compressBound(kPageSize);
  const size_t zstd_bound = ZSTD_compressBound(kPageSize);
  ZSTD_CCtx* cctx = ZSTD_createCCtx();
  ZSTD_DCtx* dctx = ZSTD_createDCtx();
  const CompressFn lz4c = [](const uint8_t* s, uint8_t* d, size_t cap) -> size_t {
    const int n = LZ4_compress_default(reinterpret_cast<const char*>(s), reinterpret_cast<char*>(d),
                                       kPageSize, static_cast<int>(cap));
    return n > 0 ? n : 0;
  };
  const DecompressFn lz4d = [](const uint8_t* s, size_t len, uint8_t* d) {
    return LZ4_decompress_safe(reinterpret_cast<const char*>(s), reinterpret_cast<char*>(d),
                               static_cast<int>(len), kPageSize) == static_cast<int>(kPageSize);
  };
  const CompressFn zstdc = [cctx](const uint8_t* s, uint8_t* d, size_t cap) -> size_t {
    const size_t n = ZSTD_compressCCtx(cctx, d, cap, s, kPageSize, 1);
    return ZSTD_isError(n) ? 0 : n;
  };
  const DecompressFn zstdd = [dctx](const uint8_t* s, size_t len, uint8_t* d) {
    return ZSTD_decompressDCtx(dctx, d, kPageSize, s, len) == kPageSize;
  };
  struct Generic {
    const char* name;
    bool xor_input;
    const CompressFn* c;
    const DecompressFn* d;
    size_t bound;
  };
  const Generic generics[] = {{"lz4-new", false, &lz4c, &lz4d, lz4_bound},
                              {"lz4-xor", true, &lz4c, &lz4d, lz4_bound},
                              {"zstd1-new", false, &zstdc, &zstdd, zstd_bound},
                              {"zstd1-xor", true, &zstdc, &zstdd, zstd_bound}};
  bool generic_ok = true;
  for (const Generic& g : generics) {
    if (!Wanted(filter, g.name)) continue;
    matched = true;
    Line line;
    if (!BenchGeneric(im, g.name, g.xor_input, *g.c, *g.d, g.bound, repeat, &line)) {
      generic_ok = false;
      break;
    }
    lines.push_back(line);
  }
  ZSTD_freeCCtx(cctx);
  ZSTD_freeDCtx(dctx);
  if (!generic_ok) return kExitFailure;

  if (Wanted(filter, "read-both-ceiling")) {
    matched = true;
    Line line;
    line.name = "read-both-ceiling";
    line.note = "reads both pages, encodes nothing";
    lines.push_back(line);
  }

  // Encode speeds of the XBZRLE encoders and the ceiling are measured again
  // here, round-robin: on a shared machine the memory bandwidth available
  // drifts, and interleaving gives every implementation the same conditions.
  {
    std::vector<uint8_t> out(2 * kPageSize + 64);  // >= any --max-delta-len
    volatile int sink = 0;
    std::vector<double> best(lines.size(), 1e30);
    for (int r = 0; r < repeat; ++r) {
      for (size_t i = 0; i < lines.size(); ++i) {
        compress::EncodeFn fn = nullptr;
        for (const auto& [name, f] : xbzrle)
          if (name == lines[i].name) fn = f;
        const bool ceiling = lines[i].name == "read-both-ceiling";
        if (!fn && !ceiling) continue;
        const size_t cap = max_delta;
        const double t0 = Now();
        int acc = 0;
        for (size_t p = 0; p < im.pages(); ++p)
          acc += ceiling ? compress::ReadBothPages(im.o(p), im.n(p))
                         : fn(im.o(p), im.n(p), out.data(), cap);
        best[i] = std::min(best[i], Now() - t0);
        sink = acc;
      }
    }
    (void)sink;
    for (size_t i = 0; i < lines.size(); ++i)
      if (best[i] < 1e30) lines[i].encode_gbps = Gbps(old_img.size(), best[i]);
  }
  if (!matched) {
    UsageError(kCmd, "--encoder: no implementation named '" + filter + "' on this CPU");
    return kExitUsage;
  }

  double baseline = 0;
  for (const Line& l : lines)
    if (l.name == "qemu-style-scalar") baseline = l.encode_gbps;
  const size_t pages = im.pages();
  if (!json) {
    std::cout << "image: " << pages << " pages (" << FormatSize(old_img.size()) << ")";
    if (kinds.zero + kinds.unchanged + kinds.delta + kinds.raw > 0)
      std::cout << "; zero " << kinds.zero << ", unchanged " << kinds.unchanged << ", delta "
                << kinds.delta << " (avg "
                << Fixed(kinds.delta ? double(kinds.delta_bytes) / kinds.delta : 0, 1)
                << " B), raw-overflow " << kinds.raw << " (delta > " << max_delta << " B)";
    std::cout << "\nGB/s = image bytes / best of " << repeat
              << " passes (thread CPU time); bytes/page over all pages\n";
    std::printf("%-20s %12s %12s %11s %10s\n", "implementation", "encode GB/s", "decode GB/s",
                "bytes/page", "vs qemu");
  }
  for (const Line& l : lines) {
    const double ratio = baseline > 0 ? l.encode_gbps / baseline : 0;
    if (json) {
      std::cout << "{\"encoder\":\"" << l.name << "\",\"encode_gbps\":" << Fixed(l.encode_gbps, 3)
                << ",\"decode_gbps\":" << Fixed(l.decode_gbps, 3)
                << ",\"bytes_per_page\":" << Fixed(l.bytes_per_page, 2) << ",\"pages\":" << pages
                << ",\"image_bytes\":" << old_img.size() << ",\"repeat\":" << repeat;
      if (baseline > 0) std::cout << ",\"vs_qemu_style\":" << Fixed(ratio, 3);
      std::cout << ",\"zero_pages\":" << kinds.zero << ",\"unchanged_pages\":" << kinds.unchanged
                << ",\"delta_pages\":" << kinds.delta << ",\"raw_pages\":" << kinds.raw
                << ",\"delta_bytes\":" << kinds.delta_bytes << ",\"max_delta_len\":" << max_delta
                << "}\n";
    } else {
      std::printf("%-20s %12.2f %12s %11.1f %9s  %s\n", l.name.c_str(), l.encode_gbps,
                  l.decode_gbps > 0 ? Fixed(l.decode_gbps, 2).c_str() : "-", l.bytes_per_page,
                  baseline > 0 ? (Fixed(ratio, 2) + "x").c_str() : "-", l.note.c_str());
    }
  }
  return kExitOk;
}

}  // namespace romulus::cli
