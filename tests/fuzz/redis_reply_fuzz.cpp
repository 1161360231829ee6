// Replies from Redis, as the rate-limit store reads them: raw RESP bytes through hiredis' reader
// (created and fed as RedisClient does), each reply copied by convert_reply, then looked at the
// way the store does (error, NOSCRIPT) and decoded as an admission for a few key limits. A Redis
// that is compromised, misconfigured or not Redis at all must not crash the gateway.
// The input is the byte stream from the server; it is fed once whole and once a byte at a time,
// and both must yield the same replies.
#include <hiredis/hiredis.h>

#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "fuzz_support.hpp"
#include "llm_gateway/net/redis_reply.hpp"

namespace {

using llmgw::fuzz::require;
using llmgw::net::Reply;

// The key limits a configuration can give (loader: rpm 1..1e9, tpm 1..1e12, either optional).
const llmgw::ratelimit::KeyLimits kLimits[] = {
    {},
    {60, std::nullopt},
    {std::nullopt, 100000},
    {1000000000, 1000000000000},
};

bool same(const Reply& a, const Reply& b) {
  if (a.type != b.type || a.str != b.str || a.integer != b.integer ||
      a.elements.size() != b.elements.size())
    return false;
  for (std::size_t i = 0; i < a.elements.size(); ++i) {
    if (!same(a.elements[i], b.elements[i])) return false;
  }
  return true;
}

// hiredis' own object and the copy must agree, all the way down.
void check_copy(const redisReply* r, const Reply& copy) {
  require(copy.type == r->type, "the copy keeps the type");
  require(copy.elements.size() == r->elements, "the copy keeps every element");
  if (r->str) require(copy.str == std::string_view(r->str, r->len), "the copy keeps the string");
  for (std::size_t i = 0; i < r->elements; ++i) check_copy(r->element[i], copy.elements[i]);
}

void use(const Reply& reply) {
  // What RedisStore does with a reply: is it an error, is it NOSCRIPT, is it an admission.
  if (reply.is_error()) (void)reply.str.starts_with("NOSCRIPT");
  for (const auto& limits : kLimits) {
    llmgw::ratelimit::LeaseGrant grant;
    const auto a = llmgw::net::decode_admission(reply, limits, &grant);
    if (!a) continue;
    // The lease's arithmetic (remaining = limit - sum + unspent) relies on these bounds.
    require(grant.request_sum >= 0 && grant.request_sum <= (1LL << 50), "request sum clamped");
    require(grant.token_sum >= 0 && grant.token_sum <= (1LL << 50), "token sum clamped");
    require(!a->allowed || a->retry_after_ms == 0, "an admitted request has no retry delay");
    require(a->allowed || a->retry_after_ms >= 1, "a rejected request waits at least 1 ms");
    // The rate-limit stage puts these into x-ratelimit-* headers.
    for (const auto& state : {a->requests, a->tokens}) {
      if (!state) continue;
      require(state->remaining >= 0, "remaining is not negative");
      (void)llmgw::ratelimit::format_reset(state->reset_ms);
    }
  }
}

// Feeds `bytes` in pieces of `step` bytes (0: all at once) and collects the replies until the
// reader wants more or reports a protocol error, as read_loop does.
std::vector<Reply> read_replies(std::string_view bytes, std::size_t step, bool& protocol_error) {
  std::vector<Reply> replies;
  protocol_error = false;
  redisReader* reader = llmgw::net::create_reply_reader();
  require(reader != nullptr, "reader created");
  std::size_t pos = 0;
  while (pos < bytes.size() && !protocol_error) {
    const std::size_t n = step == 0 ? bytes.size() : std::min(step, bytes.size() - pos);
    if (redisReaderFeed(reader, bytes.data() + pos, n) != REDIS_OK) {
      protocol_error = true;
      break;
    }
    pos += n;
    for (;;) {
      void* raw = nullptr;
      if (redisReaderGetReply(reader, &raw) != REDIS_OK) {
        protocol_error = true;
        break;
      }
      if (!raw) break;
      auto* r = static_cast<redisReply*>(raw);
      Reply reply = llmgw::net::convert_reply(r);
      check_copy(r, reply);
      freeReplyObject(r);
      replies.push_back(std::move(reply));
    }
  }
  redisReaderFree(reader);
  return replies;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const std::string_view bytes = llmgw::fuzz::as_text(data, size);
  bool whole_error = false;
  const std::vector<Reply> whole = read_replies(bytes, 0, whole_error);
  for (const Reply& r : whole) use(r);

  bool split_error = false;
  const std::vector<Reply> split = read_replies(bytes, 1, split_error);
  require(whole_error == split_error, "a protocol error does not depend on the reads");
  require(whole.size() == split.size(), "the same replies whatever the reads");
  for (std::size_t i = 0; i < whole.size(); ++i)
    require(same(whole[i], split[i]), "the same replies whatever the reads");
  return 0;
}
