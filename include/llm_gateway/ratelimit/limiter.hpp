#pragma once
// Per-key request and token limits over a sliding 60-second window.
//
// Algorithm: each limit keeps 61 one-second buckets (the current second and the 60 before it).
// A request or token reservation is recorded in the bucket of the second it was admitted in and
// counts until that bucket leaves the window, i.e. for at least 60 s and less than 61 s. So over
// ANY 60-second interval a key is admitted at most `limit` (a burst may take the whole minute's
// allowance at once, never more), at the cost of waiting up to one extra second. The same
// arithmetic runs in the memory store and, as a Lua script, in Redis.
#include <array>
#include <cstdint>
#include <optional>
#include <string>

namespace llmgw::ratelimit {

inline constexpr std::int64_t kWindowBuckets = 61;

// The longest wait a 429 asks for. The official SDKs honour retry-after only when it is above 0
// and at most 60 s; a longer one makes them retry after their own short backoff and burn their
// retries. The window is 61 buckets, so a wait can reach 61 s: it is said as 60.
inline constexpr std::int64_t kMaxRetryAfterMs = 60'000;

// Token amounts that come from clients or upstreams are clamped to [0, kMaxTokenAmount] before
// any arithmetic, and sums saturate: no number a client or an upstream sends can overflow
// (undefined behaviour) or wrap a window's sum around. 2^40 is far above any real request and
// leaves room for sums of millions of them; below 2^53, so the Redis script's doubles are exact
// too.
inline constexpr std::int64_t kMaxTokenAmount = std::int64_t{1} << 40;

constexpr std::int64_t clamp_tokens(long long v) {
  return v < 0 ? 0 : v > kMaxTokenAmount ? kMaxTokenAmount : static_cast<std::int64_t>(v);
}
constexpr std::int64_t clamp_tokens(unsigned long long v) {
  return v > static_cast<unsigned long long>(kMaxTokenAmount) ? kMaxTokenAmount
                                                              : static_cast<std::int64_t>(v);
}
constexpr std::int64_t clamp_tokens(unsigned long v) {
  return clamp_tokens(static_cast<unsigned long long>(v));
}
constexpr std::int64_t clamp_tokens(long v) {
  return clamp_tokens(static_cast<long long>(v));
}
// a + b for token amounts (each clamped first), at most kMaxTokenAmount.
constexpr std::int64_t saturating_add(long long a, long long b) {
  const std::int64_t sum = clamp_tokens(a) + clamp_tokens(b);  // < 2^41: cannot overflow
  return sum > kMaxTokenAmount ? kMaxTokenAmount : sum;
}

struct LimitState {
  std::int64_t limit = 0;
  std::int64_t remaining = 0;
  std::int64_t reset_ms = 0;
};

// A sliding window of one-second buckets. Not thread-safe: the memory store guards each key.
class SlidingWindow {
 public:
  std::int64_t sum(std::int64_t now_sec) const;
  void add(std::int64_t sec, std::int64_t value);
  // Milliseconds until the window's sum has dropped to `limit - cost` or below.
  std::int64_t wait_ms(std::int64_t now_ms, std::int64_t limit, std::int64_t cost) const;
  // Milliseconds until the window is empty again (OpenAI's "reset" headers).
  std::int64_t reset_ms(std::int64_t now_ms) const;
  // The limit, what remains of it (sum) and reset_ms, in one pass over the buckets.
  LimitState state(std::int64_t now_ms, std::int64_t limit) const;

 private:
  struct Bucket {
    std::int64_t sec = -1;
    std::int64_t value = 0;
  };
  std::array<Bucket, kWindowBuckets> buckets_{};
};

enum class LimitKind { requests, tokens, concurrency };

// The answer of a store to one admission.
struct Admission {
  bool allowed = true;
  LimitKind rejected_by = LimitKind::requests;
  std::int64_t retry_after_ms = 0;
  bool too_large = false;  // the token estimate alone exceeds the tpm: retrying cannot help
  std::optional<LimitState> requests;
  std::optional<LimitState> tokens;
  std::int64_t bucket_sec = 0;  // where the tokens were recorded, for the later correction
};

// What a key may do, as the stores see it.
struct KeyLimits {
  std::optional<std::int64_t> rpm;
  std::optional<std::int64_t> tpm;
};

// Decides one admission against two windows; records it in both only when both allow it (a
// request rejected by one limit consumes nothing of the other).
Admission admit(SlidingWindow& requests, SlidingWindow& tokens, const KeyLimits& limits,
                std::int64_t token_cost, std::int64_t now_ms);

// OpenAI's duration format for x-ratelimit-reset-*: "12ms", "1s", "1.5s", "6m0s".
std::string format_reset(std::int64_t ms);
// The same, written into `buf` (what the response path uses: no string, no snprintf).
std::string_view format_reset(std::int64_t ms, char (&buf)[32]);

}  // namespace llmgw::ratelimit
