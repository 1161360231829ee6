#pragma once
// `llm-gateway --healthcheck URL`: one HTTP GET for container health checks, so the runtime image
// needs neither a shell nor curl.
#include <chrono>
#include <string>

namespace llmgw::net {

struct HealthcheckResult {
  bool healthy = false;
  std::string problem;  // one line when not healthy: what failed, never a header value
};

// GETs an http:// or https:// URL once and reads only the response head: healthy when the status
// is 2xx. For https:// (a TLS listener) the certificate is not verified: the check is about this
// process answering, on an address its certificate usually does not name.
// Everything (resolve, connect, request, response head) must finish within `timeout`.
HealthcheckResult healthcheck(const std::string& url, std::chrono::milliseconds timeout);

}  // namespace llmgw::net
