#pragma once
// Internal to src/net: the configuration reloader. One thread of its own (it reads a file and
// builds a snapshot: never on an I/O thread) that reloads on request (SIGHUP) and whenever the
// file's content changed (polled every reload.poll_ms; a file replaced by rename, as Kubernetes
// does for a mounted ConfigMap, is a change).
#include <chrono>
#include <condition_variable>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <thread>

#include "llm_gateway/net/gateway.hpp"

namespace llmgw::net {

class Reloader {
 public:
  struct Hooks {
    std::function<ReloadOutcome(const std::string& text)> load;
    // Installs a valid snapshot; "" on success, else why it could not be installed.
    std::function<std::string(std::shared_ptr<const Snapshot>)> install;
    std::function<std::chrono::milliseconds()> poll_interval;  // of the configuration in use
  };
  Reloader(std::string file, Hooks hooks, observability::Metrics* metrics);
  ~Reloader();  // stops and joins the thread
  Reloader(const Reloader&) = delete;
  Reloader& operator=(const Reloader&) = delete;

  void request();  // reload now (SIGHUP), even if the content did not change

 private:
  void run();
  void reload(const std::string& text, const std::string& hash);

  const std::string file_;
  Hooks hooks_;
  observability::Metrics* metrics_;
  std::mutex mutex_;
  std::condition_variable wake_;
  bool requested_ = false;
  bool stopping_ = false;
  // The content last loaded or tried (a broken file is tried once). A poll compares the text
  // itself: hashing it each time (SHA-256 through OpenSSL's provider lookup, ~100k instructions)
  // cost more than everything else a poll does; the hash is made only for a changed file.
  std::string seen_text_;
  std::thread thread_;
};

// A short hash of a configuration file's content (12 hex digits of its SHA-256).
std::string config_hash(const std::string& text);

}  // namespace llmgw::net
