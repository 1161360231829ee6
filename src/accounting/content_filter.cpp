#include "llm_gateway/accounting/content_filter.hpp"

#include "llm_gateway/translate/json_scan.hpp"

namespace llmgw::accounting {

std::string_view severity_name(Severity s) {
  switch (s) {
    case Severity::none: return "none";
    case Severity::safe: return "safe";
    case Severity::low: return "low";
    case Severity::medium: return "medium";
    case Severity::high: return "high";
  }
  return "none";
}

std::string_view stage_name(FilterStage s) {
  return s == FilterStage::prompt ? "prompt" : "completion";
}

namespace {

std::size_t category_index(std::string_view name) {
  if (name == "self-harm") name = "self_harm";  // one documented sample spells it so
  for (std::size_t i = 0; i + 1 < kFilterCategories.size(); ++i) {
    if (kFilterCategories[i] == name) return i;
  }
  return kFilterCategories.size() - 1;  // other
}

std::string_view value_of(std::string_view text, const json::ScanResult& r, std::string_view key) {
  const json::Member* m = r.find(key);
  return m ? r.text_of(text, *m) : std::string_view{};
}

}  // namespace

void ContentFilterSummary::read_results(FilterStage stage, const json::Document& doc,
                                        std::string_view object) {
  json::ScanResult r = doc.scan(object);
  if (!r.is_object) return;
  auto& row = results_[static_cast<std::size_t>(stage)];
  for (const json::Member& m : r.members) {
    if (m.key == "error") continue;  // filtering did not run: nothing to count
    const std::string_view value = object.substr(m.value_begin, m.value_end - m.value_begin);
    CategoryResult& c = row[category_index(m.key)];
    if (m.kind == json::Kind::array) {
      // custom_blocklists' older array form: [{"filtered":true,"id":"x"}]
      c.seen = true;
      if (value.find("\"filtered\":true") != std::string_view::npos ||
          value.find("\"filtered\": true") != std::string_view::npos)
        c.filtered = true;
      continue;
    }
    if (m.kind != json::Kind::object) continue;
    json::ScanResult cat = doc.scan(value);
    c.seen = true;
    if (value_of(value, cat, "filtered") == "true") c.filtered = true;
    if (value_of(value, cat, "detected") == "true") c.detected = true;
    const std::string_view sev = value_of(value, cat, "severity");
    Severity s = Severity::none;
    if (sev == "\"safe\"") s = Severity::safe;
    if (sev == "\"low\"") s = Severity::low;
    if (sev == "\"medium\"") s = Severity::medium;
    if (sev == "\"high\"") s = Severity::high;
    if (s > c.severity) c.severity = s;
  }
}

void ContentFilterSummary::read_document(std::string_view text) {
  read_document(json::Document(text));
}

void ContentFilterSummary::read_document(const json::Document& doc) {
  const std::string_view text = doc.text();
  const json::ScanResult& r = doc.top();
  if (!r.is_object) return;
  // Prompt annotations: an array of {prompt_index, content_filter_results} (images: an object).
  for (std::string_view key : {"prompt_filter_results", "prompt_annotations"}) {
    const json::Member* m = r.find(key);
    if (!m) continue;
    const std::string_view value = r.text_of(text, *m);
    if (m->kind == json::Kind::object) {
      read_results(FilterStage::prompt, doc, value);
      continue;
    }
    json::ScanResult arr = doc.scan(value);
    for (const json::Span& el : arr.elements) {
      const std::string_view item = value.substr(el.begin, el.end - el.begin);
      json::ScanResult ir = doc.scan(item);
      if (const json::Member* cfr = ir.find("content_filter_results"))
        read_results(FilterStage::prompt, doc, ir.text_of(item, *cfr));
    }
  }
  // Completion annotations: per choice (chat, completions) or per image (data[]).
  for (std::string_view key : {"choices", "data"}) {
    const json::Member* m = r.find(key);
    if (!m || m->kind != json::Kind::array) continue;
    const std::string_view value = r.text_of(text, *m);
    if (value.find("filter_result") == std::string_view::npos) continue;
    json::ScanResult arr = doc.scan(value);
    for (const json::Span& el : arr.elements) {
      const std::string_view item = value.substr(el.begin, el.end - el.begin);
      json::ScanResult ir = doc.scan(item);
      if (const json::Member* cfr = ir.find("content_filter_results"))
        read_results(FilterStage::completion, doc, ir.text_of(item, *cfr));
      if (key == "data") {
        if (const json::Member* pfr = ir.find("prompt_filter_results"))
          read_results(FilterStage::prompt, doc, ir.text_of(item, *pfr));
      }
    }
  }
}

void ContentFilterSummary::read_error(std::string_view text) {
  read_error(json::Document(text));
}

void ContentFilterSummary::read_error(const json::Document& doc) {
  const std::string_view text = doc.text();
  const json::ScanResult& r = doc.top();
  const json::Member* e = r.find("error");
  if (!e || e->kind != json::Kind::object) return;
  const std::string_view err = r.text_of(text, *e);
  json::ScanResult er = doc.scan(err);
  for (std::string_view inner_key : {"innererror", "inner_error"}) {
    const json::Member* inner = er.find(inner_key);
    if (!inner || inner->kind != json::Kind::object) continue;
    const std::string_view in = er.text_of(err, *inner);
    json::ScanResult ir = doc.scan(in);
    for (std::string_view k : {"content_filter_result", "content_filter_results"}) {
      if (const json::Member* cfr = ir.find(k))
        read_results(FilterStage::prompt, doc, ir.text_of(in, *cfr));
    }
  }
}

bool ContentFilterSummary::any() const {
  for (const auto& row : results_) {
    for (const auto& c : row) {
      if (c.seen) return true;
    }
  }
  return false;
}

bool ContentFilterSummary::filtered(FilterStage stage) const {
  for (const auto& c : results_[static_cast<std::size_t>(stage)]) {
    if (c.filtered) return true;
  }
  return false;
}

std::vector<std::string_view> ContentFilterSummary::flagged(FilterStage stage) const {
  std::vector<std::string_view> out;
  const auto& row = results_[static_cast<std::size_t>(stage)];
  for (std::size_t i = 0; i < row.size(); ++i) {
    const auto& c = row[i];
    if (c.filtered || c.detected || c.severity > Severity::safe)
      out.push_back(kFilterCategories[i]);
  }
  return out;
}

}  // namespace llmgw::accounting
