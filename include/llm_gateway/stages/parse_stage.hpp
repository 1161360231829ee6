#pragma once
#include "llm_gateway/pipeline/stage.hpp"

namespace llmgw {

// Accept & parse: names the operation from the path and reads the body fields routing needs
// (model, stream) in one validating pass. Invalid JSON is answered here with a 400.
class ParseStage final : public Stage {
 public:
  std::string_view name() const override { return "parse"; }
  boost::asio::awaitable<Verdict> on_request(RequestContext& ctx) override;
};

}  // namespace llmgw
