#pragma once
// A validating, non-allocating JSON scanner that reports the byte spans of an object's top-level
// members. The gateway needs only a few fields of a request body (model, stream, ...) and must be
// able to replace one in place; building a DOM of a 25 MiB body for that would be wasteful.
#include <cstddef>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace llmgw::json {

enum class Kind { string, number, object, array, boolean, null };

struct Member {
  std::string_view key;    // raw key text between the quotes (escapes not decoded)
  std::size_t value_begin = 0;  // byte offsets of the value in the scanned text
  std::size_t value_end = 0;
  Kind kind = Kind::null;
};

struct ScanResult {
  bool valid = false;
  std::size_t error_offset = 0;
  std::string error;             // why the text is not valid JSON
  bool is_object = false;        // top-level value is an object
  std::vector<Member> members;   // its members, in order (only when is_object)

  const Member* find(std::string_view key) const;
};

inline constexpr int kMaxDepth = 128;

// Validates `text` as exactly one JSON value (surrounding white space allowed).
ScanResult scan(std::string_view text);

// Decodes the contents of a JSON string token (with its quotes). nullopt if malformed.
std::optional<std::string> decode_string(std::string_view token);

// Encodes `value` as a JSON string token, quotes included.
std::string encode_string(std::string_view value);

}  // namespace llmgw::json
