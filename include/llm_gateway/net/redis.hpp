#pragma once
// A small asynchronous Redis client (RESP over an Asio socket, parsed by hiredis' reader) and the
// Redis-backed rate-limit store built on it.
#include <memory>

#include "llm_gateway/config/config.hpp"
#include "llm_gateway/ratelimit/store.hpp"

namespace llmgw::net {

// Counters shared by every replica: one Lua script call per admission (EVALSHA, reloaded on
// NOSCRIPT), the token correction a second call off the request path. The client runs on its own
// thread; callers on the I/O threads await it without blocking. It reconnects by itself with
// backoff from 100 ms up to 5 s; while Redis is unreachable admit() answers nullopt at once.
std::shared_ptr<ratelimit::CounterStore> make_redis_store(const config::RedisTarget& target);

}  // namespace llmgw::net
