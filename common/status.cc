#include "common/status.h"

#include <cstring>

namespace romulus {

const char* CodeName(Code code) {
  switch (code) {
    case Code::kOk: return "OK";
    case Code::kInvalidArgument: return "Invalid argument";
    case Code::kCorruption: return "Corruption";
    case Code::kOutOfRange: return "Out of range";
    case Code::kIoError: return "I/O error";
    case Code::kClosed: return "Closed";
    case Code::kTimeout: return "Timeout";
    case Code::kUnauthenticated: return "Unauthenticated";
    case Code::kUnsupported: return "Unsupported";
    case Code::kInternal: return "Internal error";
    case Code::kStorage: return "Storage error";
  }
  return "Unknown";
}

Status Status::FromErrno(const std::string& what, int err) {
  return Status(Code::kIoError, what + ": " + std::strerror(err));
}

Status Status::StorageErrno(const std::string& what, int err) {
  return Status(Code::kStorage, what + ": " + std::strerror(err));
}

std::string Status::ToString() const {
  if (ok()) return "OK";
  return std::string(CodeName(code_)) + ": " + msg_;
}

Status Status::With(const std::string& context) const {
  if (ok()) return *this;
  return Status(code_, context + ": " + msg_);
}

}  // namespace romulus
