// Shared command-line plumbing: every subcommand parses with
// Boost.Program_options through these helpers so errors look the same
// everywhere (one line on stderr, exit code 2) and --help/--log-level exist
// on all of them.
#pragma once

#include <boost/program_options.hpp>
#include <chrono>
#include <cstdint>
#include <optional>
#include <string>

namespace romulus::cli {

namespace po = boost::program_options;

// Parses argv against desc (adds --help and --log-level). Returns nullopt and
// sets *exit_code if the command should exit now (help printed: 0, error: 2).
std::optional<po::variables_map> ParseOptions(const std::string& command, const std::string& usage,
                                              po::options_description desc, int argc, char** argv,
                                              int* exit_code,
                                              const po::positional_options_description* pos = nullptr);

// Value helpers that print "romulus CMD: --flag: reason" and return false on error.
bool GetSize(const std::string& command, const po::variables_map& vm, const std::string& flag,
             uint64_t* out);
bool GetDuration(const std::string& command, const po::variables_map& vm, const std::string& flag,
                 std::chrono::microseconds* out);
// A byte count that must be at least `min` (e.g. one page for a cache or a
// guest): "0" or "100" is an error, never "no limit". Absent flag: *out kept.
bool GetSizeAtLeast(const std::string& command, const po::variables_map& vm, const std::string& flag,
                    uint64_t min, uint64_t* out);
// A whole decimal number in [lo, hi], for flags declared as
// po::value<std::string>: Boost would quietly wrap "-1" into 2^64-1 for an
// unsigned option, so counts are parsed here instead. Absent flag: *out kept.
bool GetCount(const std::string& command, const po::variables_map& vm, const std::string& flag, uint64_t lo,
              uint64_t hi, uint64_t* out);
// Range check with the same error style.
bool CheckRange(const std::string& command, const std::string& flag, double value, double lo,
                double hi, const std::string& lo_text, const std::string& hi_text);

void UsageError(const std::string& command, const std::string& message);

}  // namespace romulus::cli
