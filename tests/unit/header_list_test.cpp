// HeaderList (a message's fields as they arrived) and FieldListParser (Beast's parser filling one):
// lookups answer as http::fields' did, the views survive the buffer's growth, copies and moves,
// and the parser keeps the header's fields, not a chunked body's trailer.
#include <gtest/gtest.h>

#include <boost/beast/http/buffer_body.hpp>
#include <boost/beast/http/string_body.hpp>
#include <string>
#include <string_view>
#include <utility>

#include "llm_gateway/pipeline/header_list.hpp"
#include "net/field_list_parser.hpp"
#include "net/request_body.hpp"

namespace llmgw {
namespace {

namespace http = boost::beast::http;

TEST(HeaderList, LooksUpTheFirstFieldOfANameInAnySpelling) {
  HeaderList h;
  h.append("Content-Type", "application/json");
  h.append("X-Trace", "first");
  h.append("x-trace", "second");
  EXPECT_EQ(h[http::field::content_type], "application/json");
  EXPECT_EQ(h["content-TYPE"], "application/json");
  EXPECT_EQ(h["X-TRACE"], "first");
  EXPECT_EQ(h.count("x-trace"), 2u);
  EXPECT_EQ(h.count(http::field::content_type), 1u);
  EXPECT_EQ(h["absent"], "");
  EXPECT_EQ(h.find(http::field::authorization), h.end());
  // The parser's code and the name as written are both kept.
  EXPECT_EQ(h.begin()->name(), http::field::content_type);
  EXPECT_EQ(h.begin()->name_string(), "Content-Type");
  EXPECT_EQ(std::next(h.begin())->name(), http::field::unknown);
}

TEST(HeaderList, KeepsArrivalOrderAndSetReplacesEveryFieldOfTheName) {
  HeaderList h;
  h.append("a", "1");
  h.append(http::field::connection, "close");
  h.append("A", "2");
  h.set("a", "3");
  std::string order;
  for (const auto& f : h)
    order += std::string(f.name_string()) + "=" + std::string(f.value()) + ";";
  EXPECT_EQ(order, "Connection=close;a=3;");
  h.set(http::field::connection, "keep-alive");
  EXPECT_EQ(h.count(http::field::connection), 1u);
  EXPECT_EQ(h[http::field::connection], "keep-alive");
}

// Hundreds of fields grow the text buffer several times: every earlier view must follow it (a
// field appended just as the buffer grows included).
TEST(HeaderList, ViewsFollowTheTextWhenItGrows) {
  HeaderList h;
  for (int i = 0; i < 300; ++i)
    h.append("x-field-" + std::to_string(i), std::string(static_cast<std::size_t>(i % 37), 'v'));
  ASSERT_EQ(h.size(), 300u);
  int i = 0;
  for (const auto& f : h) {
    EXPECT_EQ(f.name_string(), "x-field-" + std::to_string(i));
    EXPECT_EQ(f.value(), std::string(static_cast<std::size_t>(i % 37), 'v'));
    ++i;
  }
}

TEST(HeaderList, CopiesAndMovesOwnTheirBytes) {
  HeaderList original;
  original.append("k", "v");  // short: a moved std::string keeps it inline, at a new address
  original.append("authorization", "Bearer x");
  HeaderList copy = original;
  original.clear();
  original.append("k", "changed");
  EXPECT_EQ(copy["k"], "v");
  EXPECT_EQ(copy[http::field::authorization], "Bearer x");

  HeaderList moved = std::move(copy);
  EXPECT_EQ(moved["k"], "v");
  EXPECT_EQ(moved[http::field::authorization], "Bearer x");
  HeaderList assigned;
  assigned.append("old", "x");
  assigned = moved;
  EXPECT_EQ(assigned.size(), 2u);
  EXPECT_EQ(assigned["k"], "v");
  EXPECT_EQ(assigned["old"], "");
}

// A list reused for the next message starts empty (the parser clears it).
TEST(FieldListParser, FillsTheListWithTheHeaderAndNotTheTrailer) {
  HeaderList fields;
  fields.append("stale", "from the last request");
  net::FieldListParser<true, net::RequestBody> parser(fields);
  const std::string message =
      "POST /v1/chat/completions HTTP/1.1\r\n"
      "Host: gw\r\n"
      "Transfer-Encoding: chunked\r\n"
      "Api-Key: k\r\n"
      "Connection: keep-alive\r\n"
      "\r\n"
      "2\r\n{}\r\n0\r\nX-Trailer: t\r\n\r\n";
  boost::beast::error_code ec;
  std::size_t used = 0;
  while (!parser.is_done() && !ec) {
    used += parser.put(boost::asio::buffer(message.data() + used, message.size() - used), ec);
    if (ec == http::error::need_more) ec = {};
  }
  ASSERT_FALSE(ec) << ec.message();
  EXPECT_EQ(parser.get().body(), "{}");
  EXPECT_EQ(parser.get().target(), "/v1/chat/completions");
  std::string names;
  for (const auto& f : fields) names += std::string(f.name_string()) + ";";
  EXPECT_EQ(names, "Host;Transfer-Encoding;Api-Key;Connection;");
  EXPECT_EQ(fields["api-key"], "k");
  // The framing answers come from the parser's flags: the message itself holds no fields.
  EXPECT_TRUE(parser.chunked());
  EXPECT_TRUE(parser.keep_alive());
  EXPECT_EQ(parser.get().base().begin(), parser.get().base().end());
}

TEST(FieldListParser, AResponseClosingTheConnectionIsNotKeptAlive) {
  HeaderList fields;
  net::FieldListParser<false, http::buffer_body> parser(fields);
  const std::string head =
      "HTTP/1.1 200 OK\r\nContent-Length: 0\r\nConnection: close\r\nX-Request-Id: r\r\n\r\n";
  boost::beast::error_code ec;
  parser.put(boost::asio::buffer(head), ec);
  ASSERT_FALSE(ec) << ec.message();
  EXPECT_TRUE(parser.is_done());
  EXPECT_FALSE(parser.keep_alive());
  EXPECT_EQ(parser.get().result_int(), 200u);
  EXPECT_EQ(fields["x-request-id"], "r");
  EXPECT_EQ(fields.size(), 3u);
}

}  // namespace
}  // namespace llmgw
