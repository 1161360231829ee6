#pragma once
#include <string_view>

namespace llmgw {

// Glob match on a whole string: `*` matches any run of characters (including '/'), `?` exactly one
// character; everything else matches itself. Linear-time backtracking on the last `*`.
bool glob_match(std::string_view pattern, std::string_view text);

// True when the pattern contains no wildcard, i.e. it names exactly one model.
bool glob_is_literal(std::string_view pattern);

}  // namespace llmgw
