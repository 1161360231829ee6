// The validating JSON scanner: validity, top-level member spans, string decoding and encoding.
#include <gtest/gtest.h>

#include <string>
#include <string_view>
#include <vector>

#include "llm_gateway/translate/json_scan.hpp"

namespace llmgw::json {
namespace {

bool valid(std::string_view text) {
  return scan(text).valid;
}

// The text of a member's value, or "<absent>".
std::string value_text(std::string_view text, const ScanResult& r, std::string_view key) {
  const Member* m = r.find(key);
  if (!m) return "<absent>";
  return std::string(text.substr(m->value_begin, m->value_end - m->value_begin));
}

// ---------------------------------------------------------------------------------------------
// Validity
// ---------------------------------------------------------------------------------------------

TEST(JsonScanValidity, AcceptsEveryKindOfValue) {
  for (std::string_view text :
       {"{}", "[]", "\"\"", "0", "-0", "12", "-3.25", "1e10", "1E+2", "2.5e-3", "true", "false",
        "null", R"({"a":[1,{"b":null}],"c":"d"})", R"([[[]],{},"x",1.5,true])"}) {
    ScanResult r = scan(text);
    EXPECT_TRUE(r.valid) << text << ": " << r.error;
    EXPECT_EQ(r.error, "") << text;
  }
}

TEST(JsonScanValidity, SurroundingWhiteSpaceIsAllowed) {
  EXPECT_TRUE(valid(" \t\r\n{ \"a\" : 1 , \"b\" : [ 1 , 2 ] } \n"));
}

TEST(JsonScanValidity, EmptyOrBlankTextIsInvalid) {
  EXPECT_FALSE(valid(""));
  EXPECT_FALSE(valid("   "));
}

TEST(JsonScanValidity, TrailingGarbageIsInvalid) {
  ScanResult r = scan(R"({"model":"x"} extra)");
  EXPECT_FALSE(r.valid);
  EXPECT_NE(r.error, "");
  EXPECT_EQ(r.error_offset, 14u);
  EXPECT_FALSE(valid("{}{}"));
  EXPECT_FALSE(valid("1 2"));
}

TEST(JsonScanValidity, UnterminatedStringsAreInvalid) {
  EXPECT_FALSE(valid(R"("abc)"));
  EXPECT_FALSE(valid(R"({"model":"gpt)"));
  EXPECT_FALSE(valid(R"("abc\")"));
  EXPECT_FALSE(valid("\"\\"));
}

TEST(JsonScanValidity, BadEscapesAreInvalid) {
  EXPECT_FALSE(valid(R"("\x41")"));
  EXPECT_FALSE(valid(R"("\u12")"));
  EXPECT_FALSE(valid(R"("\u12G4")"));
  EXPECT_FALSE(valid(R"("\')"));
}

TEST(JsonScanValidity, GoodEscapesAreValid) {
  EXPECT_TRUE(valid(R"("\" \\ \/ \b \f \n \r \t \u00e9 \uD83D\uDE00")"));
}

TEST(JsonScanValidity, RawControlCharactersInStringsAreInvalid) {
  EXPECT_FALSE(valid("\"a\nb\""));
  EXPECT_FALSE(valid("\"a\tb\""));
  EXPECT_FALSE(valid(std::string_view("\"a\0b\"", 5)));
  EXPECT_TRUE(
      valid("\"a\x7f"
            "b\""));  // DEL is not a control character for JSON
}

TEST(JsonScanValidity, MalformedNumbersAreInvalid) {
  for (std::string_view text : {"01", "-01", "-", "-a", "+1", "1.", ".5", "1e", "1e+", "0x10",
                                "[01]", R"({"n":-})", "NaN", "Infinity"}) {
    EXPECT_FALSE(valid(text)) << text;
  }
}

TEST(JsonScanValidity, MalformedLiteralsAreInvalid) {
  for (std::string_view text : {"tru", "truex", "nul", "False", "[true false]"}) {
    EXPECT_FALSE(valid(text)) << text;
  }
}

TEST(JsonScanValidity, MalformedStructuresAreInvalid) {
  for (std::string_view text :
       {"{", "[", "}", "]", R"({"a":1,})", "[1,]", R"({"a" 1})", R"({a:1})", R"({"a":})",
        R"({"a":1 "b":2})", "[1 2]", "{'a':1}", R"({"a":1])", "[1}"}) {
    EXPECT_FALSE(valid(text)) << text;
  }
}

std::string nested_arrays(int depth) {
  return std::string(depth, '[') + std::string(depth, ']');
}

std::string nested_objects(int depth) {
  std::string s;
  for (int i = 0; i < depth; ++i) s += "{\"a\":";
  s += "1";
  for (int i = 0; i < depth; ++i) s += "}";
  return s;
}

TEST(JsonScanValidity, NestingUpToMaxDepthIsValid) {
  EXPECT_TRUE(valid(nested_arrays(kMaxDepth)));
  EXPECT_TRUE(valid(nested_objects(kMaxDepth)));
}

TEST(JsonScanValidity, NestingBeyondMaxDepthIsInvalid) {
  EXPECT_FALSE(valid(nested_arrays(kMaxDepth + 1)));
  EXPECT_FALSE(valid(nested_objects(kMaxDepth + 1)));
}

TEST(JsonScanValidity, VeryDeepNestingIsInvalidNotACrash) {
  ScanResult r = scan(std::string(1'000'000, '['));
  EXPECT_FALSE(r.valid);
  EXPECT_NE(r.error, "");
  EXPECT_FALSE(valid(std::string(200'000, '{')));
}

TEST(JsonScanValidity, InvalidResultHasNoMembers) {
  ScanResult r = scan(R"({"model":"x",)");
  EXPECT_FALSE(r.valid);
  EXPECT_FALSE(r.is_object);
  EXPECT_TRUE(r.members.empty());
}

// ---------------------------------------------------------------------------------------------
// Members
// ---------------------------------------------------------------------------------------------

TEST(JsonScanMembers, NonObjectTopLevelHasNoMembers) {
  ScanResult r = scan(R"([{"model":"x"}])");
  EXPECT_TRUE(r.valid);
  EXPECT_FALSE(r.is_object);
  EXPECT_TRUE(r.members.empty());
}

TEST(JsonScanMembers, EmptyObject) {
  ScanResult r = scan(" { } ");
  EXPECT_TRUE(r.valid);
  EXPECT_TRUE(r.is_object);
  EXPECT_TRUE(r.members.empty());
}

TEST(JsonScanMembers, ReportsTopLevelMembersInOrderWithKindsAndSpans) {
  const std::string_view text =
      R"({"model": "gpt-4o", "n":-1.5e3, "stream":true, "stop":null, "msgs":[1,2], "o":{"x":1}})";
  ScanResult r = scan(text);
  ASSERT_TRUE(r.valid) << r.error;
  ASSERT_TRUE(r.is_object);
  ASSERT_EQ(r.members.size(), 6u);
  const std::string_view keys[] = {"model", "n", "stream", "stop", "msgs", "o"};
  const Kind kinds[] = {Kind::string, Kind::number, Kind::boolean,
                        Kind::null,   Kind::array,  Kind::object};
  for (std::size_t i = 0; i < 6; ++i) {
    EXPECT_EQ(r.members[i].key, keys[i]);
    EXPECT_EQ(r.members[i].kind, kinds[i]) << keys[i];
  }
  EXPECT_EQ(value_text(text, r, "model"), R"("gpt-4o")");
  EXPECT_EQ(value_text(text, r, "n"), "-1.5e3");
  EXPECT_EQ(value_text(text, r, "stream"), "true");
  EXPECT_EQ(value_text(text, r, "stop"), "null");
  EXPECT_EQ(value_text(text, r, "msgs"), "[1,2]");
  EXPECT_EQ(value_text(text, r, "o"), R"({"x":1})");
}

TEST(JsonScanMembers, NestedModelKeysAreNotReported) {
  const std::string_view text =
      R"({"messages":[{"model":"inner"}],"meta":{"model":"nested"},"model":"outer"})";
  ScanResult r = scan(text);
  ASSERT_TRUE(r.valid);
  ASSERT_EQ(r.members.size(), 3u);
  EXPECT_EQ(r.members[0].key, "messages");
  EXPECT_EQ(r.members[1].key, "meta");
  EXPECT_EQ(r.members[2].key, "model");
  EXPECT_EQ(value_text(text, r, "model"), R"("outer")");
}

TEST(JsonScanMembers, NoTopLevelModelMeansNotFound) {
  ScanResult r = scan(R"({"input":{"model":"nested"}})");
  ASSERT_TRUE(r.valid);
  EXPECT_EQ(r.find("model"), nullptr);
}

TEST(JsonScanMembers, KeysAreRawTextBetweenTheQuotes) {
  ScanResult r = scan(R"({"a\"b":1,"\u006dodel":2})");
  ASSERT_TRUE(r.valid);
  ASSERT_EQ(r.members.size(), 2u);
  EXPECT_EQ(r.members[0].key, R"(a\"b)");
  EXPECT_EQ(r.members[1].key, R"(\u006dodel)");
}

// ---------------------------------------------------------------------------------------------
// decode_string / encode_string
// ---------------------------------------------------------------------------------------------

TEST(JsonDecodeString, PlainString) {
  EXPECT_EQ(decode_string(R"("gpt-4o")"), "gpt-4o");
  EXPECT_EQ(decode_string(R"("")"), "");
}

TEST(JsonDecodeString, SimpleEscapes) {
  EXPECT_EQ(decode_string(R"("a\"b\\c\/d\be\ff\ng\rh\ti")"),
            std::string("a\"b\\c/d\be\ff\ng\rh\ti"));
}

TEST(JsonDecodeString, UnicodeEscapesBecomeUtf8) {
  EXPECT_EQ(decode_string(R"("\u0041")"), "A");
  EXPECT_EQ(decode_string(R"("caf\u00e9")"), "caf\xC3\xA9");
  EXPECT_EQ(decode_string(R"("\u20AC")"), "\xE2\x82\xAC");
  EXPECT_EQ(decode_string(R"("\u0000")"), std::string(1, '\0'));
}

TEST(JsonDecodeString, SurrogatePairBecomesOneFourByteCharacter) {
  EXPECT_EQ(decode_string(R"("\uD83D\uDE00")"), "\xF0\x9F\x98\x80");  // U+1F600
  EXPECT_EQ(decode_string(R"("x\ud83d\ude00y")"), "x\xF0\x9F\x98\x80y");
}

TEST(JsonDecodeString, Utf8BytesPassThrough) {
  EXPECT_EQ(decode_string("\"caf\xC3\xA9\""), "caf\xC3\xA9");
}

TEST(JsonDecodeString, MalformedTokensGiveNullopt) {
  EXPECT_FALSE(decode_string(""));
  EXPECT_FALSE(decode_string("\""));
  EXPECT_FALSE(decode_string("abc"));
  EXPECT_FALSE(decode_string(R"("abc)"));
  EXPECT_FALSE(decode_string(R"("\")"));
  EXPECT_FALSE(decode_string(R"("\x")"));
  EXPECT_FALSE(decode_string(R"("\u12")"));
  EXPECT_FALSE(decode_string(R"("\uZZZZ")"));
}

TEST(JsonEncodeString, QuotesPlainText) {
  EXPECT_EQ(encode_string("gpt-4o"), R"("gpt-4o")");
  EXPECT_EQ(encode_string(""), R"("")");
}

TEST(JsonEncodeString, EscapesQuotesBackslashesAndControlCharacters) {
  EXPECT_EQ(encode_string("a\"b\\c"), R"("a\"b\\c")");
  EXPECT_EQ(encode_string("\n\r\t"), R"("\n\r\t")");
  EXPECT_EQ(encode_string(std::string("\x01\x1f\b\f", 4)), R"("\u0001\u001f\u0008\u000c")");
  EXPECT_EQ(encode_string(std::string(1, '\0')), R"("\u0000")");
}

TEST(JsonEncodeString, KeepsSlashDelAndUtf8) {
  EXPECT_EQ(encode_string("org/model"), R"("org/model")");
  EXPECT_EQ(encode_string("\x7f"), "\"\x7f\"");
  EXPECT_EQ(encode_string("caf\xC3\xA9"), "\"caf\xC3\xA9\"");
}

TEST(JsonEncodeString, OutputIsAValidJsonString) {
  std::string all;
  for (int c = 0; c < 256; ++c) all += static_cast<char>(c);
  const std::string token = encode_string(all);
  ScanResult r = scan(token);
  EXPECT_TRUE(r.valid) << r.error;
}

TEST(JsonEncodeString, RoundTripsThroughDecode) {
  std::string ascii;
  for (int c = 0; c < 128; ++c) ascii += static_cast<char>(c);
  for (const std::string& s :
       {std::string("gpt-4o"), std::string("a \"quoted\" \\ path/x"), std::string("tab\tnl\ncr\r"),
        ascii, std::string("h\xC3\xA9llo \xE2\x9C\x93 \xF0\x9F\x98\x80")}) {
    EXPECT_EQ(decode_string(encode_string(s)), s);
  }
}

TEST(JsonEncodeString, BytesThatAreNotUtf8BecomeReplacementCharacters) {
  // A Latin-1 header value, a character cut in half, a lone continuation byte, an overlong form.
  const std::string input = "caf\xE9 \xE2\x9C \x80 \xC0\xAF";
  const std::string encoded = encode_string(input);
  EXPECT_EQ(encoded,
            "\"caf\xEF\xBF\xBD \xEF\xBF\xBD\xEF\xBF\xBD \xEF\xBF\xBD \xEF\xBF\xBD\xEF\xBF\xBD\"");
  EXPECT_TRUE(scan(encoded).valid);
}

// The encoder byte by byte, as the definition the 16-bytes-at-a-time encoder must agree with.
std::string reference_encode(std::string_view value) {
  static constexpr char kHex[] = "0123456789abcdef";
  std::string out = "\"";
  for (std::size_t i = 0; i < value.size(); ++i) {
    const auto c = static_cast<unsigned char>(value[i]);
    if (c >= 0x80) {
      // A well-formed UTF-8 sequence (shortest form, no surrogate, at most U+10FFFF) is kept;
      // any other byte becomes U+FFFD.
      const std::size_t len = c >= 0xF0 ? 4 : c >= 0xE0 ? 3 : c >= 0xC0 ? 2 : 1;
      std::uint32_t cp = c & (0x7Fu >> len);
      bool ok = len > 1 && c < 0xF8 && i + len <= value.size();
      for (std::size_t k = 1; ok && k < len; ++k) {
        const auto b = static_cast<unsigned char>(value[i + k]);
        ok = (b & 0xC0) == 0x80;
        cp = (cp << 6) | (b & 0x3F);
      }
      const std::uint32_t shortest = len == 2 ? 0x80 : len == 3 ? 0x800 : 0x10000;
      ok = ok && cp >= shortest && cp <= 0x10FFFF && (cp < 0xD800 || cp > 0xDFFF);
      if (ok) {
        out.append(value.substr(i, len));
        i += len - 1;
      } else {
        out += "\xEF\xBF\xBD";
      }
      continue;
    }
    if (c == '"' || c == '\\') {
      out += '\\';
      out += static_cast<char>(c);
    } else if (c == '\n') {
      out += "\\n";
    } else if (c == '\r') {
      out += "\\r";
    } else if (c == '\t') {
      out += "\\t";
    } else if (c < 0x20) {
      out += "\\u00";
      out += kHex[c >> 4];
      out += kHex[c & 0xF];
    } else {
      out += static_cast<char>(c);
    }
  }
  return out + "\"";
}

TEST(JsonEncodeString, EverySpecialAtEveryOffsetMatchesTheByteByByteEncoder) {
  const std::vector<std::string> specials = {"\"",
                                             "\\",
                                             "\n",
                                             "\r",
                                             "\t",
                                             std::string(1, '\0'),
                                             "\x1f",
                                             "\x7f",
                                             "\xC3\xA9",
                                             "\xE2\x9C\x93",
                                             "\xF0\x9F\x98\x80",
                                             "\xE9",
                                             "\xE2\x9C",
                                             "\x80",
                                             "\xC0\xAF"};
  for (std::size_t n = 0; n < 40; ++n) {
    for (const std::string& special : specials) {
      for (const std::string& input :
           {std::string(n, 'a') + special, std::string(n, 'a') + special + std::string(20, 'b'),
            special + std::string(n, 'c') + special}) {
        EXPECT_EQ(encode_string(input), reference_encode(input)) << n;
        std::string appended = "prefix:";
        append_encoded(appended, input);
        EXPECT_EQ(appended, "prefix:" + reference_encode(input)) << n;
      }
    }
  }
}

// ---------------------------------------------------------------------------------------------
// The string fast path (16 bytes at a time): a special byte at every offset of a block
// ---------------------------------------------------------------------------------------------

TEST(JsonScanStrings, SpecialBytesAreFoundAtEveryOffset) {
  for (std::size_t n = 0; n < 40; ++n) {
    const std::string run(n, 'a');
    EXPECT_TRUE(valid("\"" + run + "\"")) << n;
    EXPECT_TRUE(valid("\"" + run + "\\\"x\"")) << n;  // an escaped quote does not end it
    EXPECT_TRUE(valid("\"" + run + "\\u00e9\"")) << n;
    EXPECT_FALSE(valid("\"" + run + "\x01\"")) << n;  // a control byte
    EXPECT_FALSE(valid("\"" + run + "\x1f\"")) << n;
    EXPECT_FALSE(valid("\"" + run + "\\x\"")) << n;              // an invalid escape
    EXPECT_FALSE(valid("\"" + run)) << n;                        // unterminated
    EXPECT_TRUE(valid("\"" + run + "\x20\x7f\xc3\xa9\"")) << n;  // space, DEL and UTF-8 pass
    const std::string doc = "{\"k\":\"" + run + "\",\"m\":1}";
    ScanResult r = scan(doc);
    ASSERT_TRUE(r.valid) << n;
    EXPECT_EQ(value_text(doc, r, "k"), "\"" + run + "\"");
    EXPECT_EQ(value_text(doc, r, "m"), "1");
  }
}

// ---------------------------------------------------------------------------------------------
// scan_valid and Document: reading nested values of a validated document
// ---------------------------------------------------------------------------------------------

// A response shaped like Azure's: objects in arrays in objects, strings holding brackets and
// escaped quotes, numbers and literals at every level.
constexpr std::string_view kNested = R"({"choices":[{"content_filter_results":{"hate":)"
                                     R"({"filtered":false,"severity":"safe"},"jailbreak":)"
                                     R"({"filtered":true,"detected":true}},"finish_reason":"stop",)"
                                     R"("index":0,"message":{"content":"a } ] \" [ { b",)"
                                     R"("role":"assistant"}}],"usage":{"prompt_tokens":12,)"
                                     R"("completion_tokens":3,"details":[1,-2.5e3,true,null,[]]}})";

std::string describe(std::string_view text, const ScanResult& r) {
  std::string out = r.valid ? "valid" : "invalid";
  for (const Member& m : r.members)
    out += " " + std::string(m.key) + "=" + std::string(r.text_of(text, m)) + "/" +
           std::to_string(static_cast<int>(m.kind));
  for (const Span& e : r.elements)
    out += " [" + std::string(text.substr(e.begin, e.end - e.begin)) + "]/" +
           std::to_string(static_cast<int>(e.kind));
  return out;
}

// Visits every object and array below the top of `text`, checking that scan_valid reports what a
// validating scan of the same span reports; returns how many.
int check_nested(std::string_view text, const ScanResult& r) {
  int visited = 0;
  auto visit = [&](std::size_t begin, std::size_t end, Kind kind) {
    if (kind != Kind::object && kind != Kind::array) return;
    const std::string_view sub = text.substr(begin, end - begin);
    const ScanResult expected = scan(sub);
    EXPECT_EQ(describe(sub, scan_valid(sub)), describe(sub, expected)) << sub;
    visited += 1 + check_nested(sub, expected);
  };
  for (const Member& m : r.members) visit(m.value_begin, m.value_end, m.kind);
  for (const Span& e : r.elements) visit(e.begin, e.end, e.kind);
  return visited;
}

TEST(JsonScanValid, ReportsTheSameMembersAsAValidatingScan) {
  EXPECT_EQ(check_nested(kNested, scan(kNested)), 9);
}

// ---------------------------------------------------------------------------------------------
// walk: one validating pass that reports the values a visitor asks for
// ---------------------------------------------------------------------------------------------

// Asks for the values on one path of member names ("" for an array element) and for every member
// of the value the path leads to; writes down what the walk reports. A value's id is its depth.
struct PathVisitor final : WalkVisitor {
  std::vector<std::string_view> path;
  std::string log;
  int enter(int parent, std::string_view key, Kind kind) override {
    const auto depth = static_cast<std::size_t>(parent);
    if (depth > path.size() + 1) return kSkip;
    if (depth >= 1 && depth <= path.size() && key != path[depth - 1]) return kSkip;
    log += "enter " + std::to_string(parent) + " " + std::string(key) + "/" +
           std::to_string(static_cast<int>(kind)) + "; ";
    return parent + 1;
  }
  void leave(int id, std::string_view value) override {
    log += "leave " + std::to_string(id) + " " + std::string(value) + "; ";
  }
};

TEST(JsonWalk, ReportsTheValuesAskedForAndNothingBelowASkip) {
  const ScanResult top = scan(kNested);
  const std::string_view choices = top.text_of(kNested, *top.find("choices"));
  const ScanResult elements = scan(choices);
  ASSERT_EQ(elements.elements.size(), 1u);
  const std::string_view choice = choices.substr(
      elements.elements[0].begin, elements.elements[0].end - elements.elements[0].begin);
  const ScanResult choice_members = scan(choice);
  const std::string_view results =
      choice_members.text_of(choice, *choice_members.find("content_filter_results"));

  PathVisitor v;
  v.path = {"choices", "", "content_filter_results", "jailbreak"};
  ASSERT_TRUE(walk(kNested, v));
  EXPECT_EQ(v.log,
            "enter 0 /2; "                        // the top object (id 1)
            "enter 1 choices/3; "                 // (the other top members: skipped)
            "enter 2 /2; "                        // its one element
            "enter 3 content_filter_results/2; "  // (finish_reason, message: skipped)
            "enter 4 jailbreak/2; "               // (hate: skipped)
            "enter 5 filtered/4; leave 6 true; "  // every member at the path's end
            "enter 5 detected/4; leave 6 true; "
            R"(leave 5 {"filtered":true,"detected":true}; )"
            "leave 4 " +
                std::string(results) + "; leave 3 " + std::string(choice) + "; leave 2 " +
                std::string(choices) + "; leave 1 " + std::string(kNested) + "; ");
}

TEST(JsonWalk, ValidatesAsScanDoes) {
  for (std::string_view text :
       {std::string_view(kNested), std::string_view(R"({"a":[1,2,{"b":null}]} )"),
        std::string_view(R"([1,"x",{"y":[]}])"), std::string_view("\"plain\""),
        std::string_view(R"({"a":{"b":1},"c":[1,2}})"), std::string_view(R"({"a":"\x"})"),
        std::string_view(R"({"a":1} trailing)"), std::string_view(R"({"a":01})"),
        std::string_view(R"({"a":)"), std::string_view(""), std::string_view(" "),
        std::string_view("{\"a\":\"\x01\"}"), std::string_view(R"({"a":[{"b":tru}]})")}) {
    PathVisitor v;
    v.path = {"a", "", "b"};
    EXPECT_EQ(walk(text, v), scan(text).valid) << text;
  }
}

TEST(JsonWalk, AnInvalidDocumentIsReportedInvalidAfterItsValuesWereSeen) {
  // A reader's contract: values before the error may have been reported already, and walk's
  // answer says whether to keep what it learnt.
  PathVisitor v;
  v.path = {"usage"};
  EXPECT_FALSE(walk(R"({"usage":{"total_tokens":5},"x":[})", v));
  EXPECT_NE(v.log.find("leave 3 5"), std::string::npos) << v.log;
}

TEST(JsonScanValid, OnInvalidTextEverySpanStaysInsideIt) {
  for (std::string_view text :
       {R"({"a":{"b":"c)", R"({"a":[[[)", R"({"a":"\)", R"({"a":tru)", R"({"a":{"b":"}"},"c")",
        R"([{"a":"\\"}, "\")", R"({"a":x})", "{\"a\":\"\\", "[", "{"}) {
    const ScanResult r = scan_valid(text);
    for (const Member& m : r.members) {
      EXPECT_LE(m.value_begin, m.value_end) << text;
      EXPECT_LE(m.value_end, text.size()) << text;
    }
    for (const Span& e : r.elements) EXPECT_LE(e.end, text.size()) << text;
  }
}

}  // namespace
}  // namespace llmgw::json
