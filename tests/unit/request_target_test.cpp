// Request-target validation (check_request_target), deployment-name validation, and the methods
// each operation accepts: the first checks a request meets, before anything acts on it. Each
// refused target here is one that, unchecked, carried the upstream credential somewhere the
// key's allow-list never saw (issue: security findings 1 and 9).
#include <gtest/gtest.h>

#include <string>
#include <string_view>

#include "llm_gateway/translate/request_facts.hpp"
#include "llm_gateway/translate/request_target.hpp"

namespace llmgw {
namespace {

using boost::beast::http::verb;

void expect_valid(std::string_view target, std::string_view origin) {
  const TargetCheck c = check_request_target(target);
  EXPECT_TRUE(c.error.empty()) << target << ": " << c.error;
  EXPECT_EQ(c.origin, origin) << target;
}

void expect_refused(std::string_view target) {
  const TargetCheck c = check_request_target(target);
  EXPECT_FALSE(c.error.empty()) << target << " was accepted";
}

TEST(RequestTarget, OrdinaryTargetsPassUnchanged) {
  for (std::string_view t :
       {"/v1/chat/completions", "/chat/completions", "/v1/models", "/v1/models/",
        "/v1/files/file-abc123/content", "/v1/models/ft:gpt-4o-mini:org::abc",
        "/openai/deployments/gpt-4o/chat/completions?api-version=2024-10-21",
        "/openai/deployments/my%20deploy/embeddings", "/openai/v1/responses?x=a/b?c",
        "/openai/files?purpose=fine-tune&limit=10", "/", "/healthz", "/v1/threads/t_1/runs/r_1"}) {
    expect_valid(t, t);
  }
}

TEST(RequestTarget, AbsoluteFormUsesThePathAndIgnoresTheHost) {
  expect_valid("http://evil.example:9999/v1/chat/completions", "/v1/chat/completions");
  expect_valid("HTTPS://[::1]:8080/v1/models?limit=1", "/v1/models?limit=1");
  expect_valid("http://evil.example", "/");
  expect_refused("http://evil.example/v1/../x");
  expect_refused("ftp://host/v1/models");
  expect_refused("evil.example:443");
  expect_refused("*");
  expect_refused("http:///v1/models");
  expect_refused("http://ho st/v1/models");
}

TEST(RequestTarget, DotSegmentsInAnySpellingAreRefused) {
  for (std::string_view t :
       {"/openai/deployments/gpt-4o/../secret-deploy/chat/completions",
        "/v1/files/../deployments/secret-deploy/chat/completions", "/v1/../../x",
        "/v1/files/../../../x", "/v1/./models", "/v1/%2e%2e/x", "/v1/%2E./x", "/v1/.%2e/x",
        "/v1/%2e/models", "/v1/models/..", "/..", "/v1/models/.?x=1"}) {
    expect_refused(t);
  }
  // Dots inside a segment are ordinary characters.
  expect_valid("/openai/deployments/gpt-4.1/chat/completions",
               "/openai/deployments/gpt-4.1/chat/completions");
  expect_valid("/v1/files/a..b", "/v1/files/a..b");
  expect_valid("/v1/files/...", "/v1/files/...");
}

TEST(RequestTarget, EncodedSeparatorsAndEmptySegmentsAreRefused) {
  for (std::string_view t :
       {"/openai/deployments/gpt-4o%2f..%2fsecret/chat/completions",
        "/openai/deployments/gpt-4o%2F..%2Fsecret/chat/completions", "/v1/files/a%5cb",
        "/v1/files/a%00b", "/v1/files/a%0ab", "/v1//models", "//v1/models", "/v1/models//"}) {
    expect_refused(t);
  }
}

TEST(RequestTarget, BytesOutsideTheUriGrammarAreRefused) {
  for (std::string_view t : {"/v1/models\xff", "/v1/mo dels", "/v1/models#frag", "/v1/models\"",
                             "/v1/<models>", "/v1/models?q=\x01", "/v1/mod%zzels", "/v1/models%",
                             "/v1/models%4", "/v1/{x}", "/v1/models|x", "/v1/a\\b", ""}) {
    expect_refused(t);
  }
  expect_valid("/v1/files?name=%E2%82%AC", "/v1/files?name=%E2%82%AC");
}

TEST(RequestTarget, DeploymentsOnlyWhereAzurePutsThem) {
  // A resource-level path must never select a deployment (the key's allow-list saw no model).
  for (std::string_view t :
       {"/v1/deployments/secret-deploy/chat/completions", "/deployments/x/chat/completions",
        "/openai/v1/deployments/x/chat/completions", "/openai/Deployments/x/chat/completions",
        "/openai/DEPLOYMENTS/x/chat/completions", "/openai/deployment%73/x/chat/completions",
        "/openai/engines/x/completions", "/v1/engines/x/completions",
        "/openai/deployments/x/deployments/y/chat/completions", "/v1/files/deployments",
        "/openai/deployments", "/openai/deployments/", "/openai/deployments/x",
        "/openai/deployments/x/", "/openai/deployments//chat/completions"}) {
    expect_refused(t);
  }
  expect_valid("/openai/deployments/x/batches", "/openai/deployments/x/batches");
}

TEST(DeploymentName, OnlyPlainNames) {
  for (std::string_view ok : {"gpt-4o", "gpt-4.1-mini", "my_deploy", "a", "GPT4O"})
    EXPECT_TRUE(valid_deployment_name(ok)) << ok;
  for (std::string_view bad :
       {"", ".", "..", "a/b", "../secret", "a%2fb", "a b", "ft:gpt-4o", "gpt-4o?x", "a\\b"})
    EXPECT_FALSE(valid_deployment_name(bad)) << bad;
  EXPECT_TRUE(valid_deployment_name(std::string(300, 'a')));  // length is Azure's business
}

TEST(MethodPolicy, OnlyTheMethodsEachOperationUses) {
  auto allowed = [](verb m, std::string_view target) {
    return method_allowed(m, classify_path(m, target));
  };
  EXPECT_TRUE(allowed(verb::post, "/v1/chat/completions"));
  EXPECT_TRUE(allowed(verb::get, "/v1/chat/completions"));  // stored completions
  EXPECT_FALSE(allowed(verb::delete_, "/v1/chat/completions"));
  EXPECT_TRUE(allowed(verb::post, "/openai/deployments/d/embeddings"));
  EXPECT_FALSE(allowed(verb::get, "/v1/embeddings"));
  EXPECT_FALSE(allowed(verb::put, "/v1/embeddings"));
  EXPECT_TRUE(allowed(verb::get, "/v1/models"));
  EXPECT_TRUE(allowed(verb::delete_, "/v1/models/ft:x"));
  EXPECT_FALSE(allowed(verb::post, "/v1/models"));
  EXPECT_TRUE(allowed(verb::delete_, "/v1/files/file-1"));
  EXPECT_FALSE(allowed(verb::delete_, "/v1/batches/b-1"));
  for (verb m : {verb::connect, verb::trace, verb::options, verb::head, verb::patch, verb::put,
                 verb::unknown}) {
    EXPECT_FALSE(allowed(m, "/v1/chat/completions")) << boost::beast::http::to_string(m);
    EXPECT_FALSE(allowed(m, "/v1/files")) << boost::beast::http::to_string(m);
  }
  EXPECT_EQ(allowed_methods(classify_path(verb::post, "/v1/audio/speech")), "POST");
}

}  // namespace
}  // namespace llmgw
