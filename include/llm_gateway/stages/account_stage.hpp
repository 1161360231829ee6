#pragma once
#include "llm_gateway/pipeline/stage.hpp"

namespace llmgw {

// Account: learns what a request cost as the response passes — usage (tokens) and
// finish_reason — from JSON bodies and from every event of a stream, without delaying or
// altering the bytes. On chat/completions and completions streams it asks for the stream's usage
// (stream_options.include_usage) when the client did not (the router adds it for each target
// whose upstream accepts it), and then removes that extra usage chunk from what the client
// receives.
class AccountStage final : public Stage {
 public:
  std::string_view name() const override { return "account"; }
  Verdict on_request(RequestContext& ctx) override;
  void on_response_headers(RequestContext& ctx, unsigned status,
                           const HeaderList& headers) override;
  void on_response_body(RequestContext& ctx, std::string_view piece) override;
  bool wants_response_body() const override { return true; }
  void on_response_end(RequestContext& ctx) override;
};

}  // namespace llmgw
