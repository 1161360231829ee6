#include "llm_gateway/stages/route_stage.hpp"
#include "llm_gateway/translate/json_scan.hpp"
#include "llm_gateway/translate/request_target.hpp"

namespace llmgw {

Verdict RouteStage::on_request(RequestContext& ctx) {
  if (ctx.model) {
    ctx.route = route_model(cfg_, *ctx.model);
    if (!ctx.route) {
      ctx.reply = error_reply(GatewayError::model_not_found,
                              "The model '" + std::string(json::truncate_chars(*ctx.model, 256)) +
                                  "' does not exist or no route of this gateway serves it.");
      return Verdict::respond;
    }
  } else if (ctx.path.deployment_scoped) {
    ctx.reply = error_reply(GatewayError::missing_model, "You must provide a model parameter.");
    return Verdict::respond;
  } else {
    ctx.route = route_default(cfg_);
    if (!ctx.route) {
      ctx.reply = error_reply(GatewayError::no_default_route,
                              "This request names no model, and no route of this gateway matches "
                              "every model (\"*\") to send it to.");
      return Verdict::respond;
    }
  }
  if (!ctx.route->deployment.empty() && !valid_deployment_name(ctx.route->deployment)) {
    // The deployment goes into the upstream path: only a plain name may (no '/', '%', '..').
    ctx.reply = error_reply(400, "invalid_request_error", "invalid_model", "model",
                            "The model '" + std::string(json::truncate_chars(*ctx.model, 256)) +
                                "' cannot name an Azure deployment (letters, digits, '-', '_' "
                                "and '.' only).");
    return Verdict::respond;
  }
  ctx.upstream = &cfg_.upstreams[ctx.route->upstream];
  ctx.deployment = ctx.route->deployment;
  return Verdict::proceed;
}

}  // namespace llmgw
