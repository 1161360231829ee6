#pragma once
// ${VAR} and ${VAR:-default} substitution in configuration scalars (Docker Compose semantics):
// applied to parsed scalar values only, never to raw YAML text, so a value cannot inject structure.
#include <functional>
#include <optional>
#include <string>
#include <string_view>

namespace llmgw::config {

using EnvLookup = std::function<std::optional<std::string>(const std::string& name)>;

// The process environment.
EnvLookup process_env();

struct ExpandResult {
  std::string value;
  std::string error;  // empty when the expansion succeeded
};

// `$${` is a literal `${`. `${VAR:-default}` uses default when VAR is unset or empty,
// `${VAR-default}` only when unset. An unset variable without a default is an error naming it.
ExpandResult expand_env(std::string_view text, const EnvLookup& env);

}  // namespace llmgw::config
