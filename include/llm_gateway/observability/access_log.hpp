#pragma once
// The access log sink: one JSON line per proxied request, to stdout or a file. I/O threads only
// queue the line (a short lock, never a write); a thread of its own writes and flushes. SIGUSR1
// (via reopen()) reopens the file after logrotate moved it. The queue is bounded: when the disk
// cannot keep up (or is full), lines are dropped and counted, never held without limit.
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <cstdio>
#include <mutex>
#include <string>
#include <string_view>
#include <thread>

namespace prometheus {
class Counter;
}

namespace llmgw::observability {

class AccessLogWriter {
 public:
  explicit AccessLogWriter(std::string target);  // "stdout" or a file path
  ~AccessLogWriter();                            // writes what is queued, then stops
  AccessLogWriter(const AccessLogWriter&) = delete;
  AccessLogWriter& operator=(const AccessLogWriter&) = delete;

  // One line: `line` holds no newline (the access log's JSON escapes them); the writer adds one.
  void write(std::string_view line);
  void reopen();
  bool ok() const { return file_ != nullptr; }
  // Lines lost (queue full, or a failed write) are counted here as well as in dropped().
  void count_dropped_in(prometheus::Counter* counter) { dropped_counter_ = counter; }
  std::uint64_t dropped() const { return dropped_.load(); }

  static constexpr std::size_t kMaxQueuedBytes = 64 * 1024 * 1024;
  // A line reaches the file at most this long after its request ended (or sooner, once this
  // many bytes are waiting).
  static constexpr std::chrono::milliseconds kFlushDelay{20};
  static constexpr std::size_t kFlushBytes = 256 * 1024;
  // A batch buffer that grew past this in a burst is released once written.
  static constexpr std::size_t kKeptBatchCapacity = 4 * kFlushBytes;

 private:
  void run();
  void open_file();
  void note_dropped(std::uint64_t lines);
  std::uint64_t write_batch(std::string& batch);

  std::string target_;
  std::FILE* file_ = nullptr;
  std::mutex mutex_;
  std::condition_variable wake_;
  std::string queue_;  // whole lines, each ending in a newline
  std::atomic<std::uint64_t> dropped_{0};
  prometheus::Counter* dropped_counter_ = nullptr;
  bool write_failing_ = false;           // logged once per episode
  bool terminate_partial_line_ = false;  // a cut line could not be removed (writer thread only)
  bool reopen_requested_ = false;
  bool stopping_ = false;
  std::thread thread_;
};

}  // namespace llmgw::observability
