#include "llm_gateway/stages/translate_stage.hpp"

namespace llmgw {

Verdict TranslateStage::on_request(RequestContext& ctx) {
  InboundRequest in;
  in.method = ctx.method;
  in.target = ctx.target;
  in.headers = ctx.headers;
  in.body = ctx.body;
  in.path = &ctx.path;
  in.body_facts = &ctx.body_facts;
  in.add_stream_usage = ctx.request_stream_usage;
  ctx.upstream_request = translate(in, *ctx.upstream, *ctx.route, ctx.request_id);
  return Verdict::proceed;
}

}  // namespace llmgw
