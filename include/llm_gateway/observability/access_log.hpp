#pragma once
// The access log sink: one JSON line per proxied request, to stdout or a file. I/O threads only
// queue the line (a short lock, never a write); a thread of its own writes and flushes. SIGUSR1
// (via reopen()) reopens the file after logrotate moved it.
#include <condition_variable>
#include <cstdio>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

namespace llmgw::observability {

class AccessLogWriter {
 public:
  explicit AccessLogWriter(std::string target);  // "stdout" or a file path
  ~AccessLogWriter();                            // writes what is queued, then stops
  AccessLogWriter(const AccessLogWriter&) = delete;
  AccessLogWriter& operator=(const AccessLogWriter&) = delete;

  void write(std::string line);  // `line` without the trailing newline
  void reopen();
  bool ok() const { return file_ != nullptr; }

 private:
  void run();
  void open_file();

  std::string target_;
  std::FILE* file_ = nullptr;
  std::mutex mutex_;
  std::condition_variable wake_;
  std::vector<std::string> queue_;
  bool reopen_requested_ = false;
  bool stopping_ = false;
  std::thread thread_;
};

}  // namespace llmgw::observability
