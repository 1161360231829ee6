// One upstream attempt's steps (send, read head, commit, relay) and the guard that times them.
// The attempt template is instantiated for each upstream stream (plain, TLS, TLS in a TLS tunnel)
// and each client stream (plain, TLS): the plain-to-plain path compiles exactly as it would alone.
#include "attempt.hpp"
#include "parsed_read.hpp"

#include <poll.h>
#include <sys/socket.h>
#include <sys/uio.h>

#include <array>
#include <boost/asio/ssl/error.hpp>
#include <boost/asio/write.hpp>
#include <boost/beast/http/error.hpp>
#include <boost/beast/http/write.hpp>
#include <cerrno>
#include <tuple>
#include <type_traits>

namespace llmgw::net {

namespace {
// A client that stops reading for this long is dropped rather than holding the upstream open.
constexpr auto kDownstreamWriteStall = std::chrono::seconds(60);
constexpr std::size_t kResponseHeaderLimit = 64 * 1024;
// A TLS record carries at most 16 KiB of plaintext (RFC 8446 §5.1).
constexpr std::size_t kOneTlsRecord = 16 * 1024;
constexpr auto kGuardTick = std::chrono::seconds(10);

constexpr std::string_view kCrLf = "\r\n";
constexpr std::string_view kLastChunk = "0\r\n\r\n";

// How the head frames the body for the client, decided from the upstream's framing and the
// client's version and wishes (commit()).
struct ClientFraming {
  unsigned version = 11;
  bool drop_transfer_encoding = false;  // an HTTP/1.0 client: no chunks, the close ends the body
  bool add_chunked = false;             // an HTTP/1.1 client of a body the upstream's close ends
  bool keep_alive = true;
};

// The head as Beast's serializer writes it (status line, the fields as they are) less the
// upstream's hop-by-hop fields (HopByHopRule, shared with translate(); Transfer-Encoding and
// Content-Length are the body's framing, decided below), with the gateway's fields in place of the
// upstream's of the same names, the framing the client needs, and the blank line that ends it.
void render_head(const http::response_header<>& res, const HeaderList& fields,
                 const ClientFraming& framing, const AddedFields& added, std::string& out) {
  out.clear();
  out += framing.version == 10 ? "HTTP/1.0 " : "HTTP/1.1 ";
  const unsigned status = res.result_int();
  out += static_cast<char>('0' + status / 100 % 10);
  out += static_cast<char>('0' + status / 10 % 10);
  out += static_cast<char>('0' + status % 10);
  out += ' ';
  const std::string_view reason = res.reason();
  out += reason.empty() ? std::string_view(http::obsolete_reason(res.result())) : reason;
  out += kCrLf;
  const HopByHopRule hop_by_hop(fields);
  for (const auto& f : fields) {
    if (f.name() == http::field::transfer_encoding) {
      if (framing.drop_transfer_encoding) continue;
    } else if (f.name() != http::field::content_length && hop_by_hop(f)) {
      continue;
    }
    if (!added.empty() && added.replaces(f.name_string())) continue;
    out += f.name_string();
    out += ": ";
    out += f.value();
    out += kCrLf;
  }
  if (framing.add_chunked) out += "Transfer-Encoding: chunked\r\n";
  // The upstream's Connection lines are gone (hop-by-hop): this one is the gateway's.
  if (framing.version >= 11 && !framing.keep_alive) out += "Connection: close\r\n";
  if (framing.version < 11 && framing.keep_alive) out += "Connection: keep-alive\r\n";
  added.append_to(out);
  out += kCrLf;
}

// "<size in hex>\r\n", the line that opens a chunk.
std::string_view chunk_size_line(std::size_t size, std::array<char, 20>& buf) {
  char* end = buf.data() + buf.size();
  char* p = end;
  *--p = '\n';
  *--p = '\r';
  do {
    *--p = "0123456789abcdef"[size & 0xf];
    size >>= 4;
  } while (size != 0);
  return {p, static_cast<std::size_t>(end - p)};
}

// One sendmsg of the whole gather list, never blocking: the bytes the socket took (0 when its
// buffer is full). A real failure (the client went away) is returned in `ec`.
std::size_t send_now(int fd, const std::vector<asio::const_buffer>& buffers,
                     boost::system::error_code& ec) {
  constexpr std::size_t kMaxIov = 64;
  if (buffers.size() > kMaxIov) return 0;  // rare: left to the reactor's write
  std::array<iovec, kMaxIov> iov;
  for (std::size_t i = 0; i < buffers.size(); ++i)
    iov[i] = {const_cast<void*>(buffers[i].data()), buffers[i].size()};
  msghdr msg{};
  msg.msg_iov = iov.data();
  msg.msg_iovlen = buffers.size();
  for (;;) {
    const ssize_t n = ::sendmsg(fd, &msg, MSG_DONTWAIT | MSG_NOSIGNAL);
    if (n >= 0) return static_cast<std::size_t>(n);
    if (errno == EINTR) continue;
    if (errno != EAGAIN && errno != EWOULDBLOCK) ec.assign(errno, boost::system::system_category());
    return 0;
  }
}

// Drops the first `n` bytes of a gather list; what is left to write.
std::span<asio::const_buffer> consume_front(std::vector<asio::const_buffer>& buffers,
                                            std::size_t n) {
  std::size_t i = 0;
  while (i < buffers.size() && n >= buffers[i].size()) n -= buffers[i++].size();
  if (i < buffers.size()) buffers[i] += n;
  return std::span<asio::const_buffer>(buffers).subspan(i);
}

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
}  // namespace

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
    case GatewayError::upstream_proxy_error: return "proxy";
    default: return f.after_connect ? "reset" : "connect";
  }
}

void set_deadline(const std::shared_ptr<ExchangeGuard>& g, Clock::time_point deadline) {
  g->upstream_deadline = deadline;
  g->upstream_timed_out = false;
  arm_timer(g);  // replaces the pending wait (its handler sees operation_aborted)
}

namespace {
constexpr auto kHangupPollInterval = std::chrono::milliseconds(100);

// The peer shut its sending side (its FIN arrived), even with unread bytes before it.
bool peer_hung_up(int fd) {
  pollfd p{fd, POLLRDHUP, 0};
  return ::poll(&p, 1, 0) == 1 && (p.revents & (POLLRDHUP | POLLHUP | POLLERR)) != 0;
}

void client_left(const std::shared_ptr<ExchangeGuard>& g) {
  g->client_gone = true;
  if (g->upstream) g->upstream->close();
  if (g->queue_wait) g->queue_wait->cancel();
}

// The socket stays readable while the bytes wait unread, so its hang-up is polled for instead.
void poll_hangup(const std::shared_ptr<ExchangeGuard>& g) {
  g->hangup_poll->expires_after(kHangupPollInterval);
  g->hangup_poll->async_wait([g](boost::system::error_code ec) {
    if (ec || !g->active) return;
    if (peer_hung_up(g->down->socket().native_handle())) {
      client_left(g);
      return;
    }
    poll_hangup(g);
  });
}
}  // namespace

void watch_client(const std::shared_ptr<ExchangeGuard>& g) {
  tcp::socket& down = g->down->socket();
  down.async_wait(tcp::socket::wait_read, [g](boost::system::error_code ec) {
    if (!g->active || ec) return;  // exchange finished (or cancelled): `down` may be gone
    const int fd = g->down->socket().native_handle();
    char probe;
    const ssize_t r = ::recv(fd, &probe, 1, MSG_PEEK | MSG_DONTWAIT);
    if (r < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
      watch_client(g);  // spurious wake-up
      return;
    }
    if (r > 0 && g->down_tls) {
      // A TLS client that leaves sends close_notify before its FIN. Under TLS 1.2 that is an
      // alert record (type 21); TLS 1.3 hides the type, so a hang-up right behind the bytes
      // tells it, looked for until the exchange ends. (Pipelined requests are rare under TLS.)
      constexpr char kTlsAlertRecord = 21;
      if (probe == kTlsAlertRecord || peer_hung_up(fd)) {
        client_left(g);
        return;
      }
      g->hangup_poll.emplace(g->timer.get_executor());
      poll_hangup(g);
      return;
    }
    if (r > 0) return;  // a pipelined next request: the client is still there
    client_left(g);
  });
}

// An error after the guard closed the connection is the deadline's doing.
template <class Stream, class Down>
boost::system::error_code Attempt<Stream, Down>::upstream_error(
    boost::system::error_code ec) const {
  return guard_.upstream_timed_out ? boost::system::error_code(beast::error::timeout) : ec;
}

template <class Stream, class Down>
bool Attempt<Stream, Down>::fail(Outcome outcome, GatewayError error, std::string message) {
  failed_ = true;
  result_.outcome = outcome;
  result_.failure = {error, std::move(message), true};
  return false;
}

template <class Stream, class Down>
bool Attempt<Stream, Down>::idempotent() const {
  return request_.method == http::verb::get || request_.method == http::verb::delete_;
}

template <class Stream, class Down>
asio::awaitable<bool> Attempt<Stream, Down>::send() {
  boost::system::error_code wec0;
  render_upstream_head(request_, body_.size(), head_);
  gather_.clear();
  if constexpr (std::is_same_v<Stream, UpstreamTcpStream>) {
    // Head and body in one sendmsg, tried at once: a request that fits the socket buffer (all
    // but the largest) costs one system call and no trip through the reactor.
    gather_.emplace_back(head_.data(), head_.size());
    if (!body_.empty()) gather_.emplace_back(body_.data(), body_.size());
    const std::size_t total = head_.size() + body_.size();
    const std::size_t sent = send_now(up_.socket().native_handle(), gather_, wec0);
    if (!wec0 && sent < total) {
      auto [ec, n] =
          co_await asio::async_write(up_, consume_front(gather_, sent), nothrow_awaitable);
      wec0 = ec;
    }
  } else {
    // TLS writes one record per buffer: a body that fits one record goes with the head.
    if (body_.size() <= kOneTlsRecord) {
      head_.append(body_);
      gather_.emplace_back(head_.data(), head_.size());
    } else {
      gather_.emplace_back(head_.data(), head_.size());
      gather_.emplace_back(body_.data(), body_.size());
    }
    auto [ec, n] = co_await asio::async_write(up_, gather_, nothrow_awaitable);
    wec0 = ec;
  }
  const auto wec = upstream_error(wec0);
  if (wec) {
    co_return fail(Outcome::failed, classify(wec),
                   "sending the request upstream failed: " + wec.message());
  }
  written_ = true;
  ctx_.upstream_request_written = Clock::now();
  co_return true;
}

template <class Stream, class Down>
asio::awaitable<bool> Attempt<Stream, Down>::read_head() {
  for (;;) {
    parser_.emplace(conn_.response_fields);
    parser_->header_limit(kResponseHeaderLimit);
    parser_->body_limit(boost::none);  // streams may be long; the deadline bounds them
    if (ctx_.method == http::verb::head) parser_->skip(true);
    auto [rec0, rn] = co_await read_parsed(up_, conn_.buffer, *parser_, ParseUntil::header);
    const auto rec = upstream_error(rec0);
    if (parser_->got_some() || conn_.buffer.size() != 0) nothing_received_ = false;
    if (rec) {
      co_return fail(Outcome::failed, classify(rec),
                     "reading the upstream response failed: " + rec.message());
    }
    const unsigned status = parser_->get().result_int();
    if (status == 101) {
      // Nothing the gateway sends asks to switch protocols: an upstream that does is broken (or
      // hostile), and relaying it would leave the client on a connection no one speaks HTTP on.
      co_return fail(Outcome::failed, GatewayError::upstream_protocol_error,
                     "the upstream answered 101 Switching Protocols to a plain request");
    }
    if (status >= 200) co_return true;  // interim 1xx responses are skipped
  }
}

// A request is safe to send again when the upstream cannot have acted on it: nothing of it could
// be complete there (its write failed part-way), or its method is idempotent and not a byte came
// back. A POST that was written whole may have been processed (and billed) by an upstream that
// closed the connection right after: Envoy and nginx never re-send those on their own either.
template <class Stream, class Down>
AttemptOutcome Attempt<Stream, Down>::outcome() const {
  AttemptOutcome o;
  o.reused_connection = reused_;
  if (!failed_) {
    o.status = parser_ ? parser_->get().result_int() : 0;
    if (parser_) o.headers = &parser_->fields();
    return o;
  }
  o.error_kind = error_kind(result_.failure);
  o.safe_to_resend = !written_ || (idempotent() && nothing_received_);
  return o;
}

// The response head as the client gets it; written now unless body bytes came with it (a
// typical non-stream answer), in which case it goes out with the first piece in one write.
template <class Stream, class Down>
asio::awaitable<bool> Attempt<Stream, Down>::commit() {
  auto& res = parser_->get();
  ctx_.upstream_first_byte = Clock::now();
  ctx_.status = res.result_int();
  ctx_.upstream_status = ctx_.status;
  // The framing facts come from the parser's flags, set as it read the head: each of Beast's
  // message-level questions (keep_alive(), chunked(), has_content_length()) is another lookup
  // in the header's tree, and commit() asked seven.
  const bool upstream_chunked = parser_->chunked();
  const bool upstream_length = parser_->content_length().has_value();
  const HeaderList& fields = parser_->fields();
  const auto content_type = fields[http::field::content_type];
  // A stream is what the client asked for (stream: true) or an SSE answer; a JSON answer that
  // merely arrives chunked (as api.openai.com sends them) is not one.
  ctx_.streamed = ctx_.body_facts.stream || content_type.starts_with("text/event-stream");

  ctx_.added_response_fields.set("x-gateway-request-id", ctx_.request_id);
  // Which upstream answered (its configured name, never its URL): with several backends behind
  // a route, the one thing an operator asks first.
  if (ctx_.upstream) ctx_.added_response_fields.set("x-gateway-upstream", ctx_.upstream->name);
  pipeline_.on_response_headers(ctx_, ctx_.status, fields);
  const bool has_body = !parser_->is_done();
  ClientFraming framing;
  framing.version = reply_.http_version < 11 ? 10 : 11;
  bool chunked = upstream_chunked;
  if (framing.version < 11) {
    // HTTP/1.0 has no chunks (nor any transfer coding): the body ends with the connection.
    framing.drop_transfer_encoding = true;
    chunked = false;
  } else if (has_body && !upstream_chunked && !upstream_length) {
    framing.add_chunked = true;  // a close-delimited upstream body is re-framed for the client
    chunked = true;
  }
  keep_alive_ = reply_.keep_alive && (upstream_length || chunked || !has_body);
  framing.keep_alive = keep_alive_;

  render_head(res, fields, framing, ctx_.added_response_fields, head_);
  head_pending_ = true;
  chunked_out_ = chunked && has_body;  // (a HEAD answer has none: the parser skips it)
  // The head waits for the first body bytes when they are already here (a typical non-stream
  // answer): both then go out in one write.
  if (parser_->is_done() || conn_.buffer.size() == 0) {
    const bool ok = co_await write_to_client({}, false);
    co_return ok;
  }
  co_return true;
}

template <class Stream, class Down>
asio::awaitable<bool> Attempt<Stream, Down>::write_to_client(
    std::span<const std::string_view> pieces, bool final) {
  gather_.clear();
  if (head_pending_) gather_.emplace_back(head_.data(), head_.size());
  std::size_t body_bytes = 0;
  for (const std::string_view piece : pieces) body_bytes += piece.size();
  if (chunked_out_ && body_bytes > 0) {
    const auto line = chunk_size_line(body_bytes, chunk_line_);
    gather_.emplace_back(line.data(), line.size());
  }
  for (const std::string_view piece : pieces)
    if (!piece.empty()) gather_.emplace_back(piece.data(), piece.size());
  if (chunked_out_ && body_bytes > 0) gather_.emplace_back(kCrLf.data(), kCrLf.size());
  if (chunked_out_ && final) gather_.emplace_back(kLastChunk.data(), kLastChunk.size());
  if (gather_.empty()) co_return true;

  std::size_t total = 0;
  for (const auto& b : gather_) total += b.size();
  std::size_t sent = 0;
  boost::system::error_code ec;
  if constexpr (std::is_same_v<Down, beast::tcp_stream>) {
    sent = send_now(down_.socket().native_handle(), gather_, ec);
  }
  if (!ec && sent < total) {
    // The socket buffer is full (a slow reader) or the client is TLS: the rest goes through the
    // reactor, watched by the guard's write-stall clock.
    std::span<asio::const_buffer> rest = consume_front(gather_, sent);
    guard_.write_since = Clock::now();
    std::size_t n = 0;
    if constexpr (std::is_same_v<Down, beast::tcp_stream>) {
      std::tie(ec, n) = co_await asio::async_write(down_, rest, nothrow_awaitable);
    } else {
      // TLS writes only the first buffer of a sequence per record: one buffer, one record.
      flat_.clear();
      for (const auto& b : rest) flat_.append(static_cast<const char*>(b.data()), b.size());
      std::tie(ec, n) = co_await asio::async_write(down_, asio::buffer(flat_), nothrow_awaitable);
    }
    guard_.write_since.reset();
    sent += n;
  }
  ctx_.bytes_out += sent;
  if (ec) {
    result_.outcome = Outcome::broken;
    ctx_.client_aborted = true;
    co_return false;
  }
  head_pending_ = false;
  if (!ctx_.client_first_byte) ctx_.client_first_byte = Clock::now();
  co_return true;
}

// Each read_some returns as soon as the parser made progress, so an SSE event is written to the
// client the moment it arrives rather than when a buffer fills up.
template <class Stream, class Down>
asio::awaitable<void> Attempt<Stream, Down>::relay() {
  std::vector<std::string_view>& out = conn_.pieces_scratch;  // to the client for one piece
  for (bool done = parser_->is_done();; done = parser_->is_done()) {
    out.clear();
    if (!done) {
      // The piece is a view into the connection's read buffer: it is written to the client
      // (below) before the buffer is read into again.
      auto [rec0, rn] = co_await read_parsed(up_, conn_.buffer, *parser_, ParseUntil::progress);
      auto rec = upstream_error(rec0);
      if (rec == http::error::need_buffer) rec = {};
      if (rec == ssl::error::stream_truncated && parser_->is_done()) rec = {};
      if (rec) {
        ctx_.client_aborted = guard_.client_gone;
        if (ctx_.bytes_out == 0) {
          // Nothing reached the client yet (the head waits for the first body piece): it gets a
          // gateway error in OpenAI's shape, never a silent close.
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
      const std::string_view got = parser_->take_piece();
      if (got.empty() && !done) continue;  // parsed framing only (a chunk header)
      if (!got.empty()) pipeline_.on_response_body(ctx_, got);
      if (ctx_.body_rewriter) {
        ctx_.body_rewriter->rewrite(got, done, out);
      } else if (!got.empty()) {
        out.push_back(got);
      }
    }
    if (done) pipeline_.on_response_end(ctx_);  // before the last bytes reach the client
    const bool ok = co_await write_to_client(out, done);
    if (!ok) co_return;
    if (done) break;
  }
  result_.outcome = Outcome::relayed;
  // (The parser's keep_alive() is false also for a body that the upstream's close ends.)
  result_.upstream_reusable = parser_->keep_alive() && conn_.buffer.size() == 0;
  result_.downstream_reusable = keep_alive_;
}

template class Attempt<UpstreamTcpStream, beast::tcp_stream>;
template class Attempt<UpstreamTlsStream, beast::tcp_stream>;
template class Attempt<TunnelTlsStream, beast::tcp_stream>;
template class Attempt<UpstreamTcpStream, TlsStream>;
template class Attempt<UpstreamTlsStream, TlsStream>;
template class Attempt<TunnelTlsStream, TlsStream>;

}  // namespace llmgw::net
