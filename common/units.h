// Parsing of human-written sizes ("64M", "1G", "4096") and durations
// ("25ms", "1s", "1.5s") for the command line. Strict: trailing garbage,
// overflow, negative values and unknown suffixes are errors.
#pragma once

#include <chrono>
#include <cstdint>
#include <string>
#include <string_view>

#include "common/status.h"

namespace romulus {

// Binary suffixes K, M, G, T (also KiB/MiB/GiB/TiB, case-insensitive); no suffix = bytes.
Result<uint64_t> ParseSize(std::string_view text);
// Suffixes us, ms, s, m (minutes); a bare number is rejected as ambiguous.
Result<std::chrono::microseconds> ParseDuration(std::string_view text);

std::string FormatSize(uint64_t bytes);                     // "64 MiB", "1.5 GiB", "512 B"
std::string FormatDuration(std::chrono::microseconds d);    // "25 ms", "1.5 s", "800 us"

}  // namespace romulus
