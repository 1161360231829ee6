#include "llm_gateway/pipeline/local_reply.hpp"

#include "llm_gateway/translate/json_scan.hpp"

namespace llmgw {

LocalReply error_reply(unsigned status, std::string_view type, std::string_view code,
                       std::optional<std::string_view> param, std::string_view message) {
  LocalReply r;
  r.status = status;
  r.error_code = std::string(code);
  r.body = "{\"error\":{\"message\":" + json::encode_string(message) +
           ",\"type\":" + json::encode_string(type) +
           ",\"param\":" + (param ? json::encode_string(*param) : std::string("null")) +
           ",\"code\":" + json::encode_string(code) + "}}";
  return r;
}

LocalReply error_reply(GatewayError error, std::string_view message) {
  constexpr std::string_view kInvalid = "invalid_request_error";
  constexpr std::string_view kApi = "api_error";
  switch (error) {
    case GatewayError::bad_request:
      return error_reply(400, kInvalid, "bad_request", std::nullopt, message);
    case GatewayError::invalid_path:
      return error_reply(400, kInvalid, "invalid_path", std::nullopt, message);
    case GatewayError::invalid_framing:
      return error_reply(400, kInvalid, "invalid_framing", std::nullopt, message);
    case GatewayError::method_not_allowed:
      return error_reply(405, kInvalid, "method_not_allowed", std::nullopt, message);
    case GatewayError::method_not_implemented:
      return error_reply(501, kInvalid, "method_not_implemented", std::nullopt, message);
    case GatewayError::unsupported_coding:
      return error_reply(501, kInvalid, "unsupported_transfer_coding", std::nullopt, message);
    case GatewayError::request_timeout:
      return error_reply(408, kInvalid, "request_timeout", std::nullopt, message);
    case GatewayError::overloaded: {
      LocalReply r = error_reply(503, kApi, "overloaded", std::nullopt, message);
      r.headers.emplace_back("retry-after", "1");
      return r;
    }
    case GatewayError::invalid_json:
      return error_reply(400, kInvalid, "invalid_json", std::nullopt, message);
    case GatewayError::missing_model:
      return error_reply(400, kInvalid, "missing_model", "model", message);
    case GatewayError::model_not_found:
      return error_reply(404, kInvalid, "model_not_found", "model", message);
    case GatewayError::no_default_route:
      return error_reply(404, kInvalid, "no_default_route", std::nullopt, message);
    case GatewayError::not_found:
      return error_reply(404, kInvalid, "not_found", std::nullopt, message);
    case GatewayError::request_too_large:
      return error_reply(413, kInvalid, "request_too_large", std::nullopt, message);
    case GatewayError::header_too_large:
      return error_reply(431, kInvalid, "request_header_fields_too_large", std::nullopt, message);
    case GatewayError::upstream_unreachable:
      return error_reply(502, kApi, "upstream_unreachable", std::nullopt, message);
    case GatewayError::upstream_tls_error:
      return error_reply(502, kApi, "upstream_tls_error", std::nullopt, message);
    case GatewayError::upstream_protocol_error:
      return error_reply(502, kApi, "upstream_protocol_error", std::nullopt, message);
    case GatewayError::upstream_proxy_error:
      return error_reply(502, kApi, "upstream_proxy_error", std::nullopt, message);
    case GatewayError::upstream_timeout:
      return error_reply(504, kApi, "upstream_timeout", std::nullopt, message);
    case GatewayError::upstream_auth_unavailable: {
      LocalReply r = error_reply(503, kApi, "upstream_auth_unavailable", std::nullopt, message);
      r.headers.emplace_back("retry-after", "1");
      return r;
    }
    case GatewayError::service_unavailable:
      return error_reply(503, kApi, "gateway_draining", std::nullopt, message);
  }
  return error_reply(500, kApi, "internal_error", std::nullopt, message);
}

LocalReply json_reply(unsigned status, std::string body) {
  LocalReply r;
  r.status = status;
  r.body = std::move(body);
  return r;
}

}  // namespace llmgw
