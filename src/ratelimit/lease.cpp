#include "llm_gateway/ratelimit/lease.hpp"

#include <algorithm>
#include <cmath>

namespace llmgw::ratelimit {

namespace {

// limit - used + unspent, at least 0. `used` comes from Redis (clamped by the decoder) and
// `limit` from the configuration (rpm <= 1e9, tpm <= 1e12), so nothing here can overflow.
std::int64_t remaining(std::int64_t limit, std::int64_t used, std::int64_t unspent) {
  return std::max<std::int64_t>(0, limit - used + unspent);
}

bool same_limits(const KeyLimits& a, const KeyLimits& b) {
  return a.rpm == b.rpm && a.tpm == b.tpm;
}

}  // namespace

LeaseSize lease_size(const KeyLimits& limits, const LeasePolicy& policy) {
  if (policy.mode == LeasePolicy::Mode::off || (!limits.rpm && !limits.tpm)) return {};
  double share = policy.fraction;
  if (policy.mode == LeasePolicy::Mode::automatic) {
    const bool busy_enough =
        limits.rpm ? *limits.rpm >= kAutoLeaseMinRpm : *limits.tpm >= kAutoLeaseMinTpm;
    if (!busy_enough) return {};
    share = kAutoLeaseFraction;
  }
  LeaseSize size;
  if (limits.rpm) {
    size.requests = static_cast<std::int64_t>(std::clamp(
        std::floor(static_cast<double>(*limits.rpm) * share), 1.0, double(kMaxRequestLease)));
  }
  if (limits.tpm) {
    size.tokens = static_cast<std::int64_t>(std::clamp(
        std::floor(static_cast<double>(*limits.tpm) * share), 0.0, double(kMaxTokenLease)));
  }
  // A lease of one request saves no call, whatever tokens come with it: such a key keeps its
  // exact per-request answers (and its per-request failure behaviour).
  if (limits.rpm && size.requests <= 1) return {};
  return size;
}

void PendingDeltas::add(const CounterDelta& d) {
  if (d.requests == 0 && d.tokens == 0) return;
  for (auto& p : deltas_) {
    if (p.sec == d.sec) {
      // Each side is a clamped token amount or a lease's rest; sums stay far from overflow, and
      // Redis ignores what lands outside its window.
      p.requests = std::clamp<std::int64_t>(p.requests + d.requests, -kMaxTokenAmount * 1024,
                                            kMaxTokenAmount * 1024);
      p.tokens = std::clamp<std::int64_t>(p.tokens + d.tokens, -kMaxTokenAmount * 1024,
                                          kMaxTokenAmount * 1024);
      return;
    }
  }
  deltas_.push_back(d);
  // A second that has left the window no longer counts in Redis: its deltas would be ignored.
  const std::int64_t newest =
      std::max_element(deltas_.begin(), deltas_.end(), [](const auto& a, const auto& b) {
        return a.sec < b.sec;
      })->sec;
  std::erase_if(deltas_,
                [newest](const CounterDelta& p) { return p.sec <= newest - kWindowBuckets; });
}

std::vector<CounterDelta> PendingDeltas::take() {
  std::vector<CounterDelta> out;
  out.swap(deltas_);
  std::sort(out.begin(), out.end(), [](const auto& a, const auto& b) { return a.sec < b.sec; });
  return out;
}

void LocalLease::install(const LeaseGrant& grant, const KeyLimits& limits,
                         Clock::time_point sent_at) {
  held_ = true;
  limits_ = limits;
  grant_ = grant;
  granted_at_ = sent_at;
  // The lease ends with Redis' second bucket_sec. Redis' clock read at most now_ms at sent_at,
  // so measuring the rest of that second from sent_at ends the lease in time, never late.
  const std::int64_t into_second = ((grant.now_ms % 1000) + 1000) % 1000;
  deadline_ = sent_at + std::chrono::milliseconds(1000 - into_second);
  requests_left_ = limits.rpm ? grant.requests : 0;
  tokens_left_ = limits.tpm ? grant.tokens : 0;
}

Admission LocalLease::spend(std::int64_t cost, Clock::time_point now) {
  if (limits_.rpm) --requests_left_;
  if (limits_.tpm) tokens_left_ -= cost;
  Admission a;
  a.allowed = true;
  a.bucket_sec = grant_.bucket_sec;
  const std::int64_t elapsed = std::max<std::int64_t>(
      0, std::chrono::duration_cast<std::chrono::milliseconds>(now - granted_at_).count());
  // What Redis counts for this key, minus what this replica holds unspent: exact for one
  // replica, as of the grant for the others' use.
  if (limits_.rpm) {
    a.requests =
        LimitState{*limits_.rpm, remaining(*limits_.rpm, grant_.request_sum, requests_left_),
                   std::max<std::int64_t>(0, grant_.request_reset_ms - elapsed)};
  }
  if (limits_.tpm) {
    a.tokens = LimitState{*limits_.tpm, remaining(*limits_.tpm, grant_.token_sum, tokens_left_),
                          std::max<std::int64_t>(0, grant_.token_reset_ms - elapsed)};
  }
  return a;
}

Admission LocalLease::spend_granted(std::int64_t cost, Clock::time_point now) {
  return spend(cost, now);
}

std::optional<Admission> LocalLease::try_spend(const KeyLimits& limits, std::int64_t cost,
                                               Clock::time_point now) {
  // A lease made for other limits (a reload changed them) is not spent: its size and the sums
  // it was checked against belong to the old ones.
  if (!held_ || now >= deadline_ || !same_limits(limits, limits_)) return std::nullopt;
  if (limits_.rpm && requests_left_ < 1) return std::nullopt;
  if (limits_.tpm && tokens_left_ < cost) return std::nullopt;
  return spend(cost, now);
}

std::optional<CounterDelta> LocalLease::end() {
  if (!held_) return std::nullopt;
  held_ = false;
  if (requests_left_ <= 0 && tokens_left_ <= 0) return std::nullopt;
  return CounterDelta{grant_.bucket_sec, -std::max<std::int64_t>(0, requests_left_),
                      -std::max<std::int64_t>(0, tokens_left_)};
}

}  // namespace llmgw::ratelimit
