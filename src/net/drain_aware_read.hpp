#pragma once
// Internal to src/net: a read on a TCP socket that tells Asio's reactor when it drained the socket,
// so that the next read waits for readiness instead of first trying a recv that fails. Upstream
// connections read this way during an attempt, plain ones and the TCP layer under TLS alike.
//
// Why: Asio 1.81 starts every async_read_some with a speculative recv() unless the last read on
// the descriptor returned 0 bytes. A relayed SSE event is one upstream read; by the time the
// relay asks for the next event the socket is empty, so every event cost a recvmsg that returned
// EAGAIN before the reactor waited for it (strace: 2 recvmsg per relayed event, one of them
// EAGAIN; nginx makes 1). A TCP recv that returns fewer bytes than asked for emptied the receive
// queue at that moment; this operation reports that to the reactor ("done and exhausted"), which
// then skips the speculative recv of the next read until the descriptor turns readable again.
// The reactor makes both decisions under the descriptor's lock, and readiness that arrives after
// the short read sets the speculative flag again, so no edge is lost.
//
// One case the short read cannot see: the peer's FIN (or RST) already queued behind the bytes it
// returned, with its readiness taken by the same epoll_wait as theirs. Then no readiness will
// come again, and a read that skips the recv would wait for the exchange's deadline. nginx learns
// it from EPOLLRDHUP in the event; Asio does not pass events on. So every I/O thread has a
// DrainWatch: every 100 ms (only while connections are watched) one poll() over the watched
// sockets looks for a hang-up, and a socket that has one gets its epoll registration re-armed,
// which reports its readiness again and lets the pending read see the end of stream. A FIN right
// behind the last bytes of a body cut short, or of a body that ends with the connection, is
// seen within about 100 ms instead of at once; every other read is unchanged.
//
// This is Asio's own reactive receive operation (reactive_socket_recv_op) with that one change,
// built on Asio's detail layer of Boost 1.81 (Debian bookworm); any other Boost, or a reactor that
// is not epoll (or a build with LLMGW_NO_DRAIN_AWARE_READ defined), takes the socket's ordinary
// async_read_some.
#include <atomic>
#include <boost/asio/associated_cancellation_slot.hpp>
#include <boost/asio/async_result.hpp>
#include <boost/asio/basic_stream_socket.hpp>
#include <boost/asio/buffer.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/beast/core/tcp_stream.hpp>
#include <boost/version.hpp>
#include <cstdint>
#include <optional>
#include <type_traits>
#include <utility>
#include <vector>

struct pollfd;

#if BOOST_VERSION == 108100 && defined(BOOST_ASIO_HAS_EPOLL) && \
    !defined(BOOST_ASIO_HAS_IO_URING_AS_DEFAULT) && !defined(LLMGW_NO_DRAIN_AWARE_READ)
#include <boost/asio/detail/fenced_block.hpp>
#include <boost/asio/detail/handler_alloc_helpers.hpp>
#include <boost/asio/detail/handler_cont_helpers.hpp>
#include <boost/asio/detail/handler_work.hpp>
#include <boost/asio/detail/reactor.hpp>
#include <boost/asio/detail/reactor_op.hpp>
#include <boost/asio/detail/socket_ops.hpp>
#define LLMGW_DRAIN_AWARE_READ 1
#else
#define LLMGW_DRAIN_AWARE_READ 0
#endif

namespace llmgw::net {

#if LLMGW_DRAIN_AWARE_READ
namespace drain_detail {
namespace asio = boost::asio;
namespace ad = boost::asio::detail;
using Socket = asio::basic_stream_socket<asio::ip::tcp, asio::any_io_executor>;

// basic_socket keeps its implementation in a protected member; a derived class may name it.
struct ImplAccess : Socket {
  static auto& of(asio::basic_socket<asio::ip::tcp, asio::any_io_executor>& s) {
    return s.*(&ImplAccess::impl_);
  }
};

class RecvOpBase : public ad::reactor_op {
 public:
  RecvOpBase(ad::socket_type socket, asio::mutable_buffer buffer, func_type on_complete)
      : reactor_op(boost::system::error_code(), &RecvOpBase::do_perform, on_complete),
        socket_(socket),
        buffer_(buffer) {}

  static status do_perform(reactor_op* base) {
    auto* o = static_cast<RecvOpBase*>(base);
    if (!ad::socket_ops::non_blocking_recv1(o->socket_, o->buffer_.data(), o->buffer_.size(), 0,
                                            true, o->ec_, o->bytes_transferred_))
      return not_done;  // EAGAIN: wait for readiness
    // End of stream is "exhausted" as in Asio's own operation; an error is not.
    if (o->ec_) return o->ec_ == asio::error::eof ? done_and_exhausted : done;
    // Fewer bytes than asked for: the receive queue was empty afterwards.
    return o->bytes_transferred_ < o->buffer_.size() ? done_and_exhausted : done;
  }

 private:
  ad::socket_type socket_;
  asio::mutable_buffer buffer_;
};

template <class Handler, class IoExecutor>
class RecvOp : public RecvOpBase {
 public:
  BOOST_ASIO_DEFINE_HANDLER_PTR(RecvOp);

  RecvOp(ad::socket_type socket, asio::mutable_buffer buffer, Handler& handler,
         const IoExecutor& io_ex)
      : RecvOpBase(socket, buffer, &RecvOp::do_complete),
        handler_(std::move(handler)),
        work_(handler_, io_ex) {}

  static void do_complete(void* owner, ad::operation* base, const boost::system::error_code&,
                          std::size_t) {
    auto* o = static_cast<RecvOp*>(base);
    ptr p = {std::addressof(o->handler_), o, o};
    ad::handler_work<Handler, IoExecutor> w(std::move(o->work_));
    // The handler is moved out before the operation's memory is freed: it may own that memory.
    ad::binder2<Handler, boost::system::error_code, std::size_t> handler(o->handler_, o->ec_,
                                                                         o->bytes_transferred_);
    p.h = std::addressof(handler.handler_);
    p.reset();
    if (owner) {
      ad::fenced_block b(ad::fenced_block::half);
      w.complete(handler, handler.handler_);
    }
  }

 private:
  Handler handler_;
  ad::handler_work<Handler, IoExecutor> work_;
};

// Per-operation cancellation, as Asio's own socket operations do it.
class Cancellation {
 public:
  Cancellation(ad::reactor* r, ad::reactor::per_descriptor_data* d, ad::socket_type s)
      : reactor_(r), data_(d), socket_(s) {}
  void operator()(asio::cancellation_type_t type) {
    if (!!(type & (asio::cancellation_type::terminal | asio::cancellation_type::partial |
                   asio::cancellation_type::total)))
      reactor_->cancel_ops_by_key(socket_, *data_, ad::reactor::read_op, this);
  }

 private:
  ad::reactor* reactor_;
  ad::reactor::per_descriptor_data* data_;
  ad::socket_type socket_;
};

struct Initiate {
  Socket* socket;
  ad::reactor* reactor;
  template <class Handler>
  void operator()(Handler&& h, asio::mutable_buffer buffer) {
    using H = std::decay_t<Handler>;
    H handler(std::forward<Handler>(h));
    auto& io = ImplAccess::of(*socket);
    auto& impl = io.get_implementation();
    using Op = RecvOp<H, asio::any_io_executor>;
    const bool is_continuation = boost_asio_handler_cont_helpers::is_continuation(handler);
    auto slot = asio::get_associated_cancellation_slot(handler);
    typename Op::ptr p = {std::addressof(handler), Op::ptr::allocate(handler), nullptr};
    p.p = new (p.v) Op(impl.socket_, buffer, handler, io.get_executor());
    if (slot.is_connected())
      p.p->cancellation_key_ =
          &slot.template emplace<Cancellation>(reactor, &impl.reactor_data_, impl.socket_);
    // Asio's sockets are switched to non-blocking mode on their first asynchronous operation.
    if (buffer.size() == 0 ||
        (!(impl.state_ & ad::socket_ops::non_blocking) &&
         !ad::socket_ops::set_internal_non_blocking(impl.socket_, impl.state_, true, p.p->ec_))) {
      reactor->post_immediate_completion(p.p, is_continuation);
    } else {
      reactor->start_op(ad::reactor::read_op, impl.socket_, impl.reactor_data_, p.p,
                        is_continuation, true);
    }
    p.v = p.p = nullptr;
  }
};
}  // namespace drain_detail
#endif

// Per I/O thread: the sockets read drain-aware, polled for a hang-up the short read could not see
// (see above). Touched only by its own thread (and, at shutdown, by the destruction of its
// io_context's coroutine frames on the thread that destroys it).
class DrainWatch {
 public:
  using Socket =
      boost::asio::basic_stream_socket<boost::asio::ip::tcp, boost::asio::any_io_executor>;
  struct Node {
    Socket* socket = nullptr;
    Node* prev = nullptr;
    Node* next = nullptr;
    bool rearmed = false;  // once per hang-up is enough
  };
  static constexpr std::chrono::milliseconds kInterval{100};

  DrainWatch();
  ~DrainWatch();
  DrainWatch(const DrainWatch&) = delete;
  DrainWatch& operator=(const DrainWatch&) = delete;

  // Polls on `ex` from now on; stop() (before that executor's context goes) ends it.
  void start(const boost::asio::any_io_executor& ex);
  void stop();
  void add(Node& n);  // counts one exchange read drain-aware
  void remove(Node& n);
  // Exchanges whose reads were drain-aware on this thread so far (read by a metrics scrape on any
  // thread; 0 forever when this build or platform falls back to Asio's ordinary reads).
  std::uint64_t drain_aware_exchanges() const {
    return drain_aware_exchanges_.load(std::memory_order_relaxed);
  }
#if LLMGW_DRAIN_AWARE_READ
  // The reactor of the watched context while the watch runs (null otherwise: then nothing could
  // see a hang-up, so nothing reads drain-aware). Looked up once here, not per attempt: the
  // service registry's lookup takes a lock.
  boost::asio::detail::reactor* reactor() const {
    return reactor_;
  }
#endif

  // The watch of the calling I/O thread (null outside one): set for a scope by Installed.
  static DrainWatch* current();
  class Installed {
   public:
    explicit Installed(DrainWatch& w);
    ~Installed();
    Installed(const Installed&) = delete;
    Installed& operator=(const Installed&) = delete;

   private:
    DrainWatch* previous_;
  };

 private:
  void arm();
  void sweep();

  std::optional<boost::asio::steady_timer> timer_;
#if LLMGW_DRAIN_AWARE_READ
  boost::asio::detail::reactor* reactor_ = nullptr;
#endif
  bool armed_ = false;
  std::atomic<std::uint64_t> drain_aware_exchanges_{0};  // written by its own thread only
  Node* head_ = nullptr;
  std::vector<::pollfd> fds_;
  std::vector<Node*> polled_;
};

// The TCP layer of an upstream connection (plain, or under TLS): a beast::tcp_stream whose reads
// are drain-aware while a Reading scope is open on it, i.e. during an attempt's exchange, when
// the exchange's guard keeps the time (drain-aware reads bypass Beast's per-operation timeouts,
// which connecting and handshaking use) and the I/O thread's DrainWatch watches the socket.
// Outside such a scope, and on a thread without a DrainWatch, it reads as beast::tcp_stream does.
class DrainAwareTcpStream : public boost::beast::tcp_stream {
 public:
  explicit DrainAwareTcpStream(boost::beast::tcp_stream&& connected)
      : boost::beast::tcp_stream(std::move(connected)) {}
  DrainAwareTcpStream(DrainAwareTcpStream&&) = default;
  DrainAwareTcpStream& operator=(DrainAwareTcpStream&&) = default;

  class Reading {
   public:
    explicit Reading(DrainAwareTcpStream& stream)
        : stream_(stream), watch_(LLMGW_DRAIN_AWARE_READ ? DrainWatch::current() : nullptr) {
#if LLMGW_DRAIN_AWARE_READ
      // Only where a running watch can see the hang-up a short read cannot.
      stream_.reactor_ = watch_ ? watch_->reactor() : nullptr;
      if (!stream_.reactor_) {
        watch_ = nullptr;
        return;
      }
      node_.socket = &stream_.socket();
      watch_->add(node_);
#endif
    }
    ~Reading() {
      if (!watch_) return;
#if LLMGW_DRAIN_AWARE_READ
      stream_.reactor_ = nullptr;
#endif
      watch_->remove(node_);
    }
    Reading(const Reading&) = delete;
    Reading& operator=(const Reading&) = delete;

   private:
    DrainAwareTcpStream& stream_;
    DrainWatch* watch_;
    DrainWatch::Node node_;
  };

  // Completes as beast::tcp_stream's async_read_some does: (error_code, bytes).
  template <class MutableBuffers, class Token>
  auto async_read_some(const MutableBuffers& buffers, Token&& token) {
    return boost::asio::async_initiate<Token, void(boost::system::error_code, std::size_t)>(
        [this](auto&& handler, const MutableBuffers& bufs) {
#if LLMGW_DRAIN_AWARE_READ
          if (reactor_) {
            // Beast's flat_buffer and the TLS stream's input buffer are one buffer each; of a
            // sequence of several, the first is read into (a read_some may read less).
            drain_detail::Initiate{&socket(), reactor_}(
                std::forward<decltype(handler)>(handler),
                boost::asio::mutable_buffer(*boost::asio::buffer_sequence_begin(bufs)));
            return;
          }
#endif
          boost::beast::tcp_stream::async_read_some(bufs, std::forward<decltype(handler)>(handler));
        },
        token, buffers);
  }

 private:
#if LLMGW_DRAIN_AWARE_READ
  boost::asio::detail::reactor* reactor_ = nullptr;  // set while drain-aware
#endif
};

}  // namespace llmgw::net
