#include "llm_gateway/stages/observe_stages.hpp"

#include <algorithm>
#include <charconv>
#include <iterator>
#include <limits>

#include "llm_gateway/observability/log.hpp"
#include "llm_gateway/routing/glob.hpp"
#include "llm_gateway/translate/json_scan.hpp"

namespace llmgw {
namespace http = boost::beast::http;
using accounting::FilterStage;
using observability::MetricLabels;

namespace {

double seconds_between(Clock::time_point a, Clock::time_point b) {
  return std::chrono::duration<double>(b - a).count();
}

struct MetricsState final : StageState {
  observability::Metrics* metrics = nullptr;
  bool in_flight = false;
  bool streaming = false;
  ~MetricsState() override {
    // Also when a request ends without on_complete (the process is stopping): gauges stay true.
    if (in_flight) metrics->in_flight().Decrement();
    if (streaming) metrics->active_streams().Decrement();
  }
};

std::size_t error_kind_index(std::string_view kind) {
  const auto& kinds = observability::Metrics::kErrorKinds;
  for (std::size_t i = 0; i < kinds.size(); ++i) {
    if (kind == kinds[i]) return i;
  }
  return 0;
}

}  // namespace

Verdict MetricsStage::on_request_headers(RequestContext& ctx) {
  auto& st = ctx.state<MetricsState>(this);
  st.metrics = metrics_.get();
  st.in_flight = true;
  metrics_->in_flight().Increment();
  return Verdict::proceed;
}

void MetricsStage::on_response_headers(RequestContext& ctx, unsigned, const HeaderList&) {
  if (!ctx.streamed) return;
  auto& st = ctx.state<MetricsState>(this);
  st.metrics = metrics_.get();
  if (!st.streaming) {
    st.streaming = true;
    metrics_->active_streams().Increment();
  }
}

void MetricsStage::on_complete(RequestContext& ctx) {
  auto& m = *metrics_;
  const unsigned w = ctx.worker;
  const Endpoint endpoint = ctx.path.endpoint;
  // Label ids through this snapshot's binding: by name, whatever the positions.
  const MetricLabels& labels = labels_;
  const std::size_t model =
      labels.model(ctx.model ? &*ctx.model : nullptr,
                   ctx.route ? std::optional(ctx.route->route) : std::nullopt);
  // The upstream that answered (the last attempt's), else the route's.
  const std::size_t upstream = !ctx.attempts.empty()
                                   ? labels.upstreams[ctx.attempts.back().upstream]
                               : ctx.route ? labels.upstreams[ctx.route->upstream]
                                           : labels.upstream_none;
  const std::size_t key = ctx.key             ? labels.keys[ctx.key_index]
                          : cfg_.keys.empty() ? labels.key_anonymous
                                              : labels.key_unauthenticated;
  const auto now = Clock::now();

  m.requests(w, endpoint, model, upstream, key, ctx.status).Increment();
  if (!ctx.cut_reason.empty()) m.cut_requests().Increment();
  m.duration(w, endpoint, model, upstream).Observe(seconds_between(ctx.received, now));
  if (ctx.upstream_first_byte)
    m.first_byte(w, endpoint, model, upstream)
        .Observe(seconds_between(ctx.received, *ctx.upstream_first_byte));
  if (ctx.upstream_request_written && ctx.upstream_first_byte && ctx.client_first_byte) {
    const double overhead = seconds_between(ctx.received, *ctx.upstream_request_written) +
                            seconds_between(*ctx.upstream_first_byte, *ctx.client_first_byte);
    m.overhead(w, endpoint).Observe(overhead);
  }
  if (ctx.usage) {
    m.tokens(w, model, key, false).Increment(static_cast<double>(ctx.usage->prompt_tokens));
    m.tokens(w, model, key, true).Increment(static_cast<double>(ctx.usage->completion_tokens));
  }
  if (ctx.rate_limited >= 0 && ctx.key)
    m.rate_limited(w, key, static_cast<std::size_t>(ctx.rate_limited)).Increment();
  if (!ctx.rate_limit_store_error.empty())
    m.store_errors(ctx.rate_limit_store_error == "redis" ? 1 : 0).Increment();
  for (const AttemptRecord& a : ctx.attempts) {
    m.upstream_attempts(w, labels.upstreams[a.upstream], attempt_outcome_index(a)).Increment();
  }
  if (ctx.attempts.size() > 1)
    m.retries(w, endpoint).Increment(static_cast<double>(ctx.attempts.size() - 1));
  if (ctx.route) {
    if (ctx.upstream_status) m.upstream_responses(w, upstream, *ctx.upstream_status).Increment();
    if (!ctx.upstream_error_kind.empty())
      m.upstream_errors(w, upstream, error_kind_index(ctx.upstream_error_kind)).Increment();
  }
  // Content filter: one count per stage and category per request.
  const auto& cf = ctx.content_filter;
  for (std::size_t stage = 0; stage < 2; ++stage) {
    for (std::size_t c = 0; c < accounting::kFilterCategories.size(); ++c) {
      const auto& r = cf.result(static_cast<FilterStage>(stage), c);
      if (!r.seen) continue;
      m.content_filter(w, stage, c, static_cast<std::size_t>(r.severity), r.filtered).Increment();
    }
  }
  const std::size_t filter_key = ctx.key ? key : labels.key_anonymous;
  if (ctx.upstream_status == 400u && cf.filtered(FilterStage::prompt))
    m.content_filtered_requests(w, 0, filter_key).Increment();
  if (ctx.finish_reason == "content_filter")
    m.content_filtered_requests(w, 1, filter_key).Increment();
}

std::size_t attempt_outcome_index(const AttemptRecord& a) {
  if (a.status == 429) return 1;
  if (a.status >= 500) return 3;
  if (a.status >= 400) return 2;
  if (a.status != 0) return 0;
  for (std::size_t i = 0; i < observability::Metrics::kErrorKinds.size(); ++i) {
    if (a.error_kind == observability::Metrics::kErrorKinds[i]) return 4 + i;
  }
  return 7;  // (every kind is listed; a cut without one counts as a reset)
}

void export_backend_gauges(const config::Config& cfg, const BackendRegistry& backends,
                           observability::Metrics& metrics) {
  const auto now = Clock::now();
  std::vector<std::pair<std::size_t, std::string>> seen;  // (upstream, deployment)
  for (const auto& route : cfg.routes) {
    if (!route.fails_over()) continue;
    for (const auto& backend : route.backends) {
      const config::Upstream& up = cfg.upstreams[backend.upstream];
      std::vector<std::string> deployments;
      if (up.provider == config::Provider::azure) {
        for (const auto& [model, deployment] : up.deployments) deployments.push_back(deployment);
        if (glob_is_literal(route.match)) deployments.push_back(deployment_for(up, route.match));
      } else {
        deployments.emplace_back();
      }
      for (auto& d : deployments) {
        std::pair<std::size_t, std::string> id{backend.upstream, std::move(d)};
        if (std::find(seen.begin(), seen.end(), id) != seen.end()) continue;
        const std::string key = backend_key(up.name, id.second);
        const BackendState state = backends.state(key, up.name, now);
        for (auto s : {BackendState::available, BackendState::cooldown, BackendState::ejected})
          metrics.backend_state(up.name, id.second, to_string(s)).Set(s == state ? 1 : 0);
        const BackendRegistry::Snapshot v = backends.view(key, up.name, now);
        if (v.remaining_requests || v.remaining_tokens || backends.reported(key)) {
          const double nan = std::numeric_limits<double>::quiet_NaN();
          metrics.upstream_remaining(up.name, id.second, false)
              .Set(v.remaining_requests ? static_cast<double>(*v.remaining_requests) : nan);
          metrics.upstream_remaining(up.name, id.second, true)
              .Set(v.remaining_tokens ? static_cast<double>(*v.remaining_tokens) : nan);
        }
        seen.push_back(std::move(id));
      }
    }
  }
}

namespace {

struct BodyCapture final : StageState {
  std::string response;
};

void name(std::string& out, std::string_view field_name) {
  out += ",\"";
  out += field_name;
  out += "\":";
}
void integer(std::string& out, long long value) {
  char digits[24];
  const auto r = std::to_chars(std::begin(digits), std::end(digits), value);
  out.append(digits, r.ptr);
}
void field(std::string& out, std::string_view field_name, std::string_view value) {
  name(out, field_name);
  json::append_encoded(out, value);
}
void field_or_null(std::string& out, std::string_view field_name, std::string_view value) {
  if (value.empty()) {
    name(out, field_name);
    out += "null";
  } else {
    field(out, field_name, value);
  }
}
void number(std::string& out, std::string_view field_name, std::optional<long long> value) {
  name(out, field_name);
  if (value) {
    integer(out, *value);
  } else {
    out += "null";
  }
}

std::string_view trace_id(const HeaderList& headers) {
  // W3C traceparent: version "-" trace-id (32 hex) "-" parent-id (16 hex) "-" flags
  const std::string_view tp = headers["traceparent"];
  if (tp.size() < 55 || tp[2] != '-' || tp[35] != '-') return {};
  const std::string_view id = tp.substr(3, 32);
  if (id.find_first_not_of("0123456789abcdef") != std::string_view::npos) return {};
  if (id == "00000000000000000000000000000000") return {};
  return id;
}

void categories(std::string& out, const accounting::ContentFilterSummary& cf, FilterStage stage) {
  out += '[';
  bool first = true;
  for (std::string_view c : cf.flagged(stage)) {
    if (!first) out += ',';
    json::append_encoded(out, c);
    first = false;
  }
  out += ']';
}

}  // namespace

void AccessLogStage::on_response_body(RequestContext& ctx, std::string_view piece) {
  if (!cfg_.logging.bodies) return;
  auto& st = ctx.state<BodyCapture>(this);
  const std::size_t room =
      cfg_.logging.body_max_bytes - std::min(cfg_.logging.body_max_bytes, st.response.size());
  st.response.append(piece.substr(0, room));
}

std::string AccessLogStage::render(RequestContext& ctx) const {
  std::string out;
  render(ctx, out);
  return out;
}

void AccessLogStage::render(RequestContext& ctx, std::string& out) const {
  const auto now = Clock::now();
  const auto wall_received =
      std::chrono::system_clock::now() -
      std::chrono::duration_cast<std::chrono::system_clock::duration>(now - ctx.received);
  out += "{\"ts\":\"";
  log::append_rfc3339(out, wall_received);
  out += '"';
  field(out, "request_id", ctx.request_id);
  field(out, "key",
        ctx.key             ? std::string_view(ctx.key->name)
        : cfg_.keys.empty() ? "anonymous"
                            : "unauthenticated");
  field(out, "method", http::to_string(ctx.method));
  field(out, "path", ctx.target.substr(0, ctx.target.find('?')).substr(0, 1024));
  field(out, "endpoint", endpoint_name(ctx.path.endpoint));
  field_or_null(out, "model", ctx.model ? json::truncate_chars(*ctx.model, 256) : "");
  field_or_null(out, "upstream", ctx.upstream ? std::string_view(ctx.upstream->name) : "");
  field_or_null(out, "deployment", ctx.deployment);
  out += ",\"attempts\":[";
  for (std::size_t i = 0; i < ctx.attempts.size(); ++i) {
    const AttemptRecord& a = ctx.attempts[i];
    if (i != 0) out += ',';
    out += "{\"upstream\":";
    json::append_encoded(out, a.upstream < cfg_.upstreams.size()
                                  ? std::string_view(cfg_.upstreams[a.upstream].name)
                                  : std::string_view());
    if (a.status != 0) {
      out += ",\"status\":";
      integer(out, a.status);
    } else {
      out += ",\"error\":";
      json::append_encoded(out, a.error_kind);
    }
    out += ",\"duration_ms\":";
    integer(out, std::chrono::duration_cast<std::chrono::milliseconds>(a.duration).count());
    out += '}';
  }
  out += ']';
  number(out, "status", ctx.status);
  out += ",\"stream\":";
  out += ctx.streamed ? "true" : "false";
  number(out, "bytes_in", static_cast<long long>(ctx.bytes_in));
  number(out, "bytes_out", static_cast<long long>(ctx.bytes_out));
  number(out, "duration_ms",
         std::chrono::duration_cast<std::chrono::milliseconds>(now - ctx.received).count());
  number(out, "upstream_first_byte_ms",
         ctx.upstream_first_byte
             ? std::optional<long long>(std::chrono::duration_cast<std::chrono::milliseconds>(
                                            *ctx.upstream_first_byte - ctx.received)
                                            .count())
             : std::nullopt);
  std::optional<long long> overhead;
  if (ctx.upstream_request_written && ctx.upstream_first_byte && ctx.client_first_byte) {
    overhead = std::chrono::duration_cast<std::chrono::microseconds>(
                   (*ctx.upstream_request_written - ctx.received) +
                   (*ctx.client_first_byte - *ctx.upstream_first_byte))
                   .count();
  }
  number(out, "overhead_us", overhead);
  number(out, "prompt_tokens",
         ctx.usage ? std::optional<long long>(ctx.usage->prompt_tokens) : std::nullopt);
  number(out, "completion_tokens",
         ctx.usage ? std::optional<long long>(ctx.usage->completion_tokens) : std::nullopt);
  number(out, "total_tokens",
         ctx.usage ? std::optional<long long>(ctx.usage->total_tokens) : std::nullopt);
  field_or_null(out, "finish_reason", ctx.finish_reason);
  out += ",\"content_filter\":";
  if (!ctx.content_filter.flagged(FilterStage::prompt).empty() ||
      !ctx.content_filter.flagged(FilterStage::completion).empty()) {
    out += "{\"prompt\":";
    categories(out, ctx.content_filter, FilterStage::prompt);
    out += ",\"completion\":";
    categories(out, ctx.content_filter, FilterStage::completion);
    out += '}';
  } else {
    out += "null";
  }
  field_or_null(out, "error", ctx.error_code);
  field_or_null(out, "cut", ctx.cut_reason);
  field_or_null(out, "upstream_request_id", ctx.upstream_request_id);
  field_or_null(out, "client", ctx.peer);
  field_or_null(out, "user_agent",
                ctx.headers ? (*ctx.headers)[http::field::user_agent].substr(0, 512) : "");
  field_or_null(out, "trace_id", ctx.headers ? trace_id(*ctx.headers) : "");
  if (cfg_.logging.bodies) {
    field(out, "request_body", ctx.body.substr(0, cfg_.logging.body_max_bytes));
    auto* st = ctx.find_state<BodyCapture>(this);
    field(out, "response_body", st ? std::string_view(st->response) : "");
  }
  out += '}';
}

void AccessLogStage::on_complete(RequestContext& ctx) {
  // One buffer per thread, reused: rendering a line allocates nothing once it has grown to the
  // size of a line. A line that carried large bodies does not keep its memory.
  thread_local std::string line;
  line.clear();
  render(ctx, line);
  writer_->write(line);
  if (line.capacity() > kKeptLineCapacity) std::string().swap(line);
}

}  // namespace llmgw
