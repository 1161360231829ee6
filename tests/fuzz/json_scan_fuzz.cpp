// The request-body JSON scanner and what is built on it: every request body the gateway accepts
// passes json::scan (through inspect_body) before it is routed, so any byte sequence a client
// can send reaches this code. The input is the body.
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "fuzz_support.hpp"
#include "llm_gateway/translate/json_scan.hpp"
#include "llm_gateway/translate/request_facts.hpp"

namespace {

using llmgw::fuzz::require;
namespace json = llmgw::json;

bool span_ok(std::size_t begin, std::size_t end, std::size_t size) {
  return begin <= end && end <= size;
}

// Optional spans use npos for "absent"; both ends must then be npos.
bool optional_span_ok(std::size_t begin, std::size_t end, std::size_t size) {
  if (begin == std::string_view::npos || end == std::string_view::npos) return begin == end;
  return span_ok(begin, end, size);
}

void check_scan(std::string_view text) {
  const json::ScanResult r = json::scan(text);
  if (!r.valid) {
    require(!r.error.empty(), "an invalid scan names its error");
    require(r.error_offset <= text.size(), "error offset inside the text");
    require(r.members.empty() && r.elements.empty(), "an invalid scan reports no members");
    return;
  }
  for (const json::Member& m : r.members) {
    require(span_ok(m.value_begin, m.value_end, text.size()), "member span inside the text");
    require(llmgw::fuzz::within(m.key, text), "member key is a view of the text");
    const std::string_view value = r.text_of(text, m);
    if (m.kind == json::Kind::string) {
      // The scanner validated the token, so decoding it cannot fail.
      require(json::decode_string(value).has_value(), "a scanned string decodes");
    }
    (void)json::integer_member(text, r, m.key);
  }
  for (const json::Span& e : r.elements)
    require(span_ok(e.begin, e.end, text.size()), "element span inside the text");

  const json::ScanResult p = json::scan_prefix(text);
  require(p.valid, "a valid document is a valid prefix");
  require(p.consumed <= text.size(), "consumed inside the text");
}

bool same_entries(const json::ScanResult& a, const json::ScanResult& b) {
  if (a.valid != b.valid || a.is_object != b.is_object || a.is_array != b.is_array ||
      a.members.size() != b.members.size() || a.elements.size() != b.elements.size())
    return false;
  for (std::size_t i = 0; i < a.members.size(); ++i) {
    const json::Member& x = a.members[i];
    const json::Member& y = b.members[i];
    if (x.key != y.key || x.value_begin != y.value_begin || x.value_end != y.value_end ||
        x.kind != y.kind)
      return false;
  }
  for (std::size_t i = 0; i < a.elements.size(); ++i) {
    const json::Span& x = a.elements[i];
    const json::Span& y = b.elements[i];
    if (x.begin != y.begin || x.end != y.end || x.kind != y.kind) return false;
  }
  return true;
}

// Every nested object and array of a valid document: what scan_valid skips to and what a
// validating scan of the same span reports are the same members.
void check_nested(std::string_view text, const json::ScanResult& r, std::size_t& budget) {
  auto visit = [&](std::size_t begin, std::size_t end, json::Kind kind) {
    if (budget == 0 || (kind != json::Kind::object && kind != json::Kind::array)) return;
    --budget;
    const std::string_view sub = text.substr(begin, end - begin);
    const json::ScanResult validated = json::scan(sub);
    require(validated.valid, "a nested value of a valid document is valid");
    require(same_entries(json::scan_valid(sub), validated), "scan_valid == scan on a valid value");
    check_nested(sub, validated, budget);
  };
  for (const json::Member& m : r.members) visit(m.value_begin, m.value_end, m.kind);
  for (const json::Span& e : r.elements) visit(e.begin, e.end, e.kind);
}

// A visitor that asks for every value (up to a budget) and records what the walk reported.
struct Recorder final : json::WalkVisitor {
  struct Entry {
    int parent = 0;
    std::string_view key;
    json::Kind kind{};
    std::string_view value;
    bool left = false;
  };
  std::vector<Entry> entries;  // id - 1
  std::vector<int> open;       // ids entered and not yet left
  bool orderly = true;

  int enter(int parent, std::string_view key, json::Kind kind) override {
    if (entries.size() >= 512) return kSkip;
    if (parent != (open.empty() ? kDocument : open.back())) orderly = false;
    entries.push_back(Entry{parent, key, kind, {}, false});
    open.push_back(static_cast<int>(entries.size()));
    return open.back();
  }
  void leave(int id, std::string_view value) override {
    if (open.empty() || open.back() != id) orderly = false;
    if (!open.empty()) open.pop_back();
    entries[static_cast<std::size_t>(id - 1)].value = value;
    entries[static_cast<std::size_t>(id - 1)].left = true;
  }
};

struct SkipAll final : json::WalkVisitor {
  int enter(int, std::string_view, json::Kind) override { return kSkip; }
  void leave(int, std::string_view) override { require(false, "leave after kSkip"); }
};

void check_document(std::string_view text) {
  const json::ScanResult r = json::scan(text);
  std::size_t budget = 256;
  if (r.valid) check_nested(text, r, budget);

  // walk validates exactly as scan does, whatever the visitor asks for.
  SkipAll skip;
  require(json::walk(text, skip) == r.valid, "walk (asking for nothing) is valid iff scan is");
  Recorder rec;
  require(json::walk(text, rec) == r.valid, "walk (asking for everything) is valid iff scan is");
  require(rec.orderly, "enter and leave nest, and a value's parent is the open value");
  for (const Recorder::Entry& e : rec.entries) {
    require(llmgw::fuzz::within(e.key, text), "a reported key is a view of the text");
    if (e.left) require(llmgw::fuzz::within(e.value, text), "a reported value is in the text");
  }
  if (!r.valid) return;
  require(rec.open.empty(), "every value entered in a valid document is left");
  for (const Recorder::Entry& e : rec.entries) {
    if (!e.left) continue;  // over the budget: its members were not asked for
    const json::ScanResult v = json::scan(e.value);
    require(v.valid && v.is_object == (e.kind == json::Kind::object) &&
                v.is_array == (e.kind == json::Kind::array),
            "a reported value is one JSON value of the reported kind");
  }
  // The top object's members, as walk reports them, are scan's.
  std::size_t i = 0;
  for (const Recorder::Entry& e : rec.entries) {
    if (e.parent != 1 || !r.is_object) continue;
    require(i < r.members.size(), "no more top members than scan reports");
    const json::Member& m = r.members[i++];
    require(e.key == m.key && e.kind == m.kind && e.value.data() == text.data() + m.value_begin &&
                e.value.size() == m.value_end - m.value_begin,
            "walk reports scan's top members");
  }
  require(!r.is_object || rec.entries.size() >= 512 || i == r.members.size(),
          "walk reports every top member");

  // On any bytes (valid or not), the trusted scan stays inside the text.
  const json::ScanResult t = json::scan_valid(text);
  for (const json::Member& m : t.members) {
    require(span_ok(m.value_begin, m.value_end, text.size()), "scan_valid member span inside");
    require(llmgw::fuzz::within(m.key, text), "scan_valid key is a view of the text");
  }
  for (const json::Span& e : t.elements)
    require(span_ok(e.begin, e.end, text.size()), "scan_valid element span inside");
}

void check_scan_prefix(std::string_view text) {
  const json::ScanResult p = json::scan_prefix(text);
  if (!p.valid) return;
  require(p.consumed <= text.size(), "consumed inside the text");
  require(json::scan(text.substr(0, p.consumed)).valid, "the consumed prefix is one JSON value");
}

// encode_string promises valid JSON for any bytes; decoding it and encoding again is stable.
void check_encode(std::string_view text) {
  const std::string encoded = json::encode_string(text);
  const json::ScanResult r = json::scan(encoded);
  require(r.valid, "encode_string yields valid JSON");
  const auto decoded = json::decode_string(encoded);
  require(decoded.has_value(), "encode_string's token decodes");
  require(json::encode_string(*decoded) == encoded, "encode(decode(encode(x))) == encode(x)");

  const std::string_view cut = json::truncate_chars(text, text.size() % 64);
  require(cut.data() == text.data() && cut.size() <= text.size(), "truncate_chars is a prefix");
}

void check_body(std::string_view body) {
  const llmgw::BodyFacts f = llmgw::inspect_body("application/json", body);
  if (body.empty()) return;
  require(f.kind == llmgw::BodyKind::json, "a JSON content type is read as JSON");
  require(f.invalid_reason.empty() == json::scan(body).valid, "invalid_reason iff invalid JSON");
  require(span_ok(f.model_begin, f.model_end, body.size()), "model span inside the body");
  if (f.model) {
    const auto again = json::decode_string(body.substr(f.model_begin, f.model_end - f.model_begin));
    require(again == f.model, "the model span holds the model");
  }
  require(f.object_end == std::string_view::npos ||
              (f.object_end < body.size() && body[f.object_end] == '}'),
          "object_end is a closing brace");
  require(optional_span_ok(f.stream_options_begin, f.stream_options_end, body.size()),
          "stream_options span inside the body");
  require(optional_span_ok(f.include_usage_begin, f.include_usage_end, body.size()),
          "include_usage span inside the body");
  require(f.prompt_span_count <= f.prompt_spans.size(), "prompt span count");
  for (std::size_t i = 0; i < f.prompt_span_count; ++i)
    require(span_ok(f.prompt_spans[i].first, f.prompt_spans[i].second, body.size()),
            "prompt span inside the body");
  require(llmgw::prompt_characters(body, f) <= body.size(), "no more characters than bytes");
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const std::string_view text = llmgw::fuzz::as_text(data, size);
  check_scan(text);
  check_document(text);
  check_scan_prefix(text);
  check_encode(text);
  check_body(text);
  return 0;
}
