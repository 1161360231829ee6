// Configuration: ${VAR} expansion, the YAML loader (fields, defaults, positioned errors),
// format_problem and the embedded default configuration.
#include <gtest/gtest.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/x509.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include "llm_gateway/config/env_expand.hpp"
#include "llm_gateway/config/loader.hpp"
#include "test_support.hpp"

namespace llmgw::config {
namespace {

using test::fake_env;
using test::load_ok;
using test::problems_text;
using namespace std::chrono_literals;

// ---------------------------------------------------------------------------------------------
// expand_env
// ---------------------------------------------------------------------------------------------

const EnvLookup& sample_env() {
  static const EnvLookup env =
      fake_env({{"HOST", "example.com"}, {"PORT", "8443"}, {"EMPTY", ""}, {"TRICKY", "${HOST}"}});
  return env;
}

ExpandResult expand(std::string_view text) {
  return expand_env(text, sample_env());
}

TEST(ExpandEnv, TextWithoutReferencesIsUnchanged) {
  auto r = expand("plain $text {with} $braces$");
  EXPECT_EQ(r.error, "");
  EXPECT_EQ(r.value, "plain $text {with} $braces$");
}

TEST(ExpandEnv, EmptyTextGivesEmptyValue) {
  auto r = expand("");
  EXPECT_EQ(r.error, "");
  EXPECT_EQ(r.value, "");
}

TEST(ExpandEnv, ReplacesASetVariable) {
  auto r = expand("https://${HOST}/x");
  EXPECT_EQ(r.error, "");
  EXPECT_EQ(r.value, "https://example.com/x");
}

TEST(ExpandEnv, SetButEmptyVariableExpandsToEmpty) {
  auto r = expand("[${EMPTY}]");
  EXPECT_EQ(r.error, "");
  EXPECT_EQ(r.value, "[]");
}

TEST(ExpandEnv, ColonDashDefaultIsUsedWhenUnset) {
  auto r = expand("${NOPE:-fallback}");
  EXPECT_EQ(r.error, "");
  EXPECT_EQ(r.value, "fallback");
}

TEST(ExpandEnv, ColonDashDefaultIsUsedWhenEmpty) {
  auto r = expand("${EMPTY:-fallback}");
  EXPECT_EQ(r.error, "");
  EXPECT_EQ(r.value, "fallback");
}

TEST(ExpandEnv, ColonDashDefaultIsIgnoredWhenSet) {
  auto r = expand("${HOST:-fallback}");
  EXPECT_EQ(r.error, "");
  EXPECT_EQ(r.value, "example.com");
}

TEST(ExpandEnv, ColonDashDefaultMayBeEmptyAndContainDashes) {
  EXPECT_EQ(expand("[${NOPE:-}]").value, "[]");
  EXPECT_EQ(expand("${NOPE:-a-b-c}").value, "a-b-c");
  EXPECT_EQ(expand("${NOPE:-127.0.0.1:8080}").value, "127.0.0.1:8080");
}

TEST(ExpandEnv, DashDefaultIsUsedOnlyWhenUnset) {
  EXPECT_EQ(expand("${NOPE-fallback}").value, "fallback");
  EXPECT_EQ(expand("[${EMPTY-fallback}]").value, "[]");
  EXPECT_EQ(expand("${HOST-fallback}").value, "example.com");
}

// The operator is the text right after the name, so in `${A-x:-y}` the ":-" belongs to the default:
// as in Docker Compose, A unset -> "x:-y".
TEST(ExpandEnv, DashDefaultMayContainColonDash) {
  auto r = expand("${NOPE-x:-y}");
  EXPECT_EQ(r.error, "");
  EXPECT_EQ(r.value, "x:-y");
}

TEST(ExpandEnv, UnsetVariableWithoutDefaultIsAnErrorNamingIt) {
  auto r = expand("key-${MISSING_KEY}");
  EXPECT_NE(r.error, "");
  EXPECT_NE(r.error.find("MISSING_KEY"), std::string::npos) << r.error;
}

TEST(ExpandEnv, DoubleDollarBraceIsALiteralDollarBrace) {
  auto r = expand("$${HOST} and $${NOPE}");
  EXPECT_EQ(r.error, "");
  EXPECT_EQ(r.value, "${HOST} and ${NOPE}");
}

TEST(ExpandEnv, UnterminatedReferenceIsAnError) {
  auto r = expand("https://${HOST");
  EXPECT_NE(r.error, "");
  EXPECT_NE(r.error.find("unterminated"), std::string::npos) << r.error;
}

TEST(ExpandEnv, InvalidVariableNamesAreErrors) {
  for (std::string_view text : {"${}", "${1ABC}", "${A B}", "${A.B}", "${:-x}", "${A:x}"}) {
    auto r = expand(text);
    EXPECT_NE(r.error, "") << text << " expanded to '" << r.value << "'";
  }
}

TEST(ExpandEnv, NamesMayHaveUnderscoresAndDigitsAfterTheFirstCharacter) {
  auto env = fake_env({{"_A1_b2", "ok"}});
  auto r = expand_env("${_A1_b2}", env);
  EXPECT_EQ(r.error, "");
  EXPECT_EQ(r.value, "ok");
}

TEST(ExpandEnv, SeveralReferencesInOneString) {
  auto r = expand("https://${HOST}:${PORT}/${NOPE:-v1}");
  EXPECT_EQ(r.error, "");
  EXPECT_EQ(r.value, "https://example.com:8443/v1");
}

TEST(ExpandEnv, ValueContainingDollarBraceIsNotExpandedAgain) {
  auto r = expand("${TRICKY}");
  EXPECT_EQ(r.error, "");
  EXPECT_EQ(r.value, "${HOST}");
}

// ---------------------------------------------------------------------------------------------
// Loader: a full valid configuration
// ---------------------------------------------------------------------------------------------

class FullConfig : public ::testing::Test {
 protected:
  void SetUp() override {
    // One file per process: ctest runs tests in parallel processes.
    ca_path_ = std::filesystem::path(::testing::TempDir()) /
               ("llmgw_config_test_ca_" + std::to_string(::getpid()) + ".pem");
    std::ofstream(ca_path_) << "-----BEGIN CERTIFICATE-----\n";
    const std::string yaml = R"(server:
  listen: "${LISTEN}"
  max_body_bytes: 1048576
  max_header_bytes: 32768
  threads: 4
  drain_timeout_ms: 5000
admin:
  listen: "[::1]:9901"
upstreams:
  azure-east:
    provider: azure
    base_url: "https://contoso.openai.azure.com/"
    api_style: v1
    api_version: "2025-01-01-preview"
    api_versions:
      responses: "2025-04-01-preview"
      embeddings: "2024-06-01"
    api_key: "${AZURE_KEY}"
    deployments:
      gpt-4o: gpt4o-prod
      "gpt-3.5-turbo": gpt35
    strip_dots: true
    ca_file: ")" + ca_path_.string() +
                             R"("
    connect_timeout_ms: 2500
    timeout_ms: 120000
  local:
    provider: openai
    base_url: "http://10.1.2.3:8000/proxy/v1/"
    api_key: "sk-$${literal}"
routes:
  - match: "gpt-*"
    upstream: azure-east
  - {match: "*", upstream: local}
)";
    cfg_ = load_ok(yaml, fake_env({{"LISTEN", "0.0.0.0:9090"}, {"AZURE_KEY", "secret-key"}}));
    ASSERT_NE(cfg_, nullptr);
  }
  void TearDown() override { std::filesystem::remove(ca_path_); }

  const Upstream& azure() const { return cfg_->upstreams.at(0); }
  const Upstream& local() const { return cfg_->upstreams.at(1); }

  std::filesystem::path ca_path_;
  std::shared_ptr<const Config> cfg_;
};

TEST_F(FullConfig, SourceNameIsKept) {
  EXPECT_EQ(cfg_->source, "test.yaml");
}

TEST_F(FullConfig, ServerSettings) {
  EXPECT_EQ(cfg_->server.listen.host, "0.0.0.0");
  EXPECT_EQ(cfg_->server.listen.port, 9090);
  EXPECT_EQ(cfg_->server.listen.to_string(), "0.0.0.0:9090");
  EXPECT_EQ(cfg_->server.max_body_bytes, 1048576u);
  EXPECT_EQ(cfg_->server.max_header_bytes, 32768u);
  EXPECT_EQ(cfg_->server.threads, 4u);
  EXPECT_EQ(cfg_->server.drain_timeout, 5000ms);
}

TEST_F(FullConfig, AdminListenOnIPv6) {
  ASSERT_TRUE(cfg_->admin);
  EXPECT_EQ(cfg_->admin->listen.host, "::1");
  EXPECT_EQ(cfg_->admin->listen.port, 9901);
  EXPECT_EQ(cfg_->admin->listen.to_string(), "[::1]:9901");
}

TEST_F(FullConfig, UpstreamsKeepTheirOrderAndNames) {
  ASSERT_EQ(cfg_->upstreams.size(), 2u);
  EXPECT_EQ(azure().name, "azure-east");
  EXPECT_EQ(local().name, "local");
}

TEST_F(FullConfig, AzureUpstreamBaseUrl) {
  const BaseUrl& b = azure().base;
  EXPECT_TRUE(b.tls);
  EXPECT_EQ(b.host, "contoso.openai.azure.com");
  EXPECT_EQ(b.port, 443);
  EXPECT_EQ(b.path_prefix, "");  // the trailing slash is dropped
  EXPECT_EQ(b.host_header, "contoso.openai.azure.com");
  EXPECT_FALSE(b.host_is_ip);
}

TEST_F(FullConfig, AzureUpstreamSettings) {
  const Upstream& u = azure();
  EXPECT_EQ(u.provider, Provider::azure);
  EXPECT_EQ(u.api_style, ApiStyle::v1);
  EXPECT_EQ(u.api_version, "2025-01-01-preview");
  EXPECT_EQ(u.api_versions,
            (std::map<Endpoint, std::string>{{Endpoint::responses, "2025-04-01-preview"},
                                             {Endpoint::embeddings, "2024-06-01"}}));
  EXPECT_EQ(u.api_key, "secret-key");
  EXPECT_EQ(u.deployments, (std::vector<std::pair<std::string, std::string>>{
                               {"gpt-4o", "gpt4o-prod"}, {"gpt-3.5-turbo", "gpt35"}}));
  EXPECT_TRUE(u.strip_dots);
  EXPECT_EQ(u.ca_file, ca_path_.string());
  EXPECT_EQ(u.connect_timeout, 2500ms);
  EXPECT_EQ(u.timeout, 120000ms);
}

TEST_F(FullConfig, UpstreamDeploymentLookup) {
  ASSERT_NE(azure().deployment_for("gpt-4o"), nullptr);
  EXPECT_EQ(*azure().deployment_for("gpt-4o"), "gpt4o-prod");
  EXPECT_EQ(azure().deployment_for("o3"), nullptr);
}

TEST_F(FullConfig, OpenAIUpstreamOnIpWithPortAndPrefix) {
  const Upstream& u = local();
  EXPECT_EQ(u.provider, Provider::openai);
  EXPECT_FALSE(u.base.tls);
  EXPECT_EQ(u.base.host, "10.1.2.3");
  EXPECT_EQ(u.base.port, 8000);
  EXPECT_EQ(u.base.path_prefix, "/proxy/v1");
  EXPECT_EQ(u.base.host_header, "10.1.2.3:8000");
  EXPECT_TRUE(u.base.host_is_ip);
  EXPECT_EQ(u.api_key, "sk-${literal}");
}

TEST_F(FullConfig, RoutesReferToUpstreamIndexes) {
  ASSERT_EQ(cfg_->routes.size(), 2u);
  EXPECT_EQ(cfg_->routes[0].match, "gpt-*");
  EXPECT_EQ(cfg_->routes[0].upstream, 0u);
  EXPECT_EQ(cfg_->routes[1].match, "*");
  EXPECT_EQ(cfg_->routes[1].upstream, 1u);
}

// ---------------------------------------------------------------------------------------------
// Loader: defaults and value forms
// ---------------------------------------------------------------------------------------------

constexpr std::string_view kMinimalYaml = R"(upstreams:
  a:
    provider: azure
    base_url: https://contoso.openai.azure.com
routes:
  - {match: "*", upstream: a}
)";

TEST(LoaderDefaults, ServerDefaults) {
  auto cfg = load_ok(kMinimalYaml);
  ASSERT_TRUE(cfg);
  EXPECT_EQ(cfg->server.listen.to_string(), "127.0.0.1:8080");
  EXPECT_EQ(cfg->server.max_body_bytes, 25ull * 1024 * 1024);
  EXPECT_EQ(cfg->server.max_header_bytes, 16384u);
  EXPECT_EQ(cfg->server.threads, 0u);
  EXPECT_EQ(cfg->server.drain_timeout, 30000ms);
  EXPECT_EQ(cfg->server.body_timeout, 60000ms);
  EXPECT_EQ(cfg->server.max_buffered_body_bytes, 512ull * 1024 * 1024);
  EXPECT_EQ(cfg->server.max_connections, 10000u);
  EXPECT_FALSE(cfg->admin);
}

TEST(LoaderDefaults, ServerLimitsAreRead) {
  auto cfg =
      load_ok(std::string("server:\n  body_timeout_ms: 1500\n  max_buffered_body_bytes: 4096\n"
                          "  max_connections: 7\n") +
              std::string(kMinimalYaml));
  ASSERT_TRUE(cfg);
  EXPECT_EQ(cfg->server.body_timeout, 1500ms);
  EXPECT_EQ(cfg->server.max_buffered_body_bytes, 4096u);
  EXPECT_EQ(cfg->server.max_connections, 7u);
}

TEST(LoaderDefaults, UpstreamDefaults) {
  auto cfg = load_ok(kMinimalYaml);
  ASSERT_TRUE(cfg);
  const Upstream& u = cfg->upstreams.at(0);
  EXPECT_EQ(u.api_style, ApiStyle::deployments);
  EXPECT_FALSE(u.api_version);
  EXPECT_TRUE(u.api_versions.empty());
  EXPECT_FALSE(u.api_key);
  EXPECT_TRUE(u.deployments.empty());
  EXPECT_FALSE(u.strip_dots);
  EXPECT_EQ(u.ca_file, "");
  EXPECT_EQ(u.connect_timeout, 5000ms);
  EXPECT_EQ(u.timeout, 600000ms);
}

TEST(LoaderValues, BaseUrlWithPathPrefix) {
  auto cfg = load_ok(R"(upstreams:
  a: {provider: azure, base_url: "https://apim.example.com/aoai/"}
routes: [{match: "*", upstream: a}]
)");
  ASSERT_TRUE(cfg);
  EXPECT_EQ(cfg->upstreams[0].base.path_prefix, "/aoai");
  EXPECT_EQ(cfg->upstreams[0].base.host_header, "apim.example.com");
}

TEST(LoaderValues, BaseUrlExplicitDefaultPortIsNotInHostHeader) {
  auto cfg = load_ok(R"(upstreams:
  a: {provider: openai, base_url: "https://api.example.com:443"}
  b: {provider: openai, base_url: "http://api.example.com:80"}
routes: [{match: "*", upstream: a}]
)");
  ASSERT_TRUE(cfg);
  EXPECT_EQ(cfg->upstreams[0].base.host_header, "api.example.com");
  EXPECT_EQ(cfg->upstreams[1].base.port, 80);
  EXPECT_EQ(cfg->upstreams[1].base.host_header, "api.example.com");
}

TEST(LoaderValues, BaseUrlIPv6HostIsUnbracketedButBracketedInHostHeader) {
  auto cfg = load_ok(R"(upstreams:
  a: {provider: openai, base_url: "http://[::1]:9000/p/"}
routes: [{match: "*", upstream: a}]
)");
  ASSERT_TRUE(cfg);
  const BaseUrl& b = cfg->upstreams[0].base;
  EXPECT_EQ(b.host, "::1");
  EXPECT_EQ(b.port, 9000);
  EXPECT_EQ(b.host_header, "[::1]:9000");
  EXPECT_EQ(b.path_prefix, "/p");
  EXPECT_TRUE(b.host_is_ip);
}

TEST(LoaderValues, ListenLocalhostMeansLoopback) {
  auto cfg =
      load_ok(std::string("server:\n  listen: localhost:7000\n") + std::string(kMinimalYaml));
  ASSERT_TRUE(cfg);
  EXPECT_EQ(cfg->server.listen.host, "127.0.0.1");
  EXPECT_EQ(cfg->server.listen.port, 7000);
}

TEST(LoaderValues, EnvReferencesAreExpandedInsideValues) {
  auto cfg = load_ok(R"(server:
  listen: "${HOST:-127.0.0.1}:${PORT}"
  max_body_bytes: "${BODY}"
upstreams:
  a:
    provider: azure
    base_url: "https://${RESOURCE}.openai.azure.com"
    api_key: "${KEY}"
routes: [{match: "${MODEL}", upstream: a}]
)",
                     fake_env({{"PORT", "9999"},
                               {"BODY", "4096"},
                               {"RESOURCE", "contoso"},
                               {"KEY", "k1"},
                               {"MODEL", "gpt-4o"}}));
  ASSERT_TRUE(cfg);
  EXPECT_EQ(cfg->server.listen.to_string(), "127.0.0.1:9999");
  EXPECT_EQ(cfg->server.max_body_bytes, 4096u);
  EXPECT_EQ(cfg->upstreams[0].base.host, "contoso.openai.azure.com");
  EXPECT_EQ(cfg->upstreams[0].api_key, "k1");
  EXPECT_EQ(cfg->routes[0].match, "gpt-4o");
}

// ---------------------------------------------------------------------------------------------
// Loader: problems, with 1-based LINE:COL
// ---------------------------------------------------------------------------------------------

std::vector<Problem> problems_of(std::string_view yaml, const EnvLookup& env = fake_env()) {
  LoadResult r = load_config_text(yaml, "test.yaml", env);
  if (!r.problems.empty()) {
    EXPECT_EQ(r.config, nullptr) << "config must be null with problems";
  }
  return r.problems;
}

// Expects exactly one problem at line:col whose message contains `needle`.
void expect_one_problem(std::string_view yaml, int line, int col, std::string_view needle,
                        const EnvLookup& env = fake_env()) {
  LoadResult r = load_config_text(yaml, "test.yaml", env);
  EXPECT_EQ(r.config, nullptr);
  ASSERT_EQ(r.problems.size(), 1u) << problems_text(r);
  EXPECT_EQ(r.problems[0].line, line) << problems_text(r);
  EXPECT_EQ(r.problems[0].column, col) << problems_text(r);
  EXPECT_NE(r.problems[0].message.find(needle), std::string::npos)
      << "expected '" << needle << "' in: " << r.problems[0].message;
}

TEST(LoaderProblems, UnknownTopLevelKey) {
  expect_one_problem(std::string("sevrer:\n  listen: 127.0.0.1:8080\n") + std::string(kMinimalYaml),
                     1, 1, "unknown key 'sevrer'");
}

TEST(LoaderProblems, UnknownKeyInsideAnUpstream) {
  expect_one_problem(R"(upstreams:
  a:
    provider: azure
    base_url: https://contoso.openai.azure.com
    api_kee: secret
routes:
  - {match: "*", upstream: a}
)",
                     5, 5, "unknown key 'api_kee' in upstreams.a");
}

TEST(LoaderProblems, UnknownKeyInServer) {
  expect_one_problem(std::string("server:\n  listen: 127.0.0.1:8080\n  max_body: 10\n") +
                         std::string(kMinimalYaml),
                     3, 3, "unknown key 'max_body' in server");
}

TEST(LoaderProblems, RouteToUndefinedUpstream) {
  expect_one_problem(R"(upstreams:
  a: {provider: openai, base_url: "https://api.openai.com"}
routes:
  - match: "*"
    upstream: nowhere
)",
                     5, 15, "'nowhere', which is not defined");
}

TEST(LoaderProblems, UnsetEnvVariableIsNamedAtItsValue) {
  expect_one_problem(R"(upstreams:
  a:
    provider: azure
    base_url: https://contoso.openai.azure.com
    api_key: "${MISSING_KEY}"
routes:
  - {match: "*", upstream: a}
)",
                     5, 14, "MISSING_KEY");
}

TEST(LoaderProblems, BadNumber) {
  expect_one_problem(std::string("server:\n  max_body_bytes: lots\n") + std::string(kMinimalYaml),
                     2, 19, "server.max_body_bytes must be a whole number");
}

TEST(LoaderProblems, ANumberGivenAsAListSaysAWholeNumberIsExpected) {
  // It used to say "must be a string", about a setting that takes a number.
  expect_one_problem(std::string("server:\n  max_header_bytes: [1]\n") + std::string(kMinimalYaml),
                     2, 21, "server.max_header_bytes must be a whole number");
}

TEST(LoaderProblems, NegativeNumber) {
  expect_one_problem(std::string("server:\n  threads: -1\n") + std::string(kMinimalYaml), 2, 12,
                     "server.threads");
}

TEST(LoaderProblems, NumberOutOfRange) {
  expect_one_problem(std::string("server:\n  max_header_bytes: 100\n") + std::string(kMinimalYaml),
                     2, 21, "between 1024 and");
}

TEST(LoaderProblems, ListenWithoutPort) {
  expect_one_problem(std::string("server:\n  listen: \"nohost\"\n") + std::string(kMinimalYaml), 2,
                     11, "server.listen must be HOST:PORT");
}

TEST(LoaderProblems, ListenWithHostName) {
  expect_one_problem(
      std::string("server:\n  listen: \"example.com:80\"\n") + std::string(kMinimalYaml), 2, 11,
      "must be an IP address");
}

TEST(LoaderProblems, ListenPortOutOfRange) {
  expect_one_problem(
      std::string("server:\n  listen: \"127.0.0.1:70000\"\n") + std::string(kMinimalYaml), 2, 11,
      "port '70000'");
}

TEST(LoaderProblems, BaseUrlWithUnsupportedScheme) {
  expect_one_problem(R"(upstreams:
  a:
    provider: openai
    base_url: ftp://files.example.com
routes:
  - {match: "*", upstream: a}
)",
                     4, 15, "must start with http:// or https://");
}

TEST(LoaderProblems, BaseUrlThatIsNotAbsolute) {
  expect_one_problem(R"(upstreams:
  a:
    provider: openai
    base_url: api.openai.com
routes:
  - {match: "*", upstream: a}
)",
                     4, 15, "not an absolute URL");
}

TEST(LoaderProblems, UnknownApiVersionsOperation) {
  expect_one_problem(R"(upstreams:
  a:
    provider: azure
    base_url: https://contoso.openai.azure.com
    api_versions:
      chat: "2024-10-21"
routes:
  - {match: "*", upstream: a}
)",
                     6, 7, "unknown operation 'chat'");
}

TEST(LoaderProblems, UnknownProvider) {
  expect_one_problem(R"(upstreams:
  a:
    provider: anthropic
    base_url: https://api.example.com
routes:
  - {match: "*", upstream: a}
)",
                     3, 15, "provider must be azure or openai");
}

TEST(LoaderProblems, UnknownApiStyle) {
  expect_one_problem(R"(upstreams:
  a:
    provider: azure
    base_url: https://contoso.openai.azure.com
    api_style: v2
routes:
  - {match: "*", upstream: a}
)",
                     5, 16, "api_style must be deployments or v1");
}

TEST(LoaderProblems, DeploymentsOnOpenAIUpstream) {
  expect_one_problem(R"(upstreams:
  a:
    provider: openai
    base_url: https://api.openai.com
    deployments:
      gpt-4o: d
routes:
  - {match: "*", upstream: a}
)",
                     6, 7, "deployments only applies to provider azure");
}

TEST(LoaderProblems, MissingProviderAndBaseUrl) {
  auto problems = problems_of(R"(upstreams:
  a:
    api_key: k
routes:
  - {match: "*", upstream: a}
)");
  ASSERT_EQ(problems.size(), 2u);
  EXPECT_NE(problems[0].message.find("provider is required"), std::string::npos);
  EXPECT_NE(problems[1].message.find("base_url is required"), std::string::npos);
  EXPECT_EQ(problems[0].line, 3);
  EXPECT_EQ(problems[0].column, 5);
}

TEST(LoaderProblems, YamlSyntaxErrorHasItsPosition) {
  // ` threads` is indented by one space: it can belong to neither map. yaml-cpp reports the key.
  expect_one_problem("server:\n  listen: 127.0.0.1:8080\n threads: 2\n", 3, 2,
                     "end of map not found");
}

TEST(LoaderProblems, YamlSyntaxErrorInFlowSequence) {
  auto problems = problems_of("routes: [{match: \"*\", upstream: a}\nupstreams: {}\n");
  ASSERT_EQ(problems.size(), 1u);
  EXPECT_GE(problems[0].line, 1);
  EXPECT_GE(problems[0].column, 1);
  EXPECT_NE(problems[0].message, "");
}

TEST(LoaderProblems, MissingUpstreams) {
  auto problems = problems_of("routes:\n  - {match: \"*\", upstream: a}\n");
  ASSERT_EQ(problems.size(), 2u);  // and the route's upstream is then undefined
  EXPECT_EQ(problems[0].line, 1);
  EXPECT_EQ(problems[0].column, 1);
  EXPECT_NE(problems[0].message.find("upstreams is required"), std::string::npos);
  EXPECT_EQ(problems[1].line, 2);
  EXPECT_EQ(problems[1].column, 28);
  EXPECT_NE(problems[1].message.find("'a', which is not defined"), std::string::npos);
}

TEST(LoaderProblems, MissingRoutes) {
  expect_one_problem("upstreams:\n  a: {provider: openai, base_url: \"https://api.openai.com\"}\n",
                     1, 1, "routes is required");
}

TEST(LoaderProblems, EmptyRoutesList) {
  expect_one_problem(
      "upstreams:\n  a: {provider: openai, base_url: \"https://api.openai.com\"}\nroutes: []\n", 3,
      9, "at least one route");
}

TEST(LoaderProblems, EmptyUpstreamsMap) {
  auto problems = problems_of("upstreams: {}\nroutes:\n  - {match: \"*\", upstream: a}\n");
  ASSERT_FALSE(problems.empty());
  EXPECT_NE(problems[0].message.find("at least one upstream"), std::string::npos);
  EXPECT_EQ(problems[0].line, 1);
  EXPECT_EQ(problems[0].column, 12);
}

TEST(LoaderProblems, EmptyDocument) {
  expect_one_problem("", 1, 1, "empty");
}

TEST(LoaderProblems, DuplicateTopLevelKey) {
  expect_one_problem(std::string("server: {}\nserver: {}\n") + std::string(kMinimalYaml), 2, 1,
                     "duplicate key 'server'");
}

TEST(LoaderProblems, DuplicateDeploymentKey) {
  expect_one_problem(R"(upstreams:
  a:
    provider: azure
    base_url: https://contoso.openai.azure.com
    deployments:
      gpt-4o: d1
      gpt-4o: d2
routes:
  - {match: "*", upstream: a}
)",
                     7, 7, "duplicate key 'gpt-4o'");
}

TEST(LoaderProblems, EmptyRouteMatch) {
  expect_one_problem(R"(upstreams:
  a: {provider: openai, base_url: "https://api.openai.com"}
routes:
  - match: ""
    upstream: a
)",
                     4, 12, "route match must not be empty");
}

TEST(LoaderProblems, EmptyApiKey) {
  expect_one_problem(R"(upstreams:
  a:
    provider: azure
    base_url: https://contoso.openai.azure.com
    api_key: "${EMPTY}"
routes:
  - {match: "*", upstream: a}
)",
                     5, 14, "api_key is empty", fake_env({{"EMPTY", ""}}));
}

// Values the gateway writes into every upstream request head as they are: a key read from a
// secret file with its trailing newline (or anything else that could end the field) is refused
// at load, and the key itself is never quoted in the problem.
TEST(LoaderProblems, AnApiKeyThatCouldEndItsFieldIsRefused) {
  const std::string keys[] = {"sk-secret-123\n", "sk-secret-123\r\nx-a: 1", " sk-secret-123",
                              std::string("sk-secret") + '\x7f' + "123"};
  for (const std::string& key : keys) {
    expect_one_problem(R"(upstreams:
  a:
    provider: azure
    base_url: https://contoso.openai.azure.com
    api_key: "${KEY}"
routes:
  - {match: "*", upstream: a}
)",
                       5, 14, "api_key contains a control character", fake_env({{"KEY", key}}));
    const LoadResult r = load_config_text(
        "upstreams:\n  a:\n    provider: azure\n    base_url: https://contoso.openai.azure.com\n"
        "    api_key: \"${KEY}\"\nroutes:\n  - {match: \"*\", upstream: a}\n",
        "test.yaml", fake_env({{"KEY", key}}));
    EXPECT_EQ(problems_text(r).find("sk-secret"), std::string::npos) << problems_text(r);
  }
}

TEST(LoaderProblems, AnUpstreamNameThatCouldEndAFieldIsRefused) {
  expect_one_problem("upstreams:\n  \"a\\r\\nx-injected: 1\":\n    provider: azure\n"
                     "    base_url: https://contoso.openai.azure.com\n    api_key: k\n"
                     "routes:\n  - {match: \"*\", upstream: \"a\\r\\nx-injected: 1\"}\n",
                     2, 3, "upstream names must be visible characters");
}

TEST(LoaderProblems, AnApiVersionMustBeAQueryToken) {
  expect_one_problem(R"(upstreams:
  a:
    provider: azure
    base_url: https://contoso.openai.azure.com
    api_version: "2024-10-21&x=1"
routes:
  - {match: "*", upstream: a}
)",
                     5, 18, "api_version must be letters, digits");
  expect_one_problem(R"(upstreams:
  a:
    provider: azure
    base_url: https://contoso.openai.azure.com
    api_versions: {chat_completions: "2024-10-21 HTTP/1.1"}
routes:
  - {match: "*", upstream: a}
)",
                     5, 38, "api_versions.chat_completions must be letters, digits");
}

TEST(LoaderProblems, UnreadableCaFile) {
  expect_one_problem(R"(upstreams:
  a:
    provider: azure
    base_url: https://contoso.openai.azure.com
    ca_file: /nonexistent/llmgw/ca.pem
routes:
  - {match: "*", upstream: a}
)",
                     5, 14, "cannot be read");
}

TEST(LoaderProblems, EveryProblemIsReportedNotJustTheFirst) {
  auto problems = problems_of(R"(server:
  listen: nohost
  threads: many
upstreams:
  a:
    provider: openai
    base_url: https://api.openai.com
    bogus: 1
routes:
  - {match: "*", upstream: b}
)");
  ASSERT_EQ(problems.size(), 4u);
  EXPECT_EQ(problems[0].line, 2);
  EXPECT_EQ(problems[1].line, 3);
  EXPECT_EQ(problems[2].line, 8);
  EXPECT_EQ(problems[3].line, 10);
}

TEST(LoadConfigFile, MissingFileIsAProblem) {
  LoadResult r = load_config_file("/nonexistent/llmgw/gateway.yaml", fake_env());
  EXPECT_EQ(r.config, nullptr);
  ASSERT_EQ(r.problems.size(), 1u);
  EXPECT_EQ(r.problems[0].line, 1);
  EXPECT_EQ(r.problems[0].column, 1);
}

// ---------------------------------------------------------------------------------------------
// format_problem
// ---------------------------------------------------------------------------------------------

TEST(FormatProblem, FileLineColMessage) {
  EXPECT_EQ(format_problem("gateway.yaml", Problem{3, 7, "boom"}), "gateway.yaml:3:7: boom");
}

TEST(FormatProblem, FormatsARealLoaderProblem) {
  LoadResult r = load_config_text(std::string("sevrer: {}\n") + std::string(kMinimalYaml),
                                  "gw.yaml", fake_env());
  ASSERT_EQ(r.problems.size(), 1u);
  EXPECT_EQ(format_problem("gw.yaml", r.problems[0]).rfind("gw.yaml:1:1: unknown key 'sevrer'", 0),
            0u)
      << format_problem("gw.yaml", r.problems[0]);
}

// ---------------------------------------------------------------------------------------------
// embedded_default_yaml
// ---------------------------------------------------------------------------------------------

std::shared_ptr<const Config> load_embedded(const EnvLookup& env) {
  LoadResult r = load_config_text(embedded_default_yaml(env), "<embedded default>", env);
  EXPECT_TRUE(r.problems.empty()) << problems_text(r);
  return r.config;
}

TEST(EmbeddedDefault, AzureWhenEndpointAndKeyAreSet) {
  auto env = fake_env({{"AZURE_OPENAI_ENDPOINT", "https://contoso.openai.azure.com/"},
                       {"AZURE_OPENAI_API_KEY", "az-key"}});
  auto cfg = load_embedded(env);
  ASSERT_TRUE(cfg);
  ASSERT_EQ(cfg->upstreams.size(), 1u);
  const Upstream& u = cfg->upstreams[0];
  EXPECT_EQ(u.provider, Provider::azure);
  EXPECT_EQ(u.base.host, "contoso.openai.azure.com");
  EXPECT_TRUE(u.base.tls);
  EXPECT_EQ(u.api_key, "az-key");
  EXPECT_EQ(u.api_version, "2024-10-21");
  EXPECT_EQ(u.api_style, ApiStyle::deployments);
  ASSERT_EQ(cfg->routes.size(), 1u);
  EXPECT_EQ(cfg->routes[0].match, "*");
  EXPECT_EQ(cfg->routes[0].upstream, 0u);
}

TEST(EmbeddedDefault, OpenAIPassThroughWithoutAzureVariables) {
  auto cfg = load_embedded(fake_env());
  ASSERT_TRUE(cfg);
  ASSERT_EQ(cfg->upstreams.size(), 1u);
  const Upstream& u = cfg->upstreams[0];
  EXPECT_EQ(u.provider, Provider::openai);
  EXPECT_EQ(u.base.host, "api.openai.com");
  EXPECT_TRUE(u.base.tls);
  EXPECT_EQ(u.base.port, 443);
  EXPECT_FALSE(u.api_key);
  ASSERT_EQ(cfg->routes.size(), 1u);
  EXPECT_EQ(cfg->routes[0].match, "*");
}

TEST(EmbeddedDefault, OnlyEndpointSetIsNotEnoughForAzure) {
  auto cfg =
      load_embedded(fake_env({{"AZURE_OPENAI_ENDPOINT", "https://contoso.openai.azure.com"}}));
  ASSERT_TRUE(cfg);
  EXPECT_EQ(cfg->upstreams[0].provider, Provider::openai);
}

TEST(EmbeddedDefault, EmptyKeyIsNotEnoughForAzure) {
  auto cfg = load_embedded(fake_env({{"AZURE_OPENAI_ENDPOINT", "https://contoso.openai.azure.com"},
                                     {"AZURE_OPENAI_API_KEY", ""}}));
  ASSERT_TRUE(cfg);
  EXPECT_EQ(cfg->upstreams[0].provider, Provider::openai);
}

TEST(EmbeddedDefault, ListensOnLoopback8080ByDefault) {
  auto cfg = load_embedded(fake_env());
  ASSERT_TRUE(cfg);
  EXPECT_EQ(cfg->server.listen.to_string(), "127.0.0.1:8080");
}

TEST(EmbeddedDefault, ListenVariableOverridesListen) {
  auto cfg = load_embedded(fake_env({{"LLM_GATEWAY_LISTEN", "0.0.0.0:9000"}}));
  ASSERT_TRUE(cfg);
  EXPECT_EQ(cfg->server.listen.to_string(), "0.0.0.0:9000");
}

TEST(EmbeddedDefault, EmptyListenVariableFallsBackToDefault) {
  auto cfg = load_embedded(fake_env({{"LLM_GATEWAY_LISTEN", ""}}));
  ASSERT_TRUE(cfg);
  EXPECT_EQ(cfg->server.listen.to_string(), "127.0.0.1:8080");
}

}  // namespace
}  // namespace llmgw::config

// --- routes with several backends ---

namespace llmgw::config {
namespace {

constexpr std::string_view kTwoUpstreams = R"(upstreams:
  east: {provider: azure, base_url: "https://east.openai.azure.com", api_key: k}
  west: {provider: azure, base_url: "https://west.openai.azure.com", api_key: k}
  openai: {provider: openai, base_url: "https://api.openai.com", api_key: k}
)";

TEST(RouteBackends, BackendsRetryAndQueueAreRead) {
  auto cfg = test::load_ok(std::string(kTwoUpstreams) + R"(routes:
  - match: "gpt-4o*"
    backends:
      - {upstream: east, priority: 0, weight: 3}
      - {upstream: west, weight: 1}
      - {upstream: openai, priority: 1}
    retry: {attempts: 4, on: [429, 503, connect], budget_ms: 9000, default_cooldown_ms: 700, eject_after: 2}
    max_queue_ms: 1500
  - {match: "*", upstream: west}
)");
  ASSERT_TRUE(cfg);
  const Route& r = cfg->routes[0];
  ASSERT_EQ(r.backends.size(), 3u);
  EXPECT_EQ(r.upstream, 0u);  // the first backend's
  EXPECT_EQ(r.backends[0].weight, 3u);
  EXPECT_EQ(r.backends[1].upstream, 1u);
  EXPECT_EQ(r.backends[1].priority, 0u);
  EXPECT_EQ(r.backends[2].priority, 1u);
  EXPECT_EQ(r.backends[2].weight, 1u);
  EXPECT_TRUE(r.fails_over());
  EXPECT_EQ(r.retry.attempts, 4u);
  EXPECT_TRUE(r.retry.retries_status(429));
  EXPECT_TRUE(r.retry.retries_status(503));
  EXPECT_FALSE(r.retry.retries_status(500));
  EXPECT_TRUE(r.retry.retries_kind("connect"));
  EXPECT_FALSE(r.retry.retries_kind("timeout"));
  EXPECT_EQ(r.retry.budget, std::chrono::milliseconds(9000));
  EXPECT_EQ(r.retry.default_cooldown, std::chrono::milliseconds(700));
  EXPECT_EQ(r.retry.eject_after, 2u);
  EXPECT_EQ(r.max_queue, std::chrono::milliseconds(1500));
  // The single-upstream form is one backend, and defaults everywhere else.
  const Route& one = cfg->routes[1];
  ASSERT_EQ(one.backends.size(), 1u);
  EXPECT_FALSE(one.fails_over());
  EXPECT_EQ(one.retry.attempts, 3u);
  for (unsigned s : {429u, 500u, 502u, 503u, 504u}) EXPECT_TRUE(one.retry.retries_status(s));
  for (auto k : {"connect", "tls", "timeout", "reset"}) EXPECT_TRUE(one.retry.retries_kind(k));
  EXPECT_EQ(one.max_queue.count(), 0);
}

TEST(RouteBackends, Problems) {
  const std::string up(kTwoUpstreams);
  struct Case {
    std::string routes;
    std::string expected;
  } cases[] = {
      {"  - {match: x, upstream: east, backends: [{upstream: west}]}\n", "either one upstream"},
      {"  - {match: x}\n", "either upstream or backends"},
      {"  - {match: x, backends: []}\n", "non-empty list"},
      {"  - {match: x, backends: [{upstream: nowhere}]}\n", "'nowhere', which is not defined"},
      {"  - {match: x, backends: [{upstream: east}, {upstream: east}]}\n", "listed twice"},
      {"  - {match: x, backends: [{upstream: east, weight: 0}]}\n", "weight must be between"},
      {"  - {match: x, backends: [{upstream: east, region: eu}]}\n", "unknown key 'region'"},
      {"  - {match: x, upstream: east, retry: {on: [400]}}\n", "'400' is not retried"},
      {"  - {match: x, upstream: east, retry: {on: [sometimes]}}\n", "'sometimes' is not retried"},
      {"  - {match: x, upstream: east, retry: {attempts: 0}}\n", "retry.attempts must be between"},
      {"  - {match: x, upstream: east, retry: {tries: 2}}\n", "unknown key 'tries'"},
  };
  for (const auto& c : cases) {
    const LoadResult r = load_config_text(up + "routes:\n" + c.routes, "t.yaml", test::fake_env());
    ASSERT_FALSE(r.problems.empty()) << c.routes;
    EXPECT_NE(test::problems_text(r).find(c.expected), std::string::npos) << c.routes << "\n"
                                                                          << test::problems_text(r);
  }
}

}  // namespace
}  // namespace llmgw::config

namespace llmgw::config {
namespace {

TEST(Reload, PollIsReadAndDefaultsToTwoSeconds) {
  auto cfg = test::load_ok(std::string(kTwoUpstreams) + "routes: [{match: '*', upstream: east}]\n");
  ASSERT_TRUE(cfg);
  EXPECT_EQ(cfg->reload.poll, std::chrono::milliseconds(2000));
  auto off = test::load_ok(std::string(kTwoUpstreams) +
                           "routes: [{match: '*', upstream: east}]\nreload: {poll_ms: 0}\n");
  ASSERT_TRUE(off);
  EXPECT_EQ(off->reload.poll.count(), 0);
}

TEST(Reload, SettingsThatNeedARestartAreNamed) {
  const std::string base = std::string(kTwoUpstreams) + "routes: [{match: '*', upstream: east}]\n";
  auto a = test::load_ok("server: {listen: '127.0.0.1:8080', threads: 2}\n" + base);
  auto same = test::load_ok("server: {listen: '127.0.0.1:8080', threads: 2, max_body_bytes: 10}\n" +
                            base + "keys: [{name: k, key: sk-aaaaaaaaaaaaaaaa}]\n");
  auto moved = test::load_ok(
      "server: {listen: '127.0.0.1:9090', threads: 4}\nadmin: {listen: "
      "'127.0.0.1:9464'}\nlogging: {access_log: 'off'}\n" +
      base);
  ASSERT_TRUE(a && same && moved);
  // Limits, keys, routes: live.
  EXPECT_TRUE(settings_needing_restart(*a, *same).empty());
  EXPECT_EQ(settings_needing_restart(*a, *moved),
            (std::vector<std::string>{"server.listen", "server.threads", "admin.listen",
                                      "logging.access_log"}));
}

// Listener TLS: the loader only checks that the files can be read (their content is checked when
// the TLS context is made), so any readable files do here.
class ListenerTlsConfig : public ::testing::Test {
 protected:
  static std::string file(const std::string& name) {
    const std::string path = ::testing::TempDir() + "llmgw-listener-tls-" + name;
    std::ofstream(path) << "not checked by the loader\n";
    return path;
  }
  std::string cert = file("cert.pem");
  std::string key = file("key.pem");
  std::string ca = file("ca.pem");
  std::string routes = std::string(kTwoUpstreams) + "routes: [{match: '*', upstream: east}]\n";

  std::string tls(const std::string& extra) const {
    return "{cert_file: '" + cert + "', key_file: '" + key + "'" + extra + "}";
  }
  std::string problems(const std::string& yaml) const {
    return problems_text(load_config_text(yaml, "test.yaml", fake_env()));
  }
};

TEST_F(ListenerTlsConfig, ServerAndAdminTlsAreRead) {
  auto cfg =
      load_ok("server: {listen: '127.0.0.1:8443', tls: " +
              tls(", client_ca_file: '" + ca + "', client_auth: required, min_version: '1.3'") +
              "}\nadmin: {listen: '127.0.0.1:9443', tls: " + tls("") + "}\n" + routes);
  ASSERT_TRUE(cfg);
  ASSERT_TRUE(cfg->server.tls);
  EXPECT_EQ(cfg->server.tls->cert_file, cert);
  EXPECT_EQ(cfg->server.tls->key_file, key);
  EXPECT_EQ(cfg->server.tls->client_ca_file, ca);
  EXPECT_EQ(cfg->server.tls->client_auth, ClientAuth::required);
  EXPECT_TRUE(cfg->server.tls->tls13_only);
  ASSERT_TRUE(cfg->admin && cfg->admin->tls);
  EXPECT_EQ(cfg->admin->tls->client_auth, ClientAuth::none);
  EXPECT_FALSE(cfg->admin->tls->tls13_only);
  auto plain = load_ok(routes);
  ASSERT_TRUE(plain);
  EXPECT_FALSE(plain->server.tls);
}

TEST_F(ListenerTlsConfig, MistakesAreNamed) {
  EXPECT_NE(problems("server: {tls: {cert_file: '" + cert + "'}}\n" + routes)
                .find("server.tls.key_file is required"),
            std::string::npos);
  EXPECT_NE(problems("server: {tls: " + tls(", client_auth: optional") + "}\n" + routes)
                .find("client_auth optional needs client_ca_file"),
            std::string::npos);
  EXPECT_NE(problems("server: {tls: " + tls(", client_ca_file: '" + ca + "'") + "}\n" + routes)
                .find("client_auth is none"),
            std::string::npos);
  EXPECT_NE(problems("server: {tls: " + tls(", client_auth: maybe") + "}\n" + routes)
                .find("must be none, optional or required"),
            std::string::npos);
  EXPECT_NE(problems("server: {tls: " + tls(", min_version: '1.0'") + "}\n" + routes)
                .find("min_version must be"),
            std::string::npos);
  EXPECT_NE(
      problems("server: {tls: {cert_file: /nonexistent/c.pem, key_file: '" + key + "'}}\n" + routes)
          .find("server.tls.cert_file '/nonexistent/c.pem' cannot be read"),
      std::string::npos);
  // A directory opens but never reads: refused like a missing file (every certificate, key and
  // CA path of the configuration goes through the same check).
  const std::string dir = ::testing::TempDir();
  EXPECT_NE(
      problems("server: {tls: {cert_file: '" + dir + "', key_file: '" + key + "'}}\n" + routes)
          .find("server.tls.cert_file '" + dir + "' cannot be read"),
      std::string::npos);
  EXPECT_NE(
      problems("upstreams:\n  east: {provider: azure, base_url: 'https://e.openai.azure.com', "
               "api_key: k, ca_file: '" +
               dir + "'}\nroutes: [{match: '*', upstream: east}]\n")
          .find("ca_file '" + dir + "' cannot be read"),
      std::string::npos);
  EXPECT_NE(problems("admin: {listen: '127.0.0.1:9443', tls: " + tls(", bogus: 1") + "}\n" + routes)
                .find("bogus"),
            std::string::npos);
}

TEST_F(ListenerTlsConfig, KeysMatchedByCertificateFingerprint) {
  const std::string mtls =
      "server: {tls: " + tls(", client_ca_file: '" + ca + "', client_auth: optional") + "}\n";
  const std::string upper =
      "AB:CD:EF:01:23:45:67:89:AB:CD:EF:01:23:45:67:89:AB:CD:EF:01:23:45:67:89:AB:CD:EF:01:23:45:"
      "67:89";
  auto cfg = load_ok(mtls + routes + "keys:\n  - {name: a, client_cert_sha256: '" + upper +
                     "'}\n  - {name: b, key: sk-bbbbbbbbbb, client_cert_sha256: "
                     "'00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff'}\n");
  ASSERT_TRUE(cfg);
  ASSERT_EQ(cfg->keys.size(), 2u);
  EXPECT_FALSE(cfg->keys[0].has_secret);
  ASSERT_TRUE(cfg->keys[0].client_cert_sha256);
  EXPECT_EQ((*cfg->keys[0].client_cert_sha256)[0], 0xab);
  EXPECT_EQ((*cfg->keys[0].client_cert_sha256)[31], 0x89);
  EXPECT_TRUE(cfg->keys[1].has_secret);
  EXPECT_EQ((*cfg->keys[1].client_cert_sha256)[31], 0xff);

  EXPECT_NE(problems(routes + "keys:\n  - {name: a, client_cert_sha256: '" + upper + "'}\n")
                .find("needs server.tls with client_auth optional or required"),
            std::string::npos);
  EXPECT_NE(problems(mtls + routes + "keys:\n  - {name: a, client_cert_sha256: 'abcd'}\n")
                .find("64 hexadecimal characters"),
            std::string::npos);
  EXPECT_NE(problems(mtls + routes + "keys:\n  - {name: a, client_cert_sha256: '" + upper +
                     "'}\n  - {name: b, client_cert_sha256: '" + upper + "'}\n")
                .find("the same client certificate is configured for two keys"),
            std::string::npos);
  EXPECT_NE(problems(mtls + routes + "keys:\n  - {name: a}\n")
                .find("a key needs key, key_sha256 or client_cert_sha256"),
            std::string::npos);
}

TEST_F(ListenerTlsConfig, TurningTlsOnOrOffNeedsARestartButNewFilesDoNot) {
  auto plain = load_ok("admin: {listen: '127.0.0.1:9443'}\n" + routes);
  auto on = load_ok("server: {tls: " + tls("") +
                    "}\nadmin: {listen: '127.0.0.1:9443', tls: " + tls("") + "}\n" + routes);
  auto renewed = load_ok("server: {tls: " + tls(", min_version: '1.3'") +
                         "}\nadmin: {listen: '127.0.0.1:9443', tls: " + tls("") + "}\n" + routes);
  ASSERT_TRUE(plain && on && renewed);
  EXPECT_EQ(settings_needing_restart(*plain, *on),
            (std::vector<std::string>{"server.tls", "admin.tls"}));
  EXPECT_TRUE(settings_needing_restart(*on, *renewed).empty());
}

}  // namespace
}  // namespace llmgw::config

// --- rate_limits.redis_url and redis_ca_file ---

namespace llmgw::config {
namespace {

// A self-signed certificate made here (no key is kept), as a CA file for rediss:// tests.
std::string self_signed_certificate_pem() {
  EVP_PKEY* key = EVP_EC_gen("P-256");
  X509* cert = X509_new();
  X509_set_version(cert, 2);
  ASN1_INTEGER_set(X509_get_serialNumber(cert), 1);
  X509_gmtime_adj(X509_getm_notBefore(cert), 0);
  X509_gmtime_adj(X509_getm_notAfter(cert), 3600);
  X509_set_pubkey(cert, key);
  X509_NAME* name = X509_get_subject_name(cert);
  X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_ASC,
                             reinterpret_cast<const unsigned char*>("llm-gateway unit test CA"), -1,
                             -1, 0);
  X509_set_issuer_name(cert, name);
  X509_sign(cert, key, EVP_sha256());
  BIO* bio = BIO_new(BIO_s_mem());
  PEM_write_bio_X509(bio, cert);
  char* data = nullptr;
  const long len = BIO_get_mem_data(bio, &data);
  std::string pem(data, static_cast<std::size_t>(len));
  BIO_free(bio);
  X509_free(cert);
  EVP_PKEY_free(key);
  return pem;
}

class RedisUrl : public ::testing::Test {
 protected:
  void SetUp() override {
    // One directory per process: ctest runs tests in parallel processes.
    dir_ = std::filesystem::path(::testing::TempDir()) /
           ("llmgw_redis_url_test_" + std::to_string(::getpid()));
    std::filesystem::create_directories(dir_);
    ca_ = (dir_ / "ca.pem").string();
    std::ofstream(ca_) << self_signed_certificate_pem();
    not_pem_ = (dir_ / "not.pem").string();
    std::ofstream(not_pem_) << "-----BEGIN CERTIFICATE-----\nnot base64 at all\n";
  }
  void TearDown() override { std::filesystem::remove_all(dir_); }

  static std::string yaml(const std::string& rate_limits) {
    return std::string(kMinimalYaml) + "rate_limits:\n  store: redis\n" + rate_limits;
  }
  static std::optional<RedisTarget> target(const std::string& rate_limits) {
    auto cfg = test::load_ok(yaml(rate_limits));
    if (!cfg) return std::nullopt;
    return cfg->rate_limits.redis;
  }

  std::filesystem::path dir_;
  std::string ca_;
  std::string not_pem_;
};

// What each URL form gives: where to connect, what the certificate must name, who logs in.
TEST_F(RedisUrl, UrlForms) {
  struct Case {
    std::string url;
    bool tls;
    std::string host, server_name;
    bool host_is_ip;
    std::uint16_t port;
    unsigned db;
    std::string user, password;
  };
  const std::vector<Case> cases{
      {"redis://10.0.0.5:6380/2", false, "10.0.0.5", "10.0.0.5", true, 6380, 2, "", ""},
      // An ACL user; the password percent-decoded.
      {"rediss://gateway:p%40ss%3Aword@cache.example.com:6380/1", true, "cache.example.com",
       "cache.example.com", false, 6380, 1, "gateway", "p@ss:word"},
      // A password alone (the default user), the default port and database.
      {"rediss://:secret@cache.example.com", true, "cache.example.com", "cache.example.com", false,
       6379, 0, "", "secret"},
      // localhost connects to 127.0.0.1 but the certificate must name localhost.
      {"rediss://localhost:6380/0", true, "127.0.0.1", "localhost", false, 6380, 0, "", ""},
      // IP literals are verified as addresses.
      {"rediss://127.0.0.1:6380/0", true, "127.0.0.1", "127.0.0.1", true, 6380, 0, "", ""},
      {"rediss://[::1]:6380/0", true, "::1", "::1", true, 6380, 0, "", ""},
  };
  for (const Case& c : cases) {
    SCOPED_TRACE(c.url);
    auto t = target("  redis_url: \"" + c.url + "\"\n");
    ASSERT_TRUE(t);
    EXPECT_EQ(t->tls, c.tls);
    EXPECT_EQ(t->host, c.host);
    EXPECT_EQ(t->server_name, c.server_name);
    EXPECT_EQ(t->host_is_ip, c.host_is_ip);
    EXPECT_EQ(t->port, c.port);
    EXPECT_EQ(t->db, c.db);
    EXPECT_EQ(t->user, c.user);
    EXPECT_EQ(t->password, c.password);
    EXPECT_EQ(t->ca_file, "");
  }
}

TEST_F(RedisUrl, CaFileWithTlsUrlIsKept) {
  auto t =
      target("  redis_url: rediss://cache.example.com:6380/0\n  redis_ca_file: \"" + ca_ + "\"\n");
  ASSERT_TRUE(t);
  EXPECT_EQ(t->ca_file, ca_);
}

TEST_F(RedisUrl, CaFileBeforeTheUrlIsKeptToo) {
  auto t =
      target("  redis_ca_file: \"" + ca_ + "\"\n  redis_url: rediss://cache.example.com:6380/0\n");
  ASSERT_TRUE(t);
  EXPECT_EQ(t->ca_file, ca_);
}

TEST_F(RedisUrl, CaFileWithPlainUrlIsAnError) {
  expect_one_problem(
      yaml("  redis_url: redis://127.0.0.1:6379/0\n  redis_ca_file: \"" + ca_ + "\"\n"), 10, 18,
      "rate_limits.redis_ca_file needs a rediss:// (TLS) redis_url");
}

TEST_F(RedisUrl, CaFileWithoutUrlIsAnError) {
  auto problems =
      problems_of(std::string(kMinimalYaml) + "rate_limits:\n  redis_ca_file: \"" + ca_ + "\"\n");
  ASSERT_EQ(problems.size(), 1u);
  EXPECT_NE(problems[0].message.find("needs a rediss://"), std::string::npos);
}

TEST_F(RedisUrl, UnreadableCaFile) {
  expect_one_problem(yaml("  redis_url: rediss://127.0.0.1:6380/0\n  redis_ca_file: " +
                          (dir_ / "missing.pem").string() + "\n"),
                     10, 18, "cannot be read");
}

TEST_F(RedisUrl, CaFileWithoutACertificate) {
  expect_one_problem(
      yaml("  redis_url: rediss://127.0.0.1:6380/0\n  redis_ca_file: " + not_pem_ + "\n"), 10, 18,
      "holds no PEM certificate");
  expect_one_problem(
      yaml("  redis_url: rediss://127.0.0.1:6380/0\n  redis_ca_file: " + dir_.string() + "\n"), 10,
      18, "cannot be read");
}

TEST_F(RedisUrl, BadSchemeIsAnErrorThatNeverQuotesThePassword) {
  for (const std::string url : {"rediss+tls://u:hunter2-secret@h:1/0",
                                "http://u:hunter2-secret@h/0", "rediss://u:hunter2-secret@/0"}) {
    auto problems = problems_of(yaml("  redis_url: \"" + url + "\"\n"));
    ASSERT_FALSE(problems.empty()) << url;
    for (const auto& p : problems) {
      EXPECT_EQ(p.message.find("hunter2"), std::string::npos) << p.message;
    }
    EXPECT_NE(problems[0].message.find("rediss://"), std::string::npos) << problems[0].message;
  }
}

TEST_F(RedisUrl, BadDatabaseOverTls) {
  expect_one_problem(yaml("  redis_url: \"rediss://:pw-secret@127.0.0.1:6380/x\"\n"), 9, 14,
                     "the database must be a number");
}

TEST_F(RedisUrl, TlsSettingsNeedARestart) {
  const auto load = [this](const std::string& rate_limits) {
    return test::load_ok(yaml(rate_limits));
  };
  auto plain = load("  redis_url: redis://cache.example.com:6380/0\n");
  auto tls = load("  redis_url: rediss://cache.example.com:6380/0\n");
  auto tls_again = load("  redis_url: rediss://cache.example.com:6380/0\n");
  auto tls_ca =
      load("  redis_url: rediss://cache.example.com:6380/0\n  redis_ca_file: \"" + ca_ + "\"\n");
  auto tls_pw = load("  redis_url: \"rediss://:other@cache.example.com:6380/0\"\n");
  ASSERT_TRUE(plain && tls && tls_again && tls_ca && tls_pw);
  const std::vector<std::string> store{"rate_limits.store"};
  EXPECT_TRUE(settings_needing_restart(*tls, *tls_again).empty());
  EXPECT_EQ(settings_needing_restart(*plain, *tls), store);
  EXPECT_EQ(settings_needing_restart(*tls, *tls_ca), store);
  EXPECT_EQ(settings_needing_restart(*tls, *tls_pw), store);
}

// rate_limits.redis_lease: auto (default), off, or a fraction of the limits in (0, 0.5].
TEST_F(RedisUrl, RedisLeaseAutoOffOrAFraction) {
  const auto lease_of = [](const std::string& extra) {
    return test::load_ok(yaml("  redis_url: redis://127.0.0.1:6379/0\n" + extra));
  };
  auto dflt = lease_of("");
  auto automatic = lease_of("  redis_lease: auto\n");
  auto off = lease_of("  redis_lease: off\n");
  auto tenth = lease_of("  redis_lease: 0.1\n");
  auto half = lease_of("  redis_lease: \"0.5\"\n");
  ASSERT_TRUE(dflt && automatic && off && tenth && half);
  EXPECT_EQ(dflt->rate_limits.redis_lease, RateLimitSettings::Lease::automatic);
  EXPECT_EQ(automatic->rate_limits.redis_lease, RateLimitSettings::Lease::automatic);
  EXPECT_EQ(off->rate_limits.redis_lease, RateLimitSettings::Lease::off);
  EXPECT_EQ(tenth->rate_limits.redis_lease, RateLimitSettings::Lease::fraction);
  EXPECT_DOUBLE_EQ(tenth->rate_limits.redis_lease_fraction, 0.1);
  EXPECT_DOUBLE_EQ(half->rate_limits.redis_lease_fraction, 0.5);
  for (const std::string bad : {"0", "0.51", "1", "-0.1", "10%", "on", "0.1x", "\"\""}) {
    expect_one_problem(yaml("  redis_url: redis://127.0.0.1:6379/0\n  redis_lease: " + bad + "\n"),
                       10, 16, "rate_limits.redis_lease must be auto, off or a fraction");
  }
  // The store is made once per process: a change waits for a restart.
  const std::vector<std::string> lease{"rate_limits.redis_lease"};
  EXPECT_EQ(settings_needing_restart(*dflt, *tenth), lease);
  EXPECT_EQ(settings_needing_restart(*off, *dflt), lease);
  EXPECT_TRUE(settings_needing_restart(*dflt, *automatic).empty());
}

}  // namespace
}  // namespace llmgw::config
