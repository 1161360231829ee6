#pragma once
// Where rate-limit counters live: in this process (memory) or shared by every replica (redis).
#include <boost/asio/awaitable.hpp>
#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <vector>

#include "llm_gateway/ratelimit/limiter.hpp"

namespace llmgw::ratelimit {

class CounterStore {
 public:
  virtual ~CounterStore() = default;
  virtual std::string_view name() const = 0;  // "memory" | "redis", for logs and metrics

  // Admits one request of `key` costing `token_cost` tokens against both limits at once.
  // nullopt: the store could not answer (the caller applies on_store_error).
  virtual boost::asio::awaitable<std::optional<Admission>> admit(std::size_t key,
                                                                 const std::string& key_name,
                                                                 const KeyLimits& limits,
                                                                 std::int64_t token_cost) = 0;

  // Replaces a token reservation by the real usage: adds `delta` to the bucket it was made in.
  // Runs off the request path; failures are only counted.
  virtual void correct_tokens(std::size_t key, const std::string& key_name, std::int64_t bucket_sec,
                              std::int64_t delta) = 0;
};

using NowMs = std::function<std::int64_t()>;
NowMs system_now_ms();

// Per-process counters: one small mutex per key, held for a few hundred nanoseconds, never
// across I/O, so keys never contend with each other.
class MemoryStore final : public CounterStore {
 public:
  MemoryStore(std::size_t key_count, NowMs now);
  std::string_view name() const override { return "memory"; }
  boost::asio::awaitable<std::optional<Admission>> admit(std::size_t key,
                                                         const std::string& key_name,
                                                         const KeyLimits& limits,
                                                         std::int64_t token_cost) override;
  void correct_tokens(std::size_t key, const std::string& key_name, std::int64_t bucket_sec,
                      std::int64_t delta) override;

  // The synchronous core, for unit tests and benchmarks.
  Admission admit_now(std::size_t key, const KeyLimits& limits, std::int64_t token_cost);

 private:
  struct KeyCounters {
    std::mutex mutex;
    SlidingWindow requests;
    SlidingWindow tokens;
  };
  std::vector<std::unique_ptr<KeyCounters>> keys_;
  NowMs now_;
};

}  // namespace llmgw::ratelimit
