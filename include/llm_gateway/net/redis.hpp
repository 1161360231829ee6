#pragma once
// A small asynchronous Redis client (RESP over an Asio socket, parsed by hiredis' reader) and the
// Redis-backed rate-limit store built on it.
#include <memory>

#include "llm_gateway/config/config.hpp"
#include "llm_gateway/ratelimit/lease.hpp"
#include "llm_gateway/ratelimit/store.hpp"
#include "llm_gateway/routing/backends.hpp"

namespace llmgw::net {

// Counters shared by every replica, in one Lua script (EVALSHA, reloaded on NOSCRIPT). A key
// leased by `lease` (ratelimit/lease.hpp) asks Redis once per lease and is otherwise admitted in
// memory (try_admit_now); other keys make one call per admission. Token corrections are
// collected and sent in batches. The client runs on its own thread; callers on the I/O threads
// await it without blocking. It reconnects by itself with backoff from 100 ms up to 5 s; while
// Redis is unreachable admit() answers nullopt at once (a lease already held is still spent).
std::shared_ptr<ratelimit::CounterStore> make_redis_store(const config::RedisTarget& target,
                                                          ratelimit::LeasePolicy lease);

// Shares 429 cooldowns with every replica on the same Redis: a cooldown this replica starts is
// written there (one key per backend, PX expiry), and the running ones are read back every
// 200 ms into `registry`, so no request waits on Redis for them. Runs on a thread of its own
// until the returned handle is released.
std::shared_ptr<void> share_cooldowns_through_redis(const config::RedisTarget& target,
                                                    std::shared_ptr<BackendRegistry> registry);

}  // namespace llmgw::net
