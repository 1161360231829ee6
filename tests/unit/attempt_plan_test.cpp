// The router's decisions without its I/O: which target an attempt goes to, what it sends there,
// and what each outcome leads to — for a route with one backend (as before backends existed)
// and for failover routes (weights, priorities, cooldowns, quota, ejection, queueing).
#include <gtest/gtest.h>

#include <deque>
#include <map>
#include <set>

#include "llm_gateway/routing/attempt_plan.hpp"
#include "test_support.hpp"

namespace llmgw {
namespace {

namespace http = boost::beast::http;
using std::chrono::milliseconds;
using std::chrono::seconds;

constexpr std::string_view kYaml = R"(
upstreams:
  azure:
    provider: azure
    base_url: https://east.openai.azure.com
    api_key: K
    api_version: 2024-10-21
    deployments:
      gpt-4o: prod-4o
  old:
    provider: azure
    base_url: https://old.openai.azure.com
    api_key: K
    api_version: 2024-06-01
  east:
    provider: azure
    base_url: https://east2.openai.azure.com
    api_key: K
    deployments: {gpt-4o: east-4o, gpt-4o-mini: east-mini}
  west:
    provider: azure
    base_url: https://west.openai.azure.com
    api_key: K
    deployments: {gpt-4o: west-4o}
  openai:
    provider: openai
    base_url: https://api.openai.com
    api_key: K
routes:
  - {match: "gpt-4o", upstream: azure}
  - {match: "old-*", upstream: old}
  - match: "multi-*"
    backends:
      - {upstream: east, priority: 0, weight: 3}
      - {upstream: west, priority: 0, weight: 1}
      - {upstream: openai, priority: 1}
  - match: "pair-*"
    backends:
      - {upstream: east}
      - {upstream: west}
    retry: {attempts: 2, eject_after: 2, default_cooldown_ms: 5000}
  - match: "queue-*"
    backends:
      - {upstream: east}
      - {upstream: west}
    max_queue_ms: 3000
)";

class AttemptPlanTest : public ::testing::Test {
 protected:
  void SetUp() override {
    cfg_ = test::load_ok(kYaml);
    ASSERT_TRUE(cfg_);
  }

  // A chat request for `model`, routed as the route stage does.
  RequestContext& request(std::string model, Endpoint endpoint = Endpoint::chat_completions) {
    auto ctx = std::make_unique<RequestContext>();
    ctx->config = cfg_.get();
    ctx->model = std::move(model);
    ctx->method = http::verb::post;
    ctx->path.endpoint = endpoint;
    ctx->route = route_model(*cfg_, *ctx->model);
    EXPECT_TRUE(ctx->route);
    contexts_.push_back(std::move(ctx));
    return *contexts_.back();
  }

  std::unique_ptr<AttemptPlan> plan_for(RequestContext& ctx, BackendRegistry* registry) {
    return std::make_unique<AttemptPlan>(*cfg_, ctx, registry, now_);
  }

  // The upstream name next_step() chose, or "" when it did not choose one.
  std::string next(AttemptPlan& plan) {
    const Step s = plan.next_step(now_);
    if (s.kind != Step::Kind::attempt) return "";
    return cfg_->upstreams[plan.pick().upstream].name;
  }

  static AttemptOutcome failed(std::string_view kind, bool reused = false, bool safe = true) {
    AttemptOutcome o;
    o.error_kind = kind;
    o.reused_connection = reused;
    o.safe_to_resend = safe;
    return o;
  }
  AttemptOutcome answered(unsigned status) {
    headers_.emplace_back();
    AttemptOutcome o;
    o.status = status;
    o.headers = &headers_.back();
    return o;
  }
  AttemptOutcome throttled(std::string_view retry_after_ms) {
    AttemptOutcome o = answered(429);
    headers_.back().set("retry-after-ms", retry_after_ms);
    return o;
  }
  AttemptOutcome with_quota(unsigned status, std::string_view tokens) {
    AttemptOutcome o = answered(status);
    headers_.back().set("x-ratelimit-remaining-tokens", tokens);
    return o;
  }

  std::shared_ptr<const config::Config> cfg_;
  std::vector<std::unique_ptr<RequestContext>> contexts_;
  std::deque<HeaderList> headers_;
  BackendRegistry registry_;
  Clock::time_point now_ = Clock::now();
};

// --- a route with one backend: as before backends existed ---

TEST_F(AttemptPlanTest, OneBackendFirstTargetIsTheRoutesTarget) {
  auto plan = plan_for(request("gpt-4o"), &registry_);
  EXPECT_EQ(next(*plan), "azure");
  EXPECT_EQ(plan->pick().deployment, "prod-4o");
  EXPECT_FALSE(plan->fresh_connection());
  EXPECT_EQ(plan->attempts(), 0);
}

TEST_F(AttemptPlanTest, OneBackendCommitsAnyResponseHeadAndLearnsNothing) {
  // Its 429s and 5xx are the client's answer, and nothing is remembered about it.
  for (unsigned status : {200u, 400u, 401u, 429u, 500u, 503u}) {
    auto plan = plan_for(request("gpt-4o"), &registry_);
    ASSERT_EQ(next(*plan), "azure");
    EXPECT_EQ(plan->decide(throttled("5000"), now_), Next::commit) << status;
    EXPECT_EQ(plan->attempts(), 1);
  }
  EXPECT_EQ(registry_.state(backend_key("azure", "prod-4o"), "azure", now_),
            BackendState::available);
}

TEST_F(AttemptPlanTest, StaleReusedConnectionIsRetriedOnceOnAFreshOne) {
  auto plan = plan_for(request("gpt-4o"), &registry_);
  ASSERT_EQ(next(*plan), "azure");
  EXPECT_EQ(plan->decide(failed("reset", /*reused=*/true, /*safe=*/true), now_), Next::retry);
  EXPECT_TRUE(plan->fresh_connection());
  EXPECT_EQ(next(*plan), "azure");  // the same target
  // The fresh connection fails too: that is the client's answer.
  EXPECT_EQ(plan->decide(failed("reset", /*reused=*/false, /*safe=*/true), now_), Next::give_up);
  EXPECT_EQ(plan->next_step(now_).kind, Step::Kind::give_up);
}

TEST_F(AttemptPlanTest, RequestTheUpstreamMayHaveActedOnIsNeverResent) {
  // A POST written whole on a reused connection that then closed: it may have been processed
  // (and billed), so it is not sent again.
  auto plan = plan_for(request("gpt-4o"), &registry_);
  ASSERT_EQ(next(*plan), "azure");
  EXPECT_EQ(plan->decide(failed("reset", /*reused=*/true, /*safe=*/false), now_), Next::give_up);
  EXPECT_FALSE(plan->fresh_connection());
}

TEST_F(AttemptPlanTest, OneBackendFailureOnANewConnectionOrATimeoutIsNotRetried) {
  for (auto [kind, reused] : {std::pair{"connect", false}, std::pair{"timeout", true}}) {
    auto plan = plan_for(request("gpt-4o"), &registry_);
    ASSERT_EQ(next(*plan), "azure");
    EXPECT_EQ(plan->decide(failed(kind, reused), now_), Next::give_up) << kind;
  }
}

// --- failover routes ---

TEST_F(AttemptPlanTest, WeightsHoldExactlyWithinAPriority) {
  // Smooth weighted round-robin: 3:1 is exactly 3:1 over any multiple of 4 requests, and the
  // lower priority (openai) gets nothing while the first priority has a backend.
  std::map<std::string, int> counts;
  for (int i = 0; i < 1000; ++i) {
    auto plan = plan_for(request("multi-4o"), &registry_);
    const std::string name = next(*plan);
    ++counts[name];
    EXPECT_EQ(plan->decide(answered(200), now_), Next::commit);
  }
  EXPECT_EQ(counts["east"], 750);
  EXPECT_EQ(counts["west"], 250);
  EXPECT_EQ(counts["openai"], 0);
}

TEST_F(AttemptPlanTest, A429CoolsDownThatDeploymentForExactlyTheTimeAskedAndFailsOverAtOnce) {
  auto& ctx = request("pair-x");
  ctx.model = "gpt-4o";  // the model's deployments: east-4o, west-4o
  auto plan = plan_for(ctx, &registry_);
  const std::string first = next(*plan);
  ASSERT_FALSE(first.empty());
  const std::string other = first == "east" ? "west" : "east";
  EXPECT_EQ(plan->decide(throttled("800"), now_), Next::retry);
  EXPECT_EQ(next(*plan), other);
  EXPECT_EQ(plan->decide(answered(200), now_), Next::commit);

  const std::string key = backend_key(first, first == "east" ? "east-4o" : "west-4o");
  EXPECT_EQ(registry_.state(key, first, now_), BackendState::cooldown);
  EXPECT_EQ(registry_.state(key, first, now_ + milliseconds(799)), BackendState::cooldown);
  EXPECT_EQ(registry_.state(key, first, now_ + milliseconds(800)), BackendState::available);
  // Another deployment of the same upstream is not cooled down by it.
  EXPECT_EQ(registry_.state(backend_key("east", "east-mini"), "east", now_),
            BackendState::available);
  // Meanwhile every request goes to the other backend.
  for (int i = 0; i < 4; ++i) {
    auto& c = request("pair-x");
    c.model = "gpt-4o";
    auto p = plan_for(c, &registry_);
    EXPECT_EQ(next(*p), other);
    p->decide(answered(200), now_);
  }
}

TEST_F(AttemptPlanTest, A429WithoutRetryAfterCoolsDownForTheDefault) {
  auto& ctx = request("pair-x");
  ctx.model = "gpt-4o";
  auto plan = plan_for(ctx, &registry_);
  const std::string first = next(*plan);
  EXPECT_EQ(plan->decide(answered(429), now_), Next::retry);
  const std::string key = backend_key(first, first + "-4o");
  EXPECT_EQ(registry_.state(key, first, now_ + milliseconds(4999)), BackendState::cooldown);
  EXPECT_EQ(registry_.state(key, first, now_ + milliseconds(5000)), BackendState::available);
}

TEST_F(AttemptPlanTest, EveryBackendCoolingDownAnswers429WithTheShortestCooldown) {
  auto& ctx = request("pair-x");
  ctx.model = "gpt-4o";
  auto plan = plan_for(ctx, &registry_);
  ASSERT_FALSE(next(*plan).empty());
  EXPECT_EQ(plan->decide(throttled("3000"), now_), Next::retry);
  ASSERT_FALSE(next(*plan).empty());
  EXPECT_EQ(plan->decide(throttled("1200"), now_), Next::refuse);
  const LocalReply& r = plan->reply();
  EXPECT_EQ(r.status, 429u);
  EXPECT_EQ(r.error_code, "rate_limit_exceeded");
  auto header = [&](std::string_view name) {
    for (const auto& [n, v] : r.headers)
      if (n == name) return v;
    return std::string();
  };
  EXPECT_EQ(header("retry-after-ms"), "1200");
  EXPECT_EQ(header("retry-after"), "2");
  EXPECT_EQ(header("x-gateway-rate-limited"), "upstream");
  EXPECT_NE(r.body.find(R"("type":"requests")"), std::string::npos) << r.body;

  // A request arriving now is answered the same way without any attempt.
  auto& c2 = request("pair-x");
  c2.model = "gpt-4o";
  auto p2 = plan_for(c2, &registry_);
  EXPECT_EQ(p2->next_step(now_ + milliseconds(200)).kind, Step::Kind::refuse);
  EXPECT_EQ(p2->reply().status, 429u);
}

TEST_F(AttemptPlanTest, WithMaxQueueARequestWaitsForTheFirstBackendToComeBack) {
  auto& ctx = request("queue-x");
  ctx.model = "gpt-4o";
  auto plan = plan_for(ctx, &registry_);
  ASSERT_FALSE(next(*plan).empty());
  EXPECT_EQ(plan->decide(throttled("5000"), now_), Next::retry);
  ASSERT_FALSE(next(*plan).empty());
  EXPECT_EQ(plan->decide(throttled("1000"), now_), Next::retry);  // wait, not refuse
  const Step wait = plan->next_step(now_);
  ASSERT_EQ(wait.kind, Step::Kind::wait);
  EXPECT_EQ(wait.until, now_ + milliseconds(1000));  // the first cooldown to end
  // After the wait, the backend that came back is tried again.
  ASSERT_EQ(plan->next_step(now_ + milliseconds(1000)).kind, Step::Kind::attempt);

  // Bounded by max_queue_ms (3000): a wait never goes past it, and past it the request is
  // answered for all of them.
  now_ += seconds(10);  // every earlier cooldown is over
  auto& c2 = request("queue-x");
  c2.model = "gpt-4o";
  auto p2 = plan_for(c2, &registry_);
  ASSERT_FALSE(next(*p2).empty());
  EXPECT_EQ(p2->decide(throttled("8000"), now_ + milliseconds(1000)), Next::retry);
  ASSERT_FALSE(next(*p2).empty());
  EXPECT_EQ(p2->decide(throttled("9000"), now_ + milliseconds(1000)), Next::retry);
  const Step s2 = p2->next_step(now_ + milliseconds(1000));
  ASSERT_EQ(s2.kind, Step::Kind::wait);
  EXPECT_EQ(s2.until, now_ + milliseconds(3000));
  EXPECT_EQ(p2->next_step(now_ + milliseconds(3000)).kind, Step::Kind::refuse);
  EXPECT_EQ(p2->reply().status, 429u);
}

TEST_F(AttemptPlanTest, ClientErrorsAreNeverRetried) {
  for (unsigned status : {400u, 401u, 403u, 404u, 413u, 422u}) {
    auto& ctx = request("multi-4o");
    ctx.model = "gpt-4o";
    auto plan = plan_for(ctx, &registry_);
    ASSERT_FALSE(next(*plan).empty());
    EXPECT_EQ(plan->decide(answered(status), now_), Next::commit) << status;
  }
}

TEST_F(AttemptPlanTest, ServerErrorsAndConnectionFailuresMoveToTheNextBackend) {
  auto& ctx = request("multi-4o");
  ctx.model = "gpt-4o";
  auto plan = plan_for(ctx, &registry_);
  std::set<std::string> seen{next(*plan)};
  EXPECT_EQ(plan->decide(answered(503), now_), Next::retry);
  seen.insert(next(*plan));
  EXPECT_EQ(plan->decide(failed("connect"), now_), Next::retry);
  seen.insert(next(*plan));  // the lower priority, every priority-0 backend having been tried
  EXPECT_EQ(seen, (std::set<std::string>{"east", "west", "openai"}));
  // The third attempt is the last (attempts: 3 by default): its 502 is the answer.
  EXPECT_EQ(plan->decide(answered(502), now_), Next::commit);
  EXPECT_EQ(plan->attempts(), 3);
}

TEST_F(AttemptPlanTest, ProtocolErrorsAreNotRetried) {
  auto& ctx = request("multi-4o");
  auto plan = plan_for(ctx, &registry_);
  ASSERT_FALSE(next(*plan).empty());
  EXPECT_EQ(plan->decide(failed("protocol"), now_), Next::give_up);
}

TEST_F(AttemptPlanTest, AttemptsAndBudgetBoundTheRetries) {
  auto& ctx = request("pair-x");  // attempts: 2
  ctx.model = "gpt-4o";
  auto plan = plan_for(ctx, &registry_);
  ASSERT_FALSE(next(*plan).empty());
  EXPECT_EQ(plan->decide(answered(500), now_), Next::retry);
  ASSERT_FALSE(next(*plan).empty());
  EXPECT_EQ(plan->decide(answered(500), now_), Next::commit);

  // budget_ms (30 s by default): no new attempt starts after it.
  auto& c2 = request("multi-4o");
  auto p2 = plan_for(c2, &registry_);
  ASSERT_FALSE(next(*p2).empty());
  EXPECT_EQ(p2->decide(answered(500), now_ + seconds(31)), Next::commit);
  EXPECT_EQ(p2->decide(failed("timeout"), now_ + seconds(31)), Next::give_up);
}

TEST_F(AttemptPlanTest, GetsOfStoredStateAreSentOnce) {
  auto& ctx = request("multi-4o");  // GET /v1/chat/completions lists stored completions
  ctx.method = http::verb::get;
  auto plan = plan_for(ctx, &registry_);
  EXPECT_FALSE(plan->fails_over());
  ASSERT_FALSE(next(*plan).empty());
  EXPECT_EQ(plan->decide(answered(503), now_), Next::commit);
}

TEST_F(AttemptPlanTest, FilesAndOtherStatefulOperationsAreSentOnce) {
  auto& ctx = request("multi-4o", Endpoint::files);
  auto plan = plan_for(ctx, &registry_);
  EXPECT_FALSE(plan->fails_over());
  ASSERT_FALSE(next(*plan).empty());
  EXPECT_EQ(plan->decide(answered(503), now_), Next::commit);
  auto& c2 = request("multi-4o", Endpoint::batches);
  auto p2 = plan_for(c2, &registry_);
  ASSERT_FALSE(next(*p2).empty());
  EXPECT_EQ(p2->decide(failed("connect"), now_), Next::give_up);
}

TEST_F(AttemptPlanTest, ConsecutiveFailuresEjectWithDoublingBackoffThenOneProbeDecides) {
  // eject_after: 2. Two 5xx from west's deployment eject it (east untouched).
  const std::string west = backend_key("west", "west-4o");
  auto fail_on = [&](const std::string& want, AttemptOutcome outcome, Clock::time_point when) {
    for (int i = 0; i < 8; ++i) {
      auto& ctx = request("pair-x");
      ctx.model = "gpt-4o";
      auto plan = std::make_unique<AttemptPlan>(*cfg_, ctx, &registry_, when);
      ASSERT_EQ(plan->next_step(when).kind, Step::Kind::attempt);
      if (cfg_->upstreams[plan->pick().upstream].name == want) {
        plan->decide(outcome, when);
        return;
      }
      plan->decide(answered(200), when);
    }
    FAIL() << "never picked " << want;
  };
  fail_on("west", answered(500), now_);
  EXPECT_EQ(registry_.state(west, "west", now_), BackendState::available);
  fail_on("west", answered(500), now_);
  EXPECT_EQ(registry_.state(west, "west", now_), BackendState::ejected);
  EXPECT_EQ(registry_.state(west, "west", now_ + seconds(29)), BackendState::ejected);
  EXPECT_EQ(registry_.state(west, "west", now_ + seconds(30)), BackendState::available);

  // After 30 s: exactly one request is the probe; another meanwhile goes to east.
  const auto later = now_ + seconds(30);
  std::vector<std::unique_ptr<AttemptPlan>> plans;
  int to_west = 0;
  for (int i = 0; i < 6; ++i) {
    auto& ctx = request("pair-x");
    ctx.model = "gpt-4o";
    plans.push_back(std::make_unique<AttemptPlan>(*cfg_, ctx, &registry_, later));
    ASSERT_EQ(plans.back()->next_step(later).kind, Step::Kind::attempt);
    if (cfg_->upstreams[plans.back()->pick().upstream].name == "west") ++to_west;
  }
  EXPECT_EQ(to_west, 1);
  // The probe fails: out again, for twice as long (60 s).
  for (auto& p : plans) {
    if (cfg_->upstreams[p->pick().upstream].name == "west") p->decide(answered(503), later);
  }
  EXPECT_EQ(registry_.state(west, "west", later + seconds(59)), BackendState::ejected);
  EXPECT_EQ(registry_.state(west, "west", later + seconds(60)), BackendState::available);
}

TEST_F(AttemptPlanTest, ConnectionFailuresEjectEveryDeploymentOfTheHost) {
  for (int i = 0; i < 2; ++i)
    registry_.failure(backend_key("east", "east-4o"), "east", true, 2, now_);
  EXPECT_EQ(registry_.state(backend_key("east", "east-4o"), "east", now_), BackendState::ejected);
  EXPECT_EQ(registry_.state(backend_key("east", "east-mini"), "east", now_), BackendState::ejected);
  EXPECT_EQ(registry_.state(backend_key("west", "west-4o"), "west", now_), BackendState::available);
}

TEST_F(AttemptPlanTest, EveryBackendEjectedAnswers503NoHealthyUpstream) {
  for (std::string up : {"east", "west"}) {
    for (int i = 0; i < 2; ++i) registry_.failure(backend_key(up, up + "-4o"), up, true, 2, now_);
  }
  auto& ctx = request("pair-x");
  ctx.model = "gpt-4o";
  auto plan = plan_for(ctx, &registry_);
  EXPECT_EQ(plan->next_step(now_).kind, Step::Kind::refuse);
  EXPECT_EQ(plan->reply().status, 503u);
  EXPECT_EQ(plan->reply().error_code, "no_healthy_upstream");
}

TEST_F(AttemptPlanTest, ABackendWhoseReportedQuotaCannotFitTheRequestIsSkipped) {
  // east reported 100 tokens left; a request estimated at >= 1024 (default completion tokens)
  // goes to west while the report is fresh, even though east has three times the weight.
  registry_.report(backend_key("east", "east-4o"), 50, 100, now_);
  for (int i = 0; i < 4; ++i) {
    auto& ctx = request("multi-4o");
    ctx.model = "gpt-4o";
    auto plan = plan_for(ctx, &registry_);
    EXPECT_EQ(next(*plan), "west");
    plan->decide(with_quota(200, "90000"), now_);
  }
  // Once west reports too little as well, the lower priority (openai) has headroom.
  registry_.report(backend_key("west", "west-4o"), 50, 200, now_);
  {
    auto& ctx = request("multi-4o");
    ctx.model = "gpt-4o";
    auto plan = plan_for(ctx, &registry_);
    EXPECT_EQ(next(*plan), "openai");
  }
  // A report older than 60 s no longer counts.
  auto& ctx = request("multi-4o");
  ctx.model = "gpt-4o";
  auto plan = std::make_unique<AttemptPlan>(*cfg_, ctx, &registry_, now_ + seconds(61));
  ASSERT_EQ(plan->next_step(now_ + seconds(61)).kind, Step::Kind::attempt);
  EXPECT_NE(cfg_->upstreams[plan->pick().upstream].name, "openai");
}

TEST_F(AttemptPlanTest, WithoutHeadroomAnywhereTheBestBackendIsTriedAnyway) {
  auto& ctx = request("pair-x");
  ctx.model = "gpt-4o";
  registry_.report(backend_key("east", "east-4o"), 10, 5, now_);
  registry_.report(backend_key("west", "west-4o"), 10, 5, now_);
  auto plan = plan_for(ctx, &registry_);
  EXPECT_FALSE(next(*plan).empty());
}

TEST(RetryAfter, AzureHeadersInOrderOfPrecedence) {
  const auto wall = std::chrono::system_clock::from_time_t(784111777);  // 06 Nov 1994 08:49:37
  EXPECT_EQ(retry_after_from("800", "900", "3", wall), milliseconds(800));
  EXPECT_EQ(retry_after_from("", "900", "3", wall), milliseconds(900));
  EXPECT_EQ(retry_after_from("", "", "3", wall), milliseconds(3000));
  EXPECT_EQ(retry_after_from("", "", "Sun, 06 Nov 1994 08:49:47 GMT", wall), milliseconds(10000));
  EXPECT_EQ(retry_after_from("", "", "Sun, 06 Nov 1994 08:49:27 GMT", wall), milliseconds(0));
  EXPECT_EQ(retry_after_from("x", "-5", "soon", wall), std::nullopt);
  EXPECT_EQ(retry_after_from("", "", "", wall), std::nullopt);
  EXPECT_EQ(retry_after_from("99999999999", "", "", wall), milliseconds(3600000));  // capped
}

TEST(TranslateForTarget, AsksForStreamUsageOnlyFromUpstreamsThatAcceptIt) {
  auto cfg = test::load_ok(kYaml);
  ASSERT_TRUE(cfg);
  HeaderList headers;
  headers.set(http::field::content_type, "application/json");
  const std::string body = R"({"model":"gpt-4o","messages":[],"stream":true})";
  RequestContext ctx;
  ctx.config = cfg.get();
  ctx.method = http::verb::post;
  ctx.target = "/v1/chat/completions";
  ctx.path = classify_path(ctx.method, ctx.target);
  ctx.headers = &headers;
  ctx.body = body;
  ctx.body_facts = inspect_body("application/json", body);
  ctx.stream_usage_wanted = true;

  // The same request, translated for two targets: only the one whose api-version takes
  // stream_options gets it (and the response's extra usage chunk is then removed).
  const UpstreamRequest east = translate_for_target(ctx, cfg->upstreams[0], {0, "prod-4o"});
  EXPECT_TRUE(ctx.request_stream_usage);
  ASSERT_TRUE(east.body);
  EXPECT_NE(east.body->find(R"("stream_options":{"include_usage":true})"), std::string::npos);
  EXPECT_EQ(east.target, "/openai/deployments/prod-4o/chat/completions?api-version=2024-10-21");

  const UpstreamRequest old = translate_for_target(ctx, cfg->upstreams[1], {1, "gpt-4o"});
  EXPECT_FALSE(ctx.request_stream_usage);
  EXPECT_TRUE(!old.body || old.body->find("stream_options") == std::string::npos);
  EXPECT_EQ(old.target, "/openai/deployments/gpt-4o/chat/completions?api-version=2024-06-01");

  // Nobody asked: nothing is added anywhere.
  ctx.stream_usage_wanted = false;
  const UpstreamRequest plain = translate_for_target(ctx, cfg->upstreams[0], {0, "prod-4o"});
  EXPECT_FALSE(ctx.request_stream_usage);
  EXPECT_TRUE(!plain.body || plain.body->find("stream_options") == std::string::npos);
}

}  // namespace
}  // namespace llmgw
