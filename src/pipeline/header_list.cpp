#include "llm_gateway/pipeline/header_list.hpp"

#include <algorithm>
#include <boost/beast/core/string.hpp>
#include <utility>

namespace llmgw {

namespace http = boost::beast::http;

HeaderList::HeaderList(const HeaderList& other) {
  copy_from(other);
}

HeaderList& HeaderList::operator=(const HeaderList& other) {
  if (this != &other) {
    clear();
    copy_from(other);
  }
  return *this;
}

// A moved std::string may keep short bytes inline, at a new address: the fields are copied over
// rather than their views trusted.
HeaderList::HeaderList(HeaderList&& other) noexcept : HeaderList(std::as_const(other)) {
  other.clear();
}

HeaderList& HeaderList::operator=(HeaderList&& other) noexcept {
  if (this != &other) {
    *this = std::as_const(other);
    other.clear();
  }
  return *this;
}

void HeaderList::copy_from(const HeaderList& other) {
  text_.reserve(other.text_.size());
  fields_.reserve(other.fields_.size());
  for (const Field& f : other.fields_) append(f.code_, f.name_, f.value_);
}

void HeaderList::clear() {
  fields_.clear();
  text_.clear();
}

void HeaderList::make_room(std::size_t bytes) {
  if (text_.size() + bytes <= text_.capacity()) return;
  const char* const old = text_.data();
  text_.reserve(std::max<std::size_t>({text_.size() + bytes, 2 * text_.capacity(), 512}));
  if (text_.data() == old) return;
  const auto moved = [&](std::string_view v) {
    return std::string_view(text_.data() + (v.data() - old), v.size());
  };
  for (Field& f : fields_) {
    f.name_ = moved(f.name_);
    f.value_ = moved(f.value_);
  }
}

void HeaderList::append(http::field code, std::string_view name, std::string_view value) {
  // Room for both first: the name's view must not be left behind by the value's growth.
  make_room(name.size() + value.size());
  Field f;
  f.code_ = code;
  const std::size_t at = text_.size();
  text_.append(name);
  text_.append(value);
  f.name_ = std::string_view(text_.data() + at, name.size());
  f.value_ = std::string_view(text_.data() + at + name.size(), value.size());
  fields_.push_back(f);
}

void HeaderList::append(std::string_view name, std::string_view value) {
  append(http::string_to_field(name), name, value);
}

void HeaderList::append(http::field code, std::string_view value) {
  append(code, http::to_string(code), value);
}

void HeaderList::erase_all(http::field code, std::string_view name) {
  std::erase_if(fields_, [&](const Field& f) {
    return code != http::field::unknown ? f.code_ == code : boost::beast::iequals(f.name_, name);
  });
}

void HeaderList::set(std::string_view name, std::string_view value) {
  const http::field code = http::string_to_field(name);
  erase_all(code, name);
  append(code, name, value);
}

void HeaderList::set(http::field code, std::string_view value) {
  erase_all(code, {});
  append(code, value);
}

HeaderList::const_iterator HeaderList::find(http::field code) const {
  return std::find_if(fields_.begin(), fields_.end(),
                      [code](const Field& f) { return f.code_ == code; });
}

HeaderList::const_iterator HeaderList::find(std::string_view name) const {
  return std::find_if(fields_.begin(), fields_.end(),
                      [name](const Field& f) { return boost::beast::iequals(f.name_, name); });
}

std::string_view HeaderList::operator[](http::field code) const {
  const auto it = find(code);
  return it == end() ? std::string_view{} : it->value();
}

std::string_view HeaderList::operator[](std::string_view name) const {
  const auto it = find(name);
  return it == end() ? std::string_view{} : it->value();
}

std::size_t HeaderList::count(http::field code) const {
  return static_cast<std::size_t>(std::count_if(
      fields_.begin(), fields_.end(), [code](const Field& f) { return f.code_ == code; }));
}

std::size_t HeaderList::count(std::string_view name) const {
  return static_cast<std::size_t>(
      std::count_if(fields_.begin(), fields_.end(),
                    [name](const Field& f) { return boost::beast::iequals(f.name_, name); }));
}

}  // namespace llmgw
