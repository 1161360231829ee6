#pragma once
// The router's decisions, apart from its I/O (src/net/router.cpp does the I/O): which target the
// next upstream attempt goes to, what it sends there, and what an attempt's outcome means —
// commit it to the client, try again, or give up. Pure, so every rule is unit-tested.
#include <string_view>

#include "llm_gateway/pipeline/context.hpp"
#include "llm_gateway/routing/router.hpp"
#include "llm_gateway/translate/translate.hpp"

namespace llmgw {

// What an attempt came to before anything of it reached the client.
struct AttemptOutcome {
  unsigned status = 0;          // the upstream's status; 0 when no response head arrived
  std::string_view error_kind;  // when status is 0: connect | tls | timeout | reset | protocol
  bool reused_connection = false;
  // The upstream cannot have acted on the request: it was never completely written (connect
  // failed, or the write failed part-way), or it is idempotent and nothing at all came back.
  bool safe_to_resend = false;
};

enum class Next {
  commit,   // relay this response to the client
  retry,    // discard it and run another attempt (pick() names its target)
  give_up,  // the client gets the gateway's error for this outcome
};

class AttemptPlan {
 public:
  AttemptPlan(const config::Config& cfg, const RouteDecision& route);

  // The target of the next attempt.
  const Target& pick() const { return route_; }
  // The next attempt must open a new connection instead of taking a pooled one.
  bool fresh_connection() const { return fresh_connection_; }
  // Called once per attempt, with what it came to.
  Next decide(const AttemptOutcome& outcome);
  int attempts() const { return attempts_; }

 private:
  const RouteDecision& route_;
  int attempts_ = 0;
  bool fresh_connection_ = false;
};

// The router's translate step: the request the target gets, made by the pure translate() from
// what the stages decided. Sets ctx.request_stream_usage for this attempt (the stream's usage is
// asked for only from an upstream that accepts stream_options).
UpstreamRequest translate_for_target(RequestContext& ctx, const config::Upstream& upstream,
                                     const Target& target);

}  // namespace llmgw
