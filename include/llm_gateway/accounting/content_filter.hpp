#pragma once
// Azure content-filter annotations, summarised per request: for each stage (prompt, completion)
// and category, the highest severity seen and whether any annotation filtered it. Read from
// non-stream bodies (prompt_filter_results / older prompt_annotations, per-choice
// content_filter_results), every stream chunk (including annotation chunks without delta), and
// 400 content_filter errors (innererror / inner_error, content_filter_result / _results).
#include <array>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "llm_gateway/translate/json_scan.hpp"

namespace llmgw::accounting {

enum class FilterStage { prompt, completion };

// Ordered so that a larger value is "more severe"; none is for detected-type results.
enum class Severity { none, safe, low, medium, high };

std::string_view severity_name(Severity s);
std::string_view stage_name(FilterStage s);

// Azure's categories; anything else is counted as "other" so label values stay bounded.
inline constexpr std::array<std::string_view, 14> kFilterCategories{
    "hate",
    "sexual",
    "violence",
    "self_harm",
    "profanity",
    "jailbreak",
    "indirect_attack",
    "protected_material_text",
    "protected_material_code",
    "custom_blocklists",
    "custom_topics",
    "personally_identifiable_information",
    "ungrounded_material",
    "other"};

struct CategoryResult {
  bool seen = false;
  Severity severity = Severity::none;
  bool filtered = false;
  bool detected = false;
};

class ContentFilterSummary {
 public:
  // Reads the annotations of one JSON document (a whole body or one stream event's data).
  void read_document(std::string_view json);
  void read_document(const json::Document& doc);  // the same, already scanned
  // A 400 error body: error.innererror.content_filter_result (or the spec's spellings).
  void read_error(std::string_view json);
  void read_error(const json::Document& doc);  // the same, already scanned

  bool any() const;
  bool filtered(FilterStage stage) const;
  const CategoryResult& result(FilterStage stage, std::size_t category) const {
    return results_[static_cast<std::size_t>(stage)][category];
  }
  // Categories filtered or detected (severity above safe, or detected) at a stage.
  std::vector<std::string_view> flagged(FilterStage stage) const;

 private:
  void read_results(FilterStage stage, const json::Document& doc, std::string_view results_object);
  std::array<std::array<CategoryResult, kFilterCategories.size()>, 2> results_{};
};

}  // namespace llmgw::accounting
