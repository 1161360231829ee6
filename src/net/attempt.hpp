#pragma once
// Internal to src/net: an upstream connection, the connect steps, the guard that times an
// exchange and watches the client, and one attempt's steps. upstream.cpp owns connections and
// pools, attempt.cpp the steps of one attempt, router.cpp the loop over attempts.
#include <array>
#include <boost/asio/ssl/stream.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/beast/http/buffer_body.hpp>
#include <boost/beast/http/message.hpp>
#include <boost/beast/http/parser.hpp>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <utility>
#include <vector>

#include "drain_aware_read.hpp"
#include "field_list_parser.hpp"
#include "llm_gateway/net/io.hpp"
#include "llm_gateway/routing/attempt_plan.hpp"

namespace llmgw::net {
namespace http = beast::http;
namespace ssl = asio::ssl;
// An upstream connection's TCP layer reads drain-aware during an attempt (drain_aware_read.hpp).
using UpstreamTcpStream = DrainAwareTcpStream;
// TLS with the upstream (or with an https:// egress proxy).
using UpstreamTlsStream = ssl::stream<UpstreamTcpStream>;
// TLS with the upstream inside TLS with an https:// egress proxy (its CONNECT tunnel).
using TunnelTlsStream = ssl::stream<UpstreamTlsStream>;

// The relay's response parser: Beast's, with the fields in a HeaderList, and the body not copied
// out of the read buffer but viewed where it is (take_piece()), until the buffer is read into
// again. (buffer_body copied every body byte into a buffer of its own, to be written from there:
// a third of a fixed SSE stream's instructions.) Beast returns after each body piece unless told
// to be eager, so each read gives at most one.
class RelayResponseParser final : public FieldListParser<false, http::buffer_body> {
 public:
  using FieldListParser::FieldListParser;
  // The body bytes the last read parsed (empty after a chunk header or the end).
  std::string_view take_piece() { return std::exchange(piece_, {}); }

 private:
  std::size_t keep(beast::string_view body, beast::error_code& ec) {
    if (!piece_.empty()) {  // (never, non-eager: a second piece waits, as a full buffer_body's)
      ec = http::error::need_buffer;
      return 0;
    }
    ec = {};
    piece_ = {body.data(), body.size()};
    return body.size();
  }
  std::size_t on_body_impl(beast::string_view body, beast::error_code& ec) override {
    return keep(body, ec);
  }
  std::size_t on_chunk_body_impl(std::uint64_t, beast::string_view body,
                                 beast::error_code& ec) override {
    return keep(body, ec);
  }

  std::string_view piece_;
};

// Beast reads max(512, free capacity) bytes at a time: without room reserved up front every
// response would be read 512 bytes per system call.
inline constexpr std::size_t kUpstreamReadBuffer = 16 * 1024;

struct UpstreamConnection {
  std::optional<UpstreamTcpStream> plain;
  // TLS with the upstream; or, for a plain-http upstream behind an https:// proxy, with the proxy.
  std::optional<UpstreamTlsStream> tls;
  std::optional<TunnelTlsStream> tls_in_tls;  // an https upstream behind an https:// proxy
  beast::flat_buffer buffer;  // kept across responses: may hold bytes read past a message
  // Scratch space of the requests sent on this connection (heads, gather lists), kept so that a
  // request reuses the capacity the last one grew instead of allocating it again.
  std::string head_scratch;
  std::vector<asio::const_buffer> gather_scratch;
  std::vector<std::string_view> pieces_scratch;
  HeaderList response_fields;  // the response head's fields (FieldListParser)
  Clock::time_point idle_since{};

  UpstreamTcpStream& lowest() {
    if (tls_in_tls) return beast::get_lowest_layer(*tls_in_tls);
    return tls ? beast::get_lowest_layer(*tls) : *plain;
  }
  // An idle keep-alive connection is usable only if nothing arrived on it.
  bool looks_reusable();
};

struct Failure {
  GatewayError error = GatewayError::upstream_unreachable;
  std::string message;
  bool after_connect = false;  // the connection was up: a reset rather than a connect failure
};

GatewayError classify(const boost::system::error_code& ec);
// connect | tls | timeout | reset | protocol
std::string_view error_kind(const Failure& f);

// Connect = TCP (to the upstream, or to its egress proxy, with TLS to an https:// proxy using
// `proxy_tls_ctx`), then a CONNECT tunnel through the proxy, then TLS with the upstream when
// `tls_ctx` is set.
asio::awaitable<std::optional<Failure>> connect(const config::Upstream& up, ssl::context* tls_ctx,
                                                ssl::context* proxy_tls_ctx,
                                                UpstreamConnection& conn);

// Guards a request's upstream exchange with one timer and one socket wait, instead of a timer
// operation per read and write: the attempt's deadline (the upstream's timeout_ms), a client that
// stops reading (write stall), and a client that goes away (its socket turns readable with EOF) —
// which closes the upstream request at once instead of letting it run, and bill, to the end.
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
  beast::tcp_stream* down = nullptr;         // the client connection's TCP layer
  bool down_tls = false;                     // the client speaks TLS on it
  asio::steady_timer* queue_wait = nullptr;  // the router waiting for a backend to come back
  // A TLS client sent bytes mid-exchange that may be its (encrypted) close_notify: its TCP
  // hang-up is then looked for on this timer (see watch_client).
  std::optional<asio::steady_timer> hangup_poll;
};

// Starts (or restarts, for the next attempt) the guard's clock with a new upstream deadline.
void set_deadline(const std::shared_ptr<ExchangeGuard>& g, Clock::time_point deadline);
void watch_client(const std::shared_ptr<ExchangeGuard>& g);

enum class Outcome {
  relayed,  // the response went to the client completely
  retry,    // the plan discarded this attempt for another
  failed,   // failed before the response started: the client gets a gateway error
  broken,   // failed after the response started: the client connection is cut
};

struct ExchangeResult {
  Outcome outcome = Outcome::failed;
  Failure failure;
  bool upstream_reusable = false;
  bool downstream_reusable = false;
};

// One attempt on one upstream connection, in the router's steps: send the request, read the
// response head, (the router decides,) commit the head to the client, relay the body. Only
// commit() and relay() touch the client; every step before them can still end in a gateway error
// or another attempt without the client having seen anything.
// Stream: the upstream connection's stream; Down: the client's (beast::tcp_stream or TlsStream).
template <class Stream, class Down>
class Attempt {
 public:
  // `request` and `body` (the client's, or translation's rewrite) outlive the attempt.
  Attempt(Stream& up, UpstreamConnection& conn, bool reused, const UpstreamRequest& request,
          std::string_view body, const Pipeline& pipeline, RequestContext& ctx, Down& down,
          const DownstreamReply& reply, ExchangeGuard& guard)
      : up_(up),
        reading_(beast::get_lowest_layer(up)),
        conn_(conn),
        reused_(reused),
        request_(request),
        body_(body),
        pipeline_(pipeline),
        ctx_(ctx),
        down_(down),
        reply_(reply),
        guard_(guard),
        head_(conn.head_scratch),
        gather_(conn.gather_scratch) {}

  // Each returns false once the attempt failed (result() says how).
  asio::awaitable<bool> send();
  asio::awaitable<bool> read_head();  // a usable final head (interim 1xx skipped, 101 refused)
  // What the attempt came to so far, for the plan's decision.
  AttemptOutcome outcome() const;
  asio::awaitable<bool> commit();
  asio::awaitable<void> relay();

  ExchangeResult& result() { return result_; }

 private:
  boost::system::error_code upstream_error(boost::system::error_code ec) const;
  bool fail(Outcome outcome, GatewayError error, std::string message);
  bool idempotent() const;
  // Writes to the client whatever is pending: the response head (until it went out), then
  // `pieces` framed as the client's response needs (chunks, or as they are), then the end of a
  // chunked body when `final`. One gathered write; on a plain connection tried at once, so that
  // an event that fits the socket buffer costs one system call and no trip through the reactor.
  asio::awaitable<bool> write_to_client(std::span<const std::string_view> pieces, bool final);

  Stream& up_;
  // The connection's TCP layer reads drain-aware while the attempt lasts: a relayed event costs
  // one recv, not a failed speculative one first.
  UpstreamTcpStream::Reading reading_;
  UpstreamConnection& conn_;
  const bool reused_;
  const UpstreamRequest& request_;
  const std::string_view body_;
  const Pipeline& pipeline_;
  RequestContext& ctx_;
  Down& down_;
  const DownstreamReply& reply_;
  ExchangeGuard& guard_;
  ExchangeResult result_;
  bool failed_ = false;
  bool written_ = false;          // the whole request went out
  bool nothing_received_ = true;  // not a byte of a response arrived
  std::optional<RelayResponseParser> parser_;
  std::string& head_;  // the request head, then the response head until it is written
  bool head_pending_ = false;
  bool chunked_out_ = false;  // the client's body is chunked (re-framed piece by piece)
  std::vector<asio::const_buffer>& gather_;
  std::array<char, 20> chunk_line_{};
  std::string flat_;  // a TLS client's gathered bytes in one buffer
  bool keep_alive_ = false;
};

extern template class Attempt<UpstreamTcpStream, beast::tcp_stream>;
extern template class Attempt<UpstreamTlsStream, beast::tcp_stream>;
extern template class Attempt<TunnelTlsStream, beast::tcp_stream>;
extern template class Attempt<UpstreamTcpStream, TlsStream>;
extern template class Attempt<UpstreamTlsStream, TlsStream>;
extern template class Attempt<TunnelTlsStream, TlsStream>;

}  // namespace llmgw::net
