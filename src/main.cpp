// llm-gateway: command line. Loads the configuration (a file, or the embedded default), then hands
// an immutable snapshot to the network layer.
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <iostream>
#include <string>
#include <utility>
#include <vector>

#include "llm_gateway/config/loader.hpp"
#include "llm_gateway/net/gateway.hpp"
#include "llm_gateway/net/healthcheck.hpp"
#include "llm_gateway/net/listener_tls.hpp"
#include "llm_gateway/net/redis.hpp"
#include "llm_gateway/observability/log.hpp"

namespace {

constexpr const char* kUsage =
    "Usage: llm-gateway [--config FILE]\n"
    "       llm-gateway --check-config FILE   (or --check-config --config FILE)\n"
    "       llm-gateway --healthcheck URL\n"
    "       llm-gateway --version | --help\n"
    "\n"
    "An OpenAI-compatible gateway to Azure OpenAI and OpenAI.\n"
    "\n"
    "  --config FILE        run with the YAML configuration FILE (also: env LLM_GATEWAY_CONFIG)\n"
    "  --check-config FILE  validate FILE, print each problem as FILE:LINE:COL: message,\n"
    "                       exit 0 when valid and 1 when not\n"
    "  --healthcheck URL    GET the http:// URL once (e.g. http://127.0.0.1:8080/healthz): exit 0\n"
    "                       on a 2xx within 3 s, else print one line and exit 1 (container\n"
    "                       health checks without a shell or curl)\n"
    "  --version            print the version\n"
    "  --help               print this help\n"
    "\n"
    "Without a configuration the gateway listens on 127.0.0.1:8080 (env LLM_GATEWAY_LISTEN) and\n"
    "routes every model to Azure OpenAI when AZURE_OPENAI_ENDPOINT and AZURE_OPENAI_API_KEY are\n"
    "set, else passes requests through to https://api.openai.com with the client's own key.\n"
    "SIGTERM/SIGINT drain in-flight requests (server.drain_timeout_ms), then exit 0.\n";

int check_config(const std::string& path) {
  auto result = llmgw::config::load_config_file(path, llmgw::config::process_env());
  for (const auto& p : result.problems) std::cout << llmgw::config::format_problem(path, p) << "\n";
  if (!result.problems.empty()) return 1;
  // Whether a listener's certificate and key load and fit together is known only by loading them.
  const auto& cfg = *result.config;
  std::vector<std::pair<const llmgw::config::ListenerTls*, const char*>> listeners;
  if (cfg.server.tls) listeners.emplace_back(&*cfg.server.tls, "server.tls");
  if (cfg.admin && cfg.admin->tls) listeners.emplace_back(&*cfg.admin->tls, "admin.tls");
  bool usable = true;
  for (const auto& [tls, where] : listeners) {
    try {
      llmgw::net::make_listener_tls_context(*tls, where);
    } catch (const std::exception& e) {
      std::cout << path << ": " << e.what() << "\n";
      usable = false;
    }
  }
  if (!usable) return 1;
  std::cout << path << ": configuration is valid\n";
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  std::string config_path;
  if (const char* env = std::getenv("LLM_GATEWAY_CONFIG"); env && *env) config_path = env;
  bool check = false;
  for (int i = 1; i < argc; ++i) {
    const std::string arg = argv[i];
    if (arg == "--version") {
      std::cout << "llm-gateway " << LLMGW_VERSION << "\n";
      return 0;
    }
    if (arg == "--help" || arg == "-h") {
      std::cout << kUsage;
      return 0;
    }
    if (arg == "--healthcheck" && i + 1 < argc) {
      // Ahead of any configuration: the check must not depend on the files or env of the
      // process it probes.
      const std::string url = argv[i + 1];
      const auto result = llmgw::net::healthcheck(url, std::chrono::seconds(3));
      if (result.healthy) return 0;
      std::cerr << "llm-gateway: healthcheck " << url << ": " << result.problem << "\n";
      return 1;
    }
    if (arg == "--check-config") {
      // `--check-config FILE`, or `--check-config` with the file from --config or the env.
      check = true;
      if (i + 1 < argc && std::strncmp(argv[i + 1], "--", 2) != 0) config_path = argv[++i];
      continue;
    }
    if (arg == "--config" && i + 1 < argc) {
      config_path = argv[++i];
      continue;
    }
    std::cerr << "llm-gateway: unknown or incomplete argument '" << arg << "'\n\n" << kUsage;
    return 2;
  }
  if (check) {
    if (config_path.empty()) {
      std::cerr << "llm-gateway: --check-config needs a FILE (or --config FILE)\n\n" << kUsage;
      return 2;
    }
    return check_config(config_path);
  }

  const auto env = llmgw::config::process_env();
  llmgw::config::LoadResult loaded;
  std::string source;
  if (config_path.empty()) {
    source = "<embedded default>";
    loaded =
        llmgw::config::load_config_text(llmgw::config::embedded_default_yaml(env), source, env);
  } else {
    source = config_path;
    loaded = llmgw::config::load_config_file(config_path, env);
  }
  if (!loaded.problems.empty()) {
    for (const auto& p : loaded.problems)
      std::cerr << llmgw::config::format_problem(source, p) << "\n";
    return 1;
  }
  const auto& cfg = *loaded.config;
  llmgw::log::set_min_level(static_cast<llmgw::log::Level>(cfg.logging.level));
  llmgw::PipelineServices services;
  // Made once for the process: every snapshot shares them (limits survive a new snapshot).
  if (cfg.rate_limits.store == llmgw::config::LimitStore::redis && !cfg.keys.empty()) {
    llmgw::ratelimit::LeasePolicy lease;
    switch (cfg.rate_limits.redis_lease) {
      case llmgw::config::RateLimitSettings::Lease::automatic:
        lease.mode = llmgw::ratelimit::LeasePolicy::Mode::automatic;
        break;
      case llmgw::config::RateLimitSettings::Lease::off:
        lease.mode = llmgw::ratelimit::LeasePolicy::Mode::off;
        break;
      case llmgw::config::RateLimitSettings::Lease::fraction:
        lease.mode = llmgw::ratelimit::LeasePolicy::Mode::fraction;
        lease.fraction = cfg.rate_limits.redis_lease_fraction;
        break;
    }
    services.counter_store = llmgw::net::make_redis_store(*cfg.rate_limits.redis, lease);
  } else {
    services.counter_store =
        std::make_shared<llmgw::ratelimit::MemoryStore>(llmgw::ratelimit::system_now_ms());
  }
  services.concurrency = std::make_shared<llmgw::ratelimit::ConcurrencyCounters>();
  try {
    services.metrics = std::make_shared<llmgw::observability::Metrics>(
        cfg, llmgw::net::worker_count(cfg), LLMGW_VERSION);
  } catch (const std::exception& e) {
    std::cerr << source << ": " << e.what() << "\n";
    return 1;
  }
  if (cfg.logging.access_log != "off") {
    services.access_log =
        std::make_shared<llmgw::observability::AccessLogWriter>(cfg.logging.access_log);
    if (!services.access_log->ok()) return 1;
    services.access_log->count_dropped_in(&services.metrics->access_log_dropped());
  }
  llmgw::net::GatewayServices net_services{services.metrics, services.access_log,
                                           std::make_shared<llmgw::BackendRegistry>()};
  // With a shared store, a 429's cooldown is shared by every replica too (also for failover
  // routes a reload adds later).
  std::shared_ptr<void> cooldown_share;
  if (cfg.rate_limits.store == llmgw::config::LimitStore::redis && cfg.rate_limits.redis) {
    cooldown_share =
        llmgw::net::share_cooldowns_through_redis(*cfg.rate_limits.redis, net_services.backends);
  }
  if (!config_path.empty()) {
    // A reload builds its snapshot with the same process-wide services: limiter windows by key
    // name, metric series, the access log.
    net_services.config_file = config_path;
    net_services.reload = [services, env, config_path](const std::string& text) {
      llmgw::net::ReloadOutcome out;
      llmgw::config::LoadResult next = llmgw::config::load_config_text(text, config_path, env);
      for (const auto& p : next.problems)
        out.problems.push_back(llmgw::config::format_problem(config_path, p));
      if (next.problems.empty())
        out.snapshot = llmgw::make_snapshot(std::move(next.config), services);
      return out;
    };
  }
  net_services.stop_service_threads = [store = services.counter_store] { store->stop(); };
  return llmgw::net::run_gateway(llmgw::make_snapshot(std::move(loaded.config), services),
                                 std::move(net_services));
}
