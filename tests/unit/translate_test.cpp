// Translation: the inbound request and its route -> the upstream request (target, headers, body).
// Covers every row of the endpoint table for both Azure api styles, OpenAI upstreams, Azure-shaped
// inbound requests, api-version selection and header handling.
#include <gtest/gtest.h>

#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "llm_gateway/routing/router.hpp"
#include "llm_gateway/translate/json_scan.hpp"
#include "llm_gateway/translate/request_facts.hpp"
#include "llm_gateway/translate/translate.hpp"
#include "test_support.hpp"

namespace llmgw {
namespace {

namespace http = boost::beast::http;
using config::ApiStyle;
using config::Provider;
using config::Upstream;
using http::verb;

constexpr std::string_view kRequestId = "req-123";
constexpr std::string_view kAzureBase = "https://contoso.openai.azure.com";
constexpr std::string_view kApimBase = "https://apim.example.com/aoai";

// ---------------------------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------------------------

// An upstream loaded from YAML (fields indented by four spaces), so defaults are the loader's.
Upstream load_upstream(const std::string& fields) {
  const std::string yaml =
      "upstreams:\n  u:\n" + fields + "routes:\n  - {match: \"*\", upstream: u}\n";
  auto cfg = test::load_ok(yaml);
  return cfg ? cfg->upstreams.at(0) : Upstream{};
}

// Azure upstream with key K that maps gpt-4o to the deployment prod-4o.
Upstream azure(std::string_view style, std::string_view extra = "",
               std::string_view base = kAzureBase) {
  return load_upstream("    provider: azure\n    base_url: " + std::string(base) +
                       "\n    api_key: K\n    api_style: " + std::string(style) +
                       "\n    deployments:\n      gpt-4o: prod-4o\n" + std::string(extra));
}

Upstream openai(std::string_view base = "https://api.openai.com", bool with_key = true) {
  return load_upstream("    provider: openai\n    base_url: " + std::string(base) + "\n" +
                       (with_key ? "    api_key: K\n" : ""));
}

struct Request {
  verb method = verb::post;
  std::string target;
  std::string body;
  HeaderList headers;
};

Request get(std::string target) {
  Request r;
  r.method = verb::get;
  r.target = std::move(target);
  return r;
}

Request post_json(std::string target, std::string body) {
  Request r;
  r.target = std::move(target);
  r.body = std::move(body);
  r.headers.set(http::field::content_type, "application/json");
  return r;
}

constexpr std::string_view kBoundary = "----llmgw7MA4YWxkTrZu0gW";

std::string text_part(std::string_view name, std::string_view value) {
  return "--" + std::string(kBoundary) + "\r\nContent-Disposition: form-data; name=\"" +
         std::string(name) + "\"\r\n\r\n" + std::string(value) + "\r\n";
}

std::string file_part() {
  return "--" + std::string(kBoundary) +
         "\r\nContent-Disposition: form-data; name=\"file\"; filename=\"a.bin\"\r\n"
         "Content-Type: application/octet-stream\r\n\r\n" +
         std::string("\x00\x01\xfe\xff\r\n\r\nbinary", 14) + "\r\n";
}

std::string closing() {
  return "--" + std::string(kBoundary) + "--\r\n";
}

// A multipart request whose model field comes after a binary file part.
Request post_multipart(std::string target, std::string_view model) {
  Request r;
  r.target = std::move(target);
  r.body =
      file_part() + text_part("model", model) + text_part("response_format", "json") + closing();
  r.headers.set(http::field::content_type,
                "multipart/form-data; boundary=" + std::string(kBoundary));
  return r;
}

// translate()'s fields view the inbound request and the upstream's configuration (in the
// gateway, the request context and the configuration snapshot outlive every attempt): a test
// keeps its copies of both beside the result.
struct Translated : UpstreamRequest {
  std::shared_ptr<const Request> request;
  std::shared_ptr<const Upstream> upstream;
};

// Runs parse + route + translate the way the pipeline does: the model comes from the Azure path
// or the body, and an Azure upstream turns it into a deployment.
Translated run(const Request& request, const Upstream& upstream) {
  Translated out;
  out.request = std::make_shared<const Request>(request);
  out.upstream = std::make_shared<const Upstream>(upstream);
  const Request& req = *out.request;
  const Upstream& up = *out.upstream;
  const PathFacts path = classify_path(req.method, req.target);
  std::string_view content_type;
  if (auto it = req.headers.find(http::field::content_type); it != req.headers.end())
    content_type = it->value();
  const BodyFacts facts = inspect_body(content_type, req.body);
  const std::optional<std::string> model = path.path_model ? path.path_model : facts.model;
  Target route;
  if (up.provider == Provider::azure && model && !model->empty())
    route.deployment = deployment_for(up, *model);
  InboundRequest in;
  in.method = req.method;
  in.target = req.target;
  in.headers = &req.headers;
  in.body = req.body;
  in.path = &path;
  in.body_facts = &facts;
  static_cast<UpstreamRequest&>(out) = translate(in, up, route, kRequestId);
  return out;
}

std::string header(const UpstreamRequest& out, std::string_view name) {
  return out.value_of(name).value_or("<absent>");
}

bool json_valid_object(std::string_view text) {
  const json::ScanResult r = json::scan(text);
  return r.valid && r.is_object;
}

std::size_t header_count(const UpstreamRequest& out, std::string_view name) {
  return out.count(name);
}

// ---------------------------------------------------------------------------------------------
// Deployment-scoped operations, both api styles
// ---------------------------------------------------------------------------------------------

struct DeploymentOp {
  const char* name;  // test name suffix
  std::string_view op;
  bool multipart;
};

const DeploymentOp kDeploymentOps[] = {
    {"chat_completions", "chat/completions", false},
    {"completions", "completions", false},
    {"embeddings", "embeddings", false},
    {"audio_transcriptions", "audio/transcriptions", true},
    {"audio_translations", "audio/translations", true},
    {"audio_speech", "audio/speech", false},
    {"images_generations", "images/generations", false},
    {"images_edits", "images/edits", true},
};

Request op_request(const DeploymentOp& op, std::string_view model, std::string_view query = "") {
  std::string target = "/v1/" + std::string(op.op) + std::string(query);
  if (op.multipart) return post_multipart(std::move(target), model);
  return post_json(std::move(target), R"({"model":")" + std::string(model) + R"(","input":"hi"})");
}

class DeploymentScopedRow : public ::testing::TestWithParam<DeploymentOp> {};

TEST_P(DeploymentScopedRow, DeploymentsStyleTargetsTheDeploymentWithApiVersion) {
  const DeploymentOp& op = GetParam();
  Translated out = run(op_request(op, "gpt-4o"), azure("deployments"));
  EXPECT_EQ(out.method, verb::post);
  EXPECT_EQ(out.target,
            "/openai/deployments/prod-4o/" + std::string(op.op) + "?api-version=2024-10-21");
}

TEST_P(DeploymentScopedRow, DeploymentsStyleLeavesTheBodyUnchanged) {
  Translated out = run(op_request(GetParam(), "gpt-4o"), azure("deployments"));
  EXPECT_FALSE(out.body) << *out.body;
}

TEST_P(DeploymentScopedRow, DeploymentsStyleUnmappedModelIsTheDeployment) {
  const DeploymentOp& op = GetParam();
  Translated out = run(op_request(op, "gpt-4o-mini"), azure("deployments"));
  EXPECT_EQ(out.target,
            "/openai/deployments/gpt-4o-mini/" + std::string(op.op) + "?api-version=2024-10-21");
}

TEST_P(DeploymentScopedRow, DeploymentsStyleKeepsThePathPrefix) {
  const DeploymentOp& op = GetParam();
  Translated out = run(op_request(op, "gpt-4o"), azure("deployments", "", kApimBase));
  EXPECT_EQ(out.target,
            "/aoai/openai/deployments/prod-4o/" + std::string(op.op) + "?api-version=2024-10-21");
  EXPECT_EQ(header(out, "host"), "apim.example.com");
}

TEST_P(DeploymentScopedRow, V1StyleTargetsOpenaiV1WithoutApiVersion) {
  const DeploymentOp& op = GetParam();
  Translated out = run(op_request(op, "gpt-4o"), azure("v1"));
  EXPECT_EQ(out.method, verb::post);
  EXPECT_EQ(out.target, "/openai/v1/" + std::string(op.op));
}

TEST_P(DeploymentScopedRow, V1StyleReplacesTheModelWithTheDeployment) {
  const DeploymentOp& op = GetParam();
  Translated out = run(op_request(op, "gpt-4o"), azure("v1"));
  ASSERT_TRUE(out.body);
  EXPECT_EQ(*out.body, op_request(op, "prod-4o").body);
}

TEST_P(DeploymentScopedRow, V1StyleUnmappedModelLeavesTheBodyUnchanged) {
  const DeploymentOp& op = GetParam();
  Translated out = run(op_request(op, "gpt-4o-mini"), azure("v1"));
  EXPECT_EQ(out.target, "/openai/v1/" + std::string(op.op));
  EXPECT_FALSE(out.body) << *out.body;
}

TEST_P(DeploymentScopedRow, V1StyleKeepsThePathPrefix) {
  const DeploymentOp& op = GetParam();
  Translated out = run(op_request(op, "gpt-4o"), azure("v1", "", kApimBase));
  EXPECT_EQ(out.target, "/aoai/openai/v1/" + std::string(op.op));
}

INSTANTIATE_TEST_SUITE_P(AllOps, DeploymentScopedRow, ::testing::ValuesIn(kDeploymentOps),
                         [](const auto& row) { return std::string(row.param.name); });

// ---------------------------------------------------------------------------------------------
// Resource-level operations, both api styles
// ---------------------------------------------------------------------------------------------

struct ResourceOp {
  const char* name;
  verb method;
  std::string_view inbound;  // path after /v1/
  std::string_view body;     // JSON body ("" for none); "multipart" for a file upload
};

const ResourceOp kResourceOps[] = {
    {"files_upload", verb::post, "files", "multipart"},
    {"files_list", verb::get, "files", ""},
    {"files_content", verb::get, "files/abc/content", ""},
    {"batches_create", verb::post, "batches",
     R"({"input_file_id":"file-1","endpoint":"/v1/chat/completions","completion_window":"24h"})"},
    {"batches_get", verb::get, "batches/batch_1", ""},
    {"fine_tuning_jobs", verb::get, "fine_tuning/jobs", ""},
    {"assistants_list", verb::get, "assistants", ""},
    {"threads_runs", verb::post, "threads/t/runs", R"({"assistant_id":"asst_1"})"},
    {"vector_stores", verb::get, "vector_stores", ""},
    {"chat_completions_list", verb::get, "chat/completions", ""},
};

Request resource_request(const ResourceOp& op) {
  const std::string target = "/v1/" + std::string(op.inbound);
  Request r;
  if (op.body == "multipart") {
    r.target = target;
    r.body = text_part("purpose", "batch") + file_part() + closing();
    r.headers.set(http::field::content_type,
                  "multipart/form-data; boundary=" + std::string(kBoundary));
  } else if (!op.body.empty()) {
    r = post_json(target, std::string(op.body));
  } else {
    r.target = target;
  }
  r.method = op.method;
  return r;
}

class ResourceRow : public ::testing::TestWithParam<ResourceOp> {};

TEST_P(ResourceRow, DeploymentsStyleTargetsOpenaiPathWithApiVersion) {
  const ResourceOp& op = GetParam();
  Translated out = run(resource_request(op), azure("deployments"));
  EXPECT_EQ(out.method, op.method);
  EXPECT_EQ(out.target, "/openai/" + std::string(op.inbound) + "?api-version=2024-10-21");
  EXPECT_FALSE(out.body);
}

TEST_P(ResourceRow, DeploymentsStyleWithPathPrefix) {
  const ResourceOp& op = GetParam();
  Translated out = run(resource_request(op), azure("deployments", "", kApimBase));
  EXPECT_EQ(out.target, "/aoai/openai/" + std::string(op.inbound) + "?api-version=2024-10-21");
}

TEST_P(ResourceRow, V1StyleTargetsOpenaiV1Path) {
  const ResourceOp& op = GetParam();
  Translated out = run(resource_request(op), azure("v1"));
  EXPECT_EQ(out.method, op.method);
  EXPECT_EQ(out.target, "/openai/v1/" + std::string(op.inbound));
  EXPECT_FALSE(out.body);
}

INSTANTIATE_TEST_SUITE_P(AllOps, ResourceRow, ::testing::ValuesIn(kResourceOps),
                         [](const auto& row) { return std::string(row.param.name); });

// ---------------------------------------------------------------------------------------------
// Responses API
// ---------------------------------------------------------------------------------------------

constexpr std::string_view kResponsesBody = R"({"model":"gpt-4o","input":"hi"})";
constexpr std::string_view kResponsesBodyDeployed = R"({"model":"prod-4o","input":"hi"})";

TEST(TranslateResponses, DeploymentsStyleUsesPreviewApiVersionAndReplacesModel) {
  Translated out =
      run(post_json("/v1/responses", std::string(kResponsesBody)), azure("deployments"));
  EXPECT_EQ(out.target, "/openai/responses?api-version=2025-04-01-preview");
  ASSERT_TRUE(out.body);
  EXPECT_EQ(*out.body, kResponsesBodyDeployed);
}

TEST(TranslateResponses, DeploymentsStyleIgnoresTheGeneralApiVersion) {
  Translated out = run(post_json("/v1/responses", std::string(kResponsesBody)),
                       azure("deployments", "    api_version: \"2024-06-01\"\n"));
  EXPECT_EQ(out.target, "/openai/responses?api-version=2025-04-01-preview");
}

TEST(TranslateResponses, ApiVersionsResponsesOverrides) {
  Translated out =
      run(post_json("/v1/responses", std::string(kResponsesBody)),
          azure("deployments", "    api_versions:\n      responses: \"2025-05-01-preview\"\n"));
  EXPECT_EQ(out.target, "/openai/responses?api-version=2025-05-01-preview");
}

TEST(TranslateResponses, DeploymentsStyleGetByIdHasNoBody) {
  Translated out = run(get("/v1/responses/resp_1"), azure("deployments"));
  EXPECT_EQ(out.method, verb::get);
  EXPECT_EQ(out.target, "/openai/responses/resp_1?api-version=2025-04-01-preview");
  EXPECT_FALSE(out.body);
}

TEST(TranslateResponses, DeploymentsStyleUnmappedModelLeavesBody) {
  Translated out =
      run(post_json("/v1/responses", R"({"model":"o3","input":"hi"})"), azure("deployments"));
  EXPECT_EQ(out.target, "/openai/responses?api-version=2025-04-01-preview");
  EXPECT_FALSE(out.body);
}

TEST(TranslateResponses, V1StyleHasNoApiVersionAndReplacesModel) {
  Translated out = run(post_json("/v1/responses", std::string(kResponsesBody)), azure("v1"));
  EXPECT_EQ(out.target, "/openai/v1/responses");
  ASSERT_TRUE(out.body);
  EXPECT_EQ(*out.body, kResponsesBodyDeployed);
}

TEST(TranslateResponses, V1StyleGetById) {
  Translated out = run(get("/v1/responses/resp_1"), azure("v1"));
  EXPECT_EQ(out.target, "/openai/v1/responses/resp_1");
  EXPECT_FALSE(out.body);
}

// ---------------------------------------------------------------------------------------------
// api-version selection and the query string
// ---------------------------------------------------------------------------------------------

constexpr std::string_view kChatBody = R"({"model":"gpt-4o","messages":[]})";

TEST(TranslateApiVersion, DeploymentsStyleUsesConfiguredApiVersion) {
  Translated out = run(post_json("/v1/chat/completions", std::string(kChatBody)),
                       azure("deployments", "    api_version: \"2024-06-01\"\n"));
  EXPECT_EQ(out.target, "/openai/deployments/prod-4o/chat/completions?api-version=2024-06-01");
}

TEST(TranslateApiVersion, DeploymentsStylePerOperationOverride) {
  const Upstream up = azure("deployments",
                            "    api_version: \"2024-06-01\"\n"
                            "    api_versions:\n      chat_completions: \"2025-01-01-preview\"\n");
  EXPECT_EQ(run(post_json("/v1/chat/completions", std::string(kChatBody)), up).target,
            "/openai/deployments/prod-4o/chat/completions?api-version=2025-01-01-preview");
  EXPECT_EQ(run(post_json("/v1/embeddings", std::string(kChatBody)), up).target,
            "/openai/deployments/prod-4o/embeddings?api-version=2024-06-01");
}

TEST(TranslateApiVersion, DeploymentsStylePerOperationOverrideForResourceLevel) {
  const Upstream up =
      azure("deployments", "    api_versions:\n      assistants: \"2024-05-01-preview\"\n");
  EXPECT_EQ(run(get("/v1/threads/t/runs"), up).target,
            "/openai/threads/t/runs?api-version=2024-05-01-preview");
  EXPECT_EQ(run(get("/v1/files"), up).target, "/openai/files?api-version=2024-10-21");
}

TEST(TranslateApiVersion, V1StylePerOperationOverride) {
  const Upstream up = azure("v1", "    api_versions:\n      chat_completions: preview\n");
  EXPECT_EQ(run(post_json("/v1/chat/completions", std::string(kChatBody)), up).target,
            "/openai/v1/chat/completions?api-version=preview");
  EXPECT_EQ(run(post_json("/v1/embeddings", std::string(kChatBody)), up).target,
            "/openai/v1/embeddings");
}

TEST(TranslateApiVersion, V1StyleSendsAConfiguredApiVersion) {
  const Upstream up = azure("v1", "    api_version: preview\n");
  EXPECT_EQ(run(post_json("/v1/chat/completions", std::string(kChatBody)), up).target,
            "/openai/v1/chat/completions?api-version=preview");
  EXPECT_EQ(run(get("/v1/files"), up).target, "/openai/v1/files?api-version=preview");
}

TEST(TranslateQuery, ClientApiVersionIsReplacedAndOtherParametersKeptInOrder) {
  Translated out = run(post_json("/v1/chat/completions?foo=1&api-version=2023-05-15&bar=2&baz",
                                 std::string(kChatBody)),
                       azure("deployments"));
  EXPECT_EQ(out.target,
            "/openai/deployments/prod-4o/chat/completions?foo=1&bar=2&baz&api-version=2024-10-21");
}

TEST(TranslateQuery, V1StyleDropsClientApiVersionAndKeepsTheRest) {
  Translated out =
      run(post_json("/v1/chat/completions?api-version=2023-05-15&foo=1", std::string(kChatBody)),
          azure("v1"));
  EXPECT_EQ(out.target, "/openai/v1/chat/completions?foo=1");
}

TEST(TranslateQuery, ResourceLevelQueryIsKept) {
  Translated out = run(get("/v1/files?purpose=batch&limit=2"), azure("deployments"));
  EXPECT_EQ(out.target, "/openai/files?purpose=batch&limit=2&api-version=2024-10-21");
}

TEST(TranslatePath, DeploymentIsPercentEncodedInThePath) {
  const Upstream up = load_upstream(
      "    provider: azure\n    base_url: https://contoso.openai.azure.com\n"
      "    deployments:\n      gpt-4o: \"my dep/x\"\n");
  Translated out = run(post_json("/v1/chat/completions", std::string(kChatBody)), up);
  EXPECT_EQ(out.target, "/openai/deployments/my%20dep%2Fx/chat/completions?api-version=2024-10-21");
}

TEST(TranslatePath, StripDotsAppliesToUnmappedDeployments) {
  const Upstream up = load_upstream(
      "    provider: azure\n    base_url: https://contoso.openai.azure.com\n"
      "    strip_dots: true\n");
  Translated out = run(post_json("/v1/chat/completions", R"({"model":"gpt-3.5-turbo"})"), up);
  EXPECT_EQ(out.target, "/openai/deployments/gpt-35-turbo/chat/completions?api-version=2024-10-21");
}

TEST(TranslateBody, V1StyleInsertsModelWhenTheBodyHasNone) {
  // An Azure deployment-path request in v1 style: the deployment moves from the path to the body.
  Translated out = run(
      post_json("/openai/deployments/gpt-4o/chat/completions", R"({"messages":[]})"), azure("v1"));
  EXPECT_EQ(out.target, "/openai/v1/chat/completions");
  ASSERT_TRUE(out.body);
  EXPECT_EQ(*out.body, R"({"model":"prod-4o","messages":[]})");
}

TEST(TranslateBody, V1StyleReplacementEncodesTheDeploymentAsJson) {
  const Upstream up = load_upstream(
      "    provider: azure\n    base_url: https://contoso.openai.azure.com\n"
      "    api_style: v1\n    deployments:\n      gpt-4o: 'a\"b'\n");
  Translated out = run(post_json("/v1/chat/completions", R"({"model" : "gpt-4o" })"), up);
  ASSERT_TRUE(out.body);
  EXPECT_EQ(*out.body, R"({"model" : "a\"b" })");
}

// ---------------------------------------------------------------------------------------------
// Azure-shaped inbound requests
// ---------------------------------------------------------------------------------------------

TEST(TranslateAzureInbound, DeploymentPathToDeploymentsStyle) {
  Translated out = run(post_json("/openai/deployments/gpt-4o/chat/completions"
                                 "?api-version=2023-05-15",
                                 R"({"messages":[]})"),
                       azure("deployments"));
  EXPECT_EQ(out.target, "/openai/deployments/prod-4o/chat/completions?api-version=2024-10-21");
  EXPECT_FALSE(out.body);
}

TEST(TranslateAzureInbound, ResourcePathToDeploymentsStyle) {
  Translated out = run(get("/openai/files/file-1?api-version=2023-05-15"), azure("deployments"));
  EXPECT_EQ(out.target, "/openai/files/file-1?api-version=2024-10-21");
}

TEST(TranslateAzureInbound, V1PathToV1Style) {
  Translated out =
      run(post_json("/openai/v1/chat/completions", std::string(kChatBody)), azure("v1"));
  EXPECT_EQ(out.target, "/openai/v1/chat/completions");
  ASSERT_TRUE(out.body);
  EXPECT_EQ(*out.body, R"({"model":"prod-4o","messages":[]})");
}

TEST(TranslateAzureInbound, BatchesUnderADeploymentGoToTheResource) {
  Translated out = run(post_json("/openai/deployments/gpt-4o/batches?api-version=2024-10-21",
                                 R"({"input_file_id":"f"})"),
                       azure("deployments"));
  EXPECT_EQ(out.target, "/openai/batches?api-version=2024-10-21");
  EXPECT_FALSE(out.body);
}

// ---------------------------------------------------------------------------------------------
// OpenAI upstreams
// ---------------------------------------------------------------------------------------------

TEST(TranslateOpenAI, KeepsPathQueryAndBody) {
  Translated out =
      run(post_json("/v1/chat/completions?x=1&api-version=2", std::string(kChatBody)), openai());
  EXPECT_EQ(out.method, verb::post);
  EXPECT_EQ(out.target, "/v1/chat/completions?x=1&api-version=2");
  EXPECT_FALSE(out.body);
}

TEST(TranslateOpenAI, AddsV1WhenTheInboundPathLacksIt) {
  Translated out = run(post_json("/chat/completions", std::string(kChatBody)), openai());
  EXPECT_EQ(out.target, "/v1/chat/completions");
}

TEST(TranslateOpenAI, NoDoubleV1WhenBaseUrlEndsWithV1) {
  const Upstream up = openai("https://gw.example.com/v1");
  EXPECT_EQ(run(post_json("/v1/chat/completions", std::string(kChatBody)), up).target,
            "/v1/chat/completions");
  EXPECT_EQ(run(post_json("/chat/completions", std::string(kChatBody)), up).target,
            "/v1/chat/completions");
}

TEST(TranslateOpenAI, BaseUrlPrefixIsKept) {
  EXPECT_EQ(run(get("/v1/models"), openai("https://gw.example.com/proxy")).target,
            "/proxy/v1/models");
  EXPECT_EQ(run(get("/v1/models"), openai("https://gw.example.com/proxy/v1/")).target,
            "/proxy/v1/models");
}

TEST(TranslateOpenAI, ResourcePathsPassThrough) {
  EXPECT_EQ(run(get("/v1/files/abc/content"), openai()).target, "/v1/files/abc/content");
  EXPECT_EQ(run(get("/v1/threads/t/runs?limit=1"), openai()).target, "/v1/threads/t/runs?limit=1");
}

TEST(TranslateOpenAI, MultipartBodyIsUnchanged) {
  Translated out = run(post_multipart("/v1/audio/transcriptions", "whisper-1"), openai());
  EXPECT_EQ(out.target, "/v1/audio/transcriptions");
  EXPECT_FALSE(out.body);
}

TEST(TranslateOpenAI, AzureDeploymentInboundSetsModelFromPathAndDropsApiVersion) {
  Translated out = run(post_json("/openai/deployments/gpt-4o/chat/completions"
                                 "?api-version=2024-10-21&x=1",
                                 R"({"messages":[]})"),
                       openai());
  EXPECT_EQ(out.target, "/v1/chat/completions?x=1");
  ASSERT_TRUE(out.body);
  EXPECT_EQ(*out.body, R"({"model":"gpt-4o","messages":[]})");
}

TEST(TranslateOpenAI, AzureDeploymentInboundReplacesADifferentBodyModel) {
  Translated out = run(post_json("/openai/deployments/gpt-4o/embeddings?api-version=1",
                                 R"({"input":"x","model":"other"})"),
                       openai());
  EXPECT_EQ(out.target, "/v1/embeddings");
  ASSERT_TRUE(out.body);
  EXPECT_EQ(*out.body, R"({"input":"x","model":"gpt-4o"})");
}

TEST(TranslateOpenAI, AzureDeploymentInboundWithSameBodyModelKeepsBody) {
  Translated out = run(
      post_json("/openai/deployments/gpt-4o/chat/completions", std::string(kChatBody)), openai());
  EXPECT_FALSE(out.body);
}

TEST(TranslateOpenAI, AzureDeploymentInboundIntoEmptyObject) {
  Translated out = run(post_json("/openai/deployments/gpt-4o/embeddings", "{ }"), openai());
  ASSERT_TRUE(out.body);
  EXPECT_EQ(*out.body, R"({"model":"gpt-4o" })");
  EXPECT_TRUE(json_valid_object(*out.body));
}

TEST(TranslateOpenAI, AzureDeploymentInboundMultipartReplacesModel) {
  Request req =
      post_multipart("/openai/deployments/whisper/audio/transcriptions?api-version=1", "old");
  Translated out = run(req, openai());
  EXPECT_EQ(out.target, "/v1/audio/transcriptions");
  ASSERT_TRUE(out.body);
  EXPECT_EQ(*out.body, post_multipart("", "whisper").body);
}

TEST(TranslateOpenAI, AzureV1AndResourceInbound) {
  EXPECT_EQ(
      run(post_json("/openai/v1/chat/completions?api-version=preview", std::string(kChatBody)),
          openai())
          .target,
      "/v1/chat/completions");
  EXPECT_EQ(run(get("/openai/files?api-version=2024-10-21&limit=3"), openai()).target,
            "/v1/files?limit=3");
}

// ---------------------------------------------------------------------------------------------
// Headers
// ---------------------------------------------------------------------------------------------

Request with_client_headers(Request r) {
  HeaderList& h = r.headers;
  h.set(http::field::host, "gateway.local:8080");
  h.set(http::field::authorization, "Bearer client-token");
  h.set("api-key", "client-key");
  h.set("OpenAI-Organization", "org-1");
  h.set("OpenAI-Project", "proj-1");
  h.set(http::field::connection, "keep-alive, X-Hop-Custom");
  h.set("Keep-Alive", "timeout=5");
  h.set(http::field::te, "trailers");
  h.set(http::field::transfer_encoding, "chunked");
  h.set(http::field::upgrade, "h2c");
  h.set("Proxy-Connection", "keep-alive");
  h.set("X-Hop-Custom", "1");
  h.set(http::field::accept, "text/event-stream");
  h.set(http::field::user_agent, "OpenAI/Python 1.50.0");
  h.set("X-Stainless-Lang", "python");
  h.set("X-Stainless-Retry-Count", "0");
  h.set("traceparent", "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01");
  h.set("tracestate", "congo=t61rcWkgMzE");
  h.set("x-request-id", "client-chosen-id");
  h.set("x-ms-client-request-id", "client-chosen-ms-id");
  h.set(http::field::content_length, "12345");
  return r;
}

Request chat_with_headers() {
  return with_client_headers(post_json("/v1/chat/completions", std::string(kChatBody)));
}

TEST(TranslateHeaders, AzureDropsClientCredentialsAndSetsApiKey) {
  Translated out = run(chat_with_headers(), azure("deployments"));
  EXPECT_EQ(header(out, "authorization"), "<absent>");
  EXPECT_EQ(header_count(out, "api-key"), 1u);
  EXPECT_EQ(header(out, "api-key"), "K");
}

TEST(TranslateHeaders, AzureDropsOpenAIOrganizationAndProject) {
  Translated out = run(chat_with_headers(), azure("deployments"));
  EXPECT_EQ(header(out, "OpenAI-Organization"), "<absent>");
  EXPECT_EQ(header(out, "OpenAI-Project"), "<absent>");
}

TEST(TranslateHeaders, OpenAIWithKeySetsBearerAndDropsClientCredentials) {
  Translated out = run(chat_with_headers(), openai());
  EXPECT_EQ(header_count(out, "authorization"), 1u);
  EXPECT_EQ(header(out, "authorization"), "Bearer K");
  EXPECT_EQ(header(out, "api-key"), "<absent>");
}

TEST(TranslateHeaders, OpenAIWithoutKeyKeepsClientAuthorization) {
  Translated out = run(chat_with_headers(), openai("https://api.openai.com", false));
  EXPECT_EQ(header_count(out, "authorization"), 1u);
  EXPECT_EQ(header(out, "authorization"), "Bearer client-token");
}

TEST(TranslateHeaders, OpenAIKeepsOrganizationAndProject) {
  Translated out = run(chat_with_headers(), openai());
  EXPECT_EQ(header(out, "OpenAI-Organization"), "org-1");
  EXPECT_EQ(header(out, "OpenAI-Project"), "proj-1");
}

TEST(TranslateHeaders, HopByHopFieldsAreDropped) {
  for (const Upstream& up : {azure("deployments"), openai()}) {
    Translated out = run(chat_with_headers(), up);
    for (std::string_view name :
         {"Connection", "Keep-Alive", "TE", "Transfer-Encoding", "Upgrade", "Proxy-Connection"}) {
      EXPECT_EQ(header(out, name), "<absent>") << name << " for " << up.name;
    }
  }
}

TEST(TranslateHeaders, FieldsNamedInConnectionAreDropped) {
  for (const Upstream& up : {azure("deployments"), openai()}) {
    Translated out = run(chat_with_headers(), up);
    EXPECT_EQ(header(out, "X-Hop-Custom"), "<absent>");
  }
}

// RFC 9110 §5.3/§7.6.1: repeated Connection field lines form one list, and every option named in
// any of them is removed.
TEST(TranslateHeaders, FieldsNamedInASecondConnectionLineAreDropped) {
  Request r = post_json("/v1/chat/completions", std::string(kChatBody));
  r.headers.append(http::field::connection, "keep-alive");
  r.headers.append(http::field::connection, "X-Hop-Second");
  r.headers.set("X-Hop-Second", "1");
  Translated out = run(r, openai());
  EXPECT_EQ(header(out, "X-Hop-Second"), "<absent>");
}

TEST(TranslateHeaders, ContentLengthIsNotCopied) {
  Translated out = run(chat_with_headers(), azure("deployments"));
  EXPECT_EQ(header(out, "content-length"), "<absent>");
}

TEST(TranslateHeaders, HostIsTheUpstreamHost) {
  Translated out = run(chat_with_headers(), azure("deployments"));
  EXPECT_EQ(header_count(out, "host"), 1u);
  EXPECT_EQ(header(out, "host"), "contoso.openai.azure.com");
}

TEST(TranslateHeaders, HostCarriesANonDefaultPort) {
  Translated out = run(chat_with_headers(), openai("http://10.0.0.5:8443"));
  EXPECT_EQ(header(out, "host"), "10.0.0.5:8443");
  Translated out2 = run(chat_with_headers(), azure("deployments", "", "https://aoai.local:444"));
  EXPECT_EQ(header(out2, "host"), "aoai.local:444");
}

TEST(TranslateHeaders, EndToEndFieldsAreKept) {
  for (const Upstream& up : {azure("deployments"), openai()}) {
    Translated out = run(chat_with_headers(), up);
    EXPECT_EQ(header(out, "content-type"), "application/json");
    EXPECT_EQ(header(out, "accept"), "text/event-stream");
    EXPECT_EQ(header(out, "user-agent"), "OpenAI/Python 1.50.0");
    EXPECT_EQ(header(out, "x-stainless-lang"), "python");
    EXPECT_EQ(header(out, "x-stainless-retry-count"), "0");
    EXPECT_EQ(header(out, "traceparent"),
              "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01");
    EXPECT_EQ(header(out, "tracestate"), "congo=t61rcWkgMzE");
  }
}

TEST(TranslateHeaders, AzureGetsRequestIdInBothIdFields) {
  Translated out = run(chat_with_headers(), azure("deployments"));
  EXPECT_EQ(header_count(out, "x-request-id"), 1u);
  EXPECT_EQ(header(out, "x-request-id"), kRequestId);
  EXPECT_EQ(header_count(out, "x-ms-client-request-id"), 1u);
  EXPECT_EQ(header(out, "x-ms-client-request-id"), kRequestId);
}

// The head that goes upstream, byte for byte: the client's end-to-end fields in their order and
// spelling, then the gateway's (Host, ids, credential), then the body's length.
TEST(TranslateHeaders, HeadIsRenderedInOrderWithTheGatewaysFieldsLast) {
  Request r = post_json("/v1/chat/completions", std::string(kChatBody));
  r.headers.set("X-Stainless-Lang", "python");
  r.headers.set(http::field::connection, "keep-alive");
  Translated out = run(r, azure("deployments"));
  std::string head = "stale bytes";
  render_upstream_head(out, 42, head);
  EXPECT_EQ(head, "POST " + out.target +
                      " HTTP/1.1\r\n"
                      "Content-Type: application/json\r\n"
                      "X-Stainless-Lang: python\r\n"
                      "Host: contoso.openai.azure.com\r\n"
                      "x-request-id: req-123\r\n"
                      "api-key: K\r\n"
                      "x-ms-client-request-id: req-123\r\n"
                      "Content-Length: 42\r\n"
                      "\r\n");

  Translated bearer = run(r, openai());
  render_upstream_head(bearer, 0, head);
  EXPECT_EQ(head,
            "POST /v1/chat/completions HTTP/1.1\r\n"
            "Content-Type: application/json\r\n"
            "X-Stainless-Lang: python\r\n"
            "Host: api.openai.com\r\n"
            "x-request-id: req-123\r\n"
            "Authorization: Bearer K\r\n"
            "Content-Length: 0\r\n"  // a POST always says how long its body is
            "\r\n");
}

TEST(TranslateHeaders, ABodylessGetHasNoContentLength) {
  Translated out = run(get("/v1/models"), openai());
  std::string head;
  render_upstream_head(out, 0, head);
  EXPECT_EQ(head,
            "GET /v1/models HTTP/1.1\r\n"
            "Host: api.openai.com\r\n"
            "x-request-id: req-123\r\n"
            "Authorization: Bearer K\r\n"
            "\r\n");
}

TEST(TranslateHeaders, OpenAIGetsRequestIdOnly) {
  Translated out = run(chat_with_headers(), openai());
  EXPECT_EQ(header_count(out, "x-request-id"), 1u);
  EXPECT_EQ(header(out, "x-request-id"), kRequestId);
  EXPECT_EQ(header(out, "x-ms-client-request-id"), "<absent>");
}

TEST(IsHopByHop, ConnectionSpecificFields) {
  for (std::string_view name : {"Connection", "keep-alive", "Proxy-Connection", "TE", "Trailer",
                                "Upgrade", "transfer-encoding"}) {
    EXPECT_TRUE(is_hop_by_hop(name)) << name;
  }
  for (std::string_view name :
       {"Content-Type", "Authorization", "Accept", "traceparent", "Content-Length", "Host"}) {
    EXPECT_FALSE(is_hop_by_hop(name)) << name;
  }
}

// The per-message rule knows the connection-specific names by Beast's field numbers: it must
// agree with the name rule for every spelling, and add exactly the names the Connection lines list.
TEST(IsHopByHop, TheMessageRuleAgreesWithTheNameRule) {
  HeaderList message;
  for (std::string_view name :
       {"Connection", "connection", "KEEP-ALIVE", "Proxy-Connection", "te", "Trailer", "upgrade",
        "Transfer-Encoding", "proxy-authorization", "Proxy-Authenticate", "Content-Type",
        "Authorization", "Accept", "traceparent", "Content-Length", "Host", "X-Custom", "TEE"})
    message.append(name, "v");
  message.append("X-Named", "1");
  message.append(http::field::connection, "x-named, Accept");
  const HopByHopRule rule(message);
  for (const auto& f : message) {
    const std::string_view name = f.name_string();
    const bool named =
        boost::beast::iequals(name, "x-named") || boost::beast::iequals(name, "accept");
    EXPECT_EQ(rule(f), is_hop_by_hop(name) || named) << name;
  }
}

// Framing, ids and credentials are the gateway's on the upstream leg, in any spelling.
TEST(TranslateHeaders, FieldsTheGatewayOwnsAreNotCopiedInAnySpelling) {
  Request r = post_json("/v1/chat/completions", std::string(kChatBody));
  r.headers.append("EXPECT", "100-continue");
  r.headers.append("accept-encoding", "gzip");
  r.headers.append("X-Request-ID", "client-id");
  r.headers.append("X-MS-Client-Request-Id", "client-ms-id");
  r.headers.append("API-KEY", "client-key");
  r.headers.append("HOST", "gateway.local");
  Translated out = run(r, azure("deployments"));
  EXPECT_EQ(header(out, "expect"), "<absent>");
  EXPECT_EQ(header(out, "accept-encoding"), "<absent>");
  EXPECT_EQ(header_count(out, "x-request-id"), 1u);
  EXPECT_EQ(header(out, "x-request-id"), kRequestId);
  EXPECT_EQ(header_count(out, "x-ms-client-request-id"), 1u);
  EXPECT_EQ(header_count(out, "api-key"), 1u);
  EXPECT_EQ(header(out, "api-key"), "K");
  EXPECT_EQ(header_count(out, "host"), 1u);
}

// ---------------------------------------------------------------------------------------------
// api_version_for
// ---------------------------------------------------------------------------------------------

Upstream bare_azure(ApiStyle style) {
  Upstream u;
  u.provider = Provider::azure;
  u.api_style = style;
  return u;
}

TEST(ApiVersionFor, DeploymentsStyleDefaults) {
  const Upstream u = bare_azure(ApiStyle::deployments);
  EXPECT_EQ(api_version_for(u, Endpoint::chat_completions), "2024-10-21");
  EXPECT_EQ(api_version_for(u, Endpoint::files), "2024-10-21");
  EXPECT_EQ(api_version_for(u, Endpoint::responses), "2025-04-01-preview");
}

TEST(ApiVersionFor, DeploymentsStyleConfiguredVersion) {
  Upstream u = bare_azure(ApiStyle::deployments);
  u.api_version = "2024-06-01";
  EXPECT_EQ(api_version_for(u, Endpoint::embeddings), "2024-06-01");
  EXPECT_EQ(api_version_for(u, Endpoint::responses), "2025-04-01-preview");
}

TEST(ApiVersionFor, PerOperationOverrideWinsInBothStyles) {
  for (ApiStyle style : {ApiStyle::deployments, ApiStyle::v1}) {
    Upstream u = bare_azure(style);
    u.api_version = "general";
    u.api_versions[Endpoint::responses] = "resp-version";
    u.api_versions[Endpoint::embeddings] = "emb-version";
    EXPECT_EQ(api_version_for(u, Endpoint::responses), "resp-version");
    EXPECT_EQ(api_version_for(u, Endpoint::embeddings), "emb-version");
    EXPECT_EQ(api_version_for(u, Endpoint::chat_completions), "general");
  }
}

TEST(ApiVersionFor, V1StyleHasNoneUnlessConfigured) {
  Upstream u = bare_azure(ApiStyle::v1);
  EXPECT_EQ(api_version_for(u, Endpoint::chat_completions), std::nullopt);
  EXPECT_EQ(api_version_for(u, Endpoint::responses), std::nullopt);
  u.api_version = "preview";
  EXPECT_EQ(api_version_for(u, Endpoint::chat_completions), "preview");
  EXPECT_EQ(api_version_for(u, Endpoint::responses), "preview");
}

}  // namespace
}  // namespace llmgw
