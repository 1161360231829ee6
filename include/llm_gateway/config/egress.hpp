#pragma once
// The corporate egress proxy: its URL, and which upstream hosts bypass it (NO_PROXY). Pure: the
// loader resolves each upstream's proxy once, from its `proxy:` setting or the environment.
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

#include "llm_gateway/config/env_expand.hpp"

namespace llmgw::config {

struct EgressProxy {
  bool tls = false;  // https:// proxy: TLS to the proxy itself
  std::string host;  // without brackets for IPv6
  std::uint16_t port = 0;
  bool host_is_ip = false;
  std::string authorization;  // "Basic <base64(user:password)>" from the URL, or "": secret
  // scheme://host:port, for logs and errors (never the credentials).
  std::string display() const;
};

// http://[user[:password]@]host[:port] or https://...; the port defaults to 80/443. nullopt
// (and `error`) for anything else. Credentials are percent-decoded.
std::optional<EgressProxy> parse_proxy_url(std::string_view url, std::string& error);

// Whether NO_PROXY excludes host:port. Comma-separated entries, case-insensitive: "*" (all); an
// exact host; "example.com" (itself and its subdomains, on a label boundary) or ".example.com"
// (its subdomains only); "host:port" (that port only); IP literals and CIDR ranges, which match
// IP-literal hosts only.
bool no_proxy_matches(std::string_view no_proxy, std::string_view host, std::uint16_t port,
                      bool host_is_ip);

// The proxy URL the environment gives a target: HTTPS_PROXY for https, HTTP_PROXY for http (the
// lowercase spelling wins when both are set, as curl does), unless NO_PROXY (likewise) matches.
std::optional<std::string> proxy_url_from_env(const EnvLookup& env, bool tls, std::string_view host,
                                              std::uint16_t port, bool host_is_ip);

}  // namespace llmgw::config
