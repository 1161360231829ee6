#include "llm_gateway/routing/router.hpp"

#include <algorithm>

#include "llm_gateway/routing/glob.hpp"

namespace llmgw {

std::string deployment_for(const config::Upstream& upstream, std::string_view model) {
  if (const std::string* mapped = upstream.deployment_for(model)) return *mapped;
  std::string name(model);
  if (upstream.strip_dots) std::erase(name, '.');
  return name;
}

namespace {
RouteDecision decide(const config::Config& cfg, std::size_t route, std::string_view model) {
  RouteDecision d;
  d.route = route;
  d.upstream = cfg.routes[route].upstream;
  const auto& up = cfg.upstreams[d.upstream];
  if (up.provider == config::Provider::azure && !model.empty())
    d.deployment = deployment_for(up, model);
  return d;
}
}  // namespace

std::optional<RouteDecision> route_model(const config::Config& cfg, std::string_view model) {
  for (std::size_t i = 0; i < cfg.routes.size(); ++i) {
    if (glob_match(cfg.routes[i].match, model)) return decide(cfg, i, model);
  }
  return std::nullopt;
}

std::optional<RouteDecision> route_default(const config::Config& cfg) {
  for (std::size_t i = 0; i < cfg.routes.size(); ++i) {
    if (cfg.routes[i].match == "*") return decide(cfg, i, {});
  }
  return std::nullopt;
}

std::vector<std::string> listed_models(const config::Config& cfg) {
  std::vector<std::string> ids;
  auto add = [&ids](const std::string& id) {
    if (std::find(ids.begin(), ids.end(), id) == ids.end()) ids.push_back(id);
  };
  for (std::size_t u = 0; u < cfg.upstreams.size(); ++u) {
    const auto& up = cfg.upstreams[u];
    if (up.provider != config::Provider::azure) continue;
    for (const auto& [model, deployment] : up.deployments) {
      auto d = route_model(cfg, model);
      if (!d) continue;
      for (const auto& backend : cfg.routes[d->route].backends) {
        if (backend.upstream == u) add(model);
      }
    }
  }
  for (const auto& r : cfg.routes) {
    if (glob_is_literal(r.match)) add(r.match);
  }
  return ids;
}

}  // namespace llmgw
