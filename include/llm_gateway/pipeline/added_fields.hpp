#pragma once
// The fields the gateway adds to a response head (its request id, the upstream that answered,
// the key's limits). They replace the upstream's fields of the same names. A relayed head is
// written from the upstream's fields, skipping those names, and then these, without going
// through Beast's field set: each set() there cost a lookup, an erase and a new node (six of
// them for the x-ratelimit-* fields alone were the largest extra of the "everything on" path).
// A reply the gateway makes itself takes them into its Beast message (apply_to).
#include <ostream>  // first: Boost 1.81 core/detail/string_view.hpp needs it but does not include it

#include <boost/beast/http/fields.hpp>
#include <boost/container/small_vector.hpp>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

namespace llmgw {

class AddedFields {
 public:
  // `name` is viewed, not copied: a literal (or a string that outlives the request). A second
  // set() of a name replaces its value. The value is copied.
  void set(std::string_view name, std::string_view value);
  void set(std::string_view name, std::int64_t value);

  bool empty() const { return fields_.empty(); }
  // Whether `name` (ASCII case-insensitive) is one of these: the upstream's field is dropped.
  bool replaces(std::string_view name) const;
  std::optional<std::string_view> get(std::string_view name) const;
  // "name: value\r\n" for each, in the order first set.
  void append_to(std::string& head) const;
  // Each as a field of `message`, replacing its fields of the same names.
  void apply_to(boost::beast::http::fields& message) const;

 private:
  struct Field {
    std::string_view name;
    std::uint32_t begin = 0;  // the value: values_[begin, end)
    std::uint32_t end = 0;
  };
  std::string_view value_of(const Field& f) const {
    return {values_.data() + f.begin, f.end - f.begin};
  }
  Field* find(std::string_view name);

  boost::container::small_vector<Field, 8> fields_;
  // Values back to back (a replaced value leaves its old bytes behind: set() twice is rare).
  // Inline up to what the built-in fields need, so a request allocates nothing for them.
  boost::container::small_vector<char, 192> values_;
};

}  // namespace llmgw
