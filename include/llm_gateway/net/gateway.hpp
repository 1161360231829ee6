#pragma once
// The network layer's one entry point: runs listeners, sessions and the upstream relay on the
// given snapshot until SIGTERM/SIGINT has drained it. Returns the process exit code.
#include <memory>

#include "llm_gateway/pipeline/pipeline.hpp"
#include "llm_gateway/routing/backends.hpp"

namespace llmgw::net {

struct GatewayServices {
  std::shared_ptr<observability::Metrics> metrics;             // served at /metrics; may be null
  std::shared_ptr<observability::AccessLogWriter> access_log;  // reopened on SIGUSR1; may be null
  // What is learned about backends (cooldowns, quota, ejections), for every snapshot; made when
  // null.
  std::shared_ptr<BackendRegistry> backends;
};

// The number of I/O threads a configuration asks for (server.threads, 0 = hardware threads).
unsigned worker_count(const config::Config& cfg);

int run_gateway(std::shared_ptr<const Snapshot> snapshot, GatewayServices services = {});

}  // namespace llmgw::net
