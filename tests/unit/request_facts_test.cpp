// What the gateway learns from a request before routing: classify_path (operation, format, query,
// path model), inspect_body (JSON and multipart model/stream and the model's byte span),
// multipart_boundary and percent encoding.
#include <gtest/gtest.h>

#include <string>
#include <string_view>
#include <vector>

#include "llm_gateway/translate/endpoint.hpp"
#include "llm_gateway/translate/json_scan.hpp"
#include "llm_gateway/translate/request_facts.hpp"

namespace llmgw {
namespace {

namespace http = boost::beast::http;
using http::verb;

// ---------------------------------------------------------------------------------------------
// endpoint names
// ---------------------------------------------------------------------------------------------

TEST(EndpointName, NamesRoundTrip) {
  for (Endpoint e : kAllEndpoints) {
    EXPECT_EQ(endpoint_from_name(endpoint_name(e)), e) << endpoint_name(e);
  }
  EXPECT_EQ(endpoint_name(Endpoint::chat_completions), "chat_completions");
  EXPECT_FALSE(endpoint_from_name("chat"));
  EXPECT_FALSE(endpoint_from_name(""));
}

// ---------------------------------------------------------------------------------------------
// classify_path: OpenAI-shaped paths
// ---------------------------------------------------------------------------------------------

struct OpRow {
  std::string_view op;  // path after /v1/
  Endpoint endpoint;
  bool deployment_scoped_on_post;
};

const OpRow kOps[] = {
    {"chat/completions", Endpoint::chat_completions, true},
    {"completions", Endpoint::completions, true},
    {"embeddings", Endpoint::embeddings, true},
    {"audio/transcriptions", Endpoint::audio_transcriptions, true},
    {"audio/translations", Endpoint::audio_translations, true},
    {"audio/speech", Endpoint::audio_speech, true},
    {"images/generations", Endpoint::images_generations, true},
    {"images/edits", Endpoint::images_edits, true},
    {"responses", Endpoint::responses, false},
    {"responses/resp_123", Endpoint::responses, false},
    {"files", Endpoint::files, false},
    {"files/file-abc/content", Endpoint::files, false},
    {"batches", Endpoint::batches, false},
    {"batches/batch_1/cancel", Endpoint::batches, false},
    {"models", Endpoint::models, false},
    {"models/gpt-4o", Endpoint::models, false},
    {"fine_tuning/jobs", Endpoint::fine_tuning, false},
    {"assistants", Endpoint::assistants, false},
    {"assistants/asst_1", Endpoint::assistants, false},
    {"threads/t/runs", Endpoint::assistants, false},
    {"vector_stores", Endpoint::assistants, false},
    {"vector_stores/vs_1/files", Endpoint::assistants, false},
    {"moderations", Endpoint::other, false},
    {"chat/completionsx", Endpoint::other, false},
    {"filesystem", Endpoint::other, false},
    {"", Endpoint::other, false},
};

TEST(ClassifyPath, EveryOperationWithV1Prefix) {
  for (const OpRow& row : kOps) {
    const std::string target = "/v1/" + std::string(row.op);
    PathFacts f = classify_path(verb::post, target);
    EXPECT_EQ(f.format, InboundFormat::openai) << target;
    EXPECT_EQ(f.endpoint, row.endpoint) << target;
    EXPECT_EQ(f.op_path, row.op) << target;
    EXPECT_EQ(f.deployment_scoped, row.deployment_scoped_on_post) << target;
    EXPECT_EQ(f.query, "") << target;
    EXPECT_FALSE(f.path_model) << target;
  }
}

TEST(ClassifyPath, EveryOperationWithoutV1Prefix) {
  for (const OpRow& row : kOps) {
    const std::string target = "/" + std::string(row.op);
    PathFacts f = classify_path(verb::post, target);
    EXPECT_EQ(f.format, InboundFormat::openai) << target;
    EXPECT_EQ(f.endpoint, row.endpoint) << target;
    EXPECT_EQ(f.op_path, row.op) << target;
    EXPECT_EQ(f.deployment_scoped, row.deployment_scoped_on_post) << target;
  }
}

TEST(ClassifyPath, DeploymentScopedOnlyForPost) {
  for (const OpRow& row : kOps) {
    const std::string target = "/v1/" + std::string(row.op);
    for (verb m : {verb::get, verb::delete_, verb::put, verb::patch}) {
      PathFacts f = classify_path(m, target);
      EXPECT_FALSE(f.deployment_scoped) << http::to_string(m) << " " << target;
      EXPECT_EQ(f.endpoint, row.endpoint) << http::to_string(m) << " " << target;
    }
  }
}

TEST(ClassifyPath, TrailingSlashIsIgnored) {
  PathFacts f = classify_path(verb::post, "/v1/chat/completions/");
  EXPECT_EQ(f.endpoint, Endpoint::chat_completions);
  EXPECT_EQ(f.op_path, "chat/completions");
  EXPECT_TRUE(f.deployment_scoped);

  PathFacts g = classify_path(verb::get, "/v1/models//");
  EXPECT_EQ(g.endpoint, Endpoint::models);
  EXPECT_EQ(g.op_path, "models");
}

TEST(ClassifyPath, QueryIsCapturedWithoutQuestionMark) {
  PathFacts f = classify_path(verb::post, "/v1/chat/completions?api-version=2024-10-21&x=1");
  EXPECT_EQ(f.endpoint, Endpoint::chat_completions);
  EXPECT_EQ(f.op_path, "chat/completions");
  EXPECT_EQ(f.query, "api-version=2024-10-21&x=1");
}

TEST(ClassifyPath, QueryAfterTrailingSlash) {
  PathFacts f = classify_path(verb::get, "/v1/files/?purpose=batch");
  EXPECT_EQ(f.endpoint, Endpoint::files);
  EXPECT_EQ(f.op_path, "files");
  EXPECT_EQ(f.query, "purpose=batch");
}

TEST(ClassifyPath, EmptyQueryAfterQuestionMark) {
  PathFacts f = classify_path(verb::get, "/v1/models?");
  EXPECT_EQ(f.endpoint, Endpoint::models);
  EXPECT_EQ(f.query, "");
}

TEST(ClassifyPath, BareV1AndRootAreOther) {
  EXPECT_EQ(classify_path(verb::get, "/v1").endpoint, Endpoint::other);
  EXPECT_EQ(classify_path(verb::get, "/v1/").endpoint, Endpoint::other);
  EXPECT_EQ(classify_path(verb::get, "/").endpoint, Endpoint::other);
  EXPECT_EQ(classify_path(verb::get, "/v10/models").endpoint, Endpoint::other);
}

// ---------------------------------------------------------------------------------------------
// classify_path: Azure-shaped paths
// ---------------------------------------------------------------------------------------------

TEST(ClassifyPathAzure, DeploymentPath) {
  PathFacts f = classify_path(
      verb::post, "/openai/deployments/gpt4o-prod/chat/completions?api-version=2024-10-21");
  EXPECT_EQ(f.format, InboundFormat::azure_deployment);
  EXPECT_EQ(f.endpoint, Endpoint::chat_completions);
  EXPECT_TRUE(f.deployment_scoped);
  EXPECT_EQ(f.op_path, "chat/completions");
  EXPECT_EQ(f.query, "api-version=2024-10-21");
  EXPECT_EQ(f.path_model, "gpt4o-prod");
}

TEST(ClassifyPathAzure, DeploymentNameIsPercentDecoded) {
  PathFacts f = classify_path(verb::post, "/openai/deployments/my%20dep%2Fx/embeddings");
  EXPECT_EQ(f.format, InboundFormat::azure_deployment);
  EXPECT_EQ(f.endpoint, Endpoint::embeddings);
  EXPECT_EQ(f.path_model, "my dep/x");
}

TEST(ClassifyPathAzure, EveryDeploymentOperation) {
  for (const OpRow& row : kOps) {
    if (!row.deployment_scoped_on_post) continue;
    const std::string target = "/openai/deployments/d1/" + std::string(row.op);
    PathFacts f = classify_path(verb::post, target);
    EXPECT_EQ(f.format, InboundFormat::azure_deployment) << target;
    EXPECT_EQ(f.endpoint, row.endpoint) << target;
    EXPECT_EQ(f.op_path, row.op) << target;
    EXPECT_TRUE(f.deployment_scoped) << target;
    EXPECT_EQ(f.path_model, "d1") << target;
  }
}

TEST(ClassifyPathAzure, BatchesUnderADeploymentAreResourceLevel) {
  PathFacts f = classify_path(verb::post, "/openai/deployments/gpt4o/batches?api-version=x");
  EXPECT_EQ(f.format, InboundFormat::azure_resource);
  EXPECT_EQ(f.endpoint, Endpoint::batches);
  EXPECT_EQ(f.op_path, "batches");
  EXPECT_FALSE(f.deployment_scoped);
  EXPECT_FALSE(f.path_model);
  EXPECT_EQ(f.query, "api-version=x");
}

TEST(ClassifyPathAzure, V1Path) {
  PathFacts f = classify_path(verb::post, "/openai/v1/chat/completions");
  EXPECT_EQ(f.format, InboundFormat::azure_v1);
  EXPECT_EQ(f.endpoint, Endpoint::chat_completions);
  EXPECT_EQ(f.op_path, "chat/completions");
  EXPECT_TRUE(f.deployment_scoped);
  EXPECT_FALSE(f.path_model);
}

TEST(ClassifyPathAzure, V1ResourcePath) {
  PathFacts f = classify_path(verb::get, "/openai/v1/files/file-1?limit=2");
  EXPECT_EQ(f.format, InboundFormat::azure_v1);
  EXPECT_EQ(f.endpoint, Endpoint::files);
  EXPECT_EQ(f.op_path, "files/file-1");
  EXPECT_EQ(f.query, "limit=2");
}

TEST(ClassifyPathAzure, ResourcePath) {
  PathFacts f = classify_path(verb::post, "/openai/files?api-version=2024-10-21");
  EXPECT_EQ(f.format, InboundFormat::azure_resource);
  EXPECT_EQ(f.endpoint, Endpoint::files);
  EXPECT_EQ(f.op_path, "files");
  EXPECT_FALSE(f.deployment_scoped);
  EXPECT_FALSE(f.path_model);
}

TEST(ClassifyPathAzure, ResourceResponsesPath) {
  PathFacts f = classify_path(verb::post, "/openai/responses");
  EXPECT_EQ(f.format, InboundFormat::azure_resource);
  EXPECT_EQ(f.endpoint, Endpoint::responses);
  EXPECT_EQ(f.op_path, "responses");
}

// ---------------------------------------------------------------------------------------------
// inspect_body: JSON
// ---------------------------------------------------------------------------------------------

std::string model_span(std::string_view body, const BodyFacts& f) {
  return std::string(body.substr(f.model_begin, f.model_end - f.model_begin));
}

TEST(InspectBody, EmptyBodyIsNone) {
  BodyFacts f = inspect_body("application/json", "");
  EXPECT_EQ(f.kind, BodyKind::none);
  EXPECT_FALSE(f.model);
  EXPECT_EQ(f.invalid_reason, "");
}

TEST(InspectBody, JsonModelStreamAndSpan) {
  const std::string_view body = R"({"messages":[],"model" : "gpt-4o","stream":true})";
  BodyFacts f = inspect_body("application/json", body);
  EXPECT_EQ(f.kind, BodyKind::json);
  EXPECT_EQ(f.invalid_reason, "");
  EXPECT_EQ(f.model, "gpt-4o");
  EXPECT_FALSE(f.model_not_string);
  EXPECT_TRUE(f.stream);
  EXPECT_EQ(model_span(body, f), R"("gpt-4o")");
  EXPECT_EQ(f.object_end, body.size() - 1);
}

TEST(InspectBody, JsonModelWithEscapesIsDecodedButSpanIsRaw) {
  const std::string_view body = R"({"model":"org\/gpt\u002d4o"})";
  BodyFacts f = inspect_body("application/json", body);
  EXPECT_EQ(f.model, "org/gpt-4o");
  EXPECT_EQ(model_span(body, f), R"("org\/gpt\u002d4o")");
}

TEST(InspectBody, ObjectEndIgnoresTrailingWhiteSpace) {
  const std::string_view body = "{\"model\":\"m\"}\r\n ";
  BodyFacts f = inspect_body("application/json", body);
  EXPECT_EQ(f.object_end, 12u);
}

TEST(InspectBody, StreamIsFalseUnlessLiteralTrue) {
  EXPECT_FALSE(inspect_body("application/json", R"({"model":"m"})").stream);
  EXPECT_FALSE(inspect_body("application/json", R"({"model":"m","stream":false})").stream);
  EXPECT_FALSE(inspect_body("application/json", R"({"model":"m","stream":"true"})").stream);
}

TEST(InspectBody, NestedStreamAndModelAreIgnored) {
  BodyFacts f = inspect_body("application/json", R"({"x":{"model":"m","stream":true}})");
  EXPECT_FALSE(f.model);
  EXPECT_FALSE(f.stream);
}

TEST(InspectBody, InvalidJsonGivesReason) {
  BodyFacts f = inspect_body("application/json", R"({"model":"gpt-4o",})");
  EXPECT_EQ(f.kind, BodyKind::json);
  EXPECT_NE(f.invalid_reason, "");
  EXPECT_FALSE(f.model);
}

TEST(InspectBody, ModelThatIsNotAString) {
  BodyFacts f = inspect_body("application/json", R"({"model":42})");
  EXPECT_TRUE(f.model_not_string);
  EXPECT_FALSE(f.model);
  EXPECT_TRUE(inspect_body("application/json", R"({"model":["a"]})").model_not_string);
}

TEST(InspectBody, NullModelIsAbsentNotWrongType) {
  BodyFacts f = inspect_body("application/json", R"({"model":null})");
  EXPECT_FALSE(f.model_not_string);
  EXPECT_FALSE(f.model);
}

TEST(InspectBody, NonObjectJsonHasNoModelAndNoObjectEnd) {
  BodyFacts f = inspect_body("application/json", R"([{"model":"m"}])");
  EXPECT_EQ(f.kind, BodyKind::json);
  EXPECT_EQ(f.invalid_reason, "");
  EXPECT_FALSE(f.model);
  EXPECT_EQ(f.object_end, std::string_view::npos);
}

TEST(InspectBody, JsonContentTypeWithParameters) {
  BodyFacts f = inspect_body("Application/JSON; charset=utf-8", R"({"model":"m"})");
  EXPECT_EQ(f.kind, BodyKind::json);
  EXPECT_EQ(f.model, "m");
}

TEST(InspectBody, MissingContentTypeIsReadAsJson) {
  BodyFacts f = inspect_body("", R"({"model":"m"})");
  EXPECT_EQ(f.kind, BodyKind::json);
  EXPECT_EQ(f.model, "m");
}

TEST(InspectBody, FormUrlEncodedFromCurlIsReadAsJson) {
  BodyFacts f = inspect_body("application/x-www-form-urlencoded", R"({"model":"m"})");
  EXPECT_EQ(f.kind, BodyKind::json);
  EXPECT_EQ(f.model, "m");
  EXPECT_NE(inspect_body("application/x-www-form-urlencoded", "a=1&b=2").invalid_reason, "");
}

TEST(InspectBody, OctetStreamIsOther) {
  BodyFacts f = inspect_body("application/octet-stream", R"({"model":"m"})");
  EXPECT_EQ(f.kind, BodyKind::other);
  EXPECT_FALSE(f.model);
  EXPECT_EQ(f.invalid_reason, "");
}

// ---------------------------------------------------------------------------------------------
// inspect_body: multipart/form-data
// ---------------------------------------------------------------------------------------------

std::string text_part(std::string_view boundary, std::string_view name, std::string_view value) {
  return "--" + std::string(boundary) + "\r\nContent-Disposition: form-data; name=\"" +
         std::string(name) + "\"\r\n\r\n" + std::string(value) + "\r\n";
}

std::string file_part(std::string_view boundary, std::string_view bytes) {
  return "--" + std::string(boundary) +
         "\r\nContent-Disposition: form-data; name=\"file\"; filename=\"a.wav\"\r\n"
         "Content-Type: application/octet-stream\r\n\r\n" +
         std::string(bytes) + "\r\n";
}

std::string closing(std::string_view boundary) {
  return "--" + std::string(boundary) + "--\r\n";
}

TEST(InspectBodyMultipart, FindsModelFieldAndItsExactSpan) {
  const std::string body =
      text_part("XyZ", "model", "whisper-1") + text_part("XyZ", "language", "en") + closing("XyZ");
  BodyFacts f = inspect_body("multipart/form-data; boundary=XyZ", body);
  EXPECT_EQ(f.kind, BodyKind::multipart);
  EXPECT_EQ(f.model, "whisper-1");
  EXPECT_EQ(model_span(body, f), "whisper-1");
  EXPECT_EQ(body.find("whisper-1"), f.model_begin);
}

TEST(InspectBodyMultipart, QuotedBoundary) {
  const std::string body = text_part("a:b c", "model", "gpt-image-1") + closing("a:b c");
  BodyFacts f = inspect_body("multipart/form-data; boundary=\"a:b c\"", body);
  EXPECT_EQ(f.model, "gpt-image-1");
  EXPECT_EQ(model_span(body, f), "gpt-image-1");
}

TEST(InspectBodyMultipart, ModelAfterBinaryFilePart) {
  const std::string binary("RIFF\0\x01\xff\r\n\r\n--X\r\n\x80", 17);
  const std::string boundary = "----WebKitFormBoundary7MA4YWxkTrZu0gW";
  const std::string body = file_part(boundary, binary) + text_part(boundary, "model", "whisper-1") +
                           text_part(boundary, "stream", "true") + closing(boundary);
  BodyFacts f = inspect_body("multipart/form-data; boundary=" + boundary, body);
  EXPECT_EQ(f.kind, BodyKind::multipart);
  EXPECT_EQ(f.model, "whisper-1");
  EXPECT_EQ(model_span(body, f), "whisper-1");
  EXPECT_EQ(f.model_begin, body.find("whisper-1"));
  EXPECT_TRUE(f.stream);
}

TEST(InspectBodyMultipart, NoModelField) {
  const std::string body =
      text_part("b", "purpose", "batch") + file_part("b", "data") + closing("b");
  BodyFacts f = inspect_body("multipart/form-data; boundary=b", body);
  EXPECT_EQ(f.kind, BodyKind::multipart);
  EXPECT_FALSE(f.model);
  EXPECT_EQ(f.invalid_reason, "");
}

TEST(InspectBodyMultipart, MissingBoundaryFindsNothing) {
  const std::string body = text_part("b", "model", "m") + closing("b");
  BodyFacts f = inspect_body("multipart/form-data", body);
  EXPECT_EQ(f.kind, BodyKind::multipart);
  EXPECT_FALSE(f.model);
}

TEST(MultipartBoundary, UnquotedQuotedAndAbsent) {
  EXPECT_EQ(multipart_boundary("multipart/form-data; boundary=abc123"), "abc123");
  EXPECT_EQ(multipart_boundary("multipart/form-data; boundary=\"a b:c\""), "a b:c");
  EXPECT_EQ(multipart_boundary("multipart/form-data;boundary=x;charset=utf-8"), "x");
  EXPECT_EQ(multipart_boundary("multipart/form-data; charset=utf-8; BOUNDARY=y"), "y");
  EXPECT_EQ(multipart_boundary("multipart/form-data"), "");
  EXPECT_EQ(multipart_boundary(""), "");
}

// ---------------------------------------------------------------------------------------------
// percent encoding
// ---------------------------------------------------------------------------------------------

TEST(PercentEncodeSegment, EncodesReservedCharacters) {
  EXPECT_EQ(percent_encode_segment("my model/x"), "my%20model%2Fx");
  EXPECT_EQ(percent_encode_segment("a?b#c%d"), "a%3Fb%23c%25d");
  EXPECT_EQ(percent_encode_segment("caf\xC3\xA9"), "caf%C3%A9");
}

TEST(PercentEncodeSegment, KeepsUnreservedCharacters) {
  EXPECT_EQ(percent_encode_segment("AZaz09-._~"), "AZaz09-._~");
  EXPECT_EQ(percent_encode_segment(""), "");
}

TEST(PercentDecode, DecodesEscapes) {
  EXPECT_EQ(percent_decode("my%20model%2Fx"), "my model/x");
  EXPECT_EQ(percent_decode("%2f%2F"), "//");
  EXPECT_EQ(percent_decode("plain"), "plain");
  EXPECT_EQ(percent_decode(""), "");
}

TEST(PercentDecode, InvalidEscapesGiveNullopt) {
  EXPECT_FALSE(percent_decode("%"));
  EXPECT_FALSE(percent_decode("abc%2"));
  EXPECT_FALSE(percent_decode("%zz"));
  EXPECT_FALSE(percent_decode("%2g"));
}

TEST(PercentDecode, RoundTripsEncode) {
  for (std::string_view s : {"my model/x", "a%b", "100% sure?", "caf\xC3\xA9"}) {
    EXPECT_EQ(percent_decode(percent_encode_segment(s)), s);
  }
}

// ---------------------------------------------------------------------------------------------
// prompt_characters: the 16-bytes-at-a-time count against the byte-by-byte definition
// ---------------------------------------------------------------------------------------------

// The definition, written independently of the counting loop: every string token of the prompt
// spans that is not a key (followed by ':'), decoded, counted in code points (lead bytes).
std::size_t characters_by_definition(std::string_view body, const BodyFacts& facts) {
  std::size_t chars = 0;
  for (std::size_t i = 0; i < facts.prompt_span_count; ++i) {
    const std::string_view span = body.substr(
        facts.prompt_spans[i].first, facts.prompt_spans[i].second - facts.prompt_spans[i].first);
    for (std::size_t open = span.find('"'); open != std::string_view::npos;
         open = span.find('"', open)) {
      std::size_t close = open + 1;
      while (span[close] != '"') close += span[close] == '\\' ? 2 : 1;
      const auto decoded = json::decode_string(span.substr(open, close + 1 - open));
      const std::size_t next = span.find_first_not_of(" \t\r\n", close + 1);
      if (decoded && (next == std::string_view::npos || span[next] != ':')) {
        for (const char c : *decoded) chars += (static_cast<unsigned char>(c) & 0xC0) != 0x80;
      }
      open = close + 1;
    }
  }
  return chars;
}

TEST(PromptCharacters, MatchesTheDefinitionWithEverySpecialAtEveryOffset) {
  // Contents that put a quote, an escape, a multi-byte character or a key at every offset of a
  // 16-byte block, in messages and in input.
  const std::vector<std::string> specials = {"\\\"",
                                             "\\\\",
                                             "\\n",
                                             "\\u00e9",
                                             "\\ud83d\\ude00",
                                             "\xC3\xA9",
                                             "\xE4\xB8\xAD",
                                             "\xF0\x9F\x98\x80",
                                             "x"};
  int checked = 0;
  for (std::size_t n = 0; n < 40; ++n) {
    for (const std::string& special : specials) {
      const std::string run(n, 'a');
      const std::string content = run + special + run + "\xC3\xA9" + run;
      for (const std::string& body :
           {"{\"model\":\"m\",\"messages\":[{\"role\":\"user\",\"content\":\"" + content +
                "\"},{\"role\":\"assistant\",\"content\":\"" + run + special + "\"}]}",
            "{\"input\":[\"" + content + "\",\"" + special + run + "\"]}",
            "{\"input\":\"" + content + "\"}"}) {
        const BodyFacts f = inspect_body("application/json", body);
        ASSERT_TRUE(f.invalid_reason.empty()) << body << ": " << f.invalid_reason;
        EXPECT_EQ(prompt_characters(body, f), characters_by_definition(body, f)) << body;
        EXPECT_GE(prompt_characters(body, f), 2 * n + 2) << body;  // the runs, the special, é
        ++checked;
      }
    }
  }
  EXPECT_EQ(checked, 40 * 9 * 3);
}

}  // namespace
}  // namespace llmgw
