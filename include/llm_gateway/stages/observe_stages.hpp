#pragma once
// The accounting stages that only watch: Prometheus metrics and the JSON access log. They sit
// first in the chain, so their on_complete runs last (response hooks run in reverse order), after
// the account stage has read usage and content-filter results.
#include <memory>

#include "llm_gateway/observability/access_log.hpp"
#include "llm_gateway/observability/metrics.hpp"
#include "llm_gateway/pipeline/stage.hpp"
#include "llm_gateway/routing/backends.hpp"

namespace llmgw {

class MetricsStage final : public Stage {
 public:
  MetricsStage(const config::Config& cfg, std::shared_ptr<observability::Metrics> metrics)
      : cfg_(cfg), metrics_(std::move(metrics)), labels_(metrics_->bind(cfg)) {}
  std::string_view name() const override { return "metrics"; }
  Verdict on_request_headers(RequestContext& ctx) override;
  void on_response_headers(RequestContext& ctx, unsigned status,
                           const HeaderList& headers) override;
  void on_complete(RequestContext& ctx) override;

 private:
  const config::Config& cfg_;
  std::shared_ptr<observability::Metrics> metrics_;
  observability::MetricLabels labels_;  // this snapshot's positions -> the process's label ids
};

class AccessLogStage final : public Stage {
 public:
  AccessLogStage(const config::Config& cfg, std::shared_ptr<observability::AccessLogWriter> writer)
      : cfg_(cfg), writer_(std::move(writer)) {}
  std::string_view name() const override { return "access_log"; }
  void on_response_body(RequestContext& ctx, std::string_view piece) override;
  // Only with logging.bodies: otherwise the access log costs nothing per body piece.
  bool wants_response_body() const override { return cfg_.logging.bodies; }
  void on_complete(RequestContext& ctx) override;

  // The access-log line for a completed request (exposed for tests), or appended to `out`.
  std::string render(RequestContext& ctx) const;
  void render(RequestContext& ctx, std::string& out) const;

  // A thread's line buffer that grew past this (logged bodies) is released after the line.
  static constexpr std::size_t kKeptLineCapacity = 64 * 1024;

 private:
  const config::Config& cfg_;
  std::shared_ptr<observability::AccessLogWriter> writer_;
};

// Sets llm_gateway_backend_state and llm_gateway_upstream_remaining for every configured backend
// of a failover route (deployments from the configuration only, so the series stay bounded):
// called when /metrics is rendered.
void export_backend_gauges(const config::Config& cfg, const BackendRegistry& backends,
                           observability::Metrics& metrics);

// The kAttemptOutcomes index of an attempt.
std::size_t attempt_outcome_index(const AttemptRecord& attempt);

}  // namespace llmgw
