#pragma once
// One concern of request handling. Stages run in a fixed order on the request path, modelled on
// Envoy's HTTP filter chain: each either lets the request proceed or answers it (ctx.reply). On the
// way back every stage sees the response headers and body pieces (as views: nothing is copied) and
// finally the completed request. Adding a stage means one new class and one line in
// build_pipeline(); the other stages do not change.
#include <ostream>  // first: Boost 1.81 core/detail/string_view.hpp needs it but does not include it

#include <boost/asio/awaitable.hpp>
#include <string_view>

#include "llm_gateway/pipeline/context.hpp"

namespace llmgw {

// wait: only from on_request, when the stage must wait for something (a shared rate-limit store):
// the pipeline then awaits on_request_async, so only such stages cost a coroutine frame.
enum class Verdict { proceed, respond, wait };

class Stage {
 public:
  virtual ~Stage() = default;
  virtual std::string_view name() const = 0;

  // Admission on the request header alone, before any of the body is read (or 100 Continue
  // sent): authentication, allow-lists on the path's deployment, concurrency. Synchronous: a
  // stage that must wait does so in on_request. A request refused here is answered without its
  // body being read, so an unauthenticated client cannot make the gateway hold a body.
  virtual Verdict on_request_headers(RequestContext&) { return Verdict::proceed; }

  // Request path, once the whole body is here (ctx.body). Synchronous; a stage that must wait
  // (without blocking its I/O thread) returns Verdict::wait and does the rest in
  // on_request_async, which answers proceed or respond.
  virtual Verdict on_request(RequestContext&) { return Verdict::proceed; }
  virtual boost::asio::awaitable<Verdict> on_request_async(RequestContext&) {
    co_return Verdict::proceed;
  }

  // Response path: the response's fields as they arrived (the upstream's; for a reply the
  // gateway makes, its own), then each body piece. A stage adds fields of its own to the
  // client's head through ctx.added_response_fields.
  virtual void on_response_headers(RequestContext&, unsigned /*status*/, const HeaderList&) {}
  virtual void on_response_body(RequestContext&, std::string_view /*piece*/) {}
  // Only stages that say so get on_response_body: the others cost nothing per piece.
  virtual bool wants_response_body() const { return false; }

  // The whole response has been read (or made), and its last bytes are about to be written to
  // the client: settle what the request cost here (usage, limits), so that a client that sends
  // its next request the moment this one ends already sees it settled. Not called when the
  // response was cut.
  virtual void on_response_end(RequestContext&) {}

  // Always called once the response is finished (or the client went away), local replies too.
  virtual void on_complete(RequestContext&) {}
};

}  // namespace llmgw
