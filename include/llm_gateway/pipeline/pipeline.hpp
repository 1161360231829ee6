#pragma once
#include <memory>
#include <vector>

#include "llm_gateway/observability/access_log.hpp"
#include "llm_gateway/observability/metrics.hpp"
#include "llm_gateway/pipeline/stage.hpp"
#include "llm_gateway/ratelimit/store.hpp"

namespace llmgw {

class Pipeline {
 public:
  explicit Pipeline(std::vector<std::unique_ptr<Stage>> stages) : stages_(std::move(stages)) {
    // Response order (reverse), and only the stages that read body pieces.
    for (auto it = stages_.rbegin(); it != stages_.rend(); ++it) {
      if ((*it)->wants_response_body()) body_readers_.push_back(it->get());
    }
  }

  // Header admission: runs every stage's on_request_headers in order until one answers.
  Verdict on_request_headers(RequestContext& ctx) const;
  // Runs the request-path stages in order until one answers (the header admission first, when
  // the caller has not run it yet).
  boost::asio::awaitable<Verdict> on_request(RequestContext& ctx) const;
  void on_response_headers(RequestContext& ctx, unsigned status, const HeaderList& headers) const;
  void on_response_body(RequestContext& ctx, std::string_view piece) const;
  void on_response_end(RequestContext& ctx) const;
  void on_complete(RequestContext& ctx) const;

  const std::vector<std::unique_ptr<Stage>>& stages() const { return stages_; }

 private:
  std::vector<std::unique_ptr<Stage>> stages_;
  std::vector<Stage*> body_readers_;
};

// What stages need from outside the pipeline (made by the caller, which may do I/O).
// State that outlives a configuration snapshot is made once per process and handed to every
// snapshot here; it is keyed by name (key names), never by position in a configuration.
struct PipelineServices {
  std::shared_ptr<ratelimit::CounterStore> counter_store;       // null: a MemoryStore is made
  std::shared_ptr<ratelimit::ConcurrencyCounters> concurrency;  // null: made
  std::shared_ptr<observability::Metrics> metrics;              // null: no metrics stage
  std::shared_ptr<observability::AccessLogWriter> access_log;   // null: no access log stage
};

// The gateway's stages, request path in this order:
//   metrics -> access_log -> authenticate -> parse -> authorize -> models -> route
//   -> rate_limit -> account
// The router (src/net/router.cpp, its decisions in routing/attempt_plan.hpp) then runs the
// upstream attempts: pick a target, translate for it, connect, send, read the head, decide, and
// commit and relay only the attempt it keeps. The
// response path (headers, body pieces, completion) visits the stages in reverse order, as
// Envoy's encoder filters do: account reads usage before rate_limit corrects its reservation,
// and metrics and the access log see everything the others learned.
Pipeline build_pipeline(const config::Config& cfg, const PipelineServices& services);

// An immutable configuration together with the pipeline built from it. Requests hold a
// shared_ptr to the snapshot they started on, so a new snapshot can be swapped in at any time.
struct Snapshot {
  std::shared_ptr<const config::Config> config;
  Pipeline pipeline;
};

std::shared_ptr<const Snapshot> make_snapshot(std::shared_ptr<const config::Config> cfg,
                                              PipelineServices services = {});

}  // namespace llmgw
