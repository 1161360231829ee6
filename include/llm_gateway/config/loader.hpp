#pragma once
// Loads and validates the YAML configuration. Every problem is reported with its position so
// `--check-config` can print `FILE:LINE:COL: message` lines; nothing is silently ignored.
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "llm_gateway/config/config.hpp"
#include "llm_gateway/config/env_expand.hpp"

namespace llmgw::config {

struct Problem {
  int line = 0;    // 1-based
  int column = 0;  // 1-based
  std::string message;
};

struct LoadResult {
  std::shared_ptr<const Config> config;  // null when problems is not empty
  std::vector<Problem> problems;
};

LoadResult load_config_text(std::string_view yaml, std::string source_name, const EnvLookup& env);
LoadResult load_config_file(const std::string& path, const EnvLookup& env);

// The configuration used when the gateway starts without --config: Azure when
// AZURE_OPENAI_ENDPOINT and AZURE_OPENAI_API_KEY are set, else pass-through to api.openai.com.
std::string embedded_default_yaml(const EnvLookup& env);

std::string format_problem(const std::string& source, const Problem& p);

// The settings a running gateway cannot change (its listeners, its thread count, the rate-limit
// store, the access log's destination) that differ between the running configuration and a
// reloaded one, by their YAML names. A reload keeps the running values of these until restart.
std::vector<std::string> settings_needing_restart(const Config& running, const Config& next);

}  // namespace llmgw::config
