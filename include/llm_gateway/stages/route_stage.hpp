#pragma once
#include "llm_gateway/pipeline/stage.hpp"

namespace llmgw {

// Route: model -> upstream and deployment, first matching route wins.
class RouteStage final : public Stage {
 public:
  explicit RouteStage(const config::Config& cfg) : cfg_(cfg) {}
  std::string_view name() const override { return "route"; }
  Verdict on_request(RequestContext& ctx) override;

 private:
  const config::Config& cfg_;
};

}  // namespace llmgw
