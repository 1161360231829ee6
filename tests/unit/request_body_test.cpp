// The inbound request's body type (src/net/request_body.hpp) appends where Beast's string_body
// resizes and overwrites: the parser must read every framing into the same bytes as string_body,
// however the wire bytes are cut, and keep string_body's limits.
#include <gtest/gtest.h>

#include <boost/asio/buffer.hpp>
#include <boost/beast/http/error.hpp>
#include <boost/beast/http/parser.hpp>
#include <boost/beast/http/string_body.hpp>
#include <string>
#include <string_view>
#include <utility>

#include "net/request_body.hpp"

namespace llmgw::net {
namespace {
namespace http = boost::beast::http;

// Feeds `wire` to a parser in pieces of `step` bytes (the way reads cut it); the body, or the
// error that stopped it.
template <class Body>
std::string parse(std::string_view wire, std::size_t step, std::uint64_t body_limit = 1 << 20) {
  http::request_parser<Body> parser;
  parser.eager(true);
  parser.body_limit(body_limit);
  std::string pending;
  for (std::size_t at = 0; at < wire.size() && !parser.is_done(); at += step) {
    pending.append(wire.substr(at, step));
    boost::beast::error_code ec;
    const std::size_t used = parser.put(boost::asio::buffer(pending), ec);
    if (ec == http::error::need_more) ec = {};
    if (ec) return "error: " + ec.message();
    pending.erase(0, used);
  }
  if (!parser.is_done()) return "incomplete";
  return parser.get().body();
}

TEST(RequestBody, ReadsEveryFramingLikeStringBodyAtEveryCut) {
  std::string body;
  for (int i = 0; i < 300; ++i) body += static_cast<char>(i % 251);  // every byte value, 0 too
  const std::string sized =
      "POST /v1/x HTTP/1.1\r\nHost: h\r\nContent-Length: " + std::to_string(body.size()) +
      "\r\n\r\n" + body;
  const std::string chunked =
      "POST /v1/x HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n"
      "7\r\n" +
      body.substr(0, 7) + "\r\n" + "125\r\n" + body.substr(7) + "\r\n0\r\n\r\n";
  const std::string empty = "POST /v1/x HTTP/1.1\r\nHost: h\r\nContent-Length: 0\r\n\r\n";
  const std::pair<std::string, std::string> cases[] = {{sized, body}, {chunked, body}, {empty, ""}};
  for (const auto& [wire, expected] : cases) {
    for (std::size_t step : {std::size_t{1}, std::size_t{3}, std::size_t{64}, wire.size()}) {
      const std::string ours = parse<RequestBody>(wire, step);
      EXPECT_EQ(ours, parse<http::string_body>(wire, step)) << "step " << step;
      EXPECT_EQ(ours, expected) << "step " << step;
    }
  }
}

TEST(RequestBody, TheParsersBodyLimitStillApplies) {
  const std::string wire = "POST /v1/x HTTP/1.1\r\nHost: h\r\nContent-Length: 10\r\n\r\n0123456789";
  EXPECT_EQ(parse<RequestBody>(wire, wire.size(), 9),
            parse<http::string_body>(wire, wire.size(), 9));
  EXPECT_TRUE(parse<RequestBody>(wire, wire.size(), 9).starts_with("error: "));
  const std::string chunked =
      "POST /v1/x HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n"
      "a\r\n0123456789\r\n0\r\n\r\n";
  EXPECT_TRUE(parse<RequestBody>(chunked, 5, 9).starts_with("error: "));
}

}  // namespace
}  // namespace llmgw::net
