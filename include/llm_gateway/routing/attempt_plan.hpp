#pragma once
// The router's decisions, apart from its I/O (src/net/router.cpp does the I/O): which target the
// next upstream attempt goes to, what it sends there, and what an attempt's outcome means —
// commit it to the client, try again (perhaps after waiting for a backend to come back), or give
// up. Pure apart from the shared BackendRegistry, so every rule is unit-tested.
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

#include "llm_gateway/pipeline/context.hpp"
#include "llm_gateway/routing/backends.hpp"
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
  // The response head (when status != 0): retry-after and Azure's quota headers are read here.
  const HeaderList* headers = nullptr;
};

enum class Next {
  commit,   // relay this response to the client
  retry,    // discard it; next_step() says where the next attempt goes
  give_up,  // the client gets the gateway's error for this outcome
  refuse,   // the client gets reply() (every backend cooling down, or ejected)
};

// The next step before an attempt: go to pick(), wait until `until` (max_queue_ms), or answer.
struct Step {
  enum class Kind { attempt, wait, refuse, give_up } kind = Kind::attempt;
  Clock::time_point until{};  // wait
};

class AttemptPlan {
 public:
  // `registry` may be null (no backend state: one target, nothing learned).
  AttemptPlan(const config::Config& cfg, RequestContext& ctx, BackendRegistry* registry,
              Clock::time_point start);
  ~AttemptPlan();
  AttemptPlan(const AttemptPlan&) = delete;
  AttemptPlan& operator=(const AttemptPlan&) = delete;

  // Before each attempt (the first, and after a retry or a wait).
  Step next_step(Clock::time_point now);
  // The target of the attempt next_step() chose.
  const Target& pick() const { return target_; }
  // The next attempt must open a new connection instead of taking a pooled one.
  bool fresh_connection() const { return fresh_connection_; }
  // Called once per attempt, with what it came to.
  Next decide(const AttemptOutcome& outcome, Clock::time_point now);
  // The gateway's answer after Step::refuse or Next::refuse.
  const LocalReply& reply() const { return reply_; }

  int attempts() const { return attempts_; }
  bool fails_over() const { return fails_over_; }

 private:
  struct Scan;
  // Looks at the backends not tried yet (every backend with `all`); picks one by weight only
  // when `select` (the weighted round-robin's state moves only for a real choice).
  Scan scan(Clock::time_point now, bool select, bool all = false);
  bool choose(Clock::time_point now);  // sets target_ (and claims a probe) or refusal facts
  void refuse_all_out(Clock::time_point now);
  std::string deployment_of(std::size_t upstream) const;
  std::int64_t token_estimate();
  bool budget_left(Clock::time_point now) const;

  const config::Config& cfg_;
  RequestContext& ctx_;
  const config::Route& route_;
  BackendRegistry* registry_;
  const Clock::time_point start_;
  const bool fails_over_;  // several backends, and an operation that may be retried
  Target target_;
  std::size_t backend_ = 0;  // index into route_.backends of target_
  std::string key_;          // backend_key of target_
  bool probe_claimed_ = false;
  std::uint64_t tried_ = 0;  // bit per backend index
  int attempts_ = 0;
  bool fresh_connection_ = false;
  bool retry_same_target_ = false;
  bool chosen_ready_ = false;  // decide() chose the next target already
  unsigned last_status_ = 0;
  std::optional<std::int64_t> estimate_;
  LocalReply reply_;
};

// Inference operations, whose POSTs a route with several backends retries and fails over; the
// others (files, batches, assistants, fine-tuning, ...) and GETs (stored completions, responses)
// read or hold state on one resource and go to one backend once.
bool fails_over_operation(Endpoint endpoint);

// The router's translate step: the request the target gets, made by the pure translate() from
// what the stages decided. Sets ctx.request_stream_usage for this attempt (the stream's usage is
// asked for only from an upstream that accepts stream_options).
UpstreamRequest translate_for_target(RequestContext& ctx, const config::Upstream& upstream,
                                     const Target& target, std::string_view upstream_token = {});

}  // namespace llmgw
