#pragma once
// Everything one request carries through the pipeline. The session owns the inbound message and
// the context only views it; each stage reads what earlier stages decided and adds its own part.
#include <ostream>  // first: Boost 1.81 core/detail/string_view.hpp needs it but does not include it
#include <boost/beast/http/fields.hpp>
#include <boost/beast/http/verb.hpp>
#include <chrono>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

#include "llm_gateway/config/config.hpp"
#include "llm_gateway/pipeline/local_reply.hpp"
#include "llm_gateway/routing/router.hpp"
#include "llm_gateway/translate/request_facts.hpp"
#include "llm_gateway/translate/translate.hpp"

namespace llmgw {

using Clock = std::chrono::steady_clock;

struct RequestContext {
  // accept & parse (set by the session)
  const config::Config* config = nullptr;  // the snapshot this request runs on
  std::string request_id;
  std::string peer;  // client address
  Clock::time_point received{};
  boost::beast::http::verb method = boost::beast::http::verb::get;
  std::string_view target;
  const boost::beast::http::fields* headers = nullptr;
  std::string_view body;
  std::uint64_t bytes_in = 0;

  // parse stage
  PathFacts path;
  BodyFacts body_facts;
  std::optional<std::string> model;  // the model the request names (path or body)

  // route stage
  std::optional<RouteDecision> route;
  const config::Upstream* upstream = nullptr;

  // translate stage
  std::optional<UpstreamRequest> upstream_request;

  // Set by any stage that answers the request itself; the pipeline stops there.
  std::optional<LocalReply> reply;

  // forward & relay (set by the relay, read by accounting stages)
  unsigned status = 0;
  bool streamed = false;           // the response was relayed as a stream (SSE or chunked)
  std::uint64_t bytes_out = 0;
  std::string error_code;          // the gateway's error code when it made the response
  std::optional<Clock::time_point> upstream_first_byte;
  bool client_aborted = false;
};

}  // namespace llmgw
