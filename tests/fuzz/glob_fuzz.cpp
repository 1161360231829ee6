// Glob matching of the model a client names (any bytes, from the body or the path) against the
// configured routes and key allow-lists. The input's first line is the pattern, the rest the
// subject (which may hold any byte, '\n' included). glob_match must agree with a plain
// dynamic-programming matcher and stay linear: a slow pattern shows up as a libFuzzer timeout.
#include <cstddef>
#include <cstdint>
#include <string_view>
#include <vector>

#include "fuzz_support.hpp"
#include "llm_gateway/routing/glob.hpp"

namespace {

using llmgw::fuzz::require;

// match[i][j]: pattern[i..] matches text[j..]. O(|pattern| * |text|), so only for short inputs.
bool reference_match(std::string_view pattern, std::string_view text) {
  const std::size_t n = pattern.size();
  const std::size_t m = text.size();
  std::vector<std::vector<char>> match(n + 1, std::vector<char>(m + 1, 0));
  match[n][m] = 1;
  for (std::size_t i = n; i-- > 0;) {
    for (std::size_t j = m + 1; j-- > 0;) {
      if (pattern[i] == '*') {
        match[i][j] = match[i + 1][j] || (j < m && match[i][j + 1]);
      } else if (j < m && (pattern[i] == '?' || pattern[i] == text[j])) {
        match[i][j] = match[i + 1][j + 1];
      }
    }
  }
  return match[0][0] != 0;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const auto [pattern, subject] = llmgw::fuzz::split_first_line(llmgw::fuzz::as_text(data, size));
  const bool matched = llmgw::glob_match(pattern, subject);
  require(llmgw::glob_match(pattern, pattern), "a pattern matches its own text");
  require(llmgw::glob_match("*", subject), "'*' matches everything");
  if (llmgw::glob_is_literal(pattern)) {
    require(matched == (pattern == subject), "a literal pattern matches only itself");
  }
  if (pattern.size() * subject.size() <= 64 * 1024) {
    require(matched == reference_match(pattern, subject), "glob_match agrees with the reference");
  }
  return 0;
}
