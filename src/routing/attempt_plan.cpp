#include "llm_gateway/routing/attempt_plan.hpp"

namespace llmgw {

AttemptPlan::AttemptPlan(const config::Config& /*cfg*/, const RouteDecision& route)
    : route_(route) {}

Next AttemptPlan::decide(const AttemptOutcome& outcome) {
  ++attempts_;
  if (outcome.status != 0) return Next::commit;
  // A pooled connection the upstream had already given up on fails without the upstream having
  // seen the request: that request is sent once more, on a new connection. Only then: a request
  // the upstream may have acted on (a POST written whole) is never re-sent, so a completion is
  // never billed twice; and a timeout used up the request's time.
  if (outcome.reused_connection && outcome.safe_to_resend && outcome.error_kind != "timeout" &&
      !fresh_connection_) {
    fresh_connection_ = true;
    return Next::retry;
  }
  return Next::give_up;
}

UpstreamRequest translate_for_target(RequestContext& ctx, const config::Upstream& upstream,
                                     const Target& target) {
  ctx.request_stream_usage =
      ctx.stream_usage_wanted && upstream_accepts_stream_options(upstream, ctx.path.endpoint);
  InboundRequest in;
  in.method = ctx.method;
  in.target = ctx.target;
  in.headers = ctx.headers;
  in.body = ctx.body;
  in.path = &ctx.path;
  in.body_facts = &ctx.body_facts;
  in.add_stream_usage = ctx.request_stream_usage;
  return translate(in, upstream, target, ctx.request_id);
}

}  // namespace llmgw
