// What the gateway reads from the network outside the request path: an Entra ID token
// endpoint's answer (hostile bytes from a token service, or from whatever answers in its place),
// and the egress settings an environment hands it (HTTPS_PROXY, NO_PROXY). The first line picks
// the parser and its arguments; the rest is the input.
//   "token <status>"           parse_token_response(status, rest)
//   "noproxy <host> <port>"    no_proxy_matches(rest, host, port, host is an IP literal)
//   "proxy"                    parse_proxy_url(rest)
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <string>

#include "fuzz_support.hpp"
#include "llm_gateway/auth/entra.hpp"
#include "llm_gateway/config/egress.hpp"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  using llmgw::fuzz::require;
  const auto [head, rest] = llmgw::fuzz::split_first_line(llmgw::fuzz::as_text(data, size));
  if (head.starts_with("token ")) {
    const unsigned status =
        static_cast<unsigned>(std::strtoul(std::string(head.substr(6)).c_str(), nullptr, 10));
    const auto r = llmgw::auth::parse_token_response(
        status % 1000, rest, std::chrono::system_clock::from_time_t(1700000000));
    // A token only from a 200 with a positive lifetime; a failure always says why, briefly.
    require(r.access_token.empty() || (status % 1000 == 200 && r.lifetime.count() > 0),
            "token without a 200 and a lifetime");
    require(!r.access_token.empty() || !r.error.empty(), "failure without a reason");
    require(r.error.size() < 256, "error text bounded");
  } else if (head.starts_with("noproxy ")) {
    const std::string args(head.substr(8));
    const std::size_t space = args.rfind(' ');
    const std::string host = args.substr(0, space);
    const unsigned port =
        space == std::string::npos ? 443 : std::strtoul(args.c_str() + space + 1, nullptr, 10);
    const bool is_ip = host.find_first_not_of("0123456789.:abcdefABCDEF[]") == std::string::npos;
    (void)llmgw::config::no_proxy_matches(rest, host, static_cast<std::uint16_t>(port), is_ip);
  } else if (head == "proxy") {
    std::string error;
    const auto p = llmgw::config::parse_proxy_url(rest, error);
    require(p.has_value() || !error.empty(), "a rejection says why");
    if (p) require(p->display().find('@') == std::string::npos, "display never has credentials");
  }
  return 0;
}
