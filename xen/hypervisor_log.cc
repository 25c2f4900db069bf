#include "xen/hypervisor_log.h"

#include <algorithm>
#include <cctype>

namespace romulus::xen {

namespace {

bool IsAlnum(char c) { return std::isalnum(static_cast<unsigned char>(c)) != 0; }
bool IsDigit(char c) { return std::isdigit(static_cast<unsigned char>(c)) != 0; }

bool ContainsNoCase(std::string_view hay, std::string_view needle) {
  auto it = std::search(hay.begin(), hay.end(), needle.begin(), needle.end(), [](char a, char b) {
    return std::tolower(static_cast<unsigned char>(a)) == std::tolower(static_cast<unsigned char>(b));
  });
  return it != hay.end();
}

// "(XEN) [  123.456] text" -> "text" (the prefix and an optional timestamp).
std::string_view StripPrefix(std::string_view l) {
  while (!l.empty() && (l.back() == '\r' || l.back() == '\n')) l.remove_suffix(1);
  if (l.substr(0, 6) == "(XEN) ") l.remove_prefix(6);
  if (!l.empty() && l.front() == '[') {
    size_t e = l.find("] ");
    if (e != std::string_view::npos && e < 32) l.remove_prefix(e + 2);
  }
  return l;
}

// Does `l` name domain `id` as Xen prints it: %pd "d7", %pv "d7v0", "Dom7",
// "dom7" (a whole token: "d71" and "xd7" are not d7)?
bool NamesDomain(std::string_view l, uint32_t id) {
  const std::string num = std::to_string(id);
  for (std::string_view pre : {"d", "Dom", "dom"}) {
    const std::string tok = std::string(pre) + num;
    for (size_t p = l.find(tok); p != std::string_view::npos; p = l.find(tok, p + 1)) {
      if (p > 0 && IsAlnum(l[p - 1])) continue;
      size_t e = p + tok.size();
      if (e == l.size()) return true;
      char n = l[e];
      if (IsDigit(n)) continue;
      if (pre == "d" && n == 'v') {
        if (e + 1 < l.size() && IsDigit(l[e + 1])) return true;
        continue;
      }
      if (!IsAlnum(n)) return true;
    }
  }
  return false;
}

// Every checkpoint of an HVM container writes ~20 of these: noise here.
bool IsPerEpochRecord(std::string_view l) {
  if (l.substr(0, 3) == "HVM" && (l.find(" save: ") != std::string_view::npos ||
                                  l.find(" restore: ") != std::string_view::npos)) {
    return true;
  }
  return l.find("upcall vector") != std::string_view::npos;
}

// A line of vcpu_show_execution_state's register dump: "----[ Xen-4.17 ...",
// "RIP:    0010:[<...>]", "rax: ...", "cr3: ...", "ds: 0000 ...".
bool IsDumpLine(std::string_view l) {
  if (l.substr(0, 5) == "----[") return true;
  size_t c = l.find(':');
  if (c == 0 || c == std::string_view::npos || c > 8) return false;
  for (size_t i = 0; i < c; ++i) {
    if (!IsAlnum(l[i])) return false;
  }
  return c + 1 < l.size() && l[c + 1] == ' ';
}

}  // namespace

DomainLogExcerpt ExcerptForDomain(std::string_view ring, uint32_t domid, size_t max_lines) {
  DomainLogExcerpt ex;
  const std::string dump_header = "Dumping Dom" + std::to_string(domid) + " vcpu";
  size_t dump_left = 0;  // lines of a register dump still to take
  while (!ring.empty()) {
    size_t nl = ring.find('\n');
    std::string_view raw = ring.substr(0, nl);
    ring.remove_prefix(nl == std::string_view::npos ? ring.size() : nl + 1);
    std::string_view l = StripPrefix(raw);
    if (l.empty()) continue;
    bool take = false;
    if (dump_left > 0) {
      if (IsDumpLine(l)) {
        take = true;
        --dump_left;
      } else {
        dump_left = 0;
      }
    }
    if (!take && NamesDomain(l, domid) && !IsPerEpochRecord(l)) {
      take = true;
      if (l.find(dump_header) != std::string_view::npos) dump_left = 16;
      if (ContainsNoCase(l, "triple fault")) ex.triple_fault = std::string(l);
      if (ContainsNoCase(l, "domain_crash") || ContainsNoCase(l, "crashed")) ex.crash = std::string(l);
    }
    if (take) ex.lines.emplace_back(l);
  }
  if (ex.lines.size() > max_lines) ex.lines.erase(ex.lines.begin(), ex.lines.end() - max_lines);
  return ex;
}

std::string ExplainUnexpectedShutdown(const DomainLogExcerpt& ex, uint32_t domid, std::string_view reason) {
  const std::string d = "d" + std::to_string(domid);
  if (!ex.triple_fault.empty()) {
    return "; the hypervisor logged \"" + ex.triple_fault +
           "\": Xen shuts an HVM/PVH guest that triple-faults down with reason reboot "
           "(HVM_PARAM_TRIPLE_FAULT_REASON), so the guest's kernel died hard, around the suspend "
           "or the resume of a checkpoint; nobody asked it to reboot";
  }
  if (!ex.crash.empty()) return "; the hypervisor logged \"" + ex.crash + "\"";
  if (!ex.lines.empty()) return "; the hypervisor's last line about " + d + ": \"" + ex.lines.back() + "\"";
  if (reason.empty()) return "";  // a domain that went away: nothing to add
  std::string s = "; the hypervisor's log says nothing about " + d +
                  " (Xen prints guest events such as triple faults only with guest_loglvl=all or info)";
  if (reason == "reboot") {
    s += "; an HVM/PVH guest that triple-faults is reported as a reboot";
  }
  return s;
}

}  // namespace romulus::xen
