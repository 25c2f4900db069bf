#include "common/units.h"

#include <cctype>
#include <cmath>
#include <cstdio>
#include <limits>

namespace romulus {
namespace {

std::string Lower(std::string_view s) {
  std::string out(s);
  for (char& c : out) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return out;
}

// Splits "12.5ms" into 12.5 and "ms". Only digits and at most one '.'.
bool SplitNumber(std::string_view text, double* number, std::string* suffix) {
  size_t i = 0;
  bool seen_digit = false, seen_dot = false;
  while (i < text.size()) {
    char c = text[i];
    if (std::isdigit(static_cast<unsigned char>(c))) {
      seen_digit = true;
    } else if (c == '.' && !seen_dot) {
      seen_dot = true;
    } else {
      break;
    }
    ++i;
  }
  if (!seen_digit || i > 32) return false;
  std::string digits(text.substr(0, i));
  char* end = nullptr;
  *number = std::strtod(digits.c_str(), &end);
  if (end != digits.c_str() + digits.size() || !std::isfinite(*number)) return false;
  *suffix = Lower(text.substr(i));
  return true;
}

}  // namespace

Result<uint64_t> ParseSize(std::string_view text) {
  double number = 0;
  std::string suffix;
  if (!SplitNumber(text, &number, &suffix)) {
    return Status::InvalidArgument("bad size '" + std::string(text) + "' (expected e.g. 4096, 64M, 1G)");
  }
  double mult = 0;
  if (suffix.empty() || suffix == "b") mult = 1;
  else if (suffix == "k" || suffix == "kib" || suffix == "kb") mult = 1024.0;
  else if (suffix == "m" || suffix == "mib" || suffix == "mb") mult = 1024.0 * 1024;
  else if (suffix == "g" || suffix == "gib" || suffix == "gb") mult = 1024.0 * 1024 * 1024;
  else if (suffix == "t" || suffix == "tib" || suffix == "tb") mult = 1024.0 * 1024 * 1024 * 1024;
  else {
    return Status::InvalidArgument("bad size suffix in '" + std::string(text) + "' (use K, M, G or T)");
  }
  double bytes = number * mult;
  if (bytes >= 18446744073709549568.0) {
    return Status::OutOfRange("size '" + std::string(text) + "' is too large");
  }
  if (bytes != std::floor(bytes)) {
    return Status::InvalidArgument("size '" + std::string(text) + "' is not a whole number of bytes");
  }
  return static_cast<uint64_t>(bytes);
}

Result<std::chrono::microseconds> ParseDuration(std::string_view text) {
  double number = 0;
  std::string suffix;
  if (!SplitNumber(text, &number, &suffix)) {
    return Status::InvalidArgument("bad duration '" + std::string(text) + "' (expected e.g. 25ms, 1s)");
  }
  double mult = 0;
  if (suffix == "us") mult = 1;
  else if (suffix == "ms") mult = 1e3;
  else if (suffix == "s") mult = 1e6;
  else if (suffix == "m" || suffix == "min") mult = 60e6;
  else if (suffix.empty()) {
    return Status::InvalidArgument("duration '" + std::string(text) + "' needs a unit (us, ms, s, m)");
  } else {
    return Status::InvalidArgument("bad duration unit in '" + std::string(text) + "' (use us, ms, s, m)");
  }
  double us = number * mult;
  if (us > 1e15) return Status::OutOfRange("duration '" + std::string(text) + "' is too long");
  return std::chrono::microseconds(static_cast<int64_t>(std::llround(us)));
}

std::string FormatSize(uint64_t bytes) {
  static const char* kUnits[] = {"B", "KiB", "MiB", "GiB", "TiB"};
  double v = static_cast<double>(bytes);
  int u = 0;
  while (v >= 1024 && u < 4) {
    v /= 1024;
    ++u;
  }
  char buf[32];
  if (u == 0 || v == std::floor(v)) std::snprintf(buf, sizeof buf, "%.0f %s", v, kUnits[u]);
  else std::snprintf(buf, sizeof buf, "%.1f %s", v, kUnits[u]);
  return buf;
}

std::string FormatDuration(std::chrono::microseconds d) {
  char buf[32];
  int64_t us = d.count();
  if (us < 1000) std::snprintf(buf, sizeof buf, "%lld us", static_cast<long long>(us));
  else if (us < 1000000) std::snprintf(buf, sizeof buf, "%g ms", us / 1e3);
  else std::snprintf(buf, sizeof buf, "%g s", us / 1e6);
  return buf;
}

}  // namespace romulus
