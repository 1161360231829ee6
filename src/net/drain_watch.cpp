// DrainWatch: see drain_aware_read.hpp for why a drain-aware read needs it.
#include <poll.h>

#include "drain_aware_read.hpp"

namespace llmgw::net {
namespace {
thread_local DrainWatch* current_watch = nullptr;
}

DrainWatch::DrainWatch() = default;
DrainWatch::~DrainWatch() = default;

DrainWatch* DrainWatch::current() {
  return current_watch;
}

DrainWatch::Installed::Installed(DrainWatch& w) : previous_(current_watch) {
  current_watch = &w;
}
DrainWatch::Installed::~Installed() {
  current_watch = previous_;
}

void DrainWatch::start(const boost::asio::any_io_executor& ex) {
  timer_.emplace(ex);
#if LLMGW_DRAIN_AWARE_READ
  reactor_ = &boost::asio::use_service<boost::asio::detail::reactor>(
      boost::asio::query(ex, boost::asio::execution::context));
#endif
  if (head_) arm();
}

void DrainWatch::stop() {
  timer_.reset();  // a pending wait completes as cancelled and finds nothing to do
#if LLMGW_DRAIN_AWARE_READ
  reactor_ = nullptr;
#endif
  armed_ = false;
}

void DrainWatch::add(Node& n) {
  // One writer: a plain load and store, no locked read-modify-write on the request path.
  drain_aware_exchanges_.store(drain_aware_exchanges_.load(std::memory_order_relaxed) + 1,
                               std::memory_order_relaxed);
  n.prev = nullptr;
  n.next = head_;
  if (head_) head_->prev = &n;
  head_ = &n;
  if (!armed_) arm();
}

void DrainWatch::remove(Node& n) {
  if (n.prev)
    n.prev->next = n.next;
  else if (head_ == &n)
    head_ = n.next;
  if (n.next) n.next->prev = n.prev;
  n.prev = n.next = nullptr;
}

void DrainWatch::arm() {
  if (!timer_) return;
  armed_ = true;
  timer_->expires_after(kInterval);
  timer_->async_wait([this](boost::system::error_code ec) {
    if (ec) return;  // stopped
    armed_ = false;
    sweep();
    if (head_) arm();
  });
}

void DrainWatch::sweep() {
  fds_.clear();
  polled_.clear();
  for (Node* n = head_; n; n = n->next) {
    if (n->rearmed || !n->socket->is_open()) continue;
    fds_.push_back({n->socket->native_handle(), POLLRDHUP, 0});
    polled_.push_back(n);
  }
  if (fds_.empty()) return;
  if (::poll(fds_.data(), fds_.size(), 0) <= 0) return;
  for (std::size_t i = 0; i < fds_.size(); ++i) {
    if ((fds_[i].revents & (POLLRDHUP | POLLHUP | POLLERR)) == 0) continue;
    Node& n = *polled_[i];
    n.rearmed = true;
    // A wait for an error condition, when none is pending yet, makes the reactor re-arm the
    // socket's epoll registration (EPOLL_CTL_MOD), and epoll reports the readable end of stream
    // again: a pending read takes it, or the next read's speculative recv does. The wait itself
    // ends with the socket (operation_aborted) or with an error on it; either way nothing to do.
    n.socket->async_wait(Socket::wait_error, [](boost::system::error_code) {});
  }
}

}  // namespace llmgw::net
