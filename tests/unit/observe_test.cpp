// Observability: Prometheus metrics (label values bounded by the configuration, cached handles),
// the JSON access-log line, and the access-log writer (file output, reopen after rotation).
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/beast/http/fields.hpp>
#include <ostream>  // first: Boost 1.81 core/detail/string_view.hpp needs it but does not include it

#include <gtest/gtest.h>

#include <unistd.h>
#include <chrono>
#include <cstdio>
#include <ctime>
#include <exception>
#include <filesystem>
#include <fstream>
#include <map>
#include <memory>
#include <nlohmann/json.hpp>
#include <optional>
#include <regex>
#include <set>
#include <sstream>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

#include "llm_gateway/observability/access_log.hpp"
#include "llm_gateway/observability/log.hpp"
#include "llm_gateway/observability/metrics.hpp"
#include "llm_gateway/pipeline/context.hpp"
#include "llm_gateway/pipeline/pipeline.hpp"
#include "llm_gateway/stages/observe_stages.hpp"
#include "test_support.hpp"

namespace llmgw {
namespace {

namespace http = boost::beast::http;
using nlohmann::json;
using observability::Metrics;

constexpr std::string_view kYaml = R"(
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
  - {match: "*", upstream: openai}
keys:
  - {name: team-a, key: sk-team-a-0001}
  - {name: team-b, key: sk-team-b-0002}
)";

constexpr std::string_view kNoKeysYaml = R"(
upstreams:
  openai:
    provider: openai
    base_url: https://api.openai.com
routes:
  - {match: "gpt-4o", upstream: openai}
)";

// ---------------------------------------------------------------------------------------------
// Prometheus text parsing (enough for the gateway's own output)
// ---------------------------------------------------------------------------------------------

struct Series {
  std::map<std::string, std::string> labels;
  double value = 0;
};

// The samples of metric `name` (exact name, so "x_count" is not "x").
std::vector<Series> series(const std::string& text, std::string_view name) {
  std::vector<Series> out;
  std::istringstream in(text);
  std::string line;
  while (std::getline(in, line)) {
    if (line.empty() || line[0] == '#') continue;
    const std::size_t end_name = line.find_first_of("{ ");
    if (line.compare(0, end_name, name) != 0 || end_name != name.size()) continue;
    Series s;
    std::size_t pos = end_name;
    if (line[pos] == '{') {
      ++pos;
      while (pos < line.size() && line[pos] != '}') {
        const std::size_t eq = line.find('=', pos);
        std::string key = line.substr(pos, eq - pos);
        std::string value;
        std::size_t p = eq + 2;  // skip ="
        while (p < line.size() && line[p] != '"') {
          if (line[p] == '\\' && p + 1 < line.size()) ++p;
          value += line[p++];
        }
        s.labels[key] = value;
        pos = p + 1;
        if (pos < line.size() && line[pos] == ',') ++pos;
      }
      ++pos;  // '}'
    }
    s.value = std::stod(line.substr(pos + 1));
    out.push_back(std::move(s));
  }
  return out;
}

// The value of the one sample of `name` with exactly these labels, or nullopt.
std::optional<double> sample(const std::string& text, std::string_view name,
                             const std::map<std::string, std::string>& labels) {
  for (const auto& s : series(text, name)) {
    if (s.labels == labels) return s.value;
  }
  return std::nullopt;
}

// ---------------------------------------------------------------------------------------------
// Metrics
// ---------------------------------------------------------------------------------------------

class MetricsTest : public ::testing::Test {
 protected:
  void SetUp() override {
    cfg_ = test::load_ok(kYaml);
    ASSERT_TRUE(cfg_);
    metrics_ = std::make_unique<Metrics>(*cfg_, 2, "1.2.3-test");
  }
  std::string label_of(std::size_t model) {
    // The label a model index renders as, read back through a counter.
    auto& c = metrics_->requests(1, Endpoint::other, model, metrics_->upstream_none(),
                                 metrics_->key_anonymous(), 599);
    c.Increment();
    for (const auto& s : series(metrics_->render(), "llm_gateway_requests_total")) {
      if (s.labels.at("code") == "599" && s.labels.at("endpoint") == "other") {
        const std::string l = s.labels.at("model");
        if (seen_labels_.insert(l).second) return l;
      }
    }
    return "?";
  }
  std::shared_ptr<const config::Config> cfg_;
  std::unique_ptr<Metrics> metrics_;
  std::set<std::string> seen_labels_;
};

TEST_F(MetricsTest, ModelLabelIsBoundedByTheConfiguration) {
  const std::string gpt4o = "gpt-4o";
  const std::string mini = "gpt-4o-mini";
  const std::string dalle = "dall-e-3";
  const std::string dated = "gpt-4o-2024-08-06";
  const std::string claude = "claude-3";
  Metrics& m = *metrics_;
  // A model the config names is its own label, whatever route matched it.
  EXPECT_EQ(m.model_label(&gpt4o, 0), m.model_label(&gpt4o, std::nullopt));
  EXPECT_NE(m.model_label(&gpt4o, 0), m.model_label(&mini, 0));
  // A literal route names a model too.
  EXPECT_EQ(m.model_label(&dalle, 1), m.model_label(&dalle, std::nullopt));
  // Other models: the pattern of the route that matched; no route: "none".
  EXPECT_NE(m.model_label(&dated, 0), m.model_label(&gpt4o, 0));
  EXPECT_EQ(m.model_label(&dated, 0), m.model_label(&claude, 0));
  EXPECT_NE(m.model_label(&claude, 2), m.model_label(&claude, 0));
  EXPECT_EQ(m.model_label(&claude, std::nullopt), m.model_label(nullptr, std::nullopt));
  EXPECT_EQ(m.model_label(nullptr, 2), m.model_label(&claude, 2));

  EXPECT_EQ(label_of(m.model_label(&gpt4o, 0)), "gpt-4o");
  EXPECT_EQ(label_of(m.model_label(&mini, 0)), "gpt-4o-mini");
  EXPECT_EQ(label_of(m.model_label(&dated, 0)), "gpt-4o*");
  EXPECT_EQ(label_of(m.model_label(&claude, 2)), "*");
  EXPECT_EQ(label_of(m.model_label(&claude, std::nullopt)), "none");
}

TEST_F(MetricsTest, RenderHasBuildInfo) {
  const std::string text = metrics_->render();
  EXPECT_NE(text.find("llm_gateway_build_info{version=\"1.2.3-test\"} 1"), std::string::npos)
      << text;
  EXPECT_EQ(sample(text, "llm_gateway_build_info", {{"version", "1.2.3-test"}}), 1.0);
  EXPECT_NE(text.find("# TYPE llm_gateway_build_info gauge"), std::string::npos);
  EXPECT_EQ(sample(text, "llm_gateway_in_flight_requests", {}), 0.0);
  EXPECT_EQ(
      sample(text, "llm_gateway_upstream_connections", {{"upstream", "azure"}, {"state", "idle"}}),
      0.0);
  EXPECT_EQ(sample(text, "llm_gateway_rate_limit_store_errors_total", {{"store", "redis"}}), 0.0);
}

TEST_F(MetricsTest, CountersAppearWithTheirLabelsAndValues) {
  Metrics& m = *metrics_;
  const std::string gpt4o = "gpt-4o";
  const std::size_t model = m.model_label(&gpt4o, 0);
  m.requests(0, Endpoint::chat_completions, model, 0, 0, 200).Increment();
  m.requests(0, Endpoint::chat_completions, model, 0, 0, 200).Increment();
  m.requests(1, Endpoint::chat_completions, model, 0, 0, 200).Increment();  // the other worker
  m.requests(0, Endpoint::chat_completions, model, 0, 1, 429).Increment();
  m.requests(0, Endpoint::models, m.model_label(nullptr, std::nullopt), m.upstream_none(),
             m.key_unauthenticated(), 401)
      .Increment();
  m.requests(0, Endpoint::embeddings, model, 0, m.key_anonymous(), 200).Increment();
  m.tokens(0, model, 1, false).Increment(10);
  m.tokens(1, model, 1, false).Increment(2);
  m.tokens(0, model, 1, true).Increment(5);
  m.rate_limited(0, 1, 2).Increment();
  m.upstream_responses(0, 1, 503).Increment();
  m.upstream_errors(0, 0, 2).Increment();
  m.content_filter(0, 0, 3, 3, true).Increment();
  m.content_filtered_requests(0, 1, 0).Increment();
  m.store_errors(1).Increment();
  m.duration(0, Endpoint::chat_completions, model, 0).Observe(0.2);
  m.in_flight().Increment();

  const std::string text = m.render();
  const std::string req = "llm_gateway_requests_total";
  EXPECT_EQ(sample(text, req,
                   {{"endpoint", "chat_completions"},
                    {"model", "gpt-4o"},
                    {"upstream", "azure"},
                    {"key", "team-a"},
                    {"code", "200"}}),
            3.0);
  EXPECT_EQ(sample(text, req,
                   {{"endpoint", "chat_completions"},
                    {"model", "gpt-4o"},
                    {"upstream", "azure"},
                    {"key", "team-b"},
                    {"code", "429"}}),
            1.0);
  EXPECT_EQ(sample(text, req,
                   {{"endpoint", "models"},
                    {"model", "none"},
                    {"upstream", "none"},
                    {"key", "unauthenticated"},
                    {"code", "401"}}),
            1.0);
  EXPECT_EQ(sample(text, req,
                   {{"endpoint", "embeddings"},
                    {"model", "gpt-4o"},
                    {"upstream", "azure"},
                    {"key", "anonymous"},
                    {"code", "200"}}),
            1.0);
  EXPECT_EQ(series(text, req).size(), 4u);
  const std::string tok = "llm_gateway_tokens_total";
  EXPECT_EQ(sample(text, tok, {{"model", "gpt-4o"}, {"key", "team-b"}, {"type", "prompt"}}), 12.0);
  EXPECT_EQ(sample(text, tok, {{"model", "gpt-4o"}, {"key", "team-b"}, {"type", "completion"}}),
            5.0);
  EXPECT_EQ(series(text, tok).size(), 2u);
  EXPECT_EQ(
      sample(text, "llm_gateway_rate_limited_total", {{"key", "team-b"}, {"limit", "concurrency"}}),
      1.0);
  EXPECT_EQ(sample(text, "llm_gateway_upstream_responses_total",
                   {{"upstream", "openai"}, {"code", "503"}}),
            1.0);
  EXPECT_EQ(sample(text, "llm_gateway_upstream_errors_total",
                   {{"upstream", "azure"}, {"kind", "timeout"}}),
            1.0);
  EXPECT_EQ(sample(text, "llm_gateway_content_filter_total",
                   {{"stage", "prompt"},
                    {"category", "self_harm"},
                    {"severity", "medium"},
                    {"filtered", "true"}}),
            1.0);
  EXPECT_EQ(sample(text, "llm_gateway_content_filtered_requests_total",
                   {{"stage", "completion"}, {"key", "team-a"}}),
            1.0);
  EXPECT_EQ(sample(text, "llm_gateway_rate_limit_store_errors_total", {{"store", "redis"}}), 1.0);
  EXPECT_EQ(sample(text, "llm_gateway_request_duration_seconds_count",
                   {{"endpoint", "chat_completions"}, {"model", "gpt-4o"}, {"upstream", "azure"}}),
            1.0);
  EXPECT_EQ(sample(text, "llm_gateway_in_flight_requests", {}), 1.0);
}

// Histograms are counted per worker too: each render adds what the shards gained since the last
// one, bucket by bucket, and nothing twice.
TEST_F(MetricsTest, HistogramShardsAddUpAcrossWorkersAndRenders) {
  Metrics& m = *metrics_;
  const std::string gpt4o = "gpt-4o";
  const std::size_t model = m.model_label(&gpt4o, 0);
  const std::map<std::string, std::string> labels{
      {"endpoint", "chat_completions"}, {"model", "gpt-4o"}, {"upstream", "azure"}};
  const auto bucket = [&](const std::string& text, const std::string& le) {
    auto with_le = labels;
    with_le["le"] = le;
    return sample(text, "llm_gateway_request_duration_seconds_bucket", with_le);
  };
  m.duration(0, Endpoint::chat_completions, model, 0).Observe(0.005);  // on a bound: its bucket
  m.duration(1, Endpoint::chat_completions, model, 0).Observe(0.2);
  std::string text = m.render();
  EXPECT_EQ(bucket(text, "0.005"), 1.0);
  EXPECT_EQ(bucket(text, "0.1"), 1.0);
  EXPECT_EQ(bucket(text, "0.25"), 2.0);
  EXPECT_EQ(sample(text, "llm_gateway_request_duration_seconds_count", labels), 2.0);
  EXPECT_DOUBLE_EQ(*sample(text, "llm_gateway_request_duration_seconds_sum", labels), 0.205);

  m.duration(1, Endpoint::chat_completions, model, 0).Observe(1000);  // past every bound
  text = m.render();
  EXPECT_EQ(bucket(text, "600"), 2.0);
  EXPECT_EQ(bucket(text, "+Inf"), 3.0);
  EXPECT_EQ(sample(text, "llm_gateway_request_duration_seconds_count", labels), 3.0);
  EXPECT_DOUBLE_EQ(*sample(text, "llm_gateway_request_duration_seconds_sum", labels), 1000.205);
  text = m.render();  // nothing new: nothing added again
  EXPECT_EQ(sample(text, "llm_gateway_request_duration_seconds_count", labels), 3.0);
}

// Workers count on their own threads while /metrics is rendered on another: every count arrives,
// none twice (and the TSan suite runs this for data races).
TEST_F(MetricsTest, CountsMadeWhileRenderingAllArrive) {
  Metrics& m = *metrics_;
  const std::string gpt4o = "gpt-4o";
  const std::size_t model = m.model_label(&gpt4o, 0);
  constexpr int kPerWorker = 20'000;
  std::vector<std::thread> workers;
  for (unsigned w = 0; w < 2; ++w) {
    workers.emplace_back([&m, w, model] {
      for (int i = 0; i < kPerWorker; ++i) {
        m.requests(w, Endpoint::chat_completions, model, 0, 0, 200).Increment();
        m.duration(w, Endpoint::chat_completions, model, 0).Observe(0.01);
        // A series first used mid-run: made while renders read the worker's shards.
        if (i == kPerWorker / 2) m.retries(w, Endpoint::chat_completions).Increment();
      }
    });
  }
  for (int i = 0; i < 20; ++i) m.render();
  for (auto& t : workers) t.join();
  const std::string text = m.render();
  EXPECT_EQ(sample(text, "llm_gateway_requests_total",
                   {{"endpoint", "chat_completions"},
                    {"model", "gpt-4o"},
                    {"upstream", "azure"},
                    {"key", "team-a"},
                    {"code", "200"}}),
            2.0 * kPerWorker);
  EXPECT_EQ(sample(text, "llm_gateway_request_duration_seconds_count",
                   {{"endpoint", "chat_completions"}, {"model", "gpt-4o"}, {"upstream", "azure"}}),
            2.0 * kPerWorker);
  EXPECT_EQ(sample(text, "llm_gateway_retries_total", {{"endpoint", "chat_completions"}}), 2.0);
}

TEST_F(MetricsTest, SameLabelsGiveTheSameHandle) {
  Metrics& m = *metrics_;
  const std::string gpt4o = "gpt-4o";
  const std::size_t model = m.model_label(&gpt4o, 0);
  auto* a = &m.requests(0, Endpoint::chat_completions, model, 0, 0, 200);
  auto* b = &m.requests(0, Endpoint::chat_completions, model, 0, 0, 200);
  EXPECT_EQ(a, b);
  // Each worker counts in its own shard of the one series (render() adds them up: see
  // CountersAppearWithTheirLabelsAndValues).
  EXPECT_NE(&m.requests(1, Endpoint::chat_completions, model, 0, 0, 200), a);
  EXPECT_EQ(&m.requests(1, Endpoint::chat_completions, model, 0, 0, 200),
            &m.requests(1, Endpoint::chat_completions, model, 0, 0, 200));
  EXPECT_NE(&m.requests(0, Endpoint::chat_completions, model, 0, 0, 201), a);
  EXPECT_NE(&m.requests(0, Endpoint::chat_completions, model, 0, 1, 200), a);
  EXPECT_NE(&m.requests(0, Endpoint::chat_completions, model, 1, 0, 200), a);
  EXPECT_NE(&m.requests(0, Endpoint::completions, model, 0, 0, 200), a);
  EXPECT_EQ(&m.tokens(0, model, 0, true), &m.tokens(0, model, 0, true));
  EXPECT_NE(&m.tokens(0, model, 0, true), &m.tokens(0, model, 0, false));
  EXPECT_EQ(&m.duration(0, Endpoint::chat_completions, model, 0),
            &m.duration(0, Endpoint::chat_completions, model, 0));
  EXPECT_NE(static_cast<void*>(&m.duration(0, Endpoint::chat_completions, model, 0)),
            static_cast<void*>(&m.first_byte(0, Endpoint::chat_completions, model, 0)));
  EXPECT_EQ(&m.content_filter(1, 1, 2, 1, false), &m.content_filter(1, 1, 2, 1, false));
  EXPECT_NE(&m.content_filter(0, 1, 2, 1, false), &m.content_filter(0, 1, 2, 1, true));
}

TEST_F(MetricsTest, ClientInventedModelsDoNotCreateSeries) {
  Metrics& m = *metrics_;
  std::vector<observability::CounterShard*> handles;
  for (int i = 0; i < 50; ++i) {
    const std::string invented = "gpt-4o-invented-" + std::to_string(i);
    handles.push_back(
        &m.requests(0, Endpoint::chat_completions, m.model_label(&invented, 0), 0, 0, 200));
    handles.back()->Increment();
  }
  for (auto* h : handles) EXPECT_EQ(h, handles.front());
  const std::string text = m.render();
  EXPECT_EQ(text.find("invented"), std::string::npos);
  const auto all = series(text, "llm_gateway_requests_total");
  ASSERT_EQ(all.size(), 1u);
  EXPECT_EQ(all[0].labels.at("model"), "gpt-4o*");
  EXPECT_EQ(all[0].value, 50.0);
}

TEST_F(MetricsTest, ManyLabelCombinationsDoNotCollide) {
  // Every (endpoint, model, upstream, key, code) combination is its own series. (No literal
  // route here: a literal route's pattern label equals its model label, by design.)
  auto cfg = test::load_ok(R"(
upstreams:
  azure: {provider: azure, base_url: "https://contoso.openai.azure.com", api_key: K,
          deployments: {gpt-4o: prod-4o, gpt-4o-mini: mini-prod}}
  openai: {provider: openai, base_url: "https://api.openai.com", api_key: K2}
routes:
  - {match: "gpt-4o*", upstream: azure}
  - {match: "*", upstream: openai}
keys:
  - {name: team-a, key: sk-team-a-0001}
  - {name: team-b, key: sk-team-b-0002}
)");
  ASSERT_TRUE(cfg);
  Metrics m(*cfg, 1, "v");
  const std::size_t models = m.model_label(nullptr, std::nullopt) + 1;
  std::set<observability::CounterShard*> seen;
  std::size_t n = 0;
  for (Endpoint e : {Endpoint::chat_completions, Endpoint::embeddings, Endpoint::other}) {
    for (std::size_t model = 0; model < models; ++model) {
      for (std::size_t up = 0; up <= m.upstream_none(); ++up) {
        for (std::size_t key = 0; key <= m.key_unauthenticated(); ++key) {
          for (unsigned code : {200u, 404u, 429u, 502u}) {
            seen.insert(&m.requests(0, e, model, up, key, code));
            ++n;
          }
        }
      }
    }
  }
  EXPECT_EQ(seen.size(), n);
}

// MetricsStage in a pipeline: one request counted with the labels the stages learned.
TEST(MetricsStage, CountsARequestAndTracksInFlight) {
  auto cfg = test::load_ok(kYaml);
  ASSERT_TRUE(cfg);
  auto metrics = std::make_shared<Metrics>(*cfg, 2, "v");
  PipelineServices services;
  services.metrics = metrics;
  auto snapshot = make_snapshot(cfg, services);
  {
    HeaderList headers;
    headers.set(http::field::content_type, "application/json");
    headers.set(http::field::authorization, "Bearer sk-team-b-0002");
    const std::string body = R"({"model":"gpt-4o-2024-08-06","messages":[]})";
    RequestContext ctx;
    ctx.config = cfg.get();
    ctx.method = http::verb::post;
    ctx.target = "/v1/chat/completions";
    ctx.path = llmgw::classify_path(ctx.method, ctx.target);  // as the session does
    ctx.headers = &headers;
    ctx.body = body;
    ctx.received = Clock::now();
    ctx.worker = 1;
    boost::asio::io_context io;
    std::exception_ptr error;
    boost::asio::co_spawn(io, snapshot->pipeline.on_request(ctx),
                          [&](std::exception_ptr e, Verdict) { error = e; });
    io.run();
    if (error) std::rethrow_exception(error);
    ASSERT_TRUE(ctx.route);  // admitted
    EXPECT_EQ(sample(metrics->render(), "llm_gateway_in_flight_requests", {}), 1.0);
    ctx.status = 200;
    ctx.upstream_status = 200;
    ctx.streamed = true;
    HeaderList response;
    snapshot->pipeline.on_response_headers(ctx, 200, response);
    EXPECT_EQ(sample(metrics->render(), "llm_gateway_active_streams", {}), 1.0);
    ctx.usage = accounting::Usage{7, 3, 10};
    snapshot->pipeline.on_response_end(ctx);
    snapshot->pipeline.on_complete(ctx);
    // Every stage's state was built inside the context, none on the heap.
    EXPECT_GT(ctx.inline_state_bytes_used(), 0u);
    EXPECT_EQ(ctx.heap_state_count(), 0u);
    const std::string text = metrics->render();
    EXPECT_EQ(sample(text, "llm_gateway_requests_total",
                     {{"endpoint", "chat_completions"},
                      {"model", "gpt-4o*"},
                      {"upstream", "azure"},
                      {"key", "team-b"},
                      {"code", "200"}}),
              1.0)
        << text;
    EXPECT_EQ(sample(text, "llm_gateway_tokens_total",
                     {{"model", "gpt-4o*"}, {"key", "team-b"}, {"type", "prompt"}}),
              7.0);
    EXPECT_EQ(sample(text, "llm_gateway_upstream_responses_total",
                     {{"upstream", "azure"}, {"code", "200"}}),
              1.0);
  }
  // The request's context is gone: the gauges are back to zero.
  const std::string text = metrics->render();
  EXPECT_EQ(sample(text, "llm_gateway_in_flight_requests", {}), 0.0);
  EXPECT_EQ(sample(text, "llm_gateway_active_streams", {}), 0.0);
}

// ---------------------------------------------------------------------------------------------
// AccessLogStage::render
// ---------------------------------------------------------------------------------------------

const std::vector<std::string> kLogFields{"ts",
                                          "request_id",
                                          "key",
                                          "method",
                                          "path",
                                          "endpoint",
                                          "model",
                                          "upstream",
                                          "deployment",
                                          "attempts",
                                          "status",
                                          "stream",
                                          "bytes_in",
                                          "bytes_out",
                                          "duration_ms",
                                          "upstream_first_byte_ms",
                                          "overhead_us",
                                          "prompt_tokens",
                                          "completion_tokens",
                                          "total_tokens",
                                          "finish_reason",
                                          "content_filter",
                                          "error",
                                          "cut",
                                          "upstream_request_id",
                                          "client",
                                          "user_agent",
                                          "trace_id"};

// The member names of an access-log line, in the order they were written.
std::vector<std::string> keys_of(const std::string& line) {
  std::vector<std::string> out;
  const auto j = nlohmann::ordered_json::parse(line);
  for (auto it = j.begin(); it != j.end(); ++it) out.push_back(it.key());
  return out;
}

json parse_line(const std::string& line) {
  EXPECT_EQ(line.find('\n'), std::string::npos);
  try {
    return json::parse(line);
  } catch (const std::exception& e) {
    ADD_FAILURE() << "not JSON: " << e.what() << "\n" << line;
    return json();
  }
}

class AccessLogTest : public ::testing::Test {
 protected:
  void use(std::string_view yaml) {
    cfg_ = test::load_ok(yaml);
    ASSERT_TRUE(cfg_);
    stage_ = std::make_unique<AccessLogStage>(*cfg_, nullptr);
  }
  json render(RequestContext& ctx) {
    last_line_ = stage_->render(ctx);
    return parse_line(last_line_);
  }

  std::shared_ptr<const config::Config> cfg_;
  std::unique_ptr<AccessLogStage> stage_;
  std::string last_line_;
};

TEST_F(AccessLogTest, EveryFieldOfAProxiedRequest) {
  use(kYaml);
  HeaderList headers;
  headers.set(http::field::user_agent, "OpenAI/Python 1.54.0");
  headers.set("traceparent", "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01");
  const std::string body = R"({"model":"gpt-4o","messages":[],"stream":true})";
  RequestContext ctx;
  ctx.config = cfg_.get();
  ctx.request_id = "rid-42";
  ctx.peer = "10.0.0.7:51234";
  ctx.received = Clock::now() - std::chrono::milliseconds(1500);
  ctx.method = http::verb::post;
  ctx.target = "/v1/chat/completions?api-version=2024-10-21";
  ctx.path = llmgw::classify_path(ctx.method, ctx.target);  // as the session does
  ctx.headers = &headers;
  ctx.body = body;
  ctx.bytes_in = body.size();
  ctx.path.endpoint = Endpoint::chat_completions;
  ctx.model = "gpt-4o";
  ctx.key = &cfg_->keys[1];
  ctx.key_index = 1;
  ctx.route = RouteDecision{{0, "prod-4o"}, 0};
  ctx.upstream = &cfg_->upstreams[0];
  ctx.deployment = "prod-4o";
  // A first attempt that could not connect, then the one that answered.
  ctx.attempts.push_back({0, 0, "connect", false, std::chrono::milliseconds(3)});
  ctx.attempts.push_back({0, 200, "", true, std::chrono::milliseconds(1400)});
  ctx.status = 200;
  ctx.streamed = true;
  ctx.bytes_out = 12345;
  ctx.upstream_request_written = ctx.received + std::chrono::milliseconds(1);
  ctx.upstream_first_byte = ctx.received + std::chrono::milliseconds(200);
  ctx.client_first_byte = *ctx.upstream_first_byte + std::chrono::milliseconds(2);
  ctx.usage = accounting::Usage{20, 1843, 1863};
  ctx.finish_reason = "content_filter";
  ctx.content_filter.read_document(
      R"({"prompt_filter_results":[{"prompt_index":0,"content_filter_results":{"hate":{"filtered":false,"severity":"low"}}}],"choices":[{"index":0,"content_filter_results":{"protected_material_text":{"detected":true,"filtered":true}}}]})");
  ctx.upstream_request_id = "apim-1";

  const json j = render(ctx);
  EXPECT_EQ(keys_of(last_line_), kLogFields);
  EXPECT_TRUE(j["ts"].is_string());
  EXPECT_TRUE(std::regex_match(j["ts"].get<std::string>(),
                               std::regex(R"(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z)")))
      << j["ts"];
  EXPECT_EQ(j["request_id"], "rid-42");
  EXPECT_EQ(j["key"], "team-b");
  EXPECT_EQ(j["method"], "POST");
  EXPECT_EQ(j["path"], "/v1/chat/completions");  // without the query
  EXPECT_EQ(j["endpoint"], "chat_completions");
  EXPECT_EQ(j["model"], "gpt-4o");
  EXPECT_EQ(j["upstream"], "azure");
  EXPECT_EQ(j["deployment"], "prod-4o");
  EXPECT_EQ(j["attempts"], json::parse(R"([{"upstream":"azure","error":"connect","duration_ms":3},
                                           {"upstream":"azure","status":200,"duration_ms":1400}])"));
  EXPECT_TRUE(j["status"].is_number_integer());
  EXPECT_EQ(j["status"], 200);
  EXPECT_TRUE(j["stream"].is_boolean());
  EXPECT_EQ(j["stream"], true);
  EXPECT_EQ(j["bytes_in"], body.size());
  EXPECT_EQ(j["bytes_out"], 12345);
  ASSERT_TRUE(j["duration_ms"].is_number_integer());
  EXPECT_GE(j["duration_ms"].get<long long>(), 1500);
  EXPECT_LT(j["duration_ms"].get<long long>(), 1500 + 10000);
  EXPECT_EQ(j["upstream_first_byte_ms"], 200);
  EXPECT_EQ(j["overhead_us"], 3000);
  EXPECT_EQ(j["prompt_tokens"], 20);
  EXPECT_EQ(j["completion_tokens"], 1843);
  EXPECT_EQ(j["total_tokens"], 1863);
  EXPECT_EQ(j["finish_reason"], "content_filter");
  EXPECT_EQ(j["content_filter"],
            json::parse(R"({"prompt":["hate"],"completion":["protected_material_text"]})"));
  EXPECT_TRUE(j["error"].is_null());
  EXPECT_EQ(j["upstream_request_id"], "apim-1");
  EXPECT_EQ(j["client"], "10.0.0.7:51234");
  EXPECT_EQ(j["user_agent"], "OpenAI/Python 1.54.0");
  EXPECT_EQ(j["trace_id"], "4bf92f3577b34da6a3ce929d0e0e4736");
}

TEST_F(AccessLogTest, NullWhereNotApplicable) {
  use(kYaml);
  HeaderList headers;
  RequestContext ctx;
  ctx.config = cfg_.get();
  ctx.request_id = "rid-1";
  ctx.received = Clock::now();
  ctx.method = http::verb::get;
  ctx.target = "/v1/models";
  ctx.path = llmgw::classify_path(ctx.method, ctx.target);  // as the session does
  ctx.headers = &headers;
  ctx.path.endpoint = Endpoint::models;
  ctx.status = 401;
  ctx.error_code = "invalid_api_key";
  const json j = render(ctx);
  EXPECT_EQ(keys_of(last_line_), kLogFields);
  EXPECT_EQ(j["key"], "unauthenticated");  // keys configured, none presented
  EXPECT_EQ(j["method"], "GET");
  EXPECT_EQ(j["endpoint"], "models");
  EXPECT_EQ(j["attempts"], json::array());  // answered by the gateway: no upstream attempt
  for (auto name : {"model", "upstream", "deployment", "upstream_first_byte_ms", "overhead_us",
                    "prompt_tokens", "completion_tokens", "total_tokens", "finish_reason",
                    "content_filter", "upstream_request_id", "client", "user_agent", "trace_id"})
    EXPECT_TRUE(j[name].is_null()) << name << ": " << j[name];
  EXPECT_EQ(j["status"], 401);
  EXPECT_EQ(j["stream"], false);
  EXPECT_EQ(j["bytes_in"], 0);
  EXPECT_EQ(j["bytes_out"], 0);
  EXPECT_TRUE(j["duration_ms"].is_number_integer());
  EXPECT_EQ(j["error"], "invalid_api_key");
}

TEST_F(AccessLogTest, AnonymousWithoutKeysAndNoHeaders) {
  use(kNoKeysYaml);
  RequestContext ctx;  // not even headers (a request that failed to parse)
  ctx.received = Clock::now();
  const json j = render(ctx);
  EXPECT_EQ(keys_of(last_line_), kLogFields);
  EXPECT_EQ(j["key"], "anonymous");
  EXPECT_TRUE(j["user_agent"].is_null());
  EXPECT_TRUE(j["trace_id"].is_null());
}

TEST_F(AccessLogTest, UsageWithZeroTokensIsZeroNotNull) {
  use(kNoKeysYaml);
  RequestContext ctx;
  ctx.received = Clock::now();
  ctx.usage = accounting::Usage{0, 0, 0};
  const json j = render(ctx);
  EXPECT_EQ(j["prompt_tokens"], 0);
  EXPECT_EQ(j["total_tokens"], 0);
}

TEST_F(AccessLogTest, ModelIsCutAt256Characters) {
  use(kNoKeysYaml);
  RequestContext ctx;
  ctx.received = Clock::now();
  ctx.model = std::string(300, 'm');
  const json j = render(ctx);
  EXPECT_EQ(j["model"], std::string(256, 'm'));
  ctx.model = std::string(256, 'x');
  EXPECT_EQ(render(ctx)["model"], std::string(256, 'x'));
}

TEST_F(AccessLogTest, StringsAreEscaped) {
  use(kNoKeysYaml);
  HeaderList headers;
  headers.set(http::field::user_agent, "quote\" backslash\\ tab\there");
  RequestContext ctx;
  ctx.received = Clock::now();
  ctx.headers = &headers;
  ctx.model = "evil\"model\n{";
  ctx.target = "/v1/x\"y";
  ctx.path = llmgw::classify_path(ctx.method, ctx.target);  // as the session does
  const json j = render(ctx);
  EXPECT_EQ(j["model"], "evil\"model\n{");
  EXPECT_EQ(j["user_agent"], "quote\" backslash\\ tab\there");
  EXPECT_EQ(j["path"], "/v1/x\"y");
}

// The model (from the client's JSON, valid UTF-8) is cut at 256 *bytes*: a multi-byte character
// across the cut leaves a partial UTF-8 sequence, and the access-log line is no longer valid JSON
// (json::encode_string copies bytes >= 0x80 verbatim). The same byte cut is applied to path
// (1024), user_agent (512) and, with bodies on, request_body / response_body.
TEST_F(AccessLogTest, ModelCutInsideAUtf8CharacterKeepsTheJsonLineValid) {
  use(kNoKeysYaml);
  RequestContext ctx;
  ctx.received = Clock::now();
  std::string model = "a";
  for (int i = 0; i < 200; ++i) model += "\xC3\xA9";  // é: byte 256 is the first half of one
  ctx.model = model;
  const std::string line = stage_->render(ctx);
  json j;
  EXPECT_NO_THROW(j = json::parse(line)) << "the access-log line is not valid JSON";
  if (j.is_object()) {
    const std::string logged = j["model"];
    EXPECT_EQ(logged.substr(0, 3), "a\xC3\xA9");
  }
}

// A header value may carry obs-text (bytes 0x80-0xFF, e.g. Latin-1), which Beast accepts; it is
// copied into the JSON line as is, so the line is not valid UTF-8 / JSON.
TEST_F(AccessLogTest, NonUtf8UserAgentKeepsTheJsonLineValid) {
  use(kNoKeysYaml);
  HeaderList headers;
  headers.set(http::field::user_agent, "caf\xE9-client/1.0");
  RequestContext ctx;
  ctx.received = Clock::now();
  ctx.headers = &headers;
  json j;
  EXPECT_NO_THROW(j = json::parse(stage_->render(ctx))) << "the access-log line is not valid JSON";
}

TEST_F(AccessLogTest, TraceIdOnlyFromAValidTraceparent) {
  use(kNoKeysYaml);
  auto trace = [&](std::string_view traceparent) {
    HeaderList headers;
    headers.set("traceparent", traceparent);
    RequestContext ctx;
    ctx.received = Clock::now();
    ctx.headers = &headers;
    return render(ctx)["trace_id"];
  };
  EXPECT_EQ(trace("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"),
            "4bf92f3577b34da6a3ce929d0e0e4736");
  EXPECT_EQ(trace("00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-00"),
            "0af7651916cd43dd8448eb211c80319c");
  EXPECT_TRUE(trace("00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01").is_null());  // upper
  EXPECT_TRUE(trace("00-00000000000000000000000000000000-00f067aa0ba902b7-01").is_null());  // zero
  EXPECT_TRUE(trace("00-4bf92f3577b34da6a3ce929d0e0e473-00f067aa0ba902b7-01").is_null());   // short
  EXPECT_TRUE(trace("00_4bf92f3577b34da6a3ce929d0e0e4736_00f067aa0ba902b7_01").is_null());
  EXPECT_TRUE(trace("00-4bf92f3577b34da6a3ce929d0e0e47zz-00f067aa0ba902b7-01").is_null());
  EXPECT_TRUE(trace("garbage").is_null());
  EXPECT_TRUE(trace("").is_null());
}

TEST_F(AccessLogTest, BodiesWhenEnabledAreCutToMaxBytes) {
  use(std::string(kNoKeysYaml) + "logging:\n  bodies: {enabled: true, max_bytes: 16}\n");
  RequestContext ctx;
  ctx.received = Clock::now();
  const std::string body = R"({"model":"gpt-4o","messages":[]})";
  ctx.body = body;
  stage_->on_response_body(ctx, "0123456789");
  stage_->on_response_body(ctx, "abcdefghij");
  stage_->on_response_body(ctx, "KLMNOP");
  const json j = render(ctx);
  auto fields = kLogFields;
  fields.push_back("request_body");
  fields.push_back("response_body");
  EXPECT_EQ(keys_of(last_line_), fields);
  EXPECT_EQ(j["request_body"], body.substr(0, 16));
  EXPECT_EQ(j["response_body"], "0123456789abcdef");
}

// ---------------------------------------------------------------------------------------------
// Timestamps: the per-second cache gives what formatting each one from scratch gives
// ---------------------------------------------------------------------------------------------

std::string formatted_from_scratch(std::chrono::system_clock::time_point t) {
  const auto ms = std::chrono::duration_cast<std::chrono::milliseconds>(t.time_since_epoch());
  const std::time_t seconds = static_cast<std::time_t>(ms.count() / 1000);
  std::tm tm{};
  gmtime_r(&seconds, &tm);
  char text[64];
  const std::size_t n = std::strftime(text, sizeof text, "%Y-%m-%dT%H:%M:%S", &tm);
  char millis[8];
  std::snprintf(millis, sizeof millis, ".%03dZ", static_cast<int>(ms.count() % 1000));
  return std::string(text, n) + millis;
}

TEST(Rfc3339, CachedSecondsMatchFreshFormattingAcrossSecondsDaysAndJumps) {
  using std::chrono::milliseconds;
  const std::chrono::system_clock::time_point base{milliseconds(1'796'601'599'000)};  // 23:59:59
  std::vector<std::chrono::system_clock::time_point> times;
  for (int ms : {0, 1, 9, 10, 99, 100, 999, 1000, 1001, 1999, 2000, 86'400'000})
    times.push_back(base + milliseconds(ms));
  times.push_back(base - milliseconds(86'400'000LL * 365));  // back a year: the cache is replaced
  times.push_back(base);                                     // and forward again
  times.push_back(std::chrono::system_clock::time_point{});  // the epoch
  times.push_back(std::chrono::system_clock::now());
  for (const auto t : times) {
    std::string appended = "x";
    log::append_rfc3339(appended, t);
    EXPECT_EQ(appended, "x" + formatted_from_scratch(t));
    EXPECT_EQ(log::rfc3339(t), formatted_from_scratch(t));
  }
  EXPECT_EQ(log::rfc3339(base + milliseconds(7)), "2026-12-06T23:59:59.007Z");
}

// ---------------------------------------------------------------------------------------------
// AccessLogWriter
// ---------------------------------------------------------------------------------------------

class TempDir {
 public:
  TempDir() {
    const auto* info = ::testing::UnitTest::GetInstance()->current_test_info();
    path_ = std::filesystem::temp_directory_path() /
            ("llmgw-test-" + std::to_string(::getpid()) + "-" + info->name());
    std::filesystem::remove_all(path_);
    std::filesystem::create_directories(path_);
  }
  ~TempDir() {
    std::error_code ec;
    std::filesystem::remove_all(path_, ec);
  }
  std::filesystem::path operator/(std::string_view name) const { return path_ / name; }

 private:
  std::filesystem::path path_;
};

std::string read_file(const std::filesystem::path& p) {
  std::ifstream in(p, std::ios::binary);
  std::ostringstream s;
  s << in.rdbuf();
  return s.str();
}

TEST(AccessLogWriter, WritesOneLinePerCallInOrder) {
  TempDir dir;
  const auto file = dir / "access.log";
  {
    observability::AccessLogWriter w(file.string());
    EXPECT_TRUE(w.ok());
    for (int i = 0; i < 1000; ++i) w.write("{\"n\":" + std::to_string(i) + "}");
  }  // the destructor writes what is queued
  const std::string text = read_file(file);
  std::istringstream in(text);
  std::string line;
  int n = 0;
  while (std::getline(in, line)) {
    ASSERT_EQ(json::parse(line)["n"], n) << line;
    ++n;
  }
  EXPECT_EQ(n, 1000);
  EXPECT_EQ(text.back(), '\n');
}

TEST(AccessLogWriter, AppendsToAnExistingFile) {
  TempDir dir;
  const auto file = dir / "access.log";
  { std::ofstream(file) << "old\n"; }
  {
    observability::AccessLogWriter w(file.string());
    w.write("new");
  }
  EXPECT_EQ(read_file(file), "old\nnew\n");
}

TEST(AccessLogWriter, ReopenAfterRenameCreatesANewFile) {
  TempDir dir;
  const auto file = dir / "access.log";
  const auto rotated = dir / "access.log.1";
  {
    observability::AccessLogWriter w(file.string());
    w.write("before");
    // Wait until the line is on disk, so it is certain to belong to the old file.
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(10);
    while (read_file(file) != "before\n" && std::chrono::steady_clock::now() < deadline)
      std::this_thread::sleep_for(std::chrono::milliseconds(2));
    ASSERT_EQ(read_file(file), "before\n");
    std::filesystem::rename(file, rotated);
    w.write("still-old");  // until the reopen, lines go to the moved file or the new one
    w.reopen();
    w.write("after");
  }
  ASSERT_TRUE(std::filesystem::exists(file));
  const std::string old_text = read_file(rotated);
  const std::string new_text = read_file(file);
  EXPECT_EQ(old_text.substr(0, 7), "before\n");
  EXPECT_EQ(new_text.substr(new_text.size() - 6), "after\n");
  // Nothing lost, nothing doubled: "still-old" is in one of the two files.
  EXPECT_TRUE((old_text == "before\nstill-old\n" && new_text == "after\n") ||
              (old_text == "before\n" && new_text == "still-old\nafter\n"))
      << "old: " << old_text << "new: " << new_text;
}

TEST(AccessLogWriter, ReopenWithoutRenameKeepsAppending) {
  TempDir dir;
  const auto file = dir / "access.log";
  {
    observability::AccessLogWriter w(file.string());
    w.write("a");
    w.reopen();
    w.write("b");
    w.reopen();
  }
  EXPECT_EQ(read_file(file), "a\nb\n");
}

TEST(AccessLogWriter, UnwritablePathIsNotOkAndDoesNotCrash) {
  TempDir dir;
  observability::AccessLogWriter w((dir / "missing-dir" / "access.log").string());
  EXPECT_FALSE(w.ok());
  w.write("dropped");
  w.reopen();
}

// The stage's on_complete hands the rendered line to the writer.
TEST(AccessLogStage, OnCompleteWritesTheLine) {
  TempDir dir;
  const auto file = dir / "access.log";
  auto cfg = test::load_ok(kNoKeysYaml);
  ASSERT_TRUE(cfg);
  {
    auto writer = std::make_shared<observability::AccessLogWriter>(file.string());
    AccessLogStage stage(*cfg, writer);
    for (int i = 0; i < 3; ++i) {
      RequestContext ctx;
      ctx.received = Clock::now();
      ctx.request_id = "rid-" + std::to_string(i);
      ctx.status = 200;
      stage.on_complete(ctx);
    }
  }
  std::istringstream in(read_file(file));
  std::string line;
  std::vector<std::string> ids;
  while (std::getline(in, line)) ids.push_back(json::parse(line)["request_id"]);
  EXPECT_EQ(ids, (std::vector<std::string>{"rid-0", "rid-1", "rid-2"}));
}

}  // namespace
}  // namespace llmgw

namespace llmgw {
namespace {

// Metric label ids are interned names: a snapshot with upstreams, keys and routes reordered,
// added and removed labels its requests by name, sharing the series of the names it kept.
TEST(MetricLabelsBinding, ASecondSnapshotLabelsByNameNotPosition) {
  auto a = test::load_ok(R"(
upstreams:
  az: {provider: azure, base_url: "https://a.openai.azure.com", api_key: k, deployments: {gpt-4o: p}}
  oa: {provider: openai, base_url: "https://api.openai.com", api_key: k}
routes:
  - {match: "gpt-4o*", upstream: az}
  - {match: "*", upstream: oa}
keys:
  - {name: team-a, key: sk-team-a-0001}
  - {name: team-b, key: sk-team-b-0002}
)");
  auto b = test::load_ok(R"(
upstreams:
  new: {provider: openai, base_url: "https://n.example.com", api_key: k}
  oa: {provider: openai, base_url: "https://api.openai.com", api_key: k}
  az: {provider: azure, base_url: "https://a.openai.azure.com", api_key: k, deployments: {gpt-4o: p}}
routes:
  - {match: "*", upstream: oa}
  - {match: "gpt-4o*", upstream: az}
keys:
  - {name: team-c, key: sk-team-c-0003}
  - {name: team-b, key: sk-team-b-0002}
)");
  ASSERT_TRUE(a && b);
  observability::Metrics m(*a, 1, "v");
  const observability::MetricLabels& la = m.startup_labels();
  const observability::MetricLabels lb = m.bind(*b);
  // Names in both: the same ids, at their new positions.
  EXPECT_EQ(lb.upstreams[2], la.upstreams[0]);  // az
  EXPECT_EQ(lb.upstreams[1], la.upstreams[1]);  // oa
  EXPECT_EQ(lb.keys[1], la.keys[1]);            // team-b
  EXPECT_EQ(lb.routes[1], la.routes[0]);        // gpt-4o*
  EXPECT_EQ(lb.routes[0], la.routes[1]);        // *
  EXPECT_EQ(lb.models.at("gpt-4o"), la.models.at("gpt-4o"));
  EXPECT_EQ(lb.upstream_none, la.upstream_none);
  EXPECT_EQ(lb.key_anonymous, la.key_anonymous);
  // New names: ids of their own.
  for (std::size_t id : la.upstreams) EXPECT_NE(lb.upstreams[0], id);
  for (std::size_t id : la.keys) EXPECT_NE(lb.keys[0], id);
  EXPECT_NE(lb.keys[0], la.key_anonymous);
  EXPECT_NE(lb.keys[0], la.key_unauthenticated);
  // A request on snapshot B, through its positions, is labelled with B's names.
  m.requests(0, Endpoint::chat_completions, lb.model(nullptr, 1), lb.upstreams[2], lb.keys[0], 200)
      .Increment();
  m.requests(0, Endpoint::chat_completions, lb.model(nullptr, 0), lb.upstreams[0], lb.keys[1], 200)
      .Increment();
  const std::string text = m.render();
  EXPECT_EQ(sample(text, "llm_gateway_requests_total",
                   {{"endpoint", "chat_completions"},
                    {"model", "gpt-4o*"},
                    {"upstream", "az"},
                    {"key", "team-c"},
                    {"code", "200"}}),
            1.0);
  EXPECT_EQ(sample(text, "llm_gateway_requests_total",
                   {{"endpoint", "chat_completions"},
                    {"model", "*"},
                    {"upstream", "new"},
                    {"key", "team-b"},
                    {"code", "200"}}),
            1.0);
}

}  // namespace
}  // namespace llmgw
