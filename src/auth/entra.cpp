#include "llm_gateway/auth/entra.hpp"

#include <charconv>
#include <limits>
#include <nlohmann/json.hpp>
#include <regex>

namespace llmgw::auth {

namespace http = boost::beast::http;

namespace {
constexpr std::size_t kMaxTokenAnswer = 64 * 1024;

// The IMDS and App Service endpoints take the resource (the scope without "/.default").
std::string resource_of(const std::string& scope) {
  constexpr std::string_view suffix = "/.default";
  if (scope.size() > suffix.size() && scope.ends_with(suffix))
    return scope.substr(0, scope.size() - suffix.size());
  return scope;
}

std::string without_query(const std::string& url) {
  return url.substr(0, url.find('?'));
}

std::optional<std::int64_t> seconds_of(const nlohmann::json& v) {
  if (v.is_number_unsigned()) {
    const auto u = v.get<std::uint64_t>();
    if (u > static_cast<std::uint64_t>(std::numeric_limits<std::int64_t>::max()))
      return std::nullopt;
    return static_cast<std::int64_t>(u);
  }
  if (v.is_number_integer()) return v.get<std::int64_t>();
  if (v.is_number()) {
    // A double outside int64's range (or NaN) converted to it is undefined behaviour: such a
    // lifetime is simply not one (the libFuzzer egress_token harness found 3.8e76).
    const double d = v.get<double>();
    if (!(d > -9.2e18 && d < 9.2e18)) return std::nullopt;
    return static_cast<std::int64_t>(d);
  }
  if (v.is_string()) {
    const std::string& s = v.get_ref<const std::string&>();
    std::int64_t n = 0;
    auto [end, ec] = std::from_chars(s.data(), s.data() + s.size(), n);
    if (ec == std::errc() && end == s.data() + s.size()) return n;
  }
  return std::nullopt;
}
}  // namespace

std::string form_encode(std::string_view value) {
  static constexpr char kHex[] = "0123456789ABCDEF";
  std::string out;
  for (unsigned char c : value) {
    if (std::isalnum(c) || c == '-' || c == '_' || c == '.' || c == '~') {
      out += static_cast<char>(c);
    } else {
      out += '%';
      out += kHex[c >> 4];
      out += kHex[c & 0xF];
    }
  }
  return out;
}

TokenRequest token_request(const config::EntraAuth& a, std::string_view federated_token) {
  TokenRequest r;
  switch (a.mode) {
    case config::EntraMode::client_secret:
    case config::EntraMode::workload_identity: {
      r.method = http::verb::post;
      r.url = a.authority_host + "/" + form_encode(a.tenant_id) + "/oauth2/v2.0/token";
      r.headers.emplace_back("content-type", "application/x-www-form-urlencoded");
      r.body = "grant_type=client_credentials&client_id=" + form_encode(a.client_id) +
               "&scope=" + form_encode(a.scope);
      if (a.mode == config::EntraMode::client_secret) {
        r.body += "&client_secret=" + form_encode(a.client_secret);
      } else {
        r.body += "&client_assertion_type=" +
                  form_encode("urn:ietf:params:oauth:client-assertion-type:jwt-bearer") +
                  "&client_assertion=" + form_encode(federated_token);
      }
      break;
    }
    case config::EntraMode::managed_identity: {
      r.method = http::verb::get;
      const std::string resource = form_encode(resource_of(a.scope));
      const std::string user = a.client_id.empty() ? "" : "&client_id=" + form_encode(a.client_id);
      if (!a.identity_endpoint.empty()) {
        // App Service, Container Apps.
        const char sep = a.identity_endpoint.find('?') == std::string::npos ? '?' : '&';
        r.url = a.identity_endpoint + sep + "api-version=2019-08-01&resource=" + resource + user;
        r.headers.emplace_back("x-identity-header", a.identity_header);
      } else {
        r.url = a.endpoint +
                "/metadata/identity/oauth2/token?api-version=2018-02-01&resource=" + resource +
                user;
        r.headers.emplace_back("metadata", "true");
      }
      break;
    }
  }
  r.endpoint = without_query(r.url);
  return r;
}

namespace {

// RFC 6750 §2.1: b64token = 1*( ALPHA / DIGIT / "-" / "." / "_" / "~" / "+" / "/" ) *"=".
// Entra's access tokens are JWTs (base64url segments joined by dots), which fit it.
bool is_b64token(std::string_view token) {
  std::size_t i = 0;
  for (; i < token.size(); ++i) {
    const char c = token[i];
    const bool ok = (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') ||
                    c == '-' || c == '.' || c == '_' || c == '~' || c == '+' || c == '/';
    if (!ok) break;
  }
  if (i == 0) return false;
  for (; i < token.size(); ++i) {
    if (token[i] != '=') return false;
  }
  return true;
}

}  // namespace

TokenResult parse_token_response(unsigned status, std::string_view body,
                                 std::chrono::system_clock::time_point now) {
  TokenResult out;
  if (body.size() > kMaxTokenAnswer) {
    out.error = "HTTP " + std::to_string(status) + ", answer too large";
    return out;
  }
  const nlohmann::json j = nlohmann::json::parse(body, nullptr, false);
  if (status != 200) {
    out.error = "HTTP " + std::to_string(status);
    if (j.is_object()) {
      if (auto e = j.find("error"); e != j.end() && e->is_string()) {
        // Only the error's name and its AADSTS code: descriptions may quote request values.
        std::string name = e->get<std::string>().substr(0, 64);
        std::erase_if(name, [](char c) {
          return !(std::isalnum(static_cast<unsigned char>(c)) || c == '_');
        });
        out.error += ", " + name;
      }
      if (auto d = j.find("error_description"); d != j.end() && d->is_string()) {
        static const std::regex code("AADSTS[0-9]{1,10}");
        std::smatch m;
        const std::string text = d->get<std::string>().substr(0, 2048);
        if (std::regex_search(text, m, code)) out.error += " (" + m.str() + ")";
      }
    }
    return out;
  }
  if (!j.is_object()) {
    out.error = "the token endpoint's answer is not JSON";
    return out;
  }
  auto token = j.find("access_token");
  if (token == j.end() || !token->is_string() || token->get_ref<const std::string&>().empty()) {
    out.error = "no access_token in the token endpoint's answer";
    return out;
  }
  std::optional<std::int64_t> lifetime;
  if (auto e = j.find("expires_in"); e != j.end()) lifetime = seconds_of(*e);
  if (!lifetime) {
    if (auto e = j.find("expires_on"); e != j.end()) {
      if (auto on = seconds_of(*e)) {
        lifetime =
            *on - std::chrono::duration_cast<std::chrono::seconds>(now.time_since_epoch()).count();
      }
    }
  }
  if (!lifetime || *lifetime <= 0) {
    out.error = "the token endpoint's answer has no valid expires_in or expires_on";
    return out;
  }
  if (!is_b64token(token->get_ref<const std::string&>())) {
    // It goes into every upstream request's Authorization field: a CR or LF in it would add
    // fields (or a request) of the token endpoint's choosing. Its value is never quoted here.
    out.error = "the token endpoint's access_token is not a bearer token (RFC 6750 b64token)";
    return out;
  }
  out.access_token = token->get<std::string>();
  out.lifetime = std::chrono::seconds(std::min<std::int64_t>(*lifetime, 86400 * 7));
  return out;
}

}  // namespace llmgw::auth
