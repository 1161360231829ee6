#include "llm_gateway/observability/log.hpp"

#include <atomic>
#include <chrono>
#include <cstdio>
#include <ctime>

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

std::string rfc3339(std::chrono::system_clock::time_point now) {
  const auto ms =
      std::chrono::duration_cast<std::chrono::milliseconds>(now.time_since_epoch()).count() % 1000;
  const std::time_t t = std::chrono::system_clock::to_time_t(now);
  std::tm tm{};
  gmtime_r(&t, &tm);
  char buf[64];
  std::snprintf(buf, sizeof buf, "%04d-%02d-%02dT%02d:%02d:%02d.%03dZ", tm.tm_year + 1900,
                tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec, static_cast<int>(ms));
  return buf;
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
