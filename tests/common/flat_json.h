// A strict little reader for the flat JSON objects Romulus writes (stats
// lines, control replies): {"key":value,...} with numbers, booleans, null and
// strings only. Tests use it to check key sets, order and values.
#pragma once

#include <gtest/gtest.h>

#include <string>
#include <utility>
#include <vector>

namespace romulus::test_json {

using Members = std::vector<std::pair<std::string, std::string>>;

// Parses one flat JSON object ({"k":v,...}: numbers, booleans, strings, null)
// into its members in order; fails the test on anything else.
inline Members ParseFlatObject(const std::string& s) {
  Members out;
  size_t i = 0;
  auto fail = [&](const char* why) {
    ADD_FAILURE() << why << " at " << i << " in " << s;
    return Members{};
  };
  auto string_at = [&](std::string* v) {
    if (i >= s.size() || s[i] != '"') return false;
    for (++i; i < s.size() && s[i] != '"'; ++i) {
      if (s[i] == '\\') ++i;
      if (i < s.size()) v->push_back(s[i]);
    }
    if (i >= s.size()) return false;
    ++i;
    return true;
  };
  if (s.empty() || s[0] != '{' || s.back() != '}') return fail("not an object");
  i = 1;
  while (i < s.size() - 1) {
    std::string key, value;
    if (!string_at(&key)) return fail("bad key");
    if (i >= s.size() || s[i] != ':') return fail("no colon");
    ++i;
    if (s[i] == '"') {
      if (!string_at(&value)) return fail("bad string");
      value = "\"" + value + "\"";
    } else {
      while (i < s.size() - 1 && s[i] != ',') value.push_back(s[i++]);
      if (value.empty() || value.find_first_of("{}[]\" ") != std::string::npos) return fail("bad value");
    }
    out.emplace_back(key, value);
    if (i < s.size() - 1) {
      if (s[i] != ',') return fail("no comma");
      ++i;
    }
  }
  return out;
}

inline std::vector<std::string> Keys(const Members& m) {
  std::vector<std::string> k;
  for (const auto& [key, value] : m) k.push_back(key);
  return k;
}

inline std::string Value(const Members& m, const std::string& key) {
  for (const auto& [k, v] : m) {
    if (k == key) return v;
  }
  return "<missing>";
}

}  // namespace romulus::test_json
