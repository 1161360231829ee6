#pragma once
// Shared declarations of the network layer (src/net only: this header pulls in Beast I/O).
#include <ostream>  // first: Boost 1.81 core/detail/string_view.hpp needs it but does not include it

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/awaitable.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/ssl/context.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/beast/core/flat_buffer.hpp>
#include <boost/beast/core/tcp_stream.hpp>
#include <memory>
#include <random>
#include <vector>

#include "llm_gateway/pipeline/pipeline.hpp"

namespace llmgw::net {

namespace asio = boost::asio;
namespace beast = boost::beast;
using tcp = asio::ip::tcp;

// Errors come back as values on the data plane: EOF, resets and timeouts are normal for a proxy.
inline constexpr auto nothrow_awaitable = asio::as_tuple(asio::use_awaitable);

struct UpstreamConnection;

// Idle upstream connections of one worker thread, per upstream, most recently used first out.
// Only its own thread touches it, so it needs no lock.
class UpstreamPool {
 public:
  UpstreamPool(std::size_t upstream_count, observability::Metrics* metrics);
  ~UpstreamPool();
  std::unique_ptr<UpstreamConnection> take(std::size_t upstream);
  void give_back(std::size_t upstream, std::unique_ptr<UpstreamConnection> conn);
  void clear();
  // Connections in use, for the llm_gateway_upstream_connections{state="active"} gauge.
  void note_active(std::size_t upstream, int delta);

 private:
  void note_idle(std::size_t upstream, int delta);
  std::vector<std::vector<std::unique_ptr<UpstreamConnection>>> idle_;
  observability::Metrics* metrics_;
};

// TLS client contexts, one per https upstream (null for http), built once at startup.
struct UpstreamTls {
  std::vector<std::shared_ptr<asio::ssl::context>> contexts;
};
UpstreamTls make_upstream_tls(const config::Config& cfg);  // throws on an unusable ca_file

struct DownstreamReply {
  unsigned http_version = 11;
  bool keep_alive = true;
};

// Writes a response the gateway made itself (errors, models list, health) to the client.
asio::awaitable<void> write_local_reply(beast::tcp_stream& down, RequestContext& ctx,
                                        const Pipeline* pipeline, DownstreamReply& reply);

// Forward & relay: sends ctx.upstream_request to the routed upstream (a pooled connection, or a
// new one; retried once on a fresh connection when a reused one fails before any response byte)
// and relays the response to the client piece by piece as it arrives. Returns false when the
// client connection cannot be used for another request.
asio::awaitable<bool> forward_and_relay(UpstreamPool& pool, const UpstreamTls& tls,
                                        const Pipeline& pipeline, RequestContext& ctx,
                                        beast::tcp_stream& down, DownstreamReply reply);

}  // namespace llmgw::net
