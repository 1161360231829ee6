#pragma once
// Small helpers shared by the unit tests: a fake environment and a "load this YAML or fail" helper.
#include <gtest/gtest.h>

#include <map>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <utility>

#include "llm_gateway/config/loader.hpp"
#include "llm_gateway/routing/attempt_plan.hpp"

namespace llmgw::test {

// An EnvLookup over a fixed map: only the listed variables are set (an empty value is "set").
inline config::EnvLookup fake_env(std::map<std::string, std::string> vars = {}) {
  return [vars = std::move(vars)](const std::string& name) -> std::optional<std::string> {
    if (auto it = vars.find(name); it != vars.end()) return it->second;
    return std::nullopt;
  };
}

// All problems of a load result, one `FILE:LINE:COL: message` per line, for failure messages.
inline std::string problems_text(const config::LoadResult& r) {
  std::string out;
  for (const auto& p : r.problems) out += config::format_problem("test.yaml", p) + "\n";
  return out;
}

// Loads `yaml`, expecting no problems; the returned config is null when loading failed.
inline std::shared_ptr<const config::Config> load_ok(std::string_view yaml,
                                                     const config::EnvLookup& env = fake_env()) {
  config::LoadResult r = config::load_config_text(yaml, "test.yaml", env);
  EXPECT_TRUE(r.problems.empty()) << "unexpected problems:\n" << problems_text(r);
  EXPECT_NE(r.config, nullptr);
  return r.config;
}

// What the router's first attempt sends upstream for a request the stages admitted: the target
// its plan picks first, translated (the router's own first two steps, without the I/O).
inline UpstreamRequest first_attempt_request(RequestContext& ctx) {
  EXPECT_TRUE(ctx.route) << "the request was not routed";
  if (!ctx.route) return {};
  AttemptPlan plan(*ctx.config, ctx, nullptr, Clock::now());
  plan.next_step(Clock::now());
  const Target& target = plan.pick();
  return translate_for_target(ctx, ctx.config->upstreams[target.upstream], target);
}

}  // namespace llmgw::test
