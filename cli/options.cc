#include "cli/options.h"

#include <spdlog/spdlog.h>

#include <iostream>

#include "common/units.h"

namespace romulus::cli {

void UsageError(const std::string& command, const std::string& message) {
  std::cerr << "romulus " << command << ": " << message << "\n";
}

std::optional<po::variables_map> ParseOptions(const std::string& command, const std::string& usage,
                                              po::options_description desc, int argc, char** argv,
                                              int* exit_code,
                                              const po::positional_options_description* pos) {
  desc.add_options()
      ("help,h", "show this help")
      ("log-level", po::value<std::string>()->default_value("info"),
       "trace, debug, info, warn, error or off");
  po::variables_map vm;
  try {
    auto parser = po::command_line_parser(argc, argv).options(desc);
    if (pos) parser.positional(*pos);
    po::store(parser.run(), vm);
    if (vm.count("help")) {
      std::cout << "Usage: romulus " << command << " " << usage << "\n\n" << desc << "\n";
      *exit_code = 0;
      return std::nullopt;
    }
    po::notify(vm);
  } catch (const po::error& e) {
    UsageError(command, std::string(e.what()) + " (see romulus " + command + " --help)");
    *exit_code = 2;
    return std::nullopt;
  }
  const std::string level = vm["log-level"].as<std::string>();
  auto lvl = spdlog::level::from_str(level);
  if (lvl == spdlog::level::off && level != "off") {
    UsageError(command, "--log-level: unknown level '" + level + "'");
    *exit_code = 2;
    return std::nullopt;
  }
  spdlog::set_level(lvl);
  return vm;
}

bool GetSize(const std::string& command, const po::variables_map& vm, const std::string& flag,
             uint64_t* out) {
  if (!vm.count(flag)) return true;
  auto r = ParseSize(vm[flag].as<std::string>());
  if (!r.ok()) {
    UsageError(command, "--" + flag + ": " + r.status().message());
    return false;
  }
  *out = *r;
  return true;
}

bool GetDuration(const std::string& command, const po::variables_map& vm, const std::string& flag,
                 std::chrono::microseconds* out) {
  if (!vm.count(flag)) return true;
  auto r = ParseDuration(vm[flag].as<std::string>());
  if (!r.ok()) {
    UsageError(command, "--" + flag + ": " + r.status().message());
    return false;
  }
  *out = *r;
  return true;
}

bool GetSizeAtLeast(const std::string& command, const po::variables_map& vm, const std::string& flag,
                    uint64_t min, uint64_t* out) {
  if (!vm.count(flag)) return true;
  uint64_t v = 0;
  if (!GetSize(command, vm, flag, &v)) return false;
  if (v < min) {
    UsageError(command, "--" + flag + ": must be at least " + FormatSize(min) + " (got '" +
                            vm[flag].as<std::string>() + "')");
    return false;
  }
  *out = v;
  return true;
}

bool GetCount(const std::string& command, const po::variables_map& vm, const std::string& flag, uint64_t lo,
              uint64_t hi, uint64_t* out) {
  if (!vm.count(flag)) return true;
  const std::string text = vm[flag].as<std::string>();
  const std::string range = "a whole number from " + std::to_string(lo) + " to " + std::to_string(hi);
  // Digits only: no sign, no spaces, no exponent. 19 digits cannot overflow uint64_t.
  if (text.empty() || text.size() > 19 || text.find_first_not_of("0123456789") != std::string::npos) {
    UsageError(command, "--" + flag + ": '" + text + "' is not " + range);
    return false;
  }
  const uint64_t v = std::stoull(text);
  if (v < lo || v > hi) {
    UsageError(command, "--" + flag + ": " + text + " is out of range (" + range + ")");
    return false;
  }
  *out = v;
  return true;
}

bool CheckRange(const std::string& command, const std::string& flag, double value, double lo,
                double hi, const std::string& lo_text, const std::string& hi_text) {
  if (value < lo || value > hi) {
    UsageError(command, "--" + flag + ": must be between " + lo_text + " and " + hi_text);
    return false;
  }
  return true;
}

}  // namespace romulus::cli
