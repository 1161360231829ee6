#include "llm_gateway/stages/rate_limit_stage.hpp"

#include <algorithm>
#include <cmath>

namespace llmgw {
namespace http = boost::beast::http;
using ratelimit::LimitKind;

namespace {

// max_tokens above this is refused with 400 when a token limit applies (2^31 - 1, the largest
// value OpenAI's API documents for any integer parameter).
constexpr long long kMaxTokensAccepted = 2147483647;

}  // namespace

struct RateLimitStage::LimitState final : StageState {
  std::atomic<std::uint32_t>* concurrency = nullptr;  // released when the request ends
  std::optional<ratelimit::Admission> admission;
  std::int64_t reserved_tokens = 0;
  // What is asked of the store (kept for on_request_async when the store must be awaited).
  ratelimit::KeyLimits limits;
  std::int64_t cost = 0;
  ~LimitState() override {
    if (concurrency) concurrency->fetch_sub(1, std::memory_order_relaxed);
  }
};

namespace {

LocalReply too_many(std::string_view type, std::string message, std::int64_t retry_after_ms,
                    std::string_view limit) {
  LocalReply r = error_reply(429, type, "rate_limit_exceeded", std::nullopt, message);
  // Whatever the store computed (the Redis script too), never more than the SDKs honour.
  retry_after_ms = std::clamp<std::int64_t>(retry_after_ms, 1, ratelimit::kMaxRetryAfterMs);
  const std::int64_t seconds = (retry_after_ms + 999) / 1000;
  r.headers.emplace_back("retry-after", std::to_string(seconds));
  r.headers.emplace_back("retry-after-ms", std::to_string(retry_after_ms));
  // Tells the gateway's own 429 apart from an upstream's (which passes through unchanged).
  r.headers.emplace_back("x-gateway-rate-limited", std::string(limit));
  return r;
}

std::string seconds_text(std::int64_t ms) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.3fs", static_cast<double>(ms) / 1000.0);
  return buf;
}

}  // namespace

std::int64_t estimate_tokens(const RequestContext& ctx, std::uint64_t default_completion_tokens) {
  // Every term is a client's number: each is clamped and the sum saturates, so no request can
  // wrap the estimate around to a negative cost (which would add credit to the window).
  const std::uint64_t chars = prompt_characters(ctx.body, ctx.body_facts);
  std::int64_t estimate = ratelimit::clamp_tokens(chars / 4 + (chars % 4 != 0));
  if (ctx.body_facts.max_tokens && *ctx.body_facts.max_tokens > 0) {
    estimate = ratelimit::saturating_add(estimate, *ctx.body_facts.max_tokens);
  } else if (ctx.path.endpoint == Endpoint::chat_completions ||
             ctx.path.endpoint == Endpoint::completions ||
             ctx.path.endpoint == Endpoint::responses) {
    estimate =
        ratelimit::saturating_add(estimate, ratelimit::clamp_tokens(default_completion_tokens));
  }
  return estimate;
}

RateLimitStage::RateLimitStage(const config::Config& cfg,
                               std::shared_ptr<ratelimit::CounterStore> store,
                               std::shared_ptr<ratelimit::ConcurrencyCounters> concurrency)
    : cfg_(cfg), store_(std::move(store)), concurrency_(std::move(concurrency)) {
  // Resolved once per snapshot: the counters are the process's, found by the key's name.
  for (const auto& key : cfg.keys) in_flight_.push_back(&concurrency_->counter(key.name));
}

Verdict RateLimitStage::on_request_headers(RequestContext& ctx) {
  if (!ctx.key || !ctx.key->max_concurrent) return Verdict::proceed;
  const config::ClientKey& key = *ctx.key;
  auto& state = ctx.state<LimitState>(this);
  {
    auto& counter = *in_flight_[ctx.key_index];
    if (counter.fetch_add(1, std::memory_order_relaxed) >= *key.max_concurrent) {
      counter.fetch_sub(1, std::memory_order_relaxed);
      ctx.rate_limited = static_cast<int>(LimitKind::concurrency);
      ctx.reply = too_many("requests",
                           "Too many concurrent requests for key '" + key.name +
                               "': the concurrency limit (max_concurrent) is " +
                               std::to_string(*key.max_concurrent) + " requests in flight.",
                           1000, "concurrency");
      return Verdict::respond;
    }
    state.concurrency = &counter;
  }
  return Verdict::proceed;
}

Verdict RateLimitStage::on_request(RequestContext& ctx) {
  if (!ctx.key) return Verdict::proceed;
  const config::ClientKey& key = *ctx.key;
  auto& state = ctx.state<LimitState>(this);
  if (!key.rpm && !key.tpm) return Verdict::proceed;
  if (key.tpm && ctx.body_facts.max_tokens && *ctx.body_facts.max_tokens > kMaxTokensAccepted) {
    // No model generates this many tokens: the number is an attempt to break the arithmetic.
    ctx.reply = error_reply(
        400, "invalid_request_error", "invalid_value", "max_tokens",
        "The request's max tokens (" + std::to_string(*ctx.body_facts.max_tokens) +
            ") is larger than any model accepts (" + std::to_string(kMaxTokensAccepted) + ").");
    return Verdict::respond;
  }
  ratelimit::KeyLimits limits;
  if (key.rpm) limits.rpm = static_cast<std::int64_t>(*key.rpm);
  if (key.tpm) limits.tpm = static_cast<std::int64_t>(*key.tpm);
  state.limits = limits;
  state.cost = key.tpm ? estimate_tokens(ctx, cfg_.rate_limits.default_completion_tokens) : 0;
  // The memory store answers at once; a shared store (Redis) too when a lease it holds covers
  // the request, and otherwise makes the request wait.
  if (!store_->synchronous()) {
    if (auto leased = store_->try_admit_now(key.name, limits, state.cost))
      return decide(ctx, state, std::move(leased));
    return Verdict::wait;
  }
  return decide(ctx, state, store_->admit_sync(key.name, limits, state.cost));
}

boost::asio::awaitable<Verdict> RateLimitStage::on_request_async(RequestContext& ctx) {
  auto& state = ctx.state<LimitState>(this);
  co_return decide(ctx, state, co_await store_->admit(ctx.key->name, state.limits, state.cost));
}

Verdict RateLimitStage::decide(RequestContext& ctx, LimitState& state,
                               std::optional<ratelimit::Admission> admission) {
  const config::ClientKey& key = *ctx.key;
  const std::int64_t cost = state.cost;
  if (!admission) {
    ctx.rate_limit_store_error = store_->name();
    if (cfg_.rate_limits.on_store_error == config::StoreErrorPolicy::deny) {
      ctx.reply = error_reply(503, "api_error", "rate_limit_store_unavailable", std::nullopt,
                              "The rate limit store is unavailable; try again shortly.");
      ctx.reply->headers.emplace_back("retry-after", "1");
      return Verdict::respond;
    }
    return Verdict::proceed;  // on_store_error: allow
  }
  admission->retry_after_ms =
      std::clamp<std::int64_t>(admission->retry_after_ms, 0, ratelimit::kMaxRetryAfterMs);
  state.admission = admission;
  if (!admission->allowed) {
    if (state.concurrency) {
      state.concurrency->fetch_sub(1, std::memory_order_relaxed);
      state.concurrency = nullptr;
    }
    const bool tokens = admission->rejected_by == LimitKind::tokens;
    ctx.rate_limited = static_cast<int>(admission->rejected_by);
    std::string message;
    if (tokens && admission->too_large) {
      message = "Request too large for key '" + key.name + "' on tokens per min (TPM): Limit " +
                std::to_string(*key.tpm) + ", Requested " + std::to_string(cost) +
                ". The input or max tokens must be reduced.";
    } else if (tokens) {
      message = "Rate limit reached for key '" + key.name + "' on tokens per min (TPM): Limit " +
                std::to_string(*key.tpm) + ", Requested " + std::to_string(cost) +
                ". Please try again in " + seconds_text(admission->retry_after_ms) + ".";
    } else {
      message = "Rate limit reached for key '" + key.name + "' on requests per min (RPM): Limit " +
                std::to_string(*key.rpm) + ". Please try again in " +
                seconds_text(admission->retry_after_ms) + ".";
    }
    ctx.reply = too_many(tokens ? "tokens" : "requests", std::move(message),
                         admission->retry_after_ms, tokens ? "tokens" : "requests");
    return Verdict::respond;
  }
  state.reserved_tokens = cost;
  return Verdict::proceed;
}

void RateLimitStage::on_response_headers(RequestContext& ctx, unsigned, const HeaderList&) {
  auto* state = ctx.find_state<LimitState>(this);
  if (!state || !state->admission) return;
  // The gateway's limits replace the upstream's headers of the same names; a kind of limit the
  // key does not have leaves the upstream's headers alone.
  AddedFields& out = ctx.added_response_fields;
  char reset[32];
  if (const auto& r = state->admission->requests) {
    out.set("x-ratelimit-limit-requests", static_cast<std::int64_t>(r->limit));
    out.set("x-ratelimit-remaining-requests", static_cast<std::int64_t>(r->remaining));
    out.set("x-ratelimit-reset-requests", ratelimit::format_reset(r->reset_ms, reset));
  }
  if (const auto& t = state->admission->tokens) {
    out.set("x-ratelimit-limit-tokens", static_cast<std::int64_t>(t->limit));
    out.set("x-ratelimit-remaining-tokens", static_cast<std::int64_t>(t->remaining));
    out.set("x-ratelimit-reset-tokens", ratelimit::format_reset(t->reset_ms, reset));
  }
}

void RateLimitStage::on_response_end(RequestContext& ctx) {
  auto* state = ctx.find_state<LimitState>(this);
  if (!state) return;
  // The request no longer counts against max_concurrent once its answer is complete (a cut
  // response releases its slot when the request context goes away).
  if (state->concurrency) {
    state->concurrency->fetch_sub(1, std::memory_order_relaxed);
    state->concurrency = nullptr;
  }
  if (!state->admission || !state->admission->allowed || !ctx.key || !ctx.key->tpm) return;
  // Without usage (a cut stream, an error) the estimate stands.
  if (!ctx.usage) return;
  // The upstream's usage is as untrusted as the client's numbers.
  const std::int64_t delta =
      ratelimit::clamp_tokens(ctx.usage->total_tokens) - state->reserved_tokens;
  if (delta != 0) store_->correct_tokens(ctx.key->name, state->admission->bucket_sec, delta);
}

}  // namespace llmgw
