// Routing: glob matching of model names, and the router built on it (route_model, route_default,
// deployment_for, listed_models).
#include <gtest/gtest.h>

#include <string>
#include <vector>

#include "llm_gateway/routing/glob.hpp"
#include "llm_gateway/routing/router.hpp"
#include "test_support.hpp"

namespace llmgw {
namespace {

using test::load_ok;

// ---------------------------------------------------------------------------------------------
// glob_match
// ---------------------------------------------------------------------------------------------

TEST(GlobMatch, StarAloneMatchesEverythingIncludingSlashAndEmpty) {
  EXPECT_TRUE(glob_match("*", "gpt-4o"));
  EXPECT_TRUE(glob_match("*", "org/model"));
  EXPECT_TRUE(glob_match("*", "a/b/c"));
  EXPECT_TRUE(glob_match("*", ""));
}

TEST(GlobMatch, StarMatchesAcrossSlashInsideAPattern) {
  EXPECT_TRUE(glob_match("org/*", "org/a/b"));
  EXPECT_TRUE(glob_match("*/model", "org/team/model"));
  EXPECT_FALSE(glob_match("org/*", "other/a"));
}

TEST(GlobMatch, QuestionMarkMatchesExactlyOneCharacter) {
  EXPECT_TRUE(glob_match("gpt-?", "gpt-4"));
  EXPECT_TRUE(glob_match("?", "/"));
  EXPECT_FALSE(glob_match("gpt-?", "gpt-"));
  EXPECT_FALSE(glob_match("gpt-?", "gpt-40"));
  EXPECT_FALSE(glob_match("?", ""));
}

TEST(GlobMatch, LiteralPatternMatchesOnlyTheSameText) {
  EXPECT_TRUE(glob_match("gpt-4o", "gpt-4o"));
  EXPECT_FALSE(glob_match("gpt-4o", "gpt-4o-mini"));
  EXPECT_FALSE(glob_match("gpt-4o", "gpt-4"));
  EXPECT_FALSE(glob_match("gpt-4o", "xgpt-4o"));
}

TEST(GlobMatch, MatchingIsCaseSensitive) {
  EXPECT_FALSE(glob_match("GPT-4o", "gpt-4o"));
  EXPECT_FALSE(glob_match("gpt-*", "GPT-4o"));
}

TEST(GlobMatch, EmptyPatternMatchesOnlyEmptyText) {
  EXPECT_TRUE(glob_match("", ""));
  EXPECT_FALSE(glob_match("", "a"));
  EXPECT_FALSE(glob_match("a", ""));
}

TEST(GlobMatch, TrailingStarMatchesPrefixAndTheBareStem) {
  EXPECT_TRUE(glob_match("gpt-4o*", "gpt-4o-mini"));
  EXPECT_TRUE(glob_match("gpt-4o*", "gpt-4o"));
  EXPECT_FALSE(glob_match("gpt-4o*", "gpt-4"));
  EXPECT_FALSE(glob_match("gpt-4o*", "my-gpt-4o"));
}

TEST(GlobMatch, LeadingStarMatchesSuffix) {
  EXPECT_TRUE(glob_match("*-mini", "gpt-4o-mini"));
  EXPECT_TRUE(glob_match("*-mini", "-mini"));
  EXPECT_FALSE(glob_match("*-mini", "gpt-4o-mini-2024"));
}

TEST(GlobMatch, MultipleStarsBacktrack) {
  EXPECT_TRUE(glob_match("a*b*c", "axxbyyc"));
  EXPECT_TRUE(glob_match("a*b*c", "abc"));
  EXPECT_TRUE(glob_match("a*b*c", "abcbc"));
  EXPECT_TRUE(glob_match("a*b*c", "abbbcxc"));
  EXPECT_FALSE(glob_match("a*b*c", "acb"));
  EXPECT_FALSE(glob_match("a*b*c", "axxbyycd"));
  EXPECT_TRUE(glob_match("*a*a*", "banana"));
  EXPECT_TRUE(glob_match("a*ab", "aaaab"));
  EXPECT_FALSE(glob_match("a*ab", "aaaba"));
}

TEST(GlobMatch, ConsecutiveStarsActLikeOne) {
  EXPECT_TRUE(glob_match("a**b", "ab"));
  EXPECT_TRUE(glob_match("a**b", "axyb"));
  EXPECT_TRUE(glob_match("**", ""));
}

TEST(GlobMatch, StarsAndQuestionMarksCombine) {
  EXPECT_FALSE(glob_match("*?", ""));
  EXPECT_TRUE(glob_match("*?", "a"));
  EXPECT_TRUE(glob_match("?*?", "ab"));
  EXPECT_FALSE(glob_match("?*?", "a"));
  EXPECT_TRUE(glob_match("gpt-?o*", "gpt-4o-mini"));
}

// A '*' in the pattern is always a wildcard, also where the text has a literal '*'.
TEST(GlobMatch, PatternStarFacingLiteralStarInTextStillActsAsWildcard) {
  EXPECT_TRUE(glob_match("*a", "*xa"));
  EXPECT_TRUE(glob_match("gpt*", "gpt*x"));
  EXPECT_TRUE(glob_match("a*c", "a*bc"));
}

TEST(GlobIsLiteral, TrueOnlyWithoutWildcards) {
  EXPECT_TRUE(glob_is_literal("gpt-4o"));
  EXPECT_TRUE(glob_is_literal("org/model-1.5"));
  EXPECT_TRUE(glob_is_literal(""));
  EXPECT_FALSE(glob_is_literal("*"));
  EXPECT_FALSE(glob_is_literal("gpt-4o*"));
  EXPECT_FALSE(glob_is_literal("gpt-?"));
}

// ---------------------------------------------------------------------------------------------
// Router
// ---------------------------------------------------------------------------------------------

// Two Azure upstreams and OpenAI as the catch-all. `west` also maps gpt-4o, but the earlier
// gpt-4o* route sends that model to `east`, so west's gpt-4o key is shadowed.
constexpr std::string_view kRoutingYaml = R"(
upstreams:
  east:
    provider: azure
    base_url: https://east.openai.azure.com
    api_key: K
    deployments:
      gpt-4o: gpt4o-prod
      gpt-4o-mini: mini-prod
  west:
    provider: azure
    base_url: https://west.openai.azure.com
    strip_dots: true
    deployments:
      gpt-4o: shadowed
      o3: o3-west
      text-embedding-3-small: emb-west
  openai:
    provider: openai
    base_url: https://api.openai.com
routes:
  - {match: "gpt-4o*", upstream: east}
  - {match: "o3", upstream: west}
  - {match: "gpt-3.5*", upstream: west}
  - {match: "dall-e-3", upstream: openai}
  - {match: "*", upstream: openai}
)";

constexpr std::size_t kEast = 0;
constexpr std::size_t kWest = 1;
constexpr std::size_t kOpenAI = 2;

TEST(RouteModel, FirstMatchingRouteWins) {
  auto cfg = load_ok(kRoutingYaml);
  ASSERT_TRUE(cfg);
  auto d = route_model(*cfg, "gpt-4o");
  ASSERT_TRUE(d);
  EXPECT_EQ(d->route, 0u);
  EXPECT_EQ(d->upstream, kEast);
  EXPECT_EQ(d->deployment, "gpt4o-prod");  // east's mapping, not west's
}

TEST(RouteModel, UsesTheMatchedUpstreamsDeploymentMapping) {
  auto cfg = load_ok(kRoutingYaml);
  ASSERT_TRUE(cfg);
  auto mini = route_model(*cfg, "gpt-4o-mini");
  ASSERT_TRUE(mini);
  EXPECT_EQ(mini->upstream, kEast);
  EXPECT_EQ(mini->deployment, "mini-prod");

  auto o3 = route_model(*cfg, "o3");
  ASSERT_TRUE(o3);
  EXPECT_EQ(o3->route, 1u);
  EXPECT_EQ(o3->upstream, kWest);
  EXPECT_EQ(o3->deployment, "o3-west");
}

TEST(RouteModel, UnmappedModelOnStripDotsUpstreamLosesItsDots) {
  auto cfg = load_ok(kRoutingYaml);
  ASSERT_TRUE(cfg);
  auto d = route_model(*cfg, "gpt-3.5-turbo");
  ASSERT_TRUE(d);
  EXPECT_EQ(d->route, 2u);
  EXPECT_EQ(d->upstream, kWest);
  EXPECT_EQ(d->deployment, "gpt-35-turbo");
}

TEST(RouteModel, OpenAIUpstreamGetsNoDeployment) {
  auto cfg = load_ok(kRoutingYaml);
  ASSERT_TRUE(cfg);
  auto d = route_model(*cfg, "claude-3");
  ASSERT_TRUE(d);
  EXPECT_EQ(d->route, 4u);
  EXPECT_EQ(d->upstream, kOpenAI);
  EXPECT_EQ(d->deployment, "");
}

TEST(RouteModel, NoMatchingRouteGivesNullopt) {
  auto cfg = load_ok(R"(
upstreams:
  a: {provider: openai, base_url: "https://api.openai.com"}
routes:
  - {match: "gpt-*", upstream: a}
)");
  ASSERT_TRUE(cfg);
  EXPECT_FALSE(route_model(*cfg, "o3"));
  EXPECT_TRUE(route_model(*cfg, "gpt-4o"));
}

TEST(RouteDefault, PicksFirstRouteWhoseMatchIsExactlyStar) {
  // "**" matches every model too, but only a literal "*" makes a route the default.
  auto cfg = load_ok(R"(
upstreams:
  a: {provider: openai, base_url: "https://a.example.com"}
  b: {provider: azure, base_url: "https://b.openai.azure.com"}
  c: {provider: openai, base_url: "https://c.example.com"}
routes:
  - {match: "gpt-*", upstream: a}
  - {match: "**", upstream: a}
  - {match: "*", upstream: b}
  - {match: "*", upstream: c}
)");
  ASSERT_TRUE(cfg);
  auto d = route_default(*cfg);
  ASSERT_TRUE(d);
  EXPECT_EQ(d->route, 2u);
  EXPECT_EQ(d->upstream, 1u);
  EXPECT_EQ(d->deployment, "");  // no model, so no deployment even for azure
}

TEST(RouteDefault, NoStarRouteGivesNullopt) {
  auto cfg = load_ok(R"(
upstreams:
  a: {provider: openai, base_url: "https://a.example.com"}
routes:
  - {match: "gpt-*", upstream: a}
  - {match: "**", upstream: a}
)");
  ASSERT_TRUE(cfg);
  EXPECT_FALSE(route_default(*cfg));
}

config::Upstream azure_upstream_with(std::vector<std::pair<std::string, std::string>> deployments,
                                     bool strip_dots) {
  config::Upstream u;
  u.provider = config::Provider::azure;
  u.deployments = std::move(deployments);
  u.strip_dots = strip_dots;
  return u;
}

TEST(DeploymentFor, MappedModelUsesTheMapping) {
  auto u = azure_upstream_with({{"gpt-4o", "prod-4o"}}, false);
  EXPECT_EQ(deployment_for(u, "gpt-4o"), "prod-4o");
}

TEST(DeploymentFor, UnmappedModelPassesThrough) {
  auto u = azure_upstream_with({{"gpt-4o", "prod-4o"}}, false);
  EXPECT_EQ(deployment_for(u, "gpt-4o-mini"), "gpt-4o-mini");
}

TEST(DeploymentFor, DotsAreKeptByDefault) {
  auto u = azure_upstream_with({}, false);
  EXPECT_EQ(deployment_for(u, "gpt-3.5-turbo"), "gpt-3.5-turbo");
}

TEST(DeploymentFor, StripDotsRemovesDotsFromUnmappedModels) {
  auto u = azure_upstream_with({}, true);
  EXPECT_EQ(deployment_for(u, "gpt-3.5-turbo"), "gpt-35-turbo");
}

TEST(DeploymentFor, StripDotsDoesNotTouchAMappedDeployment) {
  auto u = azure_upstream_with({{"gpt-3.5-turbo", "legacy.v1"}}, true);
  EXPECT_EQ(deployment_for(u, "gpt-3.5-turbo"), "legacy.v1");
}

TEST(ListedModels, ListsRoutedDeploymentKeysThenLiteralRoutesDeduplicatedInOrder) {
  auto cfg = load_ok(kRoutingYaml);
  ASSERT_TRUE(cfg);
  // east: gpt-4o, gpt-4o-mini. west: gpt-4o is shadowed by east's route, o3 routes to west,
  // text-embedding-3-small routes to openai via "*". Literal routes: o3 (dup), dall-e-3.
  EXPECT_EQ(listed_models(*cfg),
            (std::vector<std::string>{"gpt-4o", "gpt-4o-mini", "o3", "dall-e-3"}));
}

TEST(ListedModels, ShadowedDeploymentKeyIsNotListed) {
  auto cfg = load_ok(R"(
upstreams:
  first:
    provider: azure
    base_url: https://first.openai.azure.com
  second:
    provider: azure
    base_url: https://second.openai.azure.com
    deployments:
      gpt-4o: d1
routes:
  - {match: "gpt-*", upstream: first}
  - {match: "*", upstream: second}
)");
  ASSERT_TRUE(cfg);
  EXPECT_TRUE(listed_models(*cfg).empty());
}

TEST(ListedModels, KeyThatNoRouteMatchesIsNotListed) {
  auto cfg = load_ok(R"(
upstreams:
  a:
    provider: azure
    base_url: https://a.openai.azure.com
    deployments:
      gpt-4o: d1
      o1: d2
routes:
  - {match: "gpt-*", upstream: a}
)");
  ASSERT_TRUE(cfg);
  EXPECT_EQ(listed_models(*cfg), (std::vector<std::string>{"gpt-4o"}));
}

TEST(ListedModels, WildcardRoutesAreNotListed) {
  auto cfg = load_ok(R"(
upstreams:
  a: {provider: openai, base_url: "https://api.openai.com"}
routes:
  - {match: "gpt-?", upstream: a}
  - {match: "o1*", upstream: a}
  - {match: "whisper-1", upstream: a}
  - {match: "*", upstream: a}
)");
  ASSERT_TRUE(cfg);
  EXPECT_EQ(listed_models(*cfg), (std::vector<std::string>{"whisper-1"}));
}

}  // namespace
}  // namespace llmgw
