#pragma once
// Diagnostics: one JSON object per line on stderr ({"ts","level","msg",...fields}). Used for
// startup, configuration and upstream trouble, never on the per-request hot path. Callers pass
// names and error descriptions only: keys and secrets are never handed to the logger.
#include <chrono>
#include <initializer_list>
#include <string>
#include <string_view>
#include <utility>

namespace llmgw::log {

enum class Level { debug, info, warn, error };

using Field = std::pair<std::string_view, std::string_view>;

void line(Level level, std::string_view msg, std::initializer_list<Field> fields = {});

// Lines below this level are dropped. Set once at startup (logging.level), before any thread.
void set_min_level(Level level);

// RFC 3339 UTC timestamp with milliseconds, e.g. 2026-11-28T23:02:38.123Z.
std::string rfc3339(std::chrono::system_clock::time_point t);
std::string rfc3339_now();
// The same, appended to `out`; the date and time of day are formatted once per second per thread.
void append_rfc3339(std::string& out, std::chrono::system_clock::time_point t);

}  // namespace llmgw::log
