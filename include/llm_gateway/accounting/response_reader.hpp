#pragma once
// Reads what accounting needs from an upstream response as its bytes pass: usage and
// finish_reason, from a JSON body or from each event of an SSE stream. It never delays or alters
// the bytes the client gets, except for the one case it is asked to: removing the usage chunk
// the gateway itself requested (stream_options.include_usage) from a stream whose client did not
// ask for it.
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace llmgw::accounting {

struct Usage {
  std::int64_t prompt_tokens = 0;
  std::int64_t completion_tokens = 0;
  std::int64_t total_tokens = 0;
};

// Splits an SSE byte stream into events (terminated by a blank line). Complete events inside a
// piece are handed out as views of that piece; only an event cut by a piece boundary is copied.
class SseSplitter {
 public:
  // Calls on_event(event_text) for each complete event, then keeps the incomplete rest.
  template <class OnEvent>
  void feed(std::string_view piece, OnEvent&& on_event);

 private:
  std::string pending_;
};

// Finds the end of the first event in text[from..): returns {content_end, next_event_begin}, or
// nullopt when no blank line terminates an event there.
std::optional<std::pair<std::size_t, std::size_t>> find_event_end(std::string_view text,
                                                                  std::size_t from);

// Which of the keys accounting reads an event's JSON data has, found in one pass without parsing
// it, so that the (rare) events worth parsing are told from the rest cheaply. A key is only
// recognised where a JSON string starts; one inside a string value may be reported too, which
// costs a parse and nothing else.
struct EventKeys {
  bool usage_object = false;          // "usage": {...}  (not "usage": null)
  bool finish_reason_string = false;  // "finish_reason": "..."  (not null)
  bool filter_results = false;        // content_filter_results, prompt_filter_results or
                                      // prompt_annotations (what ContentFilterSummary reads)
  bool prompt_results = false;        // prompt_filter_results or prompt_annotations
  int choice_results = 0;             // how many "content_filter_results": keys
  std::size_t first_choice_results = std::string_view::npos;  // where the first one's quote is
};
EventKeys scan_event_keys(std::string_view data);

// The data payload of an SSE event (its data: lines joined by '\n'). Uses `scratch` only when
// the event has several data lines.
std::string_view event_data(std::string_view event, std::string& scratch);

// Facts read from one JSON document (a whole response, or one stream event's data).
struct JsonFacts {
  std::optional<Usage> usage;
  std::string finish_reason;      // the last non-null finish_reason of any choice
  bool usage_only_chunk = false;  // choices is [] and usage is an object (include_usage chunk)
};
JsonFacts read_json_facts(std::string_view json);

template <class OnEvent>
void SseSplitter::feed(std::string_view piece, OnEvent&& on_event) {
  std::string_view text = piece;
  if (!pending_.empty()) {
    pending_.append(piece);
    text = pending_;
  }
  std::size_t pos = 0;
  while (auto end = find_event_end(text, pos)) {
    on_event(text.substr(pos, end->first - pos));
    pos = end->second;
  }
  if (pending_.empty()) {
    pending_.assign(text.substr(pos));
  } else {
    pending_.erase(0, pos);
  }
}

}  // namespace llmgw::accounting
