#include "llm_gateway/stages/parse_stage.hpp"

namespace llmgw {
namespace http = boost::beast::http;

Verdict ParseStage::on_request(RequestContext& ctx) {
  std::string_view content_type;
  if (auto it = ctx.headers->find(http::field::content_type); it != ctx.headers->end())
    content_type = it->value();
  ctx.body_facts = inspect_body(content_type, ctx.body);
  if (!ctx.body_facts.invalid_reason.empty()) {
    ctx.reply = error_reply(
        GatewayError::invalid_json,
        "We could not parse the JSON body of your request: " + ctx.body_facts.invalid_reason);
    return Verdict::respond;
  }
  if (ctx.body_facts.model_not_string) {
    ctx.reply = error_reply(400, "invalid_request_error", "invalid_model", "model",
                            "The model parameter must be a string.");
    return Verdict::respond;
  }
  if (ctx.path.path_model && !ctx.path.path_model->empty()) {
    ctx.model = ctx.path.path_model;
  } else if (ctx.body_facts.model && !ctx.body_facts.model->empty()) {
    ctx.model = ctx.body_facts.model;
  }
  return Verdict::proceed;
}

}  // namespace llmgw
