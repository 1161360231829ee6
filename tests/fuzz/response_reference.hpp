#pragma once
// The oracle for read_response_document: the readers as they were before the single-pass walk
// (commit f8ddeb9), written against json::scan / json::scan_valid — validate the document, then
// look every level up by name (the last occurrence of a name counts). Slow and obviously right;
// the unit tests and the response and sse fuzz harnesses check the walk against it on every
// input.
#include <array>
#include <charconv>
#include <optional>
#include <string>
#include <string_view>

#include "llm_gateway/accounting/content_filter.hpp"
#include "llm_gateway/accounting/response_document.hpp"
#include "llm_gateway/accounting/response_reader.hpp"
#include "llm_gateway/ratelimit/limiter.hpp"
#include "llm_gateway/translate/json_scan.hpp"

namespace llmgw::reference {

namespace json = llmgw::json;
namespace accounting = llmgw::accounting;

inline std::optional<accounting::Usage> read_usage(std::string_view usage_json) {
  json::ScanResult u = json::scan_valid(usage_json);
  if (!u.is_object) return std::nullopt;
  accounting::Usage out;
  auto get = [&](std::string_view a, std::string_view b) -> std::int64_t {
    if (auto v = json::integer_member(usage_json, u, a)) return *v;
    if (auto v = json::integer_member(usage_json, u, b)) return *v;
    return 0;
  };
  out.prompt_tokens = ratelimit::clamp_tokens(get("prompt_tokens", "input_tokens"));
  out.completion_tokens = ratelimit::clamp_tokens(get("completion_tokens", "output_tokens"));
  out.total_tokens = ratelimit::clamp_tokens(get("total_tokens", "total_tokens"));
  if (out.total_tokens == 0) out.total_tokens = out.prompt_tokens + out.completion_tokens;
  return out;
}

inline accounting::JsonFacts read_json_facts(std::string_view text) {
  const json::ScanResult r = json::scan(text);
  accounting::JsonFacts facts;
  if (!r.is_object) return facts;
  bool choices_empty = false;
  if (const json::Member* ch = r.find("choices"); ch && ch->kind == json::Kind::array) {
    const std::string_view choices = r.text_of(text, *ch);
    const json::ScanResult arr = json::scan_valid(choices);
    for (const json::Span& el : arr.elements) {
      if (el.kind != json::Kind::object) continue;
      const std::string_view choice = choices.substr(el.begin, el.end - el.begin);
      const json::ScanResult c = json::scan_valid(choice);
      if (const json::Member* fr = c.find("finish_reason"); fr && fr->kind == json::Kind::string) {
        if (auto v = json::decode_string(c.text_of(choice, *fr))) facts.finish_reason = *v;
      }
    }
    choices_empty = choices.find_first_not_of(" \t\r\n", 1) == choices.size() - 1;
  }
  if (const json::Member* u = r.find("usage"); u && u->kind == json::Kind::object) {
    facts.usage = read_usage(r.text_of(text, *u));
    facts.usage_only_chunk = choices_empty;
  }
  if (const json::Member* resp = r.find("response"); resp && resp->kind == json::Kind::object) {
    const std::string_view inner = r.text_of(text, *resp);
    const json::ScanResult ri = json::scan_valid(inner);
    if (const json::Member* u = ri.find("usage"); u && u->kind == json::Kind::object)
      facts.usage = read_usage(ri.text_of(inner, *u));
  }
  return facts;
}

inline std::string_view value_of(std::string_view text, const json::ScanResult& r,
                                 std::string_view key) {
  const json::Member* m = r.find(key);
  return m ? r.text_of(text, *m) : std::string_view{};
}

inline void read_results(accounting::FilterRow& row, std::string_view object) {
  const json::ScanResult r = json::scan_valid(object);
  if (!r.is_object) return;
  for (const json::Member& m : r.members) {
    if (m.key == "error") continue;
    const std::string_view value = object.substr(m.value_begin, m.value_end - m.value_begin);
    accounting::CategoryResult& c = row[accounting::filter_category(m.key)];
    if (m.kind == json::Kind::array) {
      c.seen = true;
      if (value.find("\"filtered\":true") != std::string_view::npos ||
          value.find("\"filtered\": true") != std::string_view::npos)
        c.filtered = true;
      continue;
    }
    if (m.kind != json::Kind::object) continue;
    const json::ScanResult cat = json::scan_valid(value);
    c.seen = true;
    if (value_of(value, cat, "filtered") == "true") c.filtered = true;
    if (value_of(value, cat, "detected") == "true") c.detected = true;
    const std::string_view sev = value_of(value, cat, "severity");
    accounting::Severity s = accounting::Severity::none;
    if (sev == "\"safe\"") s = accounting::Severity::safe;
    if (sev == "\"low\"") s = accounting::Severity::low;
    if (sev == "\"medium\"") s = accounting::Severity::medium;
    if (sev == "\"high\"") s = accounting::Severity::high;
    if (s > c.severity) c.severity = s;
  }
}

inline accounting::ContentFilterSummary read_filter_document(std::string_view text) {
  accounting::FilterRow prompt{};
  accounting::FilterRow completion{};
  const json::ScanResult r = json::scan(text);
  if (r.is_object) {
    for (std::string_view key : {"prompt_filter_results", "prompt_annotations"}) {
      const json::Member* m = r.find(key);
      if (!m) continue;
      const std::string_view value = r.text_of(text, *m);
      if (m->kind == json::Kind::object) {
        read_results(prompt, value);
        continue;
      }
      const json::ScanResult arr = json::scan_valid(value);
      for (const json::Span& el : arr.elements) {
        const std::string_view item = value.substr(el.begin, el.end - el.begin);
        const json::ScanResult ir = json::scan_valid(item);
        if (const json::Member* cfr = ir.find("content_filter_results"))
          read_results(prompt, ir.text_of(item, *cfr));
      }
    }
    for (std::string_view key : {"choices", "data"}) {
      const json::Member* m = r.find(key);
      if (!m || m->kind != json::Kind::array) continue;
      const std::string_view value = r.text_of(text, *m);
      const json::ScanResult arr = json::scan_valid(value);
      for (const json::Span& el : arr.elements) {
        const std::string_view item = value.substr(el.begin, el.end - el.begin);
        const json::ScanResult ir = json::scan_valid(item);
        if (const json::Member* cfr = ir.find("content_filter_results"))
          read_results(completion, ir.text_of(item, *cfr));
        if (key == "data") {
          if (const json::Member* pfr = ir.find("prompt_filter_results"))
            read_results(prompt, ir.text_of(item, *pfr));
        }
      }
    }
  }
  accounting::ContentFilterSummary out;
  out.merge(accounting::FilterStage::prompt, prompt);
  out.merge(accounting::FilterStage::completion, completion);
  return out;
}

inline accounting::ContentFilterSummary read_filter_error(std::string_view text) {
  accounting::FilterRow prompt{};
  const json::ScanResult r = json::scan(text);
  const json::Member* e = r.find("error");
  if (e && e->kind == json::Kind::object) {
    const std::string_view err = r.text_of(text, *e);
    const json::ScanResult er = json::scan_valid(err);
    for (std::string_view inner_key : {"innererror", "inner_error"}) {
      const json::Member* inner = er.find(inner_key);
      if (!inner || inner->kind != json::Kind::object) continue;
      const std::string_view in = er.text_of(err, *inner);
      const json::ScanResult ir = json::scan_valid(in);
      for (std::string_view k : {"content_filter_result", "content_filter_results"}) {
        if (const json::Member* cfr = ir.find(k)) read_results(prompt, ir.text_of(in, *cfr));
      }
    }
  }
  accounting::ContentFilterSummary out;
  out.merge(accounting::FilterStage::prompt, prompt);
  return out;
}

inline bool same_usage(const std::optional<accounting::Usage>& a,
                       const std::optional<accounting::Usage>& b) {
  if (a.has_value() != b.has_value()) return false;
  return !a || (a->prompt_tokens == b->prompt_tokens &&
                a->completion_tokens == b->completion_tokens && a->total_tokens == b->total_tokens);
}

inline bool same_facts(const accounting::JsonFacts& a, const accounting::JsonFacts& b) {
  return same_usage(a.usage, b.usage) && a.finish_reason == b.finish_reason &&
         a.usage_only_chunk == b.usage_only_chunk;
}

inline bool same_summary(const accounting::ContentFilterSummary& a,
                         const accounting::ContentFilterSummary& b) {
  for (auto stage : {accounting::FilterStage::prompt, accounting::FilterStage::completion}) {
    for (std::size_t c = 0; c < accounting::kFilterCategories.size(); ++c) {
      const auto& x = a.result(stage, c);
      const auto& y = b.result(stage, c);
      if (x.seen != y.seen || x.severity != y.severity || x.filtered != y.filtered ||
          x.detected != y.detected)
        return false;
    }
  }
  return true;
}

// What read_response_document must answer for `text`, reader by reader; "" when it does.
inline std::string differs_from_reference(std::string_view text) {
  using accounting::DocumentReaders;
  if (!same_facts(accounting::read_response_document(text, {.facts = true}).facts,
                  read_json_facts(text)))
    return "usage / finish_reason differ from the reference reader";
  if (!same_summary(accounting::read_response_document(text, {.filter = true}).filter,
                    read_filter_document(text)))
    return "content-filter results differ from the reference reader";
  if (!same_summary(accounting::read_response_document(text, {.filter_error = true}).filter,
                    read_filter_error(text)))
    return "content-filter error results differ from the reference reader";
  // All readers at once: each reads what it reads alone.
  const accounting::DocumentReading all = accounting::read_response_document(
      text, {.facts = true, .filter = true, .filter_error = true});
  accounting::ContentFilterSummary both = read_filter_document(text);
  both.merge(read_filter_error(text));
  if (!same_facts(all.facts, read_json_facts(text)) || !same_summary(all.filter, both))
    return "all readers together differ from the reference readers";
  return {};
}

}  // namespace llmgw::reference
