#include "llm_gateway/stages/account_stage.hpp"

#include <boost/beast/core/string.hpp>

#include <charconv>

#include "llm_gateway/accounting/response_document.hpp"
#include "llm_gateway/translate/json_scan.hpp"

namespace llmgw {
namespace http = boost::beast::http;
using accounting::JsonFacts;

namespace {

// A JSON body is kept whole up to this size (enough for any chat or responses answer); past it
// only the tail, where `usage` sits, is kept.
constexpr std::size_t kMaxJsonBody = 1024 * 1024;
constexpr std::size_t kTailBytes = 64 * 1024;

struct AccountState final : StageState, BodyRewriter {
  enum class Mode { none, json, sse } mode = Mode::none;
  RequestContext* ctx = nullptr;
  bool strip_usage_chunk = false;
  accounting::SseSplitter splitter;
  std::string body;  // json mode
  // A JSON body that arrived whole in one piece is read where it lies (the relay calls
  // on_response_end before it reads again), not copied: the common non-stream answer.
  std::optional<std::uint64_t> content_length;
  std::string_view whole_piece;
  bool truncated = false;
  std::string scratch;
  std::string held;  // rewrite mode: an event cut by a piece boundary
  std::string work;

  // Azure repeats the same (usually all-safe) completion results on almost every stream chunk.
  // Reading identical results again cannot change the per-request summary, so a chunk whose only
  // results are byte-identical to the last ones read is not parsed for them.
  static constexpr std::string_view kChoiceResults = "\"content_filter_results\":";
  std::string last_filter;

  bool repeats_last_filter(std::string_view data, const accounting::EventKeys& keys) const {
    if (last_filter.empty() || keys.choice_results != 1 || keys.prompt_results) return false;
    return data.substr(keys.first_choice_results).starts_with(last_filter);
  }

  void remember_filter(std::string_view data, const accounting::EventKeys& keys) {
    last_filter.clear();
    // Only a chunk whose results are a single choice's: prompt results use the same key.
    if (keys.prompt_results || keys.choice_results != 1) return;
    const std::size_t at = keys.first_choice_results;
    const std::string_view rest = data.substr(at + kChoiceResults.size());
    const json::ScanResult r = json::scan_prefix(rest);
    if (r.valid) last_filter.assign(data.substr(at, kChoiceResults.size() + r.consumed));
  }

  void merge(const JsonFacts& f) {
    if (f.usage) ctx->usage = f.usage;
    if (!f.finish_reason.empty()) ctx->finish_reason = f.finish_reason;
  }

  // Returns true when the event is the usage chunk the gateway asked for on the client's behalf.
  bool observe_event(std::string_view event) {
    const std::string_view data = accounting::event_data(event, scratch);
    if (data.empty() || data == "[DONE]") return false;
    // Most chunks carry neither: look before parsing.
    const accounting::EventKeys keys = accounting::scan_event_keys(data);
    const bool has_usage = keys.usage_object;
    const bool has_finish = keys.finish_reason_string;
    const bool read_filter = keys.filter_results && !repeats_last_filter(data, keys);
    if (!has_usage && !has_finish && !read_filter) return false;
    const accounting::DocumentReading read = accounting::read_response_document(
        data, {.facts = has_usage || has_finish, .filter = read_filter});
    if (read_filter) {
      ctx->content_filter.merge(read.filter);
      remember_filter(data, keys);
    }
    if (!has_usage && !has_finish) return false;
    merge(read.facts);
    return strip_usage_chunk && read.facts.usage_only_chunk;
  }

  void rewrite(std::string_view piece, bool last, std::vector<std::string_view>& out) override {
    out.clear();
    std::string_view text = piece;
    if (!held.empty()) {
      work.assign(held);
      work.append(piece);
      held.clear();
      text = work;
    }
    std::size_t pos = 0;
    std::size_t kept_from = 0;
    while (auto end = accounting::find_event_end(text, pos)) {
      if (observe_event(text.substr(pos, end->first - pos))) {
        if (pos > kept_from) out.push_back(text.substr(kept_from, pos - kept_from));
        kept_from = end->second;
      }
      pos = end->second;
    }
    if (pos > kept_from) out.push_back(text.substr(kept_from, pos - kept_from));
    if (last) {
      if (pos < text.size()) out.push_back(text.substr(pos));
    } else {
      held.assign(text.substr(pos));
    }
  }
};

std::optional<accounting::Usage> usage_from_tail(std::string_view tail) {
  for (std::size_t at = tail.rfind("\"usage\""); at != std::string_view::npos && at > 0;
       at = tail.rfind("\"usage\"", at - 1)) {
    if (tail[at - 1] == '\\') continue;  // inside a string
    std::size_t colon = tail.find_first_not_of(" \t\r\n", at + 7);
    if (colon == std::string_view::npos || tail[colon] != ':') continue;
    std::size_t open = tail.find_first_not_of(" \t\r\n", colon + 1);
    if (open == std::string_view::npos || tail[open] != '{') continue;
    json::ScanResult r = json::scan_prefix(tail.substr(open));
    if (!r.valid) continue;
    const std::string wrapped = "{\"usage\":" + std::string(tail.substr(open, r.consumed)) + "}";
    return accounting::read_json_facts(wrapped).usage;
  }
  return std::nullopt;
}

}  // namespace

Verdict AccountStage::on_request(RequestContext& ctx) {
  const BodyFacts& f = ctx.body_facts;
  const bool chat_or_completions =
      ctx.path.endpoint == Endpoint::chat_completions || ctx.path.endpoint == Endpoint::completions;
  if (chat_or_completions && ctx.path.deployment_scoped && f.kind == BodyKind::json && f.stream &&
      !f.include_usage && f.object_end != std::string_view::npos)
    ctx.stream_usage_wanted = true;
  return Verdict::proceed;
}

void AccountStage::on_response_headers(RequestContext& ctx, unsigned status,
                                       const HeaderList& headers) {
  if (!ctx.upstream_status) return;  // a local reply
  auto& st = ctx.state<AccountState>(this);
  st.ctx = &ctx;
  // One walk over the fields instead of four lookups; the first of each name counts, as a lookup
  // would find it.
  std::string_view apim_id, x_request_id, type, length_text;
  bool have_type = false, have_length = false, have_apim = false, have_x = false;
  for (const auto& f : headers) {
    switch (f.name()) {
      case http::field::content_type:
        if (!have_type) type = f.value();
        have_type = true;
        break;
      case http::field::content_length:
        if (!have_length) length_text = f.value();
        have_length = true;
        break;
      case http::field::unknown:
        if (!have_apim && boost::beast::iequals(f.name_string(), "apim-request-id")) {
          apim_id = f.value();
          have_apim = true;
        } else if (!have_x && boost::beast::iequals(f.name_string(), "x-request-id")) {
          x_request_id = f.value();
          have_x = true;
        }
        break;
      default: break;
    }
  }
  const std::string_view id = apim_id.empty() ? x_request_id : apim_id;
  ctx.upstream_request_id = std::string(id.substr(0, 128));
  if (type.starts_with("text/event-stream")) {
    st.mode = AccountState::Mode::sse;
    if (ctx.request_stream_usage && status == 200) {
      st.strip_usage_chunk = true;
      ctx.body_rewriter = &st;
    }
  } else if (type.find("json") != std::string_view::npos) {
    st.mode = AccountState::Mode::json;
    std::uint64_t length = 0;
    const std::string_view text = length_text;
    const auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), length);
    if (ec == std::errc() && end == text.data() + text.size() && !text.empty())
      st.content_length = length;
  }
}

void AccountStage::on_response_body(RequestContext& ctx, std::string_view piece) {
  auto* st = ctx.find_state<AccountState>(this);
  if (!st) return;
  switch (st->mode) {
    case AccountState::Mode::sse:
      if (st->strip_usage_chunk) return;  // rewrite() reads the events itself
      st->splitter.feed(piece, [st](std::string_view event) { st->observe_event(event); });
      return;
    case AccountState::Mode::json:
      if (st->body.empty() && st->whole_piece.empty() && st->content_length == piece.size()) {
        st->whole_piece = piece;
        return;
      }
      if (!st->whole_piece.empty()) {  // more than the announced length: read it all as copied
        st->body.assign(st->whole_piece);
        st->whole_piece = {};
      }
      if (!st->truncated && st->body.size() + piece.size() > kMaxJsonBody) st->truncated = true;
      st->body.append(piece);
      if (st->truncated && st->body.size() > 2 * kTailBytes)
        st->body.erase(0, st->body.size() - kTailBytes);
      return;
    case AccountState::Mode::none: return;
  }
}

void AccountStage::on_response_end(RequestContext& ctx) {
  auto* st = ctx.find_state<AccountState>(this);
  if (!st || st->mode != AccountState::Mode::json) return;
  if (!st->truncated) {
    const std::string_view body = st->whole_piece.empty() ? st->body : st->whole_piece;
    st->whole_piece = {};
    // One pass reads the usage and, where they can be, the content-filter results.
    const accounting::DocumentReading read = accounting::read_response_document(
        body, {.facts = true,
               .filter = ctx.status == 200 && body.find("filter_result") != std::string_view::npos,
               .filter_error = ctx.status == 400});
    st->merge(read.facts);
    ctx.content_filter.merge(read.filter);
  } else if (auto u = usage_from_tail(st->body)) {
    ctx.usage = u;
  }
}

}  // namespace llmgw
