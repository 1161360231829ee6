// Accept & parse: listeners, worker threads, client sessions (HTTP/1.1 keep-alive), built-in
// health endpoints, and graceful drain on SIGTERM/SIGINT. Requests are handed to the pipeline and
// then to forward_and_relay (upstream.cpp).
#include <openssl/crypto.h>
#include <signal.h>

#include <atomic>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/signal_set.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/write.hpp>
#include <boost/beast/http/error.hpp>
#include <boost/beast/http/parser.hpp>
#include <boost/beast/http/read.hpp>
#include <boost/beast/http/string_body.hpp>
#include <boost/beast/http/write.hpp>
#include <list>
#include <thread>

#include "llm_gateway/net/gateway.hpp"
#include "llm_gateway/net/io.hpp"
#include "llm_gateway/observability/log.hpp"

namespace llmgw::net {
namespace http = beast::http;

namespace {

// Named limits (cpp-httplib style): every timeout of the client side in one place.
constexpr auto kFirstRequestTimeout = std::chrono::seconds(30);  // connect -> first header
constexpr auto kKeepAliveIdle = std::chrono::seconds(75);        // between requests
constexpr auto kBodyReadIdle = std::chrono::seconds(60);         // per read while a body arrives
constexpr auto kReplyWriteTimeout = std::chrono::seconds(30);
// Beast reads max(512, free capacity) bytes per system call: room for a whole typical request up
// front, and more once a large body (audio, embedding batches) is announced.
constexpr std::size_t kRequestReadBuffer = 8 * 1024;
constexpr std::size_t kLargeBodyReadBuffer = 64 * 1024;

struct SessionEntry {
  beast::tcp_stream* stream = nullptr;
  bool idle = true;  // waiting for a request header: safe to close when draining
};

// One event loop and thread. A connection lives on one worker for its whole life, and each
// worker owns its upstream pool and id generator, so the data plane takes no locks.
struct Worker {
  Worker(unsigned i, std::size_t upstream_count, observability::Metrics* metrics)
      : index(i), pool(upstream_count, metrics), rng(std::random_device{}()), ioc(1) {}
  unsigned index;
  UpstreamPool pool;
  std::mt19937_64 rng;
  std::list<SessionEntry*> sessions;
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
  char buf[37];
  std::snprintf(buf, sizeof buf, "%08x-%04x-%04x-%04x-%012llx", static_cast<unsigned>(hi >> 32),
                static_cast<unsigned>((hi >> 16) & 0xffff), static_cast<unsigned>(hi & 0xffff),
                static_cast<unsigned>(lo >> 48),
                static_cast<unsigned long long>(lo & 0xffffffffffffull));
  return buf;
}

std::string endpoint_string(const tcp::endpoint& ep) {
  const auto addr = ep.address();
  if (addr.is_v6()) return "[" + addr.to_string() + "]:" + std::to_string(ep.port());
  return addr.to_string() + ":" + std::to_string(ep.port());
}

class Gateway {
 public:
  Gateway(std::shared_ptr<const Snapshot> snapshot, GatewayServices services)
      : snapshot_(snapshot),
        tls_(make_upstream_tls(*snapshot->config)),
        services_(std::move(services)) {
    const unsigned threads = worker_count(*snapshot->config);
    for (unsigned i = 0; i < threads; ++i)
      workers_.push_back(
          std::make_unique<Worker>(i, snapshot->config->upstreams.size(), services_.metrics.get()));
  }

  int run() {
    const auto& cfg = *snapshot_.load()->config;
    Worker& first = *workers_.front();
    try {
      main_acceptor_ = open_acceptor(first.ioc, cfg.server.listen, "main");
      if (cfg.admin) admin_acceptor_ = open_acceptor(first.ioc, cfg.admin->listen, "admin");
    } catch (const std::exception& e) {
      log::line(log::Level::error, "cannot listen", {{"detail", e.what()}});
      return 1;
    }
    asio::co_spawn(first.ioc, accept_loop(*main_acceptor_, false), log_exception("accept"));
    if (admin_acceptor_)
      asio::co_spawn(first.ioc, accept_loop(*admin_acceptor_, true), log_exception("admin accept"));

    run_until_stopped(first, cfg);
    // Tear down in dependency order while every io_context still exists: listeners, then idle
    // upstream connections, then the workers (and with them any suspended sessions).
    main_acceptor_.reset();
    admin_acceptor_.reset();
    for (auto& w : workers_) w->pool.clear();
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

    std::vector<std::thread> threads;
    for (std::size_t i = 1; i < workers_.size(); ++i) {
      threads.emplace_back([w = workers_[i].get()] {
        auto guard = asio::make_work_guard(w->ioc);
        w->ioc.run();
      });
    }
    {
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

  std::unique_ptr<tcp::acceptor> open_acceptor(asio::io_context& ioc,
                                               const config::ListenAddress& where,
                                               const char* name) {
    tcp::endpoint ep(asio::ip::make_address(where.host), where.port);
    auto acc = std::make_unique<tcp::acceptor>(ioc);
    acc->open(ep.protocol());
    acc->set_option(asio::socket_base::reuse_address(true));
    acc->bind(ep);
    acc->listen(asio::socket_base::max_listen_connections);
    log::line(log::Level::info, "listening",
              {{"listener", name}, {"address", endpoint_string(acc->local_endpoint())}});
    return acc;
  }

  asio::awaitable<void> accept_loop(tcp::acceptor& acceptor, bool admin) {
    std::size_t next = 0;
    for (;;) {
      // Admin connections stay on the first worker; proxied ones are spread round-robin.
      Worker& w = admin ? *workers_.front() : *workers_[next++ % workers_.size()];
      auto [ec, socket] = co_await acceptor.async_accept(w.ioc, nothrow_awaitable);
      if (ec) {
        if (ec == asio::error::operation_aborted || !acceptor.is_open()) co_return;
        // Out of file descriptors and the like: back off briefly instead of spinning.
        log::line(log::Level::warn, "accept failed", {{"detail", ec.message()}});
        asio::steady_timer t(acceptor.get_executor(), std::chrono::milliseconds(50));
        co_await t.async_wait(nothrow_awaitable);
        continue;
      }
      asio::co_spawn(w.ioc, session(w, std::move(socket), admin), log_exception("session"));
    }
  }

  asio::awaitable<void> session(Worker& worker, tcp::socket socket, bool admin) {
    boost::system::error_code ignored;
    socket.set_option(tcp::no_delay(true), ignored);
    std::string peer;
    if (auto ep = socket.remote_endpoint(ignored); !ignored) peer = endpoint_string(ep);
    beast::tcp_stream stream(std::move(socket));
    beast::flat_buffer buffer;
    buffer.reserve(kRequestReadBuffer);

    SessionEntry entry{&stream, true};
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
      auto snapshot = snapshot_.load();
      const auto& limits = snapshot->config->server;
      // A parser handles one message only: a fresh one for every request.
      http::request_parser<http::string_body> parser;
      parser.header_limit(limits.max_header_bytes);
      parser.body_limit(limits.max_body_bytes);

      entry.idle = true;
      stream.expires_after(first ? kFirstRequestTimeout : kKeepAliveIdle);
      auto [ec, n] = co_await http::async_read_header(stream, buffer, parser, nothrow_awaitable);
      entry.idle = false;
      first = false;
      if (ec) {
        if (ec == http::error::body_limit) {
          // Beast checks Content-Length against the body limit while reading the header.
          co_await reject(worker, stream, peer, GatewayError::request_too_large,
                          too_large_message(limits.max_body_bytes), &parser);
        } else if (ec == http::error::header_limit) {
          co_await reject(worker, stream, peer, GatewayError::header_too_large,
                          "The request's header block is larger than this gateway accepts (" +
                              std::to_string(limits.max_header_bytes) + " bytes).");
        } else if (parser.got_some() && ec != beast::error::timeout &&
                   ec != http::error::end_of_stream && ec != asio::error::operation_aborted &&
                   ec != asio::error::connection_reset && ec != asio::error::eof &&
                   ec != http::error::partial_message) {
          co_await reject(worker, stream, peer, GatewayError::bad_request,
                          "The request is not valid HTTP/1.1: " + ec.message());
        }
        break;
      }

      if (auto length = parser.content_length(); length && *length > limits.max_body_bytes) {
        co_await reject(worker, stream, peer, GatewayError::request_too_large,
                        too_large_message(limits.max_body_bytes), &parser);
        break;
      }
      if (beast::iequals(parser.get()[http::field::expect], "100-continue")) {
        stream.expires_after(kReplyWriteTimeout);
        co_await asio::async_write(stream, asio::buffer("HTTP/1.1 100 Continue\r\n\r\n", 25),
                                   nothrow_awaitable);
      }
      if (auto length = parser.content_length(); length && *length > kRequestReadBuffer)
        buffer.reserve(kLargeBodyReadBuffer);
      bool body_ok = true;
      while (!parser.is_done()) {
        stream.expires_after(kBodyReadIdle);
        auto [bec, bn] = co_await http::async_read_some(stream, buffer, parser, nothrow_awaitable);
        if (bec == http::error::body_limit) {
          co_await reject(worker, stream, peer, GatewayError::request_too_large,
                          too_large_message(limits.max_body_bytes), &parser);
          body_ok = false;
          break;
        }
        if (bec) {
          if (bec != beast::error::timeout && bec != asio::error::eof &&
              bec != asio::error::connection_reset && bec != http::error::partial_message &&
              bec != asio::error::operation_aborted) {
            co_await reject(worker, stream, peer, GatewayError::bad_request,
                            "The request body is malformed: " + bec.message());
          }
          body_ok = false;
          break;
        }
      }
      if (!body_ok) break;
      stream.expires_never();

      const bool keep_alive = co_await handle(worker, *snapshot, stream, peer, parser.get(),
                                              n + parser.get().body().size(), admin);
      if (!keep_alive) break;
    }
    stream.socket().shutdown(tcp::socket::shutdown_send, ignored);
  }

  static std::string too_large_message(std::uint64_t limit) {
    return "The request body is larger than this gateway accepts (" + std::to_string(limit) +
           " bytes).";
  }

  // Answers a request the gateway could not accept, then the connection is closed.
  asio::awaitable<void> reject(Worker& worker, beast::tcp_stream& stream, const std::string& peer,
                               GatewayError error, std::string message,
                               const http::request_parser<http::string_body>* parser = nullptr) {
    auto snapshot = snapshot_.load();
    RequestContext ctx;
    ctx.config = snapshot->config.get();
    ctx.received = Clock::now();
    ctx.worker = worker.index;
    ctx.peer = peer;
    if (parser && parser->got_some()) {
      // The header may be complete (413 on Content-Length) or not (431): use what arrived.
      ctx.method = parser->get().method();
      ctx.target = parser->get().target();
      ctx.headers = &parser->get().base();
      ctx.path = classify_path(ctx.method, ctx.target);
    }
    std::string_view client_id;
    if (ctx.headers) client_id = (*ctx.headers)["x-request-id"];
    ctx.request_id = valid_client_request_id(client_id) ? std::string(client_id)
                                                        : generate_request_id(worker.rng);
    ctx.reply = error_reply(error, message);
    DownstreamReply reply{11, false};
    co_await write_local_reply(stream, ctx, nullptr, reply);
    // Counted and logged like any request the gateway answered.
    snapshot->pipeline.on_complete(ctx);
  }

  // Built-in endpoints: /healthz and /readyz everywhere; /metrics on the admin listener (on the
  // main one when there is no admin listener); nothing else on the admin listener.
  bool builtin(RequestContext& ctx, bool admin) {
    std::string_view path = ctx.target.substr(0, ctx.target.find('?'));
    const auto& cfg = *ctx.config;
    if (path == "/metrics" && services_.metrics && (admin || !cfg.admin)) {
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
      ctx.reply = json_reply(ready ? 200 : 503,
                             ready ? "{\"status\":\"ready\"}" : "{\"status\":\"draining\"}");
      return true;
    }
    if (admin) {
      ctx.reply = error_reply(GatewayError::not_found,
                              "The admin listener serves /healthz and /readyz only.");
      return true;
    }
    return false;
  }

  asio::awaitable<bool> handle(Worker& worker, const Snapshot& snapshot, beast::tcp_stream& stream,
                               const std::string& peer, http::request<http::string_body>& req,
                               std::size_t bytes_in, bool admin) {
    in_flight_.fetch_add(1);
    struct InFlight {
      std::atomic<int>& n;
      ~InFlight() { n.fetch_sub(1); }
    } in_flight{in_flight_};

    RequestContext ctx;
    ctx.config = snapshot.config.get();
    ctx.received = Clock::now();
    ctx.worker = worker.index;
    ctx.peer = peer;
    ctx.method = req.method();
    ctx.target = req.target();
    ctx.headers = &req.base();
    ctx.body = req.body();
    ctx.bytes_in = bytes_in;
    ctx.path = classify_path(ctx.method, ctx.target);
    const auto client_id = req["x-request-id"];
    ctx.request_id = valid_client_request_id(client_id) ? std::string(client_id)
                                                        : generate_request_id(worker.rng);

    DownstreamReply reply{req.version(), req.keep_alive() && !draining_};
    if (builtin(ctx, admin)) {
      co_await write_local_reply(stream, ctx, nullptr, reply);
      co_return reply.keep_alive;
    }
    const Pipeline& pipeline = snapshot.pipeline;
    bool keep_alive = reply.keep_alive;
    if (co_await pipeline.on_request(ctx) == Verdict::respond) {
      co_await write_local_reply(stream, ctx, &pipeline, reply);
    } else {
      keep_alive = co_await forward_and_relay(worker.pool, tls_, pipeline, ctx, stream, reply);
    }
    // A client that went away before any response got nothing: logged and counted as 499, as
    // nginx does.
    if (ctx.status == 0 && ctx.client_aborted) ctx.status = 499;
    pipeline.on_complete(ctx);
    co_return keep_alive && !draining_;
  }

  asio::awaitable<void> drain() {
    if (draining_.exchange(true)) co_return;
    const auto timeout = snapshot_.load()->config->server.drain_timeout;
    boost::system::error_code ignored;
    if (main_acceptor_) main_acceptor_->close(ignored);
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
    const auto deadline = Clock::now() + timeout;
    asio::steady_timer timer(co_await asio::this_coro::executor);
    while (in_flight_.load() > 0 && Clock::now() < deadline) {
      timer.expires_after(std::chrono::milliseconds(20));
      co_await timer.async_wait(nothrow_awaitable);
    }
    if (in_flight_.load() > 0) {
      log::line(log::Level::warn, "drain timeout reached; closing in-flight requests",
                {{"in_flight", std::to_string(in_flight_.load())}});
    }
    stop_all();
  }

  void stop_all() {
    for (auto& w : workers_) w->ioc.stop();
  }

  std::atomic<std::shared_ptr<const Snapshot>> snapshot_;
  UpstreamTls tls_;
  GatewayServices services_;
  std::vector<std::unique_ptr<Worker>> workers_;
  std::unique_ptr<tcp::acceptor> main_acceptor_;
  std::unique_ptr<tcp::acceptor> admin_acceptor_;
  std::atomic<bool> ready_{false};
  std::atomic<bool> draining_{false};
  std::atomic<int> in_flight_{0};
};

}  // namespace

asio::awaitable<void> write_local_reply(beast::tcp_stream& down, RequestContext& ctx,
                                        const Pipeline* pipeline, DownstreamReply& reply) {
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
    pipeline->on_response_headers(ctx, local.status, res.base());
    pipeline->on_response_end(ctx);
  }
  res.keep_alive(reply.keep_alive);
  res.prepare_payload();
  down.expires_after(kReplyWriteTimeout);
  auto [ec, n] = co_await http::async_write(down, res, nothrow_awaitable);
  down.expires_never();
  ctx.bytes_out += n;
  if (ec) {
    reply.keep_alive = false;
    ctx.client_aborted = true;
  }
}

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
