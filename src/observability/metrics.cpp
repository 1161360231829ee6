#include "llm_gateway/observability/metrics.hpp"

#include <iterator>
#include <stdexcept>

#include <prometheus/text_serializer.h>

#include <sstream>

#include "llm_gateway/accounting/content_filter.hpp"
#include "llm_gateway/routing/glob.hpp"

namespace llmgw::observability {
using prometheus::Histogram;

namespace {
const Histogram::BucketBoundaries kLatencyBuckets{0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1,
                                                  2.5,   5,    10,    30,   60,  120,  300, 600};
const Histogram::BucketBoundaries kOverheadBuckets{0.00001, 0.000025, 0.00005, 0.0001, 0.00025,
                                                   0.0005,  0.001,    0.0025,  0.005,  0.01,
                                                   0.025,   0.05,     0.1};

// Packs small label indexes into one cache key: family id (4 bits), then five fields of 4, 16, 8,
// 16 and 16 bits. A wider index would alias another series: the widths are checked below
// (compile time) and in the constructor (the configuration's counts).
constexpr std::uint64_t kPackFamilyLimit = 1u << 4;
constexpr std::uint64_t kPackA = 1u << 4;   // endpoint, limit kind, error kind, token type, stage
constexpr std::uint64_t kPackB = 1u << 16;  // model label, content-filter category
constexpr std::uint64_t kPackC = 1u << 8;   // upstream label (+ "none"), severity
constexpr std::uint64_t kPackD = 1u << 16;  // key label (+ anonymous, unauthenticated)
constexpr std::uint64_t kPackE = 1u << 16;  // HTTP status
static_assert(std::size(kAllEndpoints) <= kPackA, "endpoint index must fit pack()'s 4 bits");
static_assert(Metrics::kErrorKinds.size() <= kPackA && Metrics::kLimitKinds.size() <= kPackA);
static_assert(accounting::kFilterCategories.size() <= kPackB);
static_assert(kPackE > 999, "every HTTP status fits");
static_assert(kPackFamilyLimit > 10, "family ids 1..10 are in use");
std::uint64_t pack(std::uint64_t family, std::uint64_t a, std::uint64_t b = 0, std::uint64_t c = 0,
                   std::uint64_t d = 0, std::uint64_t e = 0) {
  return family << 60 | (a & 0xF) << 56 | (b & 0xFFFF) << 40 | (c & 0xFF) << 32 |
         (d & 0xFFFF) << 16 | (e & 0xFFFF);
}
}  // namespace

Metrics::Metrics(const config::Config& cfg, unsigned workers, const std::string& version)
    : registry_(std::make_shared<prometheus::Registry>()), caches_(workers) {
  auto add_model = [this](const std::string& name) {
    if (model_index_.emplace(name, model_names_.size()).second) model_names_.push_back(name);
  };
  for (const auto& up : cfg.upstreams) {
    for (const auto& [model, deployment] : up.deployments) add_model(model);
  }
  for (const auto& r : cfg.routes) {
    if (glob_is_literal(r.match)) add_model(r.match);
  }
  route_label_base_ = model_names_.size();
  for (const auto& r : cfg.routes) model_names_.push_back(r.match);
  model_names_.push_back("none");
  for (const auto& k : cfg.keys) key_names_.push_back(k.name);
  for (const auto& u : cfg.upstreams) upstream_names_.push_back(u.name);
  // The configuration's counts must fit pack()'s fields (see there).
  if (upstream_names_.size() + 1 > kPackC || key_names_.size() + 2 > kPackD ||
      model_names_.size() > kPackB)
    throw std::invalid_argument("more upstreams (" + std::to_string(upstream_names_.size()) +
                                "), keys or model labels than the metric tables hold");

  auto& r = *registry_;
  requests_ = &prometheus::BuildCounter()
                   .Name("llm_gateway_requests_total")
                   .Help("Requests handled, by the HTTP status sent to the client")
                   .Register(r);
  duration_ = &prometheus::BuildHistogram()
                   .Name("llm_gateway_request_duration_seconds")
                   .Help("Whole request, from the request received to the last response byte")
                   .Register(r);
  first_byte_ = &prometheus::BuildHistogram()
                     .Name("llm_gateway_upstream_first_byte_seconds")
                     .Help(
                         "Request received to the upstream's first response byte (time to "
                         "first token for streams)")
                     .Register(r);
  overhead_ = &prometheus::BuildHistogram()
                   .Name("llm_gateway_overhead_seconds")
                   .Help(
                       "Time the gateway itself adds: request received to upstream request "
                       "written, plus upstream first byte to first byte written to the client")
                   .Register(r);
  tokens_ = &prometheus::BuildCounter()
                 .Name("llm_gateway_tokens_total")
                 .Help("Tokens from the upstream's usage, streams included")
                 .Register(r);
  rate_limited_ = &prometheus::BuildCounter()
                       .Name("llm_gateway_rate_limited_total")
                       .Help("Requests the gateway rejected with 429, by limit")
                       .Register(r);
  upstream_responses_ = &prometheus::BuildCounter()
                             .Name("llm_gateway_upstream_responses_total")
                             .Help("Responses received from upstreams, by status")
                             .Register(r);
  upstream_errors_ = &prometheus::BuildCounter()
                          .Name("llm_gateway_upstream_errors_total")
                          .Help("Upstream failures, by kind")
                          .Register(r);
  content_filter_ = &prometheus::BuildCounter()
                         .Name("llm_gateway_content_filter_total")
                         .Help(
                             "Content-filter results per request: one count per stage and "
                             "category, with the highest severity seen")
                         .Register(r);
  content_filtered_requests_ =
      &prometheus::BuildCounter()
           .Name("llm_gateway_content_filtered_requests_total")
           .Help("Requests blocked (400 content_filter) or cut (finish_reason content_filter)")
           .Register(r);
  auto& store_errors = prometheus::BuildCounter()
                           .Name("llm_gateway_rate_limit_store_errors_total")
                           .Help("Admissions the rate-limit store could not answer")
                           .Register(r);
  store_errors_[0] = &store_errors.Add({{"store", "memory"}});
  store_errors_[1] = &store_errors.Add({{"store", "redis"}});
  in_flight_ = &prometheus::BuildGauge()
                    .Name("llm_gateway_in_flight_requests")
                    .Help("Requests being handled")
                    .Register(r)
                    .Add({});
  auto& refused = prometheus::BuildCounter()
                      .Name("llm_gateway_connections_refused_total")
                      .Help(
                          "Client connections closed at once: over server.max_connections "
                          "(reason=limit), or accept() failed (reason=accept_error, e.g. out of "
                          "file descriptors)")
                      .Register(r);
  connections_refused_[0] = &refused.Add({{"reason", "limit"}});
  connections_refused_[1] = &refused.Add({{"reason", "accept_error"}});
  access_log_dropped_ = &prometheus::BuildCounter()
                             .Name("llm_gateway_access_log_dropped_total")
                             .Help(
                                 "Access-log lines lost: the queue was full (the disk could not "
                                 "keep up) or the write failed (e.g. disk full)")
                             .Register(r)
                             .Add({});
  cut_requests_ = &prometheus::BuildCounter()
                       .Name("llm_gateway_cut_requests_total")
                       .Help(
                           "Requests the gateway cut short itself (reason=drain: the drain "
                           "deadline passed)")
                       .Register(r)
                       .Add({{"reason", "drain"}});
  active_streams_ = &prometheus::BuildGauge()
                         .Name("llm_gateway_active_streams")
                         .Help("Streamed responses being relayed")
                         .Register(r)
                         .Add({});
  auto& conns = prometheus::BuildGauge()
                    .Name("llm_gateway_upstream_connections")
                    .Help("Upstream connections, in use (active) or pooled (idle)")
                    .Register(r);
  upstream_connections_ = &conns;
  for (const auto& name : upstream_names_) {  // present (as 0) from the start
    conns.Add({{"upstream", name}, {"state", "active"}});
    conns.Add({{"upstream", name}, {"state", "idle"}});
  }
  prometheus::BuildGauge()
      .Name("llm_gateway_build_info")
      .Help("Build information")
      .Register(r)
      .Add({{"version", version}})
      .Set(1);
}

std::string Metrics::render() const {
  std::ostringstream out;
  prometheus::TextSerializer{}.Serialize(out, registry_->Collect());
  return out.str();
}

std::size_t Metrics::model_label(const std::string* model, std::optional<std::size_t> route) const {
  if (model) {
    if (auto it = model_index_.find(*model); it != model_index_.end()) return it->second;
  }
  if (route) return route_label_base_ + *route;
  return model_names_.size() - 1;  // none
}

template <class T, class Make>
T& Metrics::cached(Cache<T>& cache, std::uint64_t key, Make&& make) {
  if (auto it = cache.find(key); it != cache.end()) return *it->second;
  T& made = make();  // Family::Add: locks and builds the label map, once per thread and series
  cache.emplace(key, &made);
  return made;
}

namespace {
const std::string& label(const std::vector<std::string>& names, std::size_t i, const char* fallback,
                         std::string& scratch) {
  if (i < names.size()) return names[i];
  scratch = fallback;
  return scratch;
}
}  // namespace

prometheus::Counter& Metrics::requests(unsigned worker, Endpoint e, std::size_t model,
                                       std::size_t upstream, std::size_t key, unsigned code) {
  return cached(
      caches_[worker].counters,
      pack(1, static_cast<std::uint64_t>(e), model, upstream, key, code), [&]() -> auto& {
        std::string s1, s2;
        const std::string key_label = key < key_names_.size()  ? key_names_[key]
                                      : key == key_anonymous() ? "anonymous"
                                                               : "unauthenticated";
        return requests_->Add({{"endpoint", std::string(endpoint_name(e))},
                               {"model", model_names_[model]},
                               {"upstream", label(upstream_names_, upstream, "none", s1)},
                               {"key", key_label},
                               {"code", std::to_string(code)}});
      });
}

prometheus::Histogram& Metrics::duration(unsigned worker, Endpoint e, std::size_t model,
                                         std::size_t upstream) {
  return cached(
      caches_[worker].histograms,
      pack(2, static_cast<std::uint64_t>(e), model, upstream), [&]() -> auto& {
        std::string s;
        return duration_->Add({{"endpoint", std::string(endpoint_name(e))},
                               {"model", model_names_[model]},
                               {"upstream", label(upstream_names_, upstream, "none", s)}},
                              kLatencyBuckets);
      });
}

prometheus::Histogram& Metrics::first_byte(unsigned worker, Endpoint e, std::size_t model,
                                           std::size_t upstream) {
  return cached(
      caches_[worker].histograms,
      pack(3, static_cast<std::uint64_t>(e), model, upstream), [&]() -> auto& {
        std::string s;
        return first_byte_->Add({{"endpoint", std::string(endpoint_name(e))},
                                 {"model", model_names_[model]},
                                 {"upstream", label(upstream_names_, upstream, "none", s)}},
                                kLatencyBuckets);
      });
}

prometheus::Histogram& Metrics::overhead(unsigned worker, Endpoint e) {
  return cached(
      caches_[worker].histograms, pack(4, static_cast<std::uint64_t>(e)), [&]() -> auto& {
        return overhead_->Add({{"endpoint", std::string(endpoint_name(e))}}, kOverheadBuckets);
      });
}

prometheus::Counter& Metrics::tokens(unsigned worker, std::size_t model, std::size_t key,
                                     bool completion) {
  return cached(
      caches_[worker].counters, pack(5, completion ? 1 : 0, model, 0, key), [&]() -> auto& {
        const std::string key_label = key < key_names_.size() ? key_names_[key] : "anonymous";
        return tokens_->Add({{"model", model_names_[model]},
                             {"key", key_label},
                             {"type", completion ? "completion" : "prompt"}});
      });
}

prometheus::Counter& Metrics::rate_limited(unsigned worker, std::size_t key, std::size_t kind) {
  return cached(
      caches_[worker].counters, pack(6, kind, 0, 0, key), [&]() -> auto& {
        return rate_limited_->Add({{"key", key_names_[key]}, {"limit", kLimitKinds[kind]}});
      });
}

prometheus::Counter& Metrics::upstream_responses(unsigned worker, std::size_t upstream,
                                                 unsigned code) {
  return cached(
      caches_[worker].counters, pack(7, 0, 0, upstream, 0, code), [&]() -> auto& {
        return upstream_responses_->Add(
            {{"upstream", upstream_names_[upstream]}, {"code", std::to_string(code)}});
      });
}

prometheus::Counter& Metrics::upstream_errors(unsigned worker, std::size_t upstream,
                                              std::size_t kind) {
  return cached(
      caches_[worker].counters, pack(8, kind, 0, upstream), [&]() -> auto& {
        return upstream_errors_->Add(
            {{"upstream", upstream_names_[upstream]}, {"kind", kErrorKinds[kind]}});
      });
}

prometheus::Counter& Metrics::content_filter(unsigned worker, std::size_t stage,
                                             std::size_t category, std::size_t severity,
                                             bool filtered) {
  return cached(
      caches_[worker].counters,
      pack(9, stage, category, severity, filtered ? 1 : 0), [&]() -> auto& {
        return content_filter_->Add(
            {{"stage",
              std::string(accounting::stage_name(static_cast<accounting::FilterStage>(stage)))},
             {"category", std::string(accounting::kFilterCategories[category])},
             {"severity",
              std::string(accounting::severity_name(static_cast<accounting::Severity>(severity)))},
             {"filtered", filtered ? "true" : "false"}});
      });
}

prometheus::Counter& Metrics::content_filtered_requests(unsigned worker, std::size_t stage,
                                                        std::size_t key) {
  return cached(
      caches_[worker].counters, pack(10, stage, 0, 0, key), [&]() -> auto& {
        const std::string key_label = key < key_names_.size() ? key_names_[key] : "anonymous";
        return content_filtered_requests_->Add(
            {{"stage",
              std::string(accounting::stage_name(static_cast<accounting::FilterStage>(stage)))},
             {"key", key_label}});
      });
}

prometheus::Counter& Metrics::store_errors(std::size_t store) {
  return *store_errors_[store];
}

prometheus::Gauge& Metrics::upstream_connections(const std::string& name, bool active) {
  return upstream_connections_->Add({{"upstream", name}, {"state", active ? "active" : "idle"}});
}

}  // namespace llmgw::observability
