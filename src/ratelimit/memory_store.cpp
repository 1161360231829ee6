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

MemoryStore::MemoryStore(std::size_t key_count, NowMs now) : now_(std::move(now)) {
  keys_.reserve(key_count);
  for (std::size_t i = 0; i < key_count; ++i) keys_.push_back(std::make_unique<KeyCounters>());
}

Admission MemoryStore::admit_now(std::size_t key, const KeyLimits& limits,
                                 std::int64_t token_cost) {
  KeyCounters& k = *keys_[key];
  const std::int64_t now = now_();
  std::lock_guard lock(k.mutex);
  return ratelimit::admit(k.requests, k.tokens, limits, token_cost, now);
}

boost::asio::awaitable<std::optional<Admission>> MemoryStore::admit(std::size_t key,
                                                                    const std::string&,
                                                                    const KeyLimits& limits,
                                                                    std::int64_t token_cost) {
  co_return admit_now(key, limits, token_cost);
}

void MemoryStore::correct_tokens(std::size_t key, const std::string&, std::int64_t bucket_sec,
                                 std::int64_t delta) {
  KeyCounters& k = *keys_[key];
  std::lock_guard lock(k.mutex);
  // A reservation whose bucket has left the window no longer counts; nothing to correct then.
  if (bucket_sec > now_() / 1000 - kWindowBuckets) k.tokens.add(bucket_sec, delta);
}

}  // namespace llmgw::ratelimit
