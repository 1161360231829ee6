// The relay's drain-aware read (src/net/drain_aware_read.hpp) tells Asio's reactor that a short
// read emptied the socket, so the next read waits for readiness without a failing recv first.
// What must hold: it reads what a socket read reads, it never misses bytes that arrive between
// two reads (also when the reactor saw their readiness while no read was pending), and it ends
// on cancellation, close and end of stream like the socket's own read — also on a FIN that was
// queued behind the bytes of a short read (the DrainWatch).
#include <gtest/gtest.h>

#include <boost/asio/bind_cancellation_slot.hpp>
#include <boost/asio/cancellation_signal.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/write.hpp>
#include <boost/beast/core/tcp_stream.hpp>
#include <chrono>
#include <optional>
#include <string>

#include "net/drain_aware_read.hpp"

namespace llmgw::net {
namespace {
namespace asio = boost::asio;
namespace beast = boost::beast;
using tcp = asio::ip::tcp;

struct Completion {
  boost::system::error_code ec;
  std::size_t n = 0;
};

class DrainAwareReadTest : public ::testing::Test {
 protected:
  void SetUp() override {
    tcp::acceptor acceptor(ctx, tcp::endpoint(asio::ip::address_v4::loopback(), 0));
    stream.socket().connect(acceptor.local_endpoint());
    acceptor.accept(peer);
  }

  // Starts a read of up to `size` bytes; the result lands in `done`.
  void start_read(std::size_t size) {
    done.reset();
    buffer.assign(size, '\0');
    reader.async_read_some(asio::buffer(buffer),
                           [this](boost::system::error_code ec, std::size_t n) {
                             done = {ec, n};
                           });
  }
  // Runs the context until the read completed, or fails the test after a bound (the bound only
  // turns a missed wake-up into a failure instead of a hang; nothing waits on it otherwise).
  bool finish_read() {
    ctx.restart();
    const auto bound = std::chrono::steady_clock::now() + std::chrono::seconds(10);
    while (!done && std::chrono::steady_clock::now() < bound)
      ctx.run_one_for(bound - std::chrono::steady_clock::now());
    return done.has_value();
  }
  // Runs the reactor's epoll_wait once with no read pending, so that the readiness of bytes sent
  // so far is taken (edge-triggered: reported once) before the next read starts. A timer due now
  // keeps the context from returning before the reactor polled.
  void let_reactor_take_readiness() {
    asio::steady_timer tick(ctx, std::chrono::steady_clock::now());
    bool ticked = false;
    tick.async_wait([&](boost::system::error_code) { ticked = true; });
    ctx.restart();
    while (!ticked) ctx.run_one();
    ctx.restart();
    ctx.poll();
  }
  void peer_sends(const std::string& bytes) { asio::write(peer, asio::buffer(bytes)); }
  std::string got() const { return buffer.substr(0, done ? done->n : 0); }

  asio::io_context ctx;
  DrainWatch watch;  // as each I/O thread of the gateway has one
  bool watch_started = (watch.start(ctx.get_executor()), true);
  DrainWatch::Installed installed{watch};
  DrainAwareTcpStream stream{beast::tcp_stream(ctx)};
  tcp::socket peer{ctx};
  DrainAwareTcpStream::Reading reading{stream};  // as during an attempt's exchange
  DrainAwareTcpStream& reader = stream;
  std::string buffer;
  std::optional<Completion> done;
};

TEST_F(DrainAwareReadTest, ReadsWhatArrivesAndWaitsForMoreAfterAShortRead) {
  peer_sends("hello");
  start_read(64);
  ASSERT_TRUE(finish_read());
  EXPECT_FALSE(done->ec);
  EXPECT_EQ(got(), "hello");

  // The socket is drained: the next read is pending until bytes arrive.
  start_read(64);
  ctx.restart();
  ctx.poll();
  EXPECT_FALSE(done.has_value());
  peer_sends("world");
  ASSERT_TRUE(finish_read());
  EXPECT_FALSE(done->ec);
  EXPECT_EQ(got(), "world");
}

// Bytes arrive after a short read while no read is pending, and the reactor takes their
// readiness (edge-triggered: it is reported once) before the next read starts. That read must
// still find them; a read that trusted "drained" without the reactor would wait forever.
TEST_F(DrainAwareReadTest, BytesWhoseReadinessWasSeenWhileNoReadWasPendingAreRead) {
  peer_sends("first");
  start_read(64);
  ASSERT_TRUE(finish_read());
  EXPECT_EQ(got(), "first");

  peer_sends("second");
  let_reactor_take_readiness();

  start_read(64);
  ASSERT_TRUE(finish_read());
  EXPECT_FALSE(done->ec);
  EXPECT_EQ(got(), "second");
}

// A read that fills its buffer did not drain the socket: the next read finds the rest, although
// the reactor already took the readiness of those bytes (no new readiness will come).
TEST_F(DrainAwareReadTest, AFullReadLeavesTheRestToBeReadAtOnce) {
  peer_sends("0123456789");
  let_reactor_take_readiness();
  start_read(4);
  ASSERT_TRUE(finish_read());
  EXPECT_EQ(got(), "0123");
  start_read(64);
  ASSERT_TRUE(finish_read());
  EXPECT_FALSE(done->ec);
  EXPECT_EQ(got(), "456789");
}

TEST_F(DrainAwareReadTest, EndOfStreamEndsTheRead) {
  peer_sends("last");
  peer.shutdown(tcp::socket::shutdown_send);
  start_read(64);
  ASSERT_TRUE(finish_read());
  EXPECT_EQ(got(), "last");
  start_read(64);
  ASSERT_TRUE(finish_read());
  EXPECT_EQ(done->ec, asio::error::eof);
  EXPECT_EQ(done->n, 0u);
}

// The peer's FIN is already queued behind the last bytes when they are read, and the reactor took
// the readiness of both at once: the short read looks like "drained", and no readiness will come
// again. The I/O thread's DrainWatch sees the hang-up and the read still ends, with end of stream.
TEST_F(DrainAwareReadTest, AHangUpBehindTheLastBytesEndsTheNextReadAlthoughItsReadinessWasTaken) {
  peer_sends("tail");
  peer.shutdown(tcp::socket::shutdown_send);
  let_reactor_take_readiness();
  start_read(64);
  ASSERT_TRUE(finish_read());
  EXPECT_FALSE(done->ec);
  EXPECT_EQ(got(), "tail");
  start_read(64);
  ASSERT_TRUE(finish_read()) << "the read after the last bytes waited past the hang-up";
  EXPECT_EQ(done->ec, asio::error::eof);
}

TEST_F(DrainAwareReadTest, CancellingTheSocketAbortsAPendingRead) {
  start_read(64);
  ctx.poll();
  ASSERT_FALSE(done.has_value());
  stream.socket().cancel();
  ASSERT_TRUE(finish_read());
  EXPECT_EQ(done->ec, asio::error::operation_aborted);
}

TEST_F(DrainAwareReadTest, ClosingTheSocketAbortsAPendingRead) {
  start_read(64);
  ctx.poll();
  ASSERT_FALSE(done.has_value());
  stream.close();
  ASSERT_TRUE(finish_read());
  EXPECT_EQ(done->ec, asio::error::operation_aborted);
}

TEST_F(DrainAwareReadTest, APerOperationCancellationSignalAbortsThePendingRead) {
  asio::cancellation_signal signal;
  buffer.assign(64, '\0');
  reader.async_read_some(asio::buffer(buffer),
                         asio::bind_cancellation_slot(
                             signal.slot(), [this](boost::system::error_code ec, std::size_t n) {
                               done = {ec, n};
                             }));
  ctx.poll();
  ASSERT_FALSE(done.has_value());
  signal.emit(asio::cancellation_type::terminal);
  ASSERT_TRUE(finish_read());
  EXPECT_EQ(done->ec, asio::error::operation_aborted);

  // The socket stays usable after the cancelled read.
  peer_sends("after");
  start_read(64);
  ASSERT_TRUE(finish_read());
  EXPECT_FALSE(done->ec);
  EXPECT_EQ(got(), "after");
}

}  // namespace
}  // namespace llmgw::net
