#pragma once
// What the gateway learns from an inbound request before routing it: which operation the path
// names, and the few body fields routing and accounting need (model, stream). Pure functions.
#include <ostream>  // first: Boost 1.81 core/detail/string_view.hpp needs it but does not include it

#include <array>
#include <boost/beast/http/verb.hpp>
#include <optional>
#include <string>
#include <string_view>

#include "llm_gateway/translate/endpoint.hpp"

namespace llmgw {

enum class InboundFormat {
  openai,            // /v1/{op} or /{op}
  azure_deployment,  // /openai/deployments/{name}/{op}
  azure_v1,          // /openai/v1/{op}
  azure_resource,    // /openai/{op}
};

struct PathFacts {
  InboundFormat format = InboundFormat::openai;
  Endpoint endpoint = Endpoint::other;
  bool deployment_scoped = false;  // the upstream operation lives under a deployment
  std::string op_path;             // operation path without leading '/', e.g. "chat/completions"
  std::string_view query;          // raw query string without '?', may be empty
  std::optional<std::string> path_model;  // Azure inbound: the deployment named in the path
};

PathFacts classify_path(boost::beast::http::verb method, std::string_view target);

// The methods an operation is used with, as an Allow header value ("POST", "GET, POST, DELETE"):
// only these ever reach an upstream; anything else gets 405 from the gateway.
std::string_view allowed_methods(const PathFacts& path);
bool method_allowed(boost::beast::http::verb method, const PathFacts& path);

enum class BodyKind { none, json, multipart, other };

struct BodyFacts {
  BodyKind kind = BodyKind::none;
  std::string invalid_reason;        // non-empty: the body claims JSON but is not valid JSON
  std::optional<std::string> model;  // decoded model name
  bool model_not_string = false;
  // Byte span of the model value in the body (JSON: the string token with its quotes; multipart:
  // the field's raw value), so translation can replace it without re-serialising the body.
  std::size_t model_begin = 0;
  std::size_t model_end = 0;
  bool stream = false;
  // Top-level JSON object: offset of its closing '}' (for inserting members), else npos.
  std::size_t object_end = std::string_view::npos;

  // stream_options: the span of its value (npos when absent) and whether it asks for usage.
  std::size_t stream_options_begin = std::string_view::npos;
  std::size_t stream_options_end = std::string_view::npos;
  bool stream_options_is_object = false;
  bool include_usage = false;
  // Inside stream_options: the span of include_usage's value (npos when absent).
  std::size_t include_usage_begin = std::string_view::npos;
  std::size_t include_usage_end = std::string_view::npos;

  // max_tokens, max_completion_tokens or max_output_tokens, when the request names one.
  std::optional<long long> max_tokens;
  // Spans of the prompt-bearing members (messages, input, prompt, instructions), for estimates.
  std::array<std::pair<std::size_t, std::size_t>, 4> prompt_spans{};
  std::size_t prompt_span_count = 0;
};

// Characters (UTF-8 code points) in the string values of the prompt-bearing members: the basis
// of the token estimate a rate limiter reserves before the real usage is known.
std::size_t prompt_characters(std::string_view body, const BodyFacts& facts);

BodyFacts inspect_body(std::string_view content_type, std::string_view body);

// The boundary parameter of a multipart/form-data content type, or "" if absent.
std::string_view multipart_boundary(std::string_view content_type);

std::string percent_encode_segment(std::string_view s);
std::optional<std::string> percent_decode(std::string_view s);

}  // namespace llmgw
