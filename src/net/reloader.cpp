#include "reloader.hpp"

#include <openssl/evp.h>

#include <fstream>
#include <sstream>

#include "llm_gateway/observability/log.hpp"

namespace llmgw::net {

namespace {
std::optional<std::string> read_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return std::nullopt;
  std::ostringstream text;
  text << in.rdbuf();
  if (in.bad()) return std::nullopt;
  return std::move(text).str();
}

double unix_now() {
  return std::chrono::duration<double>(std::chrono::system_clock::now().time_since_epoch()).count();
}
}  // namespace

std::string config_hash(const std::string& text) {
  unsigned char digest[EVP_MAX_MD_SIZE];
  unsigned int len = 0;
  EVP_Digest(text.data(), text.size(), digest, &len, EVP_sha256(), nullptr);
  static constexpr char kHex[] = "0123456789abcdef";
  std::string out;
  for (unsigned int i = 0; i < 6 && i < len; ++i) {
    out += kHex[digest[i] >> 4];
    out += kHex[digest[i] & 0xF];
  }
  return out;
}

Reloader::Reloader(std::string file, Hooks hooks, observability::Metrics* metrics)
    : file_(std::move(file)), hooks_(std::move(hooks)), metrics_(metrics) {
  // The content the process started with is the baseline (the file was read moments ago).
  if (auto text = read_file(file_)) {
    seen_text_ = *text;
    if (metrics_) metrics_->config_loaded(config_hash(*text), unix_now());
  }
  thread_ = std::thread([this] { run(); });
}

Reloader::~Reloader() {
  {
    std::lock_guard lock(mutex_);
    stopping_ = true;
  }
  wake_.notify_all();
  thread_.join();
}

void Reloader::request() {
  {
    std::lock_guard lock(mutex_);
    requested_ = true;
  }
  wake_.notify_all();
}

void Reloader::run() {
  for (;;) {
    bool forced = false;
    {
      std::unique_lock lock(mutex_);
      const auto poll = hooks_.poll_interval();
      auto woken = [this] { return requested_ || stopping_; };
      if (poll.count() > 0) {
        wake_.wait_for(lock, poll, woken);
      } else {
        wake_.wait(lock, woken);
      }
      if (stopping_) return;
      forced = requested_;
      requested_ = false;
    }
    const std::optional<std::string> text = read_file(file_);
    if (!text) {
      // A file being replaced may be missing for a moment: only a requested reload reports it.
      if (forced) {
        log::line(log::Level::error, "configuration reload failed",
                  {{"config", file_}, {"detail", "cannot read the file"}});
        if (metrics_) metrics_->config_reload_failed();
      }
      continue;
    }
    if (!forced && *text == seen_text_) continue;
    const std::string hash = config_hash(*text);
    seen_text_ = *text;
    reload(*text, hash);
  }
}

void Reloader::reload(const std::string& text, const std::string& hash) {
  ReloadOutcome outcome = hooks_.load(text);
  if (!outcome.snapshot) {
    // The old configuration keeps serving; each problem is logged where it is.
    for (const auto& problem : outcome.problems) {
      log::line(log::Level::error, "configuration reload failed",
                {{"config", file_}, {"detail", problem}});
    }
    if (metrics_) metrics_->config_reload_failed();
    return;
  }
  const std::string error = hooks_.install(outcome.snapshot);
  if (!error.empty()) {
    log::line(log::Level::error, "configuration reload failed",
              {{"config", file_}, {"detail", error}});
    if (metrics_) metrics_->config_reload_failed();
    return;
  }
  if (metrics_) metrics_->config_reloaded(hash, unix_now());
  log::line(log::Level::info, "configuration reloaded", {{"config", file_}, {"hash", hash}});
}

}  // namespace llmgw::net
