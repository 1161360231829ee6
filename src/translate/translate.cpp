#include "llm_gateway/translate/translate.hpp"

#include "llm_gateway/translate/json_scan.hpp"

#include <algorithm>
#include <array>
#include <boost/beast/core/string.hpp>
#include <cctype>
#include <charconv>

namespace llmgw {
using boost::beast::iequals;
namespace http = boost::beast::http;
using config::ApiStyle;
using config::Provider;

namespace {

// Fields the gateway itself owns on the upstream leg: credentials, framing and ids are set anew.
// (Beast knows the standard names by number; the others are compared by name, and only when the
// lengths match.)
bool replaced_by_gateway(const HeaderList::Field& field) {
  switch (field.name()) {
    case http::field::host:
    case http::field::content_length:
    case http::field::authorization:
    case http::field::expect:
    case http::field::accept_encoding: return true;
    default: break;
  }
  const std::string_view name = field.name_string();
  return iequals(name, "api-key") || iequals(name, "x-request-id") ||
         iequals(name, "x-ms-client-request-id");
}

// Appends the query to `out` ('?' first, when anything is appended) with every api-version
// parameter removed and `api_version` appended (if any).
void append_rewritten_query(std::string& out, std::string_view query,
                            const std::optional<std::string>& api_version) {
  const std::size_t start = out.size();
  const auto separator = [&] { out += out.size() == start ? '?' : '&'; };
  std::size_t pos = 0;
  while (pos <= query.size() && !query.empty()) {
    std::size_t amp = query.find('&', pos);
    if (amp == std::string_view::npos) amp = query.size();
    std::string_view param = query.substr(pos, amp - pos);
    std::string_view key = param.substr(0, param.find('='));
    // The gateway owns api-version: a client's copy in any case or encoding must not survive
    // beside it (an upstream might read the first one).
    const auto decoded = key.find('%') == std::string_view::npos ? std::optional<std::string>()
                                                                 : percent_decode(key);
    if (!param.empty() && !iequals(decoded ? std::string_view(*decoded) : key, "api-version")) {
      separator();
      out += param;
    }
    pos = amp + 1;
  }
  if (api_version) {
    separator();
    out += "api-version=";
    out += *api_version;
  }
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

namespace {

// RFC 9110 §7.6.1's connection-specific fields, by Beast's number for them (every one has one).
bool is_hop_by_hop(http::field field) {
  switch (field) {
    case http::field::connection:
    case http::field::keep_alive:
    case http::field::proxy_connection:
    case http::field::te:
    case http::field::trailer:
    case http::field::upgrade:
    case http::field::transfer_encoding:
    case http::field::proxy_authorization:
    case http::field::proxy_authenticate: return true;
    default: return false;
  }
}

}  // namespace

bool is_hop_by_hop(std::string_view name) {
  return is_hop_by_hop(http::string_to_field(name));
}

HopByHopRule::HopByHopRule(const HeaderList& message) {
  for (const auto& f : message) {
    if (f.name() != http::field::connection) continue;
    for_each_listed(f.value(),
                    [this](std::string_view name) { connection_names_.push_back(name); });
  }
}

bool HopByHopRule::operator()(const HeaderList::Field& field) const {
  if (is_hop_by_hop(field.name())) return true;
  const std::string_view name = field.name_string();
  for (const std::string_view listed : connection_names_) {
    if (iequals(listed, name)) return true;  // (compares lengths first)
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

std::optional<std::string> UpstreamRequest::value_of(std::string_view name) const {
  for (const auto& f : headers) {
    if (iequals(f.name, name)) return std::string(f.value_prefix) + std::string(f.value);
  }
  return std::nullopt;
}

std::size_t UpstreamRequest::count(std::string_view name) const {
  std::size_t n = 0;
  for (const auto& f : headers) n += iequals(f.name, name) ? 1 : 0;
  return n;
}

void render_upstream_head(const UpstreamRequest& request, std::size_t body_size, std::string& out) {
  constexpr std::string_view kCrLf = "\r\n";
  out.clear();
  out += http::to_string(request.method);
  out += ' ';
  out += request.target;
  out += " HTTP/1.1\r\n";
  for (const auto& f : request.headers) {
    out += f.name;
    out += ": ";
    out += f.value_prefix;
    out += f.value;
    out += kCrLf;
  }
  const http::verb m = request.method;
  if (body_size != 0 || m == http::verb::post || m == http::verb::put || m == http::verb::patch) {
    char digits[24];
    const auto end = std::to_chars(digits, digits + sizeof digits, body_size).ptr;
    out += "Content-Length: ";
    out.append(digits, end);
    out += kCrLf;
  }
  out += kCrLf;
}

UpstreamRequest translate(const InboundRequest& in, const config::Upstream& up, const Target& route,
                          std::string_view request_id) {
  const PathFacts& path = *in.path;
  const HeaderList& inbound = *in.headers;
  UpstreamRequest out;
  out.method = in.method;
  const bool azure = up.provider == Provider::azure;

  // Headers: end-to-end fields pass; credentials, framing, ids and hop-by-hop fields do not.
  // A Connection header may name further hop-by-hop fields.
  // Several Connection lines form one list (RFC 9110 §5.3).
  const HopByHopRule hop_by_hop(inbound);
  for (const auto& f : inbound) {
    if (hop_by_hop(f) || replaced_by_gateway(f)) continue;
    const std::string_view name = f.name_string();
    if (azure && (iequals(name, "openai-organization") || iequals(name, "openai-project")))
      continue;
    out.headers.push_back({name, f.value()});
  }
  out.headers.push_back({"Host", up.base.host_header});
  out.headers.push_back({"x-request-id", request_id});
  if (up.entra) {
    // Entra ID: the token the router got for this upstream, never an api-key (and never the
    // client's credential). Without one the router does not send the request at all.
    out.headers.push_back({"Authorization", in.upstream_token, "Bearer "});
  } else if (up.api_key) {
    if (azure) {
      out.headers.push_back({"api-key", *up.api_key});
    } else {
      out.headers.push_back({"Authorization", *up.api_key, "Bearer "});
    }
  } else {
    // No key of its own: the client's credential goes through (pass-through mode).
    if (auto a = inbound.find(http::field::authorization); a != inbound.end())
      out.headers.push_back({"Authorization", a->value()});
    if (azure) {
      if (auto k = inbound.find("api-key"); k != inbound.end())
        out.headers.push_back({"api-key", k->value()});
    }
  }
  if (azure) out.headers.push_back({"x-ms-client-request-id", request_id});

  const std::string& prefix = up.base.path_prefix;
  std::string& target = out.target;
  BodyEdits edits;
  if (in.add_stream_usage) set_include_usage(in, edits);
  if (!azure) {
    // OpenAI keeps its paths; the inbound /v1 prefix is optional, the upstream's is not.
    target.reserve(prefix.size() + 5 + path.op_path.size() + path.query.size());
    target = prefix;
    if (!prefix.ends_with("/v1")) target += "/v1";
    target += '/';
    target += path.op_path;
    if (path.format == InboundFormat::openai) {
      if (!path.query.empty()) {
        target += '?';
        target += path.query;
      }
    } else {
      // Azure-shaped inbound request: api-version means nothing to OpenAI, and the deployment
      // named in the path becomes the body's model.
      append_rewritten_query(target, path.query, std::nullopt);
      if (path.path_model) set_model(in, *path.path_model, edits);
    }
    out.body = edits.apply(in.body);
    return out;
  }

  const std::optional<std::string> version = api_version_for(up, path.endpoint);
  // Azure names deployments where OpenAI names models: in v1-style bodies, and in the bodies of
  // resource-level calls that name one (responses, assistants). Fine-tuning's model is a base
  // model, not a deployment, and stays as sent.
  const bool body_names_deployment =
      !route.deployment.empty() && path.endpoint != Endpoint::fine_tuning &&
      (path.deployment_scoped ? up.api_style == ApiStyle::v1 : in.body_facts->model.has_value());
  if (body_names_deployment) set_model(in, route.deployment, edits);
  // One allocation for the whole target in the common case (a deployment's name rarely needs
  // escaping, and then only a few bytes).
  target.reserve(prefix.size() + 21 + route.deployment.size() + 1 + path.op_path.size() +
                 path.query.size() + 2 + (version ? 12 + version->size() : 0));
  target = prefix;
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
  append_rewritten_query(target, path.query, version);
  out.body = edits.apply(in.body);
  return out;
}

}  // namespace llmgw
