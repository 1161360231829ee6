#include "llm_gateway/routing/backends.hpp"

#include <algorithm>
#include <charconv>
#include <ctime>

namespace llmgw {

namespace {
constexpr auto kMaxRetryAfter = std::chrono::hours(1);

std::optional<std::int64_t> whole_number(std::string_view s) {
  while (!s.empty() && (s.front() == ' ' || s.front() == '\t')) s.remove_prefix(1);
  while (!s.empty() && (s.back() == ' ' || s.back() == '\t')) s.remove_suffix(1);
  std::int64_t v = 0;
  auto [end, ec] = std::from_chars(s.data(), s.data() + s.size(), v);
  if (s.empty() || ec != std::errc() || end != s.data() + s.size() || v < 0) return std::nullopt;
  return v;
}

std::chrono::milliseconds capped(std::int64_t ms) {
  return std::min<std::chrono::milliseconds>(std::chrono::milliseconds(ms), kMaxRetryAfter);
}
}  // namespace

std::string backend_key(std::string_view upstream, std::string_view deployment) {
  std::string key;
  key.reserve(upstream.size() + 1 + deployment.size());
  key.append(upstream).append(1, '\n').append(deployment);
  return key;
}

std::optional<std::chrono::milliseconds> retry_after_from(
    std::string_view retry_after_ms, std::string_view x_ms_retry_after_ms,
    std::string_view retry_after, std::chrono::system_clock::time_point wall_now) {
  if (auto ms = whole_number(retry_after_ms)) return capped(*ms);
  if (auto ms = whole_number(x_ms_retry_after_ms)) return capped(*ms);
  if (auto s = whole_number(retry_after)) {
    return capped(*s > kMaxRetryAfter.count() * 3600 ? kMaxRetryAfter.count() * 3600000
                                                     : *s * 1000);
  }
  if (retry_after.size() >= 20 && retry_after.size() < 64) {
    // An HTTP date (IMF-fixdate, RFC 9110 §5.6.7): "Sun, 06 Nov 1994 08:49:37 GMT".
    const std::string text(retry_after);
    std::tm tm{};
    const char* end = strptime(text.c_str(), "%a, %d %b %Y %H:%M:%S GMT", &tm);
    if (end && *end == '\0') {
      const auto when = std::chrono::system_clock::from_time_t(timegm(&tm));
      const auto ms = std::chrono::duration_cast<std::chrono::milliseconds>(when - wall_now);
      return capped(std::max<std::int64_t>(0, ms.count()));
    }
  }
  return std::nullopt;
}

std::string_view to_string(BackendState s) {
  switch (s) {
    case BackendState::available: return "available";
    case BackendState::cooldown: return "cooldown";
    case BackendState::ejected: return "ejected";
  }
  return "available";
}

BackendRegistry::Entry& BackendRegistry::entry(const std::string& key,
                                               BackendClock::time_point now) {
  auto it = backends_.find(key);
  if (it == backends_.end()) {
    if (backends_.size() >= kMaxBackends) {
      // Forget the stalest one that holds nothing still in force.
      auto stalest = backends_.end();
      for (auto i = backends_.begin(); i != backends_.end(); ++i) {
        const bool in_force = i->second.cooldown_until > now || i->second.health.ejected(now) ||
                              i->second.health.probing();
        if (!in_force &&
            (stalest == backends_.end() || i->second.touched < stalest->second.touched))
          stalest = i;
      }
      if (stalest == backends_.end()) stalest = backends_.begin();
      backends_.erase(stalest);
    }
    it = backends_.emplace(key, Entry{}).first;
  }
  it->second.touched = now;
  return it->second;
}

BackendRegistry::Snapshot BackendRegistry::view(const std::string& key, std::string_view upstream,
                                                BackendClock::time_point now) const {
  std::lock_guard lock(mutex_);
  Snapshot s;
  const Health* host = nullptr;
  if (auto h = hosts_.find(std::string(upstream)); h != hosts_.end()) host = &h->second;
  const Entry* e = nullptr;
  if (auto it = backends_.find(key); it != backends_.end()) e = &it->second;
  s.ejected = (e && e->health.ejected(now)) || (host && host->ejected(now));
  if (s.ejected) {
    if (e && e->health.ejected(now)) s.back_at = e->health.ejected_until;
    if (host && host->ejected(now)) s.back_at = std::max(s.back_at, host->ejected_until);
  }
  if (!s.ejected) {
    s.probe_needed = (e && e->health.probing()) || (host && host->probing());
    s.probe_taken = (e && e->health.probing() && e->health.probe_in_flight) ||
                    (host && host->probing() && host->probe_in_flight);
  }
  if (e) {
    s.cooldown_until = e->cooldown_until;
    if (now - e->reported_at < kReportTtl) {
      s.remaining_tokens = e->remaining_tokens;
      s.remaining_requests = e->remaining_requests;
    }
  }
  return s;
}

bool BackendRegistry::claim_probe(const std::string& key, std::string_view upstream) {
  std::lock_guard lock(mutex_);
  Health* host = nullptr;
  if (auto h = hosts_.find(std::string(upstream)); h != hosts_.end()) host = &h->second;
  Health* be = nullptr;
  if (auto it = backends_.find(key); it != backends_.end()) be = &it->second.health;
  if ((host && host->probing() && host->probe_in_flight) ||
      (be && be->probing() && be->probe_in_flight))
    return false;
  if (host && host->probing()) host->probe_in_flight = true;
  if (be && be->probing()) be->probe_in_flight = true;
  return true;
}

void BackendRegistry::release_probe(const std::string& key, std::string_view upstream) {
  std::lock_guard lock(mutex_);
  if (auto h = hosts_.find(std::string(upstream)); h != hosts_.end())
    h->second.probe_in_flight = false;
  if (auto it = backends_.find(key); it != backends_.end())
    it->second.health.probe_in_flight = false;
}

void BackendRegistry::cooldown(const std::string& key, BackendClock::time_point until) {
  const auto now = BackendClock::now();
  std::function<void(const std::string&, std::chrono::milliseconds)> notify;
  {
    std::lock_guard lock(mutex_);
    Entry& e = entry(key, now);
    e.cooldown_until = until;
    // The cooldown governs now: a quota report from before the 429 says nothing.
    e.remaining_tokens.reset();
    e.remaining_requests.reset();
    notify = on_cooldown_;
  }
  if (notify && until > now) notify(key, std::chrono::ceil<std::chrono::milliseconds>(until - now));
}

void BackendRegistry::eject(Health& h, BackendClock::time_point now) {
  ++h.ejections;
  auto backoff = std::chrono::duration_cast<BackendClock::duration>(kMinEjection);
  for (unsigned i = 1; i < h.ejections && backoff < kMaxEjection; ++i) backoff *= 2;
  backoff = std::min<BackendClock::duration>(backoff, kMaxEjection);
  h.ejected_until = now + backoff;
  h.consecutive_failures = 0;
  h.probe_in_flight = false;
}

void BackendRegistry::success(const std::string& key, std::string_view upstream) {
  std::lock_guard lock(mutex_);
  if (auto it = backends_.find(key); it != backends_.end()) it->second.health = Health{};
  // An answer came through the host: it is up.
  if (auto h = hosts_.find(std::string(upstream)); h != hosts_.end()) h->second = Health{};
}

void BackendRegistry::failure(const std::string& key, std::string_view upstream,
                              bool connection_level, unsigned eject_after,
                              BackendClock::time_point now) {
  std::lock_guard lock(mutex_);
  Health& h = connection_level ? hosts_[std::string(upstream)] : entry(key, now).health;
  if (h.probing() && !h.ejected(now)) {
    eject(h, now);  // the probe failed: out again, for twice as long
    return;
  }
  if (++h.consecutive_failures >= eject_after) eject(h, now);
}

void BackendRegistry::report(const std::string& key, std::optional<std::int64_t> requests,
                             std::optional<std::int64_t> tokens, BackendClock::time_point now) {
  if (!requests && !tokens) return;
  std::lock_guard lock(mutex_);
  Entry& e = entry(key, now);
  e.remaining_requests = requests;
  e.remaining_tokens = tokens;
  e.reported_at = now;
}

void BackendRegistry::apply_shared_cooldowns(
    const std::vector<std::pair<std::string, std::chrono::milliseconds>>& cooldowns,
    BackendClock::time_point now) {
  std::lock_guard lock(mutex_);
  for (const auto& [key, remaining] : cooldowns) {
    const auto until = now + remaining;
    Entry& e = entry(key, now);
    if (until > e.cooldown_until) {
      e.cooldown_until = until;
      e.remaining_tokens.reset();
      e.remaining_requests.reset();
    }
  }
}

void BackendRegistry::on_cooldown(
    std::function<void(const std::string&, std::chrono::milliseconds)> fn) {
  std::lock_guard lock(mutex_);
  on_cooldown_ = std::move(fn);
}

BackendState BackendRegistry::state(const std::string& key, std::string_view upstream,
                                    BackendClock::time_point now) const {
  const Snapshot s = view(key, upstream, now);
  if (s.ejected) return BackendState::ejected;
  if (now < s.cooldown_until) return BackendState::cooldown;
  return BackendState::available;
}

bool BackendRegistry::reported(const std::string& key) const {
  std::lock_guard lock(mutex_);
  auto it = backends_.find(key);
  return it != backends_.end() && it->second.reported_at != BackendClock::time_point{};
}

std::size_t BackendRegistry::pick_weighted(const std::string& route,
                                           const std::vector<std::string>& keys,
                                           const std::vector<unsigned>& weights) {
  if (keys.size() <= 1) return 0;
  std::lock_guard lock(mutex_);
  if (swrr_.size() > 4 * kMaxBackends) swrr_.clear();
  long long total = 0;
  std::size_t best = 0;
  long long* best_current = nullptr;  // (references into an unordered_map survive insertions)
  std::string name = route;
  name += '\n';
  const std::size_t prefix = name.size();
  for (std::size_t i = 0; i < keys.size(); ++i) {
    name.resize(prefix);
    name += keys[i];
    long long& current = swrr_[name];
    current += weights[i];
    total += weights[i];
    if (!best_current || current > *best_current) {
      best = i;
      best_current = &current;
    }
  }
  *best_current -= total;
  return best;
}

}  // namespace llmgw
