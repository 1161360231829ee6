#include "llm_gateway/pipeline/pipeline.hpp"

#include "llm_gateway/stages/account_stage.hpp"
#include "llm_gateway/stages/auth_stage.hpp"
#include "llm_gateway/stages/models_stage.hpp"
#include "llm_gateway/stages/observe_stages.hpp"
#include "llm_gateway/stages/parse_stage.hpp"
#include "llm_gateway/stages/rate_limit_stage.hpp"
#include "llm_gateway/stages/route_stage.hpp"

namespace llmgw {

Verdict Pipeline::on_request_headers(RequestContext& ctx) const {
  ctx.headers_admitted = true;
  for (const auto& stage : stages_) {
    if (stage->on_request_headers(ctx) == Verdict::respond) return Verdict::respond;
  }
  return Verdict::proceed;
}

boost::asio::awaitable<Verdict> Pipeline::on_request(RequestContext& ctx) const {
  if (!ctx.headers_admitted && on_request_headers(ctx) == Verdict::respond)
    co_return Verdict::respond;
  for (const auto& stage : stages_) {
    Verdict v = stage->on_request(ctx);
    if (v == Verdict::wait) v = co_await stage->on_request_async(ctx);
    if (v == Verdict::respond) co_return Verdict::respond;
  }
  co_return Verdict::proceed;
}

void Pipeline::on_response_headers(RequestContext& ctx, unsigned status,
                                   const HeaderList& headers) const {
  for (auto it = stages_.rbegin(); it != stages_.rend(); ++it)
    (*it)->on_response_headers(ctx, status, headers);
}

void Pipeline::on_response_body(RequestContext& ctx, std::string_view piece) const {
  for (Stage* stage : body_readers_) stage->on_response_body(ctx, piece);
}

void Pipeline::on_response_end(RequestContext& ctx) const {
  for (auto it = stages_.rbegin(); it != stages_.rend(); ++it) (*it)->on_response_end(ctx);
}

void Pipeline::on_complete(RequestContext& ctx) const {
  for (auto it = stages_.rbegin(); it != stages_.rend(); ++it) (*it)->on_complete(ctx);
}

Pipeline build_pipeline(const config::Config& cfg, const PipelineServices& services) {
  std::shared_ptr<ratelimit::CounterStore> store = services.counter_store;
  if (!store) store = std::make_shared<ratelimit::MemoryStore>(ratelimit::system_now_ms());
  auto concurrency = services.concurrency;
  if (!concurrency) concurrency = std::make_shared<ratelimit::ConcurrencyCounters>();
  std::vector<std::unique_ptr<Stage>> stages;
  if (services.metrics) stages.push_back(std::make_unique<MetricsStage>(cfg, services.metrics));
  if (services.access_log)
    stages.push_back(std::make_unique<AccessLogStage>(cfg, services.access_log));
  stages.push_back(std::make_unique<AuthStage>(cfg));
  stages.push_back(std::make_unique<ParseStage>());
  stages.push_back(std::make_unique<AuthorizeStage>());
  stages.push_back(std::make_unique<ModelsStage>(cfg));
  stages.push_back(std::make_unique<RouteStage>(cfg));
  stages.push_back(std::make_unique<RateLimitStage>(cfg, std::move(store), std::move(concurrency)));
  stages.push_back(std::make_unique<AccountStage>());
  return Pipeline(std::move(stages));
}

std::shared_ptr<const Snapshot> make_snapshot(std::shared_ptr<const config::Config> cfg,
                                              PipelineServices services) {
  Pipeline pipeline = build_pipeline(*cfg, services);
  return std::make_shared<const Snapshot>(Snapshot{std::move(cfg), std::move(pipeline)});
}

}  // namespace llmgw
