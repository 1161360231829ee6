// The Entra ID token service: a thread with its own io_context runs one refresh loop per identity
// (fetch; on success wait half the token's lifetime; on failure back off 1 s, 2 s, ... 30 s, the
// IMDS guidance) and publishes the current token under a lock the I/O threads only read.
#include "llm_gateway/net/tokens.hpp"

#include <algorithm>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/beast/http/read.hpp>
#include <boost/beast/http/string_body.hpp>
#include <boost/beast/http/write.hpp>
#include <boost/url/parse.hpp>
#include <fstream>
#include <map>
#include <shared_mutex>
#include <sstream>
#include <thread>

#include "attempt.hpp"
#include "llm_gateway/auth/entra.hpp"
#include "llm_gateway/observability/log.hpp"

namespace llmgw::net {

namespace {
constexpr auto kMinBackoff = std::chrono::seconds(1);
constexpr auto kMaxBackoff = std::chrono::seconds(30);
constexpr auto kFetchTimeout = std::chrono::seconds(10);
constexpr std::size_t kMaxAnswer = 64 * 1024;

bool loopback(const std::string& host) {
  return host == "localhost" || host.starts_with("127.") || host == "::1" || host == "[::1]";
}
}  // namespace

struct TokenService::Impl {
  struct Source {
    config::EntraAuth auth;
    std::vector<std::string> upstreams;  // names, for metrics and logs
    std::string token;                   // guarded by Impl::mutex
    Clock::time_point expires{};
    std::chrono::system_clock::time_point expires_wall{};
    std::string last_error;
    std::string endpoint;
  };

  explicit Impl(observability::Metrics* m)
      : metrics(m), tls(ssl::context::tls_client), work(asio::make_work_guard(ioc)) {
    tls.set_default_verify_paths();
    tls.set_verify_mode(ssl::verify_peer);
    thread = std::thread([this] { ioc.run(); });
  }
  ~Impl() {
    work.reset();
    ioc.stop();
    thread.join();
  }

  template <class Stream>
  static asio::awaitable<boost::system::error_code> exchange(
      Stream& stream, beast::flat_buffer& buffer, http::request<http::string_body>& message,
      http::response_parser<http::string_body>& parser) {
    auto [wec, wn] = co_await http::async_write(stream, message, nothrow_awaitable);
    if (wec) co_return wec;
    auto [rec, rn] = co_await http::async_read(stream, buffer, parser, nothrow_awaitable);
    co_return rec;
  }

  asio::awaitable<auth::TokenResult> fetch(const auth::TokenRequest& req,
                                           const std::optional<config::EgressProxy>& proxy) {
    auto url = boost::urls::parse_uri(req.url);
    if (!url) co_return auth::TokenResult{{}, {}, "the token URL cannot be parsed"};
    config::Upstream target;
    target.name = "token endpoint";
    target.base.tls = url->scheme() == "https";
    target.base.host = url->host_address();
    target.base.host_is_ip = url->host_type() != boost::urls::host_type::name;
    target.base.port = url->has_port() ? url->port_number() : (target.base.tls ? 443 : 80);
    target.base.host_header = std::string(url->encoded_host_and_port());
    target.connect_timeout = std::chrono::seconds(5);
    target.proxy = proxy;
    UpstreamConnection conn;
    std::optional<Failure> failure =
        co_await connect(target, target.base.tls ? &tls : nullptr, &tls, conn);
    if (failure) co_return auth::TokenResult{{}, {}, failure->message};

    http::request<http::string_body> message;
    message.method(req.method);
    std::string path(url->encoded_path());
    if (path.empty()) path = "/";
    if (url->has_query()) path += "?" + std::string(url->encoded_query());
    if (proxy && !target.base.tls) {
      message.target("http://" + target.base.host_header + path);  // absolute-form via the proxy
      if (!proxy->authorization.empty())
        message.set(http::field::proxy_authorization, proxy->authorization);
    } else {
      message.target(path);
    }
    message.version(11);
    message.set(http::field::host, target.base.host_header);
    message.set(http::field::user_agent, "llm-gateway");
    for (const auto& [name, value] : req.headers) message.set(name, value);
    message.body() = req.body;
    message.prepare_payload();
    message.keep_alive(false);

    http::response_parser<http::string_body> parser;
    parser.body_limit(kMaxAnswer);
    conn.lowest().expires_after(kFetchTimeout);
    // (co_await results are taken into variables first: see run_attempt in router.cpp.)
    boost::system::error_code ec;
    if (conn.tls_in_tls) {
      ec = co_await exchange(*conn.tls_in_tls, conn.buffer, message, parser);
    } else if (conn.tls) {
      ec = co_await exchange(*conn.tls, conn.buffer, message, parser);
    } else {
      ec = co_await exchange(*conn.plain, conn.buffer, message, parser);
    }
    if (ec) co_return auth::TokenResult{{}, {}, "asking for a token failed: " + ec.message()};
    co_return auth::parse_token_response(parser.get().result_int(), parser.get().body(),
                                         std::chrono::system_clock::now());
  }

  asio::awaitable<void> refresh_loop(std::shared_ptr<Source> src) {
    asio::steady_timer timer(ioc);
    auto backoff = std::chrono::duration_cast<Clock::duration>(kMinBackoff);
    for (;;) {
      std::string federated;
      bool readable = true;
      if (src->auth.mode == config::EntraMode::workload_identity) {
        // Re-read every time: the kubelet rotates the projected token.
        std::ifstream in(src->auth.federated_token_file);
        std::ostringstream text;
        text << in.rdbuf();
        federated = std::move(text).str();
        while (!federated.empty() && (federated.back() == '\n' || federated.back() == '\r'))
          federated.pop_back();
        readable = in.good() || in.eof();
        if (!in.is_open() || federated.empty()) readable = false;
      }
      const auth::TokenRequest req = auth::token_request(src->auth, federated);
      auth::TokenResult result;
      if (!readable) {
        result.error = "cannot read AZURE_FEDERATED_TOKEN_FILE " + src->auth.federated_token_file;
      } else {
        result = co_await fetch(req, src->auth.proxy);
      }
      Clock::duration next;
      {
        std::unique_lock lock(mutex);
        src->endpoint = req.endpoint;
        if (!result.access_token.empty()) {
          src->token = std::move(result.access_token);
          src->expires = Clock::now() + result.lifetime;
          src->expires_wall = std::chrono::system_clock::now() + result.lifetime;
          src->last_error.clear();
          next = std::max<Clock::duration>(result.lifetime / 2, std::chrono::seconds(1));
          backoff = kMinBackoff;
        } else {
          src->last_error = result.error;
          next = backoff;
          backoff = std::min<Clock::duration>(backoff * 2, kMaxBackoff);
        }
      }
      const bool ok = src->last_error.empty();
      for (const auto& name : src->upstreams) {
        if (metrics) metrics->token_refresh(name, ok).Increment();
      }
      if (ok) {
        log::line(log::Level::debug, "entra token refreshed",
                  {{"upstream", src->upstreams.front()}, {"endpoint", req.endpoint}});
      } else {
        log::line(log::Level::warn, "entra token request failed",
                  {{"upstream", src->upstreams.front()},
                   {"endpoint", req.endpoint},
                   {"detail", result.error}});
      }
      timer.expires_after(next);
      auto [tec] = co_await timer.async_wait(nothrow_awaitable);
      if (tec) co_return;
    }
  }

  std::shared_ptr<const Source> find(const config::EntraAuth& a) const {
    auto it = sources.find(a.identity());
    return it == sources.end() ? nullptr : it->second;
  }

  observability::Metrics* metrics;
  ssl::context tls;  // outlives the io_context, whose teardown destroys suspended fetches
  asio::io_context ioc{1};
  asio::executor_work_guard<asio::io_context::executor_type> work;
  mutable std::shared_mutex mutex;
  std::map<std::string, std::shared_ptr<Source>> sources;  // by identity
  std::thread thread;
};

TokenService::TokenService(observability::Metrics* metrics)
    : impl_(std::make_unique<Impl>(metrics)) {}

TokenService::~TokenService() = default;

void TokenService::track(const config::Config& cfg) {
  std::unique_lock lock(impl_->mutex);
  for (const auto& up : cfg.upstreams) {
    if (!up.entra) continue;
    const std::string identity = up.entra->identity();
    auto& src = impl_->sources[identity];
    if (src) {
      if (std::find(src->upstreams.begin(), src->upstreams.end(), up.name) == src->upstreams.end())
        src->upstreams.push_back(up.name);
      continue;
    }
    src = std::make_shared<Impl::Source>();
    src->auth = *up.entra;
    src->upstreams.push_back(up.name);
    // The URL this mode really asks (token_request knows which): plain http is for local token
    // services; IMDS is plain http by design.
    const std::string endpoint = auth::token_request(*up.entra, "").endpoint;
    if (auto parsed = boost::urls::parse_uri(endpoint); parsed && parsed->scheme() == "http" &&
                                                        !loopback(std::string(parsed->host())) &&
                                                        parsed->host() != "169.254.169.254") {
      log::line(log::Level::warn, "a token endpoint is plain http on a non-loopback address",
                {{"upstream", up.name},
                 {"url", "http://" + std::string(parsed->encoded_host_and_port())}});
    }
    asio::co_spawn(impl_->ioc, impl_->refresh_loop(src), asio::detached);
  }
}

std::optional<std::string> TokenService::token(const config::EntraAuth& auth) const {
  std::shared_lock lock(impl_->mutex);
  auto src = impl_->find(auth);
  if (!src || src->token.empty() || Clock::now() >= src->expires) return std::nullopt;
  return src->token;
}

std::string TokenService::why_not(const config::EntraAuth& auth) const {
  std::shared_lock lock(impl_->mutex);
  auto src = impl_->find(auth);
  if (!src) return "no token requested yet";
  std::string why = src->last_error.empty()
                        ? (src->token.empty() ? "no token yet" : "the token expired")
                        : src->last_error;
  if (!src->endpoint.empty()) why += " (token endpoint " + src->endpoint + ")";
  return why;
}

std::vector<std::string> TokenService::missing(const config::Config& cfg) const {
  std::vector<std::string> out;
  for (const auto& up : cfg.upstreams) {
    if (up.entra && !token(*up.entra)) out.push_back(up.name);
  }
  return out;
}

void TokenService::export_metrics(const config::Config& cfg) const {
  if (!impl_->metrics) return;
  std::shared_lock lock(impl_->mutex);
  const auto now = std::chrono::system_clock::now();
  for (const auto& up : cfg.upstreams) {
    if (!up.entra) continue;
    auto src = impl_->find(*up.entra);
    const double left = src && !src->token.empty()
                            ? std::chrono::duration<double>(src->expires_wall - now).count()
                            : 0.0;
    impl_->metrics->token_expiry(up.name).Set(std::max(0.0, left));
  }
}

}  // namespace llmgw::net
