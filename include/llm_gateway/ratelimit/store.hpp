#pragma once
// Where rate-limit counters live: in this process (memory) or shared by every replica (redis).
#include <atomic>
#include <boost/asio/awaitable.hpp>
#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <shared_mutex>
#include <string>
#include <unordered_map>
#include <vector>

#include "llm_gateway/ratelimit/limiter.hpp"

namespace llmgw::ratelimit {

class CounterStore {
 public:
  virtual ~CounterStore() = default;
  virtual std::string_view name() const = 0;  // "memory" | "redis", for logs and metrics

  // Admits one request of the key named `key_name` costing `token_cost` tokens against both
  // limits at once. Counters are keyed by the key's name, never its position in a configuration,
  // so they carry over from one configuration snapshot to the next.
  // nullopt: the store could not answer (the caller applies on_store_error).
  virtual boost::asio::awaitable<std::optional<Admission>> admit(const std::string& key_name,
                                                                 const KeyLimits& limits,
                                                                 std::int64_t token_cost) = 0;

  // Replaces a token reservation by the real usage: adds `delta` to the bucket it was made in.
  // Runs off the request path; failures are only counted. (The Redis store collects them and
  // sends them in batches.)
  virtual void correct_tokens(const std::string& key_name, std::int64_t bucket_sec,
                              std::int64_t delta) = 0;

  // A store that answers at once (in memory) says so, and is then asked through admit_sync()
  // without a coroutine; only synchronous() stores are ever asked that way.
  virtual bool synchronous() const { return false; }

  // Stops a thread of the store's own (Redis), joining it: called when the I/O threads have
  // stopped and before their contexts are destroyed. Its last admissions held work on the I/O
  // threads' contexts until they ended there; the join orders those ends before the contexts'
  // destruction. The store answers nothing after it.
  virtual void stop() {}
  virtual std::optional<Admission> admit_sync(const std::string& /*key_name*/,
                                              const KeyLimits& /*limits*/,
                                              std::int64_t /*token_cost*/) {
    return std::nullopt;
  }

  // A shared store that holds part of a key's quota locally (a Redis lease) answers from it at
  // once when it can, without a coroutine or a round trip; nullopt: ask admit().
  virtual std::optional<Admission> try_admit_now(const std::string& /*key_name*/,
                                                 const KeyLimits& /*limits*/,
                                                 std::int64_t /*token_cost*/) {
    return std::nullopt;
  }
};

using NowMs = std::function<std::int64_t()>;
NowMs system_now_ms();

// Per-process counters by key name: one small mutex per key, held for a few hundred
// nanoseconds, never across I/O, so keys never contend with each other. The name lookup takes a
// shared lock (an exclusive one only the first time a name is seen). Made once per process, so a
// new configuration snapshot keeps every window of the keys it still has.
class MemoryStore final : public CounterStore {
 public:
  explicit MemoryStore(NowMs now);
  std::string_view name() const override { return "memory"; }
  boost::asio::awaitable<std::optional<Admission>> admit(const std::string& key_name,
                                                         const KeyLimits& limits,
                                                         std::int64_t token_cost) override;
  void correct_tokens(const std::string& key_name, std::int64_t bucket_sec,
                      std::int64_t delta) override;
  bool synchronous() const override { return true; }
  std::optional<Admission> admit_sync(const std::string& key_name, const KeyLimits& limits,
                                      std::int64_t token_cost) override {
    return admit_now(key_name, limits, token_cost);
  }

  // The synchronous core, for unit tests and benchmarks.
  Admission admit_now(const std::string& key_name, const KeyLimits& limits,
                      std::int64_t token_cost);

 private:
  struct KeyCounters {
    std::mutex mutex;
    SlidingWindow requests;
    SlidingWindow tokens;
  };
  KeyCounters& counters(const std::string& key_name);
  std::shared_mutex keys_mutex_;
  std::unordered_map<std::string, std::unique_ptr<KeyCounters>> keys_;
  NowMs now_;
};

// Requests in flight per key name (max_concurrent), shared by every snapshot like the store.
// A snapshot resolves its keys' counters once (counter()), so the hot path is an atomic.
class ConcurrencyCounters {
 public:
  std::atomic<std::uint32_t>& counter(const std::string& key_name);

 private:
  std::mutex mutex_;
  std::unordered_map<std::string, std::unique_ptr<std::atomic<std::uint32_t>>> counters_;
};

}  // namespace llmgw::ratelimit
