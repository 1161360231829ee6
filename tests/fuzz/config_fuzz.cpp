// Configuration loading: YAML text through yaml-cpp and the loader's validation, with ${VAR}
// expansion from the environment. The file is the operator's, but it is also what
// --check-config is pointed at and what a mounted secret or templated value can put bytes into,
// so no text may crash the loader. The input is the YAML text.
//
// The loader reports every rejection as a Problem (yaml-cpp's exceptions included: it catches
// YAML::Exception itself) and documents no exception; so nothing is caught here, and any
// exception that escapes reaches libFuzzer as a crash (an uncaught exception aborts).
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <string>
#include <string_view>

#include "fuzz_support.hpp"
#include "llm_gateway/config/env_expand.hpp"
#include "llm_gateway/config/loader.hpp"

namespace {

using llmgw::fuzz::require;
namespace config = llmgw::config;

// The variables the seed configurations use, one set empty, so both ${VAR:-default} and
// ${VAR-default} branches are reachable; every other name is unset.
const config::EnvLookup& fuzz_env() {
  static const config::EnvLookup env = [] {
    ::setenv("LLM_GATEWAY_LISTEN", "127.0.0.1:8080", 1);
    ::setenv("AZURE_OPENAI_ENDPOINT", "https://fuzz.openai.azure.com", 1);
    ::setenv("AZURE_OPENAI_API_KEY", "azure-fuzz-key", 1);
    ::setenv("CLIENT_KEY", "sk-client-fuzz", 1);
    ::setenv("KEY_A", "sk-a", 1);
    ::setenv("TPM", "1000", 1);
    ::setenv("HOST", "127.0.0.1", 1);
    ::setenv("EMPTY", "", 1);
    ::unsetenv("NOPE");
    return config::process_env();
  }();
  return env;
}

void check_expand(std::string_view text, const config::EnvLookup& env) {
  const config::ExpandResult r = config::expand_env(text, env);
  if (text.find('$') == std::string_view::npos) {
    require(r.error.empty() && r.value == text, "text without '$' expands to itself");
  }
}

void check_load(std::string_view yaml, const config::EnvLookup& env) {
  const config::LoadResult r = config::load_config_text(yaml, "fuzz.yaml", env);
  require((r.config == nullptr) == !r.problems.empty(), "a config or problems, never both");
  for (const config::Problem& p : r.problems) {
    require(p.line >= 1 && p.column >= 1, "problem positions are 1-based");
    (void)config::format_problem("fuzz.yaml", p);
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const std::string_view text = llmgw::fuzz::as_text(data, size);
  const config::EnvLookup& env = fuzz_env();
  check_expand(text, env);
  check_load(text, env);
  return 0;
}
