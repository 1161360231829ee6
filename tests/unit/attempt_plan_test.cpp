// The router's decisions without its I/O: which target an attempt goes to, what it sends there,
// and what each outcome leads to.
#include <gtest/gtest.h>

#include "llm_gateway/routing/attempt_plan.hpp"
#include "test_support.hpp"

namespace llmgw {
namespace {

namespace http = boost::beast::http;

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
routes:
  - {match: "gpt-4o", upstream: azure}
  - {match: "old-*", upstream: old}
)";

class AttemptPlanTest : public ::testing::Test {
 protected:
  void SetUp() override {
    cfg_ = test::load_ok(kYaml);
    ASSERT_TRUE(cfg_);
    route_ = route_model(*cfg_, "gpt-4o").value();
  }

  static AttemptOutcome failed(std::string_view kind, bool reused, bool safe) {
    AttemptOutcome o;
    o.error_kind = kind;
    o.reused_connection = reused;
    o.safe_to_resend = safe;
    return o;
  }

  std::shared_ptr<const config::Config> cfg_;
  RouteDecision route_;
};

TEST_F(AttemptPlanTest, FirstTargetIsTheRoutesTarget) {
  AttemptPlan plan(*cfg_, route_);
  EXPECT_EQ(plan.pick().upstream, 0u);
  EXPECT_EQ(plan.pick().deployment, "prod-4o");
  EXPECT_FALSE(plan.fresh_connection());
  EXPECT_EQ(plan.attempts(), 0);
}

TEST_F(AttemptPlanTest, AnyResponseHeadIsCommitted) {
  // One target: whatever it answered (429 and 5xx included) is the client's answer.
  for (unsigned status : {200u, 400u, 401u, 429u, 500u, 503u}) {
    AttemptPlan plan(*cfg_, route_);
    AttemptOutcome o;
    o.status = status;
    o.reused_connection = true;
    EXPECT_EQ(plan.decide(o), Next::commit) << status;
    EXPECT_EQ(plan.attempts(), 1);
  }
}

TEST_F(AttemptPlanTest, StaleReusedConnectionIsRetriedOnceOnAFreshOne) {
  AttemptPlan plan(*cfg_, route_);
  EXPECT_EQ(plan.decide(failed("reset", /*reused=*/true, /*safe=*/true)), Next::retry);
  EXPECT_TRUE(plan.fresh_connection());
  EXPECT_EQ(plan.pick().deployment, "prod-4o");  // the same target
  // The fresh connection fails too: that is the client's answer.
  EXPECT_EQ(plan.decide(failed("reset", /*reused=*/false, /*safe=*/true)), Next::give_up);
  EXPECT_EQ(plan.attempts(), 2);
}

TEST_F(AttemptPlanTest, RequestTheUpstreamMayHaveActedOnIsNeverResent) {
  // A POST written whole on a reused connection that then closed: it may have been processed
  // (and billed), so it is not sent again.
  AttemptPlan plan(*cfg_, route_);
  EXPECT_EQ(plan.decide(failed("reset", /*reused=*/true, /*safe=*/false)), Next::give_up);
  EXPECT_FALSE(plan.fresh_connection());
}

TEST_F(AttemptPlanTest, FailureOnANewConnectionIsNotRetried) {
  AttemptPlan plan(*cfg_, route_);
  EXPECT_EQ(plan.decide(failed("connect", /*reused=*/false, /*safe=*/true)), Next::give_up);
}

TEST_F(AttemptPlanTest, TimeoutIsNotRetried) {
  AttemptPlan plan(*cfg_, route_);
  EXPECT_EQ(plan.decide(failed("timeout", /*reused=*/true, /*safe=*/true)), Next::give_up);
}

TEST(TranslateForTarget, AsksForStreamUsageOnlyFromUpstreamsThatAcceptIt) {
  auto cfg = test::load_ok(kYaml);
  ASSERT_TRUE(cfg);
  http::fields headers;
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
