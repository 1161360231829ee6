#include <chrono>

#include "llm_gateway/ratelimit/store.hpp"

namespace llmgw::ratelimit {

NowMs system_now_ms() {
  return [] {
    return std::chrono::duration_cast<std::chrono::milliseconds>(
               std::chrono::system_clock::now().time_since_epoch())
        .count();
  };
}

MemoryStore::MemoryStore(NowMs now) : now_(std::move(now)) {}

MemoryStore::KeyCounters& MemoryStore::counters(const std::string& key_name) {
  {
    std::shared_lock lock(keys_mutex_);
    if (auto it = keys_.find(key_name); it != keys_.end()) return *it->second;
  }
  std::unique_lock lock(keys_mutex_);
  auto& slot = keys_[key_name];
  if (!slot) slot = std::make_unique<KeyCounters>();
  return *slot;  // never erased: the reference stays valid
}

Admission MemoryStore::admit_now(const std::string& key_name, const KeyLimits& limits,
                                 std::int64_t token_cost) {
  KeyCounters& k = counters(key_name);
  const std::int64_t now = now_();
  std::lock_guard lock(k.mutex);
  return ratelimit::admit(k.requests, k.tokens, limits, token_cost, now);
}

boost::asio::awaitable<std::optional<Admission>> MemoryStore::admit(const std::string& key_name,
                                                                    const KeyLimits& limits,
                                                                    std::int64_t token_cost) {
  co_return admit_now(key_name, limits, token_cost);
}

void MemoryStore::correct_tokens(const std::string& key_name, std::int64_t bucket_sec,
                                 std::int64_t delta) {
  KeyCounters& k = counters(key_name);
  std::lock_guard lock(k.mutex);
  // A reservation whose bucket has left the window no longer counts; nothing to correct then.
  if (bucket_sec > now_() / 1000 - kWindowBuckets) k.tokens.add(bucket_sec, delta);
}

std::atomic<std::uint32_t>& ConcurrencyCounters::counter(const std::string& key_name) {
  std::lock_guard lock(mutex_);
  auto& slot = counters_[key_name];
  if (!slot) slot = std::make_unique<std::atomic<std::uint32_t>>(0);
  return *slot;  // never erased: the reference stays valid
}

}  // namespace llmgw::ratelimit
