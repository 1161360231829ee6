// Forward & relay: upstream connections (plain TCP or TLS), the per-worker idle pool, and the
// piece-by-piece response relay. All upstream Beast I/O lives in this translation unit; the relay
// template is instantiated exactly twice (plain and TLS upstream).
#include <openssl/ssl.h>
#include <openssl/x509.h>
#include <sys/socket.h>

#include <array>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/ssl/error.hpp>
#include <boost/asio/ssl/host_name_verification.hpp>
#include <boost/asio/ssl/stream.hpp>
#include <boost/asio/write.hpp>
#include <boost/beast/http/buffer_body.hpp>
#include <boost/beast/http/error.hpp>
#include <boost/beast/http/parser.hpp>
#include <boost/beast/http/read.hpp>
#include <boost/beast/http/serializer.hpp>
#include <boost/beast/http/write.hpp>
#include <cerrno>
#include <optional>

#include "llm_gateway/net/io.hpp"
#include "llm_gateway/observability/log.hpp"

namespace llmgw::net {
namespace http = beast::http;
namespace ssl = asio::ssl;
using TlsStream = ssl::stream<beast::tcp_stream>;

namespace {
// How long a pooled connection may sit idle before we stop trusting it. Below the common
// upstream keep-alive timeouts (nginx 75 s), so we rarely race the upstream's own close.
constexpr auto kMaxIdle = std::chrono::seconds(50);
constexpr std::size_t kMaxIdlePerUpstream = 64;
// A client that stops reading for this long is dropped rather than holding the upstream open.
constexpr auto kDownstreamWriteStall = std::chrono::seconds(60);
constexpr std::size_t kResponseHeaderLimit = 64 * 1024;
constexpr std::size_t kRelayBufferBytes = 16 * 1024;
// Beast reads max(512, free capacity) bytes at a time: without room reserved up front every
// response would be read 512 bytes per system call.
constexpr std::size_t kUpstreamReadBuffer = 16 * 1024;
}  // namespace

struct UpstreamConnection {
  std::optional<beast::tcp_stream> plain;
  std::optional<TlsStream> tls;
  beast::flat_buffer buffer;  // kept across responses: may hold bytes read past a message
  Clock::time_point idle_since{};

  beast::tcp_stream& lowest() { return tls ? beast::get_lowest_layer(*tls) : *plain; }

  // An idle keep-alive connection is usable only if nothing arrived on it: a FIN (the upstream
  // closed it) or unsolicited bytes both make it unusable.
  bool looks_reusable() {
    auto& sock = lowest().socket();
    if (!sock.is_open() || buffer.size() != 0) return false;
    if (Clock::now() - idle_since > kMaxIdle) return false;
    char probe;
    const ssize_t r = ::recv(sock.native_handle(), &probe, 1, MSG_PEEK | MSG_DONTWAIT);
    return r < 0 && (errno == EAGAIN || errno == EWOULDBLOCK);
  }
};

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

std::string upstream_identity(const config::Upstream& up) {
  // The name, and everything a pooled connection or a TLS context depends on.
  return up.name + '\n' + (up.base.tls ? "https" : "http") + '\n' + up.base.host + '\n' +
         std::to_string(up.base.port) + '\n' + up.ca_file;
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
        auto ctx = std::make_shared<ssl::context>(ssl::context::tls_client);
        ctx->set_default_verify_paths();
        if (!up.ca_file.empty()) ctx->load_verify_file(up.ca_file);  // adds to the system roots
        ctx->set_verify_mode(ssl::verify_peer);
        SSL_CTX_set_min_proto_version(ctx->native_handle(), TLS1_2_VERSION);
        made->tls = std::move(ctx);
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

struct Failure {
  GatewayError error = GatewayError::upstream_unreachable;
  std::string message;
  bool after_connect = false;  // the connection was up: a reset rather than a connect failure
};

GatewayError classify(const boost::system::error_code& ec) {
  if (ec == beast::error::timeout) return GatewayError::upstream_timeout;
  // Closed before a response began: the connection went away, the response was not malformed.
  if (ec == http::error::end_of_stream) return GatewayError::upstream_unreachable;
  if (ec.category() == asio::error::get_ssl_category() || ec == ssl::error::stream_truncated)
    return GatewayError::upstream_tls_error;
  if (ec.category() == http::make_error_code(http::error::bad_version).category())
    return GatewayError::upstream_protocol_error;
  return GatewayError::upstream_unreachable;
}

std::string_view error_kind(const Failure& f) {
  switch (f.error) {
    case GatewayError::upstream_timeout: return "timeout";
    case GatewayError::upstream_tls_error: return "tls";
    case GatewayError::upstream_protocol_error: return "protocol";
    default: return f.after_connect ? "reset" : "connect";
  }
}

// Guards one exchange with one timer and one socket wait, instead of a timer operation per read
// and write: the upstream deadline (timeout_ms, the whole exchange), a client that stops reading
// (write stall), and a client that goes away (its socket turns readable with EOF) — which closes
// the upstream request at once instead of letting it run, and bill, to the end.
struct ExchangeGuard {
  explicit ExchangeGuard(const asio::any_io_executor& ex) : timer(ex) {}
  asio::steady_timer timer;
  bool active = true;
  Clock::time_point upstream_deadline{};
  std::optional<Clock::time_point> write_since;  // a write to the client is in progress
  bool upstream_timed_out = false;
  bool client_stalled = false;
  bool client_gone = false;
  beast::tcp_stream* upstream = nullptr;
  beast::tcp_stream* down = nullptr;
};

constexpr auto kGuardTick = std::chrono::seconds(10);

void arm_timer(const std::shared_ptr<ExchangeGuard>& g) {
  const auto tick = Clock::now() + kGuardTick;
  g->timer.expires_at(g->upstream_timed_out ? tick : std::min(g->upstream_deadline, tick));
  g->timer.async_wait([g](boost::system::error_code ec) {
    if (ec || !g->active) return;
    const auto now = Clock::now();
    if (!g->upstream_timed_out && now >= g->upstream_deadline) {
      g->upstream_timed_out = true;
      if (g->upstream) g->upstream->close();
      // timeout_ms bounds the whole exchange: a write the client is not reading is cut with it
      // (the response cannot complete anyway).
      if (g->write_since) g->down->close();
      // The guard keeps ticking: a write may still start and stall.
    }
    if (g->write_since && now - *g->write_since >= kDownstreamWriteStall) {
      g->client_stalled = true;
      g->down->close();
      if (g->upstream) g->upstream->close();
      return;
    }
    arm_timer(g);
  });
}

void watch_client(const std::shared_ptr<ExchangeGuard>& g) {
  tcp::socket& down = g->down->socket();
  down.async_wait(tcp::socket::wait_read, [g](boost::system::error_code ec) {
    if (!g->active || ec) return;  // exchange finished (or cancelled): `down` may be gone
    char probe;
    const ssize_t r = ::recv(g->down->socket().native_handle(), &probe, 1, MSG_PEEK | MSG_DONTWAIT);
    if (r > 0) return;  // a pipelined next request: the client is still there
    if (r < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
      watch_client(g);  // spurious wake-up
      return;
    }
    g->client_gone = true;
    if (g->upstream) g->upstream->close();
  });
}

// Connect = TCP, then (the egress issue's slot) a CONNECT tunnel through the corporate proxy,
// then TLS: three steps, each a function of its own.

// Resolves and connects within `deadline`.
asio::awaitable<std::optional<Failure>> connect_tcp(const config::Upstream& up,
                                                    Clock::time_point deadline,
                                                    std::optional<beast::tcp_stream>& out) {
  auto ex = co_await asio::this_coro::executor;
  tcp::resolver resolver(ex);
  auto flags = up.base.host_is_ip ? tcp::resolver::numeric_host : tcp::resolver::flags{};
  auto [rec, endpoints] =
      co_await resolver.async_resolve(up.base.host, std::to_string(up.base.port),
                                      flags | tcp::resolver::numeric_service, nothrow_awaitable);
  if (rec) {
    co_return Failure{GatewayError::upstream_unreachable,
                      "cannot resolve upstream host: " + rec.message()};
  }
  out.emplace(ex);
  out->expires_at(deadline);
  auto [cec, ep] = co_await out->async_connect(endpoints, nothrow_awaitable);
  if (cec) {
    const auto kind = cec == beast::error::timeout ? GatewayError::upstream_timeout
                                                   : GatewayError::upstream_unreachable;
    co_return Failure{kind, "cannot connect to upstream: " + cec.message()};
  }
  boost::system::error_code ignored;
  out->socket().set_option(tcp::no_delay(true), ignored);
  co_return std::nullopt;
}

// The TLS handshake over `conn.tls` (SNI, ALPN http/1.1, chain and host-name verification).
asio::awaitable<std::optional<Failure>> handshake_tls(const config::Upstream& up,
                                                      Clock::time_point deadline,
                                                      UpstreamConnection& conn) {
  SSL* ssl_handle = conn.tls->native_handle();
  // SNI carries host names only (RFC 6066 §3); an IP literal must instead be in the certificate.
  if (!up.base.host_is_ip) SSL_set_tlsext_host_name(ssl_handle, up.base.host.c_str());
  static constexpr unsigned char kAlpn[] = {8, 'h', 't', 't', 'p', '/', '1', '.', '1'};
  SSL_set_alpn_protos(ssl_handle, kAlpn, sizeof kAlpn);
  conn.tls->set_verify_mode(ssl::verify_peer);
  conn.tls->set_verify_callback(ssl::host_name_verification(up.base.host));
  beast::get_lowest_layer(*conn.tls).expires_at(deadline);
  auto [hec] = co_await conn.tls->async_handshake(ssl::stream_base::client, nothrow_awaitable);
  if (hec) {
    std::string detail = hec.message();
    const long verify = SSL_get_verify_result(ssl_handle);
    if (verify != X509_V_OK)
      detail += std::string(" (") + X509_verify_cert_error_string(verify) + ")";
    const auto kind = hec == beast::error::timeout ? GatewayError::upstream_timeout
                                                   : GatewayError::upstream_tls_error;
    co_return Failure{kind, "TLS handshake with upstream failed: " + detail};
  }
  co_return std::nullopt;
}

asio::awaitable<std::optional<Failure>> connect(const config::Upstream& up, ssl::context* tls_ctx,
                                                UpstreamConnection& conn) {
  const auto deadline = Clock::now() + up.connect_timeout;
  std::optional<beast::tcp_stream> stream;
  // (co_await results are taken into variables first: see Attempt::run.)
  std::optional<Failure> failure = co_await connect_tcp(up, deadline, stream);
  if (failure) co_return failure;
  // (A CONNECT tunnel through an egress proxy goes here, on `stream`, before TLS.)
  if (!tls_ctx) {
    stream->expires_never();  // from here on the exchange guard keeps the time
    conn.plain.emplace(std::move(*stream));
    co_return std::nullopt;
  }
  conn.tls.emplace(std::move(*stream), *tls_ctx);
  failure = co_await handshake_tls(up, deadline, conn);
  if (failure) co_return failure;
  beast::get_lowest_layer(*conn.tls).expires_never();
  co_return std::nullopt;
}

enum class Outcome {
  relayed,    // the response went to the client completely
  retryable,  // failed on a reused connection where the upstream cannot have acted on it
  failed,     // failed before the response started: the client gets a gateway error
  broken,     // failed after the response started: the client connection is cut
};

struct ExchangeResult {
  Outcome outcome = Outcome::failed;
  Failure failure;
  bool upstream_reusable = false;
  bool downstream_reusable = false;
};

// Strips hop-by-hop fields from a response header (is_hop_by_hop, shared with translate()), but
// Transfer-Encoding and Content-Length stay: the serializer frames the body from them.
void strip_hop_by_hop(http::fields& h) {
  std::vector<std::string> drop;
  for (const auto& f : h) {
    const std::string_view name = f.name_string();
    if (beast::iequals(name, "transfer-encoding") || beast::iequals(name, "content-length"))
      continue;
    if (is_hop_by_hop(name, h)) drop.emplace_back(name);
  }
  for (const auto& name : drop) h.erase(name);
}

// One attempt on one upstream connection, in the router's steps: send the request, read the
// response head, decide, commit the head to the client, relay the body. Only commit() and relay()
// touch the client; every step before them can still fail over to a gateway error (or, later, to
// another attempt) without the client having seen anything.
template <class Stream>
class Attempt {
 public:
  Attempt(Stream& up, UpstreamConnection& conn, bool reused, http::request<http::buffer_body>& req,
          const Pipeline& pipeline, RequestContext& ctx, beast::tcp_stream& down,
          const DownstreamReply& reply, ExchangeGuard& guard)
      : up_(up),
        conn_(conn),
        reused_(reused),
        req_(req),
        pipeline_(pipeline),
        ctx_(ctx),
        down_(down),
        reply_(reply),
        guard_(guard) {}

  asio::awaitable<ExchangeResult> run() {
    // (No co_await inside an if condition: g++ 12 miscompiled `if (!co_await send())` here into a
    // trap (SIGILL), so results are always taken into a variable first.)
    bool ok = co_await send();
    if (ok) ok = co_await read_head();
    if (ok) ok = decide();
    if (ok) ok = co_await commit();
    if (ok) co_await relay();
    co_return result_;
  }

 private:
  // An error after the guard closed the connection is the deadline's doing.
  boost::system::error_code upstream_error(boost::system::error_code ec) const {
    return guard_.upstream_timed_out ? boost::system::error_code(beast::error::timeout) : ec;
  }

  bool fail(Outcome outcome, GatewayError error, std::string message) {
    result_.outcome = outcome;
    result_.failure = {error, std::move(message), true};
    return false;
  }

  // A request is sent again (on a fresh connection) only when the upstream cannot have acted on
  // it: nothing of it could be complete there (its write failed part-way), or its method is
  // idempotent. A POST that was written whole may have been processed (and billed) by an
  // upstream that closed the connection right after: it is never re-sent, as Envoy and nginx do
  // for non-idempotent requests.
  bool idempotent() const {
    return req_.method() == http::verb::get || req_.method() == http::verb::delete_;
  }

  asio::awaitable<bool> send() {
    auto [wec0, wn] = co_await http::async_write(up_, req_, nothrow_awaitable);
    const auto wec = upstream_error(wec0);
    if (wec) {
      co_return fail(reused_ && wec != beast::error::timeout ? Outcome::retryable : Outcome::failed,
                     classify(wec), "sending the request upstream failed: " + wec.message());
    }
    ctx_.upstream_request_written = Clock::now();
    co_return true;
  }

  asio::awaitable<bool> read_head() {
    for (;;) {
      parser_.emplace();
      parser_->header_limit(kResponseHeaderLimit);
      parser_->body_limit(boost::none);  // streams may be long; the deadline bounds them
      if (ctx_.method == http::verb::head) parser_->skip(true);
      auto [rec0, rn] =
          co_await http::async_read_header(up_, conn_.buffer, *parser_, nothrow_awaitable);
      const auto rec = upstream_error(rec0);
      if (rec) {
        const bool nothing_received = !parser_->got_some() && conn_.buffer.size() == 0;
        const bool retry = reused_ && idempotent() && nothing_received &&
                           rec != beast::error::timeout && !guard_.client_gone;
        co_return fail(retry ? Outcome::retryable : Outcome::failed, classify(rec),
                       "reading the upstream response failed: " + rec.message());
      }
      const unsigned status = parser_->get().result_int();
      if (status >= 200 || status == 101) co_return true;  // interim 1xx responses are skipped
    }
  }

  // Whether this response goes to the client. Failover on 429/5xx and a token refresh on 401
  // decide here, before anything was committed.
  bool decide() {
    if (parser_->get().result_int() == 101) {
      // Nothing the gateway sends asks to switch protocols: an upstream that does is broken (or
      // hostile), and relaying it would leave the client on a connection no one speaks HTTP on.
      return fail(Outcome::failed, GatewayError::upstream_protocol_error,
                  "the upstream answered 101 Switching Protocols to a plain request");
    }
    return true;
  }

  // The response head as the client gets it; written now unless body bytes came with it (a
  // typical non-stream answer), in which case it goes out with the first piece in one write.
  asio::awaitable<bool> commit() {
    auto& res = parser_->get();
    ctx_.upstream_first_byte = Clock::now();
    ctx_.status = res.result_int();
    ctx_.upstream_status = ctx_.status;
    upstream_keep_alive_ = res.keep_alive();
    const auto content_type = res[http::field::content_type];
    // A stream is what the client asked for (stream: true) or an SSE answer; a JSON answer that
    // merely arrives chunked (as api.openai.com sends them) is not one.
    ctx_.streamed = ctx_.body_facts.stream || content_type.starts_with("text/event-stream");

    strip_hop_by_hop(res);
    res.set("x-gateway-request-id", ctx_.request_id);
    pipeline_.on_response_headers(ctx_, ctx_.status, res);
    keep_alive_ = reply_.keep_alive;
    const bool has_body = !parser_->is_done();
    if (reply_.http_version < 11) {
      if (res.chunked()) {
        res.chunked(false);  // HTTP/1.0 cannot take chunks: delimit the body by closing
        keep_alive_ = false;
      }
    } else if (has_body && !res.chunked() && !res.has_content_length()) {
      res.chunked(true);  // a close-delimited upstream body is re-framed for the client
    }
    res.version(reply_.http_version);
    res.keep_alive(keep_alive_);
    if (!res.has_content_length() && !res.chunked() && has_body) keep_alive_ = false;

    serializer_.emplace(res);
    if (parser_->is_done() || conn_.buffer.size() == 0) {
      guard_.write_since = Clock::now();
      auto [hec, hn] = co_await http::async_write_header(down_, *serializer_, nothrow_awaitable);
      guard_.write_since.reset();
      if (hec) {
        result_.outcome = Outcome::broken;
        ctx_.client_aborted = true;
        co_return false;
      }
      ctx_.bytes_out += hn;
      ctx_.client_first_byte = Clock::now();
    }
    co_return true;
  }

  // Each read_some returns as soon as the parser made progress, so an SSE event is written to
  // the client the moment it arrives rather than when a buffer fills up.
  asio::awaitable<void> relay() {
    auto& res = parser_->get();
    auto& sr = *serializer_;
    std::array<char, kRelayBufferBytes> piece;
    std::vector<std::string_view> out;  // what goes to the client for one piece
    for (bool done = parser_->is_done();; done = parser_->is_done()) {
      out.clear();
      if (!done) {
        res.body().data = piece.data();
        res.body().size = piece.size();
        auto [rec0, rn] =
            co_await http::async_read_some(up_, conn_.buffer, *parser_, nothrow_awaitable);
        auto rec = upstream_error(rec0);
        if (rec == http::error::need_buffer) rec = {};
        if (rec == ssl::error::stream_truncated && parser_->is_done()) rec = {};
        if (rec) {
          ctx_.client_aborted = guard_.client_gone;
          if (ctx_.bytes_out == 0) {
            // Nothing reached the client yet (the head waits for the first body piece): it
            // gets a gateway error in OpenAI's shape, never a silent close.
            ctx_.streamed = false;
            ctx_.body_rewriter = nullptr;
            fail(Outcome::failed, classify(rec),
                 "relaying the upstream body failed: " + rec.message());
          } else {
            fail(Outcome::broken, classify(rec),
                 "relaying the upstream body failed: " + rec.message());
          }
          co_return;
        }
        done = parser_->is_done();
        const std::string_view got(piece.data(), piece.size() - res.body().size);
        if (got.empty() && !done) continue;  // parsed framing only (a chunk header)
        if (!got.empty()) pipeline_.on_response_body(ctx_, got);
        if (ctx_.body_rewriter) {
          ctx_.body_rewriter->rewrite(got, done, out);
        } else if (!got.empty()) {
          out.push_back(got);
        }
      }
      if (done) pipeline_.on_response_end(ctx_);  // before the last bytes reach the client
      // Each piece is written as soon as it is read. An empty buffer would read as the end of
      // the body to the serializer, so the end is signalled with the last piece or with none.
      for (std::size_t i = 0; i < out.size() || (i == 0 && done); ++i) {
        const bool final_write = done && i + 1 >= out.size();
        res.body().data = i < out.size() ? const_cast<char*>(out[i].data()) : nullptr;
        res.body().size = i < out.size() ? out[i].size() : 0;
        res.body().more = !final_write;
        guard_.write_since = Clock::now();
        auto [bec, bn] = co_await http::async_write(down_, sr, nothrow_awaitable);
        guard_.write_since.reset();
        if (bec == http::error::need_buffer) bec = {};
        if (bec) {
          result_.outcome = Outcome::broken;
          ctx_.client_aborted = true;
          co_return;
        }
        ctx_.bytes_out += bn;
        if (!ctx_.client_first_byte) ctx_.client_first_byte = Clock::now();
      }
      if (done) break;
    }
    result_.outcome = Outcome::relayed;
    result_.upstream_reusable =
        upstream_keep_alive_ && !parser_->need_eof() && conn_.buffer.size() == 0;
    result_.downstream_reusable = keep_alive_;
  }

  Stream& up_;
  UpstreamConnection& conn_;
  const bool reused_;
  http::request<http::buffer_body>& req_;
  const Pipeline& pipeline_;
  RequestContext& ctx_;
  beast::tcp_stream& down_;
  const DownstreamReply& reply_;
  ExchangeGuard& guard_;
  ExchangeResult result_;
  std::optional<http::response_parser<http::buffer_body>> parser_;
  std::optional<http::response_serializer<http::buffer_body>> serializer_;
  bool upstream_keep_alive_ = false;
  bool keep_alive_ = false;
};

template <class Stream>
asio::awaitable<ExchangeResult> exchange(Stream& up, UpstreamConnection& conn, bool reused,
                                         http::request<http::buffer_body>& req,
                                         const Pipeline& pipeline, RequestContext& ctx,
                                         beast::tcp_stream& down, const DownstreamReply& reply,
                                         ExchangeGuard& guard) {
  Attempt<Stream> attempt(up, conn, reused, req, pipeline, ctx, down, reply, guard);
  co_return co_await attempt.run();
}

}  // namespace

asio::awaitable<bool> forward_and_relay(UpstreamPool& pool, const UpstreamSlot& slot,
                                        const Pipeline& pipeline, RequestContext& ctx,
                                        beast::tcp_stream& down, DownstreamReply reply) {
  const config::Upstream& upcfg = *ctx.upstream;
  UpstreamRequest& ureq = *ctx.upstream_request;
  const std::string_view body = ureq.body ? std::string_view(*ureq.body) : ctx.body;
  const auto deadline = Clock::now() + upcfg.timeout;

  // The upstream message views the body (inbound or rewritten): nothing is copied again.
  http::request<http::buffer_body> req;
  static_cast<http::fields&>(req) = std::move(ureq.headers);
  req.method(ureq.method);
  req.target(ureq.target);
  req.version(11);
  req.keep_alive(true);
  if (!body.empty() || ureq.method == http::verb::post || ureq.method == http::verb::put ||
      ureq.method == http::verb::patch)
    req.content_length(body.size());
  req.body().data = const_cast<char*>(body.data());  // only read by the serializer
  req.body().size = body.size();
  req.body().more = false;

  auto guard = std::make_shared<ExchangeGuard>(down.get_executor());
  guard->upstream_deadline = deadline;
  guard->down = &down;
  arm_timer(guard);
  watch_client(guard);
  // The drain deadline stops the exchange through here (on this thread): the upstream is closed,
  // and so is the client once its response has started (nothing else could end a stalled write).
  ctx.cancel = [g = guard.get(), &ctx] {
    if (g->upstream) g->upstream->close();
    if (ctx.client_first_byte) g->down->close();
  };
  struct StopGuard {
    ExchangeGuard& g;
    RequestContext& ctx;
    ~StopGuard() {
      ctx.cancel = nullptr;
      g.active = false;
      g.upstream = nullptr;
      g.timer.cancel();
      boost::system::error_code ignored;
      g.down->socket().cancel(ignored);  // completes the pending wait (nothing else is pending)
    }
  } stop_guard{*guard, ctx};

  ExchangeResult result;
  for (int attempt = 0; attempt < 2; ++attempt) {
    std::unique_ptr<UpstreamConnection> conn = attempt == 0 ? pool.take(slot) : nullptr;
    const bool reused = conn != nullptr;
    if (!conn) {
      conn = std::make_unique<UpstreamConnection>();
      conn->buffer.reserve(kUpstreamReadBuffer);
      std::optional<Failure> failure = co_await connect(upcfg, slot.tls.get(), *conn);
      if (failure) {
        result.outcome = Outcome::failed;
        result.failure = std::move(*failure);
        break;
      }
      log::line(log::Level::debug, "upstream connection opened",
                {{"upstream", upcfg.name}, {"request_id", ctx.request_id}});
    }
    if (guard->client_gone) {
      ctx.client_aborted = true;
      co_return false;
    }
    if (!ctx.cut_reason.empty()) {  // the drain deadline passed while connecting
      result.outcome = Outcome::failed;
      break;
    }
    UpstreamPool::note_active(slot, 1);
    guard->upstream = &conn->lowest();
    if (guard->upstream_timed_out) conn->lowest().close();  // the deadline passed while connecting
    if (conn->tls) {
      result =
          co_await exchange(*conn->tls, *conn, reused, req, pipeline, ctx, down, reply, *guard);
    } else {
      result =
          co_await exchange(*conn->plain, *conn, reused, req, pipeline, ctx, down, reply, *guard);
    }
    guard->upstream = nullptr;
    UpstreamPool::note_active(slot, -1);
    if (result.outcome == Outcome::relayed && result.upstream_reusable) {
      pool.give_back(slot, std::move(conn));
    }
    if (result.outcome != Outcome::retryable) break;
    log::line(log::Level::debug, "retrying on a fresh upstream connection",
              {{"upstream", upcfg.name}, {"reason", result.failure.message}});
  }

  if (guard->client_gone || guard->client_stalled) ctx.client_aborted = true;
  switch (result.outcome) {
    case Outcome::relayed: co_return result.downstream_reusable;
    case Outcome::broken:
      if (!ctx.client_aborted) {
        log::line(log::Level::warn, "upstream response cut",
                  {{"upstream", upcfg.name},
                   {"request_id", ctx.request_id},
                   {"kind", error_kind(result.failure)},
                   {"detail", result.failure.message}});
        ctx.upstream_error_kind = std::string(error_kind(result.failure));
      }
      co_return false;
    case Outcome::retryable:
    case Outcome::failed: break;
  }
  if (ctx.client_aborted) co_return false;
  if (!ctx.cut_reason.empty()) {
    // Cut by the drain deadline before any answer: the client learns why, and may retry.
    reply.keep_alive = false;
    ctx.reply = error_reply(GatewayError::service_unavailable,
                            "The gateway is shutting down; retry the request.");
    co_await write_local_reply(down, ctx, &pipeline, reply);
    co_return false;
  }
  ctx.upstream_error_kind = std::string(error_kind(result.failure));
  log::line(log::Level::warn, "upstream request failed",
            {{"upstream", upcfg.name},
             {"request_id", ctx.request_id},
             {"kind", ctx.upstream_error_kind},
             {"detail", result.failure.message}});
  ctx.reply =
      error_reply(result.failure.error, "Upstream '" + upcfg.name + "': " + result.failure.message);
  co_await write_local_reply(down, ctx, &pipeline, reply);
  co_return reply.keep_alive;
}

}  // namespace llmgw::net
