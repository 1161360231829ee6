// HTTP message heads into a HeaderList (FieldListParser), checked against Beast's own parser
// filling its http::fields from the same bytes: the same verdict, the same fields (those of one
// name in the same order; the header's, never a trailer's), the same lookups, the same framing
// answers and the same body. The
// first byte picks a request ('Q') or a response (anything else) and how the rest is cut into the
// pieces the parsers are given (a header split across reads included).
#include <ostream>  // first: Boost 1.81 core/detail/string_view.hpp needs it but does not include it

#include <boost/beast/http/parser.hpp>
#include <boost/beast/http/string_body.hpp>
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

#include "fuzz_support.hpp"
#include "llm_gateway/pipeline/header_list.hpp"
#include "net/field_list_parser.hpp"

namespace {

using llmgw::fuzz::require;
namespace http = boost::beast::http;

// Feeds `text` to `parser` in pieces of at most `step` bytes (each put sees everything not yet
// consumed, as read_parsed gives it), then the end of input. Returns the first error.
template <class Parser, class OnHeader>
boost::beast::error_code feed(Parser& parser, std::string_view text, std::size_t step,
                              OnHeader on_header) {
  boost::beast::error_code ec;
  std::size_t used = 0;
  std::size_t available = 0;
  std::size_t waited_at = 0;
  bool header_seen = false;
  while (!parser.is_done()) {
    if (!header_seen && parser.is_header_done()) {
      header_seen = true;
      on_header();
    }
    if (available == text.size() && used == text.size()) break;
    available = std::min(text.size(), available + step);
    // read_parsed's rule: four bytes after three that asked for more are not put (Beast 1.81's
    // wrong assertion on a last chunk, see parsed_read.hpp); at the end of the input the end of
    // stream is told instead, as read_parsed does.
    if (waited_at == 3 && available - used == 4) {
      if (available < text.size()) continue;
      break;
    }
    const std::size_t n = parser.put(boost::asio::buffer(text.data() + used, available - used), ec);
    used += n;
    if (!header_seen && parser.is_header_done()) {  // (also when the put that ended it failed)
      header_seen = true;
      on_header();
    }
    waited_at = ec == http::error::need_more && n == 0 ? available - used : 0;
    if (ec == http::error::need_more) {
      ec = {};
      if (available == text.size()) break;
      continue;
    }
    if (ec) return ec;
  }
  if (!parser.is_done() && parser.got_some()) parser.put_eof(ec);
  if (!header_seen && parser.is_header_done()) on_header();
  return ec;
}

template <bool isRequest>
void compare(std::string_view text, std::size_t step) {
  http::parser<isRequest, http::string_body> reference;
  reference.header_limit(8192);
  llmgw::HeaderList fields;
  fields.append("stale", "a field of the previous message");
  llmgw::net::FieldListParser<isRequest, http::string_body> parser(fields);
  parser.header_limit(8192);
  if constexpr (!isRequest) {
    reference.skip(false);
    parser.skip(false);
  }
  // Beast appends a chunked body's trailer to its fields: the header's are taken as the header
  // ends (put() returns there before any of the body).
  http::fields header;
  const auto want = feed(reference, text, step, [&] { header = reference.get().base(); });
  const auto got = feed(parser, text, step, [] {});
  require(want == got, "the same verdict as Beast's parser");
  require(reference.is_header_done() == parser.is_header_done(), "the header ends alike");
  if (!parser.is_header_done()) return;
  // http::fields keeps fields of one name together (a second is inserted after the first),
  // the list keeps the order of arrival: regrouped the same way, both must be the same fields,
  // those of one name in the same order.
  http::fields regrouped;
  for (const auto& f : fields) {
    regrouped.insert(f.name(), f.name_string(), f.value());
    require(fields[f.name_string()] == header[f.name_string()],
            "a lookup finds the first of the name, as http::fields' does");
    if (f.name() != http::field::unknown)
      require(fields[f.name()] == header[f.name()], "a lookup by code finds the same");
  }
  auto expected = header.begin();
  for (const auto& f : regrouped) {
    require(expected != header.end(), "no more fields than Beast's parser");
    require(f.name() == expected->name(), "the same field code");
    require(f.name_string() == expected->name_string(), "the same name as written");
    require(f.value() == expected->value(), "the same value");
    ++expected;
  }
  require(expected == header.end(), "every field of the header");
  require(parser.get().base().begin() == parser.get().base().end(),
          "the message's own field set stays empty");
  require(reference.keep_alive() == parser.keep_alive(), "the same keep-alive answer");
  require(reference.chunked() == parser.chunked(), "the same chunked answer");
  require(reference.content_length() == parser.content_length(), "the same length");
  if (!want) require(reference.get().body() == parser.get().body(), "the same body");
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  if (size == 0) return 0;
  const char mode = static_cast<char>(data[0]);
  const std::string_view text = llmgw::fuzz::as_text(data + 1, size - 1);
  const std::size_t step = 1 + static_cast<std::size_t>(static_cast<unsigned char>(mode) % 64);
  const std::size_t whole = text.size() + 1;
  if (mode == 'Q' || mode == 'q') {
    compare<true>(text, mode == 'Q' ? whole : step);
  } else {
    compare<false>(text, mode == 'R' ? whole : step);
  }
  return 0;
}
