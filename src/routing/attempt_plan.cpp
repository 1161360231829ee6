#include "llm_gateway/routing/attempt_plan.hpp"

#include <algorithm>
#include <charconv>

#include "llm_gateway/stages/rate_limit_stage.hpp"

namespace llmgw {

namespace http = boost::beast::http;

namespace {
constexpr auto kNever = Clock::time_point::max();

std::optional<std::int64_t> header_number(const HeaderList& h, std::string_view name) {
  const auto v = h[name];
  std::int64_t n = 0;
  auto [end, ec] = std::from_chars(v.data(), v.data() + v.size(), n);
  if (v.empty() || ec != std::errc() || end != v.data() + v.size()) return std::nullopt;
  return n;
}

std::int64_t ceil_ms(Clock::duration d) {
  return std::max<std::int64_t>(1, std::chrono::ceil<std::chrono::milliseconds>(d).count());
}
}  // namespace

bool fails_over_operation(Endpoint endpoint) {
  switch (endpoint) {
    case Endpoint::chat_completions:
    case Endpoint::completions:
    case Endpoint::embeddings:
    case Endpoint::images_generations:
    case Endpoint::images_edits:
    case Endpoint::audio_transcriptions:
    case Endpoint::audio_translations:
    case Endpoint::audio_speech:
    case Endpoint::responses: return true;
    default: return false;
  }
}

// What selection found among the backends it looked at.
struct AttemptPlan::Scan {
  int chosen = -1;  // index into route_.backends
  bool chosen_needs_probe = false;
  bool any_cooling = false;
  bool any_ejected = false;
  Clock::time_point cooling_ends = kNever;  // the earliest cooldown end
  Clock::time_point ejection_ends = kNever;
};

AttemptPlan::AttemptPlan(const config::Config& cfg, RequestContext& ctx, BackendRegistry* registry,
                         Clock::time_point start)
    : cfg_(cfg),
      ctx_(ctx),
      route_(cfg.routes.at(ctx.route->route)),
      // A route with one backend keeps no backend state: its answers, whatever they are, are
      // the client's, as before backends existed.
      registry_(route_.fails_over() ? registry : nullptr),
      start_(start),
      // Only POSTs: a GET of a stored completion or response reads one resource's state.
      fails_over_(registry_ && ctx.method == http::verb::post &&
                  fails_over_operation(ctx.path.endpoint)) {}

AttemptPlan::~AttemptPlan() {
  // A probe that never got an outcome (the client went away) must not keep its backend out.
  if (probe_claimed_ && registry_)
    registry_->release_probe(key_, cfg_.upstreams[target_.upstream].name);
}

std::string AttemptPlan::deployment_of(std::size_t upstream) const {
  const config::Upstream& up = cfg_.upstreams[upstream];
  if (up.provider != config::Provider::azure || !ctx_.model || ctx_.model->empty()) return {};
  return deployment_for(up, *ctx_.model);
}

std::int64_t AttemptPlan::token_estimate() {
  if (!estimate_) estimate_ = estimate_tokens(ctx_, cfg_.rate_limits.default_completion_tokens);
  return *estimate_;
}

bool AttemptPlan::budget_left(Clock::time_point now) const {
  return attempts_ < static_cast<int>(route_.retry.attempts) && now - start_ < route_.retry.budget;
}

AttemptPlan::Scan AttemptPlan::scan(Clock::time_point now, bool select, bool all) {
  Scan s;
  struct Candidate {
    std::size_t index;
    std::string key;
    bool headroom;
    bool needs_probe;
  };
  std::vector<Candidate> usable;
  for (std::size_t i = 0; i < route_.backends.size(); ++i) {
    if (!all && (tried_ & (std::uint64_t{1} << i))) continue;
    const config::Upstream& up = cfg_.upstreams[route_.backends[i].upstream];
    std::string key = backend_key(up.name, deployment_of(route_.backends[i].upstream));
    const BackendRegistry::Snapshot v = registry_->view(key, up.name, now);
    if (v.ejected || v.probe_taken) {
      s.any_ejected = true;
      // A probe in flight answers within its timeout; look again in a second meanwhile.
      s.ejection_ends =
          std::min(s.ejection_ends, v.ejected ? v.back_at : now + std::chrono::seconds(1));
      continue;
    }
    if (now < v.cooldown_until) {
      s.any_cooling = true;
      s.cooling_ends = std::min(s.cooling_ends, v.cooldown_until);
      continue;
    }
    // Azure's last quota report says this request would not fit: skipped like a backend in
    // cooldown, unless no backend has room for it.
    bool headroom = true;
    if (v.remaining_tokens && *v.remaining_tokens < token_estimate()) headroom = false;
    if (v.remaining_requests && *v.remaining_requests <= 0) headroom = false;
    usable.push_back({i, std::move(key), headroom, v.probe_needed});
  }
  if (usable.empty()) return s;
  if (!select) {
    s.chosen = static_cast<int>(usable.front().index);  // that there is one is all that matters
    return s;
  }
  const bool any_headroom =
      std::any_of(usable.begin(), usable.end(), [](const Candidate& c) { return c.headroom; });
  unsigned best_priority = ~0u;
  for (const auto& c : usable) {
    if (c.headroom || !any_headroom)
      best_priority = std::min(best_priority, route_.backends[c.index].priority);
  }
  std::vector<const Candidate*> group;
  std::vector<std::string> keys;
  std::vector<unsigned> weights;
  for (const auto& c : usable) {
    if ((c.headroom || !any_headroom) && route_.backends[c.index].priority == best_priority) {
      group.push_back(&c);
      keys.push_back(c.key);
      weights.push_back(route_.backends[c.index].weight);
    }
  }
  const std::size_t picked = registry_->pick_weighted(route_.match, keys, weights);
  s.chosen = static_cast<int>(group[picked]->index);
  s.chosen_needs_probe = group[picked]->needs_probe;
  return s;
}

bool AttemptPlan::choose(Clock::time_point now) {
  // A probe another request claimed first is skipped: a few rounds at most.
  for (int round = 0; round < 4; ++round) {
    const Scan s = scan(now, true);
    if (s.chosen < 0) return false;
    const auto& backend = route_.backends[static_cast<std::size_t>(s.chosen)];
    const config::Upstream& up = cfg_.upstreams[backend.upstream];
    std::string deployment = deployment_of(backend.upstream);
    std::string key = backend_key(up.name, deployment);
    if (s.chosen_needs_probe && !registry_->claim_probe(key, up.name)) continue;
    probe_claimed_ = s.chosen_needs_probe;
    backend_ = static_cast<std::size_t>(s.chosen);
    tried_ |= std::uint64_t{1} << backend_;
    target_.upstream = backend.upstream;
    target_.deployment = std::move(deployment);
    key_ = std::move(key);
    return true;
  }
  return false;
}

void AttemptPlan::refuse_all_out(Clock::time_point now) {
  // Every backend, tried or not, is cooling down or ejected.
  const Scan s = scan(now, false, true);
  if (s.any_cooling) {
    const std::int64_t ms = ceil_ms(s.cooling_ends - now);
    reply_ = error_reply(429, "requests", "rate_limit_exceeded", std::nullopt,
                         "Every deployment that serves this model is rate limited by Azure "
                         "right now; retry after " +
                             std::to_string(ms) + " ms.");
    reply_.headers.emplace_back("retry-after", std::to_string((ms + 999) / 1000));
    reply_.headers.emplace_back("retry-after-ms", std::to_string(ms));
    reply_.headers.emplace_back("x-gateway-rate-limited", "upstream");
    return;
  }
  const std::int64_t ms = s.ejection_ends == kNever ? 1000 : ceil_ms(s.ejection_ends - now);
  reply_ = error_reply(503, "api_error", "no_healthy_upstream", std::nullopt,
                       "Every deployment that serves this model is failing and taken out of "
                       "rotation; retry later.");
  reply_.headers.emplace_back("retry-after", std::to_string((ms + 999) / 1000));
}

Step AttemptPlan::next_step(Clock::time_point now) {
  if (retry_same_target_) {  // the same target, on a new connection
    retry_same_target_ = false;
    return {};
  }
  if (!registry_) {
    if (attempts_ > 0) return {Step::Kind::give_up};
    target_ = *ctx_.route;
    return {};
  }
  if (chosen_ready_) {  // decide() already chose (and claimed) the next target
    chosen_ready_ = false;
    return {};
  }
  if (choose(now)) return {};
  // Nothing available now. With max_queue_ms, wait for the first backend to come back.
  const Scan s = scan(now, false, true);
  if (route_.max_queue.count() > 0 && (attempts_ == 0 || budget_left(now))) {
    const auto queue_end = start_ + route_.max_queue;
    const auto back = std::min(s.cooling_ends, s.ejection_ends);
    if (now < queue_end && back != kNever) {
      tried_ = 0;  // after the wait, every backend may be tried again
      return {Step::Kind::wait, std::min(back, queue_end)};
    }
  }
  if (attempts_ == 0 || last_status_ == 429) {
    refuse_all_out(now);
    return {Step::Kind::refuse};
  }
  return {Step::Kind::give_up};
}

Next AttemptPlan::decide(const AttemptOutcome& o, Clock::time_point now) {
  ++attempts_;
  last_status_ = o.status;
  // A pooled connection the upstream had already given up on fails without the upstream having
  // seen the request: that request is sent once more, to the same target on a new connection.
  // Only then: a request the upstream may have acted on (a POST written whole) is never re-sent
  // this way, and a timeout used up the attempt's time. It is no failure of the backend.
  if (o.status == 0 && o.reused_connection && o.safe_to_resend && o.error_kind != "timeout" &&
      !fresh_connection_) {
    --attempts_;
    fresh_connection_ = true;
    retry_same_target_ = true;
    return Next::retry;
  }
  fresh_connection_ = false;
  if (!registry_) return o.status != 0 ? Next::commit : Next::give_up;

  // What this outcome teaches about the backend.
  const std::string& upstream = cfg_.upstreams[target_.upstream].name;
  const auto& policy = route_.retry;
  if (o.status == 429) {
    std::optional<std::chrono::milliseconds> wait;
    if (o.headers) {
      wait = retry_after_from((*o.headers)["retry-after-ms"], (*o.headers)["x-ms-retry-after-ms"],
                              (*o.headers)[http::field::retry_after],
                              std::chrono::system_clock::now());
    }
    registry_->success(key_, upstream);  // alive; the cooldown governs
    registry_->cooldown(key_, now + wait.value_or(policy.default_cooldown));
  } else if (o.status >= 500 ||
             (o.status == 0 && !o.error_kind.empty() && o.error_kind != "proxy")) {
    // (The egress proxy failing says nothing about the backend behind it.)
    const bool connection_level = o.error_kind == "connect" || o.error_kind == "tls";
    registry_->failure(key_, upstream, connection_level, policy.eject_after, now);
  } else if (o.status != 0) {
    registry_->success(key_, upstream);
  }
  if (o.status != 0 && o.status != 429 && o.headers) {
    registry_->report(key_, header_number(*o.headers, "x-ratelimit-remaining-requests"),
                      header_number(*o.headers, "x-ratelimit-remaining-tokens"), now);
  }
  probe_claimed_ = false;

  // Where the request goes from here.
  const bool may_retry =
      fails_over_ && budget_left(now) &&
      (o.status != 0 ? policy.retries_status(o.status) : policy.retries_kind(o.error_kind));
  if (may_retry && choose(now)) {
    chosen_ready_ = true;
    return Next::retry;
  }
  if (o.status == 0) return Next::give_up;
  if (o.status == 429 && fails_over_) {
    // No other backend to try now. Wait for one (max_queue_ms), or answer for all of them when
    // every one is cooling down or out; a backend still available (the attempts are spent)
    // leaves the upstream's own 429 as the answer.
    if (route_.max_queue.count() > 0 && budget_left(now) && now < start_ + route_.max_queue)
      return Next::retry;
    if (scan(now, false, true).chosen < 0) {
      refuse_all_out(now);
      return Next::refuse;
    }
  }
  return Next::commit;
}

UpstreamRequest translate_for_target(RequestContext& ctx, const config::Upstream& upstream,
                                     const Target& target, std::string_view upstream_token) {
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
  in.upstream_token = upstream_token;
  return translate(in, upstream, target, ctx.request_id);
}

}  // namespace llmgw
