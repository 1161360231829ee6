#pragma once
// What the Redis client makes of the bytes Redis sends back, once hiredis' reader has parsed them:
// the reply copied out of hiredis' object, and the admission script's answer decoded. Pure (no
// I/O), so tests and the fuzz harness can run it on replies parsed from arbitrary bytes.
#include <hiredis/hiredis.h>

#include <optional>
#include <string>
#include <vector>

#include "llm_gateway/ratelimit/lease.hpp"
#include "llm_gateway/ratelimit/limiter.hpp"

namespace llmgw::net {

// A Redis reply, copied out of hiredis' reply object (which must be freed before the coroutine
// waiting for it resumes).
struct Reply {
  int type = REDIS_REPLY_NIL;
  std::string str;
  long long integer = 0;
  std::vector<Reply> elements;

  bool is_error() const { return type == REDIS_REPLY_ERROR; }
};

Reply convert_reply(const redisReply* r);

// The store's replies are short (the admission script answers 12 integers).
inline constexpr long long kMaxReplyElements = 1024;

// A hiredis reader (free it with redisReaderFree) that builds replies as redisReaderCreate's
// does, except that an array header announcing more than kMaxReplyElements elements is a
// protocol error: hiredis 0.14 allocates the announced length up front and, freeing a partial
// reply, walks all of it, so a 15-byte "*2000000000" from the server would cost 16 GB of address
// space and seconds of the client thread. nullptr when out of memory.
redisReader* create_reply_reader();

// The admission script's answer {allowed, request wait, token wait, too large, request sum,
// token sum, request reset, token reset, now (s), now (ms), requests granted, tokens granted}
// for a key with `limits`; nullopt when the reply is not a 12-element array. `grant` (optional)
// receives what the script granted and the sums it was counted in, as Redis said them (the
// sums clamped to [0, 2^50]; the store clamps the grant to what it asked for).
std::optional<ratelimit::Admission> decode_admission(const Reply& r,
                                                     const ratelimit::KeyLimits& limits,
                                                     ratelimit::LeaseGrant* grant = nullptr);

}  // namespace llmgw::net
