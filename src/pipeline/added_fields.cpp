#include "llm_gateway/pipeline/added_fields.hpp"

#include <boost/beast/core/string.hpp>
#include <charconv>

namespace llmgw {

AddedFields::Field* AddedFields::find(std::string_view name) {
  for (Field& f : fields_) {
    if (boost::beast::iequals(f.name, name)) return &f;
  }
  return nullptr;
}

void AddedFields::set(std::string_view name, std::string_view value) {
  const auto begin = static_cast<std::uint32_t>(values_.size());
  values_.insert(values_.end(), value.begin(), value.end());
  const auto end = static_cast<std::uint32_t>(values_.size());
  if (Field* f = find(name)) {
    f->begin = begin;
    f->end = end;
    return;
  }
  fields_.push_back({name, begin, end});
}

void AddedFields::set(std::string_view name, std::int64_t value) {
  char digits[24];
  const auto end = std::to_chars(digits, digits + sizeof digits, value).ptr;
  set(name, std::string_view(digits, static_cast<std::size_t>(end - digits)));
}

bool AddedFields::replaces(std::string_view name) const {
  for (const Field& f : fields_) {
    if (boost::beast::iequals(f.name, name)) return true;  // (compares lengths first)
  }
  return false;
}

std::optional<std::string_view> AddedFields::get(std::string_view name) const {
  for (const Field& f : fields_) {
    if (boost::beast::iequals(f.name, name)) return value_of(f);
  }
  return std::nullopt;
}

void AddedFields::append_to(std::string& head) const {
  for (const Field& f : fields_) {
    head += f.name;
    head += ": ";
    head += value_of(f);
    head += "\r\n";
  }
}

void AddedFields::apply_to(boost::beast::http::fields& message) const {
  for (const Field& f : fields_) message.set(f.name, value_of(f));
}

}  // namespace llmgw
