#pragma once
#include <string>
#include <vector>

#include "llm_gateway/pipeline/stage.hpp"

namespace llmgw {

// GET /v1/models and /v1/models/{id}: answered from the configuration, never forwarded, since an
// Azure resource lists base models rather than the deployments this gateway routes to.
class ModelsStage final : public Stage {
 public:
  explicit ModelsStage(const config::Config& cfg);
  std::string_view name() const override { return "models"; }
  Verdict on_request(RequestContext& ctx) override;

 private:
  std::vector<std::string> ids_;
  std::string list_body_;  // rendered once per configuration
};

}  // namespace llmgw
