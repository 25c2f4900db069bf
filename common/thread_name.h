// NameThisThread: give the calling thread a name that says what it does, so
// that `top -H`, `ps -L -o tid,comm,time`, gdb, perf and /proc/PID/task/*/stat
// tell an operator (and the lab's CPU accounting) which part of Romulus is
// busy or stuck. Linux keeps 15 bytes; a longer name is cut there.
// Best effort: naming never fails the thread's work.
#pragma once

#include <string>
#include <string_view>

namespace romulus {

void NameThisThread(std::string_view name);

// The calling thread's name as the kernel holds it ("" if it cannot be read).
std::string ThisThreadName();

}  // namespace romulus
