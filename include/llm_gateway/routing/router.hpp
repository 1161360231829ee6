#pragma once
// Model -> upstream and deployment. Pure: reads only the immutable configuration.
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "llm_gateway/config/config.hpp"

namespace llmgw {

// Where one upstream attempt goes.
struct Target {
  std::size_t upstream = 0;  // index into Config::upstreams
  std::string deployment;    // azure: the deployment name (not yet percent-encoded); openai: ""
};

// The route a request matched, and the target it names first (the router's first attempt).
struct RouteDecision : Target {
  std::size_t route = 0;  // index into Config::routes
};

// First route whose glob matches the model.
std::optional<RouteDecision> route_model(const config::Config& cfg, std::string_view model);

// For requests that name no model (files, batches, ...): the first route whose match is exactly
// "*".
std::optional<RouteDecision> route_default(const config::Config& cfg);

// deployments[model], else the model itself (with dots removed when strip_dots is set).
std::string deployment_for(const config::Upstream& upstream, std::string_view model);

// The ids GET /v1/models lists: every deployments key of an azure upstream that routing really
// sends to that upstream (as one of its route's backends), then every route match without
// wildcards; de-duplicated, config order.
std::vector<std::string> listed_models(const config::Config& cfg);

}  // namespace llmgw
