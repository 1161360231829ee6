#include "llm_gateway/translate/translate.hpp"

#include "llm_gateway/translate/json_scan.hpp"

#include <algorithm>
#include <array>
#include <boost/beast/core/string.hpp>
#include <cctype>

namespace llmgw {
using boost::beast::iequals;
namespace http = boost::beast::http;
using config::ApiStyle;
using config::Provider;

namespace {

// True when the comma-separated `list` (a Connection header value) names `field`.
bool list_names(std::string_view list, std::string_view field) {
  while (!list.empty()) {
    std::size_t comma = list.find(',');
    std::string_view token = list.substr(0, comma);
    while (!token.empty() && (token.front() == ' ' || token.front() == '\t'))
      token.remove_prefix(1);
    while (!token.empty() && (token.back() == ' ' || token.back() == '\t')) token.remove_suffix(1);
    if (iequals(token, field)) return true;
    if (comma == std::string_view::npos) break;
    list.remove_prefix(comma + 1);
  }
  return false;
}

// Fields the gateway itself owns on the upstream leg: credentials, framing and ids are set anew.
bool replaced_by_gateway(std::string_view name) {
  static constexpr std::array<std::string_view, 8> kFields{
      "host",         "content-length", "authorization",          "api-key",
      "x-request-id", "expect",         "x-ms-client-request-id", "accept-encoding"};
  for (auto f : kFields) {
    if (iequals(name, f)) return true;
  }
  return false;
}

// Query string with every api-version parameter removed and `api_version` appended (if any).
std::string rewrite_query(std::string_view query, const std::optional<std::string>& api_version) {
  std::string out;
  std::size_t pos = 0;
  while (pos <= query.size() && !query.empty()) {
    std::size_t amp = query.find('&', pos);
    if (amp == std::string_view::npos) amp = query.size();
    std::string_view param = query.substr(pos, amp - pos);
    std::string_view key = param.substr(0, param.find('='));
    // The gateway owns api-version: a client's copy in any case or encoding must not survive
    // beside it (an upstream might read the first one).
    const auto decoded = percent_decode(key);
    if (!param.empty() && !iequals(decoded ? std::string_view(*decoded) : key, "api-version")) {
      if (!out.empty()) out += '&';
      out += param;
    }
    pos = amp + 1;
  }
  if (api_version) {
    if (!out.empty()) out += '&';
    out += "api-version=";
    out += *api_version;
  }
  return out;
}

std::string join_target(std::string path, const std::string& query) {
  if (!query.empty()) {
    path += '?';
    path += query;
  }
  return path;
}

// Body changes are splices at byte offsets found by the scanner: the rest of the body is copied
// once, never re-serialised.
struct Splice {
  std::size_t begin = 0;
  std::size_t end = 0;
  std::string text;
};

class BodyEdits {
 public:
  void add(std::size_t begin, std::size_t end, std::string text) {
    splices_.push_back({begin, end, std::move(text)});
  }
  std::optional<std::string> apply(std::string_view body) {
    if (splices_.empty()) return std::nullopt;
    std::sort(splices_.begin(), splices_.end(),
              [](const Splice& a, const Splice& b) { return a.begin < b.begin; });
    std::size_t size = body.size();
    for (const auto& s : splices_) size += s.text.size();
    std::string out;
    out.reserve(size);
    std::size_t pos = 0;
    for (const auto& s : splices_) {
      out.append(body.substr(pos, s.begin - pos));
      out.append(s.text);
      pos = s.end;
    }
    out.append(body.substr(pos));
    return out;
  }

 private:
  std::vector<Splice> splices_;
};

// Sets the body's model (JSON string, or multipart field value); inserts it into a JSON object
// that has none.
void set_model(const InboundRequest& in, std::string_view model, BodyEdits& edits) {
  const BodyFacts& facts = *in.body_facts;
  if (facts.model) {
    if (*facts.model == model) return;
    edits.add(facts.model_begin, facts.model_end,
              facts.kind == BodyKind::json ? json::encode_string(model) : std::string(model));
    return;
  }
  if (facts.kind != BodyKind::json || facts.object_end == std::string_view::npos) return;
  const std::size_t open = in.body.find('{');
  const std::size_t first = in.body.find_first_not_of(" \t\r\n", open + 1);
  const bool empty = first == std::string_view::npos || in.body[first] == '}';
  edits.add(open + 1, open + 1, "\"model\":" + json::encode_string(model) + (empty ? "" : ","));
}

// Makes stream_options.include_usage true, whatever the client sent.
void set_include_usage(const InboundRequest& in, BodyEdits& edits) {
  const BodyFacts& f = *in.body_facts;
  if (f.kind != BodyKind::json || f.object_end == std::string_view::npos) return;
  if (f.stream_options_begin == std::string_view::npos) {
    edits.add(f.object_end, f.object_end, ",\"stream_options\":{\"include_usage\":true}");
  } else if (!f.stream_options_is_object) {
    edits.add(f.stream_options_begin, f.stream_options_end, "{\"include_usage\":true}");
  } else if (f.include_usage_begin != std::string_view::npos) {
    edits.add(f.include_usage_begin, f.include_usage_end, "true");
  } else {
    const std::string_view so =
        in.body.substr(f.stream_options_begin, f.stream_options_end - f.stream_options_begin);
    const std::size_t first = so.find_first_not_of(" \t\r\n", 1);
    const bool empty = first == std::string_view::npos || so[first] == '}';
    edits.add(f.stream_options_begin + 1, f.stream_options_begin + 1,
              std::string("\"include_usage\":true") + (empty ? "" : ","));
  }
}

}  // namespace

bool is_hop_by_hop(std::string_view name) {
  static constexpr std::array<std::string_view, 9> kFields{
      "connection",        "keep-alive",          "proxy-connection",  "te", "trailer", "upgrade",
      "transfer-encoding", "proxy-authorization", "proxy-authenticate"};
  for (auto f : kFields) {
    if (iequals(name, f)) return true;
  }
  return false;
}

bool is_hop_by_hop(std::string_view name, const http::fields& message) {
  if (is_hop_by_hop(name)) return true;
  // Several Connection lines form one list (RFC 9110 §5.3).
  for (auto [it, end] = message.equal_range(http::field::connection); it != end; ++it) {
    if (list_names(it->value(), name)) return true;
  }
  return false;
}

std::optional<std::string> api_version_for(const config::Upstream& up, Endpoint endpoint) {
  if (auto it = up.api_versions.find(endpoint); it != up.api_versions.end()) return it->second;
  if (up.api_style == ApiStyle::v1) return up.api_version;
  // No GA dated api-version serves the Responses API; 2025-04-01-preview is the last dated one
  // (Azure OpenAI "API version lifecycle" and Responses API docs on learn.microsoft.com).
  if (endpoint == Endpoint::responses) return std::string("2025-04-01-preview");
  return up.api_version.value_or("2024-10-21");
}

bool upstream_accepts_stream_options(const config::Upstream& up, Endpoint endpoint) {
  if (up.provider == config::Provider::openai) return true;
  const std::optional<std::string> v = api_version_for(up, endpoint);
  if (!v) return up.api_style == config::ApiStyle::v1;
  if (*v == "v1" || *v == "preview" || *v == "latest") return true;
  return v->size() >= 10 && v->compare(0, 10, "2024-09-01") >= 0;
}

UpstreamRequest translate(const InboundRequest& in, const config::Upstream& up, const Target& route,
                          std::string_view request_id) {
  const PathFacts& path = *in.path;
  UpstreamRequest out;
  out.method = in.method;
  const bool azure = up.provider == Provider::azure;

  // Headers: end-to-end fields pass; credentials, framing, ids and hop-by-hop fields do not.
  // A Connection header may name further hop-by-hop fields.
  // Several Connection lines form one list (RFC 9110 §5.3).
  for (const auto& f : *in.headers) {
    const std::string_view name = f.name_string();
    if (is_hop_by_hop(name, *in.headers) || replaced_by_gateway(name)) continue;
    if (azure && (iequals(name, "openai-organization") || iequals(name, "openai-project")))
      continue;
    out.headers.insert(f.name(), name, f.value());
  }
  out.headers.set(http::field::host, up.base.host_header);
  out.headers.set("x-request-id", request_id);
  if (up.entra) {
    // Entra ID: the token the router got for this upstream, never an api-key (and never the
    // client's credential). Without one the router does not send the request at all.
    out.headers.set(http::field::authorization, "Bearer " + std::string(in.upstream_token));
  } else if (up.api_key) {
    if (azure) {
      out.headers.set("api-key", *up.api_key);
    } else {
      out.headers.set(http::field::authorization, "Bearer " + *up.api_key);
    }
  } else {
    // No key of its own: the client's credential goes through (pass-through mode).
    if (auto a = in.headers->find(http::field::authorization); a != in.headers->end())
      out.headers.set(http::field::authorization, a->value());
    if (azure) {
      if (auto k = in.headers->find("api-key"); k != in.headers->end())
        out.headers.set("api-key", k->value());
    }
  }
  if (azure) out.headers.set("x-ms-client-request-id", request_id);

  const std::string& prefix = up.base.path_prefix;
  BodyEdits edits;
  if (in.add_stream_usage) set_include_usage(in, edits);
  if (!azure) {
    // OpenAI keeps its paths; the inbound /v1 prefix is optional, the upstream's is not.
    std::string target = prefix;
    if (!prefix.ends_with("/v1")) target += "/v1";
    target += '/';
    target += path.op_path;
    if (path.format == InboundFormat::openai) {
      out.target = join_target(std::move(target), std::string(path.query));
    } else {
      // Azure-shaped inbound request: api-version means nothing to OpenAI, and the deployment
      // named in the path becomes the body's model.
      out.target = join_target(std::move(target), rewrite_query(path.query, std::nullopt));
      if (path.path_model) set_model(in, *path.path_model, edits);
    }
    out.body = edits.apply(in.body);
    return out;
  }

  const std::optional<std::string> version = api_version_for(up, path.endpoint);
  const std::string query = rewrite_query(path.query, version);
  std::string target = prefix;
  // Azure names deployments where OpenAI names models: in v1-style bodies, and in the bodies of
  // resource-level calls that name one (responses, assistants). Fine-tuning's model is a base
  // model, not a deployment, and stays as sent.
  const bool body_names_deployment =
      !route.deployment.empty() && path.endpoint != Endpoint::fine_tuning &&
      (path.deployment_scoped ? up.api_style == ApiStyle::v1 : in.body_facts->model.has_value());
  if (body_names_deployment) set_model(in, route.deployment, edits);
  if (up.api_style == ApiStyle::v1) {
    target += "/openai/v1/";
    target += path.op_path;
  } else if (path.deployment_scoped) {
    target += "/openai/deployments/";
    target += percent_encode_segment(route.deployment);
    target += '/';
    target += path.op_path;
  } else {
    target += "/openai/";
    target += path.op_path;
  }
  out.body = edits.apply(in.body);
  out.target = join_target(std::move(target), query);
  return out;
}

}  // namespace llmgw
