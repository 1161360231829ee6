#pragma once
// Everything one request carries through the pipeline. The session owns the inbound message and
// the context only views it; each stage reads what earlier stages decided and adds its own part.
#include <ostream>  // first: Boost 1.81 core/detail/string_view.hpp needs it but does not include it

#include <boost/beast/http/verb.hpp>
#include <boost/container/small_vector.hpp>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <new>
#include <optional>
#include <string>
#include <string_view>
#include <type_traits>
#include <utility>
#include <vector>

#include "llm_gateway/accounting/content_filter.hpp"
#include "llm_gateway/accounting/response_reader.hpp"
#include "llm_gateway/config/config.hpp"
#include "llm_gateway/pipeline/added_fields.hpp"
#include "llm_gateway/pipeline/header_list.hpp"
#include "llm_gateway/pipeline/local_reply.hpp"
#include "llm_gateway/routing/router.hpp"
#include "llm_gateway/translate/request_facts.hpp"
#include "llm_gateway/translate/translate.hpp"

namespace llmgw {

using Clock = std::chrono::steady_clock;

// Per-request state a stage keeps for itself (see RequestContext::state).
struct StageState {
  virtual ~StageState() = default;
};

// A stage may rewrite the response body on its way to the client (only used to remove the usage
// chunk the gateway itself asked for). Views in `out` stay valid until the next call.
class BodyRewriter {
 public:
  virtual ~BodyRewriter() = default;
  virtual void rewrite(std::string_view piece, bool last, std::vector<std::string_view>& out) = 0;
};

// One upstream attempt as the router made it (for the access log and metrics).
struct AttemptRecord {
  std::size_t upstream = 0;     // index into the snapshot's upstreams
  unsigned status = 0;          // the upstream's status; 0 when no response head arrived
  std::string_view error_kind;  // connect | tls | timeout | reset | protocol, or ""
  bool reused_connection = false;
  Clock::duration duration{};  // from the attempt's start to its end (its relay included)
};

struct RequestContext {
  // accept & parse (set by the session)
  const config::Config* config = nullptr;  // the snapshot this request runs on
  std::string request_id;
  std::string peer;  // client address
  Clock::time_point received{};
  boost::beast::http::verb method = boost::beast::http::verb::get;
  std::string_view target;
  const HeaderList* headers = nullptr;
  std::string_view body;
  std::uint64_t bytes_in = 0;
  // The SHA-256 of the client's verified TLS certificate (mutual TLS on the listener), or null.
  const config::Sha256* client_cert_sha256 = nullptr;

  bool headers_admitted = false;  // the header admission (Pipeline::on_request_headers) ran
  // Answered by a built-in endpoint (/healthz, /readyz, /metrics): a probe, not an API request,
  // so neither logged nor counted.
  bool builtin = false;

  // parse stage
  PathFacts path;
  BodyFacts body_facts;
  std::optional<std::string> model;  // the model the request names (path or body)

  // authenticate stage: the client key, or null without client keys (anonymous) or when the
  // credential was missing or wrong (the request is then answered with 401).
  const config::ClientKey* key = nullptr;
  std::size_t key_index = 0;

  // route stage: the route, and its first target; the router then sets `upstream` and
  // `deployment` to each attempt's target in turn (the one that answered, in the end).
  std::optional<RouteDecision> route;
  const config::Upstream* upstream = nullptr;
  std::string deployment;

  // account stage (request side): the stream's usage should be asked for (the client did not);
  // the router then asks the upstreams that accept it (request_stream_usage, per attempt).
  bool stream_usage_wanted = false;
  bool request_stream_usage = false;

  // Set by any stage that answers the request itself; the pipeline stops there.
  std::optional<LocalReply> reply;

  // router: every upstream attempt, in order (the last one is the one that answered or failed)
  boost::container::small_vector<AttemptRecord, 2> attempts;

  // commit & relay (set by the relay, read by accounting stages)
  unsigned status = 0;
  bool streamed = false;  // a stream: the client asked for one, or the answer is SSE
  std::uint64_t bytes_out = 0;
  std::string error_code;  // the gateway's error code when it made the response
  std::optional<Clock::time_point> upstream_first_byte;
  bool client_aborted = false;
  // Why the gateway itself cut this request short ("drain": the drain deadline passed), or "".
  std::string_view cut_reason;
  // Set by the relay while an upstream exchange runs: stops it at once (closes the upstream
  // connection), so that a request cut by the drain deadline still completes and is logged.
  std::function<void()> cancel;
  BodyRewriter* body_rewriter = nullptr;  // set by a stage's on_response_headers, if any
  // The gateway's own response fields (x-gateway-*, x-ratelimit-*): set by the relay and by
  // stages in on_response_headers, written after the upstream's fields, which they replace.
  AddedFields added_response_fields;

  // account stage (response side)
  std::optional<accounting::Usage> usage;
  std::string finish_reason;
  accounting::ContentFilterSummary content_filter;
  std::string upstream_request_id;  // apim-request-id, else the upstream's x-request-id

  // router timings and failures (for metrics and the access log)
  std::optional<Clock::time_point> upstream_request_written;
  std::optional<Clock::time_point> client_first_byte;  // first response byte written
  std::string upstream_error_kind;  // connect | tls | timeout | reset | protocol, when it failed
  std::optional<unsigned> upstream_status;  // the status of the response relayed to the client
  unsigned worker = 0;                      // the I/O thread running this request

  // rate limit stage
  int rate_limited = -1;                    // ratelimit::LimitKind when the gateway answered 429
  std::string_view rate_limit_store_error;  // the store's name when it could not answer

  RequestContext() = default;
  // Stage states may live inside the context (see state()): it stays where it was made.
  RequestContext(const RequestContext&) = delete;
  RequestContext& operator=(const RequestContext&) = delete;
  ~RequestContext() {
    // Newest first, as members are destroyed.
    for (auto it = states_.rbegin(); it != states_.rend(); ++it) {
      if (it->inline_storage) {
        it->state->~StageState();
      } else {
        delete it->state;
      }
    }
  }

  // The state `owner` (a stage) keeps for this request, created on first use. States are built
  // in storage inside the context while it lasts (no allocation per stage and request), on the
  // heap after that.
  template <class T>
  T& state(const void* owner) {
    static_assert(std::is_base_of_v<StageState, T>);
    if (T* existing = find_state<T>(owner)) return *existing;
    void* place = take_inline_storage(sizeof(T), alignof(T));
    T* made = place ? new (place) T() : new T();
    try {
      states_.push_back(OwnedState{owner, made, place != nullptr});
    } catch (...) {
      if (place) {
        made->~T();
      } else {
        delete made;
      }
      throw;
    }
    return *made;
  }
  template <class T>
  T* find_state(const void* owner) {
    for (const OwnedState& s : states_) {
      if (s.owner == owner) return static_cast<T*>(s.state);
    }
    return nullptr;
  }

  // Bytes of state storage inside the context: room for every built-in stage's state together
  // (about 500 bytes on x86-64 with libstdc++); a state that does not fit is allocated.
  static constexpr std::size_t kInlineStateBytes = 1024;
  std::size_t inline_state_bytes_used() const { return inline_used_; }
  std::size_t heap_state_count() const {
    std::size_t n = 0;
    for (const OwnedState& s : states_) n += s.inline_storage ? 0 : 1;
    return n;
  }

 private:
  struct OwnedState {
    const void* owner;
    StageState* state;
    bool inline_storage;  // built in inline_states_ (destroyed, not deleted)
  };

  void* take_inline_storage(std::size_t size, std::size_t align) {
    const std::size_t start = (inline_used_ + align - 1) / align * align;
    if (align > alignof(std::max_align_t) || start + size > kInlineStateBytes) return nullptr;
    inline_used_ = start + size;
    return inline_states_ + start;
  }

  boost::container::small_vector<OwnedState, 6> states_;
  std::size_t inline_used_ = 0;
  alignas(std::max_align_t) std::byte inline_states_[kInlineStateBytes];
};

}  // namespace llmgw
