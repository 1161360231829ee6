#include "llm_gateway/translate/json_scan.hpp"

#include <algorithm>
#include <array>
#include <cctype>
#include <charconv>
#include <cstdint>
#include <cstring>
#if defined(__SSE2__)
#include <emmintrin.h>
#endif

// The scanner's small steps, inlined into the containers' loops whatever else the file holds:
// GCC's inlining budget is per file, and an unrelated edit elsewhere here once moved string()
// out of line and cost 3k instructions per request.
#define LLMGW_HOT [[gnu::always_inline]] inline

namespace llmgw::json {

const Member* ScanResult::find(std::string_view key) const {
  // The last occurrence wins, as in most JSON parsers (and so, presumably, the upstream's).
  for (auto it = members.rbegin(); it != members.rend(); ++it) {
    if (it->key == key) return &*it;
  }
  return nullptr;
}

namespace {

// Bytes that are structure inside a container the trusted skip walks over: strings (whose
// contents may hold brackets) and brackets themselves.
constexpr auto kSkipStructural = [] {
  std::array<bool, 256> t{};
  for (char c : {'"', '{', '}', '[', ']'}) t[static_cast<unsigned char>(c)] = true;
  return t;
}();

// Bytes that end a number or literal.
constexpr auto kValueEnd = [] {
  std::array<bool, 256> t{};
  for (char c : {',', '}', ']', ' ', '\n', '\r', '\t'}) t[static_cast<unsigned char>(c)] = true;
  return t;
}();

#if defined(__SSE2__)
// The mask of the 16 bytes at p that are a quote, a backslash, or (with controls) below 0x20.
template <bool WithControls>
int special_mask(const char* p) {
  const __m128i v = _mm_loadu_si128(reinterpret_cast<const __m128i*>(p));
  __m128i hit =
      _mm_or_si128(_mm_cmpeq_epi8(v, _mm_set1_epi8('"')), _mm_cmpeq_epi8(v, _mm_set1_epi8('\\')));
  if constexpr (WithControls) {
    const __m128i max_control = _mm_set1_epi8(0x1F);  // v <= 0x1F unsigned: max(v, 0x1F) == 0x1F
    hit = _mm_or_si128(hit, _mm_cmpeq_epi8(_mm_max_epu8(v, max_control), max_control));
  }
  return _mm_movemask_epi8(hit);
}
#endif

// The first byte in [p, end) that is a quote or a backslash (or, WithControls, a control byte),
// or end. String content is most of a request or response body: this is the scanner's hot loop,
// 16 bytes at a time where SSE2 exists (every x86-64), one table entry per byte otherwise.
template <bool WithControls>
const char* find_string_special(const char* p, const char* const end) {
#if defined(__SSE2__)
  while (end - p >= 16) {
    if (const int mask = special_mask<WithControls>(p)) return p + __builtin_ctz(mask);
    p += 16;
  }
#endif
  for (; p < end; ++p) {
    const auto c = static_cast<unsigned char>(*p);
    if (c == '"' || c == '\\' || (WithControls && c < 0x20)) return p;
  }
  return end;
}

// Set bits of a 16-bit mask. Inline bit arithmetic: without -mpopcnt (not in baseline x86-64)
// __builtin_popcount is a call into libgcc, which showed up in the profile.
inline unsigned popcount16(unsigned x) {
  x = x - ((x >> 1) & 0x5555u);
  x = (x & 0x3333u) + ((x >> 2) & 0x3333u);
  x = (x + (x >> 4)) & 0x0F0Fu;
  return (x + (x >> 8)) & 0x1Fu;
}

// The first quote or bracket in [p, end), or end. One byte at a time: inside the objects the
// gateway skips (content-filter results, usage) structure is every few bytes, where a 16-byte
// SIMD test measured slower than the table.
const char* find_structural(const char* p, const char* const end) {
  while (p < end && !kSkipStructural[static_cast<unsigned char>(*p)]) ++p;
  return p;
}

// Past the closing quote of a string whose contents start at p, assuming it is valid (a backslash
// escapes the next byte; nothing else is checked). Never beyond end.
const char* skip_string_trusted(const char* p, const char* const end) {
  for (;;) {
    p = find_string_special<false>(p, end);
    if (p == end) return end;
    if (*p == '"') return p + 1;
    p = end - p > 2 ? p + 2 : end;  // a backslash and the byte it escapes
  }
}

// Past the value starting at p (not white space), assuming it is valid JSON: a container is
// skipped by counting brackets outside strings, nothing inside is validated. Never beyond end,
// whatever the bytes are.
const char* skip_value_trusted(const char* p, const char* const end) {
  const char c = *p;
  if (c == '"') return skip_string_trusted(p + 1, end);
  if (c != '{' && c != '[') {
    while (p < end && !kValueEnd[static_cast<unsigned char>(*p)]) ++p;
    return p;
  }
  std::size_t depth = 0;
  while ((p = find_structural(p, end)) < end) {
    const char b = *p;
    if (b == '"') {
      p = skip_string_trusted(p + 1, end);
    } else if (b == '{' || b == '[') {
      ++depth;
      ++p;
    } else {
      ++p;
      if (--depth == 0) return p;
    }
  }
  return end;
}

Kind kind_of_first(char c) {
  switch (c) {
    case '{': return Kind::object;
    case '[': return Kind::array;
    case '"': return Kind::string;
    case 't':
    case 'f': return Kind::boolean;
    case 'n': return Kind::null;
    default: return Kind::number;
  }
}

}  // namespace

namespace {

class Scanner {
 public:
  // trusted: the text is known to be valid JSON (a value span of a document a validating scan
  // accepted), so values below the top level are skipped without validation.
  explicit Scanner(std::string_view text, bool trusted = false)
      : begin_(text.data()), end_(text.data() + text.size()), trusted_(trusted) {}
  // Reports values to `visitor` as it validates (a validating scan only).
  Scanner(std::string_view text, WalkVisitor& visitor)
      : begin_(text.data()), end_(text.data() + text.size()), visitor_(&visitor) {}

  ScanResult run(bool whole) {
    ScanResult r;
    const char* p = skip_ws(begin_);
    if (p < end_ && *p == '{') {
      r.is_object = true;
      top_members_ = &r.members;
    } else if (p < end_ && *p == '[') {
      r.is_array = true;
      top_elements_ = &r.elements;
    }
    Kind k{};
    if (const char* after = value(p, 0, k, kSkip)) {
      r.consumed = offset(after);
      p = skip_ws(after);
      if (whole && p != end_) fail(p, "unexpected data after the JSON value");
    }
    r.valid = error_.empty();
    if (!r.valid) {
      r.error = error_;
      r.error_offset = error_offset_;
      r.members.clear();
      r.elements.clear();
      r.is_object = false;
      r.is_array = false;
    }
    return r;
  }

  // walk(): the whole text as one value, reported to the visitor; no member lists built.
  bool walk() {
    const char* const p = skip_ws(begin_);
    const int id =
        p < end_ ? visitor_->enter(WalkVisitor::kDocument, {}, kind_of_first(*p)) : kSkip;
    Kind k{};
    const char* const after = value(p, 0, k, id);
    if (!after) return false;
    if (id != kSkip) visitor_->leave(id, view(p, after));
    return skip_ws(after) == end_;
  }

 private:
  // The scan runs on a cursor (a pointer into the text) that each step takes and returns, so
  // the compiler keeps it in a register; a step that finds an error records it and returns
  // nullptr, which every caller passes on.
  std::nullptr_t fail(const char* at, const char* why) {
    if (error_.empty()) {
      error_ = why;
      error_offset_ = offset(at);
    }
    return nullptr;
  }
  std::size_t offset(const char* p) const { return static_cast<std::size_t>(p - begin_); }
  static std::string_view view(const char* from, const char* to) {
    return {from, static_cast<std::size_t>(to - from)};
  }

  // Called about four times per member, mostly where there is no white space: one compare says
  // so (every white-space byte is at most ' ').
  LLMGW_HOT const char* skip_ws(const char* p) const {
    while (p < end_ && static_cast<unsigned char>(*p) <= ' ' &&
           (*p == ' ' || *p == '\n' || *p == '\r' || *p == '\t'))
      ++p;
    return p;
  }

  LLMGW_HOT const char* literal(const char* p, std::string_view word) {
    if (static_cast<std::size_t>(end_ - p) < word.size() ||
        std::memcmp(p, word.data(), word.size()) != 0)
      return fail(p, "invalid literal");
    return p + word.size();
  }

  // p at the opening quote; returns what follows the closing one. Most of a request or response
  // body is string content: the next special byte is found 16 at a time.
  LLMGW_HOT const char* string(const char* p) {
    ++p;
    for (;;) {
      p = find_string_special<true>(p, end_);
      if (p >= end_) break;
      const auto c = static_cast<unsigned char>(*p);
      if (c == '"') return p + 1;
      if (c < 0x20) return fail(p, "control character in string");
      // a backslash
      if (++p >= end_) break;
      if (*p == 'u') {
        for (int i = 1; i <= 4; ++i) {
          if (p + i >= end_ || !std::isxdigit(static_cast<unsigned char>(p[i])))
            return fail(p, "invalid \\u escape");
        }
        p += 4;
      } else if (std::string_view("\"\\/bfnrt").find(*p) == std::string_view::npos) {
        return fail(p, "invalid escape in string");
      }
      ++p;
    }
    return fail(end_, "unterminated string");
  }

  LLMGW_HOT const char* number(const char* p) {
    if (*p == '-') ++p;
    auto digits = [&] {
      const char* const first = p;
      while (p < end_ && *p >= '0' && *p <= '9') ++p;
      return p != first;
    };
    if (p < end_ && *p == '0') {
      ++p;
    } else if (!digits()) {
      return fail(p, "invalid number");
    }
    if (p < end_ && *p == '.') {
      ++p;
      if (!digits()) return fail(p, "invalid number");
    }
    if (p < end_ && (*p == 'e' || *p == 'E')) {
      ++p;
      if (p < end_ && (*p == '+' || *p == '-')) ++p;
      if (!digits()) return fail(p, "invalid number");
    }
    return p;
  }

  // A member's or element's value: strings, numbers and literals (most values) are scanned here,
  // in the container's loop, without a call into value(), which the containers' recursion makes
  // a heavy function to enter.
  LLMGW_HOT const char* member_value(const char* p, int depth, Kind& kind, int id) {
    if (p < end_ && !(trusted_ && depth > 0)) {
      const char c = *p;
      if (c == '"') {
        kind = Kind::string;
        return string(p);
      }
      if (c == '-' || (c >= '0' && c <= '9')) {
        kind = Kind::number;
        return number(p);
      }
      if (c == 'f') {
        kind = Kind::boolean;
        return literal(p, "false");
      }
      if (c == 't') {
        kind = Kind::boolean;
        return literal(p, "true");
      }
      if (c == 'n') {
        kind = Kind::null;
        return literal(p, "null");
      }
    }
    return value(p, depth, kind, id);
  }

  // The value at p (white space before it already skipped); `id`: what the visitor called it
  // (kSkip: nothing inside it is reported). Returns what follows it.
  const char* value(const char* p, int depth, Kind& kind, int id) {
    if (p >= end_) return fail(p, "unexpected end of JSON");
    if (trusted_ && depth > 0) {  // below the top level: only its extent is needed
      kind = kind_of_first(*p);
      return skip_value_trusted(p, end_);
    }
    switch (*p) {
      case '{': kind = Kind::object; return object(p, depth + 1, id);
      case '[': kind = Kind::array; return array(p, depth + 1, id);
      case '"': kind = Kind::string; return string(p);
      case 't': kind = Kind::boolean; return literal(p, "true");
      case 'f': kind = Kind::boolean; return literal(p, "false");
      case 'n': kind = Kind::null; return literal(p, "null");
      default:
        kind = Kind::number;
        if (*p == '-' || (*p >= '0' && *p <= '9')) return number(p);
        return fail(p, "unexpected character");
    }
  }

  const char* object(const char* p, int depth, int id) {
    if (depth > kMaxDepth) return fail(p, "JSON nested too deeply");
    const bool top = depth == 1 && top_members_ != nullptr;
    p = skip_ws(p + 1);
    if (p < end_ && *p == '}') return p + 1;
    for (;;) {  // at a member name: white space before it is skipped
      if (p >= end_ || *p != '"') return fail(p, "expected a member name");
      const char* const key_end = string(p);
      if (!key_end) return nullptr;
      const std::string_view key = view(p + 1, key_end - 1);
      p = skip_ws(key_end);
      if (p >= end_ || *p != ':') return fail(p, "expected ':'");
      p = skip_ws(p + 1);
      const char* const value_begin = p;
      const int child =
          id != kSkip && p < end_ ? visitor_->enter(id, key, kind_of_first(*p)) : kSkip;
      Kind k{};
      p = member_value(p, depth, k, child);
      if (!p) return nullptr;
      if (top) top_members_->push_back(Member{key, offset(value_begin), offset(p), k});
      if (child != kSkip) visitor_->leave(child, view(value_begin, p));
      p = skip_ws(p);
      if (p >= end_) return fail(p, "unterminated object");
      if (*p == ',') {
        p = skip_ws(p + 1);
        continue;
      }
      if (*p == '}') return p + 1;
      return fail(p, "expected ',' or '}'");
    }
  }

  const char* array(const char* p, int depth, int id) {
    if (depth > kMaxDepth) return fail(p, "JSON nested too deeply");
    p = skip_ws(p + 1);
    if (p < end_ && *p == ']') return p + 1;
    const bool top = depth == 1 && top_elements_ != nullptr;
    for (;;) {  // at an element: white space before it is skipped
      const char* const value_begin = p;
      const int child =
          id != kSkip && p < end_ ? visitor_->enter(id, {}, kind_of_first(*p)) : kSkip;
      Kind k{};
      p = member_value(p, depth, k, child);
      if (!p) return nullptr;
      if (top) top_elements_->push_back(Span{offset(value_begin), offset(p), k});
      if (child != kSkip) visitor_->leave(child, view(value_begin, p));
      p = skip_ws(p);
      if (p >= end_) return fail(p, "unterminated array");
      if (*p == ',') {
        p = skip_ws(p + 1);
        continue;
      }
      if (*p == ']') return p + 1;
      return fail(p, "expected ',' or ']'");
    }
  }

  static constexpr int kSkip = WalkVisitor::kSkip;

  const char* const begin_;
  const char* const end_;
  bool trusted_ = false;
  WalkVisitor* visitor_ = nullptr;
  std::string error_;
  std::size_t error_offset_ = 0;
  MemberList* top_members_ = nullptr;
  SpanList* top_elements_ = nullptr;
};

void append_utf8(std::string& out, std::uint32_t cp) {
  if (cp < 0x80) {
    out += static_cast<char>(cp);
  } else if (cp < 0x800) {
    out += static_cast<char>(0xC0 | (cp >> 6));
    out += static_cast<char>(0x80 | (cp & 0x3F));
  } else if (cp < 0x10000) {
    out += static_cast<char>(0xE0 | (cp >> 12));
    out += static_cast<char>(0x80 | ((cp >> 6) & 0x3F));
    out += static_cast<char>(0x80 | (cp & 0x3F));
  } else {
    out += static_cast<char>(0xF0 | (cp >> 18));
    out += static_cast<char>(0x80 | ((cp >> 12) & 0x3F));
    out += static_cast<char>(0x80 | ((cp >> 6) & 0x3F));
    out += static_cast<char>(0x80 | (cp & 0x3F));
  }
}

std::optional<std::uint32_t> hex4(std::string_view s, std::size_t at) {
  if (at + 4 > s.size()) return std::nullopt;
  std::uint32_t v = 0;
  for (std::size_t i = at; i < at + 4; ++i) {
    const char c = s[i];
    v <<= 4;
    if (c >= '0' && c <= '9') {
      v |= static_cast<std::uint32_t>(c - '0');
    } else if (c >= 'a' && c <= 'f') {
      v |= static_cast<std::uint32_t>(c - 'a' + 10);
    } else if (c >= 'A' && c <= 'F') {
      v |= static_cast<std::uint32_t>(c - 'A' + 10);
    } else {
      return std::nullopt;
    }
  }
  return v;
}

}  // namespace

PlainRun plain_run(std::string_view text, std::size_t from, std::size_t to) {
  to = std::min(to, text.size());
  const char* p = text.data() + std::min(from, to);
  const char* const end = text.data() + to;
  std::size_t chars = 0;
#if defined(__SSE2__)
  while (end - p >= 16) {
    const __m128i v = _mm_loadu_si128(reinterpret_cast<const __m128i*>(p));
    const __m128i continuation =
        _mm_cmpeq_epi8(_mm_and_si128(v, _mm_set1_epi8(static_cast<char>(0xC0))),
                       _mm_set1_epi8(static_cast<char>(0x80)));
    const auto cont = static_cast<unsigned>(_mm_movemask_epi8(continuation));
    if (const auto special = static_cast<unsigned>(special_mask<false>(p))) {
      const unsigned k = static_cast<unsigned>(__builtin_ctz(special));
      chars += k - popcount16(cont & ((1u << k) - 1));
      return {static_cast<std::size_t>(p + k - text.data()), chars};
    }
    chars += 16 - (cont != 0 ? popcount16(cont) : 0);
    p += 16;
  }
#endif
  for (; p < end; ++p) {
    const auto c = static_cast<unsigned char>(*p);
    if (c == '"' || c == '\\') break;
    if ((c & 0xC0) != 0x80) ++chars;
  }
  return {static_cast<std::size_t>(p - text.data()), chars};
}

ScanResult scan(std::string_view text) {
  return Scanner(text).run(true);
}

ScanResult scan_prefix(std::string_view text) {
  return Scanner(text).run(false);
}

ScanResult scan_valid(std::string_view text) {
  return Scanner(text, true).run(true);
}

bool walk(std::string_view text, WalkVisitor& visitor) {
  return Scanner(text, visitor).walk();
}

std::optional<long long> integer_value(std::string_view token) {
  long long v = 0;
  const auto [p, ec] = std::from_chars(token.data(), token.data() + token.size(), v);
  if (ec != std::errc() || p != token.data() + token.size()) return std::nullopt;
  return v;
}

std::optional<long long> integer_member(std::string_view text, const ScanResult& r,
                                        std::string_view key) {
  const Member* m = r.find(key);
  if (!m || m->kind != Kind::number) return std::nullopt;
  return integer_value(text.substr(m->value_begin, m->value_end - m->value_begin));
}

std::optional<std::string> decode_string(std::string_view token) {
  if (token.size() < 2 || token.front() != '"' || token.back() != '"') return std::nullopt;
  std::string_view s = token.substr(1, token.size() - 2);
  std::string out;
  out.reserve(s.size());
  for (std::size_t i = 0; i < s.size(); ++i) {
    if (s[i] != '\\') {
      out += s[i];
      continue;
    }
    if (++i >= s.size()) return std::nullopt;
    switch (s[i]) {
      case '"': out += '"'; break;
      case '\\': out += '\\'; break;
      case '/': out += '/'; break;
      case 'b': out += '\b'; break;
      case 'f': out += '\f'; break;
      case 'n': out += '\n'; break;
      case 'r': out += '\r'; break;
      case 't': out += '\t'; break;
      case 'u': {
        auto cp = hex4(s, i + 1);
        if (!cp) return std::nullopt;
        i += 4;
        if (*cp >= 0xD800 && *cp <= 0xDBFF && i + 2 < s.size() && s[i + 1] == '\\' &&
            s[i + 2] == 'u') {
          auto lo = hex4(s, i + 3);
          if (lo && *lo >= 0xDC00 && *lo <= 0xDFFF) {
            *cp = 0x10000 + ((*cp - 0xD800) << 10) + (*lo - 0xDC00);
            i += 6;
          }
        }
        append_utf8(out, *cp);
        break;
      }
      default: return std::nullopt;
    }
  }
  return out;
}

namespace {
// Length of the valid UTF-8 sequence starting at s[i], or 0 if it is not one.
std::size_t utf8_sequence(std::string_view s, std::size_t i) {
  const auto b0 = static_cast<unsigned char>(s[i]);
  std::size_t len = 0;
  std::uint32_t min = 0;
  if (b0 >= 0xC2 && b0 <= 0xDF) {
    len = 2;
    min = 0x80;
  } else if (b0 >= 0xE0 && b0 <= 0xEF) {
    len = 3;
    min = 0x800;
  } else if (b0 >= 0xF0 && b0 <= 0xF4) {
    len = 4;
    min = 0x10000;
  } else {
    return 0;
  }
  if (i + len > s.size()) return 0;
  std::uint32_t cp = b0 & (0xFF >> (len + 1));
  for (std::size_t k = 1; k < len; ++k) {
    const auto b = static_cast<unsigned char>(s[i + k]);
    if ((b & 0xC0) != 0x80) return 0;
    cp = cp << 6 | (b & 0x3F);
  }
  if (cp < min || cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF)) return 0;
  return len;
}
}  // namespace

std::string_view truncate_chars(std::string_view text, std::size_t max_chars) {
  std::size_t chars = 0;
  for (std::size_t i = 0; i < text.size(); ++i) {
    if ((static_cast<unsigned char>(text[i]) & 0xC0) == 0x80) continue;  // continuation byte
    if (chars++ == max_chars) return text.substr(0, i);
  }
  return text;
}

void append_encoded(std::string& out, std::string_view value) {
  static constexpr char kHex[] = "0123456789abcdef";
  out += '"';
  const char* const begin = value.data();
  const char* const end = begin + value.size();
  const char* p = begin;
  for (;;) {
    // The run of bytes that need no escaping is appended whole (16 bytes tested at a time; the
    // byte loop finishes the tail, and stops at once on a byte the block test found).
    const char* run_end = p;
#if defined(__SSE2__)
    while (end - run_end >= 16) {
      const __m128i v = _mm_loadu_si128(reinterpret_cast<const __m128i*>(run_end));
      // Bytes >= 0x80 have the top bit, which movemask takes directly.
      const int mask = special_mask<true>(run_end) | _mm_movemask_epi8(v);
      if (mask != 0) {
        run_end += __builtin_ctz(static_cast<unsigned>(mask));
        break;
      }
      run_end += 16;
    }
#endif
    while (run_end < end) {
      const auto c = static_cast<unsigned char>(*run_end);
      if (c < 0x20 || c == '"' || c == '\\' || c >= 0x80) break;
      ++run_end;
    }
    out.append(p, static_cast<std::size_t>(run_end - p));
    p = run_end;
    if (p == end) break;
    const auto c = static_cast<unsigned char>(*p);
    if (c >= 0x80) {
      // Bytes that are not UTF-8 (a Latin-1 header, a cut character) cannot appear in a JSON
      // string: each becomes U+FFFD, so the document stays valid.
      const auto i = static_cast<std::size_t>(p - begin);
      if (const std::size_t len = utf8_sequence(value, i)) {
        out.append(p, len);
        p += len;
      } else {
        out += "\xEF\xBF\xBD";
        ++p;
      }
      continue;
    }
    switch (c) {
      case '"': out += "\\\""; break;
      case '\\': out += "\\\\"; break;
      case '\n': out += "\\n"; break;
      case '\r': out += "\\r"; break;
      case '\t': out += "\\t"; break;
      default:
        out += "\\u00";
        out += kHex[c >> 4];
        out += kHex[c & 0xF];
    }
    ++p;
  }
  out += '"';
}

std::string encode_string(std::string_view value) {
  std::string out;
  out.reserve(value.size() + 2);
  append_encoded(out, value);
  return out;
}

}  // namespace llmgw::json
