// The validating JSON scanner: validity, top-level member spans, string decoding and encoding.
#include <gtest/gtest.h>

#include <string>
#include <string_view>

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

}  // namespace
}  // namespace llmgw::json
