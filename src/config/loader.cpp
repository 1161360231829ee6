#include "llm_gateway/config/loader.hpp"

#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/x509.h>
#include <yaml-cpp/yaml.h>

#include <algorithm>
#include <boost/url/parse.hpp>
#include <charconv>
#include <filesystem>
#include <fstream>
#include <set>
#include <sstream>

namespace llmgw::config {

std::string ListenAddress::to_string() const {
  if (host.find(':') != std::string::npos) return "[" + host + "]:" + std::to_string(port);
  return host + ":" + std::to_string(port);
}

const std::string* Upstream::deployment_for(std::string_view model) const {
  for (const auto& [m, d] : deployments) {
    if (m == model) return &d;
  }
  return nullptr;
}

std::string EntraAuth::identity() const {
  // Everything a token depends on (secrets only as part of the key, never shown).
  return std::to_string(static_cast<int>(mode)) + '\n' + authority_host + '\n' + tenant_id + '\n' +
         client_id + '\n' + client_secret + '\n' + scope + '\n' + federated_token_file + '\n' +
         endpoint + '\n' + identity_endpoint + '\n' + identity_header;
}

bool RetryPolicy::retries_status(unsigned status) const {
  return std::find(on_status.begin(), on_status.end(), status) != on_status.end();
}

bool RetryPolicy::retries_kind(std::string_view kind) const {
  return (kind == "connect" && on_connect) || (kind == "tls" && on_tls) ||
         (kind == "timeout" && on_timeout) || (kind == "reset" && on_reset);
}

std::vector<std::string> settings_needing_restart(const Config& running, const Config& next) {
  std::vector<std::string> out;
  if (running.server.listen.to_string() != next.server.listen.to_string())
    out.emplace_back("server.listen");
  if (running.server.threads != next.server.threads) out.emplace_back("server.threads");
  const std::string admin_running = running.admin ? running.admin->listen.to_string() : "";
  const std::string admin_next = next.admin ? next.admin->listen.to_string() : "";
  if (admin_running != admin_next) out.emplace_back("admin.listen");
  // Whether a listener speaks TLS is fixed at start; its certificate, key, client CA and
  // client_auth are re-read by every reload.
  if (running.server.tls.has_value() != next.server.tls.has_value()) out.emplace_back("server.tls");
  const bool admin_tls_running = running.admin && running.admin->tls;
  const bool admin_tls_next = next.admin && next.admin->tls;
  if (admin_tls_running != admin_tls_next) out.emplace_back("admin.tls");
  const auto redis = [](const Config& c) {
    if (!c.rate_limits.redis) return std::string();
    const RedisTarget& t = *c.rate_limits.redis;
    return std::string(t.tls ? "rediss://" : "redis://") + t.server_name + "\n" + t.host + ":" +
           std::to_string(t.port) + "/" + std::to_string(t.db) + "\n" + t.user + "\n" +
           t.password /* compared, never shown */ + "\n" + t.ca_file;
  };
  if (running.rate_limits.store != next.rate_limits.store || redis(running) != redis(next))
    out.emplace_back("rate_limits.store");
  // The Redis store is made once per process, with its lease policy.
  if (running.rate_limits.store == LimitStore::redis &&
      (running.rate_limits.redis_lease != next.rate_limits.redis_lease ||
       running.rate_limits.redis_lease_fraction != next.rate_limits.redis_lease_fraction))
    out.emplace_back("rate_limits.redis_lease");
  if (running.logging.access_log != next.logging.access_log) out.emplace_back("logging.access_log");
  return out;
}

std::string format_problem(const std::string& source, const Problem& p) {
  return source + ":" + std::to_string(p.line) + ":" + std::to_string(p.column) + ": " + p.message;
}

namespace {

// A value the gateway writes into a request head as it is: visible characters and inner spaces
// or tabs only (RFC 9110 §5.5 field-value, without obs-text), so that it cannot end the field.
bool is_field_value(std::string_view v) {
  if (v.empty() || v.front() == ' ' || v.front() == '\t' || v.back() == ' ' || v.back() == '\t')
    return false;
  for (const char c : v) {
    const auto u = static_cast<unsigned char>(c);
    if ((u < 0x20 && c != '\t') || u == 0x7f) return false;
  }
  return true;
}

// api-version goes into the upstream's query string unescaped: dates, "preview", "v1", "latest".
constexpr const char* kApiVersionRule =
    "must be letters, digits, '-', '.' or '_' (e.g. 2024-10-21, 2025-04-01-preview, v1)";
bool is_api_version(std::string_view v) {
  if (v.empty()) return false;
  for (const char c : v) {
    if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '-' ||
          c == '.' || c == '_'))
      return false;
  }
  return true;
}

// Walks the YAML tree, converting and validating as it goes, and collects every problem with the
// position of the node it concerns (yaml-cpp marks are 0-based; ours are 1-based).
class Reader {
 public:
  Reader(std::vector<Problem>& problems, const EnvLookup& env) : problems_(problems), env_(env) {}

  void error(const YAML::Mark& m, std::string message) {
    problems_.push_back(
        {m.is_null() ? 1 : m.line + 1, m.is_null() ? 1 : m.column + 1, std::move(message)});
  }
  void error(const YAML::Node& n, std::string message) { error(n.Mark(), std::move(message)); }

  // Reports keys that are not in `allowed` and duplicated keys. Returns false if `n` is not a map.
  bool check_map(const YAML::Node& n, const std::string& where,
                 std::initializer_list<std::string_view> allowed) {
    if (!n.IsMap()) {
      error(n, where + " must be a mapping");
      return false;
    }
    std::set<std::string> seen;
    for (auto it = n.begin(); it != n.end(); ++it) {
      const std::string key = it->first.as<std::string>("");
      if (!seen.insert(key).second) error(it->first, "duplicate key '" + key + "' in " + where);
      bool known = allowed.size() == 0;
      for (auto a : allowed) known = known || a == key;
      if (!known) {
        std::string list;
        for (auto a : allowed) list += (list.empty() ? "" : ", ") + std::string(a);
        error(it->first,
              "unknown key '" + key + "' in " + where + " (expected one of: " + list + ")");
      }
    }
    return true;
  }

  // A path to a file the gateway will read (certificates, keys, CAs): a regular file it can open
  // now. (Regular only: a directory opens but never reads, and /dev/zero never ends.)
  std::optional<std::string> readable_file(const YAML::Node& n, const std::string& what) {
    auto s = string(n, what);
    if (!s) return std::nullopt;
    if (std::error_code ec; !std::filesystem::is_regular_file(*s, ec) || !std::ifstream(*s)) {
      error(n, what + " '" + *s + "' cannot be read");
      return std::nullopt;
    }
    return s;
  }

  std::optional<std::string> string(const YAML::Node& n, const std::string& what) {
    if (!n.IsScalar()) {
      error(n, what + " must be a string");
      return std::nullopt;
    }
    ExpandResult r = expand_env(n.Scalar(), env_);
    if (!r.error.empty()) {
      error(n, what + ": " + r.error);
      return std::nullopt;
    }
    return std::move(r.value);
  }

  // An environment variable (the same lookup ${VAR} uses), for settings the platform injects.
  std::optional<std::string> env(const std::string& name) const { return env_(name); }

  std::optional<std::uint64_t> number(const YAML::Node& n, const std::string& what,
                                      std::uint64_t min, std::uint64_t max) {
    if (!n.IsScalar()) {
      error(n, what + " must be a whole number");
      return std::nullopt;
    }
    auto s = string(n, what);
    if (!s) return std::nullopt;
    std::uint64_t v = 0;
    auto [p, ec] = std::from_chars(s->data(), s->data() + s->size(), v);
    if (ec != std::errc() || p != s->data() + s->size() || s->empty()) {
      error(n, what + " must be a whole number, not '" + *s + "'");
      return std::nullopt;
    }
    if (v < min || v > max) {
      error(n, what + " must be between " + std::to_string(min) + " and " + std::to_string(max));
      return std::nullopt;
    }
    return v;
  }

  std::optional<bool> boolean(const YAML::Node& n, const std::string& what) {
    if (!n.IsScalar()) {
      error(n, what + " must be true or false");
      return std::nullopt;
    }
    auto s = string(n, what);
    if (!s) return std::nullopt;
    if (*s == "true") return true;
    if (*s == "false") return false;
    error(n, what + " must be true or false");
    return std::nullopt;
  }

  std::optional<ListenAddress> listen(const YAML::Node& n, const std::string& what) {
    auto s = string(n, what);
    if (!s) return std::nullopt;
    std::string host;
    std::string port;
    if (!s->empty() && (*s)[0] == '[') {
      auto close = s->find(']');
      if (close == std::string::npos || close + 1 >= s->size() || (*s)[close + 1] != ':') {
        error(n, what + " must be HOST:PORT, e.g. 127.0.0.1:8080 or [::1]:8080");
        return std::nullopt;
      }
      host = s->substr(1, close - 1);
      port = s->substr(close + 2);
    } else {
      auto colon = s->rfind(':');
      if (colon == std::string::npos) {
        error(n, what + " must be HOST:PORT, e.g. 127.0.0.1:8080");
        return std::nullopt;
      }
      host = s->substr(0, colon);
      port = s->substr(colon + 1);
    }
    if (host == "localhost") host = "127.0.0.1";
    auto parsed = boost::urls::parse_ipv4_address(host);
    auto parsed6 = boost::urls::parse_ipv6_address(host);
    if (!parsed && !parsed6) {
      error(n, what + ": host '" + host + "' must be an IP address (or localhost)");
      return std::nullopt;
    }
    unsigned p = 0;
    auto [end, ec] = std::from_chars(port.data(), port.data() + port.size(), p);
    if (ec != std::errc() || end != port.data() + port.size() || port.empty() || p > 65535) {
      error(n, what + ": port '" + port + "' must be a number from 0 to 65535");
      return std::nullopt;
    }
    return ListenAddress{host, static_cast<std::uint16_t>(p)};
  }

  std::optional<BaseUrl> base_url(const YAML::Node& n, const std::string& what) {
    auto s = string(n, what);
    if (!s) return std::nullopt;
    auto u = boost::urls::parse_absolute_uri(*s);
    if (!u) {
      error(n, what + " is not an absolute URL: '" + *s + "'");
      return std::nullopt;
    }
    BaseUrl b;
    const auto scheme = u->scheme();
    if (scheme == "https") {
      b.tls = true;
    } else if (scheme != "http") {
      error(n, what + " must start with http:// or https://");
      return std::nullopt;
    }
    if (u->has_query() || u->has_fragment() || u->has_userinfo()) {
      error(n, what + " must not carry a query, fragment or user info");
      return std::nullopt;
    }
    b.host = std::string(u->encoded_host_address());
    b.host_is_ip = u->host_type() == boost::urls::host_type::ipv4 ||
                   u->host_type() == boost::urls::host_type::ipv6;
    if (b.host.empty()) {
      error(n, what + " has no host");
      return std::nullopt;
    }
    const std::uint16_t default_port = b.tls ? 443 : 80;
    b.port = u->has_port() ? u->port_number() : default_port;
    if (u->has_port() && b.port == 0) {
      error(n, what + " has an invalid port");
      return std::nullopt;
    }
    const std::string bracketed =
        u->host_type() == boost::urls::host_type::ipv6 ? "[" + b.host + "]" : b.host;
    b.host_header = b.port == default_port ? bracketed : bracketed + ":" + std::to_string(b.port);
    b.path_prefix = std::string(u->encoded_path());
    while (!b.path_prefix.empty() && b.path_prefix.back() == '/') b.path_prefix.pop_back();
    return b;
  }

 private:
  std::vector<Problem>& problems_;
  const EnvLookup& env_;
};

// server.tls / admin.tls. The files must be readable now; whether the pair fits together is
// checked when the listener's TLS context is made (at start, at each reload, and by
// --check-config).
std::optional<ListenerTls> load_listener_tls(Reader& r, const YAML::Node& n,
                                             const std::string& where) {
  if (!r.check_map(n, where,
                   {"cert_file", "key_file", "client_ca_file", "client_auth", "min_version"}))
    return std::nullopt;
  ListenerTls tls;
  bool ok = true;
  const auto file = [&](const char* key, std::string& out, bool required) {
    auto v = n[key];
    if (!v) {
      if (required) {
        r.error(n, where + "." + key + " is required");
        ok = false;
      }
      return;
    }
    auto s = r.readable_file(v, where + "." + key);
    if (!s) {
      ok = false;
      return;
    }
    out = *s;
  };
  file("cert_file", tls.cert_file, true);
  file("key_file", tls.key_file, true);
  file("client_ca_file", tls.client_ca_file, false);
  if (auto v = n["client_auth"]) {
    if (auto s = r.string(v, where + ".client_auth")) {
      if (*s == "none") {
        tls.client_auth = ClientAuth::none;
      } else if (*s == "optional") {
        tls.client_auth = ClientAuth::optional;
      } else if (*s == "required") {
        tls.client_auth = ClientAuth::required;
      } else {
        r.error(v, where + ".client_auth must be none, optional or required, not '" + *s + "'");
        ok = false;
      }
    }
  }
  if (tls.client_auth != ClientAuth::none && !n["client_ca_file"]) {
    r.error(n, where + ".client_auth " +
                   (tls.client_auth == ClientAuth::optional ? "optional" : "required") +
                   " needs client_ca_file (the CAs client certificates are checked against)");
    ok = false;
  }
  if (tls.client_auth == ClientAuth::none && n["client_ca_file"] && !n["client_auth"]) {
    // A CA file that would silently verify nothing is a configuration mistake, not a default.
    r.error(n["client_ca_file"],
            where +
                ".client_ca_file is set but client_auth is none: set client_auth to optional "
                "or required");
    ok = false;
  }
  if (auto v = n["min_version"]) {
    if (auto s = r.string(v, where + ".min_version")) {
      if (*s == "1.2") {
        tls.tls13_only = false;
      } else if (*s == "1.3") {
        tls.tls13_only = true;
      } else {
        r.error(v, where + ".min_version must be \"1.2\" or \"1.3\", not '" + *s + "'");
        ok = false;
      }
    }
  }
  if (!ok) return std::nullopt;
  return tls;
}

void load_server(Reader& r, const YAML::Node& n, ServerSettings& s) {
  if (!r.check_map(
          n, "server",
          {"listen", "tls", "max_body_bytes", "max_header_bytes", "threads", "drain_timeout_ms",
           "body_timeout_ms", "max_buffered_body_bytes", "max_connections"}))
    return;
  if (auto v = n["tls"]) s.tls = load_listener_tls(r, v, "server.tls");
  if (auto v = n["listen"]) {
    if (auto l = r.listen(v, "server.listen")) s.listen = *l;
  }
  if (auto v = n["max_body_bytes"]) {
    if (auto x = r.number(v, "server.max_body_bytes", 1, 1ull << 34)) s.max_body_bytes = *x;
  }
  if (auto v = n["max_header_bytes"]) {
    if (auto x = r.number(v, "server.max_header_bytes", 1024, 1u << 20))
      s.max_header_bytes = static_cast<std::uint32_t>(*x);
  }
  if (auto v = n["threads"]) {
    if (auto x = r.number(v, "server.threads", 0, 256)) s.threads = static_cast<unsigned>(*x);
  }
  if (auto v = n["drain_timeout_ms"]) {
    if (auto x = r.number(v, "server.drain_timeout_ms", 0, 3600000))
      s.drain_timeout = std::chrono::milliseconds(*x);
  }
  if (auto v = n["body_timeout_ms"]) {
    if (auto x = r.number(v, "server.body_timeout_ms", 100, 3600000))
      s.body_timeout = std::chrono::milliseconds(*x);
  }
  if (auto v = n["max_buffered_body_bytes"]) {
    if (auto x = r.number(v, "server.max_buffered_body_bytes", 1, 1ull << 40))
      s.max_buffered_body_bytes = *x;
  }
  if (auto v = n["max_connections"]) {
    if (auto x = r.number(v, "server.max_connections", 1, 10'000'000))
      s.max_connections = static_cast<std::uint32_t>(*x);
  }
}

void load_retry(Reader& r, const YAML::Node& n, RetryPolicy& p) {
  if (!r.check_map(n, "route retry",
                   {"attempts", "on", "budget_ms", "default_cooldown_ms", "eject_after"}))
    return;
  if (auto v = n["attempts"]) {
    if (auto x = r.number(v, "retry.attempts", 1, 10)) p.attempts = static_cast<unsigned>(*x);
  }
  if (auto v = n["budget_ms"]) {
    if (auto x = r.number(v, "retry.budget_ms", 0, 3600000))
      p.budget = std::chrono::milliseconds(*x);
  }
  if (auto v = n["default_cooldown_ms"]) {
    if (auto x = r.number(v, "retry.default_cooldown_ms", 0, 3600000))
      p.default_cooldown = std::chrono::milliseconds(*x);
  }
  if (auto v = n["eject_after"]) {
    if (auto x = r.number(v, "retry.eject_after", 1, 1000))
      p.eject_after = static_cast<unsigned>(*x);
  }
  if (auto v = n["on"]) {
    if (!v.IsSequence()) {
      r.error(v,
              "retry.on must be a list of statuses (429, 5xx) and kinds (connect, tls, "
              "timeout, reset)");
      return;
    }
    p.on_status.clear();
    p.on_connect = p.on_tls = p.on_timeout = p.on_reset = false;
    for (const auto& item : v) {
      auto s = r.string(item, "retry.on entry");
      if (!s) continue;
      if (*s == "connect") {
        p.on_connect = true;
      } else if (*s == "tls") {
        p.on_tls = true;
      } else if (*s == "timeout") {
        p.on_timeout = true;
      } else if (*s == "reset") {
        p.on_reset = true;
      } else {
        unsigned status = 0;
        auto [end, ec] = std::from_chars(s->data(), s->data() + s->size(), status);
        if (ec != std::errc() || end != s->data() + s->size() ||
            !(status == 429 || (status >= 500 && status <= 599))) {
          // A 400 is the client's mistake (or a content filter): another deployment would
          // answer the same, so only 429 and 5xx may move a request elsewhere.
          r.error(item, "retry.on: '" + *s +
                            "' is not retried (allowed: 429, 500-599, connect, tls, timeout, "
                            "reset)");
          continue;
        }
        p.on_status.push_back(status);
      }
    }
  }
}

// An http(s) URL a token is fetched from; a trailing slash is dropped (AKS sets
// AZURE_AUTHORITY_HOST with one). Plain http is allowed (local token services) with a warning
// when the host is not a loopback address.
std::optional<std::string> token_url(Reader& r, const YAML::Node& at, const std::string& what,
                                     std::string url) {
  while (url.size() > 1 && url.back() == '/') url.pop_back();
  if (!url.starts_with("https://") && !url.starts_with("http://")) {
    r.error(at, what + " must be an http:// or https:// URL, not '" + url + "'");
    return std::nullopt;
  }
  return url;
}

void load_auth(Reader& r, const std::string& where, const YAML::Node& n, Upstream& u) {
  if (!r.check_map(n, where,
                   {"type", "mode", "tenant_id", "client_id", "client_secret", "authority_host",
                    "scope", "endpoint"}))
    return;
  std::string type = "api_key";
  if (auto v = n["type"]) {
    if (auto s = r.string(v, where + ".type")) type = *s;
  }
  if (type == "api_key") {
    for (auto key : {"mode", "tenant_id", "client_id", "client_secret", "authority_host", "scope",
                     "endpoint"}) {
      if (n[key]) r.error(n[key], where + "." + key + " only applies to auth.type entra");
    }
    return;
  }
  if (type != "entra") {
    r.error(n["type"], where + ".type must be api_key or entra, not '" + type + "'");
    return;
  }
  EntraAuth a;
  std::string mode = "client_secret";
  if (auto v = n["mode"]) {
    if (auto s = r.string(v, where + ".mode")) mode = *s;
  }
  if (mode == "client_secret") {
    a.mode = EntraMode::client_secret;
  } else if (mode == "workload_identity") {
    a.mode = EntraMode::workload_identity;
  } else if (mode == "managed_identity") {
    a.mode = EntraMode::managed_identity;
  } else {
    r.error(n["mode"], where +
                           ".mode must be client_secret, workload_identity or "
                           "managed_identity, not '" +
                           mode + "'");
    return;
  }
  auto text = [&](const char* key) -> std::optional<std::string> {
    if (auto v = n[key]) return r.string(v, where + "." + key);
    return std::nullopt;
  };
  // AKS's webhook injects these; the configuration overrides them.
  const bool workload = a.mode == EntraMode::workload_identity;
  a.tenant_id = text("tenant_id").value_or(workload ? r.env("AZURE_TENANT_ID").value_or("") : "");
  a.client_id = text("client_id").value_or(workload ? r.env("AZURE_CLIENT_ID").value_or("") : "");
  a.client_secret = text("client_secret").value_or("");
  std::string authority =
      text("authority_host")
          .value_or(workload ? r.env("AZURE_AUTHORITY_HOST").value_or(a.authority_host)
                             : a.authority_host);
  if (auto url = token_url(r, n["authority_host"] ? n["authority_host"] : n,
                           where + ".authority_host", authority))
    a.authority_host = *url;
  if (auto s = text("scope")) {
    if (s->empty()) r.error(n["scope"], where + ".scope is empty");
    a.scope = *s;
  }
  if (auto s = text("endpoint")) {
    if (auto url = token_url(r, n["endpoint"], where + ".endpoint", *s)) a.endpoint = *url;
    if (a.mode != EntraMode::managed_identity)
      r.error(n["endpoint"], where + ".endpoint only applies to mode managed_identity");
  }
  switch (a.mode) {
    case EntraMode::client_secret:
      if (a.tenant_id.empty()) r.error(n, where + ".tenant_id is required for client_secret");
      if (a.client_id.empty()) r.error(n, where + ".client_id is required for client_secret");
      if (a.client_secret.empty())
        r.error(n, where + ".client_secret is required for client_secret");
      break;
    case EntraMode::workload_identity:
      if (a.tenant_id.empty())
        r.error(n, where + ".tenant_id (or AZURE_TENANT_ID) is required for workload_identity");
      if (a.client_id.empty())
        r.error(n, where + ".client_id (or AZURE_CLIENT_ID) is required for workload_identity");
      a.federated_token_file = r.env("AZURE_FEDERATED_TOKEN_FILE").value_or("");
      if (a.federated_token_file.empty())
        r.error(n, where +
                       ": workload_identity needs AZURE_FEDERATED_TOKEN_FILE (set by the AKS "
                       "workload identity webhook)");
      if (n["client_secret"])
        r.error(n["client_secret"], where + ".client_secret is not used by workload_identity");
      break;
    case EntraMode::managed_identity:
      if (n["client_secret"])
        r.error(n["client_secret"], where + ".client_secret is not used by managed_identity");
      if (n["tenant_id"])
        r.error(n["tenant_id"], where + ".tenant_id is not used by managed_identity");
      // App Service and Container Apps announce their identity endpoint; a configured endpoint
      // (tests, unusual hosts) means IMDS-style wherever it runs.
      if (!n["endpoint"]) {
        a.identity_endpoint = r.env("IDENTITY_ENDPOINT").value_or("");
        a.identity_header = r.env("IDENTITY_HEADER").value_or("");
        if (a.identity_endpoint.empty() != a.identity_header.empty()) {
          a.identity_endpoint.clear();
          a.identity_header.clear();
        }
        if (!a.identity_header.empty() && !is_field_value(a.identity_header))
          r.error(n, where +
                         ": the IDENTITY_HEADER environment variable contains a control "
                         "character or surrounding white space");
      }
      break;
  }
  if (a.mode != EntraMode::managed_identity) {
    // The token endpoint goes through the egress proxy like an upstream (IMDS never does).
    auto token_endpoint = boost::urls::parse_absolute_uri(a.authority_host);
    if (token_endpoint) {
      const bool tls = token_endpoint->scheme() == "https";
      const std::string host(token_endpoint->encoded_host_address());
      const bool is_ip = token_endpoint->host_type() != boost::urls::host_type::name;
      const std::uint16_t port =
          token_endpoint->has_port() ? token_endpoint->port_number() : (tls ? 443 : 80);
      if (auto url =
              proxy_url_from_env([&r](const std::string& variable) { return r.env(variable); }, tls,
                                 host, port, is_ip)) {
        std::string error;
        a.proxy = parse_proxy_url(*url, error);
      }
    }
  }
  u.entra = std::move(a);
}

void load_upstream(Reader& r, const std::string& name, const YAML::Node& n, Upstream& u) {
  const std::string where = "upstreams." + name;
  u.name = name;
  if (!r.check_map(n, where,
                   {"provider", "base_url", "api_style", "api_version", "api_versions", "api_key",
                    "deployments", "strip_dots", "ca_file", "connect_timeout_ms", "timeout_ms",
                    "auth", "proxy", "client_cert_file", "client_key_file"}))
    return;
  if (auto v = n["provider"]) {
    if (auto s = r.string(v, where + ".provider")) {
      if (*s == "azure") {
        u.provider = Provider::azure;
      } else if (*s == "openai") {
        u.provider = Provider::openai;
      } else {
        r.error(v, where + ".provider must be azure or openai, not '" + *s + "'");
      }
    }
  } else {
    r.error(n, where + ".provider is required (azure or openai)");
  }
  if (auto v = n["base_url"]) {
    if (auto b = r.base_url(v, where + ".base_url")) u.base = *b;
  } else {
    r.error(n, where + ".base_url is required");
  }
  if (auto v = n["api_style"]) {
    if (auto s = r.string(v, where + ".api_style")) {
      if (*s == "deployments") {
        u.api_style = ApiStyle::deployments;
      } else if (*s == "v1") {
        u.api_style = ApiStyle::v1;
      } else {
        r.error(v, where + ".api_style must be deployments or v1, not '" + *s + "'");
      }
    }
  }
  if (auto v = n["api_version"]) {
    if (auto s = r.string(v, where + ".api_version")) {
      if (s->empty()) {
        r.error(v, where + ".api_version must not be empty");
      } else if (!is_api_version(*s)) {
        r.error(v, where + ".api_version " + kApiVersionRule);
      } else {
        u.api_version = *s;
      }
    }
  }
  if (auto v = n["api_versions"]) {
    if (r.check_map(v, where + ".api_versions", {})) {
      for (auto it = v.begin(); it != v.end(); ++it) {
        const std::string op = it->first.as<std::string>("");
        auto e = endpoint_from_name(op);
        if (!e) {
          r.error(it->first, where + ".api_versions: unknown operation '" + op +
                                 "' (use chat_completions, embeddings, responses, ...)");
          continue;
        }
        if (auto s = r.string(it->second, where + ".api_versions." + op)) {
          if (!is_api_version(*s)) {
            r.error(it->second, where + ".api_versions." + op + " " + kApiVersionRule);
            continue;
          }
          u.api_versions[*e] = *s;
        }
      }
    }
  }
  if (auto v = n["api_key"]) {
    if (auto s = r.string(v, where + ".api_key")) {
      if (s->empty()) {
        r.error(v, where + ".api_key is empty");
      } else if (!is_field_value(*s)) {
        // It goes into every request's api-key or Authorization field. (Never quoted: a secret.)
        r.error(v, where +
                       ".api_key contains a control character or surrounding white space (a "
                       "trailing newline from a secret file?)");
      } else {
        u.api_key = *s;
      }
    }
  }
  if (auto v = n["deployments"]) {
    if (r.check_map(v, where + ".deployments", {})) {
      for (auto it = v.begin(); it != v.end(); ++it) {
        const std::string model = it->first.as<std::string>("");
        if (auto s = r.string(it->second, where + ".deployments." + model)) {
          if (s->empty()) {
            r.error(it->second, where + ".deployments." + model + " is empty");
          } else {
            u.deployments.emplace_back(model, *s);
          }
        }
      }
    }
    if (u.provider == Provider::openai && !u.deployments.empty())
      r.error(v, where + ".deployments only applies to provider azure");
  }
  if (auto v = n["strip_dots"]) {
    if (auto b = r.boolean(v, where + ".strip_dots")) u.strip_dots = *b;
  }
  if (auto v = n["ca_file"]) {
    if (auto s = r.readable_file(v, where + ".ca_file")) u.ca_file = *s;
  }
  // The egress proxy: `proxy:` (a URL, or none) overrides the environment and NO_PROXY.
  if (auto v = n["proxy"]) {
    if (auto s = r.string(v, where + ".proxy")) {
      if (*s != "none") {
        std::string error;
        u.proxy = parse_proxy_url(*s, error);
        if (!u.proxy) r.error(v, where + ".proxy " + error + " (or use none)");
      }
    }
  } else if (!u.base.host.empty()) {
    if (auto url = proxy_url_from_env([&r](const std::string& variable) { return r.env(variable); },
                                      u.base.tls, u.base.host, u.base.port, u.base.host_is_ip)) {
      std::string error;
      u.proxy = parse_proxy_url(*url, error);
      if (!u.proxy) r.error(n, where + ": the proxy from the environment " + error);
    }
  }
  if (auto v = n["auth"]) {
    load_auth(r, where + ".auth", v, u);
    // An upstream's own proxy setting applies to its token endpoint too (IMDS never uses one).
    if (u.entra && n["proxy"] && u.entra->mode != EntraMode::managed_identity)
      u.entra->proxy = u.proxy;
    if (u.entra && u.api_key)
      r.error(v, where + ": auth.type entra and an api_key on the same upstream (use one)");
    if (u.entra && u.provider != Provider::azure)
      r.error(v, where + ": auth.type entra applies to provider azure only");
  }
  for (auto [key, out] : {std::pair{"client_cert_file", &u.client_cert_file},
                          std::pair{"client_key_file", &u.client_key_file}}) {
    if (auto v = n[key]) {
      if (auto s = r.readable_file(v, where + "." + key)) *out = *s;
    }
  }
  if (n["client_cert_file"].IsDefined() != n["client_key_file"].IsDefined())
    r.error(n, where + ": client_cert_file and client_key_file go together");
  if (n["client_cert_file"] && !u.base.tls)
    r.error(n["client_cert_file"], where + ".client_cert_file needs an https:// base_url");
  if (auto v = n["connect_timeout_ms"]) {
    if (auto x = r.number(v, where + ".connect_timeout_ms", 1, 600000))
      u.connect_timeout = std::chrono::milliseconds(*x);
  }
  if (auto v = n["timeout_ms"]) {
    if (auto x = r.number(v, where + ".timeout_ms", 1, 86400000))
      u.timeout = std::chrono::milliseconds(*x);
  }
}

Sha256 sha256(std::string_view data) {
  Sha256 out{};
  unsigned int len = 0;
  EVP_Digest(data.data(), data.size(), out.data(), &len, EVP_sha256(), nullptr);
  return out;
}

std::optional<Sha256> parse_hex_digest(std::string_view hex) {
  if (hex.size() != 64) return std::nullopt;
  Sha256 out{};
  for (std::size_t i = 0; i < 32; ++i) {
    unsigned v = 0;
    auto [p, ec] = std::from_chars(hex.data() + 2 * i, hex.data() + 2 * i + 2, v, 16);
    if (ec != std::errc() || p != hex.data() + 2 * i + 2) return std::nullopt;
    out[i] = static_cast<unsigned char>(v);
  }
  return out;
}

void load_keys(Reader& r, const YAML::Node& n, Config& c) {
  if (n.IsNull()) return;  // `keys:` with nothing: no client auth
  if (!n.IsSequence()) {
    r.error(n,
            "keys must be a list of {name, key | key_sha256 | client_cert_sha256, rpm, tpm, "
            "max_concurrent, models}");
    return;
  }
  std::set<std::string> names;
  std::vector<Sha256> digests;
  for (const auto& k : n) {
    if (!r.check_map(k, "key",
                     {"name", "key", "key_sha256", "client_cert_sha256", "rpm", "tpm",
                      "max_concurrent", "models"}))
      continue;
    ClientKey key;
    if (auto v = k["name"]) {
      if (auto s = r.string(v, "key name")) key.name = *s;
      if (key.name.empty()) r.error(v, "key name must not be empty");
      if (!key.name.empty() && !names.insert(key.name).second)
        r.error(v, "key name '" + key.name + "' is used twice");
    } else {
      r.error(k, "a key needs a name (logs and metrics show the name, never the key)");
    }
    auto plain = k["key"];
    auto hashed = k["key_sha256"];
    if (auto cert = k["client_cert_sha256"]) {
      if (auto s = r.string(cert, "client_cert_sha256")) {
        // As `openssl x509 -fingerprint -sha256` prints it (colons, upper case) or plain hex.
        std::string hex;
        for (const char ch : *s) {
          if (ch != ':') hex += ch;
        }
        if (auto d = parse_hex_digest(hex)) {
          for (const auto& other : c.keys) {
            if (other.client_cert_sha256 == *d)
              r.error(cert, "the same client certificate is configured for two keys");
          }
          key.client_cert_sha256 = *d;
        } else {
          r.error(cert,
                  "client_cert_sha256 must be the certificate's SHA-256 fingerprint: 64 "
                  "hexadecimal characters, colons allowed");
        }
      }
    }
    if (!plain && !hashed && k["client_cert_sha256"]) {
      key.has_secret = false;  // matched by its client certificate alone
    } else if (plain && hashed) {
      r.error(k, "a key has either key or key_sha256, not both");
    } else if (plain) {
      if (auto s = r.string(plain, "key")) {
        if (s->size() < 8) r.error(plain, "key is too short (8 characters at least)");
        key.digest = sha256(*s);
      }
    } else if (hashed) {
      if (auto s = r.string(hashed, "key_sha256")) {
        if (auto d = parse_hex_digest(*s)) {
          key.digest = *d;
        } else {
          r.error(hashed, "key_sha256 must be 64 hexadecimal characters");
        }
      }
    } else {
      r.error(k, "a key needs key, key_sha256 or client_cert_sha256");
    }
    for (const auto& d : digests) {
      if (d == key.digest && (plain || hashed)) r.error(k, "the same key is configured twice");
    }
    if (key.has_secret) digests.push_back(key.digest);
    if (auto v = k["rpm"]) key.rpm = r.number(v, "rpm", 1, 1000000000);
    if (auto v = k["tpm"]) key.tpm = r.number(v, "tpm", 1, 1000000000000ull);
    if (auto v = k["max_concurrent"]) {
      if (auto x = r.number(v, "max_concurrent", 1, 1000000))
        key.max_concurrent = static_cast<std::uint32_t>(*x);
    }
    if (auto v = k["models"]) {
      if (!v.IsSequence()) {
        r.error(v, "models must be a list of model globs");
      } else {
        for (const auto& m : v) {
          if (auto s = r.string(m, "models entry")) key.models.push_back(*s);
        }
      }
    }
    c.keys.push_back(std::move(key));
  }
}

// Whether a CA file has at least one PEM certificate: what the TLS context will load later, so a
// wrong file (a key, a DER file) is a configuration error instead of a failed connection.
bool holds_pem_certificate(const std::string& path) {
  BIO* bio = BIO_new_file(path.c_str(), "r");
  if (!bio) return false;
  X509* cert = PEM_read_bio_X509(bio, nullptr, nullptr, nullptr);
  const bool found = cert != nullptr;
  X509_free(cert);
  BIO_free(bio);
  ERR_clear_error();  // a failed read leaves errors behind for the next OpenSSL caller
  return found;
}

void load_rate_limits(Reader& r, const YAML::Node& n, RateLimitSettings& rl) {
  if (!r.check_map(n, "rate_limits",
                   {"store", "redis_url", "redis_ca_file", "on_store_error",
                    "default_completion_tokens", "redis_lease"}))
    return;
  if (auto v = n["store"]) {
    if (auto s = r.string(v, "rate_limits.store")) {
      if (*s == "memory") {
        rl.store = LimitStore::memory;
      } else if (*s == "redis") {
        rl.store = LimitStore::redis;
      } else {
        r.error(v, "rate_limits.store must be memory or redis, not '" + *s + "'");
      }
    }
  }
  if (auto v = n["redis_url"]) {
    if (auto s = r.string(v, "rate_limits.redis_url")) {
      auto u = boost::urls::parse_absolute_uri(*s);
      // (The URL itself is never quoted back: it may hold the password.)
      if (!u || (u->scheme() != "redis" && u->scheme() != "rediss") || u->encoded_host().empty()) {
        r.error(v,
                "rate_limits.redis_url must look like redis://[[user]:password@]host:port/db "
                "(rediss:// for TLS)");
      } else {
        RedisTarget t;
        t.tls = u->scheme() == "rediss";
        t.host = std::string(u->encoded_host_address());
        // TLS checks the certificate for the name in the URL, whatever address it connects to.
        t.server_name = t.host;
        t.host_is_ip = u->host_type() == boost::urls::host_type::ipv4 ||
                       u->host_type() == boost::urls::host_type::ipv6;
        if (t.host == "localhost") t.host = "127.0.0.1";
        if (u->has_port()) t.port = u->port_number();
        if (u->has_password()) t.password = u->password();
        if (u->has_userinfo()) t.user = u->user();  // redis://user:password@host: an ACL user
        std::string path(u->encoded_path());
        if (!path.empty() && path != "/") {
          unsigned db = 0;
          auto [p, ec] = std::from_chars(path.data() + 1, path.data() + path.size(), db);
          if (ec != std::errc() || p != path.data() + path.size()) {
            r.error(v,
                    "rate_limits.redis_url: the database must be a number (redis://host:port/0)");
          }
          t.db = db;
        }
        rl.redis = t;
      }
    }
  }
  if (auto v = n["redis_ca_file"]) {
    if (!n["redis_url"] || (rl.redis && !rl.redis->tls)) {
      // Said rather than ignored: a CA next to a plain redis:// URL means the operator believes
      // the connection is encrypted when it is not.
      r.error(v, "rate_limits.redis_ca_file needs a rediss:// (TLS) redis_url");
    } else if (!rl.redis) {
      // The URL's own error is already reported.
    } else if (auto s = r.readable_file(v, "rate_limits.redis_ca_file")) {
      if (!holds_pem_certificate(*s)) {
        r.error(v, "rate_limits.redis_ca_file '" + *s + "' holds no PEM certificate");
      } else {
        rl.redis->ca_file = *s;
      }
    }
  }
  if (rl.store == LimitStore::redis && !rl.redis)
    r.error(n, "rate_limits.store redis needs redis_url");
  if (auto v = n["on_store_error"]) {
    if (auto s = r.string(v, "rate_limits.on_store_error")) {
      if (*s == "allow") {
        rl.on_store_error = StoreErrorPolicy::allow;
      } else if (*s == "deny") {
        rl.on_store_error = StoreErrorPolicy::deny;
      } else {
        r.error(v, "rate_limits.on_store_error must be allow or deny");
      }
    }
  }
  if (auto v = n["default_completion_tokens"]) {
    if (auto x = r.number(v, "rate_limits.default_completion_tokens", 0, 10000000))
      rl.default_completion_tokens = *x;
  }
  if (auto v = n["redis_lease"]) {
    if (auto s = r.string(v, "rate_limits.redis_lease")) {
      double share = 0;
      const auto [p, ec] = std::from_chars(s->data(), s->data() + s->size(), share);
      if (*s == "auto") {
        rl.redis_lease = RateLimitSettings::Lease::automatic;
      } else if (*s == "off") {
        rl.redis_lease = RateLimitSettings::Lease::off;
      } else if (!s->empty() && ec == std::errc() && p == s->data() + s->size() && share > 0 &&
                 share <= 0.5) {
        // Above half, two replicas could not even hold a lease each.
        rl.redis_lease = RateLimitSettings::Lease::fraction;
        rl.redis_lease_fraction = share;
      } else {
        r.error(v,
                "rate_limits.redis_lease must be auto, off or a fraction of the limits above 0 "
                "and at most 0.5 (e.g. 0.05), not '" +
                    *s + "'");
      }
    }
  }
}

void load_logging(Reader& r, const YAML::Node& n, LoggingSettings& l) {
  if (!r.check_map(n, "logging", {"access_log", "level", "bodies"})) return;
  if (auto v = n["access_log"]) {
    if (auto s = r.string(v, "logging.access_log")) {
      if (s->empty()) {
        r.error(v, "logging.access_log must be stdout, off or a file path");
      } else {
        l.access_log = *s;
      }
    }
  }
  if (auto v = n["level"]) {
    if (auto s = r.string(v, "logging.level")) {
      if (*s == "debug") {
        l.level = LogLevel::debug;
      } else if (*s == "info") {
        l.level = LogLevel::info;
      } else if (*s == "warn") {
        l.level = LogLevel::warn;
      } else if (*s == "error") {
        l.level = LogLevel::error;
      } else {
        r.error(v, "logging.level must be debug, info, warn or error");
      }
    }
  }
  if (auto v = n["bodies"]) {
    if (r.check_map(v, "logging.bodies", {"enabled", "max_bytes"})) {
      if (auto e = v["enabled"]) {
        if (auto b = r.boolean(e, "logging.bodies.enabled")) l.bodies = *b;
      }
      if (auto m = v["max_bytes"]) {
        if (auto x = r.number(m, "logging.bodies.max_bytes", 0, 1 << 20)) l.body_max_bytes = *x;
      }
    }
  }
}

void load_document(Reader& r, const YAML::Node& root, Config& c) {
  if (root.IsNull()) {
    r.error(root, "the configuration is empty");
    return;
  }
  if (!r.check_map(
          root, "the configuration",
          {"server", "admin", "upstreams", "routes", "keys", "rate_limits", "logging", "reload"}))
    return;
  if (auto n = root["reload"]) {
    if (r.check_map(n, "reload", {"poll_ms"})) {
      if (auto v = n["poll_ms"]) {
        if (auto x = r.number(v, "reload.poll_ms", 0, 3600000))
          c.reload.poll = std::chrono::milliseconds(*x);
      }
    }
  }
  if (auto n = root["server"]) load_server(r, n, c.server);
  if (auto n = root["admin"]) {
    if (r.check_map(n, "admin", {"listen", "token", "tls"})) {
      AdminSettings admin;
      bool ok = true;
      if (auto t = n["tls"]) admin.tls = load_listener_tls(r, t, "admin.tls");
      if (auto l = n["listen"]) {
        if (auto a = r.listen(l, "admin.listen")) {
          admin.listen = *a;
        } else {
          ok = false;
        }
      } else {
        r.error(n, "admin.listen is required when admin is set");
        ok = false;
      }
      if (auto t = n["token"]) {
        if (auto s = r.string(t, "admin.token")) {
          if (s->empty()) r.error(t, "admin.token is empty");
          admin.token = *s;
        }
      }
      if (ok) c.admin = admin;
    }
  }
  if (auto n = root["logging"]) load_logging(r, n, c.logging);
  std::map<std::string, std::size_t> upstream_index;
  if (auto ups = root["upstreams"]) {
    if (r.check_map(ups, "upstreams", {})) {
      for (auto it = ups.begin(); it != ups.end(); ++it) {
        Upstream u;
        const std::string name = it->first.as<std::string>("");
        // The name goes into every relayed response's x-gateway-upstream field as it is.
        if (!is_field_value(name))
          r.error(it->first,
                  "upstream names must be visible characters (a name goes into the "
                  "x-gateway-upstream response field)");
        load_upstream(r, name, it->second, u);
        upstream_index[name] = c.upstreams.size();
        c.upstreams.push_back(std::move(u));
      }
    }
    if (c.upstreams.empty()) r.error(ups, "upstreams must define at least one upstream");
  } else {
    r.error(root, "upstreams is required");
  }
  if (auto n = root["keys"]) load_keys(r, n, c);
  for (const auto& key : c.keys) {
    if (key.client_cert_sha256 &&
        (!c.server.tls || c.server.tls->client_auth == ClientAuth::none)) {
      // It could never match: the main listener would not ask for a certificate.
      r.error(root["keys"], "key '" + key.name +
                                "' has client_cert_sha256, which needs server.tls with "
                                "client_auth optional or required");
      break;
    }
  }
  if (auto n = root["rate_limits"]) load_rate_limits(r, n, c.rate_limits);
  if (!c.keys.empty()) {
    // With client keys, the client's credential is a gateway key and must never travel upstream:
    // every upstream then needs a key of its own.
    std::size_t i = 0;
    for (auto it = root["upstreams"].begin();
         it != root["upstreams"].end() && i < c.upstreams.size(); ++it, ++i) {
      if (!c.upstreams[i].api_key && !c.upstreams[i].entra)
        r.error(it->first, "upstream '" + c.upstreams[i].name +
                               "' has no api_key: with client keys configured the client's "
                               "credential is never forwarded, so the upstream needs its own key");
    }
  }
  if (auto routes = root["routes"]) {
    if (!routes.IsSequence()) {
      r.error(routes, "routes must be a list of {match, upstream} or {match, backends}");
    } else {
      auto find_upstream = [&](const YAML::Node& u,
                               const std::string& what) -> std::optional<std::size_t> {
        auto target = r.string(u, what);
        if (!target) return std::nullopt;
        auto found = upstream_index.find(*target);
        if (found == upstream_index.end()) {
          r.error(u,
                  "route refers to upstream '" + *target + "', which is not defined in upstreams");
          return std::nullopt;
        }
        return found->second;
      };
      for (const auto& route : routes) {
        if (!r.check_map(route, "route",
                         {"match", "upstream", "backends", "retry", "max_queue_ms"}))
          continue;
        Route out;
        auto m = route["match"];
        auto u = route["upstream"];
        auto b = route["backends"];
        if (!m || (!u && !b)) {
          r.error(route, "a route needs match and either upstream or backends");
          continue;
        }
        if (u && b) {
          r.error(b, "a route names either one upstream or a list of backends, not both");
          continue;
        }
        auto match = r.string(m, "route match");
        if (!match) continue;
        if (match->empty()) {
          r.error(m, "route match must not be empty (use \"*\" for every model)");
          continue;
        }
        bool ok = true;
        if (u) {
          auto up = find_upstream(u, "route upstream");
          if (!up) continue;
          out.backends.push_back({*up, 0, 1});
        } else if (!b.IsSequence() || b.size() == 0) {
          r.error(b, "backends must be a non-empty list of {upstream, priority, weight}");
          continue;
        } else {
          for (const auto& entry : b) {
            if (!r.check_map(entry, "backend", {"upstream", "priority", "weight"})) {
              ok = false;
              continue;
            }
            Backend backend;
            auto bu = entry["upstream"];
            if (!bu) {
              r.error(entry, "a backend needs an upstream");
              ok = false;
              continue;
            }
            auto up = find_upstream(bu, "backend upstream");
            if (!up) {
              ok = false;
              continue;
            }
            backend.upstream = *up;
            if (auto v = entry["priority"]) {
              if (auto x = r.number(v, "backend priority", 0, 100))
                backend.priority = static_cast<unsigned>(*x);
            }
            if (auto v = entry["weight"]) {
              if (auto x = r.number(v, "backend weight", 1, 1000))
                backend.weight = static_cast<unsigned>(*x);
            }
            for (const auto& other : out.backends) {
              if (other.upstream == backend.upstream) {
                r.error(bu, "upstream '" + c.upstreams[backend.upstream].name +
                                "' is listed twice in this route's backends");
                ok = false;
              }
            }
            out.backends.push_back(backend);
          }
          if (out.backends.size() > 32) {
            r.error(b, "a route may list at most 32 backends");
            ok = false;
          }
        }
        if (auto v = route["retry"]) load_retry(r, v, out.retry);
        if (auto v = route["max_queue_ms"]) {
          if (auto x = r.number(v, "route max_queue_ms", 0, 600000))
            out.max_queue = std::chrono::milliseconds(*x);
        }
        if (!ok) continue;
        out.match = *match;
        out.upstream = out.backends.front().upstream;
        c.routes.push_back(std::move(out));
      }
      if (routes.size() == 0) r.error(routes, "routes must contain at least one route");
    }
  } else {
    r.error(root, "routes is required");
  }
}

}  // namespace

constexpr std::size_t kMaxUpstreams = 250;
constexpr std::size_t kMaxKeys = 60000;

LoadResult load_config_text(std::string_view yaml, std::string source_name, const EnvLookup& env) {
  LoadResult result;
  auto cfg = std::make_shared<Config>();
  cfg->source = std::move(source_name);
  try {
    YAML::Node root = YAML::Load(std::string(yaml));
    Reader reader(result.problems, env);
    load_document(reader, root, *cfg);
    // The metric tables index upstreams and keys in fixed-width fields.
    if (cfg->upstreams.size() > kMaxUpstreams)
      reader.error(root["upstreams"], "at most " + std::to_string(kMaxUpstreams) + " upstreams");
    if (cfg->keys.size() > kMaxKeys)
      reader.error(root["keys"], "at most " + std::to_string(kMaxKeys) + " keys");
  } catch (const YAML::Exception& e) {
    result.problems.push_back(
        {e.mark.is_null() ? 1 : e.mark.line + 1, e.mark.is_null() ? 1 : e.mark.column + 1, e.msg});
  }
  if (result.problems.empty()) result.config = std::move(cfg);
  return result;
}

LoadResult load_config_file(const std::string& path, const EnvLookup& env) {
  std::ifstream in(path, std::ios::binary);
  if (!in) {
    LoadResult r;
    r.problems.push_back({1, 1, "cannot open the configuration file"});
    return r;
  }
  std::stringstream text;
  text << in.rdbuf();
  return load_config_text(text.str(), path, env);
}

std::string embedded_default_yaml(const EnvLookup& env) {
  const bool azure = env("AZURE_OPENAI_ENDPOINT").value_or("") != "" &&
                     env("AZURE_OPENAI_API_KEY").value_or("") != "";
  std::string yaml = "server:\n  listen: \"${LLM_GATEWAY_LISTEN:-127.0.0.1:8080}\"\n";
  if (azure) {
    yaml +=
        "upstreams:\n"
        "  azure:\n"
        "    provider: azure\n"
        "    base_url: \"${AZURE_OPENAI_ENDPOINT}\"\n"
        "    api_key: \"${AZURE_OPENAI_API_KEY}\"\n"
        "    api_version: \"2024-10-21\"\n"
        "routes:\n"
        "  - {match: \"*\", upstream: azure}\n";
  } else {
    yaml +=
        "upstreams:\n"
        "  openai:\n"
        "    provider: openai\n"
        "    base_url: \"https://api.openai.com\"\n"
        "routes:\n"
        "  - {match: \"*\", upstream: openai}\n";
  }
  return yaml;
}

}  // namespace llmgw::config
