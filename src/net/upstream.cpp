// Upstream connections: connecting (TCP, then a CONNECT tunnel through the egress proxy, then
// TLS), the per-worker idle pool, and the registry that keeps pools and TLS contexts by upstream
// identity.
#include <openssl/ssl.h>
#include <openssl/x509.h>
#include <sys/socket.h>

#include <boost/asio/ssl/error.hpp>
#include <boost/asio/ssl/host_name_verification.hpp>
#include <cerrno>
#include <optional>

#include <boost/beast/http/empty_body.hpp>
#include <boost/beast/http/read.hpp>
#include <boost/beast/http/write.hpp>

#include "attempt.hpp"
#include "llm_gateway/observability/log.hpp"

namespace llmgw::net {

namespace {
// How long a pooled connection may sit idle before we stop trusting it. Below the common
// upstream keep-alive timeouts (nginx 75 s), so we rarely race the upstream's own close.
constexpr auto kMaxIdle = std::chrono::seconds(50);
constexpr std::size_t kMaxIdlePerUpstream = 64;
}  // namespace

bool UpstreamConnection::looks_reusable() {
  auto& sock = lowest().socket();
  if (!sock.is_open() || buffer.size() != 0) return false;
  if (Clock::now() - idle_since > kMaxIdle) return false;
  char probe;
  const ssize_t r = ::recv(sock.native_handle(), &probe, 1, MSG_PEEK | MSG_DONTWAIT);
  return r < 0 && (errno == EAGAIN || errno == EWOULDBLOCK);
}

UpstreamPool::UpstreamPool() = default;
UpstreamPool::~UpstreamPool() = default;

UpstreamPool::Idle& UpstreamPool::idle(const UpstreamSlot& slot) {
  if (slot.id >= idle_.size()) idle_.resize(slot.id + 1);
  Idle& idle = idle_[slot.id];
  idle.gauge = slot.idle;
  return idle;
}

void UpstreamPool::note_active(const UpstreamSlot& slot, int delta) {
  if (slot.active) slot.active->Increment(delta);
}

std::unique_ptr<UpstreamConnection> UpstreamPool::take(const UpstreamSlot& slot) {
  Idle& pool = idle(slot);
  auto& stack = pool.connections;
  while (!stack.empty()) {
    std::unique_ptr<UpstreamConnection> c = std::move(stack.back());
    stack.pop_back();
    if (pool.gauge) pool.gauge->Decrement();
    if (c->looks_reusable()) return c;
  }
  return nullptr;
}

void UpstreamPool::give_back(const UpstreamSlot& slot, std::unique_ptr<UpstreamConnection> conn) {
  Idle& pool = idle(slot);
  auto& stack = pool.connections;
  if (stack.size() >= kMaxIdlePerUpstream) {
    stack.erase(stack.begin());  // drop the coldest
    if (pool.gauge) pool.gauge->Decrement();
  }
  conn->idle_since = Clock::now();
  stack.push_back(std::move(conn));
  if (pool.gauge) pool.gauge->Increment();
}

void UpstreamPool::clear() {
  for (auto& pool : idle_) {
    if (pool.gauge) pool.gauge->Decrement(static_cast<double>(pool.connections.size()));
    pool.connections.clear();
  }
}

std::shared_ptr<ssl::context> make_client_tls_context(const std::string& ca_file) {
  auto ctx = std::make_shared<ssl::context>(ssl::context::tls_client);
  ctx->set_default_verify_paths();
  if (!ca_file.empty()) ctx->load_verify_file(ca_file);
  ctx->set_verify_mode(ssl::verify_peer);
  SSL_CTX_set_min_proto_version(ctx->native_handle(), TLS1_2_VERSION);
  return ctx;
}

std::string tls_handshake_failure(const boost::system::error_code& ec, SSL* ssl) {
  std::string detail = ec.message();
  const long verify = SSL_get_verify_result(ssl);
  if (verify != X509_V_OK)
    detail += std::string(" (") + X509_verify_cert_error_string(verify) + ")";
  return detail;
}

std::string upstream_identity(const config::Upstream& up) {
  // The name, and everything a pooled connection or a TLS context depends on.
  return up.name + '\n' + (up.base.tls ? "https" : "http") + '\n' + up.base.host + '\n' +
         std::to_string(up.base.port) + '\n' + up.ca_file + '\n' + up.client_cert_file + '\n' +
         up.client_key_file + '\n' +
         (up.proxy ? up.proxy->display() + '\n' + up.proxy->authorization : std::string());
}

std::vector<std::shared_ptr<const UpstreamSlot>> UpstreamRegistry::bind(const config::Config& cfg) {
  std::lock_guard lock(mutex_);
  std::vector<std::shared_ptr<const UpstreamSlot>> bound;
  for (const auto& up : cfg.upstreams) {
    auto& slot = slots_[upstream_identity(up)];
    if (!slot) {
      auto made = std::make_shared<UpstreamSlot>();
      made->id = slots_.size() - 1;
      made->name = up.name;
      if (up.base.tls) {
        auto ctx = make_client_tls_context(up.ca_file);  // ca_file adds to the system roots
        if (!up.client_cert_file.empty()) {
          // Mutual TLS with this upstream (APIM, Front Door, internal gateways).
          ctx->use_certificate_chain_file(up.client_cert_file);
          ctx->use_private_key_file(up.client_key_file, ssl::context::pem);
        }
        made->tls = std::move(ctx);
      }
      if (up.proxy && up.proxy->tls) {
        // An https:// proxy is verified like an upstream: the system store and its ca_file.
        made->proxy_tls = make_client_tls_context(up.ca_file);
      }
      if (metrics_) {
        made->active = &metrics_->upstream_connections(up.name, true);
        made->idle = &metrics_->upstream_connections(up.name, false);
      }
      slot = std::move(made);
    }
    bound.push_back(slot);
  }
  return bound;
}

namespace {

// Connect = TCP, then (the egress issue's slot) a CONNECT tunnel through the corporate proxy,
// then TLS: three steps, each a function of its own.

// Resolves and connects within `deadline`.
// `what` names the peer in errors ("upstream", or the egress proxy's scheme://host:port).
asio::awaitable<std::optional<Failure>> connect_tcp(const std::string& host, std::uint16_t port,
                                                    bool host_is_ip, bool is_proxy,
                                                    const std::string& what,
                                                    Clock::time_point deadline,
                                                    std::optional<beast::tcp_stream>& out) {
  auto ex = co_await asio::this_coro::executor;
  tcp::resolver resolver(ex);
  auto flags = host_is_ip ? tcp::resolver::numeric_host : tcp::resolver::flags{};
  auto [rec, endpoints] = co_await resolver.async_resolve(
      host, std::to_string(port), flags | tcp::resolver::numeric_service, nothrow_awaitable);
  if (rec) {
    co_return Failure{
        is_proxy ? GatewayError::upstream_proxy_error : GatewayError::upstream_unreachable,
        "cannot resolve " + what + " host: " + rec.message()};
  }
  out.emplace(ex);
  out->expires_at(deadline);
  auto [cec, ep] = co_await out->async_connect(endpoints, nothrow_awaitable);
  if (cec) {
    const auto kind = cec == beast::error::timeout ? GatewayError::upstream_timeout
                      : is_proxy                   ? GatewayError::upstream_proxy_error
                                                   : GatewayError::upstream_unreachable;
    co_return Failure{kind, "cannot connect to " + what + ": " + cec.message()};
  }
  boost::system::error_code ignored;
  out->socket().set_option(tcp::no_delay(true), ignored);
  co_return std::nullopt;
}

// The tunnel to the upstream through the egress proxy: CONNECT host:port, and a 2xx answer.
// Anything else (407, 403, a closed connection) is the proxy's error, reported with its status
// line and never its credentials.
template <class Stream>
asio::awaitable<std::optional<Failure>> open_tunnel(const config::Upstream& up, Stream& stream) {
  const config::EgressProxy& proxy = *up.proxy;
  const std::string authority = up.base.host_is_ip && up.base.host.find(':') != std::string::npos
                                    ? "[" + up.base.host + "]:" + std::to_string(up.base.port)
                                    : up.base.host + ":" + std::to_string(up.base.port);
  http::request<http::empty_body> connect_request{http::verb::connect, authority, 11};
  connect_request.set(http::field::host, authority);
  if (!proxy.authorization.empty())
    connect_request.set(http::field::proxy_authorization, proxy.authorization);
  auto [wec, wn] = co_await http::async_write(stream, connect_request, nothrow_awaitable);
  if (wec) {
    co_return Failure{GatewayError::upstream_proxy_error,
                      "the egress proxy " + proxy.display() + " failed: " + wec.message()};
  }
  beast::flat_buffer buffer;
  http::response_parser<http::empty_body> parser;
  parser.skip(true);  // a CONNECT answer has no body; the tunnel starts after its head
  auto [rec, rn] = co_await http::async_read_header(stream, buffer, parser, nothrow_awaitable);
  if (rec) {
    co_return Failure{
        rec == beast::error::timeout ? GatewayError::upstream_timeout
                                     : GatewayError::upstream_proxy_error,
        "the egress proxy " + proxy.display() + " did not open a tunnel: " + rec.message()};
  }
  const auto& head = parser.get();
  if (head.result_int() < 200 || head.result_int() > 299 || buffer.size() != 0) {
    const std::string reason(head.reason().substr(0, 128));
    co_return Failure{GatewayError::upstream_proxy_error,
                      "the egress proxy " + proxy.display() + " refused the tunnel to " +
                          authority + ": " + std::to_string(head.result_int()) + " " + reason};
  }
  co_return std::nullopt;
}

// A TLS handshake as a client of `host` (SNI, ALPN http/1.1, chain and host-name verification)
// on any stream: with the upstream, with an https:// proxy, or with the upstream inside the
// proxy's tunnel.
template <class Stream>
asio::awaitable<std::optional<Failure>> handshake_tls(Stream& tls, const std::string& host,
                                                      bool host_is_ip, const std::string& what,
                                                      bool is_proxy) {
  SSL* ssl_handle = tls.native_handle();
  // SNI carries host names only (RFC 6066 §3); an IP literal must instead be in the certificate.
  if (!host_is_ip) SSL_set_tlsext_host_name(ssl_handle, host.c_str());
  static constexpr unsigned char kAlpn[] = {8, 'h', 't', 't', 'p', '/', '1', '.', '1'};
  SSL_set_alpn_protos(ssl_handle, kAlpn, sizeof kAlpn);
  tls.set_verify_mode(ssl::verify_peer);
  tls.set_verify_callback(ssl::host_name_verification(host));
  auto [hec] = co_await tls.async_handshake(ssl::stream_base::client, nothrow_awaitable);
  if (hec) {
    const std::string detail = tls_handshake_failure(hec, ssl_handle);
    const auto kind = hec == beast::error::timeout ? GatewayError::upstream_timeout
                      : is_proxy                   ? GatewayError::upstream_proxy_error
                                                   : GatewayError::upstream_tls_error;
    co_return Failure{kind, "TLS handshake with " + what + " failed: " + detail};
  }
  co_return std::nullopt;
}

}  // namespace

asio::awaitable<std::optional<Failure>> connect(const config::Upstream& up, ssl::context* tls_ctx,
                                                ssl::context* proxy_tls_ctx,
                                                UpstreamConnection& conn) {
  const auto deadline = Clock::now() + up.connect_timeout;
  std::optional<beast::tcp_stream> stream;
  const std::string upstream_name = "upstream";
  // (co_await results are taken into variables first: see run_attempt in router.cpp.)
  std::optional<Failure> failure;
  if (!up.proxy) {
    failure = co_await connect_tcp(up.base.host, up.base.port, up.base.host_is_ip, false,
                                   upstream_name, deadline, stream);
    if (failure) co_return failure;
    if (!tls_ctx) {
      stream->expires_never();  // from here on the exchange guard keeps the time
      conn.plain.emplace(std::move(*stream));
      co_return std::nullopt;
    }
    conn.tls.emplace(std::move(*stream), *tls_ctx);
    beast::get_lowest_layer(*conn.tls).expires_at(deadline);
    failure =
        co_await handshake_tls(*conn.tls, up.base.host, up.base.host_is_ip, upstream_name, false);
    if (failure) co_return failure;
    beast::get_lowest_layer(*conn.tls).expires_never();
    co_return std::nullopt;
  }

  // Through the egress proxy: TCP to the proxy (and TLS with an https:// one), then for an https
  // upstream a CONNECT tunnel and TLS with the real host inside it. A plain-http upstream sends
  // absolute-form requests to the proxy instead (router.cpp).
  const config::EgressProxy& proxy = *up.proxy;
  const std::string proxy_name = "the egress proxy " + proxy.display();
  failure = co_await connect_tcp(proxy.host, proxy.port, proxy.host_is_ip, true, proxy_name,
                                 deadline, stream);
  if (failure) co_return failure;
  if (!proxy.tls) {
    if (tls_ctx) failure = co_await open_tunnel(up, *stream);
    if (failure) co_return failure;
    if (!tls_ctx) {
      stream->expires_never();
      conn.plain.emplace(std::move(*stream));
      co_return std::nullopt;
    }
    conn.tls.emplace(std::move(*stream), *tls_ctx);
    failure =
        co_await handshake_tls(*conn.tls, up.base.host, up.base.host_is_ip, upstream_name, false);
    if (failure) co_return failure;
    beast::get_lowest_layer(*conn.tls).expires_never();
    co_return std::nullopt;
  }
  if (!proxy_tls_ctx) co_return Failure{GatewayError::upstream_proxy_error, "no TLS context"};
  UpstreamTlsStream to_proxy(std::move(*stream), *proxy_tls_ctx);
  failure = co_await handshake_tls(to_proxy, proxy.host, proxy.host_is_ip, proxy_name, true);
  if (failure) co_return failure;
  if (!tls_ctx) {
    beast::get_lowest_layer(to_proxy).expires_never();
    conn.tls.emplace(std::move(to_proxy));
    co_return std::nullopt;
  }
  failure = co_await open_tunnel(up, to_proxy);
  if (failure) co_return failure;
  conn.tls_in_tls.emplace(std::move(to_proxy), *tls_ctx);
  failure = co_await handshake_tls(*conn.tls_in_tls, up.base.host, up.base.host_is_ip,
                                   upstream_name, false);
  if (failure) co_return failure;
  beast::get_lowest_layer(*conn.tls_in_tls).expires_never();
  co_return std::nullopt;
}

}  // namespace llmgw::net
