#pragma once
// Azure content-filter annotations, summarised per request: for each stage (prompt, completion)
// and category, the highest severity seen and whether any annotation filtered it. Read from
// non-stream bodies (prompt_filter_results / older prompt_annotations, per-choice
// content_filter_results), every stream chunk (including annotation chunks without delta), and
// 400 content_filter errors (innererror / inner_error, content_filter_result / _results).
#include <array>
#include <cstdint>
#include <cstring>
#include <string>
#include <string_view>
#include <type_traits>
#include <vector>

namespace llmgw::accounting {

enum class FilterStage { prompt, completion };

// Ordered so that a larger value is "more severe"; none is for detected-type results.
enum class Severity : std::uint8_t { none, safe, low, medium, high };

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

// The index in kFilterCategories of a category's raw JSON member name ("other" when unknown).
std::size_t filter_category(std::string_view name);

// Every member is one byte whose larger value means "more": two readings of a category merge
// into the byte-wise maximum (seen, filtered or detected by either; the higher severity).
struct CategoryResult {
  bool seen = false;
  Severity severity = Severity::none;
  bool filtered = false;
  bool detected = false;

  void merge(const CategoryResult& other) {
    seen = seen || other.seen;
    filtered = filtered || other.filtered;
    detected = detected || other.detected;
    if (other.severity > severity) severity = other.severity;
  }
};
static_assert(sizeof(CategoryResult) == 4 && std::is_trivially_copyable_v<CategoryResult>);

// One stage's results, per category.
using FilterRow = std::array<CategoryResult, kFilterCategories.size()>;
// CategoryResult::merge for every category, as a byte-wise maximum over the row, which the
// compiler does 16 bytes at a time (reading one document merges a dozen rows).
inline void merge_row(FilterRow& into, const FilterRow& from) {
  std::array<std::uint8_t, sizeof(FilterRow)> a, b;
  std::memcpy(a.data(), into.data(), sizeof(FilterRow));
  std::memcpy(b.data(), from.data(), sizeof(FilterRow));
  for (std::size_t i = 0; i < a.size(); ++i) a[i] = a[i] < b[i] ? b[i] : a[i];
  std::memcpy(into.data(), a.data(), sizeof(FilterRow));
}

class ContentFilterSummary {
 public:
  // Reads the annotations of one JSON document (a whole body or one stream event's data).
  // (read_response_document reads them together with usage and finish_reason in one pass.)
  void read_document(std::string_view json);
  // A 400 error body: error.innererror.content_filter_result (or the spec's spellings).
  void read_error(std::string_view json);

  // Adds another reading (of another document, or of one stage's row).
  void merge(const ContentFilterSummary& other);
  void merge(FilterStage stage, const FilterRow& row) {
    merge_row(results_[static_cast<std::size_t>(stage)], row);
  }

  bool any() const;
  bool filtered(FilterStage stage) const;
  const CategoryResult& result(FilterStage stage, std::size_t category) const {
    return results_[static_cast<std::size_t>(stage)][category];
  }
  // Categories filtered or detected (severity above safe, or detected) at a stage.
  std::vector<std::string_view> flagged(FilterStage stage) const;

 private:
  std::array<FilterRow, 2> results_{};
};

}  // namespace llmgw::accounting
