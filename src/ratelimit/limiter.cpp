#include "llm_gateway/ratelimit/limiter.hpp"

#include <algorithm>
#include <charconv>
#include <vector>

namespace llmgw::ratelimit {

std::int64_t SlidingWindow::sum(std::int64_t now_sec) const {
  std::int64_t total = 0;
  for (const auto& b : buckets_) {
    if (b.sec > now_sec - kWindowBuckets && b.sec <= now_sec) total += b.value;
  }
  return total;
}

void SlidingWindow::add(std::int64_t sec, std::int64_t value) {
  Bucket& b = buckets_[static_cast<std::size_t>(sec % kWindowBuckets)];
  if (b.sec != sec) b = Bucket{sec, 0};
  // Values are clamped token amounts or corrections of them (|value| <= 2^40); a bucket that
  // somehow grew past that is held there rather than left to overflow.
  b.value = std::clamp<std::int64_t>(b.value + std::clamp(value, -kMaxTokenAmount, kMaxTokenAmount),
                                     -kMaxTokenAmount * 1024, kMaxTokenAmount * 1024);
}

std::int64_t SlidingWindow::wait_ms(std::int64_t now_ms, std::int64_t limit,
                                    std::int64_t cost) const {
  const std::int64_t now_sec = now_ms / 1000;
  std::int64_t total = sum(now_sec);
  if (total + cost <= limit) return 0;
  // Oldest bucket first: when it leaves the window, its value is available again.
  std::vector<Bucket> live;
  for (const auto& b : buckets_) {
    if (b.sec > now_sec - kWindowBuckets && b.sec <= now_sec && b.value != 0) live.push_back(b);
  }
  std::sort(live.begin(), live.end(),
            [](const Bucket& a, const Bucket& b) { return a.sec < b.sec; });
  for (const auto& b : live) {
    total -= b.value;
    if (total + cost <= limit) return (b.sec + kWindowBuckets) * 1000 - now_ms;
  }
  return kWindowBuckets * 1000;
}

std::int64_t SlidingWindow::reset_ms(std::int64_t now_ms) const {
  return state(now_ms, 0).reset_ms;
}

LimitState SlidingWindow::state(std::int64_t now_ms, std::int64_t limit) const {
  const std::int64_t now_sec = now_ms / 1000;
  std::int64_t total = 0;
  std::int64_t newest = -1;
  for (const auto& b : buckets_) {
    if (b.sec > now_sec - kWindowBuckets && b.sec <= now_sec) {
      total += b.value;
      if (b.value != 0) newest = std::max(newest, b.sec);
    }
  }
  return LimitState{limit, std::max<std::int64_t>(0, limit - total),
                    newest < 0 ? 0 : (newest + kWindowBuckets) * 1000 - now_ms};
}

Admission admit(SlidingWindow& requests, SlidingWindow& tokens, const KeyLimits& limits,
                std::int64_t token_cost, std::int64_t now_ms) {
  Admission a;
  const std::int64_t now_sec = now_ms / 1000;
  a.bucket_sec = now_sec;
  std::int64_t req_wait = 0;
  std::int64_t tok_wait = 0;
  if (limits.rpm) req_wait = requests.wait_ms(now_ms, *limits.rpm, 1);
  if (limits.tpm) {
    if (token_cost > *limits.tpm) {
      a.too_large = true;
      tok_wait = tokens.reset_ms(now_ms);
    } else {
      tok_wait = tokens.wait_ms(now_ms, *limits.tpm, token_cost);
    }
  }
  a.allowed = req_wait == 0 && tok_wait == 0 && !a.too_large;
  if (!a.allowed) {
    a.rejected_by = req_wait > 0 ? LimitKind::requests : LimitKind::tokens;
    a.retry_after_ms = std::max<std::int64_t>(std::max(req_wait, tok_wait), 1);
  } else {
    if (limits.rpm) requests.add(now_sec, 1);
    if (limits.tpm) tokens.add(now_sec, token_cost);
  }
  if (limits.rpm) a.requests = requests.state(now_ms, *limits.rpm);
  if (limits.tpm) a.tokens = tokens.state(now_ms, *limits.tpm);
  return a;
}

std::string_view format_reset(std::int64_t ms, char (&buf)[32]) {
  if (ms < 0) ms = 0;
  char* p = buf;
  char* const end = buf + sizeof buf;
  if (ms < 1000) {
    p = std::to_chars(p, end, ms).ptr;
    *p++ = 'm';
    *p++ = 's';
    return {buf, static_cast<std::size_t>(p - buf)};
  }
  const std::int64_t minutes = ms / 60000;
  const std::int64_t rest = ms % 60000;
  if (minutes) {
    p = std::to_chars(p, end, minutes).ptr;
    *p++ = 'm';
  }
  p = std::to_chars(p, end, rest / 1000).ptr;
  if (int frac = static_cast<int>(rest % 1000); frac != 0) {
    // Milliseconds as a decimal fraction without trailing zeros: 500 -> ".5", 50 -> ".05".
    int digits = 3;
    while (frac % 10 == 0) {
      frac /= 10;
      --digits;
    }
    *p++ = '.';
    for (int i = digits - 1; i >= 0; --i) {
      p[i] = static_cast<char>('0' + frac % 10);
      frac /= 10;
    }
    p += digits;
  }
  *p++ = 's';
  return {buf, static_cast<std::size_t>(p - buf)};
}

std::string format_reset(std::int64_t ms) {
  char buf[32];
  return std::string(format_reset(ms, buf));
}

}  // namespace llmgw::ratelimit
