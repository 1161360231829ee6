// Upstream event streams: the SSE splitter, the usage and content-filter readers run on every
// event, and the account stage that reads them on the relay's path (and, when the gateway asked
// for stream usage itself, removes that usage chunk from what the client gets). The upstream's
// bytes arrive in reads of any size, so where the pieces end is part of the input:
//   byte 0        n = byte % 16, the number of cuts
//   bytes 1..n    the length of each of the first n pieces (0-255)
//   the rest      the stream; whatever the cuts leave is the last piece.
// Properties: piece boundaries change nothing (events, usage, finish_reason, content-filter
// summary, the rewritten bytes), and reading the stream never trips a sanitizer.
#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "account_run.hpp"
#include "fuzz_support.hpp"
#include "llm_gateway/accounting/content_filter.hpp"
#include "llm_gateway/accounting/response_reader.hpp"
#include "llm_gateway/translate/json_scan.hpp"
#include "response_reference.hpp"

namespace {

using llmgw::fuzz::require;
namespace accounting = llmgw::accounting;

struct Input {
  std::string_view stream;
  std::vector<std::string_view> pieces;  // the stream, cut where the input says
};

Input cut(std::string_view text) {
  Input in;
  if (text.empty()) return in;
  const std::size_t cuts =
      std::min<std::size_t>(static_cast<unsigned char>(text[0]) % 16, text.size() - 1);
  in.stream = text.substr(1 + cuts);
  std::size_t pos = 0;
  for (std::size_t i = 0; i < cuts; ++i) {
    const std::size_t len =
        std::min<std::size_t>(static_cast<unsigned char>(text[1 + i]), in.stream.size() - pos);
    in.pieces.push_back(in.stream.substr(pos, len));
    pos += len;
  }
  in.pieces.push_back(in.stream.substr(pos));
  return in;
}

// The events of the whole stream, found in one pass: what the splitter must produce however the
// stream is cut.
std::vector<std::string_view> reference_events(std::string_view stream) {
  std::vector<std::string_view> events;
  std::size_t pos = 0;
  while (auto end = accounting::find_event_end(stream, pos)) {
    require(pos <= end->first && end->first < end->second && end->second <= stream.size(),
            "find_event_end returns a span inside the text");
    events.push_back(stream.substr(pos, end->first - pos));
    pos = end->second;
  }
  return events;
}

void check_splitter(const Input& in) {
  const std::vector<std::string_view> expected = reference_events(in.stream);
  accounting::SseSplitter splitter;
  std::vector<std::string> got;
  for (std::string_view piece : in.pieces)
    splitter.feed(piece, [&](std::string_view event) { got.emplace_back(event); });
  require(got.size() == expected.size(), "the splitter finds the same events in any pieces");
  for (std::size_t i = 0; i < got.size(); ++i)
    require(got[i] == expected[i], "the splitter's events do not depend on the pieces");

  // The readers on each event's data, checked against the reference readers.
  accounting::ContentFilterSummary summary;
  std::string scratch;
  for (std::string_view event : expected) {
    const std::string_view data = accounting::event_data(event, scratch);
    const std::string differs = llmgw::reference::differs_from_reference(data);
    require(differs.empty(), differs.c_str());
    summary.read_document(data);
  }
  (void)summary.flagged(accounting::FilterStage::prompt);
  (void)summary.flagged(accounting::FilterStage::completion);
}

using llmgw::reference::same_summary;
using llmgw::reference::same_usage;

void check_stage(const Input& in) {
  using llmgw::fuzz::AccountRun;
  constexpr std::string_view kSse = "text/event-stream; charset=utf-8";
  const AccountRun read(kSse, 200, false, in.pieces);      // the client asked for usage itself
  const AccountRun rewritten(kSse, 200, true, in.pieces);  // the gateway did: its chunk goes
  const AccountRun whole(kSse, 200, true, {in.stream});    // the same in one piece
  require(read.ctx.body_rewriter == nullptr && rewritten.ctx.body_rewriter != nullptr,
          "a rewriter exactly when the gateway asked for usage");
  require(read.delivered == in.stream, "without a rewriter the client gets every byte");
  require(rewritten.delivered == whole.delivered, "the rewrite does not depend on the pieces");
  require(rewritten.delivered.size() <= in.stream.size(), "the rewrite only removes bytes");
  for (const AccountRun* r : {&rewritten, &whole}) {
    require(same_usage(read.ctx.usage, r->ctx.usage), "usage does not depend on the pieces");
    require(read.ctx.finish_reason == r->ctx.finish_reason, "finish_reason is piece-independent");
    require(same_summary(read.ctx.content_filter, r->ctx.content_filter),
            "content-filter summary does not depend on the pieces");
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const Input in = cut(llmgw::fuzz::as_text(data, size));
  if (in.pieces.empty()) return 0;
  check_splitter(in);
  check_stage(in);
  return 0;
}
