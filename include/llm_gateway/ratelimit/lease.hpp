#pragma once
// Local leasing of a shared (Redis) quota: one replica takes a slice of a key's rpm and tpm from
// Redis in one script call, spends it in memory, and asks again only when it is used up.
//
// Why the window stays exact: a lease is counted in Redis at the second s the script ran in (in
// Redis' own time) and may be spent only until that second ends, measured from just before the
// call was sent. Every request spent from it is therefore admitted in the same second it is
// counted in, exactly as when the script admits one request, so "over any 60-second interval at
// most `rpm` (and `tpm` reserved)" holds as it does without leases. What a replica has not spent
// when its lease ends goes back to Redis (subtracted from second s, never below zero) with its
// next call, or by the store's flush timer at the latest.
//
// The price is under-admission: while a replica holds a lease, the rest of it is counted in
// Redis but usable by no other replica. With R replicas a key can be refused while up to
// (R - 1) x (requests lease - 1) requests and (R - 1) x tokens lease tokens are held unspent
// elsewhere, for at most one second plus the flush interval.
#include <chrono>
#include <cstdint>
#include <optional>
#include <vector>

#include "llm_gateway/ratelimit/limiter.hpp"

namespace llmgw::ratelimit {

// rate_limits.redis_lease.
struct LeasePolicy {
  enum class Mode { automatic, off, fraction };
  Mode mode = Mode::automatic;
  double fraction = 0;  // Mode::fraction: the share of each limit one lease takes, in (0, 0.5]
};

// auto: 1% of each limit, for keys whose rpm is at least 6000 (100 requests a second on
// average; a key without rpm: a tpm of at least 6,000,000). Below that a Redis round trip per
// request costs little, and every request keeps its exact, per-request answer.
inline constexpr double kAutoLeaseFraction = 0.01;
inline constexpr std::int64_t kAutoLeaseMinRpm = 6000;
inline constexpr std::int64_t kAutoLeaseMinTpm = 6'000'000;
// A lease lives at most one second; more requests than a replica serves in a second would only
// be returned. 1000 keeps the bound small for huge limits and costs a busy replica ~1 call per
// 1000 requests.
inline constexpr std::int64_t kMaxRequestLease = 1000;
// Tokens: 1000 requests of a typical few thousand tokens.
inline constexpr std::int64_t kMaxTokenLease = 10'000'000;

// How much one lease call asks for. requests: the whole grant, the triggering request included
// (1 = no lease: each request is its own call). tokens: asked on top of the triggering request's
// own cost (0 = no lease).
struct LeaseSize {
  std::int64_t requests = 1;
  std::int64_t tokens = 0;
  bool leased() const { return requests > 1 || tokens > 0; }
};

LeaseSize lease_size(const KeyLimits& limits, const LeasePolicy& policy);

// What the Redis script answered to a lease call that admitted its triggering request.
struct LeaseGrant {
  std::int64_t bucket_sec = 0;  // Redis' second the grant is counted in
  std::int64_t now_ms = 0;      // Redis' time when the script ran
  std::int64_t requests = 0;    // granted, the triggering request included
  std::int64_t tokens = 0;      // granted, the triggering request's cost included
  // Redis' sums right after the grant (all of it counted) and the times until each window
  // empties: the headers of the requests spent from the lease are derived from them.
  std::int64_t request_sum = 0;
  std::int64_t token_sum = 0;
  std::int64_t request_reset_ms = 0;
  std::int64_t token_reset_ms = 0;
};

// An amount to add to (negative: take off) one second's counters in Redis: a token correction,
// or the unspent rest of a lease given back.
struct CounterDelta {
  std::int64_t sec = 0;
  std::int64_t requests = 0;
  std::int64_t tokens = 0;
};

// Deltas not yet sent, merged per second. Not thread-safe: the store guards it with its key.
class PendingDeltas {
 public:
  void add(const CounterDelta& d);
  bool empty() const { return deltas_.empty(); }
  std::size_t size() const { return deltas_.size(); }
  std::vector<CounterDelta> take();  // all of them, oldest second first; leaves it empty

 private:
  std::vector<CounterDelta> deltas_;
};

// The lease a replica holds for one key. Not thread-safe: the store guards it with its key.
class LocalLease {
 public:
  using Clock = std::chrono::steady_clock;

  // Installs a grant the script made for `limits`. `sent_at`: the local time just before the
  // call was sent, when Redis' clock was at most grant.now_ms; so the lease ends, in local time,
  // no later than Redis' second bucket_sec does.
  void install(const LeaseGrant& grant, const KeyLimits& limits, Clock::time_point sent_at);

  // Spends the triggering request's share of the grant just installed (its admission, like the
  // script's, is at the grant's time: it needs no deadline check).
  Admission spend_granted(std::int64_t cost, Clock::time_point now);

  // Admits one request of `cost` tokens from the lease when it is live (before its deadline,
  // made for the same limits) and holds enough; nullopt otherwise (ask Redis).
  std::optional<Admission> try_spend(const KeyLimits& limits, std::int64_t cost,
                                     Clock::time_point now);

  // Ends the lease; what it still held, to give back to Redis (nullopt: nothing).
  std::optional<CounterDelta> end();

  bool held() const { return held_; }
  bool expired(Clock::time_point now) const { return now >= deadline_; }
  std::int64_t requests_left() const { return requests_left_; }
  std::int64_t tokens_left() const { return tokens_left_; }

 private:
  Admission spend(std::int64_t cost, Clock::time_point now);

  bool held_ = false;
  KeyLimits limits_;
  LeaseGrant grant_;
  Clock::time_point granted_at_{};
  Clock::time_point deadline_{};
  std::int64_t requests_left_ = 0;
  std::int64_t tokens_left_ = 0;
};

}  // namespace llmgw::ratelimit
