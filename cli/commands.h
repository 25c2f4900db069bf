// Subcommands of the single `romulus` executable. Each takes the arguments
// after its own name and returns the process exit code:
// 0 success, 1 runtime failure, 2 usage error (bad flag or value).
#pragma once

namespace romulus::cli {

inline constexpr int kExitOk = 0;
inline constexpr int kExitFailure = 1;
inline constexpr int kExitUsage = 2;

int RunReplicate(int argc, char** argv);   // cmd_replicate.cc
int RunRestore(int argc, char** argv);     // cmd_restore.cc
int RunDemo(int argc, char** argv);        // cmd_demo.cc
int RunBench(int argc, char** argv);       // cmd_bench.cc (bench codec | bench e2e)
int RunBenchCodec(int argc, char** argv);  // bench_codec.cc
int RunBenchE2e(int argc, char** argv);    // bench_e2e.cc
int RunVerify(int argc, char** argv);      // cmd_verify.cc
int RunKeygen(int argc, char** argv);      // cmd_keygen.cc
int RunCtl(int argc, char** argv);         // cmd_ctl.cc
int RunDrill(int argc, char** argv);       // cmd_drill.cc (drill | drill verify)
int RunSwitchover(int argc, char** argv);  // cmd_switchover.cc
int RunDiskExport(int argc, char** argv);  // cmd_disk_export.cc

}  // namespace romulus::cli
