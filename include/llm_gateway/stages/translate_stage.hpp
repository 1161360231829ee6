#pragma once
#include "llm_gateway/pipeline/stage.hpp"

namespace llmgw {

// Translate: builds the upstream request with the pure translate() function.
class TranslateStage final : public Stage {
 public:
  std::string_view name() const override { return "translate"; }
  Verdict on_request(RequestContext& ctx) override;
};

}  // namespace llmgw
