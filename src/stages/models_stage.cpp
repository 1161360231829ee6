#include "llm_gateway/stages/models_stage.hpp"

#include <algorithm>

#include "llm_gateway/stages/auth_stage.hpp"
#include "llm_gateway/translate/json_scan.hpp"

namespace llmgw {
namespace http = boost::beast::http;

namespace {
std::string model_object(const std::string& id) {
  return "{\"id\":" + json::encode_string(id) +
         ",\"object\":\"model\",\"created\":0,\"owned_by\":\"llm-gateway\"}";
}
}  // namespace

ModelsStage::ModelsStage(const config::Config& cfg) : ids_(listed_models(cfg)) {
  list_body_ = "{\"object\":\"list\",\"data\":[";
  for (std::size_t i = 0; i < ids_.size(); ++i) {
    if (i) list_body_ += ',';
    list_body_ += model_object(ids_[i]);
  }
  list_body_ += "]}";
}

Verdict ModelsStage::on_request(RequestContext& ctx) {
  if (ctx.path.endpoint != Endpoint::models || ctx.method != http::verb::get)
    return Verdict::proceed;
  const std::string_view op = ctx.path.op_path;
  const bool filtered = ctx.key && !ctx.key->models.empty();
  auto visible = [&](const std::string& id) { return !filtered || key_allows_model(*ctx.key, id); };
  if (op == "models") {
    if (!filtered) {
      ctx.reply = json_reply(200, list_body_);
    } else {
      // A key with an allow-list sees only the models it may use.
      std::string body = "{\"object\":\"list\",\"data\":[";
      bool first = true;
      for (const auto& id : ids_) {
        if (!visible(id)) continue;
        if (!first) body += ',';
        body += model_object(id);
        first = false;
      }
      ctx.reply = json_reply(200, body + "]}");
    }
    return Verdict::respond;
  }
  // models/{id}: the id may itself contain '/', and arrives percent-encoded.
  const std::string_view raw_id = op.substr(7);
  const std::string id = percent_decode(raw_id).value_or(std::string(raw_id));
  if (std::find(ids_.begin(), ids_.end(), id) != ids_.end() && visible(id)) {
    ctx.reply = json_reply(200, model_object(id));
  } else {
    ctx.reply = error_reply(
        GatewayError::model_not_found,
        "The model '" + std::string(json::truncate_chars(id, 256)) + "' does not exist.");
  }
  return Verdict::respond;
}

}  // namespace llmgw
