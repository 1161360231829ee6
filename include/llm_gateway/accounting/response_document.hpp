#pragma once
// Everything accounting reads from one upstream JSON document (a non-stream body, or one stream
// event's data), in one validating pass over its bytes: usage and finish_reason (JsonFacts) and
// Azure's content-filter annotations. The values sit at fixed places, up to five levels deep
// (choices[i].content_filter_results.hate.severity); they are picked up as the walk meets them,
// instead of validating the document and then looking each level up again.
//
// A document that is not valid JSON yields nothing. Where a member name repeats inside an object,
// the last one counts (as JSON.parse in the client's SDK would read it).
#include <string_view>

#include "llm_gateway/accounting/content_filter.hpp"
#include "llm_gateway/accounting/response_reader.hpp"

namespace llmgw::accounting {

struct DocumentReaders {
  bool facts = false;         // usage, finish_reason, usage_only_chunk
  bool filter = false;        // prompt_filter_results / prompt_annotations, choices[] and data[]
                              // content_filter_results (what ContentFilterSummary::read_document
                              // reads)
  bool filter_error = false;  // a 400's error.innererror content_filter_result(s)
};

struct DocumentReading {
  JsonFacts facts;
  ContentFilterSummary filter;  // of the filter readers asked for
};

DocumentReading read_response_document(std::string_view json, DocumentReaders readers);

}  // namespace llmgw::accounting
