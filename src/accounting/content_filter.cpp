#include "llm_gateway/accounting/content_filter.hpp"

#include "llm_gateway/accounting/response_document.hpp"

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

std::size_t filter_category(std::string_view name) {
  if (name == "self-harm") name = "self_harm";  // one documented sample spells it so
  for (std::size_t i = 0; i + 1 < kFilterCategories.size(); ++i) {
    if (kFilterCategories[i] == name) return i;
  }
  return kFilterCategories.size() - 1;  // other
}

void ContentFilterSummary::read_document(std::string_view text) {
  merge(read_response_document(text, {.filter = true}).filter);
}

void ContentFilterSummary::read_error(std::string_view text) {
  merge(read_response_document(text, {.filter_error = true}).filter);
}

void ContentFilterSummary::merge(const ContentFilterSummary& other) {
  for (std::size_t stage = 0; stage < results_.size(); ++stage)
    merge_row(results_[stage], other.results_[stage]);
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
