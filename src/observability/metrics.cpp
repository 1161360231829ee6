#include "llm_gateway/observability/metrics.hpp"

#include <algorithm>
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
static_assert(kPackFamilyLimit > 12, "family ids 1..12 are in use");
static_assert(Metrics::kAttemptOutcomes.size() <= kPackA);
std::uint64_t pack(std::uint64_t family, std::uint64_t a, std::uint64_t b = 0, std::uint64_t c = 0,
                   std::uint64_t d = 0, std::uint64_t e = 0) {
  return family << 60 | (a & 0xF) << 56 | (b & 0xFFFF) << 40 | (c & 0xFF) << 32 |
         (d & 0xFFFF) << 16 | (e & 0xFFFF);
}
}  // namespace

void CounterShard::flush() {
  const double total = total_.load(std::memory_order_relaxed);
  if (total == exported_) return;
  series_.Increment(total - exported_);
  exported_ = total;
}

HistogramShard::HistogramShard(Histogram& series, const Histogram::BucketBoundaries& bounds)
    : series_(series),
      bounds_(bounds),
      counts_(std::make_unique<std::atomic<std::uint64_t>[]>(bounds.size() + 1)),
      exported_counts_(bounds.size() + 1, 0) {}

void HistogramShard::Observe(double value) {
  // The first bucket whose bound is at least the value (Prometheus' "le"), as Histogram::Observe
  // picks it; past the last bound, the +Inf bucket.
  const auto bucket = static_cast<std::size_t>(
      std::lower_bound(bounds_.begin(), bounds_.end(), value) - bounds_.begin());
  auto& count = counts_[bucket];
  count.store(count.load(std::memory_order_relaxed) + 1, std::memory_order_relaxed);
  sum_.store(sum_.load(std::memory_order_relaxed) + value, std::memory_order_relaxed);
}

void HistogramShard::flush() {
  std::vector<double> increments(exported_counts_.size(), 0.0);
  bool any = false;
  for (std::size_t i = 0; i < exported_counts_.size(); ++i) {
    const std::uint64_t count = counts_[i].load(std::memory_order_relaxed);
    increments[i] = static_cast<double>(count - exported_counts_[i]);
    any = any || count != exported_counts_[i];
    exported_counts_[i] = count;
  }
  const double sum = sum_.load(std::memory_order_relaxed);
  if (!any && sum == exported_sum_) return;
  series_.ObserveMultiple(increments, sum - exported_sum_);
  exported_sum_ = sum;
}

Metrics::Metrics(const config::Config& cfg, unsigned workers, const std::string& version)
    : registry_(std::make_shared<prometheus::Registry>()), caches_(workers) {
  // The configuration's counts must fit pack()'s fields (see there).
  if (cfg.upstreams.size() + 1 > kPackC || cfg.keys.size() + 2 > kPackD)
    throw std::invalid_argument("more upstreams (" + std::to_string(cfg.upstreams.size()) +
                                ") or keys than the metric tables hold");
  // The startup configuration's labels first, then the fixed ones, so their ids are the dense
  // ranges the README describes; later snapshots add the names they bring after these.
  startup_ = bind_locked(cfg, true);

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
  auto& handshakes = prometheus::BuildCounter()
                         .Name("llm_gateway_tls_handshake_errors_total")
                         .Help(
                             "TLS handshakes on a listener that failed, by listener (main, "
                             "admin) and reason")
                         .Register(r);
  for (std::size_t l = 0; l < 2; ++l) {
    for (std::size_t i = 0; i < kTlsHandshakeFailures.size(); ++i) {
      tls_handshake_errors_[l][i] = &handshakes.Add(
          {{"listener", l ? "admin" : "main"}, {"reason", kTlsHandshakeFailures[i]}});
    }
  }
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
  drain_aware_exchanges_ =
      &prometheus::BuildCounter()
           .Name("llm_gateway_upstream_drain_aware_exchanges_total")
           .Help(
               "Upstream exchanges whose reads were drain-aware (after a short read the next "
               "read waits for readiness instead of trying recv first); stays 0 where the build "
               "or platform uses Asio's ordinary reads")
           .Register(r)
           .Add({});
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
  for (const auto& up : cfg.upstreams) {  // present (as 0) from the start
    const std::string& name = up.name;
    conns.Add({{"upstream", name}, {"state", "active"}});
    conns.Add({{"upstream", name}, {"state", "idle"}});
  }
  token_refresh_ = &prometheus::BuildCounter()
                        .Name("llm_gateway_token_refresh_total")
                        .Help("Entra ID token requests of an upstream, by outcome")
                        .Register(r);
  token_expiry_ = &prometheus::BuildGauge()
                       .Name("llm_gateway_token_expiry_seconds")
                       .Help("Seconds until the upstream's current Entra ID token expires")
                       .Register(r);
  auto& reloads = prometheus::BuildCounter()
                      .Name("llm_gateway_config_reloads_total")
                      .Help("Configuration reloads (SIGHUP or a changed file), by outcome")
                      .Register(r);
  config_reloads_[0] = &reloads.Add({{"outcome", "success"}});
  config_reloads_[1] = &reloads.Add({{"outcome", "error"}});
  config_reload_time_ =
      &prometheus::BuildGauge()
           .Name("llm_gateway_config_last_reload_success_timestamp_seconds")
           .Help("When the configuration was last loaded successfully (Unix time)")
           .Register(r)
           .Add({});
  config_hash_ = &prometheus::BuildGauge()
                      .Name("llm_gateway_config_hash")
                      .Help("1, labelled with a short hash of the configuration file in use")
                      .Register(r);
  upstream_attempts_ = &prometheus::BuildCounter()
                            .Name("llm_gateway_upstream_attempts_total")
                            .Help(
                                "Upstream attempts, by what each came to (several per request "
                                "when a route fails over)")
                            .Register(r);
  retries_ = &prometheus::BuildCounter()
                  .Name("llm_gateway_retries_total")
                  .Help("Upstream attempts beyond a request's first")
                  .Register(r);
  backend_state_ = &prometheus::BuildGauge()
                        .Name("llm_gateway_backend_state")
                        .Help(
                            "1 for the state each configured backend (upstream, deployment) of "
                            "a failover route is in: available, cooldown (after a 429) or "
                            "ejected (failing)")
                        .Register(r);
  upstream_remaining_ = &prometheus::BuildGauge()
                             .Name("llm_gateway_upstream_remaining")
                             .Help(
                                 "Azure's last x-ratelimit-remaining-requests/-tokens of a "
                                 "backend (NaN when older than 60 s)")
                             .Register(r);
  prometheus::BuildGauge()
      .Name("llm_gateway_build_info")
      .Help("Build information")
      .Register(r)
      .Add({{"version", version}})
      .Set(1);
}

void Metrics::drain_aware_exchanges(std::uint64_t total) {
  if (total <= drain_aware_exchanges_exported_) return;
  drain_aware_exchanges_->Increment(static_cast<double>(total - drain_aware_exchanges_exported_));
  drain_aware_exchanges_exported_ = total;
}

void Metrics::on_render(std::function<void()> hook) {
  std::lock_guard lock(render_mutex_);
  render_hook_ = std::move(hook);
}

std::string Metrics::render() const {
  {
    std::lock_guard lock(render_mutex_);
    if (render_hook_) render_hook_();
    for (const WorkerCache& cache : caches_) {
      std::lock_guard shards(cache.mutex);
      for (const auto& [key, shard] : cache.counters) shard->flush();
      for (const auto& [key, shard] : cache.histograms) shard->flush();
    }
  }
  std::ostringstream out;
  prometheus::TextSerializer{}.Serialize(out, registry_->Collect());
  return out.str();
}

std::size_t MetricLabels::model(const std::string* name, std::optional<std::size_t> route) const {
  if (name) {
    if (auto it = models.find(*name); it != models.end()) return it->second;
  }
  if (route && *route < routes.size()) return routes[*route];
  return model_none;
}

std::size_t Metrics::Table::intern(const std::string& name, std::size_t limit,
                                   std::size_t overflow) {
  if (auto it = ids.find(name); it != ids.end()) return it->second;
  if (names.size() >= limit) return overflow;  // a full table: the name gets a fixed label
  ids.emplace(name, names.size());
  names.push_back(name);
  return names.size() - 1;
}

MetricLabels Metrics::bind(const config::Config& cfg) {
  std::unique_lock lock(names_mutex_);
  return bind_locked(cfg, false);
}

MetricLabels Metrics::bind_locked(const config::Config& cfg, bool startup) {
  MetricLabels b;
  // Configured model names: the deployments maps' keys and literal route matches.
  for (const auto& up : cfg.upstreams) {
    for (const auto& [model, deployment] : up.deployments)
      b.models.emplace(model, models_.intern(model, kPackB - 1, 0));
  }
  for (const auto& r : cfg.routes) {
    if (glob_is_literal(r.match)) b.models.emplace(r.match, models_.intern(r.match, kPackB - 1, 0));
  }
  // Route patterns label requests whose model the configuration does not name. (A pattern
  // equal to a configured name is the same label, and so the same id.)
  for (const auto& r : cfg.routes) b.routes.push_back(models_.intern(r.match, kPackB - 1, 0));
  for (const auto& k : cfg.keys) b.keys.push_back(keys_.intern(k.name, kPackD - 2, 0));
  for (const auto& u : cfg.upstreams)
    b.upstreams.push_back(upstreams_.intern(u.name, kPackC - 1, 0));
  if (startup) {
    models_.intern("none", kPackB, 0);
    keys_.intern("anonymous", kPackD, 0);
    keys_.intern("unauthenticated", kPackD, 0);
    upstreams_.intern("none", kPackC, 0);
  }
  b.model_none = models_.ids.at("none");
  b.key_anonymous = keys_.ids.at("anonymous");
  b.key_unauthenticated = keys_.ids.at("unauthenticated");
  b.upstream_none = upstreams_.ids.at("none");
  return b;
}

std::string Metrics::name_of(const Table& table, std::size_t id) const {
  std::shared_lock lock(names_mutex_);
  return id < table.names.size() ? table.names[id] : std::string("none");
}

template <class Make>
CounterShard& Metrics::cached(WorkerCache& cache, std::uint64_t key, Make&& make) {
  if (auto it = cache.counters.find(key); it != cache.counters.end()) return *it->second;
  // Family::Add: locks and builds the label map, once per thread and series.
  auto made = std::make_unique<CounterShard>(make());
  std::lock_guard lock(cache.mutex);
  return *cache.counters.emplace(key, std::move(made)).first->second;
}

template <class Make>
HistogramShard& Metrics::cached(WorkerCache& cache, std::uint64_t key,
                                const Histogram::BucketBoundaries& bounds, Make&& make) {
  if (auto it = cache.histograms.find(key); it != cache.histograms.end()) return *it->second;
  auto made = std::make_unique<HistogramShard>(make(), bounds);
  std::lock_guard lock(cache.mutex);
  return *cache.histograms.emplace(key, std::move(made)).first->second;
}

CounterShard& Metrics::requests(unsigned worker, Endpoint e, std::size_t model,
                                std::size_t upstream, std::size_t key, unsigned code) {
  return cached(
      caches_[worker],
      pack(1, static_cast<std::uint64_t>(e), model, upstream, key, code), [&]() -> auto& {
        return requests_->Add({{"endpoint", std::string(endpoint_name(e))},
                               {"model", name_of(models_, model)},
                               {"upstream", name_of(upstreams_, upstream)},
                               {"key", name_of(keys_, key)},
                               {"code", std::to_string(code)}});
      });
}

HistogramShard& Metrics::duration(unsigned worker, Endpoint e, std::size_t model,
                                  std::size_t upstream) {
  return cached(
      caches_[worker], pack(2, static_cast<std::uint64_t>(e), model, upstream),
      kLatencyBuckets, [&]() -> auto& {
        return duration_->Add({{"endpoint", std::string(endpoint_name(e))},
                               {"model", name_of(models_, model)},
                               {"upstream", name_of(upstreams_, upstream)}},
                              kLatencyBuckets);
      });
}

HistogramShard& Metrics::first_byte(unsigned worker, Endpoint e, std::size_t model,
                                    std::size_t upstream) {
  return cached(
      caches_[worker], pack(3, static_cast<std::uint64_t>(e), model, upstream),
      kLatencyBuckets, [&]() -> auto& {
        return first_byte_->Add({{"endpoint", std::string(endpoint_name(e))},
                                 {"model", name_of(models_, model)},
                                 {"upstream", name_of(upstreams_, upstream)}},
                                kLatencyBuckets);
      });
}

HistogramShard& Metrics::overhead(unsigned worker, Endpoint e) {
  return cached(
      caches_[worker], pack(4, static_cast<std::uint64_t>(e)), kOverheadBuckets, [&]() -> auto& {
        return overhead_->Add({{"endpoint", std::string(endpoint_name(e))}}, kOverheadBuckets);
      });
}

CounterShard& Metrics::tokens(unsigned worker, std::size_t model, std::size_t key,
                              bool completion) {
  return cached(
      caches_[worker], pack(5, completion ? 1 : 0, model, 0, key), [&]() -> auto& {
        return tokens_->Add({{"model", name_of(models_, model)},
                             {"key", name_of(keys_, key)},
                             {"type", completion ? "completion" : "prompt"}});
      });
}

CounterShard& Metrics::rate_limited(unsigned worker, std::size_t key, std::size_t kind) {
  return cached(
      caches_[worker], pack(6, kind, 0, 0, key), [&]() -> auto& {
        return rate_limited_->Add({{"key", name_of(keys_, key)}, {"limit", kLimitKinds[kind]}});
      });
}

CounterShard& Metrics::upstream_responses(unsigned worker, std::size_t upstream, unsigned code) {
  return cached(
      caches_[worker], pack(7, 0, 0, upstream, 0, code), [&]() -> auto& {
        return upstream_responses_->Add(
            {{"upstream", name_of(upstreams_, upstream)}, {"code", std::to_string(code)}});
      });
}

CounterShard& Metrics::upstream_errors(unsigned worker, std::size_t upstream, std::size_t kind) {
  return cached(
      caches_[worker], pack(8, kind, 0, upstream), [&]() -> auto& {
        return upstream_errors_->Add(
            {{"upstream", name_of(upstreams_, upstream)}, {"kind", kErrorKinds[kind]}});
      });
}

CounterShard& Metrics::content_filter(unsigned worker, std::size_t stage, std::size_t category,
                                      std::size_t severity, bool filtered) {
  // Up to two stages times the categories a request counts: straight from a table, not a hash
  // lookup each (the table is the worker's own; the shards stay in the map render() reads).
  static_assert(static_cast<std::size_t>(accounting::Severity::high) + 1 == kSeverities);
  WorkerCache& cache = caches_[worker];
  const std::size_t slot =
      ((stage * accounting::kFilterCategories.size() + category) * kSeverities + severity) * 2 +
      (filtered ? 1 : 0);
  if (slot < cache.content_filter_slots.size() && cache.content_filter_slots[slot])
    return *cache.content_filter_slots[slot];
  CounterShard& shard = cached(
      cache, pack(9, stage, category, severity, filtered ? 1 : 0), [&]() -> auto& {
        return content_filter_->Add(
            {{"stage",
              std::string(accounting::stage_name(static_cast<accounting::FilterStage>(stage)))},
             {"category", std::string(accounting::kFilterCategories[category])},
             {"severity",
              std::string(accounting::severity_name(static_cast<accounting::Severity>(severity)))},
             {"filtered", filtered ? "true" : "false"}});
      });
  if (slot < cache.content_filter_slots.size()) cache.content_filter_slots[slot] = &shard;
  return shard;
}

CounterShard& Metrics::content_filtered_requests(unsigned worker, std::size_t stage,
                                                 std::size_t key) {
  return cached(
      caches_[worker], pack(10, stage, 0, 0, key), [&]() -> auto& {
        return content_filtered_requests_->Add(
            {{"stage",
              std::string(accounting::stage_name(static_cast<accounting::FilterStage>(stage)))},
             {"key", name_of(keys_, key)}});
      });
}

prometheus::Counter& Metrics::store_errors(std::size_t store) {
  return *store_errors_[store];
}

prometheus::Counter& Metrics::token_refresh(const std::string& upstream, bool ok) {
  return token_refresh_->Add({{"upstream", upstream}, {"outcome", ok ? "success" : "error"}});
}

prometheus::Gauge& Metrics::token_expiry(const std::string& upstream) {
  return token_expiry_->Add({{"upstream", upstream}});
}

void Metrics::config_loaded(const std::string& hash, double unix_seconds) {
  config_reload_time_->Set(unix_seconds);
  std::lock_guard lock(config_hash_mutex_);
  if (config_hash_series_) config_hash_->Remove(config_hash_series_);
  config_hash_series_ = &config_hash_->Add({{"hash", hash}});
  config_hash_series_->Set(1);
}

void Metrics::config_reloaded(const std::string& hash, double unix_seconds) {
  config_reloads_[0]->Increment();
  config_loaded(hash, unix_seconds);
}

CounterShard& Metrics::upstream_attempts(unsigned worker, std::size_t upstream,
                                         std::size_t outcome) {
  return cached(
      caches_[worker], pack(11, outcome, 0, upstream), [&]() -> auto& {
        return upstream_attempts_->Add(
            {{"upstream", name_of(upstreams_, upstream)}, {"outcome", kAttemptOutcomes[outcome]}});
      });
}

CounterShard& Metrics::retries(unsigned worker, Endpoint e) {
  return cached(
      caches_[worker], pack(12, static_cast<std::uint64_t>(e)), [&]() -> auto& {
        return retries_->Add({{"endpoint", std::string(endpoint_name(e))}});
      });
}

prometheus::Gauge& Metrics::backend_state(const std::string& upstream,
                                          const std::string& deployment, std::string_view state) {
  return backend_state_->Add(
      {{"upstream", upstream}, {"deployment", deployment}, {"state", std::string(state)}});
}

prometheus::Gauge& Metrics::upstream_remaining(const std::string& upstream,
                                               const std::string& deployment, bool tokens) {
  return upstream_remaining_->Add({{"upstream", upstream},
                                   {"deployment", deployment},
                                   {"kind", tokens ? "tokens" : "requests"}});
}

prometheus::Gauge& Metrics::upstream_connections(const std::string& name, bool active) {
  return upstream_connections_->Add({{"upstream", name}, {"state", active ? "active" : "idle"}});
}

}  // namespace llmgw::observability
