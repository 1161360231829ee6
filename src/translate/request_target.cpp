#include "llm_gateway/translate/request_target.hpp"

#include <array>
#include <boost/beast/core/string.hpp>

namespace llmgw {
using boost::beast::iequals;

namespace {

enum CharClass : unsigned char {
  kPathChar = 1,   // RFC 3986 pchar without '%': unreserved, sub-delims, ':' and '@'
  kQueryChar = 2,  // pchar, '/' and '?'
  kHostChar = 4,   // reg-name, IP literal brackets and the port colon
};

constexpr std::array<unsigned char, 256> make_classes() {
  std::array<unsigned char, 256> t{};
  auto add = [&t](std::string_view chars, unsigned char cls) {
    for (const char c : chars) t[static_cast<unsigned char>(c)] |= cls;
  };
  constexpr std::string_view alnum =
      "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789";
  constexpr std::string_view other_unreserved = "-._~";
  constexpr std::string_view sub_delims = "!$&'()*+,;=";
  for (auto chars : {alnum, other_unreserved, sub_delims, std::string_view(":@")}) {
    add(chars, kPathChar | kQueryChar | kHostChar);
  }
  add("/?", kQueryChar);
  add("[]", kHostChar);
  return t;
}
constexpr auto kClasses = make_classes();

int hex_value(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

// Every byte of `s` is of class `cls` or part of a well-formed %XX.
bool well_formed(std::string_view s, unsigned char cls) {
  for (std::size_t i = 0; i < s.size(); ++i) {
    const auto c = static_cast<unsigned char>(s[i]);
    if (kClasses[c] & cls) continue;
    if (c != '%' || i + 2 >= s.size()) return false;
    if (hex_value(s[i + 1]) < 0 || hex_value(s[i + 2]) < 0) return false;
    i += 2;
  }
  return true;
}

struct Segment {
  std::string_view raw;
  bool dot = false;          // "." or "..", however encoded
  bool separator = false;    // an encoded '/', '\' or a control byte
  bool deployments = false;  // "deployments" or "engines" in any case, however encoded
};

Segment inspect_segment(std::string_view raw) {
  Segment s{raw};
  std::array<char, 12> decoded{};  // enough to recognise the names below
  std::size_t decoded_size = 0;
  for (std::size_t i = 0; i < raw.size(); ++i) {
    char c = raw[i];
    if (c == '%') {  // well_formed() has checked the two hex digits
      c = static_cast<char>(hex_value(raw[i + 1]) * 16 + hex_value(raw[i + 2]));
      i += 2;
      const auto u = static_cast<unsigned char>(c);
      if (c == '/' || c == '\\' || u < 0x20 || u == 0x7f) s.separator = true;
    }
    if (decoded_size < decoded.size()) decoded[decoded_size] = c;
    ++decoded_size;
  }
  s.dot = (decoded_size == 1 && decoded[0] == '.') ||
          (decoded_size == 2 && decoded[0] == '.' && decoded[1] == '.');
  if (decoded_size <= decoded.size()) {
    const std::string_view name(decoded.data(), decoded_size);
    s.deployments = iequals(name, "deployments") || iequals(name, "engines");
  }
  return s;
}

TargetCheck check_origin(std::string_view origin) {
  TargetCheck out{origin, {}};
  const std::size_t q = origin.find('?');
  const std::string_view path = origin.substr(0, q);
  const std::string_view query =
      q == std::string_view::npos ? std::string_view{} : origin.substr(q + 1);
  if (path.empty() || path.front() != '/') {
    out.error = "The request target must be an absolute path.";
    return out;
  }
  if (!well_formed(path.substr(1), kPathChar | kQueryChar) || path.find('?') != path.npos) {
    out.error = "The request path has bytes a URI path may not contain.";
    return out;
  }
  if (!well_formed(query, kQueryChar)) {
    out.error = "The request query has bytes a URI query may not contain.";
    return out;
  }
  // Segments after the leading '/'. An empty last segment (a trailing '/') is tolerated.
  std::array<std::string_view, 3> head{};  // the first three segments, for the deployment rule
  std::size_t index = 0;
  std::size_t pos = 1;
  for (;;) {
    const std::size_t slash = path.find('/', pos);
    const std::string_view raw =
        path.substr(pos, slash == std::string_view::npos ? std::string_view::npos : slash - pos);
    const bool last = slash == std::string_view::npos;
    if (raw.empty() && !last) {
      out.error = "The request path has an empty segment ('//').";
      return out;
    }
    const Segment seg = inspect_segment(raw);
    if (seg.dot) {
      out.error = "The request path has a dot-segment ('.' or '..').";
      return out;
    }
    if (seg.separator) {
      out.error = "The request path has an encoded '/', '\\' or control character in a segment.";
      return out;
    }
    if (index < head.size()) head[index] = raw;
    // Only /openai/deployments/{name}/{operation} may select a deployment; any other place a
    // deployments (or engines) segment stands is a resource-level path aiming at one.
    const bool azure_deployment_slot = index == 1 && head[0] == "openai" && raw == "deployments";
    if (seg.deployments && !azure_deployment_slot) {
      out.error = "The request path names a deployment outside /openai/deployments/{name}/.";
      return out;
    }
    ++index;
    if (last) break;
    pos = slash + 1;
  }
  if (head[0] == "openai" && head[1] == "deployments") {
    // The deployment's name and an operation must follow (index counts segments, a trailing
    // empty one included).
    const std::string_view name = head[2];
    const bool has_operation = index >= 4 && !(index == 4 && path.back() == '/');
    if (name.empty() || !has_operation) {
      out.error = "An Azure deployment path needs /openai/deployments/{name}/{operation}.";
      return out;
    }
  }
  return out;
}

}  // namespace

TargetCheck check_request_target(std::string_view target) {
  if (target.empty()) return {target, "The request target is empty."};
  if (target.front() == '/') return check_origin(target);
  // absolute-form: scheme "://" authority [path-abempty] [ "?" query ]
  const std::size_t colon = target.find("://");
  if (colon == std::string_view::npos ||
      !(iequals(target.substr(0, colon), "http") || iequals(target.substr(0, colon), "https")))
    return {target, "The request target must be an absolute path or an http(s) URL."};
  const std::size_t authority_begin = colon + 3;
  std::size_t path_begin = target.find_first_of("/?", authority_begin);
  if (path_begin == std::string_view::npos) path_begin = target.size();
  const std::string_view authority = target.substr(authority_begin, path_begin - authority_begin);
  if (authority.empty() || !well_formed(authority, kHostChar))
    return {target, "The request target's host is not valid."};
  // The host is ignored: the gateway decides where requests go, never the client.
  if (path_begin == target.size() || target[path_begin] == '?') return {std::string_view("/"), {}};
  return check_origin(target.substr(path_begin));
}

bool valid_deployment_name(std::string_view name) {
  if (name.empty() || name == "." || name == "..") return false;
  for (const char c : name) {
    const bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
                    c == '-' || c == '_' || c == '.';
    if (!ok) return false;
  }
  return true;
}

}  // namespace llmgw
