// Entra ID token requests and answers (no I/O), and the auth section of an upstream.
#include <gtest/gtest.h>

#include "llm_gateway/auth/entra.hpp"
#include "test_support.hpp"

namespace llmgw {
namespace {

using auth::parse_token_response;
using auth::token_request;
namespace http = boost::beast::http;

config::EntraAuth secret_auth() {
  config::EntraAuth a;
  a.mode = config::EntraMode::client_secret;
  a.tenant_id = "contoso.onmicrosoft.com";
  a.client_id = "app-1";
  a.client_secret = "s3cr&t=+";
  return a;
}

TEST(EntraRequest, ClientSecretIsTheClientCredentialsGrant) {
  const auto r = token_request(secret_auth(), "");
  EXPECT_EQ(r.method, http::verb::post);
  EXPECT_EQ(r.url, "https://login.microsoftonline.com/contoso.onmicrosoft.com/oauth2/v2.0/token");
  EXPECT_EQ(r.body,
            "grant_type=client_credentials&client_id=app-1&scope=https%3A%2F%2Fcognitiveservices."
            "azure.com%2F.default&client_secret=s3cr%26t%3D%2B");
  EXPECT_EQ(r.endpoint, r.url);
  EXPECT_EQ(r.endpoint.find("s3cr"), std::string::npos);
}

TEST(EntraRequest, WorkloadIdentitySendsTheFederatedAssertion) {
  auto a = secret_auth();
  a.mode = config::EntraMode::workload_identity;
  a.client_secret.clear();
  const auto r = token_request(a, "eyJhbGc.payload.sig");
  EXPECT_NE(r.body.find("&client_assertion_type=urn%3Aietf%3Aparams%3Aoauth%3Aclient-assertion-"
                        "type%3Ajwt-bearer&client_assertion=eyJhbGc.payload.sig"),
            std::string::npos);
  EXPECT_EQ(r.body.find("client_secret"), std::string::npos);
}

TEST(EntraRequest, ManagedIdentityImdsAndAppService) {
  config::EntraAuth a;
  a.mode = config::EntraMode::managed_identity;
  auto imds = token_request(a, "");
  EXPECT_EQ(imds.method, http::verb::get);
  EXPECT_EQ(imds.url,
            "http://169.254.169.254/metadata/identity/oauth2/token?api-version=2018-02-01&"
            "resource=https%3A%2F%2Fcognitiveservices.azure.com");
  EXPECT_EQ(imds.headers, (std::vector<std::pair<std::string, std::string>>{{"metadata", "true"}}));
  EXPECT_EQ(imds.endpoint, "http://169.254.169.254/metadata/identity/oauth2/token");
  a.client_id = "user-1";
  a.identity_endpoint = "http://localhost:42356/msi/token";
  a.identity_header = "hdr";
  auto app = token_request(a, "");
  EXPECT_EQ(app.url,
            "http://localhost:42356/msi/token?api-version=2019-08-01&resource=https%3A%2F%2F"
            "cognitiveservices.azure.com&client_id=user-1");
  EXPECT_EQ(app.headers,
            (std::vector<std::pair<std::string, std::string>>{{"x-identity-header", "hdr"}}));
}

TEST(EntraAnswer, EveryShapeOfLifetime) {
  const auto now = std::chrono::system_clock::from_time_t(1700000000);
  auto v2 = parse_token_response(
      200, R"({"token_type":"Bearer","expires_in":3599,"access_token":"a"})", now);
  EXPECT_EQ(v2.access_token, "a");
  EXPECT_EQ(v2.lifetime.count(), 3599);
  auto imds = parse_token_response(
      200, R"({"access_token":"b","expires_in":"3600","expires_on":"1700003600"})", now);
  EXPECT_EQ(imds.lifetime.count(), 3600);
  auto app = parse_token_response(200, R"({"access_token":"c","expires_on":"1700000600"})", now);
  EXPECT_EQ(app.lifetime.count(), 600);
  // Numbers no lifetime can be: refused, not converted (a double outside int64 is undefined
  // behaviour; the fuzzer found 3.8e76, UBSan builds catch the old conversion).
  for (const char* huge : {"3.7777e76", "-3.7e76", "18446744073709551615", "9.3e18"}) {
    auto r = parse_token_response(
        200, std::string(R"({"access_token":"d","expires_in":)") + huge + "}", now);
    EXPECT_TRUE(r.access_token.empty()) << huge;
    EXPECT_NE(r.error.find("expires_in"), std::string::npos) << huge;
  }
  EXPECT_EQ(
      parse_token_response(200, R"({"access_token":"e","expires_in":59.9})", now).lifetime.count(),
      59);
}

TEST(EntraAnswer, FailuresNameTheErrorAndCodeButNotTheDescription) {
  const auto now = std::chrono::system_clock::now();
  auto bad = parse_token_response(
      401,
      R"({"error":"invalid_client","error_description":"AADSTS7000215: Invalid client secret provided. Ensure the secret being sent is 'abc'","error_codes":[7000215]})",
      now);
  EXPECT_TRUE(bad.access_token.empty());
  EXPECT_EQ(bad.error, "HTTP 401, invalid_client (AADSTS7000215)");
  EXPECT_EQ(parse_token_response(500, "oops", now).error, "HTTP 500");
  EXPECT_FALSE(parse_token_response(200, "not json", now).error.empty());
  EXPECT_FALSE(parse_token_response(200, R"({"access_token":""})", now).error.empty());
  EXPECT_FALSE(parse_token_response(200, R"({"access_token":"x"})", now).error.empty());
  EXPECT_FALSE(
      parse_token_response(200, R"({"access_token":"x","expires_in":-5})", now).error.empty());
  EXPECT_FALSE(parse_token_response(200, std::string(70000, ' '), now).error.empty());
}

// The token goes into every upstream request's Authorization field: one that could break out of
// it (CR, LF, a space, a quote) is refused, and the answer is not quoted in the error.
TEST(EntraAnswer, ATokenThatIsNotABearerTokenIsRefused) {
  const auto now = std::chrono::system_clock::from_time_t(1700000000);
  const auto answer = [&](std::string_view token) {
    return parse_token_response(
        200, R"({"expires_in":3599,"access_token":")" + std::string(token) + R"("})", now);
  };
  // As JSON text: the answer's string escapes decode to CR, LF, NUL, a quote.
  for (std::string_view bad :
       {"eyJ0\\r\\nx-injected: 1", "a\\nb", "a b", "a\\\"b", "=abc", "abc=d", "a\\u0000b", "a,b"}) {
    const auth::TokenResult r = answer(bad);
    EXPECT_TRUE(r.access_token.empty()) << bad;
    EXPECT_NE(r.error.find("b64token"), std::string::npos) << bad;
    EXPECT_EQ(r.error.find("injected"), std::string::npos) << bad;
  }
  const std::string jwt = "eyJhbGciOiJSUzI1NiJ9.eyJhdWQiOiJjb2duaXRpdmVzZXJ2aWNlcyJ9.c2ln-_~+/==";
  EXPECT_EQ(answer(jwt).access_token, jwt);
}

TEST(EntraConfig, ModesDefaultsAndEnvironment) {
  const auto env = test::fake_env({{"AZURE_TENANT_ID", "env-tenant"},
                                   {"AZURE_CLIENT_ID", "env-client"},
                                   {"AZURE_AUTHORITY_HOST", "https://login.microsoftonline.us/"},
                                   {"AZURE_FEDERATED_TOKEN_FILE", "/var/run/token"}});
  auto cfg = test::load_ok(R"(upstreams:
  a:
    provider: azure
    base_url: "https://a.openai.azure.com"
    auth: {type: entra, mode: client_secret, tenant_id: t, client_id: c, client_secret: s}
  w:
    provider: azure
    base_url: "https://w.openai.azure.com"
    auth: {type: entra, mode: workload_identity, client_id: from-config}
  m:
    provider: azure
    base_url: "https://m.openai.azure.com"
    auth: {type: entra, mode: managed_identity, scope: "https://ai.azure.com/.default"}
routes: [{match: "*", upstream: a}]
keys: [{name: k, key: sk-kkkkkkkkkkkkkkkkkk}]
)",
                           env);
  ASSERT_TRUE(cfg);
  const auto& a = *cfg->upstreams[0].entra;
  EXPECT_EQ(a.authority_host, "https://login.microsoftonline.com");
  EXPECT_EQ(a.scope, "https://cognitiveservices.azure.com/.default");
  const auto& w = *cfg->upstreams[1].entra;
  EXPECT_EQ(w.tenant_id, "env-tenant");
  EXPECT_EQ(w.client_id, "from-config");  // the configuration overrides the environment
  EXPECT_EQ(w.authority_host, "https://login.microsoftonline.us");  // trailing slash dropped
  EXPECT_EQ(w.federated_token_file, "/var/run/token");
  const auto& m = *cfg->upstreams[2].entra;
  EXPECT_EQ(m.endpoint, "http://169.254.169.254");
  EXPECT_EQ(m.scope, "https://ai.azure.com/.default");
  EXPECT_NE(a.identity(), w.identity());
}

TEST(EntraConfig, Problems) {
  struct Case {
    std::string auth;
    std::string expected;
  } cases[] = {
      {"{type: entra, mode: client_secret, tenant_id: t, client_id: c}",
       "client_secret is required"},
      {"{type: entra, mode: workload_identity, tenant_id: t, client_id: c}",
       "AZURE_FEDERATED_TOKEN_FILE"},
      {"{type: entra, mode: magic}", "mode must be client_secret"},
      {"{type: oauth}", "type must be api_key or entra"},
      {"{type: api_key, tenant_id: t}", "only applies to auth.type entra"},
      {"{type: entra, mode: managed_identity, endpoint: 'ftp://x'}",
       "must be an http:// or https:// URL"},
  };
  for (const auto& c : cases) {
    const std::string yaml =
        "upstreams:\n  a:\n    provider: azure\n    base_url: https://a.openai.azure.com\n    "
        "auth: " +
        c.auth + "\nroutes: [{match: '*', upstream: a}]\n";
    const auto r = config::load_config_text(yaml, "t.yaml", test::fake_env());
    ASSERT_FALSE(r.problems.empty()) << c.auth;
    EXPECT_NE(test::problems_text(r).find(c.expected), std::string::npos) << c.auth << "\n"
                                                                          << test::problems_text(r);
  }
}

}  // namespace
}  // namespace llmgw
