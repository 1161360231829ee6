#pragma once
// Reads into a Beast parser the way http::async_read_some and http::async_read_header do, without
// their composed operations. Beast's read is three layers of composed operation around the
// stream's read_some, and when the bytes it needs are already buffered it still completes
// through a posted handler (a trip through the scheduler). Here buffered bytes are parsed at
// once, and a read is one operation on the stream: about a quarter of the instructions per
// relayed event (callgrind). The parser, its limits and its errors are Beast's, unchanged.
#include <boost/asio/awaitable.hpp>
#include <boost/asio/error.hpp>
#include <boost/beast/core/read_size.hpp>
#include <boost/beast/http/basic_parser.hpp>
#include <boost/beast/http/error.hpp>
#include <boost/system/error_code.hpp>
#include <cstddef>
#include <utility>

#include "llm_gateway/net/io.hpp"

namespace llmgw::net {

enum class ParseUntil {
  progress,  // http::async_read_some: the parser consumed something (a body piece, the end)
  header,    // http::async_read_header: the header is complete
};

// Parses what `buffer` holds, reading more only while the parser needs more. End of stream is
// Beast's: after part of a message, the parser is told (put_eof: the end of a close-delimited
// body, or partial_message); before any, http::error::end_of_stream. Returns the error and the
// bytes the parser consumed.
template <class Stream, class DynamicBuffer, bool isRequest>
boost::asio::awaitable<std::pair<boost::system::error_code, std::size_t>> read_parsed(
    Stream& stream, DynamicBuffer& buffer, boost::beast::http::basic_parser<isRequest>& parser,
    ParseUntil until) {
  namespace http = boost::beast::http;
  boost::system::error_code ec;
  std::size_t parsed = 0;
  // Beast 1.81's chunked parser asserts (a wrong debug check, boostorg/beast#2861, fixed in 1.86)
  // when a last chunk it has seen as exactly "0\r\n" is followed by exactly one more byte: a
  // build with assertions on (the Debug default) would abort on a peer that sends those bytes in
  // separate segments. Four such bytes cannot end the message (its end needs five), so after a
  // put that took nothing from three bytes, four are not put: the next read comes first.
  std::size_t waited_at = 0;  // the buffer's size when the last put took nothing and asked for more
  for (;;) {
    if (until == ParseUntil::header && parser.is_header_done()) break;
    if (buffer.size() != 0 && !(waited_at == 3 && buffer.size() == 4)) {
      const std::size_t used = parser.put(buffer.data(), ec);
      buffer.consume(used);
      parsed += used;
      waited_at = ec == http::error::need_more && used == 0 ? buffer.size() : 0;
      if (ec != http::error::need_more) {
        if (ec || until == ParseUntil::progress) break;
        if (used != 0) continue;  // (the header is checked at the top)
      }
      ec = {};
    }
    const std::size_t size = boost::beast::read_size(buffer, 65536);
    if (size == 0) {
      ec = http::error::buffer_overflow;
      break;
    }
    auto [read_ec, n] = co_await stream.async_read_some(buffer.prepare(size), nothrow_awaitable);
    buffer.commit(n);
    if (read_ec == boost::asio::error::eof) {
      if (parser.got_some()) {
        parser.put_eof(ec);
      } else {
        ec = http::error::end_of_stream;
      }
      break;
    }
    if (read_ec) {
      ec = read_ec;
      break;
    }
  }
  co_return std::pair{ec, parsed};
}

}  // namespace llmgw::net
