#include "llm_gateway/accounting/response_reader.hpp"

#include <algorithm>
#include <cstring>
#if defined(__SSE2__)
#include <emmintrin.h>
#endif

#include "llm_gateway/accounting/response_document.hpp"

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

JsonFacts read_json_facts(std::string_view text) {
  return read_response_document(text, {.facts = true}).facts;
}

}  // namespace llmgw::accounting
