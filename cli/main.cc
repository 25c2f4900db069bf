// romulus: continuous checkpoint replication for Xen guests.
#include <spdlog/sinks/stdout_color_sinks.h>
#include <spdlog/spdlog.h>

#include <cstring>
#include <iostream>
#include <string>

#include "cli/commands.h"

namespace {

struct Command {
  const char* name;
  int (*run)(int, char**);
  const char* summary;
};

const Command kCommands[] = {
    {"replicate", romulus::cli::RunReplicate, "protect a guest: stream checkpoints to a backup"},
    {"restore", romulus::cli::RunRestore, "be the backup: receive checkpoints, fail over"},
    {"demo", romulus::cli::RunDemo, "both sides over loopback TLS with a simulated guest, then a failover"},
    {"keygen", romulus::cli::RunKeygen, "write a fresh pre-shared key file for the TLS channel"},
    {"verify", romulus::cli::RunVerify, "check a backup image of a simulated guest is a real checkpoint"},
    {"ctl", romulus::cli::RunCtl, "control a running replicate/restore: status, stats, set, pause, failover"},
    {"drill", romulus::cli::RunDrill, "failover drills with real processes; drill verify: compare both sides live"},
    {"switchover", romulus::cli::RunSwitchover, "planned handover: final checkpoint, the backup takes over"},
    {"disk-export", romulus::cli::RunDiskExport, "serve a guest disk over NBD for its lifetime; a replicator taps it"},
    {"bench", romulus::cli::RunBench, "benchmarks: bench codec | bench e2e"},
};

void PrintUsage(std::ostream& out) {
  out << "Usage: romulus <command> [options]   (romulus <command> --help for details)\n\n"
         "Commands:\n";
  for (const auto& c : kCommands) {
    out << "  " << c.name << std::string(12 - std::strlen(c.name), ' ') << c.summary << "\n";
  }
}

}  // namespace

int main(int argc, char** argv) {
  // Every log line (info included) goes to stderr: spdlog's default logger
  // writes to stdout, where it would mix with the answers that commands print
  // for scripts (ctl's JSON, --json reports, --help). stdout carries only those.
  spdlog::set_default_logger(spdlog::stderr_color_mt("romulus"));
  spdlog::set_pattern("%Y-%m-%d %H:%M:%S.%e %^%l%$ %v");
  if (argc < 2) {
    PrintUsage(std::cerr);
    return romulus::cli::kExitUsage;
  }
  std::string cmd = argv[1];
  if (cmd == "--help" || cmd == "-h" || cmd == "help") {
    PrintUsage(std::cout);
    return 0;
  }
  if (cmd == "--version") {
    std::cout << "romulus 0.1.0\n";
    return 0;
  }
  for (const auto& c : kCommands) {
    if (cmd == c.name) return c.run(argc - 1, argv + 1);
  }
  std::cerr << "romulus: unknown command '" << cmd << "' (see romulus --help)\n";
  return romulus::cli::kExitUsage;
}
