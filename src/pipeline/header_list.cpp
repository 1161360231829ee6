#include "llm_gateway/pipeline/header_list.hpp"

#include <algorithm>
#include <boost/beast/core/string.hpp>
#include <cstring>
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

// A move takes the buffer itself: the views stay where the bytes are.
HeaderList::HeaderList(HeaderList&& other) noexcept
    : fields_(std::move(other.fields_)),
      text_(std::move(other.text_)),
      text_size_(std::exchange(other.text_size_, 0)),
      text_capacity_(std::exchange(other.text_capacity_, 0)) {
  other.fields_.clear();
}

HeaderList& HeaderList::operator=(HeaderList&& other) noexcept {
  if (this != &other) {
    fields_ = std::move(other.fields_);
    text_ = std::move(other.text_);
    text_size_ = std::exchange(other.text_size_, 0);
    text_capacity_ = std::exchange(other.text_capacity_, 0);
    other.fields_.clear();
  }
  return *this;
}

void HeaderList::copy_from(const HeaderList& other) {
  if (other.text_size_ > text_capacity_) grow(other.text_size_);
  fields_.reserve(other.fields_.size());
  for (const Field& f : other.fields_) append(f.code_, f.name_, f.value_);
}

void HeaderList::clear() {
  fields_.clear();
  text_size_ = 0;
}

void HeaderList::grow(std::size_t bytes) {
  const std::size_t capacity = std::max<std::size_t>({text_size_ + bytes, 2 * text_capacity_, 512});
  auto text = std::make_unique_for_overwrite<char[]>(capacity);
  if (text_size_ != 0) std::memcpy(text.get(), text_.get(), text_size_);
  const char* const old = text_.get();
  const auto moved = [&](std::string_view v) {
    return std::string_view(text.get() + (v.data() - old), v.size());
  };
  for (Field& f : fields_) {
    f.name_ = moved(f.name_);
    f.value_ = moved(f.value_);
  }
  text_ = std::move(text);
  text_capacity_ = capacity;
}

void HeaderList::append(http::field code, std::string_view name, std::string_view value) {
  // Room for both first: the name's view must not be left behind by the value's growth.
  const std::size_t bytes = name.size() + value.size();
  if (text_capacity_ - text_size_ < bytes) grow(bytes);
  char* const at = text_.get() + text_size_;
  if (!name.empty()) std::memcpy(at, name.data(), name.size());
  if (!value.empty()) std::memcpy(at + name.size(), value.data(), value.size());
  text_size_ += bytes;
  Field& f = fields_.emplace_back();
  f.code_ = code;
  f.name_ = std::string_view(at, name.size());
  f.value_ = std::string_view(at + name.size(), value.size());
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
