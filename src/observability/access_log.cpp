#include "llm_gateway/observability/access_log.hpp"

#include "llm_gateway/observability/log.hpp"

namespace llmgw::observability {

AccessLogWriter::AccessLogWriter(std::string target) : target_(std::move(target)) {
  open_file();
  thread_ = std::thread([this] { run(); });
}

AccessLogWriter::~AccessLogWriter() {
  {
    std::lock_guard lock(mutex_);
    stopping_ = true;
  }
  wake_.notify_one();
  thread_.join();
  if (file_ && file_ != stdout) std::fclose(file_);
}

void AccessLogWriter::open_file() {
  if (target_ == "stdout") {
    file_ = stdout;
    return;
  }
  std::FILE* f = std::fopen(target_.c_str(), "a");
  if (!f) {
    log::line(log::Level::error, "cannot open the access log", {{"path", target_}});
    return;
  }
  if (file_ && file_ != stdout) std::fclose(file_);
  file_ = f;
}

void AccessLogWriter::write(std::string line) {
  line += '\n';
  bool was_empty = false;
  {
    std::lock_guard lock(mutex_);
    was_empty = queue_.empty();
    queue_.push_back(std::move(line));
  }
  // The writer drains the whole queue when it wakes: only the first line of a batch wakes it.
  if (was_empty) wake_.notify_one();
}

void AccessLogWriter::reopen() {
  {
    std::lock_guard lock(mutex_);
    reopen_requested_ = true;
  }
  wake_.notify_one();
}

void AccessLogWriter::run() {
  std::vector<std::string> batch;
  for (;;) {
    bool reopen = false;
    bool stop = false;
    {
      std::unique_lock lock(mutex_);
      wake_.wait(lock, [this] { return stopping_ || reopen_requested_ || !queue_.empty(); });
      batch.swap(queue_);
      reopen = reopen_requested_;
      reopen_requested_ = false;
      stop = stopping_;
    }
    if (reopen && target_ != "stdout") open_file();
    if (file_) {
      for (const auto& line : batch) std::fwrite(line.data(), 1, line.size(), file_);
      if (!batch.empty()) std::fflush(file_);
    }
    batch.clear();
    if (stop) {
      std::lock_guard lock(mutex_);
      if (queue_.empty()) return;
    }
  }
}

}  // namespace llmgw::observability
