// The request pipeline (parse -> models -> route -> translate) run on hand-built requests, and the
// gateway's own replies (OpenAI error shape, statuses).
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/beast/http/fields.hpp>
#include <ostream>  // first: Boost 1.81 core/detail/string_view.hpp needs it but does not include it

#include <gtest/gtest.h>

#include <array>

#include <algorithm>
#include <exception>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <vector>

#include "llm_gateway/pipeline/context.hpp"
#include "llm_gateway/pipeline/local_reply.hpp"
#include "llm_gateway/pipeline/pipeline.hpp"
#include "test_support.hpp"

namespace llmgw {
namespace {

namespace http = boost::beast::http;
using http::verb;
using nlohmann::json;

// ---------------------------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------------------------

// Azure for the gpt-4o family (gpt-4o mapped to prod-4o), OpenAI for dall-e-3; no "*" route.
constexpr std::string_view kNoDefaultYaml = R"(
upstreams:
  azure:
    provider: azure
    base_url: https://contoso.openai.azure.com
    api_key: K
    deployments:
      gpt-4o: prod-4o
      gpt-4o-mini: mini-prod
  openai:
    provider: openai
    base_url: https://api.openai.com
    api_key: K2
routes:
  - {match: "gpt-4o*", upstream: azure}
  - {match: "dall-e-3", upstream: openai}
)";

// The same plus a catch-all to OpenAI.
const std::string kWithDefaultYaml =
    std::string(kNoDefaultYaml) + "  - {match: \"*\", upstream: openai}\n";

// A request the test owns; RequestContext only views it.
struct Request {
  verb method = verb::post;
  std::string target;
  std::string body;
  HeaderList headers;
};

Request json_request(verb method, std::string target, std::string body) {
  Request r;
  r.method = method;
  r.target = std::move(target);
  r.body = std::move(body);
  if (!r.body.empty()) r.headers.set(http::field::content_type, "application/json");
  return r;
}

Request get(std::string target) {
  return json_request(verb::get, std::move(target), "");
}

// Runs snapshot->pipeline.on_request(ctx) to completion on an io_context.
Verdict run_pipeline(const Snapshot& snapshot, RequestContext& ctx) {
  boost::asio::io_context io;
  std::optional<Verdict> verdict;
  std::exception_ptr error;
  boost::asio::co_spawn(io, snapshot.pipeline.on_request(ctx),
                        [&](std::exception_ptr e, Verdict v) {
                          error = e;
                          verdict = v;
                        });
  io.run();
  if (error) std::rethrow_exception(error);
  EXPECT_TRUE(verdict) << "the pipeline did not complete";
  return verdict.value_or(Verdict::proceed);
}

class PipelineTest : public ::testing::Test {
 protected:
  void use_config(std::string_view yaml) {
    auto cfg = test::load_ok(yaml);
    ASSERT_TRUE(cfg);
    snapshot_ = make_snapshot(cfg);
  }

  // Runs `req` through the pipeline of the current snapshot.
  Verdict run(const Request& request) {
    request_ = request;  // the context views it, and first_attempt_request reads it later
    const Request& req = request_;
    ctx_ = std::make_unique<RequestContext>();  // a fresh one per request, made in place
    ctx().config = snapshot_->config.get();
    ctx().request_id = "rid-1";
    ctx().peer = "127.0.0.1:5555";
    ctx().received = Clock::now();
    ctx().method = req.method;
    ctx().target = req.target;
    ctx().path = llmgw::classify_path(ctx().method, ctx().target);  // as the session does
    ctx().headers = &req.headers;
    ctx().body = req.body;
    ctx().bytes_in = req.body.size();
    return run_pipeline(*snapshot_, ctx());
  }

  json reply_json() const {
    EXPECT_TRUE(ctx().reply);
    if (!ctx().reply) return {};
    return json::parse(ctx().reply->body);
  }

  // Expects a local error reply with this status and code.
  void expect_error(unsigned status, std::string_view code) const {
    ASSERT_TRUE(ctx().reply);
    EXPECT_EQ(ctx().reply->status, status);
    EXPECT_EQ(ctx().reply->error_code, code);
    EXPECT_EQ(ctx().reply->content_type, "application/json");
    json body = json::parse(ctx().reply->body);
    EXPECT_EQ(body["error"]["code"], code);
    EXPECT_FALSE(ctx().upstream_status);
  }

  std::shared_ptr<const Snapshot> snapshot_;
  Request request_;
  std::unique_ptr<RequestContext> ctx_;
  RequestContext& ctx() const { return *ctx_; }
};

// ---------------------------------------------------------------------------------------------
// Snapshot
// ---------------------------------------------------------------------------------------------

// ---------------------------------------------------------------------------------------------
// Stage states inside the request context
// ---------------------------------------------------------------------------------------------

struct CountedState : StageState {
  std::vector<std::string>* log = nullptr;
  std::string name;
  ~CountedState() override {
    if (log) log->push_back(name);
  }
};
struct OtherBase {
  virtual ~OtherBase() = default;
  int other = 7;
};
// A second base class first: the StageState part is not at the start of the object.
struct TwoBasesState final : OtherBase, CountedState {};
struct HugeState final : CountedState {
  std::array<char, RequestContext::kInlineStateBytes> payload{};
};

TEST(RequestContextStates, BuiltInPlaceFoundByOwnerAndDestroyedNewestFirst) {
  std::vector<std::string> destroyed;
  const int owner_a = 0, owner_b = 0, owner_c = 0;
  {
    RequestContext ctx;
    auto& a = ctx.state<CountedState>(&owner_a);
    a.log = &destroyed;
    a.name = "a";
    auto& b = ctx.state<TwoBasesState>(&owner_b);
    b.log = &destroyed;
    b.name = "b";
    auto& huge = ctx.state<HugeState>(&owner_c);  // larger than the whole inline storage
    huge.log = &destroyed;
    huge.name = "huge";
    EXPECT_EQ(&ctx.state<CountedState>(&owner_a), &a);  // created once per owner
    EXPECT_EQ(ctx.find_state<TwoBasesState>(&owner_b), &b);
    EXPECT_EQ(ctx.find_state<TwoBasesState>(&owner_b)->other, 7);
    EXPECT_EQ(ctx.find_state<CountedState>(&destroyed), nullptr);
    EXPECT_EQ(ctx.heap_state_count(), 1u);  // only the one that does not fit
    EXPECT_GE(ctx.inline_state_bytes_used(), sizeof(CountedState) + sizeof(TwoBasesState));
    EXPECT_TRUE(destroyed.empty());
  }
  EXPECT_EQ(destroyed, (std::vector<std::string>{"huge", "b", "a"}));
}

TEST(RequestContextStates, StatesBeyondTheInlineStorageGoOnTheHeap) {
  RequestContext ctx;
  std::vector<int> owners(RequestContext::kInlineStateBytes / sizeof(CountedState) + 3);
  for (int& owner : owners) ctx.state<CountedState>(&owner).name = "x";
  EXPECT_GT(ctx.heap_state_count(), 0u);
  EXPECT_LE(ctx.inline_state_bytes_used(), RequestContext::kInlineStateBytes);
  for (int& owner : owners) EXPECT_EQ(ctx.find_state<CountedState>(&owner)->name, "x");
}

TEST_F(PipelineTest, SnapshotHoldsConfigAndStagesInOrder) {
  use_config(kWithDefaultYaml);
  ASSERT_TRUE(snapshot_->config);
  std::vector<std::string> names;
  for (const auto& stage : snapshot_->pipeline.stages()) names.emplace_back(stage->name());
  // Without metrics/access-log services the chain starts with authentication. Translation is
  // no stage: the router translates each attempt for its own target.
  const std::vector<std::string> expected{"authenticate", "parse",      "authorize", "models",
                                          "route",        "rate_limit", "account"};
  EXPECT_EQ(names, expected);
  auto pos = [&](std::string_view n) { return std::find(names.begin(), names.end(), n); };
  EXPECT_LT(pos("authenticate"), pos("parse"));
  EXPECT_LT(pos("parse"), pos("models"));
  EXPECT_LT(pos("models"), pos("route"));
  EXPECT_LT(pos("route"), pos("translate"));
}

// ---------------------------------------------------------------------------------------------
// Errors answered by the pipeline
// ---------------------------------------------------------------------------------------------

TEST_F(PipelineTest, InvalidJsonIs400InvalidJson) {
  use_config(kWithDefaultYaml);
  EXPECT_EQ(run(json_request(verb::post, "/v1/chat/completions", R"({"model":"gpt-4o",)")),
            Verdict::respond);
  expect_error(400, "invalid_json");
  EXPECT_EQ(reply_json()["error"]["type"], "invalid_request_error");
}

TEST_F(PipelineTest, ModelThatIsNotAStringIs400) {
  use_config(kWithDefaultYaml);
  EXPECT_EQ(run(json_request(verb::post, "/v1/chat/completions", R"({"model":4})")),
            Verdict::respond);
  ASSERT_TRUE(ctx().reply);
  EXPECT_EQ(ctx().reply->status, 400u);
  EXPECT_EQ(reply_json()["error"]["param"], "model");
}

TEST_F(PipelineTest, MissingModelOnChatIs400MissingModel) {
  use_config(kWithDefaultYaml);
  EXPECT_EQ(run(json_request(verb::post, "/v1/chat/completions", R"({"messages":[]})")),
            Verdict::respond);
  expect_error(400, "missing_model");
  EXPECT_EQ(reply_json()["error"]["param"], "model");
}

TEST_F(PipelineTest, EmptyModelOnChatIs400MissingModel) {
  use_config(kWithDefaultYaml);
  EXPECT_EQ(run(json_request(verb::post, "/v1/embeddings", R"({"model":"","input":"x"})")),
            Verdict::respond);
  expect_error(400, "missing_model");
}

TEST_F(PipelineTest, MissingModelOnMultipartTranscriptionIs400MissingModel) {
  use_config(kWithDefaultYaml);
  Request r;
  r.target = "/v1/audio/transcriptions";
  r.body = "--b\r\nContent-Disposition: form-data; name=\"language\"\r\n\r\nen\r\n--b--\r\n";
  r.headers.set(http::field::content_type, "multipart/form-data; boundary=b");
  EXPECT_EQ(run(r), Verdict::respond);
  expect_error(400, "missing_model");
}

TEST_F(PipelineTest, UnknownModelIs404ModelNotFound) {
  use_config(kNoDefaultYaml);
  EXPECT_EQ(run(json_request(verb::post, "/v1/chat/completions", R"({"model":"claude-3"})")),
            Verdict::respond);
  expect_error(404, "model_not_found");
  EXPECT_NE(reply_json()["error"]["message"].get<std::string>().find("claude-3"),
            std::string::npos);
}

TEST_F(PipelineTest, FilesWithoutModelAndNoStarRouteIs404NoDefaultRoute) {
  use_config(kNoDefaultYaml);
  EXPECT_EQ(run(get("/v1/files")), Verdict::respond);
  expect_error(404, "no_default_route");
}

// ---------------------------------------------------------------------------------------------
// GET /v1/models
// ---------------------------------------------------------------------------------------------

TEST_F(PipelineTest, ModelsListIs200WithListedModels) {
  use_config(kWithDefaultYaml);
  EXPECT_EQ(run(get("/v1/models")), Verdict::respond);
  ASSERT_TRUE(ctx().reply);
  EXPECT_EQ(ctx().reply->status, 200u);
  EXPECT_EQ(ctx().reply->content_type, "application/json");
  json body = reply_json();
  EXPECT_EQ(body["object"], "list");
  ASSERT_TRUE(body["data"].is_array());
  std::vector<std::string> ids;
  for (const auto& m : body["data"]) {
    EXPECT_EQ(m["object"], "model");
    EXPECT_TRUE(m.contains("created"));
    EXPECT_TRUE(m.contains("owned_by"));
    ids.push_back(m["id"].get<std::string>());
  }
  EXPECT_EQ(ids, (std::vector<std::string>{"gpt-4o", "gpt-4o-mini", "dall-e-3"}));
  EXPECT_FALSE(ctx().route);
}

TEST_F(PipelineTest, ModelsListWithoutV1Prefix) {
  use_config(kWithDefaultYaml);
  EXPECT_EQ(run(get("/models")), Verdict::respond);
  ASSERT_TRUE(ctx().reply);
  EXPECT_EQ(ctx().reply->status, 200u);
  EXPECT_EQ(reply_json()["object"], "list");
}

TEST_F(PipelineTest, ModelsGetKnownIdIs200) {
  use_config(kWithDefaultYaml);
  EXPECT_EQ(run(get("/v1/models/gpt-4o-mini")), Verdict::respond);
  ASSERT_TRUE(ctx().reply);
  EXPECT_EQ(ctx().reply->status, 200u);
  json body = reply_json();
  EXPECT_EQ(body["id"], "gpt-4o-mini");
  EXPECT_EQ(body["object"], "model");
}

TEST_F(PipelineTest, ModelsGetUnknownIdIs404ModelNotFound) {
  use_config(kWithDefaultYaml);
  EXPECT_EQ(run(get("/v1/models/o3")), Verdict::respond);
  expect_error(404, "model_not_found");
}

TEST_F(PipelineTest, ModelsGetPercentEncodedIdIsDecoded) {
  use_config(R"(
upstreams:
  a: {provider: openai, base_url: "https://api.openai.com"}
routes:
  - {match: "org/model x", upstream: a}
)");
  EXPECT_EQ(run(get("/v1/models/org%2Fmodel%20x")), Verdict::respond);
  ASSERT_TRUE(ctx().reply);
  EXPECT_EQ(ctx().reply->status, 200u);
  EXPECT_EQ(reply_json()["id"], "org/model x");
}

// ---------------------------------------------------------------------------------------------
// Requests that proceed to the upstream
// ---------------------------------------------------------------------------------------------

TEST_F(PipelineTest, ValidChatRequestProceedsWithTranslatedTarget) {
  use_config(kWithDefaultYaml);
  EXPECT_EQ(run(json_request(verb::post, "/v1/chat/completions",
                             R"({"model":"gpt-4o","messages":[],"stream":true})")),
            Verdict::proceed);
  EXPECT_FALSE(ctx().reply);
  EXPECT_EQ(ctx().model, "gpt-4o");
  EXPECT_TRUE(ctx().body_facts.stream);
  ASSERT_TRUE(ctx().route);
  EXPECT_EQ(ctx().route->upstream, 0u);
  EXPECT_EQ(ctx().route->deployment, "prod-4o");
  ASSERT_NE(ctx().upstream, nullptr);
  EXPECT_EQ(ctx().upstream->name, "azure");
  const UpstreamRequest upstream_request = test::first_attempt_request(ctx());
  EXPECT_EQ(upstream_request.method, verb::post);
  EXPECT_EQ(upstream_request.target,
            "/openai/deployments/prod-4o/chat/completions?api-version=2024-10-21");
  EXPECT_EQ(upstream_request.value_of("api-key").value_or(""), "K");
  EXPECT_EQ(upstream_request.value_of("x-request-id").value_or(""), "rid-1");
}

TEST_F(PipelineTest, OpenAIRoutedRequestProceeds) {
  use_config(kWithDefaultYaml);
  EXPECT_EQ(run(json_request(verb::post, "/v1/images/generations", R"({"model":"dall-e-3"})")),
            Verdict::proceed);
  const UpstreamRequest upstream_request = test::first_attempt_request(ctx());
  EXPECT_EQ(upstream_request.target, "/v1/images/generations");
  EXPECT_EQ(upstream_request.value_of("authorization").value_or(""), "Bearer K2");
}

TEST_F(PipelineTest, AzureDeploymentPathNamesTheModel) {
  use_config(kWithDefaultYaml);
  EXPECT_EQ(
      run(json_request(verb::post, "/openai/deployments/gpt-4o-mini/chat/completions?api-version=1",
                       R"({"messages":[]})")),
      Verdict::proceed);
  EXPECT_EQ(ctx().model, "gpt-4o-mini");
  const UpstreamRequest upstream_request = test::first_attempt_request(ctx());
  EXPECT_EQ(upstream_request.target,
            "/openai/deployments/mini-prod/chat/completions?api-version=2024-10-21");
}

TEST_F(PipelineTest, FilesWithoutModelUseTheStarRoute) {
  use_config(kWithDefaultYaml);
  EXPECT_EQ(run(get("/v1/files")), Verdict::proceed);
  EXPECT_FALSE(ctx().model);
  ASSERT_TRUE(ctx().route);
  EXPECT_EQ(ctx().route->route, 2u);
  const UpstreamRequest upstream_request = test::first_attempt_request(ctx());
  EXPECT_EQ(upstream_request.target, "/v1/files");
}

TEST_F(PipelineTest, DeleteModelIsForwardedNotAnsweredLocally) {
  use_config(kWithDefaultYaml);
  EXPECT_EQ(run(json_request(verb::delete_, "/v1/models/ft:gpt-4o:org", "")), Verdict::proceed);
  EXPECT_FALSE(ctx().reply);
  const UpstreamRequest upstream_request = test::first_attempt_request(ctx());
  EXPECT_EQ(upstream_request.method, verb::delete_);
  EXPECT_EQ(upstream_request.target, "/v1/models/ft:gpt-4o:org");
}

// ---------------------------------------------------------------------------------------------
// local_reply
// ---------------------------------------------------------------------------------------------

struct ErrorRow {
  GatewayError error;
  unsigned status;
  std::string_view type;
  bool param_is_model;
};

const ErrorRow kErrors[] = {
    {GatewayError::bad_request, 400, "invalid_request_error", false},
    {GatewayError::invalid_json, 400, "invalid_request_error", false},
    {GatewayError::missing_model, 400, "invalid_request_error", true},
    {GatewayError::model_not_found, 404, "invalid_request_error", true},
    {GatewayError::no_default_route, 404, "invalid_request_error", false},
    {GatewayError::not_found, 404, "invalid_request_error", false},
    {GatewayError::request_too_large, 413, "invalid_request_error", false},
    {GatewayError::header_too_large, 431, "invalid_request_error", false},
    {GatewayError::upstream_unreachable, 502, "api_error", false},
    {GatewayError::upstream_tls_error, 502, "api_error", false},
    {GatewayError::upstream_protocol_error, 502, "api_error", false},
    {GatewayError::upstream_timeout, 504, "api_error", false},
    {GatewayError::service_unavailable, 503, "api_error", false},
};

TEST(ErrorReply, EveryGatewayErrorHasItsStatusAndOpenAIShape) {
  for (const ErrorRow& row : kErrors) {
    SCOPED_TRACE(testing::Message() << "GatewayError #" << static_cast<int>(row.error));
    LocalReply r = error_reply(row.error, "it \"broke\"\n");
    EXPECT_EQ(r.status, row.status);
    EXPECT_EQ(r.content_type, "application/json");
    EXPECT_NE(r.error_code, "");
    json body = json::parse(r.body);
    ASSERT_TRUE(body.is_object());
    EXPECT_EQ(body.size(), 1u);
    const json& e = body["error"];
    ASSERT_TRUE(e.is_object());
    EXPECT_EQ(e.size(), 4u);
    EXPECT_EQ(e["message"], "it \"broke\"\n");
    EXPECT_EQ(e["type"], std::string(row.type));
    EXPECT_EQ(e["code"], r.error_code);
    if (row.param_is_model) {
      EXPECT_EQ(e["param"], "model");
    } else {
      EXPECT_TRUE(e["param"].is_null());
    }
  }
}

TEST(ErrorReply, CodesNameTheError) {
  EXPECT_EQ(error_reply(GatewayError::invalid_json, "m").error_code, "invalid_json");
  EXPECT_EQ(error_reply(GatewayError::missing_model, "m").error_code, "missing_model");
  EXPECT_EQ(error_reply(GatewayError::model_not_found, "m").error_code, "model_not_found");
  EXPECT_EQ(error_reply(GatewayError::no_default_route, "m").error_code, "no_default_route");
  EXPECT_EQ(error_reply(GatewayError::request_too_large, "m").error_code, "request_too_large");
  EXPECT_EQ(error_reply(GatewayError::upstream_timeout, "m").error_code, "upstream_timeout");
}

TEST(ErrorReply, ExplicitFields) {
  LocalReply r = error_reply(429, "rate_limit_error", "rate_limited", "key", "slow down");
  EXPECT_EQ(r.status, 429u);
  EXPECT_EQ(r.error_code, "rate_limited");
  json e = json::parse(r.body)["error"];
  EXPECT_EQ(e["message"], "slow down");
  EXPECT_EQ(e["type"], "rate_limit_error");
  EXPECT_EQ(e["param"], "key");
  EXPECT_EQ(e["code"], "rate_limited");
}

TEST(ErrorReply, ExplicitFieldsWithoutParam) {
  LocalReply r = error_reply(418, "t", "c", std::nullopt, "m");
  EXPECT_TRUE(json::parse(r.body)["error"]["param"].is_null());
}

TEST(JsonReply, CarriesStatusAndBody) {
  LocalReply r = json_reply(201, R"({"ok":true})");
  EXPECT_EQ(r.status, 201u);
  EXPECT_EQ(r.content_type, "application/json");
  EXPECT_EQ(r.body, R"({"ok":true})");
  EXPECT_EQ(r.error_code, "");
}

}  // namespace
}  // namespace llmgw

namespace llmgw {
namespace {

// A stage that records what the pipeline asked of it.
struct Probe final : Stage {
  explicit Probe(Verdict first, bool reads_bodies = false) : first_(first), reads_(reads_bodies) {}
  std::string_view name() const override { return "probe"; }
  Verdict on_request(RequestContext&) override {
    ++sync_calls;
    return first_;
  }
  boost::asio::awaitable<Verdict> on_request_async(RequestContext&) override {
    ++async_calls;
    co_return Verdict::proceed;
  }
  void on_response_body(RequestContext&, std::string_view piece) override { seen += piece; }
  bool wants_response_body() const override { return reads_; }
  int sync_calls = 0;
  int async_calls = 0;
  std::string seen;

 private:
  Verdict first_;
  bool reads_;
};

TEST(PipelineChain, OnlyAStageThatSaysWaitIsAwaited) {
  std::vector<std::unique_ptr<Stage>> stages;
  stages.push_back(std::make_unique<Probe>(Verdict::proceed));
  stages.push_back(std::make_unique<Probe>(Verdict::wait));
  stages.push_back(std::make_unique<Probe>(Verdict::proceed));
  auto* a = static_cast<Probe*>(stages[0].get());
  auto* b = static_cast<Probe*>(stages[1].get());
  auto* c = static_cast<Probe*>(stages[2].get());
  Snapshot snapshot{std::make_shared<config::Config>(), Pipeline(std::move(stages))};
  RequestContext ctx;
  EXPECT_EQ(run_pipeline(snapshot, ctx), Verdict::proceed);
  EXPECT_EQ(a->sync_calls + b->sync_calls + c->sync_calls, 3);
  EXPECT_EQ(a->async_calls, 0);
  EXPECT_EQ(b->async_calls, 1);  // said wait: awaited once, and the chain went on
  EXPECT_EQ(c->async_calls, 0);
}

TEST(PipelineChain, BodyPiecesReachOnlyTheStagesThatReadThem) {
  std::vector<std::unique_ptr<Stage>> stages;
  stages.push_back(std::make_unique<Probe>(Verdict::proceed, true));
  stages.push_back(std::make_unique<Probe>(Verdict::proceed, false));
  auto* reader = static_cast<Probe*>(stages[0].get());
  auto* other = static_cast<Probe*>(stages[1].get());
  Pipeline pipeline(std::move(stages));
  RequestContext ctx;
  pipeline.on_response_body(ctx, "abc");
  pipeline.on_response_body(ctx, "def");
  EXPECT_EQ(reader->seen, "abcdef");
  EXPECT_EQ(other->seen, "");
}

// The gateway's response fields: set and replace by name (any case), numbers, order kept, and
// the upstream's fields of the same names replaced when they go into a Beast message.
TEST(AddedFields, SetReplaceRenderAndApply) {
  AddedFields added;
  EXPECT_TRUE(added.empty());
  added.set("x-gateway-request-id", "rid-1");
  added.set("x-ratelimit-limit-requests", std::int64_t{10});
  added.set("x-ratelimit-remaining-requests", std::int64_t{-1});
  added.set("X-Gateway-Request-Id", "rid-2");  // replaces, keeps its place
  const std::string long_value(300, 'v');      // past the inline storage
  added.set("x-long", long_value);
  EXPECT_TRUE(added.replaces("X-RATELIMIT-LIMIT-REQUESTS"));
  EXPECT_FALSE(added.replaces("x-ratelimit-limit-tokens"));
  EXPECT_EQ(added.get("x-gateway-request-id"), "rid-2");
  EXPECT_EQ(added.get("x-long"), long_value);
  std::string head = "HTTP/1.1 200 OK\r\n";
  added.append_to(head);
  EXPECT_EQ(head,
            "HTTP/1.1 200 OK\r\n"
            "x-gateway-request-id: rid-2\r\n"
            "x-ratelimit-limit-requests: 10\r\n"
            "x-ratelimit-remaining-requests: -1\r\n"
            "x-long: " +
                long_value + "\r\n");

  http::fields message;
  message.insert("X-RateLimit-Limit-Requests", "5000");
  message.insert("x-ratelimit-limit-tokens", "30000");
  added.apply_to(message);
  EXPECT_EQ(message.count("x-ratelimit-limit-requests"), 1u);
  EXPECT_EQ(message["x-ratelimit-limit-requests"], "10");
  EXPECT_EQ(message["x-ratelimit-limit-tokens"], "30000");
  EXPECT_EQ(message["x-gateway-request-id"], "rid-2");
}

}  // namespace
}  // namespace llmgw
