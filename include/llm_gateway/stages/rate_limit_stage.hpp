#pragma once
#include <atomic>
#include <memory>
#include <vector>

#include "llm_gateway/pipeline/stage.hpp"
#include "llm_gateway/ratelimit/store.hpp"

namespace llmgw {

// Rate limit: per client key, requests per minute and tokens per minute (in the counter store,
// shared across replicas with redis) and requests in flight (per replica). A request rejected by
// one limit consumes nothing of the others. Every response of a limited key carries OpenAI's
// x-ratelimit-* headers; the token reservation is corrected to the real usage afterwards.
class RateLimitStage final : public Stage {
 public:
  RateLimitStage(const config::Config& cfg, std::shared_ptr<ratelimit::CounterStore> store,
                 std::shared_ptr<ratelimit::ConcurrencyCounters> concurrency);
  std::string_view name() const override { return "rate_limit"; }
  Verdict on_request_headers(RequestContext& ctx) override;  // max_concurrent
  Verdict on_request(RequestContext& ctx) override;  // rpm, tpm: waits only for a shared store
  boost::asio::awaitable<Verdict> on_request_async(RequestContext& ctx) override;
  void on_response_headers(RequestContext& ctx, unsigned status,
                           const HeaderList& headers) override;
  void on_response_end(RequestContext& ctx) override;

 private:
  struct LimitState;
  Verdict decide(RequestContext& ctx, LimitState& state,
                 std::optional<ratelimit::Admission> admission);
  const config::Config& cfg_;
  std::shared_ptr<ratelimit::CounterStore> store_;
  std::shared_ptr<ratelimit::ConcurrencyCounters> concurrency_;  // by key name, all snapshots
  std::vector<std::atomic<std::uint32_t>*> in_flight_;  // this snapshot's keys, by position
};

// The tokens reserved at admission: prompt characters / 4 over the messages and inputs, plus the
// request's max tokens, else `default_completion_tokens` for endpoints that generate text.
std::int64_t estimate_tokens(const RequestContext& ctx, std::uint64_t default_completion_tokens);

}  // namespace llmgw
