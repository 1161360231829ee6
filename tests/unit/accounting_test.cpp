// Accounting: the SSE splitter, usage/finish_reason from JSON documents, Azure content-filter
// summaries, and the account stage (reading usage, removing the usage chunk the gateway asked
// for). Sample bodies are Azure's documented shapes (Azure OpenAI content filtering docs and the
// OpenAI API reference for stream_options.include_usage).
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/beast/http/fields.hpp>
#include <ostream>  // first: Boost 1.81 core/detail/string_view.hpp needs it but does not include it

#include <gtest/gtest.h>

#include <algorithm>
#include <array>
#include <cstdint>
#include <cstring>
#include <exception>
#include <initializer_list>
#include <iterator>
#include <optional>
#include <random>
#include <string>
#include <string_view>
#include <vector>

#include "../fuzz/response_reference.hpp"
#include "llm_gateway/accounting/content_filter.hpp"
#include "llm_gateway/accounting/response_document.hpp"
#include "llm_gateway/accounting/response_reader.hpp"
#include "llm_gateway/pipeline/context.hpp"
#include "llm_gateway/pipeline/pipeline.hpp"
#include "llm_gateway/ratelimit/limiter.hpp"
#include "llm_gateway/stages/account_stage.hpp"
#include "test_support.hpp"

namespace llmgw {
namespace {

namespace http = boost::beast::http;
using accounting::CategoryResult;
using accounting::ContentFilterSummary;
using accounting::FilterStage;
using accounting::JsonFacts;
using accounting::Severity;
using accounting::SseSplitter;
using accounting::Usage;

// ---------------------------------------------------------------------------------------------
// Samples (azure-api.md)
// ---------------------------------------------------------------------------------------------

// §3.2 Non-streaming chat completion with annotations (o1, reasoning how-to).
constexpr std::string_view kAzureChatBody = R"({
  "id": "chatcmpl-AEj7pKFoiTqDPHuxOcirA9KIvf3yz",
  "choices": [
    {
      "finish_reason": "stop",
      "index": 0,
      "logprobs": null,
      "message": {
        "content": "Writing your first Python API is an exciting step ...",
        "refusal": null,
        "role": "assistant",
        "function_call": null,
        "tool_calls": null
      },
      "content_filter_results": {
        "hate": { "filtered": false, "severity": "safe" },
        "protected_material_code": { "filtered": false, "detected": false },
        "protected_material_text": { "filtered": false, "detected": false },
        "self_harm": { "filtered": false, "severity": "safe" },
        "sexual": { "filtered": false, "severity": "safe" },
        "violence": { "filtered": false, "severity": "safe" }
      }
    }
  ],
  "created": 1728073417,
  "model": "o1-2024-12-17",
  "object": "chat.completion",
  "service_tier": null,
  "system_fingerprint": "fp_503a95a7d8",
  "usage": {
    "completion_tokens": 1843,
    "prompt_tokens": 20,
    "total_tokens": 1863,
    "completion_tokens_details": { "audio_tokens": null, "reasoning_tokens": 448 },
    "prompt_tokens_details": { "audio_tokens": null, "cached_tokens": 0 }
  },
  "prompt_filter_results": [
    {
      "prompt_index": 0,
      "content_filter_results": {
        "custom_blocklists": { "filtered": false },
        "hate": { "filtered": false, "severity": "safe" },
        "jailbreak": { "filtered": false, "detected": false },
        "self_harm": { "filtered": false, "severity": "safe" },
        "sexual": { "filtered": false, "severity": "safe" },
        "violence": { "filtered": false, "severity": "safe" }
      }
    }
  ]
})";

// §3.3 Streaming, default mode: the prompt-annotation chunk, the role chunk, a content chunk,
// the finish chunk.
constexpr std::string_view kStreamPromptChunk =
    R"({"choices":[],"created":0,"id":"","model":"","object":"","prompt_filter_results":[{"prompt_index":0,"content_filter_results":{"hate":{"filtered":false,"severity":"safe"},"self_harm":{"filtered":false,"severity":"safe"},"sexual":{"filtered":false,"severity":"safe"},"violence":{"filtered":false,"severity":"safe"}}}]})";
constexpr std::string_view kStreamRoleChunk =
    R"({"choices":[{"content_filter_results":{},"delta":{"content":"","role":"assistant"},"finish_reason":null,"index":0,"logprobs":null}],"created":1720865367,"id":"chatcmpl-9kTyxSScdtj40efg4H99eb3C6jn7d","model":"gpt-35-turbo-16k","object":"chat.completion.chunk","system_fingerprint":null})";
constexpr std::string_view kStreamContentChunk =
    R"({"choices":[{"content_filter_results":{"hate":{"filtered":false,"severity":"safe"},"self_harm":{"filtered":false,"severity":"safe"},"sexual":{"filtered":false,"severity":"safe"},"violence":{"filtered":false,"severity":"safe"}},"delta":{"content":"Hello"},"finish_reason":null,"index":0,"logprobs":null}],"created":1720865367,"id":"chatcmpl-9kTyxSScdtj40efg4H99eb3C6jn7d","model":"gpt-35-turbo-16k","object":"chat.completion.chunk","system_fingerprint":null})";
constexpr std::string_view kStreamFinishChunk =
    R"({"choices":[{"content_filter_results":{},"delta":{},"finish_reason":"stop","index":0,"logprobs":null}],"created":1720865367,"id":"chatcmpl-9kTyxSScdtj40efg4H99eb3C6jn7d","model":"gpt-35-turbo-16k","object":"chat.completion.chunk","system_fingerprint":null})";

// §8 The include_usage chunk.
constexpr std::string_view kUsageChunk =
    R"({"id":"chatcmpl-9YM1lpTbJLDBnrawPqt2CjT3gnoVA","object":"chat.completion.chunk","created":1717974853,"model":"gpt-4o-2024-05-13","system_fingerprint":"fp_319be4768e","choices":[],"usage":{"prompt_tokens":11,"completion_tokens":20,"total_tokens":31}})";

// §3.5 Asynchronous filter, passing stream: the first chunk uses the old prompt_annotations name.
constexpr std::string_view kAsyncPromptAnnotationsChunk =
    R"({"id":"","object":"","created":0,"model":"","prompt_annotations":[{"prompt_index":0,"content_filter_results":{"hate":{"filtered":false,"severity":"safe"},"self_harm":{"filtered":false,"severity":"safe"},"sexual":{"filtered":false,"severity":"safe"},"violence":{"filtered":false,"severity":"safe"}}}],"choices":[],"usage":null})";

// §3.5 Asynchronous filter, blocked stream.
constexpr std::string_view kBlockedPromptChunk =
    R"({"id":"","object":"","created":0,"model":"","prompt_filter_results":[{"prompt_index":0,"content_filter_results":{"hate":{"filtered":false,"severity":"safe"},"self_harm":{"filtered":false,"severity":"safe"},"sexual":{"filtered":false,"severity":"safe"},"violence":{"filtered":false,"severity":"safe"}}}],"choices":[],"usage":null})";
constexpr std::string_view kBlockedRoleChunk =
    R"({"id":"chatcmpl-8JCbt5d4luUIhYCI7YH4dQK7hnHx2","object":"chat.completion.chunk","created":1699587397,"model":"gpt-35-turbo","choices":[{"index":0,"finish_reason":null,"delta":{"role":"assistant"}}],"usage":null})";
constexpr std::string_view kBlockedContentChunk =
    R"({"id":"chatcmpl-8JCbt5d4luUIhYCI7YH4dQK7hnHx2","object":"chat.completion.chunk","created":1699587397,"model":"gpt-35-turbo","choices":[{"index":0,"finish_reason":null,"delta":{"content":"Hey"}}],"usage":null})";
constexpr std::string_view kBlockedAnnotationChunk =
    R"({"id":"","object":"","created":0,"model":"","choices":[{"index":0,"finish_reason":null,"content_filter_results":{"hate":{"filtered":false,"severity":"safe"},"self_harm":{"filtered":false,"severity":"safe"},"sexual":{"filtered":false,"severity":"safe"},"violence":{"filtered":false,"severity":"safe"}},"content_filter_offsets":{"check_offset":65,"start_offset":65,"end_offset":1056}}],"usage":null})";
constexpr std::string_view kBlockedFinalChunk =
    R"({"id":"","object":"","created":0,"model":"","choices":[{"index":0,"finish_reason":"content_filter","content_filter_results":{"protected_material_text":{"detected":true,"filtered":true}},"content_filter_offsets":{"check_offset":65,"start_offset":65,"end_offset":1056}}],"usage":null})";

// §3.6 HTTP 400 when the prompt is filtered (real body: innererror, content_filter_result).
constexpr std::string_view kFilteredPromptError = R"({
  "error": {
    "message": "The response was filtered due to the prompt triggering Azure OpenAI's content management policy. Please modify your prompt and retry. To learn more about our content filtering policies please read our documentation: https://go.microsoft.com/fwlink/?linkid=2198766",
    "type": null,
    "param": "prompt",
    "code": "content_filter",
    "status": 400,
    "innererror": {
      "code": "ResponsibleAIPolicyViolation",
      "content_filter_result": {
        "hate": { "filtered": false, "severity": "safe" },
        "jailbreak": { "filtered": false, "detected": false },
        "self_harm": { "filtered": true, "severity": "medium" },
        "sexual": { "filtered": false, "severity": "safe" },
        "violence": { "filtered": false, "severity": "safe" }
      }
    }
  }
})";

std::string replace_all(std::string s, std::string_view from, std::string_view to) {
  for (std::size_t at = s.find(from); at != std::string::npos; at = s.find(from, at + to.size()))
    s.replace(at, from.size(), to);
  return s;
}

// An SSE stream of `data:` events with the given terminator after each.
std::string sse(const std::vector<std::string_view>& datas, std::string_view terminator = "\n\n") {
  std::string out;
  for (auto d : datas) {
    out += "data: ";
    out += d;
    out += terminator;
  }
  return out;
}

std::size_t category(std::string_view name) {
  const auto& c = accounting::kFilterCategories;
  const auto it = std::find(c.begin(), c.end(), name);
  EXPECT_NE(it, c.end()) << name;
  return static_cast<std::size_t>(it - c.begin());
}

const CategoryResult& result(const ContentFilterSummary& s, FilterStage stage,
                             std::string_view name) {
  return s.result(stage, category(name));
}

using Names = std::vector<std::string_view>;

// ---------------------------------------------------------------------------------------------
// SseSplitter
// ---------------------------------------------------------------------------------------------

std::vector<std::string> split_pieces(const std::vector<std::string_view>& pieces) {
  SseSplitter s;
  std::vector<std::string> events;
  for (auto p : pieces) s.feed(p, [&](std::string_view e) { events.emplace_back(e); });
  return events;
}

const std::string kMixedStream =
    ": comment line\n\n"
    "event: message\nid: 7\ndata: " +
    std::string(kStreamPromptChunk) + "\n\n" + "data: " + std::string(kStreamRoleChunk) + "\n\n" +
    "data: first line\ndata: second line\n\n" + "data: " + std::string(kStreamFinishChunk) +
    "\n\n" + "data: " + std::string(kUsageChunk) + "\n\n" + "data: [DONE]\n\n";

TEST(SseSplitter, WholeStreamGivesEachEventWithoutItsTerminator) {
  const auto events = split_pieces({kMixedStream});
  ASSERT_EQ(events.size(), 7u);
  EXPECT_EQ(events[0], ": comment line");
  EXPECT_EQ(events[1], "event: message\nid: 7\ndata: " + std::string(kStreamPromptChunk));
  EXPECT_EQ(events[3], "data: first line\ndata: second line");
  EXPECT_EQ(events[6], "data: [DONE]");
}

TEST(SseSplitter, CutAtEveryByteOffsetGivesTheSameEvents) {
  const auto expected = split_pieces({kMixedStream});
  const std::string_view s = kMixedStream;
  for (std::size_t cut = 0; cut <= s.size(); ++cut) {
    ASSERT_EQ(split_pieces({s.substr(0, cut), s.substr(cut)}), expected) << "cut at " << cut;
  }
}

TEST(SseSplitter, CutIntoThreeAtManyOffsetsGivesTheSameEvents) {
  const auto expected = split_pieces({kMixedStream});
  const std::string_view s = kMixedStream;
  for (std::size_t a = 0; a <= s.size(); a += 7) {
    for (std::size_t b = a; b <= s.size(); b += 13) {
      ASSERT_EQ(split_pieces({s.substr(0, a), s.substr(a, b - a), s.substr(b)}), expected)
          << "cuts at " << a << ", " << b;
    }
  }
}

TEST(SseSplitter, OneByteAtATimeGivesTheSameEvents) {
  const auto expected = split_pieces({kMixedStream});
  std::vector<std::string_view> bytes;
  for (std::size_t i = 0; i < kMixedStream.size(); ++i)
    bytes.push_back(std::string_view(kMixedStream).substr(i, 1));
  EXPECT_EQ(split_pieces(bytes), expected);
}

TEST(SseSplitter, CrLfTerminatorsAtEveryOffset) {
  const std::string stream = "event: message\r\ndata: " + std::string(kStreamPromptChunk) +
                             "\r\n\r\n" +
                             sse({kStreamRoleChunk, kStreamFinishChunk, "[DONE]"}, "\r\n\r\n");
  const auto expected = split_pieces({stream});
  ASSERT_EQ(expected.size(), 4u);
  EXPECT_EQ(expected[0], "event: message\r\ndata: " + std::string(kStreamPromptChunk));
  EXPECT_EQ(expected[1], "data: " + std::string(kStreamRoleChunk));
  EXPECT_EQ(expected[3], "data: [DONE]");
  const std::string_view s = stream;
  for (std::size_t cut = 0; cut <= s.size(); ++cut) {
    ASSERT_EQ(split_pieces({s.substr(0, cut), s.substr(cut)}), expected) << "cut at " << cut;
  }
}

TEST(SseSplitter, SeveralEventsInOnePieceAreViewsOfThatPiece) {
  const std::string piece = "data: a\n\ndata: b\n\ndata: c\n\ndata: d";
  SseSplitter s;
  std::vector<std::string_view> views;
  s.feed(piece, [&](std::string_view e) { views.push_back(e); });
  ASSERT_EQ(views.size(), 3u);
  for (auto v : views) {
    EXPECT_GE(v.data(), piece.data());
    EXPECT_LE(v.data() + v.size(), piece.data() + piece.size());
  }
  EXPECT_EQ(views[2], "data: c");
  // The incomplete rest waits for its terminator.
  std::vector<std::string> rest;
  s.feed("\n", [&](std::string_view e) { rest.emplace_back(e); });
  EXPECT_TRUE(rest.empty());
  s.feed("\ndata: e\n\n", [&](std::string_view e) { rest.emplace_back(e); });
  EXPECT_EQ(rest, (std::vector<std::string>{"data: d", "data: e"}));
}

TEST(SseSplitter, EmptyPiecesAndUnterminatedTailEmitNothing) {
  EXPECT_TRUE(split_pieces({"", "", "data: x\n", ""}).empty());
  EXPECT_EQ(split_pieces({"", "data: x\n", "", "\n"}), (std::vector<std::string>{"data: x"}));
}

TEST(FindEventEnd, PicksTheEarlierTerminator) {
  using accounting::find_event_end;
  EXPECT_FALSE(find_event_end("data: x\n", 0));
  EXPECT_FALSE(find_event_end("data: x\r\n\r", 0));
  auto lf = find_event_end("data: x\n\ndata: y\r\n\r\n", 0);
  ASSERT_TRUE(lf);
  EXPECT_EQ(lf->first, 7u);
  EXPECT_EQ(lf->second, 9u);
  auto crlf = find_event_end("data: x\n\ndata: y\r\n\r\n", 9);
  ASSERT_TRUE(crlf);
  EXPECT_EQ(crlf->first, 16u);
  EXPECT_EQ(crlf->second, 20u);
}

// The one-pass search against the definition it replaced (the earlier of the two terminators,
// each searched for separately), over every string of up to 7 characters from {a, \r, \n} and
// every starting offset.
TEST(FindEventEnd, MatchesTheTwoSearchDefinitionOnEveryShortString) {
  auto reference = [](std::string_view text,
                      std::size_t from) -> std::optional<std::pair<std::size_t, std::size_t>> {
    const std::size_t lf = text.find("\n\n", from);
    const std::size_t crlf = text.find("\r\n\r\n", from);
    if (lf == std::string_view::npos && crlf == std::string_view::npos) return std::nullopt;
    if (crlf < lf) return std::pair{crlf, crlf + 4};
    return std::pair{lf, lf + 2};
  };
  const char alphabet[] = {'a', '\r', '\n'};
  for (std::size_t len = 0; len <= 7; ++len) {
    std::size_t combos = 1;
    for (std::size_t i = 0; i < len; ++i) combos *= 3;
    for (std::size_t c = 0; c < combos; ++c) {
      std::string text;
      for (std::size_t i = 0, k = c; i < len; ++i, k /= 3) text += alphabet[k % 3];
      for (std::size_t from = 0; from <= len; ++from) {
        ASSERT_EQ(accounting::find_event_end(text, from), reference(text, from))
            << testing::PrintToString(text) << " from " << from;
      }
    }
  }
}

TEST(ScanEventKeys, TellsTheKeysAccountingReads) {
  using accounting::scan_event_keys;
  const auto plain = scan_event_keys(
      R"({"choices":[{"content_filter_results":{"hate":{"filtered":false}},"delta":{"content":"x"},)"
      R"("finish_reason":null}],"usage":null})");
  EXPECT_FALSE(plain.usage_object);
  EXPECT_FALSE(plain.finish_reason_string);
  EXPECT_TRUE(plain.filter_results);
  EXPECT_FALSE(plain.prompt_results);
  EXPECT_EQ(plain.choice_results, 1);
  EXPECT_EQ(plain.first_choice_results, 13u);

  const auto last =
      scan_event_keys(R"({"choices":[{"finish_reason" : "stop"}],"usage": {"total_tokens":3}})");
  EXPECT_TRUE(last.usage_object);
  EXPECT_TRUE(last.finish_reason_string);
  EXPECT_FALSE(last.filter_results);
  EXPECT_EQ(last.choice_results, 0);

  const auto prompt =
      scan_event_keys(R"({"choices":[],"prompt_filter_results":[{"content_filter_results":{}}]})");
  EXPECT_TRUE(prompt.prompt_results);
  EXPECT_TRUE(prompt.filter_results);
  EXPECT_TRUE(scan_event_keys(R"({"prompt_annotations":[]})").prompt_results);

  const auto two = scan_event_keys(
      R"({"choices":[{"content_filter_results":{}},{"content_filter_results" :{}}]})");
  EXPECT_EQ(two.choice_results, 1);  // only the exact `"content_filter_results":` form counts
  EXPECT_TRUE(two.filter_results);

  // Truncated data never reads past its end.
  EXPECT_FALSE(scan_event_keys(R"({"usage")").usage_object);
  EXPECT_FALSE(scan_event_keys(R"({"usage":)").usage_object);
  EXPECT_FALSE(scan_event_keys(R"({"finish_reason":)").finish_reason_string);
  EXPECT_FALSE(scan_event_keys("\"").usage_object);
}

// The 16-bytes-at-a-time walk against the memchr walk it replaced: the same keys for the same
// quotes, wherever they fall relative to a 16-byte block (every shift of a prefix), for
// random sequences of the pieces keys are made of, escaped and cut-off ones included.
TEST(ScanEventKeys, TheBlockWalkAgreesWithTheQuoteByQuoteWalk) {
  const auto reference = [](std::string_view data) {
    accounting::EventKeys keys;
    const char* const begin = data.data();
    const char* const end = begin + data.size();
    auto after_colon = [end](const char* p) -> const char* {
      while (p < end && (*p == ' ' || *p == '\t' || *p == '\r' || *p == '\n')) ++p;
      if (p == end || *p != ':') return nullptr;
      ++p;
      while (p < end && (*p == ' ' || *p == '\t' || *p == '\r' || *p == '\n')) ++p;
      return p < end ? p : nullptr;
    };
    for (const char* q = begin; q < end; ++q) {
      q = static_cast<const char*>(std::memchr(q, '"', static_cast<std::size_t>(end - q)));
      if (!q) break;
      const std::string_view rest(q + 1, static_cast<std::size_t>(end - q - 1));
      if (rest.starts_with("usage\"")) {
        const char* v = after_colon(q + 7);
        if (v && *v == '{') keys.usage_object = true;
      } else if (rest.starts_with("finish_reason\"")) {
        const char* v = after_colon(q + 15);
        if (v && *v == '"') keys.finish_reason_string = true;
      } else if (rest.starts_with("content_filter_results\"")) {
        keys.filter_results = true;
        if (rest.substr(23).starts_with(':')) {
          if (keys.choice_results == 0)
            keys.first_choice_results = static_cast<std::size_t>(q - begin);
          ++keys.choice_results;
        }
      } else if (rest.starts_with("prompt_filter_results\"") ||
                 rest.starts_with("prompt_annotations\"")) {
        keys.filter_results = true;
        keys.prompt_results = true;
      }
    }
    return keys;
  };
  const std::string_view pieces[] = {"\"usage\"",
                                     "\"finish_reason\"",
                                     "\"content_filter_results\"",
                                     "\"prompt_filter_results\"",
                                     "\"prompt_annotations\"",
                                     ":",
                                     " : ",
                                     "{",
                                     "}",
                                     "\"",
                                     "\\\"",
                                     "null",
                                     "\"stop\"",
                                     ",",
                                     "\"usage",
                                     "\"content_filter_results",
                                     "xyz",
                                     "\n"};
  std::uint64_t seed = 88172645463325252ull;
  const auto next = [&seed] {  // xorshift64: the same sequence every run
    seed ^= seed << 13;
    seed ^= seed >> 7;
    seed ^= seed << 17;
    return seed;
  };
  for (int round = 0; round < 3000; ++round) {
    std::string text;
    const std::size_t count = next() % 12;
    for (std::size_t i = 0; i < count; ++i) text += pieces[next() % std::size(pieces)];
    for (std::size_t shift = 0; shift < 17; ++shift) {
      const std::string shifted = std::string(shift, 'a') + text;
      const auto got = accounting::scan_event_keys(shifted);
      const auto want = reference(shifted);
      ASSERT_EQ(got.usage_object, want.usage_object) << shifted;
      ASSERT_EQ(got.finish_reason_string, want.finish_reason_string) << shifted;
      ASSERT_EQ(got.filter_results, want.filter_results) << shifted;
      ASSERT_EQ(got.prompt_results, want.prompt_results) << shifted;
      ASSERT_EQ(got.choice_results, want.choice_results) << shifted;
      ASSERT_EQ(got.first_choice_results, want.first_choice_results) << shifted;
    }
  }
}

// ---------------------------------------------------------------------------------------------
// event_data
// ---------------------------------------------------------------------------------------------

TEST(EventData, OneDataLine) {
  std::string scratch;
  EXPECT_EQ(accounting::event_data("data: {\"a\":1}", scratch), "{\"a\":1}");
  EXPECT_EQ(accounting::event_data("data:{\"a\":1}", scratch), "{\"a\":1}");       // no space
  EXPECT_EQ(accounting::event_data("data:  two spaces", scratch), " two spaces");  // one removed
  EXPECT_EQ(accounting::event_data("event: message\nid: 3\ndata: x\nretry: 10", scratch), "x");
  EXPECT_EQ(accounting::event_data("data: x\r\nid: 1", scratch), "x");
  EXPECT_EQ(accounting::event_data("data: [DONE]", scratch), "[DONE]");
}

TEST(EventData, SeveralDataLinesAreJoinedWithNewlines) {
  std::string scratch;
  EXPECT_EQ(accounting::event_data("data: {\"a\":\ndata: 1}", scratch), "{\"a\":\n1}");
  EXPECT_EQ(accounting::event_data("event: e\r\ndata: a\r\ndata:b\r\ndata: c", scratch), "a\nb\nc");
  // The scratch buffer is reused: a later single-line event does not see old content.
  EXPECT_EQ(accounting::event_data("data: z", scratch), "z");
  EXPECT_EQ(accounting::event_data("data: p\ndata: q", scratch), "p\nq");
}

TEST(EventData, NoDataLineIsEmpty) {
  std::string scratch;
  EXPECT_EQ(accounting::event_data(": keep-alive", scratch), "");
  EXPECT_EQ(accounting::event_data("event: ping", scratch), "");
  EXPECT_EQ(accounting::event_data("", scratch), "");
  EXPECT_EQ(accounting::event_data("xdata: no", scratch), "");
}

// ---------------------------------------------------------------------------------------------
// read_json_facts
// ---------------------------------------------------------------------------------------------

void expect_usage(const std::optional<Usage>& u, std::int64_t prompt, std::int64_t completion,
                  std::int64_t total) {
  ASSERT_TRUE(u);
  EXPECT_EQ(u->prompt_tokens, prompt);
  EXPECT_EQ(u->completion_tokens, completion);
  EXPECT_EQ(u->total_tokens, total);
}

TEST(ReadJsonFacts, AzureNonStreamChatBody) {
  const JsonFacts f = accounting::read_json_facts(kAzureChatBody);
  expect_usage(f.usage, 20, 1843, 1863);
  EXPECT_EQ(f.finish_reason, "stop");
  EXPECT_FALSE(f.usage_only_chunk);
}

// Found by fuzzing (tests/fuzz/corpus/response/crash-usage-total-overflow.json): an upstream's
// usage of 2^63-1 prompt tokens overflowed the total (undefined behaviour).
TEST(ReadJsonFacts, HostileUsageNumbersAreClampedNotOverflowed) {
  const JsonFacts f = accounting::read_json_facts(
      R"({"usage":{"prompt_tokens":9223372036854775807,"completion_tokens":1}})");
  expect_usage(f.usage, ratelimit::kMaxTokenAmount, 1, ratelimit::kMaxTokenAmount + 1);
  const JsonFacts g = accounting::read_json_facts(
      R"({"usage":{"prompt_tokens":-5,"completion_tokens":-7,"total_tokens":-1}})");
  expect_usage(g.usage, 0, 0, 0);
}

TEST(ReadJsonFacts, AzurePromptAnnotationChunkIsNotTheUsageChunk) {
  const JsonFacts f = accounting::read_json_facts(kStreamPromptChunk);  // choices [], no usage
  EXPECT_FALSE(f.usage);
  EXPECT_FALSE(f.usage_only_chunk);
  EXPECT_EQ(f.finish_reason, "");
  const JsonFacts g = accounting::read_json_facts(kBlockedPromptChunk);  // choices [], usage null
  EXPECT_FALSE(g.usage);
  EXPECT_FALSE(g.usage_only_chunk);
}

TEST(ReadJsonFacts, UsageChunk) {
  const JsonFacts f = accounting::read_json_facts(kUsageChunk);
  expect_usage(f.usage, 11, 20, 31);
  EXPECT_TRUE(f.usage_only_chunk);
  EXPECT_EQ(f.finish_reason, "");
  // White space inside the empty choices array still makes it empty.
  const JsonFacts g = accounting::read_json_facts(
      R"({"choices": [ ], "usage": {"prompt_tokens": 1, "completion_tokens": 2, "total_tokens": 3}})");
  expect_usage(g.usage, 1, 2, 3);
  EXPECT_TRUE(g.usage_only_chunk);
  // OpenAI's non-stream body: usage with choices is not a usage-only chunk.
  const JsonFacts h = accounting::read_json_facts(
      R"({"choices":[{"index":0,"finish_reason":"length"}],"usage":{"prompt_tokens":1,"completion_tokens":2,"total_tokens":3}})");
  EXPECT_FALSE(h.usage_only_chunk);
  EXPECT_EQ(h.finish_reason, "length");
}

TEST(ReadJsonFacts, FinishChunks) {
  EXPECT_EQ(accounting::read_json_facts(kStreamFinishChunk).finish_reason, "stop");
  EXPECT_FALSE(accounting::read_json_facts(kStreamFinishChunk).usage);
  EXPECT_EQ(accounting::read_json_facts(kStreamContentChunk).finish_reason, "");
  EXPECT_EQ(accounting::read_json_facts(kStreamRoleChunk).finish_reason, "");
  EXPECT_EQ(accounting::read_json_facts(kBlockedFinalChunk).finish_reason, "content_filter");
  // Several choices: the last non-null one.
  EXPECT_EQ(
      accounting::read_json_facts(
          R"({"choices":[{"index":0,"finish_reason":"stop"},{"index":1,"finish_reason":null},{"index":2,"finish_reason":"length"}]})")
          .finish_reason,
      "length");
}

TEST(ReadJsonFacts, ResponsesApiCompletedEvent) {
  const JsonFacts f = accounting::read_json_facts(
      R"({"type":"response.completed","sequence_number":42,"response":{"id":"resp_67ccd2bed1ec8190","object":"response","created_at":1741476542,"status":"completed","model":"gpt-4o-2024-08-06","output":[{"type":"message","id":"msg_1","status":"completed","role":"assistant","content":[{"type":"output_text","text":"Hi","annotations":[]}]}],"usage":{"input_tokens":36,"input_tokens_details":{"cached_tokens":0},"output_tokens":87,"output_tokens_details":{"reasoning_tokens":0},"total_tokens":123}}})");
  expect_usage(f.usage, 36, 87, 123);
  EXPECT_FALSE(f.usage_only_chunk);
  // response.created carries "usage": null.
  EXPECT_FALSE(
      accounting::read_json_facts(
          R"({"type":"response.created","response":{"id":"r","status":"in_progress","usage":null}})")
          .usage);
}

TEST(ReadJsonFacts, ResponsesApiNonStreamBody) {
  const JsonFacts f = accounting::read_json_facts(
      R"({"id":"resp_1","object":"response","status":"completed","output":[],"usage":{"input_tokens":5,"output_tokens":7,"total_tokens":12}})");
  expect_usage(f.usage, 5, 7, 12);
}

TEST(ReadJsonFacts, EmbeddingsBody) {
  const JsonFacts f = accounting::read_json_facts(
      R"({"object":"list","data":[{"object":"embedding","index":0,"embedding":[0.0023064255,-0.009327292]}],"model":"text-embedding-3-small","usage":{"prompt_tokens":8,"total_tokens":8}})");
  expect_usage(f.usage, 8, 0, 8);
  EXPECT_EQ(f.finish_reason, "");
}

TEST(ReadJsonFacts, TotalIsComputedWhenMissingAndJunkIsIgnored) {
  expect_usage(
      accounting::read_json_facts(R"({"usage":{"prompt_tokens":3,"completion_tokens":4}})").usage,
      3, 4, 7);
  EXPECT_FALSE(accounting::read_json_facts("not json").usage);
  EXPECT_FALSE(accounting::read_json_facts("[DONE]").usage);
  EXPECT_FALSE(accounting::read_json_facts(R"({"usage":"many"})").usage);
  EXPECT_FALSE(accounting::read_json_facts("").usage);
}

// ---------------------------------------------------------------------------------------------
// ContentFilterSummary
// ---------------------------------------------------------------------------------------------

TEST(ContentFilter, AzureNonStreamBodyPromptAndCompletion) {
  ContentFilterSummary s;
  s.read_document(kAzureChatBody);
  EXPECT_TRUE(s.any());
  for (auto name : {"hate", "self_harm", "sexual", "violence"}) {
    EXPECT_TRUE(result(s, FilterStage::prompt, name).seen) << name;
    EXPECT_EQ(result(s, FilterStage::prompt, name).severity, Severity::safe) << name;
    EXPECT_TRUE(result(s, FilterStage::completion, name).seen) << name;
    EXPECT_EQ(result(s, FilterStage::completion, name).severity, Severity::safe) << name;
  }
  // Detected-type results have no severity.
  const auto& jb = result(s, FilterStage::prompt, "jailbreak");
  EXPECT_TRUE(jb.seen);
  EXPECT_EQ(jb.severity, Severity::none);
  EXPECT_FALSE(jb.detected);
  for (auto name : {"protected_material_text", "protected_material_code"}) {
    const auto& pm = result(s, FilterStage::completion, name);
    EXPECT_TRUE(pm.seen) << name;
    EXPECT_EQ(pm.severity, Severity::none) << name;
    EXPECT_FALSE(pm.detected) << name;
    EXPECT_FALSE(pm.filtered) << name;
    EXPECT_FALSE(result(s, FilterStage::prompt, name).seen) << name;
  }
  EXPECT_TRUE(result(s, FilterStage::prompt, "custom_blocklists").seen);
  EXPECT_FALSE(result(s, FilterStage::prompt, "custom_blocklists").filtered);
  EXPECT_FALSE(result(s, FilterStage::completion, "jailbreak").seen);
  EXPECT_FALSE(s.filtered(FilterStage::prompt));
  EXPECT_FALSE(s.filtered(FilterStage::completion));
  EXPECT_TRUE(s.flagged(FilterStage::prompt).empty());
  EXPECT_TRUE(s.flagged(FilterStage::completion).empty());
}

TEST(ContentFilter, ProtectedMaterialCodeDetectedWithCitation) {
  ContentFilterSummary s;
  s.read_document(
      R"({"choices":[{"index":0,"finish_reason":"stop","content_filter_results":{"protected_material_code":{"citation":{"URL":" https://github.com/username/repository-name/path/to/file-example.txt","license":"EXAMPLE-LICENSE"},"detected":true,"filtered":false}}}]})");
  const auto& pm = result(s, FilterStage::completion, "protected_material_code");
  EXPECT_TRUE(pm.detected);
  EXPECT_FALSE(pm.filtered);
  EXPECT_EQ(pm.severity, Severity::none);
  EXPECT_EQ(s.flagged(FilterStage::completion), Names{"protected_material_code"});
  EXPECT_FALSE(s.filtered(FilterStage::completion));
}

TEST(ContentFilter, NoAnnotationsIsNothing) {
  ContentFilterSummary s;
  s.read_document(kUsageChunk);
  s.read_document(kBlockedRoleChunk);
  s.read_document("not json");
  EXPECT_FALSE(s.any());
  // An empty results object (the role chunk's) is not a result either.
  s.read_document(kStreamRoleChunk);
  EXPECT_FALSE(s.any());
}

TEST(ContentFilter, DefaultModeStreamChunks) {
  ContentFilterSummary s;
  for (auto chunk : {kStreamPromptChunk, kStreamRoleChunk, kStreamContentChunk, kStreamFinishChunk})
    s.read_document(chunk);
  EXPECT_TRUE(s.any());
  EXPECT_EQ(result(s, FilterStage::prompt, "hate").severity, Severity::safe);
  EXPECT_EQ(result(s, FilterStage::completion, "violence").severity, Severity::safe);
  EXPECT_FALSE(s.filtered(FilterStage::prompt));
  EXPECT_FALSE(s.filtered(FilterStage::completion));
}

TEST(ContentFilter, AsyncBlockedStreamWithAnnotationChunksWithoutDelta) {
  ContentFilterSummary s;
  std::string finish;
  for (auto chunk : {kBlockedPromptChunk, kBlockedRoleChunk, kBlockedContentChunk,
                     kBlockedAnnotationChunk, kBlockedFinalChunk}) {
    s.read_document(chunk);
    const auto facts = accounting::read_json_facts(chunk);
    if (!facts.finish_reason.empty()) finish = facts.finish_reason;
  }
  EXPECT_EQ(finish, "content_filter");
  // The annotation chunk (no delta) was read.
  EXPECT_EQ(result(s, FilterStage::completion, "hate").severity, Severity::safe);
  const auto& pm = result(s, FilterStage::completion, "protected_material_text");
  EXPECT_TRUE(pm.seen);
  EXPECT_TRUE(pm.filtered);
  EXPECT_TRUE(pm.detected);
  EXPECT_EQ(pm.severity, Severity::none);
  EXPECT_TRUE(s.filtered(FilterStage::completion));
  EXPECT_FALSE(s.filtered(FilterStage::prompt));
  EXPECT_EQ(s.flagged(FilterStage::completion), Names{"protected_material_text"});
  EXPECT_TRUE(s.flagged(FilterStage::prompt).empty());
}

TEST(ContentFilter, ErrorBodyInnererrorContentFilterResult) {
  ContentFilterSummary s;
  s.read_error(kFilteredPromptError);
  EXPECT_TRUE(s.any());
  const auto& sh = result(s, FilterStage::prompt, "self_harm");
  EXPECT_TRUE(sh.filtered);
  EXPECT_EQ(sh.severity, Severity::medium);
  EXPECT_EQ(result(s, FilterStage::prompt, "hate").severity, Severity::safe);
  EXPECT_TRUE(result(s, FilterStage::prompt, "jailbreak").seen);
  EXPECT_TRUE(s.filtered(FilterStage::prompt));
  EXPECT_FALSE(s.filtered(FilterStage::completion));
  EXPECT_EQ(s.flagged(FilterStage::prompt), Names{"self_harm"});
  EXPECT_TRUE(s.flagged(FilterStage::completion).empty());
}

TEST(ContentFilter, ErrorBodySpecSpellingInnerErrorContentFilterResults) {
  std::string body =
      replace_all(std::string(kFilteredPromptError), "\"innererror\"", "\"inner_error\"");
  body = replace_all(body, "\"content_filter_result\"", "\"content_filter_results\"");
  ASSERT_NE(body.find("inner_error"), std::string::npos);
  ASSERT_NE(body.find("content_filter_results"), std::string::npos);
  ContentFilterSummary s;
  s.read_error(body);
  EXPECT_TRUE(result(s, FilterStage::prompt, "self_harm").filtered);
  EXPECT_EQ(result(s, FilterStage::prompt, "self_harm").severity, Severity::medium);
  EXPECT_EQ(s.flagged(FilterStage::prompt), Names{"self_harm"});
}

TEST(ContentFilter, ErrorBodyJailbreakAndBlocklistVariants) {
  ContentFilterSummary jb;
  jb.read_error(
      R"({"error":{"code":"content_filter","innererror":{"code":"ResponsibleAIPolicyViolation","content_filter_result":{"jailbreak":{"filtered":true,"detected":true}}}}})");
  EXPECT_TRUE(result(jb, FilterStage::prompt, "jailbreak").filtered);
  EXPECT_TRUE(result(jb, FilterStage::prompt, "jailbreak").detected);
  EXPECT_EQ(jb.flagged(FilterStage::prompt), Names{"jailbreak"});

  ContentFilterSummary bl;
  bl.read_error(
      R"({"error":{"code":"content_filter","innererror": {"code": "ResponsibleAIPolicyViolation", "content_filter_result": {"custom_blocklists": {"details": [{"filtered": true, "id": "pizza"}], "filtered": true}}}}})");
  EXPECT_TRUE(result(bl, FilterStage::prompt, "custom_blocklists").filtered);
  EXPECT_EQ(bl.flagged(FilterStage::prompt), Names{"custom_blocklists"});
}

TEST(ContentFilter, ErrorWithoutInnerErrorIsNothing) {
  ContentFilterSummary s;
  s.read_error(
      R"({"error":{"message":"bad","type":"invalid_request_error","param":null,"code":"x"}})");
  s.read_error("<html>502</html>");
  EXPECT_FALSE(s.any());
}

TEST(ContentFilter, PromptAnnotationsOldName) {
  ContentFilterSummary s;
  s.read_document(kAsyncPromptAnnotationsChunk);
  EXPECT_TRUE(s.any());
  for (auto name : {"hate", "self_harm", "sexual", "violence"}) {
    EXPECT_TRUE(result(s, FilterStage::prompt, name).seen) << name;
    EXPECT_EQ(result(s, FilterStage::prompt, name).severity, Severity::safe) << name;
  }
  EXPECT_FALSE(result(s, FilterStage::completion, "hate").seen);
}

TEST(ContentFilter, CustomBlocklistsArrayForm) {
  ContentFilterSummary hit;
  hit.read_document(
      R"({"choices":[{"index":0,"finish_reason":"content_filter","content_filter_results":{"custom_blocklists":[{"filtered": true, "id": "myBlocklistName"}]}}]})");
  EXPECT_TRUE(result(hit, FilterStage::completion, "custom_blocklists").seen);
  EXPECT_TRUE(result(hit, FilterStage::completion, "custom_blocklists").filtered);
  EXPECT_EQ(hit.flagged(FilterStage::completion), Names{"custom_blocklists"});

  ContentFilterSummary compact;
  compact.read_document(
      R"({"prompt_filter_results":[{"prompt_index":0,"content_filter_results":{"custom_blocklists":[{"filtered":false,"id":"a"},{"filtered":true,"id":"b"}]}}]})");
  EXPECT_TRUE(result(compact, FilterStage::prompt, "custom_blocklists").filtered);

  ContentFilterSummary miss;
  miss.read_document(
      R"({"prompt_filter_results":[{"prompt_index":0,"content_filter_results":{"custom_blocklists":[{"filtered":false,"id":"a"}]}}]})");
  EXPECT_TRUE(result(miss, FilterStage::prompt, "custom_blocklists").seen);
  EXPECT_FALSE(result(miss, FilterStage::prompt, "custom_blocklists").filtered);
  EXPECT_TRUE(miss.flagged(FilterStage::prompt).empty());
}

TEST(ContentFilter, CustomBlocklistsObjectForm) {
  ContentFilterSummary hit;
  hit.read_document(
      R"({"choices":[{"index":0,"content_filter_results":{"custom_blocklists":{"filtered": true, "details": [{"filtered": true, "id": "pizza"}]}}}]})");
  EXPECT_TRUE(result(hit, FilterStage::completion, "custom_blocklists").filtered);
  EXPECT_TRUE(hit.filtered(FilterStage::completion));

  ContentFilterSummary miss;  // object form without details (§3.2)
  miss.read_document(
      R"({"prompt_filter_results":[{"prompt_index":0,"content_filter_results":{"custom_blocklists":{"filtered":false}}}]})");
  EXPECT_TRUE(result(miss, FilterStage::prompt, "custom_blocklists").seen);
  EXPECT_FALSE(result(miss, FilterStage::prompt, "custom_blocklists").filtered);
}

TEST(ContentFilter, UnknownCategoryIsOtherAndHyphenatedSelfHarmIsSelfHarm) {
  ContentFilterSummary s;
  s.read_document(
      R"({"prompt_filter_results":[{"prompt_index":0,"content_filter_results":{"brand_new_category":{"filtered":true,"severity":"high"},"self-harm":{"filtered":false,"severity":"low"}}}]})");
  const auto& other = result(s, FilterStage::prompt, "other");
  EXPECT_TRUE(other.seen);
  EXPECT_TRUE(other.filtered);
  EXPECT_EQ(other.severity, Severity::high);
  EXPECT_EQ(result(s, FilterStage::prompt, "self_harm").severity, Severity::low);
  EXPECT_EQ(s.flagged(FilterStage::prompt), (Names{"self_harm", "other"}));
}

TEST(ContentFilter, NewerCategoriesAreKnown) {
  ContentFilterSummary s;
  s.read_document(
      R"({"prompt_filter_results":[{"prompt_index":0,"content_filter_results":{"indirect_attack":{"filtered":false,"detected":true},"personally_identifiable_information":{"filtered":false,"detected":false,"redacted_text":"","sub_categories":[]},"custom_topics":{"filtered":false,"details":[{"detected":false,"id":"t"}]},"profanity":{"detected":false,"filtered":false}}}],"choices":[{"index":0,"content_filter_results":{"ungrounded_material":{"detected":false,"filtered":false,"details":[]}}}]})");
  for (auto name :
       {"indirect_attack", "personally_identifiable_information", "custom_topics", "profanity"})
    EXPECT_TRUE(result(s, FilterStage::prompt, name).seen) << name;
  EXPECT_TRUE(result(s, FilterStage::completion, "ungrounded_material").seen);
  EXPECT_FALSE(result(s, FilterStage::prompt, "other").seen);
  EXPECT_EQ(s.flagged(FilterStage::prompt), Names{"indirect_attack"});
}

TEST(ContentFilter, ResultsErrorMeansFilteringDidNotRun) {
  ContentFilterSummary s;
  s.read_document(
      R"({"choices":[{"index":0,"finish_reason":"stop","content_filter_results":{"error":{"code":"content_filter_error","message":"The contents are not filtered"}}}]})");
  EXPECT_FALSE(s.any());
}

TEST(ContentFilter, HighestSeverityWinsAndFilteredIsSticky) {
  ContentFilterSummary s;
  auto chunk = [](std::string_view results) {
    return R"({"choices":[{"index":0,"finish_reason":null,"content_filter_results":)" +
           std::string(results) + "}]}";
  };
  s.read_document(chunk(
      R"({"hate":{"filtered":false,"severity":"low"},"violence":{"filtered":true,"severity":"high"}})"));
  s.read_document(chunk(
      R"({"hate":{"filtered":false,"severity":"medium"},"violence":{"filtered":false,"severity":"safe"}})"));
  s.read_document(chunk(
      R"({"hate":{"filtered":false,"severity":"safe"},"protected_material_text":{"filtered":false,"detected":true}})"));
  s.read_document(chunk(R"({"protected_material_text":{"filtered":false,"detected":false}})"));
  EXPECT_EQ(result(s, FilterStage::completion, "hate").severity, Severity::medium);
  EXPECT_FALSE(result(s, FilterStage::completion, "hate").filtered);
  EXPECT_EQ(result(s, FilterStage::completion, "violence").severity, Severity::high);
  EXPECT_TRUE(result(s, FilterStage::completion, "violence").filtered);
  EXPECT_TRUE(
      result(s, FilterStage::completion, "protected_material_text").detected);  // sticky too
  EXPECT_TRUE(s.filtered(FilterStage::completion));
  EXPECT_EQ(s.flagged(FilterStage::completion),
            (Names{"hate", "violence", "protected_material_text"}));
  EXPECT_FALSE(s.filtered(FilterStage::prompt));
}

TEST(ContentFilter, FlaggedOnlyAboveSafe) {
  ContentFilterSummary s;
  s.read_document(
      R"({"prompt_filter_results":[{"prompt_index":0,"content_filter_results":{"hate":{"filtered":false,"severity":"safe"},"sexual":{"filtered":false,"severity":"low"}}}]})");
  EXPECT_EQ(s.flagged(FilterStage::prompt), Names{"sexual"});
  EXPECT_FALSE(s.filtered(FilterStage::prompt));
}

TEST(ContentFilter, ImageGenerationPerImageResults) {
  ContentFilterSummary s;
  s.read_document(
      R"({"created":1698116662,"data":[{"url":"https://example/img.png","revised_prompt":"A cat","prompt_filter_results":{"hate":{"filtered":false,"severity":"safe"},"profanity":{"detected":true,"filtered":false}},"content_filter_results":{"sexual":{"filtered":false,"severity":"safe"},"violence":{"filtered":false,"severity":"low"}}}]})");
  EXPECT_TRUE(result(s, FilterStage::prompt, "profanity").detected);
  EXPECT_EQ(result(s, FilterStage::completion, "violence").severity, Severity::low);
  EXPECT_EQ(s.flagged(FilterStage::prompt), Names{"profanity"});
  EXPECT_EQ(s.flagged(FilterStage::completion), Names{"violence"});
}

TEST(ContentFilter, Names) {
  EXPECT_EQ(accounting::severity_name(Severity::none), "none");
  EXPECT_EQ(accounting::severity_name(Severity::high), "high");
  EXPECT_EQ(accounting::stage_name(FilterStage::prompt), "prompt");
  EXPECT_EQ(accounting::stage_name(FilterStage::completion), "completion");
  EXPECT_EQ(accounting::kFilterCategories.back(), "other");
}

// ---------------------------------------------------------------------------------------------
// AccountStage
// ---------------------------------------------------------------------------------------------

// The chat stream the gateway sees when it asked for usage: the client must get it without the
// usage chunk.
const std::vector<std::string_view> kStreamWithUsage{kStreamPromptChunk,  kStreamRoleChunk,
                                                     kStreamContentChunk, kStreamFinishChunk,
                                                     kUsageChunk,         "[DONE]"};
const std::vector<std::string_view> kStreamWithoutUsage{
    kStreamPromptChunk, kStreamRoleChunk, kStreamContentChunk, kStreamFinishChunk, "[DONE]"};

struct StreamResponse {
  AccountStage stage;
  RequestContext ctx;
  std::string delivered;  // what the client would get

  explicit StreamResponse(bool request_stream_usage, unsigned status = 200,
                          std::string_view content_type = "text/event-stream; charset=utf-8") {
    ctx.request_stream_usage = request_stream_usage;
    ctx.upstream_status = 200;
    ctx.status = status;
    ctx.streamed = true;
    HeaderList h;
    h.set(http::field::content_type, content_type);
    h.set("apim-request-id", "apim-123");
    h.set("x-request-id", "xrid-456");
    stage.on_response_headers(ctx, status, h);
  }

  // The relay's loop: rewrite when a rewriter is installed, always tell the stage the piece.
  void piece(std::string_view p, bool last) {
    stage.on_response_body(ctx, p);
    if (ctx.body_rewriter) {
      std::vector<std::string_view> out;
      ctx.body_rewriter->rewrite(p, last, out);
      for (auto v : out) delivered.append(v);
    } else {
      delivered.append(p);
    }
  }
  // The response was read to its end: the stage settles what it cost.
  void complete() {
    stage.on_response_end(ctx);
    stage.on_complete(ctx);
  }
};

void check_rewrite_at_every_offset(const std::string& stream, const std::string& expected) {
  for (std::size_t cut = 0; cut <= stream.size(); ++cut) {
    StreamResponse r(true);
    ASSERT_NE(r.ctx.body_rewriter, nullptr);
    r.piece(std::string_view(stream).substr(0, cut), false);
    r.piece(std::string_view(stream).substr(cut), true);
    r.complete();
    ASSERT_EQ(r.delivered, expected) << "cut at " << cut;
    ASSERT_TRUE(r.ctx.usage) << "cut at " << cut;
    ASSERT_EQ(r.ctx.usage->prompt_tokens, 11);
    ASSERT_EQ(r.ctx.usage->completion_tokens, 20);
    ASSERT_EQ(r.ctx.usage->total_tokens, 31);
    ASSERT_EQ(r.ctx.finish_reason, "stop");
  }
}

TEST(AccountStage, RemovesExactlyTheUsageChunkAtEveryCut) {
  check_rewrite_at_every_offset(sse(kStreamWithUsage), sse(kStreamWithoutUsage));
}

TEST(AccountStage, RemovesExactlyTheUsageChunkAtEveryCutWithCrLf) {
  check_rewrite_at_every_offset(sse(kStreamWithUsage, "\r\n\r\n"),
                                sse(kStreamWithoutUsage, "\r\n\r\n"));
}

TEST(AccountStage, RewriteOneByteAtATime) {
  const std::string stream = sse(kStreamWithUsage);
  StreamResponse r(true);
  for (std::size_t i = 0; i < stream.size(); ++i)
    r.piece(std::string_view(stream).substr(i, 1), i + 1 == stream.size());
  EXPECT_EQ(r.delivered, sse(kStreamWithoutUsage));
  ASSERT_TRUE(r.ctx.usage);
  EXPECT_EQ(r.ctx.usage->total_tokens, 31);
}

TEST(AccountStage, RewriteKeepsAnUnterminatedTailOnTheLastPiece) {
  const std::string stream = sse({kStreamFinishChunk, kUsageChunk}) + "data: [DONE]";
  StreamResponse r(true);
  r.piece(stream, true);
  EXPECT_EQ(r.delivered, sse({kStreamFinishChunk}) + "data: [DONE]");
}

TEST(AccountStage, RewriteReadsContentFilterAnnotations) {
  const std::string stream =
      sse({kBlockedPromptChunk, kBlockedRoleChunk, kBlockedContentChunk, kBlockedAnnotationChunk,
           kBlockedFinalChunk, kUsageChunk, "[DONE]"});
  StreamResponse r(true);
  r.piece(stream, true);
  EXPECT_EQ(r.delivered, sse({kBlockedPromptChunk, kBlockedRoleChunk, kBlockedContentChunk,
                              kBlockedAnnotationChunk, kBlockedFinalChunk, "[DONE]"}));
  EXPECT_EQ(r.ctx.finish_reason, "content_filter");
  EXPECT_TRUE(r.ctx.content_filter.filtered(FilterStage::completion));
  EXPECT_EQ(r.ctx.content_filter.flagged(FilterStage::completion),
            Names{"protected_material_text"});
  EXPECT_TRUE(result(r.ctx.content_filter, FilterStage::prompt, "hate").seen);
}

// Repeated identical completion results are not parsed again; results that merely look like the
// prompt's (same text under prompt_filter_results) must still count for the completion stage.
TEST(AccountStage, CompletionResultsIdenticalToThePromptsStillCountOnce) {
  const std::string results =
      R"({"hate":{"filtered":false,"severity":"safe"},"sexual":{"filtered":false,"severity":"low"}})";
  const std::string first =
      R"({"choices":[],"id":"","prompt_filter_results":[{"prompt_index":0,"content_filter_results":)" +
      results + "}]}";
  const std::string chunk =
      R"({"choices":[{"index":0,"delta":{"content":"x"},"content_filter_results":)" + results +
      R"(,"finish_reason":null}],"id":"c1"})";
  const std::string later =
      std::string(R"({"choices":[{"index":0,"delta":{"content":"y"},"content_filter_results":)") +
      R"({"hate":{"filtered":false,"severity":"high"}})" + R"(,"finish_reason":null}],"id":"c1"})";
  const std::string stream = sse({first, chunk, chunk, later, chunk, "[DONE]"});
  StreamResponse r(false);
  r.piece(stream, true);
  r.complete();
  EXPECT_TRUE(result(r.ctx.content_filter, FilterStage::completion, "sexual").seen);
  EXPECT_EQ(result(r.ctx.content_filter, FilterStage::completion, "sexual").severity,
            Severity::low);
  EXPECT_EQ(result(r.ctx.content_filter, FilterStage::completion, "hate").severity, Severity::high);
  EXPECT_EQ(result(r.ctx.content_filter, FilterStage::prompt, "hate").severity, Severity::safe);
}

TEST(AccountStage, WithoutRequestedUsageNothingIsRewrittenButUsageIsRead) {
  const std::string stream = sse(kStreamWithUsage);  // the client asked for usage itself
  for (std::size_t cut = 0; cut <= stream.size(); ++cut) {
    StreamResponse r(false);
    ASSERT_EQ(r.ctx.body_rewriter, nullptr);
    r.piece(std::string_view(stream).substr(0, cut), false);
    r.piece(std::string_view(stream).substr(cut), true);
    r.complete();
    ASSERT_EQ(r.delivered, stream);
    ASSERT_TRUE(r.ctx.usage) << "cut at " << cut;
    ASSERT_EQ(r.ctx.usage->total_tokens, 31);
    ASSERT_EQ(r.ctx.finish_reason, "stop");
    ASSERT_TRUE(result(r.ctx.content_filter, FilterStage::prompt, "hate").seen);
  }
}

TEST(AccountStage, NoRewriterOnAnErrorStatusOrAJsonAnswer) {
  StreamResponse error(true, 429);
  EXPECT_EQ(error.ctx.body_rewriter, nullptr);
  StreamResponse json(true, 200, "application/json");
  EXPECT_EQ(json.ctx.body_rewriter, nullptr);
}

// A JSON answer is read where it lies when it arrives whole in one piece of its announced
// length, and copied otherwise; both give the same usage. The relay reuses its buffer for the
// next read, so the test does too: a view kept past its piece would read the overwritten bytes.
TEST(AccountStage, JsonAnswerWholeOrInPiecesGivesTheSameUsage) {
  const std::string body =
      R"({"choices":[{"finish_reason":"stop","index":0,"message":{"content":"hi"}}],)"
      R"("usage":{"prompt_tokens":7,"completion_tokens":5,"total_tokens":12}})";
  for (std::size_t cut = 0; cut <= body.size(); ++cut) {
    AccountStage stage;
    RequestContext ctx;
    ctx.upstream_status = 200;
    ctx.status = 200;
    HeaderList h;
    h.set(http::field::content_type, "application/json");
    h.set(http::field::content_length, std::to_string(body.size()));
    stage.on_response_headers(ctx, 200, h);
    std::string relay_buffer;  // one buffer, overwritten by each read
    for (const std::string_view piece :
         {std::string_view(body).substr(0, cut), std::string_view(body).substr(cut)}) {
      if (piece.empty()) continue;
      relay_buffer.assign(piece);
      stage.on_response_body(ctx, relay_buffer);
    }
    stage.on_response_end(ctx);
    relay_buffer.assign(relay_buffer.size(), 'x');  // the next read
    ASSERT_TRUE(ctx.usage) << "cut at " << cut;
    EXPECT_EQ(ctx.usage->total_tokens, 12) << "cut at " << cut;
    EXPECT_EQ(ctx.finish_reason, "stop") << "cut at " << cut;
  }
}

TEST(AccountStage, LocalReplyIsNotAccounted) {
  AccountStage stage;
  RequestContext ctx;  // no upstream_status: the gateway answered itself
  HeaderList h;
  h.set(http::field::content_type, "text/event-stream");
  ctx.request_stream_usage = true;
  stage.on_response_headers(ctx, 200, h);
  EXPECT_EQ(ctx.body_rewriter, nullptr);
  stage.on_response_body(ctx, sse({kUsageChunk}));
  stage.on_response_end(ctx);
  stage.on_complete(ctx);
  EXPECT_FALSE(ctx.usage);
}

TEST(AccountStage, UpstreamRequestIdPrefersApimRequestId) {
  StreamResponse r(false);
  EXPECT_EQ(r.ctx.upstream_request_id, "apim-123");
  AccountStage stage;
  RequestContext ctx;
  ctx.upstream_status = 200;
  HeaderList h;
  h.set("x-request-id", "req_abc");
  stage.on_response_headers(ctx, 200, h);
  EXPECT_EQ(ctx.upstream_request_id, "req_abc");
}

TEST(AccountStage, JsonBodyUsageAndContentFilterAtEveryCut) {
  const std::string_view body = kAzureChatBody;
  for (std::size_t cut = 0; cut <= body.size(); cut += 11) {
    StreamResponse r(false, 200, "application/json");
    r.ctx.streamed = false;
    EXPECT_EQ(r.ctx.body_rewriter, nullptr);
    r.piece(body.substr(0, cut), false);
    r.piece(body.substr(cut), true);
    r.complete();
    ASSERT_TRUE(r.ctx.usage) << "cut at " << cut;
    EXPECT_EQ(r.ctx.usage->prompt_tokens, 20);
    EXPECT_EQ(r.ctx.usage->completion_tokens, 1843);
    EXPECT_EQ(r.ctx.usage->total_tokens, 1863);
    EXPECT_EQ(r.ctx.finish_reason, "stop");
    EXPECT_TRUE(r.ctx.content_filter.any());
    EXPECT_EQ(r.delivered, body);
  }
}

TEST(AccountStage, FilteredPrompt400IsReadFromTheErrorBody) {
  StreamResponse r(false, 400, "application/json");
  r.piece(kFilteredPromptError, true);
  r.complete();
  EXPECT_FALSE(r.ctx.usage);
  EXPECT_TRUE(r.ctx.content_filter.filtered(FilterStage::prompt));
  EXPECT_EQ(r.ctx.content_filter.flagged(FilterStage::prompt), Names{"self_harm"});
}

TEST(AccountStage, LargeJsonBodyKeepsTheTailUsage) {
  // Past 1 MiB only the tail is kept; usage sits at the end of an OpenAI body.
  std::string body = R"({"object":"list","data":[)";
  const std::string item = R"({"object":"embedding","index":0,"embedding":[0.1,0.2,0.3,0.4,0.5]},)";
  while (body.size() < 3 * 1024 * 1024) body += item;
  body.pop_back();
  body +=
      R"(],"model":"text-embedding-3-small","usage":{"prompt_tokens":9000,"total_tokens":9000}})";
  StreamResponse r(false, 200, "application/json");
  for (std::size_t at = 0; at < body.size(); at += 16 * 1024)
    r.piece(std::string_view(body).substr(at, 16 * 1024), at + 16 * 1024 >= body.size());
  r.complete();
  ASSERT_TRUE(r.ctx.usage);
  EXPECT_EQ(r.ctx.usage->prompt_tokens, 9000);
  EXPECT_EQ(r.ctx.usage->total_tokens, 9000);
}

// The request side: the stage asks for usage on streams whose client did not.
constexpr std::string_view kAccountYaml = R"(
upstreams:
  azure:
    provider: azure
    base_url: https://contoso.openai.azure.com
    api_key: K
    api_version: 2024-10-21
    deployments:
      gpt-4o: prod-4o
  old:
    provider: azure
    base_url: https://old.openai.azure.com
    api_key: K
    api_version: 2024-06-01
routes:
  - {match: "gpt-4o", upstream: azure}
  - {match: "old-*", upstream: old}
)";

bool asks_for_usage(const Snapshot& snapshot, std::string target, std::string body) {
  HeaderList headers;
  headers.set(http::field::content_type, "application/json");
  RequestContext ctx;
  ctx.config = snapshot.config.get();
  ctx.method = http::verb::post;
  ctx.target = target;
  ctx.path = llmgw::classify_path(ctx.method, ctx.target);  // as the session does
  ctx.headers = &headers;
  ctx.body = body;
  boost::asio::io_context io;
  std::exception_ptr error;
  boost::asio::co_spawn(io, snapshot.pipeline.on_request(ctx),
                        [&](std::exception_ptr e, Verdict) { error = e; });
  io.run();
  if (error) std::rethrow_exception(error);
  EXPECT_FALSE(ctx.reply) << (ctx.reply ? ctx.reply->body : "");
  // The stage wants it; the router's translate step asks the upstreams that accept it.
  const UpstreamRequest upstream_request = test::first_attempt_request(ctx);
  EXPECT_EQ(ctx.request_stream_usage,
            upstream_request.body &&
                upstream_request.body->find("\"include_usage\":true") != std::string::npos);
  return ctx.request_stream_usage;
}

TEST(AccountStage, AsksForStreamUsageOnlyWhenTheClientDidNotAndTheUpstreamAccepts) {
  auto cfg = test::load_ok(kAccountYaml);
  ASSERT_TRUE(cfg);
  auto snapshot = make_snapshot(cfg);
  EXPECT_TRUE(asks_for_usage(*snapshot, "/v1/chat/completions",
                             R"({"model":"gpt-4o","messages":[],"stream":true})"));
  EXPECT_FALSE(asks_for_usage(
      *snapshot, "/v1/chat/completions",
      R"({"model":"gpt-4o","messages":[],"stream":true,"stream_options":{"include_usage":true}})"));
  EXPECT_FALSE(
      asks_for_usage(*snapshot, "/v1/chat/completions", R"({"model":"gpt-4o","messages":[]})"));
  EXPECT_FALSE(asks_for_usage(*snapshot, "/v1/embeddings",
                              R"({"model":"gpt-4o","input":"x","stream":true})"));
  // api-version 2024-06-01 predates stream_options (400 there).
  EXPECT_FALSE(asks_for_usage(*snapshot, "/v1/chat/completions",
                              R"({"model":"old-35","messages":[],"stream":true})"));
}

// ---------------------------------------------------------------------------------------------
// read_response_document: one pass, the same answers as the readers it replaced
// ---------------------------------------------------------------------------------------------

TEST(ContentFilter, MergeRowIsTheMergeOfEveryCategory) {
  // merge_row merges as a byte-wise maximum; CategoryResult::merge says what merging means.
  std::vector<CategoryResult> all;
  for (bool seen : {false, true})
    for (int sev = 0; sev <= static_cast<int>(Severity::high); ++sev)
      for (bool filtered : {false, true})
        for (bool detected : {false, true})
          all.push_back(CategoryResult{seen, static_cast<Severity>(sev), filtered, detected});
  for (const CategoryResult& a : all) {
    for (const CategoryResult& b : all) {
      accounting::FilterRow into{}, from{};
      into[3] = a;
      from[3] = b;
      from[13] = b;
      accounting::merge_row(into, from);
      CategoryResult expected = a;
      expected.merge(b);
      for (std::size_t i : {std::size_t{3}, std::size_t{13}}) {
        const CategoryResult& got = into[i];
        const CategoryResult& want = i == 3 ? expected : b;
        EXPECT_EQ(got.seen, want.seen);
        EXPECT_EQ(got.severity, want.severity);
        EXPECT_EQ(got.filtered, want.filtered);
        EXPECT_EQ(got.detected, want.detected);
      }
      EXPECT_FALSE(into[0].seen);
    }
  }
}

TEST(ResponseDocument, TheLastOccurrenceOfANameCounts) {
  using accounting::read_response_document;
  // As JSON.parse in the client's SDK reads it.
  EXPECT_FALSE(
      read_response_document(R"({"usage":{"total_tokens":5},"usage":null})", {.facts = true})
          .facts.usage);
  EXPECT_EQ(
      read_response_document(R"({"usage":{"total_tokens":5,"total_tokens":7}})", {.facts = true})
          .facts.usage->total_tokens,
      7);
  EXPECT_EQ(read_response_document(R"({"choices":[{"finish_reason":"stop","finish_reason":null}]})",
                                   {.facts = true})
                .facts.finish_reason,
            "");
  EXPECT_EQ(read_response_document(
                R"({"choices":[{"finish_reason":"length"}],"choices":[{"finish_reason":"stop"}]})",
                {.facts = true})
                .facts.finish_reason,
            "stop");
  const ContentFilterSummary once =
      read_response_document(
          R"({"choices":[{"content_filter_results":{"hate":{"filtered":true,"filtered":false,"severity":"high"}},)"
          R"("content_filter_results":{"violence":{"filtered":true,"severity":"low"}}}]})",
          {.filter = true})
          .filter;
  EXPECT_FALSE(once.result(FilterStage::completion, 0).seen);  // hate: an earlier occurrence
  const CategoryResult& violence = once.result(FilterStage::completion, 2);
  EXPECT_TRUE(violence.seen && violence.filtered);
  EXPECT_EQ(violence.severity, Severity::low);
}

TEST(ResponseDocument, InvalidJsonYieldsNothingEvenWhatCameBeforeTheError) {
  const auto read = accounting::read_response_document(
      R"({"usage":{"total_tokens":5},"choices":[{"finish_reason":"stop","content_filter_results":)"
      R"({"hate":{"filtered":true}}}],"x":[})",
      {.facts = true, .filter = true});
  EXPECT_FALSE(read.facts.usage);
  EXPECT_EQ(read.facts.finish_reason, "");
  EXPECT_FALSE(read.filter.any());
}

// Documents shaped like Azure's answers, with what an upstream could get wrong: names repeated,
// values of the wrong kind, escapes, white space, a byte cut off or inserted.
class ResponseShapes {
 public:
  explicit ResponseShapes(std::uint32_t seed) : rng_(seed) {}

  std::string document() {
    std::string out = object(
        {"choices", "usage", "response", "prompt_filter_results", "prompt_annotations", "data",
         "error", "id", "model"},
        [&](std::string_view key) { return top_value(key); }, 7);
    if (pick(12) == 0) out.resize(pick(out.size() + 1));                           // cut short
    if (pick(12) == 0) out.insert(pick(out.size() + 1), 1, "{}[],:\"x"[pick(8)]);  // a stray byte
    return out;
  }

 private:
  std::size_t pick(std::size_t n) { return n == 0 ? 0 : static_cast<std::size_t>(rng_() % n); }
  std::string ws() { return pick(5) == 0 ? std::string(" \n\t ").substr(0, 1 + pick(3)) : ""; }

  template <class ValueOf>
  std::string object(std::initializer_list<std::string_view> keys, ValueOf&& value_of,
                     std::size_t max_members) {
    const std::vector<std::string_view> names(keys);
    std::string out = "{" + ws();
    const std::size_t n = pick(max_members + 1);
    for (std::size_t i = 0; i < n; ++i) {  // names may repeat
      const std::string_view key = names[pick(names.size())];
      if (i) out += "," + ws();
      out += "\"" + std::string(key) + "\"" + ws() + ":" + ws() + value_of(key);
    }
    return out + ws() + "}";
  }

  template <class ElementOf>
  std::string array(ElementOf&& element_of, std::size_t max_elements) {
    std::string out = "[" + ws();
    const std::size_t n = pick(max_elements + 1);
    for (std::size_t i = 0; i < n; ++i) out += (i ? "," + ws() : "") + element_of();
    return out + ws() + "]";
  }

  std::string scalar() {
    static constexpr std::array<std::string_view, 9> kScalars{
        "null", "true", "false", "0", "12", "-3", "1.5", "\"a\\\"}]\"", "\"stop\""};
    return std::string(kScalars[pick(kScalars.size())]);
  }

  // Mostly the kind Azure sends, sometimes another.
  template <class Right>
  std::string mostly(Right&& right) {
    return pick(6) == 0 ? scalar() : right();
  }

  std::string top_value(std::string_view key) {
    if (key == "choices")
      return mostly([&] { return array([&] { return mostly([&] { return choice(); }); }, 3); });
    if (key == "usage") return mostly([&] { return usage(); });
    if (key == "response")
      return mostly([&] {
        return object(
            {"usage", "status"},
            [&](std::string_view k) {
              return k == "usage" ? mostly([&] { return usage(); }) : scalar();
            },
            3);
      });
    if (key == "prompt_filter_results" || key == "prompt_annotations")
      return pick(3) == 0 ? mostly([&] { return results(); }) : mostly([&] {
        return array([&] { return mostly([&] { return prompt_item(); }); }, 3);
      });
    if (key == "data")
      return mostly([&] { return array([&] { return mostly([&] { return data_item(); }); }, 3); });
    if (key == "error") return mostly([&] { return error(); });
    return scalar();
  }

  std::string choice() {
    return object(
        {"finish_reason", "content_filter_results", "index", "message"},
        [&](std::string_view k) -> std::string {
          if (k == "finish_reason") {
            static constexpr std::array<std::string_view, 5> kReasons{
                "\"stop\"", "\"length\"", "null", "\"st\\u006fp\"", "\"content_filter\""};
            return std::string(kReasons[pick(kReasons.size())]);
          }
          if (k == "content_filter_results") return mostly([&] { return results(); });
          if (k == "message") return R"({"content":"\"usage\":{ ] } [","role":"assistant"})";
          return scalar();
        },
        5);
  }

  std::string usage() {
    return object(
        {"prompt_tokens", "input_tokens", "completion_tokens", "output_tokens", "total_tokens",
         "details"},
        [&](std::string_view) {
          static constexpr std::array<std::string_view, 8> kNumbers{
              "7", "0", "-5", "1.5", "99999999999999999999", "\"9\"", "null", "1e3"};
          return pick(4) == 0 ? std::string(kNumbers[pick(kNumbers.size())])
                              : std::to_string(pick(5000));
        },
        6);
  }

  std::string results() {
    return object(
        {"hate", "self_harm", "self-harm", "jailbreak", "custom_blocklists", "error", "made_up"},
        [&](std::string_view k) -> std::string {
          if (k == "custom_blocklists" && pick(2) == 0) {
            static constexpr std::array<std::string_view, 3> kLists{
                R"([{"filtered":true,"id":"x"}])", R"([{"filtered": true}])",
                R"([{"filtered":false}])"};
            return std::string(kLists[pick(kLists.size())]);
          }
          return mostly([&] { return category(); });
        },
        5);
  }

  std::string category() {
    return object(
        {"filtered", "detected", "severity", "details"},
        [&](std::string_view k) -> std::string {
          if (k == "severity") {
            static constexpr std::array<std::string_view, 6> kSeverities{
                "\"safe\"", "\"low\"", "\"medium\"", "\"high\"", "\"HIGH\"", "null"};
            return std::string(kSeverities[pick(kSeverities.size())]);
          }
          if (k == "details") return R"({"filtered":true})";
          return pick(3) == 0 ? scalar() : (pick(2) ? "true" : "false");
        },
        4);
  }

  std::string prompt_item() {
    return object(
        {"prompt_index", "content_filter_results"},
        [&](std::string_view k) {
          return k == "prompt_index" ? scalar() : mostly([&] { return results(); });
        },
        3);
  }

  std::string data_item() {
    return object(
        {"url", "content_filter_results", "prompt_filter_results"},
        [&](std::string_view k) {
          return k == "url" ? scalar() : mostly([&] { return results(); });
        },
        4);
  }

  std::string error() {
    return object(
        {"code", "innererror", "inner_error"},
        [&](std::string_view k) -> std::string {
          if (k == "code") return "\"content_filter\"";
          return mostly([&] {
            return object(
                {"code", "content_filter_result", "content_filter_results"},
                [&](std::string_view ik) {
                  return ik == "code" ? scalar() : mostly([&] { return results(); });
                },
                3);
          });
        },
        3);
  }

  std::mt19937 rng_;
};

TEST(ResponseDocument, ReadsWhatTheReferenceReadersRead) {
  // The readers before the single pass (validate, then look each level up by name), kept as the
  // oracle in tests/fuzz/response_reference.hpp; the response and sse fuzz harnesses run the
  // same comparison on every input they make.
  ResponseShapes shapes(20261207);
  int with_usage = 0, with_finish = 0, filtered = 0, error_results = 0, invalid = 0;
  for (int i = 0; i < 4000; ++i) {
    const std::string text = shapes.document();
    const std::string differs = reference::differs_from_reference(text);
    ASSERT_EQ(differs, "") << text;
    const auto read = accounting::read_response_document(
        text, {.facts = true, .filter = true, .filter_error = true});
    with_usage += read.facts.usage.has_value();
    with_finish += !read.facts.finish_reason.empty();
    filtered +=
        read.filter.filtered(FilterStage::prompt) || read.filter.filtered(FilterStage::completion);
    error_results += accounting::read_response_document(text, {.filter_error = true}).filter.any();
    invalid += !json::scan(text).valid;
  }
  // The shapes reach every reader (so the comparison above compares something).
  EXPECT_GT(with_usage, 400);
  EXPECT_GT(with_finish, 200);
  EXPECT_GT(filtered, 400);
  EXPECT_GT(error_results, 100);
  EXPECT_GT(invalid, 200);
}

}  // namespace
}  // namespace llmgw
