#include "llm_gateway/config/env_expand.hpp"

#include <cctype>
#include <cstdlib>

namespace llmgw::config {

EnvLookup process_env() {
  return [](const std::string& name) -> std::optional<std::string> {
    if (const char* v = std::getenv(name.c_str())) return std::string(v);
    return std::nullopt;
  };
}

namespace {
bool valid_var_name(std::string_view name) {
  if (name.empty()) return false;
  for (std::size_t i = 0; i < name.size(); ++i) {
    const char c = name[i];
    const bool alpha = (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || c == '_';
    const bool digit = c >= '0' && c <= '9';
    if (!(alpha || (digit && i > 0))) return false;
  }
  return true;
}
}  // namespace

ExpandResult expand_env(std::string_view text, const EnvLookup& env) {
  ExpandResult out;
  out.value.reserve(text.size());
  std::size_t i = 0;
  while (i < text.size()) {
    if (text.compare(i, 3, "$${") == 0) {
      out.value += "${";
      i += 3;
      continue;
    }
    if (text.compare(i, 2, "${") != 0) {
      out.value += text[i++];
      continue;
    }
    const std::size_t close = text.find('}', i + 2);
    if (close == std::string_view::npos) {
      out.error = "unterminated ${ in value";
      return out;
    }
    std::string_view expr = text.substr(i + 2, close - i - 2);
    // The name runs up to the first character that cannot be in one; what follows it decides
    // the form: nothing, ":-default" or "-default".
    std::size_t name_end = 0;
    while (name_end < expr.size() &&
           (std::isalnum(static_cast<unsigned char>(expr[name_end])) || expr[name_end] == '_'))
      ++name_end;
    std::string_view name = expr.substr(0, name_end);
    const std::string_view rest = expr.substr(name_end);
    std::optional<std::string_view> fallback;
    bool empty_counts_as_unset = false;
    if (rest.starts_with(":-")) {
      fallback = rest.substr(2);
      empty_counts_as_unset = true;
    } else if (rest.starts_with("-")) {
      fallback = rest.substr(1);
    } else if (!rest.empty()) {
      name = expr;  // reported as invalid below
    }
    if (!valid_var_name(name)) {
      out.error = "invalid variable reference ${" + std::string(expr) + "}";
      return out;
    }
    std::optional<std::string> value = env(std::string(name));
    if (value && !(empty_counts_as_unset && value->empty())) {
      out.value += *value;
    } else if (fallback) {
      out.value += *fallback;
    } else {
      out.error = "environment variable " + std::string(name) + " is not set";
      return out;
    }
    i = close + 1;
  }
  return out;
}

}  // namespace llmgw::config
