#pragma once
// Shared declarations of the network layer (src/net only: this header pulls in Beast I/O).
#include <ostream>  // first: Boost 1.81 core/detail/string_view.hpp needs it but does not include it

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/awaitable.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/ssl/context.hpp>
#include <boost/asio/ssl/stream.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/beast/core/flat_buffer.hpp>
#include <boost/beast/core/tcp_stream.hpp>
#include <memory>
#include <mutex>
#include <random>
#include <string>
#include <unordered_map>
#include <vector>

#include "llm_gateway/pipeline/pipeline.hpp"
#include "llm_gateway/routing/backends.hpp"

namespace llmgw::net {

namespace asio = boost::asio;
namespace beast = boost::beast;
using tcp = asio::ip::tcp;
// TLS over TCP: a client connection on a TLS listener, or an upstream (or proxy) connection.
using TlsStream = asio::ssl::stream<beast::tcp_stream>;

// Errors come back as values on the data plane: EOF, resets and timeouts are normal for a proxy.
inline constexpr auto nothrow_awaitable = asio::as_tuple(asio::use_awaitable);

struct UpstreamConnection;

// A TLS client context: the system trust store plus `ca_file` (PEM; "" for none), the peer's
// certificate verified, TLS 1.2 at least. Throws on an unusable ca_file.
std::shared_ptr<asio::ssl::context> make_client_tls_context(const std::string& ca_file);

// Why a client's TLS handshake failed: the error, and what certificate verification found when
// that is what failed ("certificate verify failed (unable to get local issuer certificate)").
std::string tls_handshake_failure(const boost::system::error_code& ec, SSL* ssl);

// What outlives a configuration snapshot for one upstream: its TLS client context and its slot in
// every worker's connection pool. Found by the upstream's name and connection settings (host,
// port, TLS, CA file), never by its position in a configuration, so a snapshot with upstreams
// reordered, added or removed reuses the pools of the ones it kept.
struct UpstreamSlot {
  std::size_t id = 0;  // index into each worker's pool; stable for the process
  std::string name;
  std::shared_ptr<asio::ssl::context> tls;        // null for http://
  std::shared_ptr<asio::ssl::context> proxy_tls;  // an https:// egress proxy's, else null
  prometheus::Gauge* active = nullptr;            // llm_gateway_upstream_connections; may be null
  prometheus::Gauge* idle = nullptr;
};

// Slots by identity; bind() gives a snapshot its upstreams' slots, by configuration position.
class UpstreamRegistry {
 public:
  explicit UpstreamRegistry(observability::Metrics* metrics) : metrics_(metrics) {}
  // Throws on an unusable ca_file (only when a slot is made).
  std::vector<std::shared_ptr<const UpstreamSlot>> bind(const config::Config& cfg);

 private:
  std::mutex mutex_;
  std::unordered_map<std::string, std::shared_ptr<const UpstreamSlot>> slots_;
  observability::Metrics* metrics_;
};

// The identity a pool and a TLS context belong to (exposed for tests).
std::string upstream_identity(const config::Upstream& up);

// Idle upstream connections of one worker thread, per upstream slot, most recently used first
// out. Only its own thread touches it, so it needs no lock.
class UpstreamPool {
 public:
  UpstreamPool();
  ~UpstreamPool();
  std::unique_ptr<UpstreamConnection> take(const UpstreamSlot& slot);
  void give_back(const UpstreamSlot& slot, std::unique_ptr<UpstreamConnection> conn);
  void clear();
  // Connections in use, for the llm_gateway_upstream_connections{state="active"} gauge.
  static void note_active(const UpstreamSlot& slot, int delta);

 private:
  struct Idle {
    std::vector<std::unique_ptr<UpstreamConnection>> connections;
    prometheus::Gauge* gauge = nullptr;
  };
  Idle& idle(const UpstreamSlot& slot);
  std::vector<Idle> idle_;  // by slot id
};

struct DownstreamReply {
  unsigned http_version = 11;
  bool keep_alive = true;
};

// Writes a response the gateway made itself (errors, models list, health) to the client.
// Down: the client connection, beast::tcp_stream or TlsStream (both instantiated in server.cpp).
template <class Down>
asio::awaitable<void> write_local_reply(Down& down, RequestContext& ctx, const Pipeline* pipeline,
                                        DownstreamReply& reply);

// A snapshot's upstreams' slots, by configuration position (UpstreamRegistry::bind).
using UpstreamSlots = std::vector<std::shared_ptr<const UpstreamSlot>>;

// The router (router.cpp): runs the request's upstream attempts as its AttemptPlan decides (a
// pooled connection, or a new one; a request a reused connection failed is sent once more on a
// new one when the upstream cannot have acted on it) and relays the committed attempt's response
// to the client piece by piece as it arrives. Returns false when the client connection cannot be
// used for another request.
class TokenService;

// What the router shares with every worker (either may be null): what is learned about backends
// (cooldowns, quota reports, ejections), and the Entra ID tokens of upstreams that use them.
struct RouterServices {
  BackendRegistry* backends = nullptr;
  const TokenService* tokens = nullptr;
};

// Down: beast::tcp_stream or TlsStream (both instantiated in router.cpp).
template <class Down>
asio::awaitable<bool> route_and_relay(UpstreamPool& pool, const UpstreamSlots& slots,
                                      RouterServices services, const Pipeline& pipeline,
                                      RequestContext& ctx, Down& down, DownstreamReply reply);

}  // namespace llmgw::net
