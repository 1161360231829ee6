#pragma once
// What the gateway has learned about each backend — one (upstream, deployment) pair, because
// Azure's quotas and 429s are per deployment — and about each upstream host: cooldowns from 429s,
// the quota Azure reports, and passive outlier detection. One registry per process, shared by
// every worker thread and every configuration snapshot, keyed by names (never by position in a
// configuration), so a reload keeps what was learned.
#include <chrono>
#include <cstdint>
#include <functional>
#include <map>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

namespace llmgw {

using BackendClock = std::chrono::steady_clock;

// The registry's key of a backend.
std::string backend_key(std::string_view upstream, std::string_view deployment);

// How long a 429 asks the client to wait, from Azure's headers in this order: retry-after-ms,
// x-ms-retry-after-ms, retry-after (seconds, or an HTTP date relative to `wall_now`). nullopt when
// none is present and valid. Capped at one hour.
std::optional<std::chrono::milliseconds> retry_after_from(
    std::string_view retry_after_ms, std::string_view x_ms_retry_after_ms,
    std::string_view retry_after, std::chrono::system_clock::time_point wall_now);

// Passive outlier detection for one backend or one upstream host.
struct Health {
  unsigned consecutive_failures = 0;
  unsigned ejections = 0;  // in a row; the backoff doubles with each
  BackendClock::time_point ejected_until{};
  bool probe_in_flight = false;  // after an ejection: one request decides

  bool ejected(BackendClock::time_point now) const { return now < ejected_until; }
  // Out of an ejection, but its probe has not answered yet.
  bool probing() const { return ejections > 0; }
};

enum class BackendState { available, cooldown, ejected };
std::string_view to_string(BackendState s);

class BackendRegistry {
 public:
  static constexpr auto kReportTtl = std::chrono::seconds(60);
  static constexpr auto kMinEjection = std::chrono::seconds(30);
  static constexpr auto kMaxEjection = std::chrono::minutes(5);
  // A bound on remembered backends (deployments come from client-chosen model names when the
  // upstream has no mapping for them): past it, the stalest entries are forgotten.
  static constexpr std::size_t kMaxBackends = 4096;

  struct Snapshot {  // one backend as selection sees it
    BackendClock::time_point cooldown_until{};
    bool ejected = false;                // this backend, or its whole upstream host
    BackendClock::time_point back_at{};  // when ejected: when the ejection ends
    bool probe_taken = false;            // out of ejection, and another request is its probe
    bool probe_needed = false;           // out of ejection: the request that gets it is the probe
    std::optional<std::int64_t> remaining_tokens;  // from a report younger than kReportTtl
    std::optional<std::int64_t> remaining_requests;
  };

  Snapshot view(const std::string& key, std::string_view upstream,
                BackendClock::time_point now) const;
  // Claims the probe of an ejected-then-expired backend (and/or host); false if taken.
  bool claim_probe(const std::string& key, std::string_view upstream);
  // Releases a claimed probe that never got an outcome (the client went away).
  void release_probe(const std::string& key, std::string_view upstream);

  // Outcomes. `connection_level`: connect/tls failures, which count against the whole host.
  void cooldown(const std::string& key, BackendClock::time_point until);
  void success(const std::string& key, std::string_view upstream);
  void failure(const std::string& key, std::string_view upstream, bool connection_level,
               unsigned eject_after, BackendClock::time_point now);
  void report(const std::string& key, std::optional<std::int64_t> remaining_requests,
              std::optional<std::int64_t> remaining_tokens, BackendClock::time_point now);

  // Cooldowns learned from other replicas (remaining time as they wrote it).
  void apply_shared_cooldowns(const std::vector<std::pair<std::string, std::chrono::milliseconds>>&,
                              BackendClock::time_point now);
  // Called with (key, remaining time) whenever a 429 starts a cooldown here, so that it can be
  // shared with other replicas (the Redis store); may be empty.
  void on_cooldown(std::function<void(const std::string&, std::chrono::milliseconds)> fn);

  BackendState state(const std::string& key, std::string_view upstream,
                     BackendClock::time_point now) const;
  // Whether Azure ever reported this backend's remaining quota (for the gauges).
  bool reported(const std::string& key) const;

  // Smooth weighted round-robin (nginx's): among `weights`, the index to use; `route` and the
  // keys name the state, which persists across requests.
  std::size_t pick_weighted(const std::string& route, const std::vector<std::string>& keys,
                            const std::vector<unsigned>& weights);

 private:
  struct Entry {
    Health health;
    BackendClock::time_point cooldown_until{};
    BackendClock::time_point reported_at{};
    std::optional<std::int64_t> remaining_tokens;
    std::optional<std::int64_t> remaining_requests;
    BackendClock::time_point touched{};
  };
  Entry& entry(const std::string& key, BackendClock::time_point now);
  static void eject(Health& h, BackendClock::time_point now);

  mutable std::mutex mutex_;
  std::unordered_map<std::string, Entry> backends_;
  std::unordered_map<std::string, Health> hosts_;    // by upstream name
  std::unordered_map<std::string, long long> swrr_;  // route + '\n' + key -> current weight
  std::function<void(const std::string&, std::chrono::milliseconds)> on_cooldown_;
};

}  // namespace llmgw
