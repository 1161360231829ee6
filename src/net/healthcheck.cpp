#include "llm_gateway/net/healthcheck.hpp"

#include <ostream>  // first: Boost 1.81 core/detail/string_view.hpp needs it but does not include it

#include <boost/asio/co_spawn.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/ssl/context.hpp>
#include <boost/asio/ssl/stream.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/beast/core/flat_buffer.hpp>
#include <boost/beast/core/tcp_stream.hpp>
#include <boost/beast/http/empty_body.hpp>
#include <boost/beast/http/parser.hpp>
#include <boost/beast/http/read.hpp>
#include <boost/beast/http/write.hpp>
#include <boost/url/parse.hpp>
#include <exception>
#include <system_error>

namespace llmgw::net {

namespace {
namespace asio = boost::asio;
namespace beast = boost::beast;
namespace http = beast::http;
using tcp = asio::ip::tcp;

// The request and the response head, on a plain or TLS stream.
template <class Stream>
asio::awaitable<void> exchange(Stream& stream, const boost::urls::url_view& url,
                               HealthcheckResult& out) {
  std::string target(url.encoded_target());
  if (target.empty()) target = "/";
  http::request<http::empty_body> req{http::verb::get, target, 11};
  req.set(http::field::host, std::string(url.encoded_host_and_port()));
  req.set(http::field::user_agent, "llm-gateway-healthcheck");
  req.set(http::field::connection, "close");
  co_await http::async_write(stream, req, asio::use_awaitable);

  // Only the head: the status decides, and a large or endless body cannot hold the check.
  beast::flat_buffer buffer;
  http::response_parser<http::empty_body> parser;
  co_await http::async_read_header(stream, buffer, parser, asio::use_awaitable);
  const unsigned status = parser.get().result_int();
  out.healthy = status >= 200 && status < 300;
  if (!out.healthy) out.problem = "HTTP " + std::to_string(status);
}

asio::awaitable<void> probe(const boost::urls::url_view& url, HealthcheckResult& out) {
  auto executor = co_await asio::this_coro::executor;
  tcp::resolver resolver(executor);
  const bool tls = url.scheme() == "https";
  const std::string port = url.has_port() ? std::string(url.port()) : (tls ? "443" : "80");
  const auto endpoints =
      co_await resolver.async_resolve(std::string(url.host_address()), port, asio::use_awaitable);
  beast::tcp_stream stream(executor);
  co_await stream.async_connect(endpoints, asio::use_awaitable);
  if (!tls) {
    co_await exchange(stream, url, out);
    co_return;
  }
  // A health check asks whether this process answers, usually on 127.0.0.1 where the listener's
  // certificate names another host: the certificate is not verified (curl -k), and nothing
  // secret is sent.
  asio::ssl::context ctx(asio::ssl::context::tls_client);
  ctx.set_verify_mode(asio::ssl::verify_none);
  asio::ssl::stream<beast::tcp_stream> secure(std::move(stream), ctx);
  co_await secure.async_handshake(asio::ssl::stream_base::client, asio::use_awaitable);
  co_await exchange(secure, url, out);
}

}  // namespace

HealthcheckResult healthcheck(const std::string& url_text, std::chrono::milliseconds timeout) {
  HealthcheckResult out;
  const auto parsed = boost::urls::parse_uri(url_text);
  if (!parsed || (parsed->scheme() != "http" && parsed->scheme() != "https") ||
      parsed->encoded_host().empty()) {
    out.problem = "needs an http:// or https://HOST[:PORT]/PATH URL";
    return out;
  }
  asio::io_context ioc;
  bool finished = false;
  asio::co_spawn(ioc, probe(*parsed, out), [&](std::exception_ptr e) {
    finished = true;
    if (!e) return;
    try {
      std::rethrow_exception(e);
    } catch (const std::system_error& err) {
      out.problem = err.code().message();
    } catch (const std::exception& err) {
      out.problem = err.what();
    }
  });
  // One deadline for the whole exchange: whatever is still pending then is abandoned with the
  // io_context (the process exits right after).
  ioc.run_for(timeout);
  if (!finished) {
    out.healthy = false;
    out.problem = "no answer within " + std::to_string(timeout.count()) + " ms";
  }
  return out;
}

}  // namespace llmgw::net
