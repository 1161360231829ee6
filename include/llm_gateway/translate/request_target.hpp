#pragma once
// The request target is the first thing from a client that decides where the upstream credential
// goes, so it is validated before anything else looks at it (RFC 9112 §3.2, RFC 3986). Pure.
#include <string_view>

namespace llmgw {

struct TargetCheck {
  // The target in origin-form (path, then '?' and the query if any): the target itself, or the
  // path and query of an absolute-form target (whose host is ignored). A view into the input.
  std::string_view origin;
  // Empty when the target is acceptable; otherwise why it is refused (for the 400 message).
  std::string_view error;
};

// Accepts origin-form ("/v1/chat/completions?x=1") and absolute-form ("http://h/v1/...") targets
// whose bytes are all valid in a URI path and query, and refuses:
//  - dot-segments ("." and "..", also percent-encoded), empty segments ("//"), and encoded
//    '/', '\' or control bytes inside a segment: nothing may climb out of the operation's path;
//  - a segment "deployments" or "engines" (any case) anywhere but in the one place Azure's
//    classic API puts it, /openai/deployments/{name}/{operation}: a resource-level path must never
//    select a deployment the allow-list did not see.
TargetCheck check_request_target(std::string_view target);

// True for a name that can stand as one Azure deployment path segment without encoding tricks:
// letters, digits, '-', '_' and '.', not "." or "..".
bool valid_deployment_name(std::string_view name);

}  // namespace llmgw
