#pragma once
// Microsoft Entra ID token requests and responses, without I/O (the token service in
// src/net/tokens.cpp sends them): the client-credentials grant with a secret or, for AKS
// workload identity, a federated assertion (v2.0 token endpoint); managed identity through IMDS
// or the App Service / Container Apps identity endpoint.
#include <ostream>  // first: Boost 1.81 core/detail/string_view.hpp needs it but does not include it

#include <boost/beast/http/verb.hpp>
#include <chrono>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "llm_gateway/config/config.hpp"

namespace llmgw::auth {

struct TokenRequest {
  boost::beast::http::verb method = boost::beast::http::verb::get;
  std::string url;  // absolute http(s) URL, query included
  std::vector<std::pair<std::string, std::string>> headers;
  std::string body;  // POST: application/x-www-form-urlencoded
  // Where the token comes from, for logs and errors: scheme, host and path, never a query or a
  // secret.
  std::string endpoint;
};

// `federated_token`: the content of AZURE_FEDERATED_TOKEN_FILE (workload identity), read by the
// caller at every refresh.
TokenRequest token_request(const config::EntraAuth& auth, std::string_view federated_token);

struct TokenResult {
  std::string access_token;  // empty when the request failed
  std::chrono::seconds lifetime{0};
  // On failure: the endpoint's `error` and AADSTS code when there are ("invalid_client,
  // AADSTS7000215"), else what went wrong ("HTTP 500", "no access_token in the answer").
  std::string error;
};

// Reads an answer of any of the three token endpoints (expires_in as a number or a string, or
// expires_on in epoch seconds).
TokenResult parse_token_response(unsigned status, std::string_view body,
                                 std::chrono::system_clock::time_point now);

// application/x-www-form-urlencoded (and query) encoding of one value.
std::string form_encode(std::string_view value);

}  // namespace llmgw::auth
