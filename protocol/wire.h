// Explicit little-endian serialization. Everything Romulus puts on the wire
// goes through Writer and Reader (or common/little_endian.h for fixed
// offsets; never a raw struct), so the byte layout is the one
// docs/PROTOCOL.md describes on every host, and every read is bounds
// checked: a short or hostile input makes Reader return false, never read
// past the end.
#pragma once

#include <cstddef>
#include <cstdint>
#include <cstring>
#include <span>
#include <string>
#include <string_view>

#include "common/little_endian.h"

namespace romulus::protocol {

// Appends to a fixed span. Overflow does not write and makes ok() false
// (sticky), so a sequence of Put calls can be checked once at the end.
class Writer {
 public:
  explicit Writer(std::span<uint8_t> out) : out_(out) {}

  void U8(uint8_t v) {
    if (uint8_t* p = Take(1)) p[0] = v;
  }
  void U16(uint16_t v) {
    if (uint8_t* p = Take(2)) StoreLE16(p, v);
  }
  void U32(uint32_t v) {
    if (uint8_t* p = Take(4)) StoreLE32(p, v);
  }
  void U64(uint64_t v) {
    if (uint8_t* p = Take(8)) StoreLE64(p, v);
  }
  void Bytes(std::span<const uint8_t> b) {
    if (b.empty()) return;
    if (uint8_t* p = Take(b.size())) std::memcpy(p, b.data(), b.size());
  }
  void Bytes(std::string_view s) {
    Bytes(std::span<const uint8_t>(reinterpret_cast<const uint8_t*>(s.data()), s.size()));
  }

  bool ok() const { return ok_; }
  size_t size() const { return pos_; }
  std::span<const uint8_t> written() const { return out_.first(pos_); }

 private:
  uint8_t* Take(size_t n) {
    if (!ok_ || n > out_.size() - pos_) {
      ok_ = false;
      return nullptr;
    }
    uint8_t* p = out_.data() + pos_;
    pos_ += n;
    return p;
  }
  std::span<uint8_t> out_;
  size_t pos_ = 0;
  bool ok_ = true;
};

// Consumes a span. Every getter returns false (and leaves *out untouched)
// when fewer bytes remain than it needs.
class Reader {
 public:
  explicit Reader(std::span<const uint8_t> in) : in_(in) {}

  bool U8(uint8_t* out) {
    const uint8_t* p = Take(1);
    if (p) *out = p[0];
    return p != nullptr;
  }
  bool U16(uint16_t* out) {
    const uint8_t* p = Take(2);
    if (p) *out = LoadLE16(p);
    return p != nullptr;
  }
  bool U32(uint32_t* out) {
    const uint8_t* p = Take(4);
    if (p) *out = LoadLE32(p);
    return p != nullptr;
  }
  bool U64(uint64_t* out) {
    const uint8_t* p = Take(8);
    if (p) *out = LoadLE64(p);
    return p != nullptr;
  }
  bool Bytes(size_t n, std::span<const uint8_t>* out) {
    if (n > remaining()) return false;
    *out = in_.subspan(pos_, n);
    pos_ += n;
    return true;
  }
  bool String(size_t n, std::string* out) {
    std::span<const uint8_t> b;
    if (!Bytes(n, &b)) return false;
    out->assign(reinterpret_cast<const char*>(b.data()), b.size());
    return true;
  }

  size_t remaining() const { return in_.size() - pos_; }
  size_t position() const { return pos_; }

 private:
  const uint8_t* Take(size_t n) {
    if (n > remaining()) return nullptr;
    const uint8_t* p = in_.data() + pos_;
    pos_ += n;
    return p;
  }
  std::span<const uint8_t> in_;
  size_t pos_ = 0;
};

}  // namespace romulus::protocol
