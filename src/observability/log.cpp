#include "llm_gateway/observability/log.hpp"

#include <atomic>
#include <chrono>
#include <cstdio>
#include <ctime>
#include <limits>

#include "llm_gateway/translate/json_scan.hpp"

namespace llmgw::log {

namespace {
std::atomic<int> min_level{static_cast<int>(Level::info)};
}

void set_min_level(Level level) {
  min_level.store(static_cast<int>(level));
}

std::string rfc3339_now() {
  return rfc3339(std::chrono::system_clock::now());
}

void append_rfc3339(std::string& out, std::chrono::system_clock::time_point t) {
  using namespace std::chrono;
  const auto since_epoch = duration_cast<milliseconds>(t.time_since_epoch());
  const auto second = floor<seconds>(since_epoch);
  const auto ms = static_cast<int>((since_epoch - second).count());
  // The date and time of day change once a second: each thread formats them once per second
  // (as nginx caches its time strings), and every access-log line in that second copies them.
  struct SecondText {
    long long second = std::numeric_limits<long long>::min();
    char text[64] = {};
    int size = 0;
  };
  thread_local SecondText cached;
  if (cached.second != second.count()) {
    const auto t_seconds = static_cast<std::time_t>(second.count());
    std::tm tm{};
    gmtime_r(&t_seconds, &tm);
    cached.size = std::snprintf(cached.text, sizeof cached.text, "%04d-%02d-%02dT%02d:%02d:%02d",
                                tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min,
                                tm.tm_sec);
    if (cached.size < 0 || cached.size >= static_cast<int>(sizeof cached.text)) cached.size = 0;
    cached.second = second.count();
  }
  const char millis[] = {'.', static_cast<char>('0' + ms / 100),
                         static_cast<char>('0' + ms / 10 % 10), static_cast<char>('0' + ms % 10),
                         'Z'};
  out.append(cached.text, static_cast<std::size_t>(cached.size));
  out.append(millis, sizeof millis);
}

std::string rfc3339(std::chrono::system_clock::time_point t) {
  std::string out;
  append_rfc3339(out, t);
  return out;
}

void line(Level level, std::string_view msg, std::initializer_list<Field> fields) {
  if (static_cast<int>(level) < min_level.load(std::memory_order_relaxed)) return;
  static constexpr const char* kNames[] = {"debug", "info", "warn", "error"};
  std::string out = "{\"ts\":\"" + rfc3339_now() + "\",\"level\":\"" +
                    kNames[static_cast<int>(level)] + "\",\"msg\":" + json::encode_string(msg);
  for (const auto& [k, v] : fields) {
    out += ',';
    out += json::encode_string(k);
    out += ':';
    out += json::encode_string(v);
  }
  out += "}\n";
  // One write per line so concurrent threads never interleave within a line.
  std::fwrite(out.data(), 1, out.size(), stderr);
  std::fflush(stderr);
}

}  // namespace llmgw::log
