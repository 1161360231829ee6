// Accept & parse: listeners, worker threads, client sessions (HTTP/1.1 keep-alive), built-in
// health endpoints, and graceful drain on SIGTERM/SIGINT. Requests are handed to the pipeline and
// then to the router (route_and_relay in router.cpp).
#include <openssl/crypto.h>
#include <signal.h>
#include <sys/socket.h>

#include <array>
#include <atomic>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/signal_set.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/write.hpp>
#include <boost/beast/http/error.hpp>
#include <boost/beast/http/parser.hpp>
#include <boost/beast/http/string_body.hpp>
#include <boost/beast/http/write.hpp>
#include <list>
#include <optional>
#include <thread>
#include <utility>

#include "drain_aware_read.hpp"
#include "field_list_parser.hpp"
#include "llm_gateway/config/loader.hpp"
#include "llm_gateway/net/gateway.hpp"
#include "llm_gateway/net/io.hpp"
#include "llm_gateway/net/listener_tls.hpp"
#include "llm_gateway/net/tokens.hpp"
#include "llm_gateway/observability/log.hpp"
#include "llm_gateway/stages/observe_stages.hpp"
#include "llm_gateway/translate/json_scan.hpp"
#include "llm_gateway/translate/request_target.hpp"
#include "parsed_read.hpp"
#include "reloader.hpp"
#include "request_body.hpp"

namespace llmgw::net {
namespace http = beast::http;

namespace {
// Requests are read by Beast's parser with their fields in a HeaderList (field_list_parser.hpp).
using RequestParser = FieldListParser<true, RequestBody>;

// Named limits: every timeout of the client side in one place.
// One deadline for a whole request header, from its first byte (from the connection's start for
// the first request): a header trickled a byte at a time cannot hold a connection longer.
constexpr auto kHeaderTimeout = std::chrono::seconds(30);
constexpr auto kKeepAliveIdle = std::chrono::seconds(75);  // between requests
constexpr auto kReplyWriteTimeout = std::chrono::seconds(30);
// A TLS handshake that has not finished by then is dropped (and counted): a client that opens a
// connection and sends nothing, or half a ClientHello, holds nothing for longer.
constexpr auto kTlsHandshakeTimeout = std::chrono::seconds(10);
// A lingering close (as nginx's lingering_close): after an early answer to a request whose body
// is still coming, the gateway stops writing, then reads and discards for at most this long and
// this much, so that the client reads the answer instead of losing it to a reset.
constexpr auto kLingerTime = std::chrono::seconds(5);
constexpr std::size_t kLingerBytes = 64 * 1024 * 1024;
// Beast reads max(512, free capacity) bytes per system call: room for a whole typical request up
// front, and more once a large body (audio, embedding batches) is announced.
constexpr std::size_t kRequestReadBuffer = 8 * 1024;
constexpr std::size_t kLargeBodyReadBuffer = 64 * 1024;
// How long a cut request may take to finish (log, count) after the drain deadline cut it.
constexpr auto kCutGrace = std::chrono::seconds(2);

struct SessionEntry {
  beast::tcp_stream* stream = nullptr;  // the connection's TCP layer (under TLS, if any)
  const std::string* peer = nullptr;    // the client's address
  bool idle = true;                     // waiting for a request: safe to close when draining
  RequestContext* request = nullptr;    // the request being handled, if any
};

// The request bodies held at once by every connection together (server.max_buffered_body_bytes).
// A request holds what its body has grown to (or its announced Content-Length) until it ends.
class BodyBudget {
 public:
  BodyBudget(std::atomic<std::uint64_t>& total, std::uint64_t limit)
      : total_(total), limit_(limit) {}
  BodyBudget(const BodyBudget&) = delete;
  BodyBudget& operator=(const BodyBudget&) = delete;
  ~BodyBudget() { total_.fetch_sub(held_); }
  // Grows this request's share to `bytes`; false (and nothing taken) when that would pass the
  // limit.
  bool hold(std::uint64_t bytes) {
    if (bytes <= held_) return true;
    const std::uint64_t more = bytes - held_;
    if (total_.fetch_add(more) + more > limit_) {
      total_.fetch_sub(more);
      return false;
    }
    held_ = bytes;
    return true;
  }

 private:
  std::atomic<std::uint64_t>& total_;
  std::uint64_t limit_;
  std::uint64_t held_ = 0;
};

// RFC 9112 §6.1 and §6.3: a request body is framed by chunked as the final (here: only) transfer
// coding, or by Content-Length; anything else cannot be trusted by every hop alike and is how
// requests are smuggled. Returns the error to answer with, if any.
std::optional<std::pair<GatewayError, std::string_view>> framing_error(unsigned version,
                                                                       const HeaderList& fields) {
  if (fields.find(http::field::transfer_encoding) == fields.end()) return std::nullopt;
  std::size_t codings = 0;
  std::size_t chunked = 0;
  bool chunked_last = false;
  bool unknown = false;
  for (const auto& f : fields) {
    if (f.name() != http::field::transfer_encoding) continue;
    for_each_listed(f.value(), [&](std::string_view coding) {
      ++codings;
      chunked_last = beast::iequals(coding, "chunked");
      if (chunked_last) {
        ++chunked;
      } else {
        unknown = true;
      }
    });
  }
  if (version < 11)
    return std::pair{GatewayError::invalid_framing,
                     std::string_view("An HTTP/1.0 request cannot carry Transfer-Encoding.")};
  if (fields.find(http::field::content_length) != fields.end())
    return std::pair{GatewayError::invalid_framing,
                     std::string_view("A request cannot carry both Transfer-Encoding and "
                                      "Content-Length.")};
  if (unknown)
    return std::pair{GatewayError::unsupported_coding,
                     std::string_view("The only transfer coding this gateway accepts is chunked.")};
  if (codings == 0 || chunked != 1 || !chunked_last)
    return std::pair{GatewayError::invalid_framing,
                     std::string_view("Transfer-Encoding must be exactly 'chunked'.")};
  return std::nullopt;
}

// One event loop and thread. A connection lives on one worker for its whole life, and each
// worker owns its upstream pool and id generator, so the data plane takes no locks.
struct Worker {
  explicit Worker(unsigned i) : index(i), rng(std::random_device{}()), ioc(1) {}
  unsigned index;
  UpstreamPool pool;
  std::mt19937_64 rng;
  std::list<SessionEntry*> sessions;
  // Watches the upstream connections this worker reads drain-aware (started with the worker's
  // loop, stopped before its io_context goes; outlives the coroutine frames that leave it).
  DrainWatch drain_watch;
  // Declared last so it is destroyed first: destroying it destroys the coroutine frames still
  // suspended on it, and their destructors touch the members above.
  asio::io_context ioc;
};

bool valid_client_request_id(std::string_view id) {
  if (id.empty() || id.size() > 128) return false;
  for (const char c : id) {
    if (c < 0x20 || c > 0x7e) return false;
  }
  return true;
}

std::string generate_request_id(std::mt19937_64& rng) {
  // A version-4 UUID: random, and recognisable as an id in logs.
  const std::uint64_t hi = (rng() & 0xffffffffffff0fffull) | 0x0000000000004000ull;
  const std::uint64_t lo = (rng() & 0x3fffffffffffffffull) | 0x8000000000000000ull;
  // 8-4-4-4-12 lowercase hex digits (what "%08x-%04x-%04x-%04x-%012llx" prints, without the
  // cost of snprintf's format parsing on every request).
  std::string id(36, '-');
  constexpr std::string_view kHex = "0123456789abcdef";
  const auto put = [&](std::size_t at, std::uint64_t bits, int digits) {
    for (int i = digits - 1; i >= 0; --i, bits >>= 4)
      id[at + static_cast<std::size_t>(i)] = kHex[bits & 0xf];
  };
  put(0, hi >> 32, 8);
  put(9, hi >> 16, 4);
  put(14, hi, 4);
  put(19, lo >> 48, 4);
  put(24, lo, 12);
  return id;
}

std::string endpoint_string(const tcp::endpoint& ep) {
  const auto addr = ep.address();
  if (addr.is_v6()) return "[" + addr.to_string() + "]:" + std::to_string(ep.port());
  return addr.to_string() + ":" + std::to_string(ep.port());
}

// A snapshot as this process runs it: with its upstreams bound to the process's pools and TLS
// contexts (by name, see UpstreamRegistry). Swapped as one; each request holds the one it began on.
struct Installed {
  std::shared_ptr<const Snapshot> snapshot;
  UpstreamSlots upstreams;  // by position in the snapshot's config
  // The listeners' TLS contexts (null: plain), made from the snapshot's files when it was
  // installed; a connection holds the one it was accepted with.
  std::shared_ptr<asio::ssl::context> main_tls;
  std::shared_ptr<asio::ssl::context> admin_tls;
};

class Gateway {
 public:
  Gateway(std::shared_ptr<const Snapshot> snapshot, GatewayServices services)
      : services_(std::move(services)), upstreams_(services_.metrics.get()) {
    if (!services_.backends) services_.backends = std::make_shared<BackendRegistry>();
    tokens_ = std::make_unique<TokenService>(services_.metrics.get());
    installed_ = install(std::move(snapshot));
    if (services_.metrics) {
      // The backend gauges are read from the registry when /metrics is rendered, for the
      // configuration installed then.
      services_.metrics->on_render([this] {
        const auto& cfg = *installed_.load()->snapshot->config;
        export_backend_gauges(cfg, *services_.backends, *services_.metrics);
        tokens_->export_metrics(cfg);
        std::uint64_t drain_aware = 0;
        for (const auto& w : workers_) drain_aware += w->drain_watch.drain_aware_exchanges();
        services_.metrics->drain_aware_exchanges(drain_aware);
      });
    }
    const unsigned threads = worker_count(*installed_.load()->snapshot->config);
    for (unsigned i = 0; i < threads; ++i) workers_.push_back(std::make_unique<Worker>(i));
  }

  ~Gateway() {
    if (services_.metrics) services_.metrics->on_render(nullptr);
  }

  // A reloaded snapshot: requests already running keep the one they started with (they hold
  // it), new requests get this one. "" when installed, else why not.
  std::string swap_in(std::shared_ptr<const Snapshot> next) {
    const auto running = installed_.load();
    for (const auto& setting :
         config::settings_needing_restart(*running->snapshot->config, *next->config)) {
      log::line(log::Level::warn,
                "a setting changed that needs a restart; the running value is kept",
                {{"setting", setting}});
    }
    try {
      auto installed = install(std::move(next));
      log::set_min_level(static_cast<log::Level>(installed->snapshot->config->logging.level));
      installed_.store(std::move(installed));
    } catch (const std::exception& e) {
      return e.what();
    }
    return {};
  }

  // Binds a snapshot's upstreams to the process's pools and TLS contexts (throws on an unusable
  // ca_file). Every snapshot goes through here, at start and at each reload.
  std::shared_ptr<const Installed> install(std::shared_ptr<const Snapshot> snapshot) {
    auto installed = std::make_shared<Installed>();
    installed->upstreams = upstreams_.bind(*snapshot->config);
    const auto& cfg = *snapshot->config;
    const auto running = installed_.load();  // null at start
    installed->main_tls =
        listener_tls(cfg.server.tls, "server.tls", running ? running->main_tls : nullptr);
    installed->admin_tls = listener_tls(cfg.admin ? cfg.admin->tls : std::nullopt, "admin.tls",
                                        running ? running->admin_tls : nullptr);
    tokens_->track(*snapshot->config);  // new Entra identities start fetching now
    installed->snapshot = std::move(snapshot);
    return installed;
  }

  // A listener's TLS context, made anew from its files at every install so that a renewed
  // certificate is picked up by a reload. At start a bad file stops the gateway (throws); at a
  // reload it keeps the running context and says why.
  static std::shared_ptr<asio::ssl::context> listener_tls(
      const std::optional<config::ListenerTls>& tls, std::string_view where,
      std::shared_ptr<asio::ssl::context> running) {
    if (!tls) return nullptr;
    try {
      return make_listener_tls_context(*tls, where);
    } catch (const std::exception& e) {
      if (!running) throw;
      log::line(log::Level::error,
                "the listener's new certificate or key is unusable; the previous ones stay in use",
                {{"setting", std::string(where)}, {"detail", e.what()}});
      return running;
    }
  }

  int run() {
    const auto& cfg = *installed_.load()->snapshot->config;
    Worker& first = *workers_.front();
    try {
      // A listener per worker on one address (SO_REUSEPORT): the kernel spreads new connections
      // over the workers, and each accepts on its own thread, so no worker is the bottleneck.
      // The first binds (port 0 picks the port); the others join it on that same port.
      tcp::endpoint main_ep = make_endpoint(cfg.server.listen);
      for (auto& w : workers_) {
        main_acceptors_.push_back(open_acceptor(w->ioc, main_ep, true));
        main_ep = main_acceptors_.front()->local_endpoint();
      }
      log::line(log::Level::info, "listening",
                {{"listener", "main"},
                 {"address", endpoint_string(main_ep)},
                 {"tls", cfg.server.tls ? "on" : "off"},
                 {"acceptors", std::to_string(main_acceptors_.size())}});
      if (cfg.admin) {
        admin_acceptor_ = open_acceptor(first.ioc, make_endpoint(cfg.admin->listen), false);
        log::line(log::Level::info, "listening",
                  {{"listener", "admin"},
                   {"address", endpoint_string(admin_acceptor_->local_endpoint())},
                   {"tls", cfg.admin->tls ? "on" : "off"}});
      }
    } catch (const std::exception& e) {
      log::line(log::Level::error, "cannot listen", {{"detail", e.what()}});
      return 1;
    }
    for (std::size_t i = 0; i < workers_.size(); ++i) {
      asio::co_spawn(workers_[i]->ioc, accept_loop(*main_acceptors_[i], *workers_[i], false),
                     log_exception("accept"));
    }
    if (admin_acceptor_)
      asio::co_spawn(first.ioc, accept_loop(*admin_acceptor_, first, true),
                     log_exception("admin accept"));

    run_until_stopped(first, cfg);
    reloader_.reset();  // no snapshot is installed during teardown
    // Tear down in dependency order while every io_context still exists: listeners, then idle
    // upstream connections, then the workers (and with them any suspended sessions).
    main_acceptors_.clear();
    admin_acceptor_.reset();
    for (auto& w : workers_) {
      w->pool.clear();
      w->drain_watch.stop();
    }
    // A Redis admission ends on the Redis thread after its request resumed on a worker, still
    // holding work on that worker's context: that thread is joined before the contexts go.
    if (services_.stop_service_threads) services_.stop_service_threads();
    workers_.clear();
    log::line(log::Level::info, "stopped");
    return 0;
  }

 private:
  // Runs every worker until drain (or a second signal) stops them. The signal sets live in this
  // scope so they are gone before the io_contexts they belong to.
  void run_until_stopped(Worker& first, const config::Config& cfg) {
    asio::signal_set signals(first.ioc, SIGINT, SIGTERM);
    signals.async_wait([this, &signals](boost::system::error_code ec, int) {
      if (ec) return;
      asio::co_spawn(workers_.front()->ioc, drain(), log_exception("drain"));
      // A second signal stops at once.
      signals.async_wait([this](boost::system::error_code ec2, int) {
        if (!ec2) stop_all();
      });
    });

    // Reload: SIGHUP, and (reload.poll_ms) a change of the file's content.
    if (!services_.config_file.empty() && services_.reload) {
      reloader_ = std::make_unique<Reloader>(
          services_.config_file,
          Reloader::Hooks{services_.reload,
                          [this](std::shared_ptr<const Snapshot> next) { return swap_in(next); },
                          [this] { return installed_.load()->snapshot->config->reload.poll; }},
          services_.metrics.get());
    }
    asio::signal_set hangup(first.ioc, SIGHUP);
    std::function<void(boost::system::error_code, int)> on_hangup =
        [this, &hangup, &on_hangup](boost::system::error_code ec, int) {
          if (ec) return;
          if (reloader_) {
            reloader_->request();
          } else {
            log::line(log::Level::warn,
                      "SIGHUP ignored: the embedded default configuration has no "
                      "file to reload");
          }
          hangup.async_wait(on_hangup);
        };
    hangup.async_wait(on_hangup);

    // SIGUSR1: reopen the access log file (after logrotate moved it).
    asio::signal_set reopen_signal(first.ioc, SIGUSR1);
    std::function<void(boost::system::error_code, int)> on_reopen =
        [this, &reopen_signal, &on_reopen](boost::system::error_code ec, int) {
          if (ec) return;
          if (services_.access_log) services_.access_log->reopen();
          reopen_signal.async_wait(on_reopen);
        };
    reopen_signal.async_wait(on_reopen);

    ready_ = true;
    log::line(log::Level::info, "ready",
              {{"version", LLMGW_VERSION},
               {"config", cfg.source},
               {"threads", std::to_string(workers_.size())}});

    for (auto& w : workers_) w->drain_watch.start(w->ioc.get_executor());
    std::vector<std::thread> threads;
    for (std::size_t i = 1; i < workers_.size(); ++i) {
      threads.emplace_back([w = workers_[i].get()] {
        DrainWatch::Installed watch(w->drain_watch);
        auto guard = asio::make_work_guard(w->ioc);
        w->ioc.run();
      });
    }
    {
      DrainWatch::Installed watch(first.drain_watch);
      auto guard = asio::make_work_guard(first.ioc);
      first.ioc.run();
    }
    for (auto& t : threads) t.join();
  }

  static std::function<void(std::exception_ptr)> log_exception(const char* what) {
    return [what](std::exception_ptr e) {
      if (!e) return;
      try {
        std::rethrow_exception(e);
      } catch (const std::exception& ex) {
        log::line(log::Level::error, "unexpected exception",
                  {{"where", what}, {"detail", ex.what()}});
      }
    };
  }

  static tcp::endpoint make_endpoint(const config::ListenAddress& where) {
    return {asio::ip::make_address(where.host), where.port};
  }

  using reuse_port = asio::detail::socket_option::boolean<SOL_SOCKET, SO_REUSEPORT>;

  static std::unique_ptr<tcp::acceptor> open_acceptor(asio::io_context& ioc,
                                                      const tcp::endpoint& ep, bool shared) {
    auto acc = std::make_unique<tcp::acceptor>(ioc);
    acc->open(ep.protocol());
    acc->set_option(asio::socket_base::reuse_address(true));
    if (shared) acc->set_option(reuse_port(true));
    acc->bind(ep);
    acc->listen(asio::socket_base::max_listen_connections);
    return acc;
  }

  // Accepts on `worker`'s own listener, into its own event loop.
  asio::awaitable<void> accept_loop(tcp::acceptor& acceptor, Worker& w, bool admin) {
    std::uint64_t failures = 0;  // accept() failures in the current episode
    for (;;) {
      auto [ec, socket] = co_await acceptor.async_accept(w.ioc, nothrow_awaitable);
      if (ec) {
        if (ec == asio::error::operation_aborted || !acceptor.is_open()) co_return;
        if (draining_ && !admin) co_return;  // the listener was shut down by drain()
        // Out of file descriptors and the like: logged once per episode (not every 50 ms),
        // counted every time, and retried after a short back-off instead of spinning.
        if (failures++ == 0)
          log::line(log::Level::warn, "accept failed", {{"detail", ec.message()}});
        if (services_.metrics) services_.metrics->connections_refused(true).Increment();
        asio::steady_timer t(acceptor.get_executor(), std::chrono::milliseconds(50));
        co_await t.async_wait(nothrow_awaitable);
        continue;
      }
      if (failures) {
        log::line(log::Level::info, "accepting again",
                  {{"failed_accepts", std::to_string(failures)}});
        failures = 0;
      }
      if (!admin) {
        const auto limit = installed_.load()->snapshot->config->server.max_connections;
        if (connections_.load() >= limit) {
          // Accepted and closed at once: the client sees a clean close rather than a queue that
          // never drains, and the gateway keeps its descriptors for the connections it has.
          boost::system::error_code ignored;
          socket.close(ignored);
          if (services_.metrics) services_.metrics->connections_refused(false).Increment();
          continue;
        }
      }
      asio::co_spawn(w.ioc, session(w, std::move(socket), admin), log_exception("session"));
    }
  }

  asio::awaitable<void> session(Worker& worker, tcp::socket socket, bool admin) {
    if (!admin) connections_.fetch_add(1);
    struct Count {
      std::atomic<std::uint32_t>* n;
      ~Count() {
        if (n) n->fetch_sub(1);
      }
    } count{admin ? nullptr : &connections_};
    boost::system::error_code ignored;
    socket.set_option(tcp::no_delay(true), ignored);
    std::string peer;
    if (auto ep = socket.remote_endpoint(ignored); !ignored) peer = endpoint_string(ep);
    beast::tcp_stream plain(std::move(socket));
    // The TLS context of the snapshot installed now; the connection keeps it to its end.
    std::shared_ptr<asio::ssl::context> tls =
        admin ? installed_.load()->admin_tls : installed_.load()->main_tls;
    if (!tls) {
      co_await serve(worker, plain, peer, admin, nullptr);
      co_return;
    }
    TlsStream stream(std::move(plain), *tls);
    // The handshake runs in this connection's own coroutine: a slow or broken one holds up no
    // other client, and the deadline ends it.
    beast::get_lowest_layer(stream).expires_after(kTlsHandshakeTimeout);
    auto [hec] = co_await stream.async_handshake(asio::ssl::stream_base::server, nothrow_awaitable);
    if (hec) {
      const std::size_t reason = handshake_failure_reason(hec);
      if (services_.metrics) services_.metrics->tls_handshake_errors(admin, reason).Increment();
      log::line(log::Level::debug, "TLS handshake failed",
                {{"listener", admin ? "admin" : "main"},
                 {"peer", peer},
                 {"reason", observability::Metrics::kTlsHandshakeFailures[reason]},
                 {"detail", hec.message()}});
      co_return;
    }
    beast::get_lowest_layer(stream).expires_never();
    const std::optional<config::Sha256> client_cert =
        verified_peer_certificate_sha256(stream.native_handle());
    co_await serve(worker, stream, peer, admin, client_cert ? &*client_cert : nullptr);
  }

  // The connection's requests, one after another (HTTP/1.1 keep-alive), on a plain or TLS stream.
  template <class Stream>
  asio::awaitable<void> serve(Worker& worker, Stream& stream, const std::string& peer, bool admin,
                              const config::Sha256* client_cert) {
    boost::system::error_code ignored;
    beast::tcp_stream& tcp_layer = beast::get_lowest_layer(stream);
    beast::flat_buffer buffer;
    buffer.reserve(kRequestReadBuffer);
    HeaderList request_fields;  // each request's, in memory the connection's requests reuse

    SessionEntry entry{&tcp_layer, &peer, true, nullptr};
    worker.sessions.push_front(&entry);
    const auto registered = worker.sessions.begin();
    struct Unregister {
      std::list<SessionEntry*>& list;
      std::list<SessionEntry*>::iterator it;
      ~Unregister() { list.erase(it); }
    } unregister{worker.sessions, registered};

    bool first = true;
    for (;;) {
      if (draining_ && !admin) break;
      // Wait for the request's first byte (the keep-alive idle time between requests), then give
      // the whole header one deadline from there.
      entry.idle = true;
      if (buffer.size() == 0) {
        tcp_layer.expires_after(first ? kHeaderTimeout : kKeepAliveIdle);
        auto [ec, n] =
            co_await stream.async_read_some(buffer.prepare(kRequestReadBuffer), nothrow_awaitable);
        if (ec) break;
        buffer.commit(n);
      }
      entry.idle = false;
      // The snapshot in use when the request began arriving (not when the connection went idle:
      // a reload in between applies to it), held until the request is done.
      const auto installed = installed_.load();
      const auto& snapshot = installed->snapshot;
      const auto& limits = snapshot->config->server;
      // A parser handles one message only: a fresh one for every request.
      RequestParser parser(request_fields);
      parser.header_limit(limits.max_header_bytes);
      parser.body_limit(limits.max_body_bytes);
      if (!first) tcp_layer.expires_after(kHeaderTimeout);
      first = false;
      auto [ec, header_bytes] = co_await read_parsed(stream, buffer, parser, ParseUntil::header);
      if (ec) {
        if (ec == http::error::body_limit) {
          // Beast checks Content-Length against the body limit while reading the header.
          co_await reject(worker, stream, peer, GatewayError::request_too_large,
                          too_large_message(limits.max_body_bytes), &parser);
        } else if (ec == http::error::header_limit) {
          co_await reject(worker, stream, peer, GatewayError::header_too_large,
                          header_too_large_message(limits.max_header_bytes), &parser);
        } else if (parser.got_some() && ec != beast::error::timeout &&
                   ec != http::error::end_of_stream && ec != asio::error::operation_aborted &&
                   ec != asio::error::connection_reset && ec != asio::error::eof &&
                   ec != http::error::partial_message) {
          co_await reject(worker, stream, peer, GatewayError::bad_request,
                          "The request is not valid HTTP/1.1: " + ec.message(), &parser);
        }
        break;
      }
      // Beast applies its header limit to what it has buffered, not to the header itself: the
      // exact limit is checked here, whatever the read sizes were.
      if (header_bytes > limits.max_header_bytes) {
        co_await reject(worker, stream, peer, GatewayError::header_too_large,
                        header_too_large_message(limits.max_header_bytes), &parser);
        break;
      }
      const bool keep_alive = co_await handle(worker, *installed, stream, buffer, parser,
                                              header_bytes, admin, entry, client_cert);
      if (!keep_alive) break;
    }
    // Under TLS too the connection ends with a TCP FIN and no close_notify: every response is
    // framed (Content-Length or chunked), so the client cannot mistake a cut for an end.
    tcp_layer.socket().shutdown(tcp::socket::shutdown_send, ignored);
  }

  static std::string too_large_message(std::uint64_t limit) {
    return "The request body is larger than this gateway accepts (" + std::to_string(limit) +
           " bytes).";
  }
  static std::string header_too_large_message(std::uint64_t limit) {
    return "The request's header block is larger than this gateway accepts (" +
           std::to_string(limit) + " bytes).";
  }

  // Closes a connection whose client may still be sending a request body the gateway will not
  // read: stop writing (the answer is out), then read and discard for a bounded time and size,
  // so the client's kernel does not get a reset that throws the unread answer away.
  // Under TLS the discarded bytes are read from the TCP layer: nothing of them is needed.
  template <class Stream>
  static asio::awaitable<void> linger_close(Stream& client) {
    beast::tcp_stream& stream = beast::get_lowest_layer(client);
    boost::system::error_code ignored;
    stream.socket().shutdown(tcp::socket::shutdown_send, ignored);
    stream.expires_after(kLingerTime);
    std::array<char, 16 * 1024> sink;
    std::size_t discarded = 0;
    while (discarded < kLingerBytes) {
      auto [ec, n] = co_await stream.async_read_some(asio::buffer(sink), nothrow_awaitable);
      if (ec) break;
      discarded += n;
    }
    stream.expires_never();
    stream.socket().close(ignored);
  }

  // Fills a new request's context (made in place: it holds its stages' states).
  void init_context(RequestContext& ctx, Worker& worker, const Snapshot& snapshot,
                    const std::string& peer, const RequestParser* parser,
                    const config::Sha256* client_cert = nullptr) {
    ctx.config = snapshot.config.get();
    ctx.received = Clock::now();
    ctx.worker = worker.index;
    ctx.peer = peer;
    ctx.client_cert_sha256 = client_cert;
    std::string_view client_id;
    if (parser) {
      ctx.method = parser->get().method();
      ctx.target = parser->get().target();
      ctx.headers = &parser->fields();
      client_id = parser->fields()["x-request-id"];
    }
    ctx.request_id = valid_client_request_id(client_id) ? std::string(client_id)
                                                        : generate_request_id(worker.rng);
  }

  // Answers a request the gateway could not read whole (431, 413 on Content-Length, malformed
  // HTTP), then the connection is closed.
  template <class Stream>
  asio::awaitable<void> reject(Worker& worker, Stream& stream, const std::string& peer,
                               GatewayError error, std::string message,
                               const RequestParser* parser) {
    const auto snapshot = installed_.load()->snapshot;
    // The header may be complete (413 on Content-Length) or not (431): use what arrived.
    const bool have_header = parser && parser->got_some();
    RequestContext ctx;
    init_context(ctx, worker, *snapshot, peer, have_header ? parser : nullptr);
    if (have_header) ctx.path = classify_path(ctx.method, ctx.target);
    ctx.reply = error_reply(error, message);
    DownstreamReply reply{11, false};
    co_await write_local_reply(stream, ctx, nullptr, reply);
    if (!ctx.client_aborted) co_await linger_close(stream);
    // Counted and logged like any request the gateway answered.
    snapshot->pipeline.on_complete(ctx);
  }

  // Built-in endpoints: /healthz and /readyz everywhere; /metrics on the admin listener (on the
  // main one when there is no admin listener); nothing else on the admin listener.
  bool builtin(RequestContext& ctx, bool admin) {
    std::string_view path = ctx.target.substr(0, ctx.target.find('?'));
    const auto& cfg = *ctx.config;
    const bool metrics = path == "/metrics" && services_.metrics && (admin || !cfg.admin);
    if ((metrics || path == "/healthz" || path == "/readyz") && ctx.method != http::verb::get) {
      ctx.reply = error_reply(GatewayError::method_not_allowed, "Use GET for this endpoint.");
      ctx.reply->headers.emplace_back("allow", "GET");
      return true;
    }
    if (metrics) {
      const std::string& token = cfg.admin ? cfg.admin->token : std::string();
      if (!token.empty()) {
        const std::string expected = "Bearer " + token;
        const std::string_view given = (*ctx.headers)[http::field::authorization];
        if (given.size() != expected.size() ||
            CRYPTO_memcmp(given.data(), expected.data(), expected.size()) != 0) {
          ctx.reply = error_reply(401, "invalid_request_error", "invalid_admin_token", std::nullopt,
                                  "/metrics needs 'Authorization: Bearer <admin.token>'.");
          return true;
        }
      }
      ctx.reply = LocalReply{
          200, "text/plain; version=0.0.4; charset=utf-8", services_.metrics->render(), {}, {}};
      return true;
    }
    if (path == "/healthz") {
      ctx.reply = json_reply(200, "{\"status\":\"ok\"}");
      return true;
    }
    if (path == "/readyz") {
      const bool ready = ready_ && !draining_;
      if (!ready) {
        ctx.reply = json_reply(503, "{\"status\":\"draining\"}");
        return true;
      }
      // Not ready while an Entra upstream has no valid token (it could only answer 503).
      const std::vector<std::string> without = tokens_->missing(cfg);
      if (!without.empty()) {
        std::string body = "{\"status\":\"not ready\",\"upstreams_without_token\":[";
        for (std::size_t i = 0; i < without.size(); ++i)
          body += (i ? "," : "") + json::encode_string(without[i]);
        ctx.reply = json_reply(503, body + "]}");
        return true;
      }
      ctx.reply = json_reply(200, "{\"status\":\"ready\"}");
      return true;
    }
    if (admin) {
      ctx.reply = error_reply(GatewayError::not_found,
                              "The admin listener serves /healthz and /readyz only.");
      return true;
    }
    return false;
  }

  // One request whose header has been read: everything from here on leaves exactly one access-log
  // line and one count, whatever happens (answered, refused, cut, or the client left).
  template <class Stream>
  asio::awaitable<bool> handle(Worker& worker, const Installed& installed, Stream& stream,
                               beast::flat_buffer& buffer, RequestParser& parser,
                               std::size_t header_bytes, bool admin, SessionEntry& entry,
                               const config::Sha256* client_cert) {
    in_flight_.fetch_add(1);
    struct InFlight {
      std::atomic<int>& n;
      SessionEntry& entry;
      ~InFlight() {
        entry.request = nullptr;
        n.fetch_sub(1);
      }
    } in_flight{in_flight_, entry};

    const Snapshot& snapshot = *installed.snapshot;
    RequestContext ctx;
    init_context(ctx, worker, snapshot, peer_of(entry), &parser, client_cert);
    ctx.bytes_in = header_bytes;
    entry.request = &ctx;
    const bool keep_alive = co_await process(worker, installed, stream, buffer, parser, admin, ctx);
    if (ctx.status == 0 && !ctx.cut_reason.empty()) {
      ctx.status = 503;  // cut by the gateway before it could answer
    } else if (ctx.status == 0 && ctx.client_aborted) {
      // A client that went away before any response got nothing: logged and counted as 499, as
      // nginx does.
      ctx.status = 499;
    }
    if (!ctx.builtin) snapshot.pipeline.on_complete(ctx);
    co_return keep_alive && !draining_ && ctx.cut_reason.empty();
  }

  static const std::string& peer_of(const SessionEntry& entry) {
    static const std::string none;
    return entry.peer ? *entry.peer : none;
  }

  // Writes ctx.reply. When the request's body was not read, the connection cannot carry another
  // request: it is closed after a lingering close.
  template <class Stream>
  static asio::awaitable<bool> answer(Stream& stream, RequestContext& ctx, const Pipeline* pipeline,
                                      DownstreamReply& reply, bool body_unread) {
    if (body_unread) reply.keep_alive = false;
    co_await write_local_reply(stream, ctx, pipeline, reply);
    if (body_unread && !ctx.client_aborted) co_await linger_close(stream);
    co_return reply.keep_alive;
  }

  template <class Stream>
  asio::awaitable<bool> process(Worker& worker, const Installed& installed, Stream& stream,
                                beast::flat_buffer& buffer, RequestParser& parser, bool admin,
                                RequestContext& ctx) {
    auto& req = parser.get();
    const Snapshot& snapshot = *installed.snapshot;
    const auto& limits = snapshot.config->server;
    const Pipeline& pipeline = snapshot.pipeline;
    DownstreamReply reply{req.version(), parser.keep_alive() && !draining_};
    bool body_unread = !parser.is_done();

    // Validation of the header: framing, target and method, before anything acts on them.
    if (auto framing = framing_error(req.version(), parser.fields())) {
      ctx.reply = error_reply(framing->first, framing->second);
      co_return co_await answer(stream, ctx, &pipeline, reply, true);
    }
    const TargetCheck target = check_request_target(req.target());
    if (!target.error.empty()) {
      ctx.reply = error_reply(GatewayError::invalid_path, target.error);
      co_return co_await answer(stream, ctx, &pipeline, reply, body_unread);
    }
    ctx.target = target.origin;
    if (req.method() == http::verb::unknown) {
      // Methods are case-sensitive (RFC 9110 §9.1): "post" is not POST.
      ctx.reply =
          error_reply(GatewayError::method_not_implemented,
                      "The method '" + std::string(json::truncate_chars(req.method_string(), 32)) +
                          "' is not one this gateway implements.");
      co_return co_await answer(stream, ctx, &pipeline, reply, body_unread);
    }
    ctx.path = classify_path(ctx.method, ctx.target);

    if (builtin(ctx, admin)) {
      ctx.builtin = true;
      co_return co_await answer(stream, ctx, nullptr, reply, body_unread);
    }
    if (!method_allowed(ctx.method, ctx.path)) {
      const std::string_view allowed = allowed_methods(ctx.path);
      ctx.reply = error_reply(GatewayError::method_not_allowed,
                              "This operation is used with " + std::string(allowed) + ", not " +
                                  std::string(req.method_string()) + ".");
      ctx.reply->headers.emplace_back("allow", std::string(allowed));
      co_return co_await answer(stream, ctx, &pipeline, reply, body_unread);
    }

    // Admission on the header alone: a refused request's body is never read.
    if (pipeline.on_request_headers(ctx) == Verdict::respond)
      co_return co_await answer(stream, ctx, &pipeline, reply, body_unread);

    BodyBudget budget(buffered_body_bytes_, limits.max_buffered_body_bytes);
    const auto overloaded = [&ctx] {
      ctx.reply = error_reply(GatewayError::overloaded,
                              "The gateway is holding as many request bodies as it may; retry "
                              "shortly.");
    };
    const auto length = parser.content_length();
    if (length && !budget.hold(*length)) {
      overloaded();
      co_return co_await answer(stream, ctx, &pipeline, reply, body_unread);
    }
    beast::tcp_stream& tcp_layer = beast::get_lowest_layer(stream);
    if (body_unread && beast::iequals(parser.fields()[http::field::expect], "100-continue")) {
      tcp_layer.expires_after(kReplyWriteTimeout);
      co_await asio::async_write(stream, asio::buffer("HTTP/1.1 100 Continue\r\n\r\n", 25),
                                 nothrow_awaitable);
    }
    if (length && *length > kRequestReadBuffer) buffer.reserve(kLargeBodyReadBuffer);
    // The body deadline cancels the read rather than closing the socket (as the stream's own
    // timeout would), so that the client still gets its 408.
    tcp_layer.expires_never();
    // The handler may already be queued when the body completes: it acts only while `watching`.
    struct BodyDeadline {
      explicit BodyDeadline(const asio::any_io_executor& ex) : timer(ex) {}
      asio::steady_timer timer;
      bool watching = true;
      bool timed_out = false;
    };
    // A body the buffer already holds whole (a typical request arrives with its header) is
    // parsed with no deadline: no read can wait. (Known by Content-Length only: where a chunked
    // body ends is not known before it is parsed.) A timer armed and cancelled per request was a
    // make_shared, a timer-queue insertion and removal, and a trip through the scheduler.
    const bool body_buffered = !body_unread || (length && buffer.size() >= *length);
    std::shared_ptr<BodyDeadline> deadline;
    if (!body_buffered) {
      deadline = std::make_shared<BodyDeadline>(stream.get_executor());
      deadline->timer.expires_after(limits.body_timeout);
      deadline->timer.async_wait([d = deadline, &tcp_layer](boost::system::error_code ec) {
        if (ec || !d->watching) return;
        d->timed_out = true;
        boost::system::error_code ignored;
        tcp_layer.socket().cancel(ignored);
      });
    }
    struct StopWatching {
      BodyDeadline* d;
      void now() {
        if (!d) return;
        d->watching = false;
        d->timer.cancel();
        d = nullptr;
      }
      ~StopWatching() { now(); }
    } stop_watching{deadline.get()};
    while (!parser.is_done()) {
      auto [ec, n] = co_await read_parsed(stream, buffer, parser, ParseUntil::progress);
      if (ec && deadline && deadline->timed_out) ec = beast::error::timeout;
      ctx.bytes_in += n;
      if (!ec && !budget.hold(req.body().size())) {
        overloaded();
        co_return co_await answer(stream, ctx, &pipeline, reply, true);
      }
      if (!ec) continue;
      if (ec == http::error::body_limit) {
        ctx.reply =
            error_reply(GatewayError::request_too_large, too_large_message(limits.max_body_bytes));
        co_return co_await answer(stream, ctx, &pipeline, reply, true);
      }
      if (ec == beast::error::timeout && ctx.cut_reason.empty()) {
        stop_watching.now();
        ctx.reply = error_reply(GatewayError::request_timeout,
                                "The request body did not arrive within " +
                                    std::to_string(limits.body_timeout.count()) + " ms.");
        co_return co_await answer(stream, ctx, &pipeline, reply, true);
      }
      if (ec == asio::error::eof || ec == asio::error::connection_reset ||
          ec == http::error::partial_message || ec == asio::error::operation_aborted ||
          ec == asio::error::bad_descriptor || ec == beast::error::timeout) {
        ctx.client_aborted = true;  // gone, or cut by the drain deadline
        co_return false;
      }
      ctx.reply =
          error_reply(GatewayError::bad_request, "The request body is malformed: " + ec.message());
      co_return co_await answer(stream, ctx, &pipeline, reply, true);
    }
    body_unread = false;
    stop_watching.now();  // the relay below must never see the body deadline
    ctx.body = req.body();

    // (co_await results are taken into variables first: see run_attempt in router.cpp.)
    const Verdict verdict = co_await pipeline.on_request(ctx);
    if (verdict == Verdict::respond)
      co_return co_await answer(stream, ctx, &pipeline, reply, false);
    co_return co_await route_and_relay(worker.pool, installed.upstreams,
                                       {services_.backends.get(), tokens_.get()}, pipeline, ctx,
                                       stream, reply);
  }

  asio::awaitable<void> drain() {
    if (draining_.exchange(true)) co_return;
    const auto timeout = installed_.load()->snapshot->config->server.drain_timeout;
    // Every worker's listener stops at once, from this thread: shutdown(2) on a listening socket
    // closes its queue (new connections are refused) and wakes its pending accept, whose worker
    // then ends its accept loop; the socket itself is closed by its owner at teardown.
    for (auto& acc : main_acceptors_) ::shutdown(acc->native_handle(), SHUT_RDWR);
    // Logged once new connections are refused and /readyz answers 503.
    log::line(log::Level::info, "draining", {{"timeout_ms", std::to_string(timeout.count())}});
    // Connections waiting for their next request are closed now; busy ones close after their
    // response (keep-alive is off while draining).
    for (auto& w : workers_) {
      asio::post(w->ioc, [w = w.get()] {
        for (SessionEntry* s : w->sessions) {
          if (s->idle) s->stream->cancel();
        }
      });
    }
    co_await wait_in_flight(Clock::now() + timeout);
    if (in_flight_.load() > 0) {
      log::line(log::Level::warn, "drain timeout reached; cutting in-flight requests",
                {{"in_flight", std::to_string(in_flight_.load())}});
      // Each cut request still finishes on its own thread: it is answered 503 if nothing was
      // sent yet, or its response is cut, and either way it is logged and counted.
      for (auto& w : workers_) {
        asio::post(w->ioc, [w = w.get()] {
          for (SessionEntry* s : w->sessions) {
            if (s->idle) {
              s->stream->cancel();
              continue;
            }
            if (s->request) s->request->cut_reason = "drain";
            if (s->request && s->request->cancel) {
              s->request->cancel();
            } else {
              boost::system::error_code ec;
              s->stream->socket().shutdown(tcp::socket::shutdown_both, ec);
              s->stream->cancel();
            }
          }
        });
      }
      co_await wait_in_flight(Clock::now() + kCutGrace);
    }
    stop_all();
  }

  // Polls the in-flight count until it is zero or the deadline passes.
  asio::awaitable<void> wait_in_flight(Clock::time_point deadline) {
    asio::steady_timer timer(co_await asio::this_coro::executor);
    while (in_flight_.load() > 0 && Clock::now() < deadline) {
      timer.expires_after(std::chrono::milliseconds(20));
      co_await timer.async_wait(nothrow_awaitable);
    }
  }

  void stop_all() {
    for (auto& w : workers_) w->ioc.stop();
  }

  GatewayServices services_;
  UpstreamRegistry upstreams_;  // outlives every snapshot
  std::atomic<std::shared_ptr<const Installed>> installed_;
  std::vector<std::unique_ptr<Worker>> workers_;
  std::vector<std::unique_ptr<tcp::acceptor>> main_acceptors_;  // one per worker
  std::unique_ptr<tcp::acceptor> admin_acceptor_;
  std::unique_ptr<Reloader> reloader_;
  std::unique_ptr<TokenService> tokens_;  // made before the first install(), which feeds it
  std::atomic<bool> ready_{false};
  std::atomic<bool> draining_{false};
  std::atomic<int> in_flight_{0};
  std::atomic<std::uint32_t> connections_{0};          // open main-listener connections
  std::atomic<std::uint64_t> buffered_body_bytes_{0};  // see BodyBudget
};

}  // namespace

template <class Down>
asio::awaitable<void> write_local_reply(Down& down, RequestContext& ctx, const Pipeline* pipeline,
                                        DownstreamReply& reply) {
  LocalReply& local = *ctx.reply;
  http::response<http::string_body> res{static_cast<http::status>(local.status),
                                        reply.http_version < 11 ? 10u : 11u};
  res.set(http::field::content_type, local.content_type);
  res.set("x-gateway-request-id", ctx.request_id);
  for (const auto& [name, value] : local.headers) res.set(name, value);
  res.body() = std::move(local.body);
  ctx.status = local.status;
  ctx.error_code = local.error_code;
  if (pipeline) {
    // The stages see the reply's fields as they see an upstream's: as a list.
    HeaderList fields;
    for (const auto& f : res.base()) fields.append(f.name(), f.name_string(), f.value());
    pipeline->on_response_headers(ctx, local.status, fields);
    ctx.added_response_fields.apply_to(res.base());
    pipeline->on_response_end(ctx);
  }
  res.keep_alive(reply.keep_alive);
  res.prepare_payload();
  beast::get_lowest_layer(down).expires_after(kReplyWriteTimeout);
  auto [ec, n] = co_await http::async_write(down, res, nothrow_awaitable);
  beast::get_lowest_layer(down).expires_never();
  ctx.bytes_out += n;
  if (ec) {
    reply.keep_alive = false;
    ctx.client_aborted = true;
  }
}

template asio::awaitable<void> write_local_reply(beast::tcp_stream&, RequestContext&,
                                                 const Pipeline*, DownstreamReply&);
template asio::awaitable<void> write_local_reply(TlsStream&, RequestContext&, const Pipeline*,
                                                 DownstreamReply&);

unsigned worker_count(const config::Config& cfg) {
  return cfg.server.threads ? cfg.server.threads
                            : std::max(1u, std::thread::hardware_concurrency());
}

int run_gateway(std::shared_ptr<const Snapshot> snapshot, GatewayServices services) {
  ::signal(SIGPIPE, SIG_IGN);
  try {
    Gateway gateway(std::move(snapshot), std::move(services));
    return gateway.run();
  } catch (const std::exception& e) {
    log::line(log::Level::error, "cannot start", {{"detail", e.what()}});
    return 1;
  }
}

}  // namespace llmgw::net
