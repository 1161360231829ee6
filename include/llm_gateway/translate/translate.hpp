#pragma once
// Translation: a pure function from an inbound OpenAI- or Azure-shaped request and its route to
// the request the upstream gets (target, headers, and a new body only when one field must change).
// No I/O; the unit tests cover every endpoint row of the README's table.
#include <ostream>  // first: Boost 1.81 core/detail/string_view.hpp needs it but does not include it

#include <boost/beast/http/verb.hpp>
#include <boost/container/small_vector.hpp>
#include <optional>
#include <string>
#include <string_view>

#include "llm_gateway/config/config.hpp"
#include "llm_gateway/pipeline/header_list.hpp"
#include "llm_gateway/routing/router.hpp"
#include "llm_gateway/translate/request_facts.hpp"

namespace llmgw {

struct InboundRequest {
  boost::beast::http::verb method = boost::beast::http::verb::get;
  std::string_view target;
  const HeaderList* headers = nullptr;
  std::string_view body;
  const PathFacts* path = nullptr;
  const BodyFacts* body_facts = nullptr;
  // Add stream_options.include_usage = true (the accounting stage wants the stream's usage).
  bool add_stream_usage = false;
  // auth.type entra: the upstream's current access token.
  std::string_view upstream_token;
};

// One field of the upstream request. Name and value are views, never copies: of the inbound
// request's fields, the configuration snapshot, the request id or the attempt's token, all of
// which outlive the attempt. `value_prefix` (a literal, e.g. "Bearer ") goes before the value.
struct UpstreamField {
  std::string_view name;
  std::string_view value;
  std::string_view value_prefix = {};
};

struct UpstreamRequest {
  boost::beast::http::verb method = boost::beast::http::verb::get;
  std::string target;  // origin-form: path and query
  // In the order they go out; Host included. Content-Length is added when the head is rendered.
  boost::container::small_vector<UpstreamField, 16> headers;
  std::optional<std::string> body;  // set only when the body had to change

  // The first field named `name` (ASCII case-insensitive), its prefix included; nullopt if none.
  std::optional<std::string> value_of(std::string_view name) const;
  std::size_t count(std::string_view name) const;
};

// The request head as it goes upstream: request line, the fields in order, Content-Length for a
// body of `body_size` bytes (always for POST, PUT and PATCH), the blank line. `out` is replaced.
void render_upstream_head(const UpstreamRequest& request, std::size_t body_size, std::string& out);

// The api-version the upstream gets for this operation, or nullopt for none (v1 style default).
std::optional<std::string> api_version_for(const config::Upstream& upstream, Endpoint endpoint);

// `target` is where this attempt goes (its upstream is `upstream`): each attempt of a request is
// translated for its own target.
UpstreamRequest translate(const InboundRequest& in, const config::Upstream& upstream,
                          const Target& target, std::string_view request_id);

// Whether the upstream accepts stream_options on this endpoint: OpenAI and Azure's v1 API do;
// Azure's dated api-versions from 2024-09-01-preview on (older ones answer 400).
bool upstream_accepts_stream_options(const config::Upstream& upstream, Endpoint endpoint);

// RFC 9110 §7.6.1 connection-specific fields, which a proxy never forwards.
bool is_hop_by_hop(std::string_view field_name);
// The one rule for both directions (requests in translate(), responses in the relay): the fields
// above, and those that `message`'s Connection lines name (several lines form one list, RFC 9110
// §5.3). The Connection lines are split into names once per message, not once per field (a
// "Connection: keep-alive" answer was a list parsed for every field); the rule views them, so it
// lives no longer than the message is left unchanged.
class HopByHopRule {
 public:
  explicit HopByHopRule(const HeaderList& message);
  bool operator()(const HeaderList::Field& field) const;

 private:
  boost::container::small_vector<std::string_view, 4> connection_names_;
};

}  // namespace llmgw
