#pragma once
// The network layer's one entry point: runs listeners, sessions and the upstream relay on the
// given snapshot until SIGTERM/SIGINT has drained it. Returns the process exit code.
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "llm_gateway/pipeline/pipeline.hpp"
#include "llm_gateway/routing/backends.hpp"

namespace llmgw::net {

// What a reload made of the configuration file's new text: a snapshot, or the problems found.
struct ReloadOutcome {
  std::shared_ptr<const Snapshot> snapshot;  // null when the text is not a valid configuration
  std::vector<std::string> problems;         // "FILE:LINE:COL: message"
};

struct GatewayServices {
  std::shared_ptr<observability::Metrics> metrics;             // served at /metrics; may be null
  std::shared_ptr<observability::AccessLogWriter> access_log;  // reopened on SIGUSR1; may be null
  // What is learned about backends (cooldowns, quota, ejections), for every snapshot; made when
  // null.
  std::shared_ptr<BackendRegistry> backends;
  // Reload (SIGHUP, or the file's content changed): the configuration file ("" for the embedded
  // default: nothing to reload), and how a snapshot is made from its text with the process's
  // shared services (limiter windows, metrics, access log). Runs on the reloader's own thread.
  std::string config_file;
  std::function<ReloadOutcome(const std::string& text)> reload;
  // Called once the I/O threads have stopped, before their contexts are destroyed: stops the
  // threads of shared services (the Redis limiter's) that may still hold work on them.
  std::function<void()> stop_service_threads;
};

// The number of I/O threads a configuration asks for (server.threads, 0 = hardware threads).
unsigned worker_count(const config::Config& cfg);

int run_gateway(std::shared_ptr<const Snapshot> snapshot, GatewayServices services = {});

}  // namespace llmgw::net
