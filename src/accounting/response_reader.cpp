#include "llm_gateway/accounting/response_reader.hpp"

#include <algorithm>
#include <cstring>
#if defined(__SSE2__)
#include <emmintrin.h>
#endif

#include "llm_gateway/ratelimit/limiter.hpp"

#include "llm_gateway/translate/json_scan.hpp"

namespace llmgw::accounting {

std::optional<std::pair<std::size_t, std::size_t>> find_event_end(std::string_view text,
                                                                  std::size_t from) {
  // One pass over the line feeds: a blank line is "\n\n" or "\r\n\r\n", whichever starts
  // first. Searching the rest of the buffer for each form separately would scan to its end once
  // per event, quadratic in the events one read holds.
  const char* const begin = text.data();
  const char* const end = begin + text.size();
  for (const char* p = begin + std::min(from, text.size()); p < end; ++p) {
    p = static_cast<const char*>(std::memchr(p, '\n', static_cast<std::size_t>(end - p)));
    if (!p) break;
    const std::size_t i = static_cast<std::size_t>(p - begin);
    if (p + 1 < end && p[1] == '\n') return std::pair{i, i + 2};
    if (i > from && p[-1] == '\r' && p + 2 < end && p[1] == '\r' && p[2] == '\n')
      return std::pair{i - 1, i + 3};
  }
  return std::nullopt;
}

EventKeys scan_event_keys(std::string_view data) {
  // The keys are looked for where a JSON string starts (after a quote), in one walk over the
  // quotes, instead of one substring search per key: each search went through every quote of the
  // event again, and an Azure chunk has about fifty. Every quote is a candidate (also a closing
  // or an escaped one: what follows it cannot spell a key and a colon unless it is one).
  EventKeys keys;
  const char* const begin = data.data();
  const char* const end = begin + data.size();
  auto after_colon = [end](const char* p) -> const char* {  // p: just past the key's quote
    while (p < end && (*p == ' ' || *p == '\t' || *p == '\r' || *p == '\n')) ++p;
    if (p == end || *p != ':') return nullptr;
    ++p;
    while (p < end && (*p == ' ' || *p == '\t' || *p == '\r' || *p == '\n')) ++p;
    return p < end ? p : nullptr;
  };
  auto at_quote = [&](const char* q) {
    const std::string_view rest(q + 1, static_cast<std::size_t>(end - q - 1));
    switch (rest.empty() ? '\0' : rest.front()) {
      case 'u':
        if (rest.starts_with("usage\"")) {
          const char* v = after_colon(q + 7);
          if (v && *v == '{') keys.usage_object = true;
        }
        break;
      case 'f':
        if (rest.starts_with("finish_reason\"")) {
          const char* v = after_colon(q + 15);
          if (v && *v == '"') keys.finish_reason_string = true;
        }
        break;
      case 'c':
        if (rest.starts_with("content_filter_results\"")) {
          keys.filter_results = true;
          if (rest.substr(23).starts_with(':')) {
            if (keys.choice_results == 0)
              keys.first_choice_results = static_cast<std::size_t>(q - begin);
            ++keys.choice_results;
          }
        }
        break;
      case 'p':
        if (rest.starts_with("prompt_filter_results\"") ||
            rest.starts_with("prompt_annotations\"")) {
          keys.filter_results = true;
          keys.prompt_results = true;
        }
        break;
      default: break;
    }
  };
  const char* p = begin;
#if defined(__SSE2__)
  // 16 bytes at a time: a memchr call per quote (about sixty per Azure chunk) cost more than the
  // walk itself. The byte after each quote is tested in the same compares, so only a quote
  // followed by the first letter of a key read here is looked at; most (closing quotes, other
  // keys) are not.
  const __m128i quote = _mm_set1_epi8('"');
  for (; end - p >= 17; p += 16) {
    const __m128i next = _mm_loadu_si128(reinterpret_cast<const __m128i*>(p + 1));
    const __m128i first_letter =
        _mm_or_si128(_mm_or_si128(_mm_cmpeq_epi8(next, _mm_set1_epi8('u')),
                                  _mm_cmpeq_epi8(next, _mm_set1_epi8('f'))),
                     _mm_or_si128(_mm_cmpeq_epi8(next, _mm_set1_epi8('c')),
                                  _mm_cmpeq_epi8(next, _mm_set1_epi8('p'))));
    const __m128i quotes =
        _mm_cmpeq_epi8(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p)), quote);
    auto mask = static_cast<unsigned>(_mm_movemask_epi8(_mm_and_si128(quotes, first_letter)));
    while (mask != 0) {
      at_quote(p + __builtin_ctz(mask));
      mask &= mask - 1;
    }
  }
#endif
  for (; p < end; ++p) {
    if (*p == '"') at_quote(p);
  }
  return keys;
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

std::optional<Usage> read_usage(const json::Document& doc, std::string_view usage_json) {
  json::ScanResult u = doc.scan(usage_json);
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

void read_choices(const json::Document& doc, std::string_view choices_json, JsonFacts& facts) {
  json::ScanResult arr = doc.scan(choices_json);
  for (const json::Span& el : arr.elements) {
    if (el.kind != json::Kind::object) continue;
    std::string_view choice = choices_json.substr(el.begin, el.end - el.begin);
    json::ScanResult c = doc.scan(choice);
    if (const json::Member* fr = c.find("finish_reason"); fr && fr->kind == json::Kind::string) {
      if (auto v = json::decode_string(c.text_of(choice, *fr))) facts.finish_reason = *v;
    }
  }
}

}  // namespace

JsonFacts read_json_facts(std::string_view text) {
  return read_json_facts(json::Document(text));
}

JsonFacts read_json_facts(const json::Document& doc) {
  const std::string_view text = doc.text();
  const json::ScanResult& r = doc.top();
  JsonFacts facts;
  if (!r.is_object) return facts;
  bool choices_empty = false;
  if (const json::Member* ch = r.find("choices"); ch && ch->kind == json::Kind::array) {
    const std::string_view choices = r.text_of(text, *ch);
    if (choices.find("finish_reason") != std::string_view::npos) read_choices(doc, choices, facts);
    choices_empty = choices.find_first_not_of(" \t\r\n", 1) == choices.size() - 1;
  }
  if (const json::Member* u = r.find("usage"); u && u->kind == json::Kind::object) {
    facts.usage = read_usage(doc, r.text_of(text, *u));
    facts.usage_only_chunk = choices_empty;
  }
  // Responses API: usage and status live in the "response" object of response.* events.
  if (const json::Member* resp = r.find("response"); resp && resp->kind == json::Kind::object) {
    const std::string_view inner = r.text_of(text, *resp);
    json::ScanResult ri = doc.scan(inner);
    if (const json::Member* u = ri.find("usage"); u && u->kind == json::Kind::object)
      facts.usage = read_usage(doc, ri.text_of(inner, *u));
  }
  return facts;
}

}  // namespace llmgw::accounting
