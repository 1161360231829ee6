#pragma once
// A message's header fields as they arrived: Beast's code for the name, the name as written and
// the value, in arrival order, their bytes back to back in one buffer that is reused from message
// to message. Beast's http::fields keeps every field in its own heap node of a case-insensitive
// tree: about 250 instructions, a malloc and a free per field, for two heads per request (a fifth
// of a plain request's instructions with the heads' parsing). The gateway looks up a handful of
// names and copies the rest through, which a list does in a scan.
// Lookups find the first field of a name, as http::fields' do.
#include <ostream>  // first: Boost 1.81 core/detail/string_view.hpp needs it but does not include it

#include <boost/beast/http/field.hpp>
#include <cstddef>
#include <memory>
#include <string_view>
#include <vector>

namespace llmgw {

class HeaderList {
 public:
  // The accessors are named as Beast's field's are, so that code reads the same over either.
  class Field {
   public:
    boost::beast::http::field name() const { return code_; }
    std::string_view name_string() const { return name_; }
    std::string_view value() const { return value_; }

   private:
    friend class HeaderList;
    boost::beast::http::field code_ = boost::beast::http::field::unknown;
    std::string_view name_;
    std::string_view value_;
  };
  using const_iterator = std::vector<Field>::const_iterator;

  HeaderList() = default;
  // A copy re-points the views at its own bytes; a move takes the bytes with it.
  HeaderList(const HeaderList& other);
  HeaderList& operator=(const HeaderList& other);
  HeaderList(HeaderList&& other) noexcept;
  HeaderList& operator=(HeaderList&& other) noexcept;

  // Empties the list and keeps its memory for the next message.
  void clear();
  // Adds a field (its bytes are copied). `code` is Beast's for `name` (field::unknown when it
  // has none), as a parser reports it.
  void append(boost::beast::http::field code, std::string_view name, std::string_view value);
  // The same with the code looked up (tests and replies the gateway makes).
  void append(std::string_view name, std::string_view value);
  void append(boost::beast::http::field code, std::string_view value);
  // Replaces every field of that name with one (tests and replies the gateway makes).
  void set(std::string_view name, std::string_view value);
  void set(boost::beast::http::field code, std::string_view value);

  const_iterator begin() const { return fields_.begin(); }
  const_iterator end() const { return fields_.end(); }
  std::size_t size() const { return fields_.size(); }
  bool empty() const { return fields_.empty(); }

  // The first field of that name (ASCII case-insensitive), or end().
  const_iterator find(boost::beast::http::field code) const;
  const_iterator find(std::string_view name) const;
  // The first value of that name, or "".
  std::string_view operator[](boost::beast::http::field code) const;
  std::string_view operator[](std::string_view name) const;
  std::size_t count(boost::beast::http::field code) const;
  std::size_t count(std::string_view name) const;

 private:
  // Grows the text for `bytes` more, moving the views with it.
  void grow(std::size_t bytes);
  void erase_all(boost::beast::http::field code, std::string_view name);
  void copy_from(const HeaderList& other);

  std::vector<Field> fields_;
  // The fields' bytes, names and values back to back. The capacity only grows; when the bytes
  // move, the views move with them. (A plain buffer: std::string's appends, each with its
  // capacity check and terminator, were most of an append's cost.)
  std::unique_ptr<char[]> text_;
  std::size_t text_size_ = 0;
  std::size_t text_capacity_ = 0;
};

// Calls `each` with every element of a comma-separated field value (RFC 9110 §5.6.1: a
// Connection or Transfer-Encoding list), white space around it trimmed, empty ones skipped. The
// one list reader: the hop-by-hop rule and the request framing check must read a list alike.
template <class Each>
void for_each_listed(std::string_view list, Each each) {
  while (!list.empty()) {
    const std::size_t comma = list.find(',');
    std::string_view token = list.substr(0, comma);
    while (!token.empty() && (token.front() == ' ' || token.front() == '\t'))
      token.remove_prefix(1);
    while (!token.empty() && (token.back() == ' ' || token.back() == '\t')) token.remove_suffix(1);
    if (!token.empty()) each(token);
    if (comma == std::string_view::npos) break;
    list.remove_prefix(comma + 1);
  }
}

}  // namespace llmgw
