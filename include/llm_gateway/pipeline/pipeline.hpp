#pragma once
#include <memory>
#include <vector>

#include "llm_gateway/pipeline/stage.hpp"

namespace llmgw {

class Pipeline {
 public:
  explicit Pipeline(std::vector<std::unique_ptr<Stage>> stages) : stages_(std::move(stages)) {}

  // Runs the request-path stages in order until one answers.
  boost::asio::awaitable<Verdict> on_request(RequestContext& ctx) const;
  void on_response_headers(RequestContext& ctx, unsigned status,
                           boost::beast::http::fields& headers) const;
  void on_response_body(RequestContext& ctx, std::string_view piece) const;
  void on_complete(RequestContext& ctx) const;

  const std::vector<std::unique_ptr<Stage>>& stages() const { return stages_; }

 private:
  std::vector<std::unique_ptr<Stage>> stages_;
};

// The gateway's stages in order: parse -> models -> route -> translate. (Forward & relay is the
// terminal step the network layer performs after the last stage.)
Pipeline build_pipeline(const config::Config& cfg);

// An immutable configuration together with the pipeline built from it. Requests hold a
// shared_ptr to the snapshot they started on, so a new snapshot can be swapped in at any time.
struct Snapshot {
  std::shared_ptr<const config::Config> config;
  Pipeline pipeline;
};

std::shared_ptr<const Snapshot> make_snapshot(std::shared_ptr<const config::Config> cfg);

}  // namespace llmgw
