#pragma once
// Access tokens of the upstreams with auth.type entra: one per identity (the same credentials on
// two upstreams share one token), shared by every I/O thread. Tokens are fetched and refreshed on
// a thread of the service's own, never on the request path: a request only reads the current
// token, so a burst at expiry makes no token request at all (the refresh happens at half the
// token's lifetime, once).
#include <chrono>
#include <memory>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "llm_gateway/config/config.hpp"
#include "llm_gateway/observability/metrics.hpp"

namespace llmgw::net {

class TokenService {
 public:
  explicit TokenService(observability::Metrics* metrics);
  ~TokenService();
  TokenService(const TokenService&) = delete;
  TokenService& operator=(const TokenService&) = delete;

  // Starts fetching for every entra upstream of `cfg` whose identity is new (at start, and for
  // each reload: unchanged identities keep their token).
  void track(const config::Config& cfg);

  // The current token for these credentials, when one is valid now.
  std::optional<std::string> token(const config::EntraAuth& auth) const;
  // Why there is none: the last failure and the endpoint asked (no secrets).
  std::string why_not(const config::EntraAuth& auth) const;
  // The upstreams of `cfg` without a valid token (for /readyz).
  std::vector<std::string> missing(const config::Config& cfg) const;
  // llm_gateway_token_expiry_seconds for `cfg`'s entra upstreams (when /metrics is rendered).
  void export_metrics(const config::Config& cfg) const;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace llmgw::net
