#pragma once
// Small helpers shared by the fuzz harnesses. They build with g++ too (the replay build), so
// they cannot use clang's FuzzedDataProvider.
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <string_view>
#include <utility>

namespace llmgw::fuzz {

inline std::string_view as_text(const std::uint8_t* data, std::size_t size) {
  return {reinterpret_cast<const char*>(data), size};
}

// A property that must hold for every input. Aborting makes libFuzzer (and the replay test)
// report the input as a crash, with this message and the stack above it.
inline void require(bool ok, const char* what) {
  if (ok) return;
  std::fprintf(stderr, "fuzz property violated: %s\n", what);
  std::abort();
}

// The input up to its first '\n' and what follows that '\n' (all of it first when none).
inline std::pair<std::string_view, std::string_view> split_first_line(std::string_view text) {
  const std::size_t nl = text.find('\n');
  if (nl == std::string_view::npos) return {text, std::string_view{}};
  return {text.substr(0, nl), text.substr(nl + 1)};
}

// Whether `part` is a view into `whole` (spans the parsers return must not point elsewhere).
inline bool within(std::string_view part, std::string_view whole) {
  if (part.empty()) return true;
  const auto p = reinterpret_cast<std::uintptr_t>(part.data());
  const auto w = reinterpret_cast<std::uintptr_t>(whole.data());
  return p >= w && p + part.size() <= w + whole.size();
}

}  // namespace llmgw::fuzz
