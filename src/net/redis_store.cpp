// Redis client and the Redis rate-limit store. One connection (plain TCP, or TLS for rediss://),
// pipelined: commands are written in order and Redis answers in order, so each reply completes the
// oldest waiting command.
#include <hiredis/hiredis.h>
#include <openssl/evp.h>
#include <openssl/ssl.h>
#include <openssl/x509_vfy.h>

#include <boost/asio/co_spawn.hpp>
#include <boost/asio/connect.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ssl/host_name_verification.hpp>
#include <boost/asio/ssl/stream.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/write.hpp>
#include <deque>
#include <mutex>
#include <optional>
#include <shared_mutex>
#include <thread>
#include <tuple>
#include <unordered_map>

#include "llm_gateway/net/io.hpp"
#include "llm_gateway/net/redis.hpp"
#include "llm_gateway/net/redis_reply.hpp"
#include "llm_gateway/observability/log.hpp"

namespace llmgw::net {
namespace {

constexpr auto kCommandTimeout = std::chrono::milliseconds(250);
constexpr auto kConnectTimeout = std::chrono::milliseconds(500);
// The TLS handshake's own budget, after the TCP connect: two more round trips, and a managed
// Redis is often farther away than the one next door.
constexpr auto kHandshakeTimeout = std::chrono::milliseconds(1000);
constexpr auto kMinBackoff = std::chrono::milliseconds(100);
constexpr auto kMaxBackoff = std::chrono::milliseconds(5000);

namespace ssl = asio::ssl;

// A command waiting for its reply.
struct Pending {
  explicit Pending(asio::io_context& ioc) : timer(ioc) {}
  asio::steady_timer timer;  // expiry = timeout; cancelled when the reply (or a failure) comes
  std::optional<Reply> reply;
  bool finished = false;
};

// One connection to Redis with everything that belongs to it alone: the stream (TCP, or TLS over
// TCP), the reply parser, the commands waiting for replies on it and the bytes not yet written.
// Every operation on it holds a shared_ptr to it, so a reconnect that replaces it can never leave
// an operation of the old connection (a TLS read or write in the middle of a record) working on a
// freed stream: the old one is closed, its operations end with an error, and it is freed after
// the last of them.
class Connection {
 public:
  Connection(asio::io_context& ioc, std::shared_ptr<ssl::context> tls_ctx)
      : tls_ctx_(std::move(tls_ctx)), reader(create_reply_reader()) {
    if (tls_ctx_) {
      tls_.emplace(ioc, *tls_ctx_);
    } else {
      plain_.emplace(ioc);
    }
  }
  ~Connection() { redisReaderFree(reader); }
  Connection(const Connection&) = delete;
  Connection& operator=(const Connection&) = delete;

  tcp::socket& socket() { return tls_ ? tls_->next_layer() : *plain_; }
  ssl::stream<tcp::socket>* tls() { return tls_ ? &*tls_ : nullptr; }

  // Ends the connection: its operations finish with an error, its waiters get no reply.
  void close() {
    open = false;
    boost::system::error_code ignored;
    socket().close(ignored);
    for (auto& p : pending) {
      p->finished = true;
      p->timer.cancel();
    }
    pending.clear();
    outbox.clear();
  }

 private:
  std::shared_ptr<ssl::context> tls_ctx_;  // declared first: outlives the stream made from it
  std::optional<ssl::stream<tcp::socket>> tls_;
  std::optional<tcp::socket> plain_;

 public:
  redisReader* reader;
  std::deque<std::shared_ptr<Pending>> pending;  // in the order their commands were written
  std::string outbox;                            // formatted commands not yet written
  bool writing = false;                          // a write_loop is running for it
  bool open = true;
  bool connecting = true;  // the connect deadline may still cancel it
  bool timed_out = false;  // the connect deadline did
};

class RedisClient {
 public:
  RedisClient(asio::io_context& ioc, config::RedisTarget target)
      : ioc_(ioc), target_(std::move(target)), connect_done_(ioc) {
    if (target_.tls) {
      try {
        tls_ctx_ = make_client_tls_context(target_.ca_file);
      } catch (const std::exception& e) {
        // The loader checked the file; it may have changed since. Every connect reports this.
        tls_setup_error_ =
            "cannot set up TLS for Redis (redis_ca_file '" + target_.ca_file + "'): " + e.what();
      }
    }
  }

  // One command; nullopt when Redis is unreachable or did not answer in time (last_error says
  // why).
  asio::awaitable<std::optional<Reply>> command(std::vector<std::string> args) {
    if (!conn_) {
      co_await connect();
      if (!conn_) co_return std::nullopt;
    }
    auto conn = conn_;
    co_return co_await send(conn, std::move(args));
  }

  // Why the last connection or connection attempt failed; never holds the password.
  const std::string& last_error() const { return last_error_; }

 private:
  asio::awaitable<std::optional<Reply>> send(std::shared_ptr<Connection> conn,
                                             std::vector<std::string> args) {
    if (!conn->open) co_return std::nullopt;
    std::vector<const char*> argv;
    std::vector<std::size_t> argvlen;
    for (const auto& a : args) {
      argv.push_back(a.data());
      argvlen.push_back(a.size());
    }
    char* formatted = nullptr;
    const int len = redisFormatCommandArgv(&formatted, static_cast<int>(argv.size()), argv.data(),
                                           argvlen.data());
    if (len < 0) co_return std::nullopt;
    conn->outbox.append(formatted, static_cast<std::size_t>(len));
    redisFreeCommand(formatted);

    auto pending = std::make_shared<Pending>(ioc_);
    pending->timer.expires_after(kCommandTimeout);
    conn->pending.push_back(pending);
    if (!conn->writing) {
      // Marked here, not when the loop starts: a second command before it runs must not start a
      // second writer (a TLS stream takes one write at a time).
      conn->writing = true;
      asio::co_spawn(ioc_, write_loop(conn), asio::detached);
    }
    co_await pending->timer.async_wait(nothrow_awaitable);
    if (!pending->finished) fail(conn, "command timed out");  // the connection is suspect now
    co_return std::move(pending->reply);
  }

  asio::awaitable<void> write_loop(std::shared_ptr<Connection> conn) {
    while (conn->open && !conn->outbox.empty()) {
      std::string chunk;
      chunk.swap(conn->outbox);
      boost::system::error_code ec;
      if (auto* tls = conn->tls()) {
        std::tie(ec, std::ignore) =
            co_await asio::async_write(*tls, asio::buffer(chunk), nothrow_awaitable);
      } else {
        std::tie(ec, std::ignore) =
            co_await asio::async_write(conn->socket(), asio::buffer(chunk), nothrow_awaitable);
      }
      if (ec) {
        fail(conn, "write failed: " + ec.message());
        break;
      }
    }
    conn->writing = false;
  }

  asio::awaitable<void> read_loop(std::shared_ptr<Connection> conn) {
    std::array<char, 16 * 1024> buf;
    while (conn->open) {
      boost::system::error_code ec;
      std::size_t n = 0;
      if (auto* tls = conn->tls()) {
        std::tie(ec, n) = co_await tls->async_read_some(asio::buffer(buf), nothrow_awaitable);
      } else {
        std::tie(ec, n) =
            co_await conn->socket().async_read_some(asio::buffer(buf), nothrow_awaitable);
      }
      if (!conn->open) co_return;
      if (ec) {
        fail(conn, "connection lost: " + ec.message());
        co_return;
      }
      if (redisReaderFeed(conn->reader, buf.data(), n) != REDIS_OK) {
        fail(conn, "protocol error");
        co_return;
      }
      for (;;) {
        void* raw = nullptr;
        if (redisReaderGetReply(conn->reader, &raw) != REDIS_OK) {
          fail(conn, "protocol error");
          co_return;
        }
        if (!raw) break;
        auto* r = static_cast<redisReply*>(raw);
        Reply reply = convert_reply(r);
        freeReplyObject(r);
        if (conn->pending.empty()) continue;  // a reply nobody waits for any more
        auto p = conn->pending.front();
        conn->pending.pop_front();
        p->reply = std::move(reply);
        p->finished = true;
        p->timer.cancel();
      }
    }
  }

  // Closes `conn` and fails everything waiting on it (once: a connection that is closed already
  // has no waiters left); the next command connects anew once the backoff has passed.
  void fail(const std::shared_ptr<Connection>& conn, std::string why) {
    if (!conn->open) return;
    conn->close();
    if (conn == conn_) {
      conn_.reset();
      log::line(log::Level::debug, "redis connection closed", {{"reason", why}});
    } else {
      log::line(log::Level::debug, "redis connection failed", {{"reason", why}});
    }
    last_error_ = std::move(why);
    next_attempt_ = std::chrono::steady_clock::now() + backoff_;
    backoff_ = std::min(backoff_ * 2, kMaxBackoff);
  }

  std::string where() const {
    const bool v6 = target_.server_name.find(':') != std::string::npos;
    return "Redis at " + (v6 ? "[" + target_.server_name + "]" : target_.server_name) + ":" +
           std::to_string(target_.port);
  }

  // Redis' error text for a log line, with the password taken out should a server ever echo it.
  std::string scrubbed(std::string text) const {
    if (!target_.password.empty()) {
      for (auto at = text.find(target_.password); at != std::string::npos;
           at = text.find(target_.password, at + 3))
        text.replace(at, target_.password.size(), "***");
    }
    return text;
  }

  // TCP, and TLS for rediss://, each within its deadline. Returns why it failed, "" on success.
  asio::awaitable<std::string> open(std::shared_ptr<Connection> conn) {
    // A host name (e.g. a compose service called "redis") is resolved on every attempt, so a
    // replaced container's new address is picked up; resolution runs on the client's thread.
    tcp::resolver resolver(ioc_);
    auto [ec, endpoints] =
        co_await resolver.async_resolve(target_.host, std::to_string(target_.port),
                                        tcp::resolver::numeric_service, nothrow_awaitable);
    if (ec) co_return "cannot resolve " + where() + ": " + ec.message();
    // The deadline holds only a weak reference and acts only while the connection is still
    // being set up: a late expiry can neither touch a freed connection nor cut a working one.
    asio::steady_timer deadline(ioc_);
    const auto arm = [&deadline, weak = std::weak_ptr<Connection>(conn)](auto budget) {
      deadline.expires_after(budget);
      deadline.async_wait([weak](boost::system::error_code e) {
        auto c = weak.lock();
        if (e || !c || !c->connecting) return;
        c->timed_out = true;
        // Closed, not cancelled: a cancelled connect would go on to the host's next address.
        boost::system::error_code ignored;
        c->socket().close(ignored);
      });
    };
    arm(kConnectTimeout);
    auto [cec, ep] = co_await asio::async_connect(conn->socket(), endpoints, nothrow_awaitable);
    if (cec) {
      co_return "cannot connect to " + where() + ": " +
          (conn->timed_out
               ? "no connection within " + std::to_string(kConnectTimeout.count()) + " ms"
               : cec.message());
    }
    conn->socket().set_option(tcp::no_delay(true), ec);
    if (auto* tls = conn->tls()) {
      // SNI carries host names only (RFC 6066 §3); an IP literal must be in the certificate.
      if (!target_.host_is_ip)
        SSL_set_tlsext_host_name(tls->native_handle(), target_.server_name.c_str());
      // Asio's check, which leaves OpenSSL's "unspecified" error when the name is what failed:
      // named here, so the log says "hostname mismatch" or "IP address mismatch".
      tls->set_verify_callback(
          [check = ssl::host_name_verification(target_.server_name), ip = target_.host_is_ip](
              bool preverified, ssl::verify_context& ctx) mutable {
            if (check(preverified, ctx)) return true;
            if (preverified) {
              X509_STORE_CTX_set_error(ctx.native_handle(), ip ? X509_V_ERR_IP_ADDRESS_MISMATCH
                                                               : X509_V_ERR_HOSTNAME_MISMATCH);
            }
            return false;
          });
      arm(kHandshakeTimeout);
      auto [hec] = co_await tls->async_handshake(ssl::stream_base::client, nothrow_awaitable);
      if (hec) {
        co_return "TLS handshake with " + where() + " failed: " +
            (conn->timed_out
                 ? "no handshake within " + std::to_string(kHandshakeTimeout.count()) + " ms"
                 : tls_handshake_failure(hec, tls->native_handle()));
      }
    }
    conn->connecting = false;
    co_return std::string();
  }

  asio::awaitable<void> connect() {
    if (connecting_) {  // someone else is connecting: wait for that attempt
      co_await connect_done_.async_wait(nothrow_awaitable);
      co_return;
    }
    if (std::chrono::steady_clock::now() < next_attempt_) co_return;  // backing off: fail fast
    if (!tls_setup_error_.empty()) {
      last_error_ = tls_setup_error_;
      co_return;
    }
    connecting_ = true;
    connect_done_.expires_at(asio::steady_timer::time_point::max());
    auto conn = std::make_shared<Connection>(ioc_, tls_ctx_);
    std::string failure = co_await open(conn);
    if (failure.empty()) {
      conn_ = conn;
      asio::co_spawn(ioc_, read_loop(conn), asio::detached);
      // (Commands are built before co_await: g++ 12 rejects braced lists of string literals
      // inside a co_await expression.)
      if (!target_.password.empty()) {
        std::vector<std::string> auth{std::string("AUTH")};
        if (!target_.user.empty()) auth.push_back(target_.user);  // an ACL user (Redis 6+)
        auth.push_back(target_.password);
        auto r = co_await send(conn, std::move(auth));
        if (r && r->is_error()) {
          failure = where() + " refused AUTH" +
                    (target_.user.empty() ? std::string() : " for user '" + target_.user + "'") +
                    ": " + scrubbed(r->str);
        }
      }
      if (failure.empty() && conn->open && target_.db != 0) {
        std::vector<std::string> select{std::string("SELECT"), std::to_string(target_.db)};
        auto r = co_await send(conn, std::move(select));
        if (r && r->is_error()) failure = where() + " refused SELECT: " + scrubbed(r->str);
      }
    }
    // (A command that got no reply has failed the connection already, saying why.)
    if (!failure.empty()) fail(conn, std::move(failure));
    if (conn_) backoff_ = kMinBackoff;
    connecting_ = false;
    connect_done_.cancel();
  }

  asio::io_context& ioc_;
  config::RedisTarget target_;
  std::shared_ptr<ssl::context> tls_ctx_;  // rediss:// only
  std::string tls_setup_error_;
  std::shared_ptr<Connection> conn_;  // the connection commands go to; null while there is none
  bool connecting_ = false;
  asio::steady_timer connect_done_;
  std::string last_error_;
  std::chrono::steady_clock::time_point next_attempt_{};
  std::chrono::milliseconds backoff_{kMinBackoff};
};

// The sliding window of ratelimit/limiter.hpp, for both limits of a key, atomically. Time comes
// from Redis (TIME), so the replicas' clocks do not matter.
//
// First the deltas the replica collected (token corrections, and the unspent rest of leases it
// gives back) are applied: ARGV[6..] holds triples {second, requests, tokens}; a second that left
// the window, or a field Redis no longer has (lost in a restart), is skipped, and no delta takes
// a field below zero, so no delta can ever create quota that was not counted. Then, for cost >= 0,
// one request of `cost` tokens is admitted as before, and with it a lease: up to ARGV[4]
// requests in all and ARGV[5] tokens on top of the cost, as much of that as the windows have room
// for, counted in the current second. cost = -1 only applies the deltas.
constexpr std::string_view kAdmitScript = R"lua(
local t = redis.call('TIME')
local now_ms = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local now = math.floor(now_ms / 1000)
local W = 61
local function adjust(key, field, d)
  if d == 0 then return end
  local v = redis.call('HGET', key, field)
  if not v then return end
  v = tonumber(v)
  if v + d < 0 then d = -v end
  if d ~= 0 then redis.call('HINCRBY', key, field, d) end
end
for i = 6, #ARGV - 2, 3 do
  if tonumber(ARGV[i]) > now - W then
    adjust(KEYS[1], ARGV[i], tonumber(ARGV[i + 1]))
    adjust(KEYS[2], ARGV[i], tonumber(ARGV[i + 2]))
  end
end
local rpm, tpm, cost = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
if cost < 0 then return 1 end
local lease_req, lease_tok = tonumber(ARGV[4]), tonumber(ARGV[5])
local function window(key)
  local flat = redis.call('HGETALL', key)
  local live, stale, sum = {}, {}, 0
  for i = 1, #flat, 2 do
    local s, v = tonumber(flat[i]), tonumber(flat[i + 1])
    if s <= now - W then stale[#stale + 1] = flat[i] else sum = sum + v; live[#live + 1] = {s, v} end
  end
  if #stale > 0 then redis.call('HDEL', key, unpack(stale)) end
  table.sort(live, function(a, b) return a[1] < b[1] end)
  return sum, live
end
local function wait(sum, live, limit, need)
  if sum + need <= limit then return 0 end
  for _, b in ipairs(live) do
    sum = sum - b[2]
    if sum + need <= limit then return (b[1] + W) * 1000 - now_ms end
  end
  return W * 1000
end
local function reset(live, added)
  local newest = -1
  for _, b in ipairs(live) do if b[2] ~= 0 and b[1] > newest then newest = b[1] end end
  if added then newest = now end
  if newest < 0 then return 0 end
  return (newest + W) * 1000 - now_ms
end
local rsum, rlive, tsum, tlive = 0, {}, 0, {}
local rwait, twait, too_large = 0, 0, 0
if rpm > 0 then rsum, rlive = window(KEYS[1]); rwait = wait(rsum, rlive, rpm, 1) end
if tpm > 0 then
  tsum, tlive = window(KEYS[2])
  if cost > tpm then too_large = 1; twait = reset(tlive, false) else twait = wait(tsum, tlive, tpm, cost) end
end
local allowed = 0
if rwait == 0 and twait == 0 and too_large == 0 then allowed = 1 end
local radded, tadded, rgrant, tgrant = false, false, 0, 0
if allowed == 1 then
  if rpm > 0 then
    rgrant = math.max(1, math.min(lease_req, rpm - rsum))
    redis.call('HINCRBY', KEYS[1], now, rgrant); redis.call('PEXPIRE', KEYS[1], (W + 1) * 1000)
    rsum = rsum + rgrant; radded = true
  end
  if tpm > 0 then
    tgrant = cost + math.max(0, math.min(lease_tok, tpm - tsum - cost))
    if tgrant > 0 then
      redis.call('HINCRBY', KEYS[2], now, tgrant); redis.call('PEXPIRE', KEYS[2], (W + 1) * 1000)
      tsum = tsum + tgrant; tadded = true
    end
  end
end
return {allowed, rwait, twait, too_large, rsum, tsum, reset(rlive, radded), reset(tlive, tadded), now, now_ms, rgrant, tgrant}
)lua";

// Redis names a loaded script by the SHA-1 of its text.
std::string sha1_hex(std::string_view text) {
  unsigned char digest[EVP_MAX_MD_SIZE];
  unsigned int len = 0;
  EVP_Digest(text.data(), text.size(), digest, &len, EVP_sha1(), nullptr);
  static constexpr char kHex[] = "0123456789abcdef";
  std::string out;
  for (unsigned int i = 0; i < len; ++i) {
    out += kHex[digest[i] >> 4];
    out += kHex[digest[i] & 0xF];
  }
  return out;
}

// A Lua script by its SHA-1 (EVALSHA), loaded again with EVAL when Redis lost its script cache
// (after a restart or failover).
asio::awaitable<std::optional<Reply>> eval_script(RedisClient& client, std::string_view script,
                                                  const std::string& sha,
                                                  std::vector<std::string> keys_and_args,
                                                  int nkeys) {
  std::vector<std::string> cmd{std::string("EVALSHA"), sha, std::to_string(nkeys)};
  cmd.insert(cmd.end(), keys_and_args.begin(), keys_and_args.end());
  auto r = co_await client.command(cmd);
  if (r && r->is_error() && r->str.starts_with("NOSCRIPT")) {
    cmd[0] = "EVAL";
    cmd[1] = std::string(script);
    r = co_await client.command(std::move(cmd));
  }
  co_return r;
}

// Counters in Redis, and the leases taken from them (ratelimit/lease.hpp says why a lease keeps
// the window exact and what it costs). A key whose limits are leased asks Redis once per lease:
// requests are admitted from the lease in memory, on the caller's thread, and only when it is
// spent or over does one request of this process go to Redis for the next one (the others wait
// for that call rather than each making their own). Token corrections and the unspent rest of
// ended leases are collected per key and go with the key's next call, or with the flush timer
// (every kFlushEvery) at the latest. A key that is not leased makes one call per admission, as
// many in flight as it has requests.
class RedisStore final : public ratelimit::CounterStore {
 public:
  RedisStore(const config::RedisTarget& target, ratelimit::LeasePolicy policy)
      : work_(asio::make_work_guard(ioc_)),
        client_(ioc_, target),
        policy_(policy),
        admit_sha_(sha1_hex(kAdmitScript)),
        flush_timer_(ioc_),
        thread_([this] { ioc_.run(); }) {
    asio::co_spawn(ioc_, flush_loop(), asio::detached);
  }

  ~RedisStore() override { stop(); }

  void stop() override {
    if (!thread_.joinable()) return;
    // Deltas not sent yet are dropped: unspent leases then simply expire with their second's
    // bucket (at most 61 s), and corrections are lost as a failed call's would be.
    asio::post(ioc_, [this] { flush_timer_.cancel(); });
    work_.reset();
    ioc_.stop();
    thread_.join();
  }

  std::string_view name() const override { return "redis"; }

  std::optional<ratelimit::Admission> try_admit_now(const std::string& key_name,
                                                    const ratelimit::KeyLimits& limits,
                                                    std::int64_t token_cost) override {
    if (!ratelimit::lease_size(limits, policy_).leased()) return std::nullopt;
    KeyState& k = state(key_name);
    std::lock_guard lock(k.mutex);
    return k.lease.try_spend(limits, token_cost, Clock::now());
  }

  asio::awaitable<std::optional<ratelimit::Admission>> admit(const std::string& key_name,
                                                             const ratelimit::KeyLimits& limits,
                                                             std::int64_t token_cost) override {
    // Hop to the client's thread and back: the caller's I/O thread never blocks.
    co_return co_await asio::co_spawn(ioc_, admit_on_client(key_name, limits, token_cost),
                                      asio::use_awaitable);
  }

  void correct_tokens(const std::string& key_name, std::int64_t bucket_sec,
                      std::int64_t delta) override {
    KeyState& k = state(key_name);
    std::lock_guard lock(k.mutex);
    k.pending.add({bucket_sec, 0, delta});
  }

 private:
  using Clock = ratelimit::LocalLease::Clock;
  static constexpr auto kFlushEvery = std::chrono::milliseconds(200);
  static constexpr std::string_view kRequests = "req";
  static constexpr std::string_view kTokens = "tok";

  struct KeyState {
    std::mutex mutex;  // guards lease and pending; held for a few hundred ns, never across I/O
    ratelimit::LocalLease lease;
    ratelimit::PendingDeltas pending;
    // The client thread's alone:
    bool calling = false;                         // a lease call of this key is in flight
    std::optional<asio::steady_timer> call_done;  // its waiters wait on it; cancelled to wake them
    std::optional<ratelimit::Admission> last_answer;  // the last lease call's (nullopt: failed)
    ratelimit::KeyLimits last_limits;
  };

  // (Arguments are built before co_await: g++ 12 rejects string literals in braced lists inside
  // a co_await expression.)
  static std::string redis_key(const std::string& name, std::string_view kind) {
    // The hash tag keeps both windows of a key on one shard of a cluster.
    return "llmgw:rl:{" + name + "}:" + std::string(kind);
  }

  // The admission script's arguments; cost -1 only applies the deltas.
  static std::vector<std::string> script_args(const std::string& key_name,
                                              const ratelimit::KeyLimits& limits, std::int64_t cost,
                                              ratelimit::LeaseSize size,
                                              const std::vector<ratelimit::CounterDelta>& deltas) {
    std::vector<std::string> args{redis_key(key_name, kRequests),
                                  redis_key(key_name, kTokens),
                                  std::to_string(limits.rpm.value_or(0)),
                                  std::to_string(limits.tpm.value_or(0)),
                                  std::to_string(cost),
                                  std::to_string(size.requests),
                                  std::to_string(size.tokens)};
    for (const auto& d : deltas) {
      args.push_back(std::to_string(d.sec));
      args.push_back(std::to_string(d.requests));
      args.push_back(std::to_string(d.tokens));
    }
    return args;
  }

  // Per key name, never erased (references stay valid): state outlives configuration snapshots.
  KeyState& state(const std::string& key_name) {
    {
      std::shared_lock lock(keys_mutex_);
      if (auto it = keys_.find(key_name); it != keys_.end()) return *it->second;
    }
    std::unique_lock lock(keys_mutex_);
    auto& slot = keys_[key_name];
    if (!slot) slot = std::make_unique<KeyState>();
    return *slot;
  }

  void note_health(bool ok, const std::string& detail) {
    if (ok && down_) {
      down_ = false;
      log::line(log::Level::info, "rate limit store recovered", {{"store", "redis"}});
    } else if (!ok && !down_) {
      down_ = true;  // logged once per outage
      log::line(log::Level::warn, "rate limit store unavailable",
                {{"store", "redis"}, {"detail", detail}});
    }
  }

  static bool same_limits(const ratelimit::KeyLimits& a, const ratelimit::KeyLimits& b) {
    return a.rpm == b.rpm && a.tpm == b.tpm;
  }

  asio::awaitable<std::optional<ratelimit::Admission>> admit_on_client(std::string key_name,
                                                                       ratelimit::KeyLimits limits,
                                                                       std::int64_t token_cost) {
    const ratelimit::LeaseSize size = ratelimit::lease_size(limits, policy_);
    KeyState& k = state(key_name);
    if (!size.leased()) co_return co_await ask(key_name, k, limits, token_cost, size);
    if (!k.call_done) {
      k.call_done.emplace(ioc_);
      k.call_done->expires_at(asio::steady_timer::time_point::max());
    }
    for (;;) {
      {
        std::lock_guard lock(k.mutex);
        if (auto a = k.lease.try_spend(limits, token_cost, Clock::now())) co_return a;
      }
      if (!k.calling) break;
      // One lease call per key in flight: wait for it instead of making another.
      co_await k.call_done->async_wait(nothrow_awaitable);
      // A call that failed, or found no room for one more request, answers every request that
      // waited for it: each would get the same answer from Redis now. (A tokens refusal does
      // not: a cheaper request may fit, and the wait depends on the cost.)
      if (same_limits(k.last_limits, limits)) {
        if (!k.last_answer) co_return std::nullopt;
        if (!k.last_answer->allowed && limits.rpm &&
            k.last_answer->rejected_by == ratelimit::LimitKind::requests)
          co_return k.last_answer;
      }
    }
    k.calling = true;
    auto answer = co_await ask(key_name, k, limits, token_cost, size);
    k.last_answer = answer;
    k.last_limits = limits;
    k.calling = false;
    k.call_done->cancel();
    co_return answer;
  }

  // One script call: the key's pending deltas (and the rest of its lease, which ends here) go
  // with it; a leased key's grant becomes its new lease, the triggering request spent from it.
  asio::awaitable<std::optional<ratelimit::Admission>> ask(const std::string& key_name, KeyState& k,
                                                           ratelimit::KeyLimits limits,
                                                           std::int64_t token_cost,
                                                           ratelimit::LeaseSize size) {
    std::vector<ratelimit::CounterDelta> deltas;
    {
      std::lock_guard lock(k.mutex);
      if (auto rest = k.lease.end()) k.pending.add(*rest);
      deltas = k.pending.take();
    }
    // Taken before the call is even queued: Redis' clock cannot be past the grant's time then.
    const auto sent_at = Clock::now();
    auto args = script_args(key_name, limits, token_cost, size, deltas);
    auto r = co_await eval_script(client_, kAdmitScript, admit_sha_, std::move(args), 2);
    // (The deltas are not sent again after a failure: the script may have run, and giving a
    // lease's rest back twice could free quota another replica counted.)
    ratelimit::LeaseGrant grant;
    std::optional<ratelimit::Admission> a;
    if (r) a = decode_admission(*r, limits, &grant);
    if (!a) {
      note_health(false, !r ? client_.last_error() : r->is_error() ? r->str : "unexpected reply");
      co_return std::nullopt;
    }
    note_health(true, {});
    if (!a->allowed || !size.leased()) co_return a;
    // Never more than was asked for, whatever the server said.
    grant.requests = std::clamp<std::int64_t>(grant.requests, 1, size.requests);
    grant.tokens = std::clamp<std::int64_t>(grant.tokens, token_cost,
                                            ratelimit::saturating_add(token_cost, size.tokens));
    std::lock_guard lock(k.mutex);
    k.lease.install(grant, limits, sent_at);
    co_return k.lease.spend_granted(token_cost, Clock::now());
  }

  // Sends what keys collected and gives back the rest of leases that have ended, so that no
  // correction waits long for its key's next call and no ended lease holds quota for long.
  asio::awaitable<void> flush_loop() {
    for (;;) {
      flush_timer_.expires_after(kFlushEvery);
      auto [ec] = co_await flush_timer_.async_wait(nothrow_awaitable);
      if (ec) co_return;
      std::vector<std::pair<std::string, KeyState*>> all;
      {
        std::shared_lock lock(keys_mutex_);
        for (const auto& [key_name, st] : keys_) all.emplace_back(key_name, st.get());
      }
      for (auto& [key_name, k] : all) {
        if (k->calling) continue;  // the call in flight took them; the next one takes the rest
        std::vector<ratelimit::CounterDelta> deltas;
        {
          std::lock_guard lock(k->mutex);
          if (k->lease.held() && k->lease.expired(Clock::now())) {
            if (auto rest = k->lease.end()) k->pending.add(*rest);
          }
          deltas = k->pending.take();
        }
        if (!deltas.empty())
          asio::co_spawn(ioc_, flush(std::move(key_name), std::move(deltas)), asio::detached);
      }
    }
  }

  asio::awaitable<void> flush(std::string key_name, std::vector<ratelimit::CounterDelta> deltas) {
    const ratelimit::KeyLimits none;
    const ratelimit::LeaseSize no_lease{0, 0};
    auto args = script_args(key_name, none, -1, no_lease, deltas);
    auto r = co_await eval_script(client_, kAdmitScript, admit_sha_, std::move(args), 2);
    if (!r || r->is_error()) note_health(false, !r ? client_.last_error() : r->str);
  }

  asio::io_context ioc_{1};
  asio::executor_work_guard<asio::io_context::executor_type> work_;
  RedisClient client_;
  ratelimit::LeasePolicy policy_;
  std::string admit_sha_;
  std::shared_mutex keys_mutex_;
  std::unordered_map<std::string, std::unique_ptr<KeyState>> keys_;
  asio::steady_timer flush_timer_;
  bool down_ = false;  // only touched on the client's thread
  std::thread thread_;
};

// A 429's cooldown, written where every replica sees it: one key per backend with a PX expiry
// (kept only if longer than one already there), and its name in an index set. One hash tag, so
// a cluster keeps them on one shard.
constexpr std::string_view kCooldownSetScript = R"lua(
if redis.call('PTTL', KEYS[1]) < tonumber(ARGV[1]) then
  redis.call('SET', KEYS[1], '1', 'PX', ARGV[1])
end
redis.call('SADD', KEYS[2], ARGV[2])
return 1
)lua";

// Every cooldown still running: {name, remaining ms, ...}; expired names leave the index.
constexpr std::string_view kCooldownReadScript = R"lua(
local out = {}
for _, name in ipairs(redis.call('SMEMBERS', KEYS[1])) do
  local left = redis.call('PTTL', ARGV[1] .. name)
  if left > 0 then
    if #out < 1000 then
      out[#out + 1] = name
      out[#out + 1] = left
    end
  else
    redis.call('SREM', KEYS[1], name)
  end
end
return out
)lua";

class RedisCooldownShare {
 public:
  RedisCooldownShare(const config::RedisTarget& target, std::shared_ptr<BackendRegistry> registry)
      : work_(asio::make_work_guard(ioc_)),
        client_(ioc_, target),
        registry_(std::move(registry)),
        set_sha_(sha1_hex(kCooldownSetScript)),
        read_sha_(sha1_hex(kCooldownReadScript)),
        refresh_(ioc_),
        thread_([this] { ioc_.run(); }) {
    registry_->on_cooldown([this](const std::string& key, std::chrono::milliseconds left) {
      asio::co_spawn(ioc_, publish(key, left), asio::detached);
    });
    asio::co_spawn(ioc_, refresh_loop(), asio::detached);
  }

  ~RedisCooldownShare() {
    registry_->on_cooldown(nullptr);
    asio::post(ioc_, [this] { refresh_.cancel(); });
    work_.reset();
    ioc_.stop();
    thread_.join();
  }

 private:
  static constexpr auto kRefreshEvery = std::chrono::milliseconds(200);
  static constexpr std::string_view kPrefix = "{llmgw:cd}:";

  asio::awaitable<void> publish(std::string key, std::chrono::milliseconds left) {
    std::vector<std::string> args{std::string(kPrefix) + key, std::string(kPrefix) + "index",
                                  std::to_string(left.count()), key};
    auto r = co_await eval_script(client_, kCooldownSetScript, set_sha_, std::move(args), 2);
    if (!r || r->is_error())
      log::line(log::Level::warn, "backend cooldown not shared through redis",
                {{"detail", !r ? client_.last_error() : r->str}});
  }

  // Each replica reads every running cooldown a few times a second, off the request path.
  asio::awaitable<void> refresh_loop() {
    for (;;) {
      std::vector<std::string> args{std::string(kPrefix) + "index", std::string(kPrefix)};
      auto r = co_await eval_script(client_, kCooldownReadScript, read_sha_, std::move(args), 1);
      if (r && r->type == REDIS_REPLY_ARRAY) {
        std::vector<std::pair<std::string, std::chrono::milliseconds>> cooldowns;
        for (std::size_t i = 0; i + 1 < r->elements.size(); i += 2) {
          const Reply& name = r->elements[i];
          const Reply& left = r->elements[i + 1];
          if (name.type != REDIS_REPLY_STRING || left.type != REDIS_REPLY_INTEGER) continue;
          if (left.integer <= 0 || left.integer > 3600000) continue;
          cooldowns.emplace_back(name.str, std::chrono::milliseconds(left.integer));
        }
        if (!cooldowns.empty()) registry_->apply_shared_cooldowns(cooldowns, BackendClock::now());
      }
      refresh_.expires_after(kRefreshEvery);
      auto [ec] = co_await refresh_.async_wait(nothrow_awaitable);
      if (ec) co_return;
    }
  }

  asio::io_context ioc_{1};
  asio::executor_work_guard<asio::io_context::executor_type> work_;
  RedisClient client_;
  std::shared_ptr<BackendRegistry> registry_;
  std::string set_sha_;
  std::string read_sha_;
  asio::steady_timer refresh_;
  std::thread thread_;
};

}  // namespace

std::shared_ptr<ratelimit::CounterStore> make_redis_store(const config::RedisTarget& target,
                                                          ratelimit::LeasePolicy lease) {
  return std::make_shared<RedisStore>(target, lease);
}

std::shared_ptr<void> share_cooldowns_through_redis(const config::RedisTarget& target,
                                                    std::shared_ptr<BackendRegistry> registry) {
  return std::make_shared<RedisCooldownShare>(target, std::move(registry));
}

}  // namespace llmgw::net
