// Non-stream upstream responses: usage and finish_reason (read_json_facts), Azure content-filter
// annotations of 200 bodies and of 400 content_filter errors, through the readers and through
// the account stage as the relay drives it. The input is the response body.
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

#include "account_run.hpp"
#include "fuzz_support.hpp"
#include "llm_gateway/accounting/content_filter.hpp"
#include "llm_gateway/accounting/response_reader.hpp"
#include "response_reference.hpp"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  using llmgw::fuzz::require;
  namespace accounting = llmgw::accounting;
  const std::string_view body = llmgw::fuzz::as_text(data, size);

  // One pass reads what the reference readers read, level by level, on any bytes.
  const std::string differs = llmgw::reference::differs_from_reference(body);
  require(differs.empty(), differs.c_str());
  const accounting::JsonFacts facts = accounting::read_json_facts(body);

  accounting::ContentFilterSummary summary;
  summary.read_document(body);
  summary.read_error(body);
  (void)summary.any();
  (void)summary.flagged(accounting::FilterStage::prompt);
  (void)summary.flagged(accounting::FilterStage::completion);

  // The stage must report what the reader reads, on a success and on a (content-filter) 400.
  // Two pieces: the stage collects them, so where they are cut must not matter.
  for (unsigned status : {200u, 400u}) {
    const llmgw::fuzz::AccountRun run("application/json", status, false,
                                      {body.substr(0, size / 2), body.substr(size / 2)});
    require(run.delivered == body, "a JSON body reaches the client unchanged");
    require(run.ctx.usage.has_value() == facts.usage.has_value(), "the stage reads the usage");
    if (facts.usage) require(run.ctx.usage->total_tokens == facts.usage->total_tokens, "usage");
    require(run.ctx.finish_reason == facts.finish_reason, "the stage reads finish_reason");
    const accounting::ContentFilterSummary expected =
        status == 400 ? llmgw::reference::read_filter_error(body)
        : body.find("filter_result") != std::string_view::npos
            ? llmgw::reference::read_filter_document(body)
            : accounting::ContentFilterSummary{};
    require(llmgw::reference::same_summary(run.ctx.content_filter, expected),
            "the stage reads the content-filter results");
  }
  return 0;
}
