#pragma once
// The gateway's configuration: plain, immutable data produced by the loader. Everything the data
// plane needs from the YAML is resolved here once (upstream indexes, parsed URLs, defaults), so the
// request path never looks anything up by string it could have resolved at load time.
#include <array>
#include <chrono>
#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include "llm_gateway/config/egress.hpp"
#include "llm_gateway/translate/endpoint.hpp"

namespace llmgw::config {

enum class Provider { azure, openai };
enum class ApiStyle { deployments, v1 };

struct ListenAddress {
  std::string host;  // literal IP address ("127.0.0.1", "::1", "0.0.0.0")
  std::uint16_t port = 0;
  std::string to_string() const;
};

struct BaseUrl {
  bool tls = false;
  std::string host;         // without brackets for IPv6
  std::uint16_t port = 0;   // explicit or the scheme's default
  std::string path_prefix;  // "" or "/something" (no trailing slash)
  std::string host_header;  // what goes into Host: host, or host:port for a non-default port
  bool host_is_ip = false;  // IP literal: no SNI, certificate must carry the IP
};

enum class EntraMode { client_secret, workload_identity, managed_identity };

// Microsoft Entra ID credentials of an azure upstream (auth.type: entra): the gateway gets tokens
// and sends `Authorization: Bearer <token>` instead of an api-key.
struct EntraAuth {
  EntraMode mode = EntraMode::client_secret;
  std::string tenant_id;
  std::string client_id;      // managed identity: a user-assigned identity's, or "" (system)
  std::string client_secret;  // secret: never logged
  std::string authority_host = "https://login.microsoftonline.com";  // no trailing slash
  std::string scope = "https://cognitiveservices.azure.com/.default";
  // workload_identity: the projected service-account token (re-read at every refresh).
  std::string federated_token_file;
  // managed_identity: IMDS at `endpoint`, or App Service / Container Apps when their variables
  // are set (identity_endpoint with the identity_header secret).
  std::string endpoint = "http://169.254.169.254";
  std::string identity_endpoint;
  std::string identity_header;  // secret: never logged
  // The egress proxy to the token endpoint (client_secret, workload_identity; never IMDS).
  std::optional<EgressProxy> proxy;

  // What a cached token belongs to: two upstreams with the same credentials share one token.
  std::string identity() const;
};

struct Upstream {
  std::string name;
  Provider provider = Provider::openai;
  BaseUrl base;
  ApiStyle api_style = ApiStyle::deployments;
  std::optional<std::string> api_version;        // as configured (may be unset)
  std::map<Endpoint, std::string> api_versions;  // per-operation overrides
  std::optional<std::string> api_key;            // secret: never logged
  std::optional<EntraAuth> entra;                // auth.type: entra
  // The egress proxy to reach it: its `proxy:` setting, else HTTPS_PROXY/HTTP_PROXY unless
  // NO_PROXY excludes it; nullopt = direct.
  std::optional<EgressProxy> proxy;
  std::vector<std::pair<std::string, std::string>> deployments;  // model -> deployment, in order
  bool strip_dots = false;
  std::string ca_file;  // extra trust, added to the system store
  // A client certificate (PEM chain) and its key presented to this upstream (mutual TLS).
  std::string client_cert_file;
  std::string client_key_file;
  std::chrono::milliseconds connect_timeout{5000};
  std::chrono::milliseconds timeout{600000};

  const std::string* deployment_for(std::string_view model) const;
};

// One of a route's backends: an upstream (its deployment comes from the upstream's own map).
struct Backend {
  std::size_t upstream = 0;  // index into Config::upstreams
  unsigned priority = 0;     // lower first; a higher one only when every lower one is out
  unsigned weight = 1;       // share within its priority
};

// What a route with several backends retries, and how it treats a backend that fails.
struct RetryPolicy {
  unsigned attempts = 3;  // total tries of one request across backends
  // Statuses that move the request to another backend (429 and 5xx only), and failure kinds.
  std::vector<unsigned> on_status{429, 500, 502, 503, 504};
  bool on_connect = true;
  bool on_tls = true;
  bool on_timeout = true;
  bool on_reset = true;
  std::chrono::milliseconds budget{30000};            // no new attempt starts after this long
  std::chrono::milliseconds default_cooldown{10000};  // a 429 without any retry-after header
  unsigned eject_after = 5;                           // consecutive failures that eject a backend

  bool retries_status(unsigned status) const;
  bool retries_kind(std::string_view error_kind) const;
};

struct Route {
  std::string match;              // glob on the model: * any run (also '/'), ? one character
  std::size_t upstream = 0;       // index into Config::upstreams: the first backend's
  std::vector<Backend> backends;  // at least one; `upstream: NAME` makes exactly one
  RetryPolicy retry;
  std::chrono::milliseconds max_queue{0};  // > 0: wait this long for a backend to come back

  // Several backends: failover, cooldowns and ejection apply. One: the request goes there once
  // and its answer, whatever it is, is the client's (as before backends existed).
  bool fails_over() const { return backends.size() > 1; }
};

enum class ClientAuth { none, optional, required };

// TLS on a listener (server.tls, admin.tls). The files are read when a snapshot is installed, so a
// reload (SIGHUP) picks up renewed certificates.
struct ListenerTls {
  std::string cert_file;       // PEM: the certificate, then its chain
  std::string key_file;        // PEM, unencrypted
  std::string client_ca_file;  // PEM: the CAs client certificates must chain to (mutual TLS)
  ClientAuth client_auth = ClientAuth::none;
  bool tls13_only = false;  // min_version "1.3" (default "1.2")
};

struct ServerSettings {
  ListenAddress listen{"127.0.0.1", 8080};
  std::optional<ListenerTls> tls;
  std::uint64_t max_body_bytes = 25ull * 1024 * 1024;
  std::uint32_t max_header_bytes = 16 * 1024;
  unsigned threads = 0;  // 0 = hardware threads
  std::chrono::milliseconds drain_timeout{30000};
  // The whole request body must arrive within this time of its header (a trickle that resets
  // an idle timer with every byte does not extend it).
  std::chrono::milliseconds body_timeout{60000};
  // The request bodies all connections together may hold at once; beyond it 503 overloaded.
  std::uint64_t max_buffered_body_bytes = 512ull * 1024 * 1024;
  // Open client connections at once (main listener); beyond it new ones are closed at once.
  std::uint32_t max_connections = 10000;
};

struct AdminSettings {
  ListenAddress listen;
  std::string token;  // when set, /metrics needs `Authorization: Bearer <token>`; secret
  std::optional<ListenerTls> tls;
};

enum class LogLevel { debug, info, warn, error };

struct LoggingSettings {
  std::string access_log = "stdout";  // "stdout", "off", or a file path (SIGUSR1 reopens it)
  LogLevel level = LogLevel::info;    // diagnostics on stderr
  bool bodies = false;                // add truncated request/response bodies to access logs
  std::size_t body_max_bytes = 4096;
};

using Sha256 = std::array<unsigned char, 32>;

// A client key: what logs and metrics show is the name, never the key (only its digest is kept).
struct ClientKey {
  std::string name;
  Sha256 digest{};
  bool has_secret = true;  // false: matched by client certificate only (digest unused)
  // SHA-256 of the client's leaf certificate (DER), for keys matched by mutual TLS.
  std::optional<Sha256> client_cert_sha256;
  std::optional<std::uint64_t> rpm;             // requests per minute
  std::optional<std::uint64_t> tpm;             // tokens per minute
  std::optional<std::uint32_t> max_concurrent;  // requests in flight at once (per replica)
  std::vector<std::string> models;              // allow-list globs; empty = every model
};

enum class LimitStore { memory, redis };
enum class StoreErrorPolicy { allow, deny };

struct RedisTarget {
  std::string host;  // where to connect (localhost is taken as 127.0.0.1)
  std::uint16_t port = 6379;
  std::string user;      // an ACL user (AUTH user password); "" = the default user
  std::string password;  // secret: never logged
  unsigned db = 0;
  // rediss://: TLS, verified against the system store plus ca_file, for the URL's own host
  // (server_name: SNI and the name checked in the certificate; an IP literal is checked as an IP).
  bool tls = false;
  std::string server_name;
  bool host_is_ip = false;
  std::string ca_file;  // rate_limits.redis_ca_file: extra trust (PEM); only with rediss://
};

struct RateLimitSettings {
  LimitStore store = LimitStore::memory;
  std::optional<RedisTarget> redis;
  StoreErrorPolicy on_store_error = StoreErrorPolicy::allow;
  std::uint64_t default_completion_tokens = 1024;
  // rate_limits.redis_lease: how much of a key's limits one replica takes from Redis at a time
  // (ratelimit/lease.hpp). auto: 1% for keys of at least 6000 rpm; off: every admission asks
  // Redis; a fraction in (0, 0.5]: that share of every limit.
  enum class Lease { automatic, off, fraction };
  Lease redis_lease = Lease::automatic;
  double redis_lease_fraction = 0;  // Lease::fraction only
};

struct ReloadSettings {
  // How often the configuration file's content is compared with what is loaded (0: only SIGHUP).
  std::chrono::milliseconds poll{2000};
};

struct Config {
  std::string source;  // file name or "<embedded default>", for messages
  ServerSettings server;
  std::optional<AdminSettings> admin;
  std::vector<Upstream> upstreams;
  std::vector<Route> routes;
  std::vector<ClientKey> keys;  // empty: no client authentication (local sidecar mode)
  RateLimitSettings rate_limits;
  LoggingSettings logging;
  ReloadSettings reload;
  // Where /metrics is served when there is no admin listener: the main listener. Its token, if
  // any, is admin.token; without an admin section /metrics on the main listener is open.
};

}  // namespace llmgw::config
