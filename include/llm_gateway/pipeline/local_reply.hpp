#pragma once
// Responses the gateway makes itself. Errors always use OpenAI's shape
// {"error":{"message","type","param","code"}} so the SDKs raise the right exception class.
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace llmgw {

enum class GatewayError {
  bad_request,                // 400 unparseable HTTP
  invalid_path,               // 400 a request target that is not a clean path (dot-segments, ...)
  invalid_framing,            // 400 Transfer-Encoding/Content-Length that cannot be trusted
  method_not_allowed,         // 405 a method the operation is not used with
  method_not_implemented,     // 501 a method the gateway does not know
  unsupported_coding,         // 501 a transfer coding other than chunked
  request_timeout,            // 408 the body did not arrive in time
  overloaded,                 // 503 the buffered-body budget is spent
  invalid_json,               // 400
  missing_model,              // 400
  model_not_found,            // 404 no route matches the model
  no_default_route,           // 404 a request without a model and no "*" route
  not_found,                  // 404 unknown gateway path (admin listener)
  request_too_large,          // 413
  header_too_large,           // 431
  upstream_unreachable,       // 502
  upstream_tls_error,         // 502
  upstream_protocol_error,    // 502
  upstream_proxy_error,       // 502 the egress proxy cannot be reached or refused the tunnel
  upstream_timeout,           // 504
  service_unavailable,        // 503 the request was cut by the drain deadline before any answer
  upstream_auth_unavailable,  // 503 no valid Entra ID token for the upstream
};

struct LocalReply {
  unsigned status = 200;
  std::string content_type = "application/json";
  std::string body;
  std::vector<std::pair<std::string, std::string>> headers;
  std::string error_code;  // the gateway's error code when this is an error, for logs
};

LocalReply error_reply(GatewayError error, std::string_view message);

// {"error":{...}} with explicit fields, for errors other stages define (e.g. rate limits).
LocalReply error_reply(unsigned status, std::string_view type, std::string_view code,
                       std::optional<std::string_view> param, std::string_view message);

LocalReply json_reply(unsigned status, std::string body);

}  // namespace llmgw
