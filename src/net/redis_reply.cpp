#include "llm_gateway/net/redis_reply.hpp"

#include <algorithm>
#include <cstdint>
#include <limits>

namespace llmgw::net {

namespace {

// limit - used, at least 0. `used` is whatever integer Redis sent: a reply that is not the
// script's (a compromised or confused server) can hold any value, and the subtraction must not
// overflow (undefined behaviour); it saturates instead.
std::int64_t remaining(std::int64_t limit, long long used) {
  std::int64_t r = 0;
  if (__builtin_sub_overflow(limit, used, &r))
    return used < 0 ? std::numeric_limits<std::int64_t>::max() : 0;
  return std::max<std::int64_t>(0, r);
}

// hiredis' own array constructor, which bounded_array delegates to.
void* (*g_create_array)(const redisReadTask*, int) = nullptr;

void* bounded_array(const redisReadTask* task, int elements) {
  if (elements > kMaxReplyElements) return nullptr;  // hiredis reports it as an error
  return g_create_array(task, elements);
}

}  // namespace

redisReader* create_reply_reader() {
  redisReader* reader = redisReaderCreate();
  if (!reader) return nullptr;
  // hiredis' default functions, with the array constructor bounded. Every reader has the same
  // defaults, so the table is built once.
  static redisReplyObjectFunctions functions = [reader] {
    redisReplyObjectFunctions f = *reader->fn;
    g_create_array = f.createArray;
    f.createArray = bounded_array;
    return f;
  }();
  reader->fn = &functions;
  return reader;
}

Reply convert_reply(const redisReply* r) {
  Reply out;
  out.type = r->type;
  out.integer = r->integer;
  if (r->str) out.str.assign(r->str, r->len);
  for (std::size_t i = 0; i < r->elements; ++i)
    out.elements.push_back(convert_reply(r->element[i]));
  return out;
}

std::optional<ratelimit::Admission> decode_admission(const Reply& r,
                                                     const ratelimit::KeyLimits& limits,
                                                     ratelimit::LeaseGrant* grant) {
  if (r.type != REDIS_REPLY_ARRAY || r.elements.size() != 12) return std::nullopt;
  const auto& e = r.elements;
  ratelimit::Admission a;
  a.allowed = e[0].integer == 1;
  a.too_large = e[3].integer == 1;
  const std::int64_t req_wait = e[1].integer;
  const std::int64_t tok_wait = e[2].integer;
  if (!a.allowed) {
    a.rejected_by = req_wait > 0 ? ratelimit::LimitKind::requests : ratelimit::LimitKind::tokens;
    a.retry_after_ms = std::max<std::int64_t>(std::max(req_wait, tok_wait), 1);
  }
  if (limits.rpm)
    a.requests =
        ratelimit::LimitState{*limits.rpm, remaining(*limits.rpm, e[4].integer), e[6].integer};
  if (limits.tpm)
    a.tokens =
        ratelimit::LimitState{*limits.tpm, remaining(*limits.tpm, e[5].integer), e[7].integer};
  a.bucket_sec = e[8].integer;
  if (grant) {
    // Sums derive the remaining counts of the requests spent from a lease: kept where the
    // arithmetic on them cannot overflow whatever a confused server sent.
    constexpr long long kMaxSum = 1LL << 50;
    grant->bucket_sec = e[8].integer;
    grant->now_ms = e[9].integer;
    grant->requests = e[10].integer;
    grant->tokens = e[11].integer;
    grant->request_sum = std::clamp<long long>(e[4].integer, 0, kMaxSum);
    grant->token_sum = std::clamp<long long>(e[5].integer, 0, kMaxSum);
    grant->request_reset_ms = std::clamp<long long>(e[6].integer, 0, kMaxSum);
    grant->token_reset_ms = std::clamp<long long>(e[7].integer, 0, kMaxSum);
  }
  return a;
}

}  // namespace llmgw::net
