#include "llm_gateway/observability/access_log.hpp"

#include "llm_gateway/observability/log.hpp"

#include <prometheus/counter.h>

#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>

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

void AccessLogWriter::note_dropped(std::uint64_t lines) {
  dropped_.fetch_add(lines);
  if (dropped_counter_) dropped_counter_->Increment(static_cast<double>(lines));
}

void AccessLogWriter::write(std::string_view line) {
  const std::size_t size = line.size() + 1;  // and its newline
  bool was_empty = false;
  bool crossed = false;
  {
    std::lock_guard lock(mutex_);
    if (queue_.size() + size > kMaxQueuedBytes) {
      note_dropped(1);
      return;
    }
    was_empty = queue_.empty();
    crossed = queue_.size() < kFlushBytes && queue_.size() + size >= kFlushBytes;
    // Lines queue back to back in one buffer, which keeps its capacity from batch to batch: no
    // allocation per line, and the writer hands the whole batch to one write(2).
    queue_.append(line);
    queue_ += '\n';
  }
  // The writer drains the whole queue when it wakes: only the first line of a batch wakes it
  // (and a batch grown to kFlushBytes, which the writer then stops waiting for).
  if (was_empty || crossed) wake_.notify_one();
}

void AccessLogWriter::reopen() {
  {
    std::lock_guard lock(mutex_);
    reopen_requested_ = true;
  }
  wake_.notify_one();
}

// Writes a batch (whole lines, each ending in a newline) with write(2) on the file's descriptor
// (no stdio buffer that could hold failed bytes back), and returns how many lines did not make it
// whole. A full disk fails the write: the lines are lost and counted, and the next batch tries
// again, so logging resumes once there is room.
std::uint64_t AccessLogWriter::write_batch(std::string& batch) {
  // A line cut by an earlier failure that could not be taken back is ended first.
  const std::size_t prefix = terminate_partial_line_ ? 1 : 0;
  if (prefix) batch.insert(batch.begin(), '\n');
  const int fd = ::fileno(file_);
  std::size_t written = 0;
  while (written < batch.size()) {
    const ssize_t n = ::write(fd, batch.data() + written, batch.size() - written);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) break;
    written += static_cast<std::size_t>(n);
  }
  if (written >= prefix) terminate_partial_line_ = false;
  if (written == batch.size()) return 0;
  // Bytes up to the last newline written are whole lines; each newline after it ends a lost one.
  const std::string_view sent(batch.data(), written);
  const std::size_t last_newline = sent.rfind('\n');
  const std::size_t whole = last_newline == std::string_view::npos ? 0 : last_newline + 1;
  const std::uint64_t lost = static_cast<std::uint64_t>(std::count(
      batch.begin() + static_cast<std::ptrdiff_t>(std::max(whole, prefix)), batch.end(), '\n'));
  if (written > whole) {
    // A line cut by the failure stays in the file: take it back out, so that the next line
    // does not get glued to it (on a pipe, which cannot shrink, a newline ends it instead).
    const off_t file_size = ::lseek(fd, 0, SEEK_END);
    const auto partial = static_cast<off_t>(written - whole);
    if (file_size < partial || ::ftruncate(fd, file_size - partial) != 0)
      terminate_partial_line_ = true;
  }
  return lost;
}

void AccessLogWriter::run() {
  std::string batch;
  for (;;) {
    bool reopen = false;
    bool stop = false;
    {
      std::unique_lock lock(mutex_);
      wake_.wait(lock, [this] { return stopping_ || reopen_requested_ || !queue_.empty(); });
      // Let the batch grow for a moment, as nginx's `access_log ... flush=`: under load a write
      // (and a wake-up of this thread, on the core the I/O thread needs) per few milliseconds
      // instead of one per request. Shutdown and reopen do not wait.
      wake_.wait_for(lock, kFlushDelay, [this] {
        return stopping_ || reopen_requested_ || queue_.size() >= kFlushBytes;
      });
      batch.swap(queue_);
      reopen = reopen_requested_;
      reopen_requested_ = false;
      stop = stopping_;
    }
    if (reopen && target_ != "stdout") open_file();
    if (file_ && !batch.empty()) {
      const std::uint64_t lost = write_batch(batch);
      if (lost) {
        note_dropped(lost);
        if (!write_failing_)
          log::line(log::Level::error, "cannot write the access log; dropping lines",
                    {{"path", target_}, {"detail", std::strerror(errno)}});
        write_failing_ = true;
      } else {
        write_failing_ = false;
      }
    } else if (!file_ && !batch.empty()) {
      note_dropped(static_cast<std::uint64_t>(std::count(batch.begin(), batch.end(), '\n')));
    }
    batch.clear();
    // After a burst, do not keep a buffer the size of the burst (it returns to the queue).
    if (batch.capacity() > kKeptBatchCapacity) std::string().swap(batch);
    if (stop) {
      std::lock_guard lock(mutex_);
      if (queue_.empty()) return;
    }
  }
}

}  // namespace llmgw::observability
