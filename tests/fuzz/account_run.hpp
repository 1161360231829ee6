#pragma once
// The account stage on one upstream response, driven as the relay drives it (see
// tests/unit/accounting_test.cpp): headers, body pieces (through the body rewriter when the stage
// installs one), end of response.
#include <ostream>  // first: Boost 1.81 core/detail/string_view.hpp needs it but does not include it

#include <boost/beast/http/fields.hpp>
#include <string>
#include <string_view>
#include <vector>

#include "llm_gateway/pipeline/context.hpp"
#include "llm_gateway/stages/account_stage.hpp"

namespace llmgw::fuzz {

struct AccountRun {
  AccountStage stage;
  RequestContext ctx;
  std::string delivered;  // what the client would get (when asked to record it)

  // request_stream_usage: the gateway asked the upstream for stream usage on the client's behalf.
  AccountRun(std::string_view content_type, unsigned status, bool request_stream_usage,
             const std::vector<std::string_view>& pieces, bool record_delivered = true) {
    ctx.request_stream_usage = request_stream_usage;
    ctx.upstream_status = status;
    ctx.status = status;
    ctx.streamed = content_type.starts_with("text/event-stream");
    HeaderList h;
    h.set(boost::beast::http::field::content_type, content_type);
    stage.on_response_headers(ctx, status, h);
    std::vector<std::string_view> out;
    for (std::size_t i = 0; i < pieces.size(); ++i) {
      stage.on_response_body(ctx, pieces[i]);
      if (ctx.body_rewriter) {
        ctx.body_rewriter->rewrite(pieces[i], i + 1 == pieces.size(), out);
        if (record_delivered) {
          for (std::string_view v : out) delivered.append(v);
        }
      } else if (record_delivered) {
        delivered.append(pieces[i]);
      }
    }
    stage.on_response_end(ctx);
  }
};

}  // namespace llmgw::fuzz
