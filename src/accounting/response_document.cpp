#include "llm_gateway/accounting/response_document.hpp"

#include <array>
#include <optional>
#include <string>

#include "llm_gateway/ratelimit/limiter.hpp"
#include "llm_gateway/translate/json_scan.hpp"

namespace llmgw::accounting {
namespace {

using json::Kind;

constexpr std::array<std::string_view, 5> kUsageKeys{
    "prompt_tokens", "input_tokens", "completion_tokens", "output_tokens", "total_tokens"};
constexpr std::array<std::string_view, 3> kCategoryKeys{"filtered", "detected", "severity"};

// The places of a document the reader asks the walk about (WalkVisitor ids).
enum Node : int {
  kTop = 1,
  kTopUsage,       // usage
  kResponse,       // response (Responses API events)
  kResponseUsage,  // response.usage
  kUsageField,     // a member of a usage object: kUsageField + its index in kUsageKeys
  kChoices = kUsageField + static_cast<int>(kUsageKeys.size()),
  kChoice,
  kFinishReason,
  kPromptList,  // prompt_filter_results / prompt_annotations as an array
  kPromptItem,
  kDataList,  // data (images)
  kDataItem,
  kError,  // a 400's error
  kInnerError,
  kResults,        // a content-filter results object: categories
  kCategory,       // a category's object
  kCategoryList,   // a category's older array form (custom_blocklists)
  kCategoryField,  // filtered, detected, severity: kCategoryField + index in kCategoryKeys
};

template <std::size_t N>
int index_of(const std::array<std::string_view, N>& keys, std::string_view key) {
  for (std::size_t i = 0; i < N; ++i) {
    if (keys[i] == key) return static_cast<int>(i);
  }
  return -1;
}

// Collects what one document says, level by level. Each member the reader looks up can repeat
// in its object, and only its last occurrence counts: so whatever an occurrence contributes is
// kept in a slot of its own that the next occurrence of the same name clears, and slots are
// merged upwards only when their object ends.
class ResponseDocumentReader final : public json::WalkVisitor {
 public:
  explicit ResponseDocumentReader(DocumentReaders readers) : readers_(readers) {}

  DocumentReading result() const {
    DocumentReading out;
    if (!top_is_object_) return out;
    if (readers_.facts) {
      out.facts.usage = top_usage_;
      if (top_usage_) out.facts.usage_only_chunk = choices_empty_;
      if (response_usage_) out.facts.usage = response_usage_;
      out.facts.finish_reason = choices_finish_;
    }
    if (readers_.filter) {
      for (const FilterRow& row : prompt_slots_) out.filter.merge(FilterStage::prompt, row);
      out.filter.merge(FilterStage::completion, choices_filter_);
      out.filter.merge(FilterStage::completion, data_item_slots_[0]);
      out.filter.merge(FilterStage::prompt, data_item_slots_[1]);
    }
    if (readers_.filter_error) out.filter.merge(FilterStage::prompt, error_filter_);
    return out;
  }

  int enter(int parent, std::string_view key, Kind kind) override {
    switch (parent) {
      case kDocument: top_is_object_ = kind == Kind::object; return top_is_object_ ? kTop : kSkip;
      case kTop: return enter_top(key, kind);
      case kTopUsage:
      case kResponseUsage:
        if (const int i = index_of(kUsageKeys, key); i >= 0) return kUsageField + i;
        return kSkip;
      case kResponse:
        if (key != "usage") return kSkip;
        response_usage_.reset();
        return kind == Kind::object ? start_usage(kResponseUsage) : kSkip;
      case kChoices:
        if (kind != Kind::object) return kSkip;
        choice_finish_ = {};
        choice_results_ = {};
        return kChoice;
      case kChoice:
        if (readers_.facts && key == "finish_reason") {
          choice_finish_ = {};
          return kind == Kind::string ? kFinishReason : kSkip;
        }
        if (readers_.filter && key == "content_filter_results")
          return start_results(choice_results_, kind);
        return kSkip;
      case kPromptList:
        if (kind != Kind::object) return kSkip;
        prompt_item_results_ = {};
        return kPromptItem;
      case kPromptItem:
        return key == "content_filter_results" ? start_results(prompt_item_results_, kind) : kSkip;
      case kDataList:
        if (kind != Kind::object) return kSkip;
        data_item_results_ = {};
        return kDataItem;
      case kDataItem:
        if (key == "content_filter_results") return start_results(data_item_results_[0], kind);
        if (key == "prompt_filter_results") return start_results(data_item_results_[1], kind);
        return kSkip;
      case kError: {
        const int i = key == "innererror" ? 0 : key == "inner_error" ? 1 : -1;
        if (i < 0) return kSkip;
        inner_index_ = static_cast<std::size_t>(i);
        inner_slots_[inner_index_] = {};
        if (kind != Kind::object) return kSkip;
        inner_results_ = {};
        return kInnerError;
      }
      case kInnerError:
        if (key == "content_filter_result") return start_results(inner_results_[0], kind);
        if (key == "content_filter_results") return start_results(inner_results_[1], kind);
        return kSkip;
      case kResults:
        if (key == "error") return kSkip;  // filtering did not run: nothing to count
        category_ = filter_category(key);
        if (kind == Kind::object) {
          category_fields_ = {};
          return kCategory;
        }
        return kind == Kind::array ? kCategoryList : kSkip;
      case kCategory:
        if (const int i = index_of(kCategoryKeys, key); i >= 0) return kCategoryField + i;
        return kSkip;
      default: return kSkip;
    }
  }

  void leave(int id, std::string_view value) override {
    if (id >= kUsageField && id < kUsageField + static_cast<int>(kUsageKeys.size())) {
      usage_values_[static_cast<std::size_t>(id - kUsageField)] = value;
      return;
    }
    if (id >= kCategoryField && id < kCategoryField + static_cast<int>(kCategoryKeys.size())) {
      category_fields_[static_cast<std::size_t>(id - kCategoryField)] = value;
      return;
    }
    switch (id) {
      case kTopUsage: top_usage_ = usage(); return;
      case kResponseUsage: response_usage_ = usage(); return;
      case kChoices:
        choices_empty_ = value.find_first_not_of(" \t\r\n", 1) == value.size() - 1;
        return;
      case kFinishReason: choice_finish_ = value; return;
      case kChoice:
        if (!choice_finish_.empty()) {
          if (auto decoded = json::decode_string(choice_finish_)) choices_finish_ = *decoded;
        }
        merge_row(choices_filter_, choice_results_);
        return;
      case kPromptItem: merge_row(*prompt_slot_, prompt_item_results_); return;
      case kDataItem:
        merge_row(data_item_slots_[0], data_item_results_[0]);
        merge_row(data_item_slots_[1], data_item_results_[1]);
        return;
      case kInnerError:
        inner_slots_[inner_index_] = inner_results_[0];
        merge_row(inner_slots_[inner_index_], inner_results_[1]);
        return;
      case kError:
        error_filter_ = inner_slots_[0];
        merge_row(error_filter_, inner_slots_[1]);
        return;
      case kResults: *results_slot_ = results_; return;
      case kCategory: {
        CategoryResult c;
        c.seen = true;
        c.filtered = category_fields_[0] == "true";
        c.detected = category_fields_[1] == "true";
        c.severity = severity(category_fields_[2]);
        results_[category_].merge(c);
        return;
      }
      case kCategoryList: {
        // custom_blocklists' older array form: [{"filtered":true,"id":"x"}]
        CategoryResult c;
        c.seen = true;
        c.filtered = value.find("\"filtered\":true") != std::string_view::npos ||
                     value.find("\"filtered\": true") != std::string_view::npos;
        results_[category_].merge(c);
        return;
      }
      default: return;
    }
  }

 private:
  int enter_top(std::string_view key, Kind kind) {
    if (key == "choices") {
      choices_finish_.clear();
      choices_empty_ = false;
      choices_filter_ = {};
      return kind == Kind::array && (readers_.facts || readers_.filter) ? kChoices : kSkip;
    }
    if (key == "usage") {
      top_usage_.reset();
      return readers_.facts && kind == Kind::object ? start_usage(kTopUsage) : kSkip;
    }
    if (key == "response") {
      response_usage_.reset();
      return readers_.facts && kind == Kind::object ? kResponse : kSkip;
    }
    if (key == "error") {
      error_filter_ = {};
      inner_slots_ = {};
      return readers_.filter_error && kind == Kind::object ? kError : kSkip;
    }
    if (!readers_.filter) return kSkip;
    const int prompt = key == "prompt_filter_results" ? 0 : key == "prompt_annotations" ? 1 : -1;
    if (prompt >= 0) {
      // An object of categories (images), or an array of {prompt_index, content_filter_results}.
      FilterRow& slot = prompt_slots_[static_cast<std::size_t>(prompt)];
      if (kind == Kind::array) {
        slot = {};
        prompt_slot_ = &slot;
        return kPromptList;
      }
      return start_results(slot, kind);
    }
    if (key == "data") {
      data_item_slots_ = {};
      return kind == Kind::array ? kDataList : kSkip;
    }
    return kSkip;
  }

  int start_usage(int id) {
    usage_values_ = {};
    return id;
  }

  // A member whose value is a results object: its last occurrence's categories go into `slot`.
  int start_results(FilterRow& slot, Kind kind) {
    slot = {};
    if (kind != Kind::object) return kSkip;
    results_slot_ = &slot;
    results_ = {};
    return kResults;
  }

  Usage usage() const {
    // A member's last token, if it is an integer (a member not seen has an empty token).
    auto get = [&](std::size_t a, std::size_t b) -> std::int64_t {
      if (auto v = json::integer_value(usage_values_[a])) return *v;
      if (auto v = json::integer_value(usage_values_[b])) return *v;
      return 0;
    };
    // An upstream's numbers are as untrusted as a client's: clamped to [0, 2^40] (as the limiter
    // clamps every token amount), so the sum below cannot overflow.
    Usage out;
    out.prompt_tokens = ratelimit::clamp_tokens(get(0, 1));
    out.completion_tokens = ratelimit::clamp_tokens(get(2, 3));
    out.total_tokens = ratelimit::clamp_tokens(get(4, 4));
    if (out.total_tokens == 0) out.total_tokens = out.prompt_tokens + out.completion_tokens;
    return out;
  }

  static Severity severity(std::string_view token) {
    if (token == "\"safe\"") return Severity::safe;
    if (token == "\"low\"") return Severity::low;
    if (token == "\"medium\"") return Severity::medium;
    if (token == "\"high\"") return Severity::high;
    return Severity::none;
  }

  const DocumentReaders readers_;
  bool top_is_object_ = false;

  // facts
  std::optional<Usage> top_usage_;
  std::optional<Usage> response_usage_;
  std::array<std::string_view, kUsageKeys.size()> usage_values_{};  // the open usage object's
  std::string choices_finish_;      // the last choice's string finish_reason, decoded
  bool choices_empty_ = false;      // choices is []
  std::string_view choice_finish_;  // the open choice's finish_reason token

  // content filter: per top-level member, per item of its array, per results object
  std::array<FilterRow, 2> prompt_slots_{};  // prompt_filter_results, prompt_annotations
  FilterRow* prompt_slot_ = nullptr;         // the one whose array is open
  FilterRow prompt_item_results_{};
  FilterRow choices_filter_{};
  FilterRow choice_results_{};
  std::array<FilterRow, 2> data_item_slots_{};    // completion, prompt
  std::array<FilterRow, 2> data_item_results_{};  // of the open data item
  FilterRow error_filter_{};
  std::array<FilterRow, 2> inner_slots_{};    // innererror, inner_error
  std::size_t inner_index_ = 0;               // the one that is open
  std::array<FilterRow, 2> inner_results_{};  // content_filter_result, content_filter_results
  FilterRow* results_slot_ = nullptr;         // where the open results object goes
  FilterRow results_{};
  std::size_t category_ = 0;
  std::array<std::string_view, kCategoryKeys.size()> category_fields_{};
};

}  // namespace

DocumentReading read_response_document(std::string_view json, DocumentReaders readers) {
  ResponseDocumentReader reader(readers);
  if (!json::walk(json, reader)) return {};
  return reader.result();
}

}  // namespace llmgw::accounting
