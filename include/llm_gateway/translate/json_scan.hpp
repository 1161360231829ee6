#pragma once
// A validating JSON scanner, allocation-free for ordinary documents, that reports the byte spans of
// an object's top-level members. The gateway needs only a few fields of a request body (model,
// stream, ...) and must be able to replace one in place; building a DOM of a 25 MiB body for that
// would be wasteful.
#include <boost/container/small_vector.hpp>
#include <cstddef>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace llmgw::json {

enum class Kind { string, number, object, array, boolean, null };

struct Member {
  std::string_view key;         // raw key text between the quotes (escapes not decoded)
  std::size_t value_begin = 0;  // byte offsets of the value in the scanned text
  std::size_t value_end = 0;
  Kind kind = Kind::null;
};

struct Span {
  std::size_t begin = 0;
  std::size_t end = 0;
  Kind kind = Kind::null;
};

// A scan's member and element lists live inline up to these counts (every response object and
// content-filter category the gateway reads fits): a scan then allocates nothing, where a vector
// cost a malloc per scan — about 25 per request with Azure's content-filter results.
using MemberList = boost::container::small_vector<Member, 16>;
using SpanList = boost::container::small_vector<Span, 8>;

struct ScanResult {
  bool valid = false;
  std::size_t error_offset = 0;
  std::string error;         // why the text is not valid JSON
  bool is_object = false;    // top-level value is an object
  MemberList members;        // its members, in order (only when is_object)
  bool is_array = false;     // top-level value is an array
  SpanList elements;         // its elements, in order (only when is_array)
  std::size_t consumed = 0;  // bytes of the first value (scan_prefix)

  const Member* find(std::string_view key) const;
  std::string_view text_of(std::string_view text, const Member& m) const {
    return text.substr(m.value_begin, m.value_end - m.value_begin);
  }
};

inline constexpr int kMaxDepth = 128;

// Validates `text` as exactly one JSON value (surrounding white space allowed).
ScanResult scan(std::string_view text);

// Scans the first JSON value of `text` and ignores what follows it (ScanResult::consumed).
ScanResult scan_prefix(std::string_view text);

// Like scan, for text already known to be valid JSON: a member's or element's value span of a
// document that scan (or scan_valid) accepted. Reports the same top-level members and elements but
// skips every value below them without validating it, so reading nested objects of a validated
// document costs one pass over each level instead of a full validation each time. On text that
// is not valid JSON the result is unspecified (but every span stays inside the text).
ScanResult scan_valid(std::string_view text);

// What a walk reports to. A reader that needs a few values at known places of a document (a
// response's usage, each choice's finish_reason and content-filter results) gives each value it
// wants an id as the walk meets it, and ignores the rest: one validating pass over the bytes, no
// lists of members built and searched per level.
class WalkVisitor {
 public:
  static constexpr int kSkip = -1;     // an id that reports nothing inside the value
  static constexpr int kDocument = 0;  // the id the top value's parent has
  // A value begins inside a container whose id is `parent` (kDocument for the top value): `key`
  // is its raw member name (escapes not decoded; empty for an array element or the top value),
  // `kind` what its first byte says. Returns the value's id: kSkip reports nothing inside it and
  // no leave(); any other id is passed to leave() when the value ends, and to enter() as the
  // parent of its members or elements.
  virtual int enter(int parent, std::string_view key, Kind kind) = 0;
  // The value that enter() gave `id` has ended; `value` is its text.
  virtual void leave(int id, std::string_view value) = 0;

 protected:
  ~WalkVisitor() = default;
};

// Validates `text` as exactly one JSON value, as scan() does, reporting values to `visitor` as it
// meets them. Returns whether the text is valid; when it is not, values before the error have
// been reported already, so a reader keeps what it learnt aside until the walk has returned true.
bool walk(std::string_view text, WalkVisitor& visitor);

// Inside a JSON string's contents, from `from` up to `to`: where the next quote or backslash is
// (`to` if none), and how many UTF-8 code points (bytes that are not continuation bytes) come
// before it. What counting a prompt's characters spends its time on, 16 bytes at a time.
struct PlainRun {
  std::size_t end = 0;
  std::size_t chars = 0;
};
PlainRun plain_run(std::string_view text, std::size_t from, std::size_t to);

// The integer a value token is (a JSON number without fraction or exponent that fits a long
// long), or nullopt: any other token (a string, literal, container, a fraction) is not one.
std::optional<long long> integer_value(std::string_view token);
// integer_value of a member's value (the last occurrence of `key`), or nullopt.
std::optional<long long> integer_member(std::string_view text, const ScanResult& r,
                                        std::string_view key);

// Decodes the contents of a JSON string token (with its quotes). nullopt if malformed.
std::optional<std::string> decode_string(std::string_view token);

// Encodes `value` as a JSON string token, quotes included. Bytes that are not UTF-8 become
// U+FFFD, so the result is always valid JSON.
std::string encode_string(std::string_view value);
// The same, appended to `out` (no string of its own: the access log renders a line in place).
void append_encoded(std::string& out, std::string_view value);

// The first `max_chars` characters (UTF-8 code points) of `text`, never cutting one in half.
std::string_view truncate_chars(std::string_view text, std::size_t max_chars);

}  // namespace llmgw::json
