// Status and Result<T>: errors as values, in the LevelDB style. Nothing in
// Romulus throws across a component boundary or aborts on bad input; a
// function that can fail returns one of these and the caller decides.
#pragma once

#include <string>
#include <utility>
#include <variant>

namespace romulus {

enum class Code {
  kOk = 0,
  kInvalidArgument,  // bad flag, bad size, bad config
  kCorruption,       // bad bytes from the network or a file
  kOutOfRange,       // a length or index beyond a hard bound
  kIoError,          // a syscall failed
  kClosed,           // peer went away (EOF)
  kTimeout,          // nothing arrived in time
  kUnauthenticated,  // peer failed TLS / key check
  kUnsupported,      // feature or platform not available
  kInternal,         // a bug: an invariant did not hold
  kStorage,          // local storage failed (ENOSPC, EIO, a file that cannot grow): not the peer
};

const char* CodeName(Code code);

class [[nodiscard]] Status {
 public:
  Status() = default;
  static Status Ok() { return Status(); }
  static Status Error(Code code, std::string msg) { return Status(code, std::move(msg)); }
  static Status InvalidArgument(std::string m) { return {Code::kInvalidArgument, std::move(m)}; }
  static Status Corruption(std::string m) { return {Code::kCorruption, std::move(m)}; }
  static Status OutOfRange(std::string m) { return {Code::kOutOfRange, std::move(m)}; }
  static Status IoError(std::string m) { return {Code::kIoError, std::move(m)}; }
  // IoError with strerror(err) appended.
  static Status FromErrno(const std::string& what, int err);
  static Status Closed(std::string m) { return {Code::kClosed, std::move(m)}; }
  static Status Timeout(std::string m) { return {Code::kTimeout, std::move(m)}; }
  static Status Unauthenticated(std::string m) { return {Code::kUnauthenticated, std::move(m)}; }
  static Status Unsupported(std::string m) { return {Code::kUnsupported, std::move(m)}; }
  static Status Internal(std::string m) { return {Code::kInternal, std::move(m)}; }
  // A local disk/file failure, distinct from kIoError (which network syscalls
  // also return) so a backup can tell "my disk" from "my peer".
  static Status Storage(std::string m) { return {Code::kStorage, std::move(m)}; }
  // Storage with strerror(err) appended.
  static Status StorageErrno(const std::string& what, int err);

  bool ok() const { return code_ == Code::kOk; }
  Code code() const { return code_; }
  const std::string& message() const { return msg_; }
  // "Corruption: frame checksum mismatch"
  std::string ToString() const;
  // Prefixes the message with context: "reading frame: ...".
  Status With(const std::string& context) const;

 private:
  Status(Code code, std::string msg) : code_(code), msg_(std::move(msg)) {}
  Code code_ = Code::kOk;
  std::string msg_;
};

// A value or an error. Deliberately tiny (std::expected is C++23).
template <typename T>
class [[nodiscard]] Result {
 public:
  Result(T value) : v_(std::move(value)) {}          // NOLINT: implicit by design
  Result(Status status) : v_(std::move(status)) {}   // NOLINT: must not be Ok
  bool ok() const { return v_.index() == 0; }
  T& value() & { return std::get<0>(v_); }
  const T& value() const& { return std::get<0>(v_); }
  T&& value() && { return std::get<0>(std::move(v_)); }
  T& operator*() & { return value(); }
  const T& operator*() const& { return value(); }
  T&& operator*() && { return std::move(*this).value(); }
  T* operator->() { return &value(); }
  const T* operator->() const { return &value(); }
  Status status() const { return ok() ? Status::Ok() : std::get<1>(v_); }

 private:
  std::variant<T, Status> v_;
};

}  // namespace romulus

#define ROMULUS_RETURN_IF_ERROR(expr)          \
  do {                                         \
    ::romulus::Status _st = (expr);            \
    if (!_st.ok()) return _st;                 \
  } while (0)
