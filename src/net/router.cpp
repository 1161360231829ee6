// The router step, after the request stages (Envoy's router filter is the model): it owns the
// request's upstream attempts. Each attempt: pick a target → translate for it → connect (or take
// a pooled connection) → send → read the response head → decide → commit & relay. The decisions
// are the AttemptPlan's (routing/attempt_plan.hpp, pure); this file does their I/O. Only a
// committed attempt touches the client.
#include "attempt.hpp"
#include "llm_gateway/net/tokens.hpp"
#include "llm_gateway/observability/log.hpp"

namespace llmgw::net {

namespace {

// A plain-http upstream through the egress proxy gets the absolute form and the proxy's
// credential (which views the configuration, like the other gateway-set fields).
void address_through_proxy(const config::Upstream& up, UpstreamRequest& ureq) {
  if (!up.proxy || up.base.tls) return;
  ureq.target.insert(0, "http://" + up.base.host_header);
  if (!up.proxy->authorization.empty())
    ureq.headers.push_back({"Proxy-Authorization", up.proxy->authorization});
}

// Send, read the head, let the plan decide, and (if it commits) commit and relay.
template <class Stream, class Down>
asio::awaitable<ExchangeResult> run_attempt(Stream& up, UpstreamConnection& conn, bool reused,
                                            const UpstreamRequest& req, std::string_view body,
                                            AttemptPlan& plan, const Pipeline& pipeline,
                                            RequestContext& ctx, Down& down,
                                            const DownstreamReply& reply, ExchangeGuard& guard,
                                            AttemptRecord& record, Next& next) {
  Attempt<Stream, Down> attempt(up, conn, reused, req, body, pipeline, ctx, down, reply, guard);
  // (No co_await inside an if condition: g++ 12 miscompiled `if (!co_await attempt.send())`
  // into a trap (SIGILL), so results are always taken into a variable first.)
  bool ok = co_await attempt.send();
  if (ok) ok = co_await attempt.read_head();
  const AttemptOutcome outcome = attempt.outcome();
  record.status = outcome.status;
  record.error_kind = outcome.error_kind;
  if (guard.client_gone) co_return std::move(attempt.result());  // nobody to answer
  next = plan.decide(outcome, Clock::now());
  if (next == Next::retry || next == Next::refuse) {
    // Discarded: nothing of it reached the client. Its connection is closed with it (its body
    // was not read), which also tells the upstream to stop.
    attempt.result().outcome = next == Next::retry ? Outcome::retry : Outcome::failed;
    co_return std::move(attempt.result());
  }
  if (!ok) co_return std::move(attempt.result());
  ok = co_await attempt.commit();
  if (ok) co_await attempt.relay();
  if (attempt.result().outcome != Outcome::relayed && record.error_kind.empty() &&
      !ctx.client_aborted)
    record.error_kind = error_kind(attempt.result().failure);
  co_return std::move(attempt.result());
}

}  // namespace

template <class Down>
asio::awaitable<bool> route_and_relay(UpstreamPool& pool, const UpstreamSlots& slots,
                                      RouterServices services, const Pipeline& pipeline,
                                      RequestContext& ctx, Down& down, DownstreamReply reply) {
  const config::Config& cfg = *ctx.config;
  AttemptPlan plan(cfg, ctx, services.backends, Clock::now());

  auto guard = std::make_shared<ExchangeGuard>(down.get_executor());
  guard->down = &beast::get_lowest_layer(down);
  guard->down_tls = !std::is_same_v<Down, beast::tcp_stream>;
  watch_client(guard);
  // The drain deadline stops the exchange through here (on this thread): the upstream is closed,
  // and so is the client once its response has started (nothing else could end a stalled write).
  ctx.cancel = [g = guard.get(), &ctx] {
    if (g->upstream) g->upstream->close();
    if (g->queue_wait) g->queue_wait->cancel();
    if (ctx.client_first_byte) g->down->close();
  };
  struct StopGuard {
    ExchangeGuard& g;
    RequestContext& ctx;
    ~StopGuard() {
      ctx.cancel = nullptr;
      g.active = false;
      g.upstream = nullptr;
      g.queue_wait = nullptr;
      g.timer.cancel();
      if (g.hangup_poll) g.hangup_poll->cancel();
      boost::system::error_code ignored;
      g.down->socket().cancel(ignored);  // completes the pending wait (nothing else is pending)
    }
  } stop_guard{*guard, ctx};

  ExchangeResult result;  // the last attempt's
  bool refused = false;   // the plan answers for every backend (all cooling down or ejected)
  for (;;) {
    const Step step = plan.next_step(Clock::now());
    if (step.kind == Step::Kind::wait) {
      // max_queue_ms: wait for a backend to come back, without holding the thread; the client
      // leaving or the drain deadline ends the wait.
      asio::steady_timer wait(down.get_executor());
      wait.expires_at(step.until);
      guard->queue_wait = &wait;
      co_await wait.async_wait(nothrow_awaitable);  // (cancelled: see below)
      guard->queue_wait = nullptr;
      if (guard->client_gone) {
        ctx.client_aborted = true;
        co_return false;
      }
      if (!ctx.cut_reason.empty()) {
        result = {Outcome::failed};
        break;
      }
      continue;
    }
    if (step.kind == Step::Kind::refuse) {
      refused = true;
      break;
    }
    if (step.kind == Step::Kind::give_up) break;

    // pick target → translate
    const Target& target = plan.pick();
    const config::Upstream& upcfg = cfg.upstreams[target.upstream];
    const UpstreamSlot& slot = *slots.at(target.upstream);
    ctx.upstream = &upcfg;
    ctx.deployment = target.deployment;
    std::optional<std::string> token;  // the attempt's Authorization field views it
    if (upcfg.entra) {
      // Entra ID: the current token, which the token service keeps fresh; without a valid one
      // the request is not sent (the upstream would only answer 401).
      if (services.tokens) token = services.tokens->token(*upcfg.entra);
      if (!token) {
        const std::string why =
            services.tokens ? services.tokens->why_not(*upcfg.entra) : "no token service";
        log::line(log::Level::warn, "no entra token for the upstream",
                  {{"upstream", upcfg.name}, {"request_id", ctx.request_id}, {"detail", why}});
        ctx.reply = error_reply(GatewayError::upstream_auth_unavailable,
                                "Upstream '" + upcfg.name +
                                    "' has no valid Microsoft Entra ID "
                                    "token: " +
                                    why + ".");
        co_await write_local_reply(down, ctx, &pipeline, reply);
        co_return reply.keep_alive;
      }
    }
    const auto started = Clock::now();
    AttemptRecord& record = ctx.attempts.emplace_back();
    record.upstream = target.upstream;
    UpstreamRequest ureq = translate_for_target(
        ctx, upcfg, target, token ? std::string_view(*token) : std::string_view());
    address_through_proxy(upcfg, ureq);
    const std::string_view body = ureq.body ? std::string_view(*ureq.body) : ctx.body;
    set_deadline(guard, started + upcfg.timeout);

    // connect (or a pooled connection)
    std::unique_ptr<UpstreamConnection> conn = plan.fresh_connection() ? nullptr : pool.take(slot);
    record.reused_connection = conn != nullptr;
    if (!conn) {
      conn = std::make_unique<UpstreamConnection>();
      conn->buffer.reserve(kUpstreamReadBuffer);
      std::optional<Failure> failure =
          co_await connect(upcfg, slot.tls.get(), slot.proxy_tls.get(), *conn);
      if (failure) {
        result = {Outcome::failed, std::move(*failure)};
        record.error_kind = error_kind(result.failure);
        record.duration = Clock::now() - started;
        if (guard->client_gone || !ctx.cut_reason.empty()) break;
        const Next next = plan.decide({0, record.error_kind, false, true}, Clock::now());
        if (next == Next::retry) continue;
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
      result = {Outcome::failed};
      break;
    }

    // send → read head → decide → commit & relay
    UpstreamPool::note_active(slot, 1);
    guard->upstream = &conn->lowest();
    if (guard->upstream_timed_out) conn->lowest().close();  // the deadline passed while connecting
    Next next = Next::give_up;
    if (conn->tls_in_tls) {
      result = co_await run_attempt(*conn->tls_in_tls, *conn, record.reused_connection, ureq, body,
                                    plan, pipeline, ctx, down, reply, *guard, record, next);
    } else if (conn->tls) {
      result = co_await run_attempt(*conn->tls, *conn, record.reused_connection, ureq, body, plan,
                                    pipeline, ctx, down, reply, *guard, record, next);
    } else {
      result = co_await run_attempt(*conn->plain, *conn, record.reused_connection, ureq, body, plan,
                                    pipeline, ctx, down, reply, *guard, record, next);
    }
    guard->upstream = nullptr;
    UpstreamPool::note_active(slot, -1);
    record.duration = Clock::now() - started;
    if (result.outcome == Outcome::relayed && result.upstream_reusable)
      pool.give_back(slot, std::move(conn));
    if (next == Next::refuse) {
      refused = true;
      break;
    }
    if (result.outcome != Outcome::retry) break;
    log::line(log::Level::debug, "upstream attempt discarded; trying again",
              {{"upstream", upcfg.name},
               {"request_id", ctx.request_id},
               {"status", std::to_string(record.status)},
               {"kind", std::string(record.error_kind)}});
  }

  if (guard->client_gone || guard->client_stalled) ctx.client_aborted = true;
  if (ctx.client_aborted) co_return false;
  if (refused) {
    // Every backend is cooling down (429) or out of rotation (503): the gateway answers for them.
    if (ctx.attempts.empty()) {  // it went nowhere
      ctx.upstream = nullptr;
      ctx.deployment.clear();
    }
    ctx.reply = plan.reply();
    co_await write_local_reply(down, ctx, &pipeline, reply);
    co_return reply.keep_alive;
  }
  const std::string& upstream_name = ctx.upstream->name;
  switch (result.outcome) {
    case Outcome::relayed: co_return result.downstream_reusable;
    case Outcome::broken:
      log::line(log::Level::warn, "upstream response cut",
                {{"upstream", upstream_name},
                 {"request_id", ctx.request_id},
                 {"kind", error_kind(result.failure)},
                 {"detail", result.failure.message}});
      ctx.upstream_error_kind = std::string(error_kind(result.failure));
      co_return false;
    case Outcome::retry:
    case Outcome::failed: break;
  }
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
            {{"upstream", upstream_name},
             {"request_id", ctx.request_id},
             {"kind", ctx.upstream_error_kind},
             {"detail", result.failure.message}});
  ctx.reply = error_reply(result.failure.error,
                          "Upstream '" + upstream_name + "': " + result.failure.message);
  co_await write_local_reply(down, ctx, &pipeline, reply);
  co_return reply.keep_alive;
}

template asio::awaitable<bool> route_and_relay(UpstreamPool&, const UpstreamSlots&, RouterServices,
                                               const Pipeline&, RequestContext&, beast::tcp_stream&,
                                               DownstreamReply);
template asio::awaitable<bool> route_and_relay(UpstreamPool&, const UpstreamSlots&, RouterServices,
                                               const Pipeline&, RequestContext&, TlsStream&,
                                               DownstreamReply);

}  // namespace llmgw::net
