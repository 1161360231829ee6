#pragma once
// Beast's parser, with the header's fields kept in a HeaderList instead of the message's
// http::fields (see header_list.hpp for why). The start line, the body and every check are
// Beast's: the framing facts (keep_alive(), chunked(), content_length()) come from the parser's
// own flags, set as it reads the fields, so the message's empty field set is never asked.
// Trailer fields of a chunked body are not kept (RFC 9110 §6.5: the gateway neither uses nor
// forwards them).
#include <boost/beast/http/parser.hpp>

#include "llm_gateway/pipeline/header_list.hpp"

namespace llmgw::net {

template <bool isRequest, class Body>
class FieldListParser : public boost::beast::http::parser<isRequest, Body> {
 public:
  // `fields` is emptied and filled as the header is read; it must outlive the parser's use.
  explicit FieldListParser(HeaderList& fields) : fields_(fields) { fields_.clear(); }

  const HeaderList& fields() const { return fields_; }

 private:
  void on_field_impl(boost::beast::http::field name, boost::beast::string_view name_string,
                     boost::beast::string_view value, boost::beast::error_code& ec) override {
    ec = {};
    if (!this->is_header_done()) fields_.append(name, name_string, value);
  }

  HeaderList& fields_;
};

}  // namespace llmgw::net
