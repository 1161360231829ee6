#pragma once
// Prometheus metrics (prometheus-cpp core; served by the gateway's own admin handler). Label
// values are bounded by the configuration whatever clients send. Handles are resolved once per
// (labels, I/O thread) and cached by integer key, so the hot path never builds label maps; the
// per-request series are counted in per-thread shards that render() adds to the series.
#include <prometheus/counter.h>
#include <prometheus/family.h>
#include <prometheus/gauge.h>
#include <prometheus/histogram.h>
#include <prometheus/registry.h>

#include <array>
#include <atomic>
#include <cstdint>
#include <deque>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <shared_mutex>
#include <string>
#include <unordered_map>
#include <vector>

#include "llm_gateway/accounting/content_filter.hpp"
#include "llm_gateway/config/config.hpp"
#include "llm_gateway/translate/endpoint.hpp"

namespace llmgw::observability {

// One configuration's label ids: what a snapshot's positions (upstream, key, route index) and
// configured model names map to. Ids are the Metrics' interned names, stable for the process, so
// snapshots with reordered, added or removed upstreams, keys and routes share the series of the
// names they share (see Metrics::bind).
struct MetricLabels {
  std::unordered_map<std::string, std::size_t> models;  // configured model names
  std::vector<std::size_t> routes;                      // by route index: its pattern's label
  std::vector<std::size_t> upstreams;                   // by upstream index
  std::vector<std::size_t> keys;                        // by key index
  std::size_t model_none = 0;
  std::size_t key_anonymous = 0;
  std::size_t key_unauthenticated = 0;
  std::size_t upstream_none = 0;
  // The model label of a request: the configured name it sent, else its route's pattern, else
  // "none" — never a name a client invented.
  std::size_t model(const std::string* name, std::optional<std::size_t> route) const;
};

// A worker's (I/O thread's) share of a counter series. Only its thread adds to it, with a relaxed
// load and store: no locked instruction and no cache line another thread writes. render() adds
// to the series what each share gained since the last render. (prometheus-cpp's Counter is a
// compare-and-swap loop on one value all workers share.)
class CounterShard {
 public:
  explicit CounterShard(prometheus::Counter& series) : series_(series) {}
  void Increment(double by = 1.0) {
    total_.store(total_.load(std::memory_order_relaxed) + by, std::memory_order_relaxed);
  }

 private:
  friend class Metrics;
  void flush();  // under the render lock
  prometheus::Counter& series_;
  std::atomic<double> total_{0};
  double exported_ = 0;
};

// A worker's share of a histogram series: its bucket counts and sum, handed to the series by
// render() (prometheus-cpp's Histogram::Observe takes a mutex of a series all workers share).
class HistogramShard {
 public:
  HistogramShard(prometheus::Histogram& series,
                 const prometheus::Histogram::BucketBoundaries& bounds);
  void Observe(double value);

 private:
  friend class Metrics;
  void flush();  // under the render lock
  prometheus::Histogram& series_;
  const prometheus::Histogram::BucketBoundaries& bounds_;
  // One count per bound, then the +Inf bucket's; not cumulative.
  std::unique_ptr<std::atomic<std::uint64_t>[]> counts_;
  std::atomic<double> sum_{0};
  std::vector<std::uint64_t> exported_counts_;
  double exported_sum_ = 0;
};

class Metrics {
 public:
  Metrics(const config::Config& cfg, unsigned workers, const std::string& version);

  std::string render() const;  // Prometheus text exposition format
  // Called at the start of every render(): gauges whose values live elsewhere (backend state)
  // are set then, rather than on every change.
  void on_render(std::function<void()> hook);

  // A configuration's label ids (interning the names it brings; thread-safe). Each snapshot's
  // metrics stage binds its configuration once.
  MetricLabels bind(const config::Config& cfg);

  // The startup configuration's label ids (see README "Metrics"): models named in the config,
  // then route patterns, then "none"; keys by name, then "anonymous" and "unauthenticated";
  // upstreams by name, then "none".
  const MetricLabels& startup_labels() const { return startup_; }
  std::size_t model_label(const std::string* model, std::optional<std::size_t> route) const {
    return startup_.model(model, route);
  }
  std::size_t key_anonymous() const { return startup_.key_anonymous; }
  std::size_t key_unauthenticated() const { return startup_.key_unauthenticated; }
  std::size_t upstream_none() const { return startup_.upstream_none; }

  // Per I/O thread (worker) cached handles: the worker's shard of the series, used only on its
  // thread.
  CounterShard& requests(unsigned worker, Endpoint e, std::size_t model, std::size_t upstream,
                         std::size_t key, unsigned code);
  HistogramShard& duration(unsigned worker, Endpoint e, std::size_t model, std::size_t upstream);
  HistogramShard& first_byte(unsigned worker, Endpoint e, std::size_t model, std::size_t upstream);
  HistogramShard& overhead(unsigned worker, Endpoint e);
  CounterShard& tokens(unsigned worker, std::size_t model, std::size_t key, bool completion);
  CounterShard& rate_limited(unsigned worker, std::size_t key, std::size_t limit_kind);
  CounterShard& upstream_responses(unsigned worker, std::size_t upstream, unsigned code);
  CounterShard& upstream_errors(unsigned worker, std::size_t upstream, std::size_t kind);
  CounterShard& content_filter(unsigned worker, std::size_t stage, std::size_t category,
                               std::size_t severity, bool filtered);
  CounterShard& content_filtered_requests(unsigned worker, std::size_t stage, std::size_t key);
  prometheus::Counter& store_errors(std::size_t store);  // 0 memory, 1 redis
  // llm_gateway_upstream_attempts_total{upstream,outcome} (outcome: kAttemptOutcomes index) and
  // llm_gateway_retries_total{endpoint}.
  CounterShard& upstream_attempts(unsigned worker, std::size_t upstream, std::size_t outcome);
  CounterShard& retries(unsigned worker, Endpoint e);
  // llm_gateway_backend_state{upstream,deployment,state} and
  // llm_gateway_upstream_remaining{upstream,deployment,kind} (made on first use; thread-safe).
  prometheus::Gauge& backend_state(const std::string& upstream, const std::string& deployment,
                                   std::string_view state);
  prometheus::Gauge& upstream_remaining(const std::string& upstream, const std::string& deployment,
                                        bool tokens);
  // llm_gateway_token_refresh_total{upstream,outcome} and llm_gateway_token_expiry_seconds.
  prometheus::Counter& token_refresh(const std::string& upstream, bool ok);
  prometheus::Gauge& token_expiry(const std::string& upstream);

  prometheus::Gauge& in_flight() { return *in_flight_; }
  prometheus::Counter& connections_refused(bool accept_error) {
    return *connections_refused_[accept_error ? 1 : 0];
  }
  prometheus::Counter& access_log_dropped() { return *access_log_dropped_; }
  // llm_gateway_tls_handshake_errors_total{listener,reason}; reason: kTlsHandshakeFailures index.
  prometheus::Counter& tls_handshake_errors(bool admin, std::size_t reason) {
    return *tls_handshake_errors_[admin ? 1 : 0][reason];
  }
  prometheus::Counter& cut_requests() { return *cut_requests_; }
  // llm_gateway_upstream_drain_aware_exchanges_total, from the workers' running total (called at
  // render time, under the render lock).
  void drain_aware_exchanges(std::uint64_t total);
  // Configuration reloads: counted by outcome; on success the time and the new content's hash
  // (llm_gateway_config_hash{hash} = 1 for the configuration in use, its only series).
  void config_reload_failed() { config_reloads_[1]->Increment(); }
  void config_reloaded(const std::string& hash, double unix_seconds);
  void config_loaded(const std::string& hash, double unix_seconds);  // at start, and by reloads
  prometheus::Gauge& active_streams() { return *active_streams_; }
  // The llm_gateway_upstream_connections gauges of the upstream named `name` (made on first use;
  // prometheus-cpp's Family::Add is thread-safe and returns the existing series).
  prometheus::Gauge& upstream_connections(const std::string& name, bool active);

  static constexpr std::array<const char*, 3> kLimitKinds{"requests", "tokens", "concurrency"};
  static constexpr std::array<const char*, 6> kErrorKinds{"connect", "tls",      "timeout",
                                                          "reset",   "protocol", "proxy"};
  // Why a TLS handshake on a listener failed: it did not finish within 10 s, the client went away,
  // it spoke plain HTTP, its certificate was missing or not trusted, no common TLS version, or
  // anything else the client got wrong.
  static constexpr std::array<const char*, 6> kTlsHandshakeFailures{
      "timeout", "closed", "plain_http", "client_certificate", "version", "protocol"};
  static constexpr std::array<const char*, 10> kAttemptOutcomes{
      "success", "status_429", "status_4xx", "status_5xx", "connect",
      "tls",     "timeout",    "reset",      "protocol",   "proxy"};

 private:
  template <class T>
  using Cache = std::unordered_map<std::uint64_t, std::unique_ptr<T>>;
  // Read by its worker without a lock; a new shard is added under `mutex`, which render() holds
  // while it reads the shards.
  static constexpr std::size_t kSeverities = 5;  // accounting::Severity's values
  struct WorkerCache {
    Cache<CounterShard> counters;
    Cache<HistogramShard> histograms;
    mutable std::mutex mutex;
    // content_filter()'s shards by (stage, category, severity, filtered); the worker's only.
    std::array<CounterShard*, 2 * accounting::kFilterCategories.size() * kSeverities * 2>
        content_filter_slots{};
  };
  template <class Make>
  CounterShard& cached(WorkerCache& cache, std::uint64_t key, Make&& make);
  template <class Make>
  HistogramShard& cached(WorkerCache& cache, std::uint64_t key,
                         const prometheus::Histogram::BucketBoundaries& bounds, Make&& make);

  // Interned label values: an id, once given, names the same value for the process.
  struct Table {
    std::deque<std::string> names;  // by id (a deque: growing never moves a name)
    std::unordered_map<std::string, std::size_t> ids;
    // The id of `name`, made if new; `overflow` once the table holds `limit` names.
    std::size_t intern(const std::string& name, std::size_t limit, std::size_t overflow);
  };
  MetricLabels bind_locked(const config::Config& cfg, bool startup);
  std::string name_of(const Table& table, std::size_t id) const;  // under a shared lock

  std::shared_ptr<prometheus::Registry> registry_;
  mutable std::shared_mutex names_mutex_;  // bind() adds names while I/O threads read them
  Table models_;
  Table keys_;
  Table upstreams_;
  MetricLabels startup_;
  std::vector<WorkerCache> caches_;

  prometheus::Family<prometheus::Counter>* requests_;
  prometheus::Family<prometheus::Histogram>* duration_;
  prometheus::Family<prometheus::Histogram>* first_byte_;
  prometheus::Family<prometheus::Histogram>* overhead_;
  prometheus::Family<prometheus::Counter>* tokens_;
  prometheus::Family<prometheus::Counter>* rate_limited_;
  prometheus::Family<prometheus::Counter>* upstream_responses_;
  prometheus::Family<prometheus::Counter>* upstream_errors_;
  prometheus::Family<prometheus::Counter>* content_filter_;
  prometheus::Family<prometheus::Counter>* content_filtered_requests_;
  std::array<prometheus::Counter*, 2> store_errors_{};
  prometheus::Gauge* in_flight_;
  std::array<prometheus::Counter*, 2> connections_refused_{};
  std::array<std::array<prometheus::Counter*, kTlsHandshakeFailures.size()>, 2>
      tls_handshake_errors_{};
  prometheus::Counter* access_log_dropped_ = nullptr;
  prometheus::Counter* cut_requests_ = nullptr;
  prometheus::Counter* drain_aware_exchanges_ = nullptr;
  std::uint64_t drain_aware_exchanges_exported_ = 0;
  std::array<prometheus::Counter*, 2> config_reloads_{};  // success, error
  prometheus::Gauge* config_reload_time_ = nullptr;
  prometheus::Family<prometheus::Gauge>* config_hash_ = nullptr;
  prometheus::Gauge* config_hash_series_ = nullptr;
  std::mutex config_hash_mutex_;
  prometheus::Gauge* active_streams_;
  prometheus::Family<prometheus::Gauge>* upstream_connections_ = nullptr;
  prometheus::Family<prometheus::Counter>* upstream_attempts_ = nullptr;
  prometheus::Family<prometheus::Counter>* retries_ = nullptr;
  prometheus::Family<prometheus::Gauge>* backend_state_ = nullptr;
  prometheus::Family<prometheus::Gauge>* upstream_remaining_ = nullptr;
  prometheus::Family<prometheus::Counter>* token_refresh_ = nullptr;
  prometheus::Family<prometheus::Gauge>* token_expiry_ = nullptr;
  mutable std::mutex render_mutex_;
  std::function<void()> render_hook_;
};

}  // namespace llmgw::observability
