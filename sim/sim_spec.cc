#include "sim/sim_spec.h"

#include <charconv>
#include <vector>

#include "common/units.h"

namespace romulus::sim {

namespace {

constexpr std::string_view kPrefix = "sim";

struct WorkloadEntry {
  const char* name;
  Workload w;
};
constexpr WorkloadEntry kWorkloads[] = {
    {"seed", Workload::kSeed},
    {"sparse", Workload::kSparse},
    {"hotset", Workload::kHotset},
    {"sequential", Workload::kSequential},
    {"idle", Workload::kIdle},
};

std::string WorkloadList() {
  std::string out;
  for (const auto& e : kWorkloads) {
    if (!out.empty()) out += ", ";
    out += e.name;
  }
  return out;
}

Status Bad(std::string_view text, const std::string& why) {
  return Status::InvalidArgument("guest spec '" + std::string(text) + "': " + why);
}

// Decimal, or hex with 0x; the whole string must be consumed.
bool ParseU64(std::string_view s, uint64_t* out) {
  int base = 10;
  if (s.size() > 2 && s[0] == '0' && (s[1] == 'x' || s[1] == 'X')) {
    s.remove_prefix(2);
    base = 16;
  }
  if (s.empty()) return false;
  auto [ptr, ec] = std::from_chars(s.data(), s.data() + s.size(), *out, base);
  return ec == std::errc() && ptr == s.data() + s.size();
}

std::string SizeText(uint64_t bytes) {
  if (bytes % (uint64_t{1} << 30) == 0) return std::to_string(bytes >> 30) + "G";
  if (bytes % (uint64_t{1} << 20) == 0) return std::to_string(bytes >> 20) + "M";
  if (bytes % (uint64_t{1} << 10) == 0) return std::to_string(bytes >> 10) + "K";
  return std::to_string(bytes);
}

}  // namespace

const char* WorkloadName(Workload w) {
  for (const auto& e : kWorkloads) {
    if (e.w == w) return e.name;
  }
  return "unknown";
}

std::string SimSpec::ToString() const {
  std::string out = "sim:size=" + SizeText(size_bytes) + ",workload=" + WorkloadName(workload) +
                    ",seed=" + std::to_string(seed) + ",rate=";
  out += rate == 0 ? std::string("max") : std::to_string(rate);
  if (disk_bytes != 0) out += ",disk=" + SizeText(disk_bytes);
  return out;
}

Status SimSpec::Validate() const {
  if (size_bytes % 4096 != 0) {
    return Status::InvalidArgument("sim guest size " + std::to_string(size_bytes) +
                                   " is not a multiple of 4 KiB");
  }
  if (size_bytes < kMinGuestBytes || size_bytes > kMaxGuestBytes) {
    return Status::InvalidArgument("sim guest size " + FormatSize(size_bytes) +
                                   " is outside [1 MiB, 64 GiB]");
  }
  bool known = false;
  for (const auto& e : kWorkloads) known = known || e.w == workload;
  if (!known) return Status::InvalidArgument("sim guest: unknown workload");
  if (rate > kMaxRate) {
    return Status::InvalidArgument("sim guest rate " + std::to_string(rate) +
                                   " steps/s is above the maximum of " + std::to_string(kMaxRate) +
                                   " (use rate=max for unthrottled)");
  }
  if (disk_bytes != 0 && (disk_bytes % 4096 != 0 || disk_bytes < kMinSimDiskBytes || disk_bytes > kMaxSimDiskBytes)) {
    return Status::InvalidArgument("sim guest disk size " + std::to_string(disk_bytes) +
                                   " is not a multiple of 4 KiB in [64 KiB, 64 GiB]");
  }
  return Status::Ok();
}

bool IsSimSpec(std::string_view text) {
  return text == kPrefix || text.starts_with("sim:");
}

Result<SimSpec> ParseSimSpec(std::string_view text) {
  if (!IsSimSpec(text)) return Bad(text, "expected 'sim' or 'sim:key=value,...'");
  SimSpec spec;
  bool have_rate = false;
  if (text == kPrefix) return spec;

  std::string_view rest = text.substr(kPrefix.size() + 1);
  if (rest.empty()) return Bad(text, "no key=value items after 'sim:'");
  std::vector<std::string_view> seen;
  while (true) {
    size_t comma = rest.find(',');
    std::string_view item = rest.substr(0, comma);
    if (item.empty()) return Bad(text, "empty item");
    size_t eq = item.find('=');
    if (eq == std::string_view::npos) {
      return Bad(text, "item '" + std::string(item) + "' is not key=value");
    }
    std::string_view key = item.substr(0, eq);
    std::string_view value = item.substr(eq + 1);
    for (std::string_view k : seen) {
      if (k == key) return Bad(text, "key '" + std::string(key) + "' given twice");
    }
    seen.push_back(key);
    if (value.empty()) return Bad(text, "key '" + std::string(key) + "' has an empty value");

    if (key == "size") {
      Result<uint64_t> size = ParseSize(value);
      if (!size.ok()) return Bad(text, "size: " + size.status().message());
      if (*size % 4096 != 0) {
        return Bad(text, "size " + std::string(value) + " is not a multiple of 4 KiB");
      }
      if (*size < kMinGuestBytes) return Bad(text, "size " + std::string(value) + " is below 1 MiB");
      if (*size > kMaxGuestBytes) return Bad(text, "size " + std::string(value) + " is above 64 GiB");
      spec.size_bytes = *size;
    } else if (key == "workload") {
      bool found = false;
      for (const auto& e : kWorkloads) {
        if (value == e.name) {
          spec.workload = e.w;
          found = true;
        }
      }
      if (!found) {
        return Bad(text, "unknown workload '" + std::string(value) + "' (known: " + WorkloadList() + ")");
      }
    } else if (key == "seed") {
      if (!ParseU64(value, &spec.seed)) {
        return Bad(text, "seed '" + std::string(value) + "' is not an unsigned 64-bit number");
      }
    } else if (key == "rate") {
      have_rate = true;
      if (value == "max") {
        spec.rate = 0;
      } else {
        uint64_t r = 0;
        if (!ParseU64(value, &r)) {
          return Bad(text, "rate '" + std::string(value) + "' is not a number of steps per second or 'max'");
        }
        if (r == 0) return Bad(text, "rate must be at least 1 step/s (use workload=idle for a quiet guest)");
        if (r > kMaxRate) {
          return Bad(text, "rate " + std::string(value) + " is above " + std::to_string(kMaxRate) +
                               " steps/s (use rate=max for unthrottled)");
        }
        spec.rate = r;
      }
    } else if (key == "disk") {
      if (value == "0") {
        spec.disk_bytes = 0;
      } else {
        Result<uint64_t> size = ParseSize(value);
        if (!size.ok()) return Bad(text, "disk: " + size.status().message());
        if (*size % 4096 != 0) return Bad(text, "disk " + std::string(value) + " is not a multiple of 4 KiB");
        if (*size < kMinSimDiskBytes) return Bad(text, "disk " + std::string(value) + " is below 64 KiB");
        if (*size > kMaxSimDiskBytes) return Bad(text, "disk " + std::string(value) + " is above 64 GiB");
        spec.disk_bytes = *size;
      }
    } else {
      return Bad(text, "unknown key '" + std::string(key) + "' (known: size, workload, seed, rate, disk)");
    }
    if (comma == std::string_view::npos) break;
    rest = rest.substr(comma + 1);
  }
  if (!have_rate) spec.rate = DefaultRate(spec.workload);
  return spec;
}

}  // namespace romulus::sim
