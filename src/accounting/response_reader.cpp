#include "llm_gateway/accounting/response_reader.hpp"

#include "llm_gateway/ratelimit/limiter.hpp"

#include "llm_gateway/translate/json_scan.hpp"

namespace llmgw::accounting {

std::optional<std::pair<std::size_t, std::size_t>> find_event_end(std::string_view text,
                                                                  std::size_t from) {
  const std::size_t lf = text.find("\n\n", from);
  const std::size_t crlf = text.find("\r\n\r\n", from);
  if (lf == std::string_view::npos && crlf == std::string_view::npos) return std::nullopt;
  if (crlf < lf) return std::pair{crlf, crlf + 4};
  return std::pair{lf, lf + 2};
}

std::string_view event_data(std::string_view event, std::string& scratch) {
  std::string_view found;
  int count = 0;
  std::size_t pos = 0;
  while (pos <= event.size()) {
    std::size_t eol = event.find('\n', pos);
    if (eol == std::string_view::npos) eol = event.size();
    std::string_view line = event.substr(pos, eol - pos);
    if (!line.empty() && line.back() == '\r') line.remove_suffix(1);
    if (line.starts_with("data:")) {
      line.remove_prefix(5);
      if (!line.empty() && line.front() == ' ') line.remove_prefix(1);
      if (count == 0) {
        found = line;
      } else {
        if (count == 1) scratch.assign(found);
        scratch += '\n';
        scratch.append(line);
      }
      ++count;
    }
    pos = eol + 1;
  }
  return count > 1 ? std::string_view(scratch) : found;
}

namespace {

std::optional<Usage> read_usage(std::string_view usage_json) {
  json::ScanResult u = json::scan(usage_json);
  if (!u.is_object) return std::nullopt;
  Usage out;
  auto get = [&](std::string_view a, std::string_view b) -> std::int64_t {
    if (auto v = json::integer_member(usage_json, u, a)) return *v;
    if (auto v = json::integer_member(usage_json, u, b)) return *v;
    return 0;
  };
  // An upstream's numbers are as untrusted as a client's: clamped to [0, 2^40] (as the limiter
  // clamps every token amount), so the sum below cannot overflow.
  out.prompt_tokens = ratelimit::clamp_tokens(get("prompt_tokens", "input_tokens"));
  out.completion_tokens = ratelimit::clamp_tokens(get("completion_tokens", "output_tokens"));
  out.total_tokens = ratelimit::clamp_tokens(get("total_tokens", "total_tokens"));
  if (out.total_tokens == 0) out.total_tokens = out.prompt_tokens + out.completion_tokens;
  return out;
}

void read_choices(std::string_view choices_json, JsonFacts& facts) {
  json::ScanResult arr = json::scan(choices_json);
  for (const json::Span& el : arr.elements) {
    if (el.kind != json::Kind::object) continue;
    std::string_view choice = choices_json.substr(el.begin, el.end - el.begin);
    json::ScanResult c = json::scan(choice);
    if (const json::Member* fr = c.find("finish_reason"); fr && fr->kind == json::Kind::string) {
      if (auto v = json::decode_string(c.text_of(choice, *fr))) facts.finish_reason = *v;
    }
  }
}

}  // namespace

JsonFacts read_json_facts(std::string_view text) {
  return read_json_facts(text, json::scan(text));
}

JsonFacts read_json_facts(std::string_view text, const json::ScanResult& r) {
  JsonFacts facts;
  if (!r.is_object) return facts;
  bool choices_empty = false;
  if (const json::Member* ch = r.find("choices"); ch && ch->kind == json::Kind::array) {
    const std::string_view choices = r.text_of(text, *ch);
    if (choices.find("finish_reason") != std::string_view::npos) read_choices(choices, facts);
    choices_empty = choices.find_first_not_of(" \t\r\n", 1) == choices.size() - 1;
  }
  if (const json::Member* u = r.find("usage"); u && u->kind == json::Kind::object) {
    facts.usage = read_usage(r.text_of(text, *u));
    facts.usage_only_chunk = choices_empty;
  }
  // Responses API: usage and status live in the "response" object of response.* events.
  if (const json::Member* resp = r.find("response"); resp && resp->kind == json::Kind::object) {
    const std::string_view inner = r.text_of(text, *resp);
    json::ScanResult ri = json::scan(inner);
    if (const json::Member* u = ri.find("usage"); u && u->kind == json::Kind::object)
      facts.usage = read_usage(ri.text_of(inner, *u));
  }
  return facts;
}

}  // namespace llmgw::accounting
