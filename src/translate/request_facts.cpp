#include "llm_gateway/translate/request_facts.hpp"

#include <algorithm>
#include <array>
#include <boost/beast/core/string.hpp>
#include <cctype>
#include <charconv>
#include <cmath>
#include <functional>
#include <limits>

#include "llm_gateway/translate/json_scan.hpp"

namespace llmgw {
using boost::beast::iequals;
namespace http = boost::beast::http;

namespace {

bool starts_with_segment(std::string_view path, std::string_view seg) {
  return path == seg ||
         (path.size() > seg.size() && path.starts_with(seg) && path[seg.size()] == '/');
}

struct OpInfo {
  std::string_view path;
  Endpoint endpoint;
};
// Operations that Azure serves under /openai/deployments/{deployment}/ (Azure OpenAI data-plane
// inference REST reference, learn.microsoft.com/azure/ai-foundry/openai/reference).
constexpr std::array<OpInfo, 8> kDeploymentOps{{
    {"chat/completions", Endpoint::chat_completions},
    {"completions", Endpoint::completions},
    {"embeddings", Endpoint::embeddings},
    {"audio/transcriptions", Endpoint::audio_transcriptions},
    {"audio/translations", Endpoint::audio_translations},
    {"audio/speech", Endpoint::audio_speech},
    {"images/generations", Endpoint::images_generations},
    {"images/edits", Endpoint::images_edits},
}};

void classify_op(http::verb method, std::string_view op, PathFacts& f) {
  f.op_path = std::string(op);
  for (const auto& d : kDeploymentOps) {
    if (op == d.path) {
      f.endpoint = d.endpoint;
      // GET /chat/completions lists stored completions: a resource-level call.
      f.deployment_scoped = method == http::verb::post;
      return;
    }
  }
  f.deployment_scoped = false;
  if (starts_with_segment(op, "responses")) {
    f.endpoint = Endpoint::responses;
  } else if (starts_with_segment(op, "files")) {
    f.endpoint = Endpoint::files;
  } else if (starts_with_segment(op, "batches")) {
    f.endpoint = Endpoint::batches;
  } else if (starts_with_segment(op, "models")) {
    f.endpoint = Endpoint::models;
  } else if (starts_with_segment(op, "fine_tuning")) {
    f.endpoint = Endpoint::fine_tuning;
  } else if (starts_with_segment(op, "assistants") || starts_with_segment(op, "threads") ||
             starts_with_segment(op, "vector_stores")) {
    f.endpoint = Endpoint::assistants;
  } else {
    f.endpoint = Endpoint::other;
  }
}

std::string_view trim(std::string_view s) {
  while (!s.empty() && (s.front() == ' ' || s.front() == '\t')) s.remove_prefix(1);
  while (!s.empty() && (s.back() == ' ' || s.back() == '\t')) s.remove_suffix(1);
  return s;
}

// Value of parameter `name` in a header value like `form-data; name="model"; filename="a"`.
std::string_view header_param(std::string_view value, std::string_view name) {
  std::size_t pos = value.find(';');
  while (pos != std::string_view::npos) {
    std::string_view rest = value.substr(pos + 1);
    const std::size_t next = rest.find(';');
    std::string_view param = trim(rest.substr(0, next));
    const std::size_t eq = param.find('=');
    if (eq != std::string_view::npos && iequals(trim(param.substr(0, eq)), name)) {
      std::string_view v = trim(param.substr(eq + 1));
      if (v.size() >= 2 && v.front() == '"' && v.back() == '"') v = v.substr(1, v.size() - 2);
      return v;
    }
    pos = next == std::string_view::npos ? next : pos + 1 + next;
  }
  return {};
}

// A numeric member as a whole number: out-of-range integers saturate, and fractions and
// exponents (1500.0, 1e20) are read too, so no spelling of a number slips past the limiter.
std::optional<long long> saturating_number_member(std::string_view body, const json::ScanResult& r,
                                                  std::string_view key) {
  const json::Member* m = r.find(key);
  if (!m || m->kind != json::Kind::number) return std::nullopt;
  const std::string_view text = body.substr(m->value_begin, m->value_end - m->value_begin);
  long long v = 0;
  auto [p, ec] = std::from_chars(text.data(), text.data() + text.size(), v);
  if (ec == std::errc() && p == text.data() + text.size()) return v;
  double d = 0;
  auto [dp, dec] = std::from_chars(text.data(), text.data() + text.size(), d);
  if (dec == std::errc::result_out_of_range || (dec == std::errc() && !std::isfinite(d)))
    return text.starts_with('-') ? std::numeric_limits<long long>::min()
                                 : std::numeric_limits<long long>::max();
  if (dec != std::errc() || dp != text.data() + text.size()) return std::nullopt;
  if (d >= 9.2e18) return std::numeric_limits<long long>::max();
  if (d <= -9.2e18) return std::numeric_limits<long long>::min();
  return static_cast<long long>(std::ceil(d));
}

void inspect_json(std::string_view body, BodyFacts& f) {
  json::ScanResult r = json::scan(body);
  if (!r.valid) {
    f.invalid_reason = r.error + " at byte " + std::to_string(r.error_offset);
    return;
  }
  if (!r.is_object) return;
  // The scanner stops at the closing brace; find it from the end (only white space may follow).
  std::size_t end = body.find_last_of('}');
  f.object_end = end;
  if (const json::Member* m = r.find("model")) {
    if (m->kind == json::Kind::string) {
      f.model = json::decode_string(body.substr(m->value_begin, m->value_end - m->value_begin));
      f.model_begin = m->value_begin;
      f.model_end = m->value_end;
    } else if (m->kind != json::Kind::null) {
      f.model_not_string = true;
    }
  }
  if (const json::Member* s = r.find("stream")) {
    f.stream = body.substr(s->value_begin, s->value_end - s->value_begin) == "true";
  }
  if (const json::Member* so = r.find("stream_options")) {
    f.stream_options_begin = so->value_begin;
    f.stream_options_end = so->value_end;
    f.stream_options_is_object = so->kind == json::Kind::object;
    if (f.stream_options_is_object) {
      const std::string_view text = body.substr(so->value_begin, so->value_end - so->value_begin);
      json::ScanResult inner = json::scan_valid(text);
      if (const json::Member* iu = inner.find("include_usage")) {
        f.include_usage = inner.text_of(text, *iu) == "true";
        f.include_usage_begin = so->value_begin + iu->value_begin;
        f.include_usage_end = so->value_begin + iu->value_end;
      }
    }
  }
  for (std::string_view key : {"max_completion_tokens", "max_tokens", "max_output_tokens"}) {
    if (auto v = saturating_number_member(body, r, key)) {
      f.max_tokens = *v;
      break;
    }
  }
  for (std::string_view key : {"messages", "input", "prompt", "instructions"}) {
    if (const json::Member* m = r.find(key)) {
      f.prompt_spans[f.prompt_span_count++] = {m->value_begin, m->value_end};
    }
  }
}

void inspect_multipart(std::string_view content_type, std::string_view body, BodyFacts& f) {
  const std::string_view boundary = multipart_boundary(content_type);
  if (boundary.empty()) return;
  const std::string delimiter = "--" + std::string(boundary);
  const std::boyer_moore_horspool_searcher search(delimiter.begin(), delimiter.end());
  auto find_delim = [&](std::size_t from) -> std::size_t {
    auto it = std::search(body.begin() + static_cast<std::ptrdiff_t>(from), body.end(), search);
    return it == body.end() ? std::string_view::npos : static_cast<std::size_t>(it - body.begin());
  };
  std::size_t pos = find_delim(0);
  while (pos != std::string_view::npos) {
    std::size_t part = pos + delimiter.size();
    if (body.substr(part, 2) == "--") return;  // closing delimiter
    if (body.substr(part, 2) != "\r\n") return;
    part += 2;
    const std::size_t headers_end = body.find("\r\n\r\n", part);
    if (headers_end == std::string_view::npos) return;
    const std::string_view headers = body.substr(part, headers_end - part);
    const std::size_t content = headers_end + 4;
    const std::size_t next = find_delim(content);
    if (next == std::string_view::npos || next < content + 2) return;
    std::string_view name;
    std::size_t line = 0;
    while (line < headers.size()) {
      std::size_t eol = headers.find("\r\n", line);
      if (eol == std::string_view::npos) eol = headers.size();
      std::string_view h = headers.substr(line, eol - line);
      const std::size_t colon = h.find(':');
      if (colon != std::string_view::npos &&
          iequals(trim(h.substr(0, colon)), "content-disposition"))
        name = header_param(h.substr(colon + 1), "name");
      line = eol + 2;
    }
    if (name == "model") {
      f.model_begin = content;
      f.model_end = next - 2;  // the CRLF before the delimiter belongs to the delimiter
      f.model = std::string(body.substr(f.model_begin, f.model_end - f.model_begin));
    } else if (name == "stream") {
      f.stream = body.substr(content, next - 2 - content) == "true";
    }
    pos = next;
  }
}

}  // namespace

std::size_t prompt_characters(std::string_view body, const BodyFacts& facts) {
  std::size_t chars = 0;
  for (std::size_t i = 0; i < facts.prompt_span_count; ++i) {
    const auto [begin, end] = facts.prompt_spans[i];
    // Count code points inside string values; a string directly followed by ':' is a key.
    bool in_string = false;
    std::size_t string_chars = 0;
    for (std::size_t p = begin; p < end; ++p) {
      if (in_string) {  // the ordinary bytes up to the next quote or backslash, 16 at a time
        const json::PlainRun run = json::plain_run(body, p, end);
        string_chars += run.chars;
        p = run.end;
        if (p >= end) break;
      }
      const auto c = static_cast<unsigned char>(body[p]);
      if (!in_string) {
        if (c == '"') {
          in_string = true;
          string_chars = 0;
        }
        continue;
      }
      if (c == '\\') {
        // An escape is one character; \uXXXX too, and a surrogate pair (\uD83D\uDE00) as well.
        ++string_chars;
        if (p + 1 < end && body[p + 1] == 'u') {
          p += 5;
          if (p + 6 < end && body[p + 1] == '\\' && body[p + 2] == 'u' &&
              (body[p - 3] == 'd' || body[p - 3] == 'D') &&
              std::string_view("89abAB").find(body[p - 2]) != std::string_view::npos)
            p += 6;
        } else {
          ++p;
        }
      } else if (c == '"') {
        in_string = false;
        std::size_t q = p + 1;
        while (q < end && (body[q] == ' ' || body[q] == '\n' || body[q] == '\t' || body[q] == '\r'))
          ++q;
        if (q >= end || body[q] != ':') chars += string_chars;
      } else if ((c & 0xC0) != 0x80) {
        ++string_chars;
      }
    }
  }
  return chars;
}

PathFacts classify_path(http::verb method, std::string_view target) {
  PathFacts f;
  std::string_view path = target;
  if (auto q = target.find('?'); q != std::string_view::npos) {
    path = target.substr(0, q);
    f.query = target.substr(q + 1);
  }
  while (path.size() > 1 && path.back() == '/') path.remove_suffix(1);
  if (path.starts_with("/openai/")) {
    std::string_view rest = path.substr(8);
    if (rest.starts_with("deployments/")) {
      rest.remove_prefix(12);
      const std::size_t slash = rest.find('/');
      if (slash != std::string_view::npos && slash > 0) {
        f.format = InboundFormat::azure_deployment;
        std::string_view op = rest.substr(slash + 1);
        classify_op(method, op, f);
        // The Node SDK sends batches under a deployment; Azure serves them per resource.
        if (f.endpoint == Endpoint::batches) {
          f.format = InboundFormat::azure_resource;
          return f;
        }
        f.path_model = percent_decode(rest.substr(0, slash));
        if (!f.path_model) f.path_model = std::string(rest.substr(0, slash));
        return f;
      }
    }
    if (starts_with_segment(rest, "v1")) {
      f.format = InboundFormat::azure_v1;
      classify_op(method, rest.size() > 3 ? rest.substr(3) : std::string_view{}, f);
      return f;
    }
    f.format = InboundFormat::azure_resource;
    classify_op(method, rest, f);
    return f;
  }
  std::string_view op = path;
  if (op.starts_with("/")) op.remove_prefix(1);
  if (starts_with_segment(op, "v1")) op = op.size() > 3 ? op.substr(3) : std::string_view{};
  classify_op(method, op, f);
  return f;
}

std::string_view allowed_methods(const PathFacts& path) {
  switch (path.endpoint) {
    case Endpoint::completions:
    case Endpoint::embeddings:
    case Endpoint::images_generations:
    case Endpoint::images_edits:
    case Endpoint::audio_transcriptions:
    case Endpoint::audio_translations:
    case Endpoint::audio_speech: return "POST";
    case Endpoint::chat_completions:  // GET lists stored completions
    case Endpoint::batches: return "GET, POST";
    case Endpoint::models: return "GET, DELETE";  // DELETE removes a fine-tuned model
    case Endpoint::responses:
    case Endpoint::files:
    case Endpoint::fine_tuning:
    case Endpoint::assistants:
    case Endpoint::other: return "GET, POST, DELETE";
  }
  return "GET, POST, DELETE";
}

bool method_allowed(http::verb method, const PathFacts& path) {
  std::string_view name;
  switch (method) {
    case http::verb::get: name = "GET"; break;
    case http::verb::post: name = "POST"; break;
    case http::verb::delete_: name = "DELETE"; break;
    default: return false;
  }
  const std::string_view allowed = allowed_methods(path);
  for (std::size_t pos = 0; pos < allowed.size();) {
    const std::size_t comma = std::min(allowed.find(", ", pos), allowed.size());
    if (allowed.substr(pos, comma - pos) == name) return true;
    pos = comma + 2;
  }
  return false;
}

std::string_view multipart_boundary(std::string_view content_type) {
  return header_param(content_type, "boundary");
}

BodyFacts inspect_body(std::string_view content_type, std::string_view body) {
  BodyFacts f;
  if (body.empty()) return f;
  std::string_view mime = trim(content_type.substr(0, content_type.find(';')));
  if (iequals(mime, "multipart/form-data")) {
    f.kind = BodyKind::multipart;
    inspect_multipart(content_type, body, f);
  } else if (mime.empty() || iequals(mime, "application/json") ||
             iequals(mime, "application/x-www-form-urlencoded") || iequals(mime, "text/plain") ||
             (mime.size() > 5 && iequals(mime.substr(mime.size() - 5), "+json"))) {
    // Every OpenAI endpoint that is not multipart takes JSON. The SDKs send application/json;
    // `curl -d` sends form-urlencoded unless told otherwise, so such bodies are read as JSON too.
    f.kind = BodyKind::json;
    inspect_json(body, f);
  } else {
    f.kind = BodyKind::other;
  }
  return f;
}

std::string percent_encode_segment(std::string_view s) {
  static constexpr char kHex[] = "0123456789ABCDEF";
  std::string out;
  out.reserve(s.size());
  for (const char ch : s) {
    const auto c = static_cast<unsigned char>(ch);
    if (std::isalnum(c) || c == '-' || c == '.' || c == '_' || c == '~') {
      out += ch;
    } else {
      out += '%';
      out += kHex[c >> 4];
      out += kHex[c & 0xF];
    }
  }
  return out;
}

std::optional<std::string> percent_decode(std::string_view s) {
  std::string out;
  out.reserve(s.size());
  for (std::size_t i = 0; i < s.size(); ++i) {
    if (s[i] != '%') {
      out += s[i];
      continue;
    }
    if (i + 2 >= s.size() || !std::isxdigit(static_cast<unsigned char>(s[i + 1])) ||
        !std::isxdigit(static_cast<unsigned char>(s[i + 2])))
      return std::nullopt;
    out += static_cast<char>(std::stoi(std::string(s.substr(i + 1, 2)), nullptr, 16));
    i += 2;
  }
  return out;
}

}  // namespace llmgw
