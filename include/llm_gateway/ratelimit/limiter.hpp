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

// A sliding window of one-second buckets. Not thread-safe: the memory store guards each key.
class SlidingWindow {
 public:
  std::int64_t sum(std::int64_t now_sec) const;
  void add(std::int64_t sec, std::int64_t value);
  // Milliseconds until the window's sum has dropped to `limit - cost` or below.
  std::int64_t wait_ms(std::int64_t now_ms, std::int64_t limit, std::int64_t cost) const;
  // Milliseconds until the window is empty again (OpenAI's "reset" headers).
  std::int64_t reset_ms(std::int64_t now_ms) const;

 private:
  struct Bucket {
    std::int64_t sec = -1;
    std::int64_t value = 0;
  };
  std::array<Bucket, kWindowBuckets> buckets_{};
};

enum class LimitKind { requests, tokens, concurrency };

struct LimitState {
  std::int64_t limit = 0;
  std::int64_t remaining = 0;
  std::int64_t reset_ms = 0;
};

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

}  // namespace llmgw::ratelimit
