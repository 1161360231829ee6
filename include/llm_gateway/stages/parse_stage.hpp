#pragma once
#include "llm_gateway/pipeline/stage.hpp"

namespace llmgw {

// Parse: reads the body fields routing needs (model, stream, ...) in one validating pass; invalid
// JSON is answered here with a 400. (The operation is named from the path by the session, before
// any stage: the request line reveals nothing, and metrics want it even for a 401.)
class ParseStage final : public Stage {
 public:
  std::string_view name() const override { return "parse"; }
  Verdict on_request(RequestContext& ctx) override;
};

}  // namespace llmgw
