#pragma once
// The network layer's one entry point: runs listeners, sessions and the upstream relay on the
// given snapshot until SIGTERM/SIGINT has drained it. Returns the process exit code.
#include <memory>

#include "llm_gateway/pipeline/pipeline.hpp"

namespace llmgw::net {

int run_gateway(std::shared_ptr<const Snapshot> snapshot);

}  // namespace llmgw::net
