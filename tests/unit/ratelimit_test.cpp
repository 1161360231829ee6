// Rate limiting and client keys: the sliding window and admit() with explicit times, the memory
// store with an injected clock, OpenAI's reset-duration format, the token estimate, and the
// authenticate / authorize / rate_limit stages run through a pipeline.
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/beast/http/fields.hpp>
#include <ostream>  // first: Boost 1.81 core/detail/string_view.hpp needs it but does not include it

#include <gtest/gtest.h>

#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <deque>
#include <exception>
#include <fstream>
#include <limits>
#include <memory>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "llm_gateway/net/redis_reply.hpp"
#include "llm_gateway/pipeline/context.hpp"
#include "llm_gateway/pipeline/pipeline.hpp"
#include "llm_gateway/ratelimit/lease.hpp"
#include "llm_gateway/ratelimit/limiter.hpp"
#include "llm_gateway/ratelimit/store.hpp"
#include "llm_gateway/stages/auth_stage.hpp"
#include "llm_gateway/stages/rate_limit_stage.hpp"
#include "llm_gateway/translate/request_facts.hpp"
#include "test_support.hpp"

namespace llmgw {
namespace {

namespace http = boost::beast::http;
using http::verb;
using nlohmann::json;
using ratelimit::Admission;
using ratelimit::KeyLimits;
using ratelimit::LimitKind;
using ratelimit::LimitState;
using ratelimit::SlidingWindow;

// A time well inside second 1000: bucket 1000 leaves the window at 1'061'000 ms.
constexpr std::int64_t kT0 = 1'000'300;

// ---------------------------------------------------------------------------------------------
// SlidingWindow and admit()
// ---------------------------------------------------------------------------------------------

struct Windows {
  SlidingWindow requests;
  SlidingWindow tokens;
  Admission admit(const KeyLimits& limits, std::int64_t cost, std::int64_t now_ms) {
    return ratelimit::admit(requests, tokens, limits, cost, now_ms);
  }
};

KeyLimits rpm(std::int64_t n) {
  return KeyLimits{n, std::nullopt};
}
KeyLimits tpm(std::int64_t n) {
  return KeyLimits{std::nullopt, n};
}
KeyLimits both(std::int64_t r, std::int64_t t) {
  return KeyLimits{r, t};
}

TEST(SlidingWindow, SumCountsTheCurrentSecondAndTheSixtyBefore) {
  SlidingWindow w;
  w.add(1000, 3);
  w.add(1030, 4);
  w.add(1060, 5);
  EXPECT_EQ(w.sum(1060), 12);
  EXPECT_EQ(w.sum(1000), 3);  // buckets in the future do not count
  EXPECT_EQ(w.sum(1061), 9);  // bucket 1000 has left the 61-second window
  EXPECT_EQ(w.sum(1090), 9);
  EXPECT_EQ(w.sum(1091), 5);
  EXPECT_EQ(w.sum(1121), 0);
}

// state() is sum() and the reset time in one pass: the right numbers at every second of a
// window's life, corrections (negative values) and buckets in the future included.
TEST(SlidingWindow, StateAgreesWithSumAndResetMs) {
  SlidingWindow w;
  w.add(1000, 3);
  w.add(1007, 40);
  w.add(1007, -40);  // a correction back to zero: not "newest" any more
  w.add(1030, 4);
  w.add(1045, -2);
  w.add(1060, 5);
  for (std::int64_t now_ms = 995'000; now_ms <= 1'125'000; now_ms += 250) {
    for (std::int64_t limit : {0, 5, 10, 1000}) {
      const LimitState st = w.state(now_ms, limit);
      EXPECT_EQ(st.limit, limit);
      EXPECT_EQ(st.remaining, std::max<std::int64_t>(0, limit - w.sum(now_ms / 1000))) << now_ms;
      EXPECT_EQ(st.reset_ms, w.reset_ms(now_ms)) << now_ms;
      // reset_ms() is read from state(): both against the definition — the newest non-zero
      // bucket of the window (here 1000, 1030, 1045 and 1060) leaves it 61 seconds after it began.
      std::int64_t newest = -1;
      for (std::int64_t sec : {1000, 1030, 1045, 1060}) {
        if (sec > now_ms / 1000 - 61 && sec <= now_ms / 1000) newest = sec;
      }
      EXPECT_EQ(st.reset_ms, newest < 0 ? 0 : (newest + 61) * 1000 - now_ms) << now_ms;
    }
  }
}

TEST(SlidingWindow, AddToTheSameSecondAccumulatesAndAReusedSlotStartsOver) {
  SlidingWindow w;
  w.add(1000, 2);
  w.add(1000, 3);
  EXPECT_EQ(w.sum(1000), 5);
  w.add(1061, 1);  // the same slot (1061 % 61 == 1000 % 61): the old bucket is dropped
  EXPECT_EQ(w.sum(1061), 1);
}

TEST(SlidingWindow, WaitMsIsTheTimeUntilEnoughOldBucketsLeave) {
  SlidingWindow w;
  w.add(1000, 60);
  w.add(1005, 30);
  const std::int64_t now = 1'010'250;
  EXPECT_EQ(w.wait_ms(now, 100, 10), 0);                // 90 + 10 fits
  EXPECT_EQ(w.wait_ms(now, 100, 50), 1'061'000 - now);  // once bucket 1000 leaves
  EXPECT_EQ(w.wait_ms(now, 100, 80), 1'066'000 - now);  // both must leave
  EXPECT_EQ(w.reset_ms(now), 1'066'000 - now);          // the newest bucket decides
  EXPECT_EQ(SlidingWindow{}.reset_ms(now), 0);
}

TEST(Admit, BurstMayTakeTheWholeRpmThenTheNextWaitsForTheOldestBucket) {
  Windows w;
  for (int i = 0; i < 5; ++i) {
    Admission a = w.admit(rpm(5), 0, kT0 + i);
    ASSERT_TRUE(a.allowed) << i;
    ASSERT_TRUE(a.requests);
    EXPECT_EQ(a.requests->remaining, 4 - i);
  }
  const std::int64_t now = kT0 + 10;
  Admission a = w.admit(rpm(5), 0, now);
  EXPECT_FALSE(a.allowed);
  EXPECT_EQ(a.rejected_by, LimitKind::requests);
  EXPECT_FALSE(a.too_large);
  EXPECT_EQ(a.retry_after_ms, (1000 + 61) * 1000 - now);
  ASSERT_TRUE(a.requests);
  EXPECT_EQ(a.requests->limit, 5);
  EXPECT_EQ(a.requests->remaining, 0);
  EXPECT_EQ(a.requests->reset_ms, (1000 + 61) * 1000 - now);
  EXPECT_FALSE(a.tokens);  // no tpm: no token state
}

TEST(Admit, RetryAfterUsesTheOldestBucketWhenAdmissionsSpanSeconds) {
  Windows w;
  ASSERT_TRUE(w.admit(rpm(3), 0, 1'000'900).allowed);
  ASSERT_TRUE(w.admit(rpm(3), 0, 1'020'100).allowed);
  ASSERT_TRUE(w.admit(rpm(3), 0, 1'040'500).allowed);
  const std::int64_t now = 1'050'000;
  Admission a = w.admit(rpm(3), 0, now);
  EXPECT_FALSE(a.allowed);
  EXPECT_EQ(a.retry_after_ms, (1000 + 61) * 1000 - now);
  EXPECT_EQ(a.requests->reset_ms, (1040 + 61) * 1000 - now);  // until the window is empty
  // Once bucket 1000 left, exactly one more fits; then bucket 1020 decides.
  ASSERT_TRUE(w.admit(rpm(3), 0, 1'061'000).allowed);
  Admission b = w.admit(rpm(3), 0, 1'061'001);
  EXPECT_FALSE(b.allowed);
  EXPECT_EQ(b.retry_after_ms, (1020 + 61) * 1000 - 1'061'001);
}

TEST(Admit, WindowEdgeTheExpiryMillisecondAdmitsOneBeforeDoesNot) {
  Windows w;
  ASSERT_TRUE(w.admit(rpm(1), 0, 1'000'999).allowed);  // the last millisecond of second 1000
  Admission before = w.admit(rpm(1), 0, 1'060'999);
  EXPECT_FALSE(before.allowed);
  EXPECT_EQ(before.retry_after_ms, 1);
  Admission at = w.admit(rpm(1), 0, 1'061'000);
  EXPECT_TRUE(at.allowed);
  EXPECT_EQ(at.requests->remaining, 0);
  // Admitted at 1'000'999 and again at 1'061'000: 60'001 ms apart, never two within 60 s.
}

TEST(Admit, WindowEdgeFirstMillisecondOfASecond) {
  Windows w;
  ASSERT_TRUE(w.admit(rpm(1), 0, 1'000'000).allowed);
  EXPECT_EQ(w.admit(rpm(1), 0, 1'060'999).retry_after_ms, 1);
  EXPECT_FALSE(w.admit(rpm(1), 0, 1'060'000).allowed);  // 60 s after: still inside
  EXPECT_TRUE(w.admit(rpm(1), 0, 1'061'000).allowed);
}

// Checks that no closed 60-second interval [t, t + 60000] holds more than `limit` units.
void expect_at_most_per_60s(const std::vector<std::pair<std::int64_t, std::int64_t>>& admitted,
                            std::int64_t limit, const char* what) {
  std::size_t j = 0;
  std::int64_t in_window = 0;
  // Two pointers over the sorted timestamps: window [admitted[i].first, +60000].
  for (std::size_t i = 0; i < admitted.size(); ++i) {
    if (i > 0) in_window -= admitted[i - 1].second;
    if (j < i) {
      j = i;
      in_window = 0;
    }
    while (j < admitted.size() && admitted[j].first <= admitted[i].first + 60'000) {
      in_window += admitted[j].second;
      ++j;
    }
    ASSERT_LE(in_window, limit) << what << ": too many within 60 s from t=" << admitted[i].first;
  }
}

// The reference model of the 61-bucket window: what counts at `now` is everything admitted in
// the seconds (now_sec - 60) .. now_sec.
struct Reference {
  std::vector<std::pair<std::int64_t, std::int64_t>> admitted;  // (time ms, token cost)
  std::int64_t requests_at(std::int64_t now) const {
    std::int64_t n = 0;
    for (const auto& a : admitted) n += a.first / 1000 >= now / 1000 - 60 ? 1 : 0;
    return n;
  }
  std::int64_t tokens_at(std::int64_t now) const {
    std::int64_t n = 0;
    for (const auto& a : admitted) n += a.first / 1000 >= now / 1000 - 60 ? a.second : 0;
    return n;
  }
  std::int64_t oldest_sec_at(std::int64_t now) const {
    for (const auto& a : admitted) {
      if (a.first / 1000 >= now / 1000 - 60) return a.first / 1000;
    }
    return -1;
  }
};

TEST(Admit, EveryInterval137msFor5MinutesNeverExceedsRpmIn60s) {
  constexpr std::int64_t kRpm = 7;
  Windows w;
  Reference ref;
  int rejected = 0;
  const std::int64_t start = 1'700'000'000'123;
  for (std::int64_t t = start; t < start + 5 * 60'000; t += 137) {
    const bool expect_allowed = ref.requests_at(t) < kRpm;
    Admission a = w.admit(rpm(kRpm), 0, t);
    ASSERT_EQ(a.allowed, expect_allowed) << "t=" << t;
    if (a.allowed) {
      ref.admitted.emplace_back(t, 1);
    } else {
      ++rejected;
      // Rejected only with a full window; retry once its oldest bucket leaves.
      ASSERT_EQ(ref.requests_at(t), kRpm);
      ASSERT_EQ(a.retry_after_ms, (ref.oldest_sec_at(t) + 61) * 1000 - t) << "t=" << t;
      ASSERT_GT(a.retry_after_ms, 0);
      ASSERT_LE(a.retry_after_ms, 61'000);
    }
    ASSERT_EQ(a.requests->remaining, kRpm - ref.requests_at(t)) << "t=" << t;
  }
  EXPECT_GT(rejected, 0);
  expect_at_most_per_60s(ref.admitted, kRpm, "requests");
  // Not overly strict either: 5 minutes allow at least 4 full windows' worth.
  EXPECT_GE(static_cast<std::int64_t>(ref.admitted.size()), 4 * kRpm);
}

TEST(Admit, RandomTimesAndCostsNeverExceedRpmOrTpmIn60s) {
  constexpr std::int64_t kRpm = 5;
  constexpr std::int64_t kTpm = 1000;
  Windows w;
  Reference ref;
  std::uint64_t seed = 0x9E3779B97F4A7C15ull;
  auto next = [&seed](std::uint64_t bound) {
    seed = seed * 6364136223846793005ull + 1442695040888963407ull;
    return (seed >> 33) % bound;
  };
  std::int64_t t = 5'000'000'017;
  for (int i = 0; i < 4000; ++i) {
    // Bursts (gap 0) mixed with gaps up to 9 s.
    t += next(4) == 0 ? 0 : static_cast<std::int64_t>(next(9000));
    const auto cost = static_cast<std::int64_t>(next(600));
    const bool expect_allowed = ref.requests_at(t) + 1 <= kRpm && ref.tokens_at(t) + cost <= kTpm;
    Admission a = w.admit(both(kRpm, kTpm), cost, t);
    ASSERT_EQ(a.allowed, expect_allowed) << "i=" << i << " t=" << t;
    if (a.allowed) {
      ref.admitted.emplace_back(t, cost);
    } else {
      ASSERT_GE(a.retry_after_ms, 1);
      ASSERT_LE(a.retry_after_ms, 61'000);
      ASSERT_EQ(a.rejected_by,
                ref.requests_at(t) + 1 > kRpm ? LimitKind::requests : LimitKind::tokens);
    }
    ASSERT_EQ(a.requests->remaining, kRpm - ref.requests_at(t));
    ASSERT_EQ(a.tokens->remaining, std::max<std::int64_t>(0, kTpm - ref.tokens_at(t)));
  }
  expect_at_most_per_60s(ref.admitted, kTpm, "tokens");
  auto ones = ref.admitted;
  for (auto& entry : ones) entry.second = 1;
  expect_at_most_per_60s(ones, kRpm, "requests");
}

TEST(Admit, RetryAfterIsEnoughForATokenRejection) {
  // Whatever retry_after_ms says, retrying exactly then is admitted (for costs <= tpm).
  Windows w;
  ASSERT_TRUE(w.admit(tpm(100), 60, 1'000'400).allowed);
  ASSERT_TRUE(w.admit(tpm(100), 30, 1'005'700).allowed);
  const std::int64_t now = 1'010'000;
  Admission a = w.admit(tpm(100), 80, now);
  ASSERT_FALSE(a.allowed);
  EXPECT_EQ(a.rejected_by, LimitKind::tokens);
  EXPECT_EQ(a.retry_after_ms, 1'066'000 - now);
  EXPECT_FALSE(w.admit(tpm(100), 80, now + a.retry_after_ms - 1).allowed);
  EXPECT_TRUE(w.admit(tpm(100), 80, now + a.retry_after_ms).allowed);
}

TEST(Admit, CostAboveTpmIsTooLargeAndRejected) {
  Windows w;
  Admission a = w.admit(both(10, 1000), 1001, kT0);
  EXPECT_FALSE(a.allowed);
  EXPECT_TRUE(a.too_large);
  EXPECT_EQ(a.rejected_by, LimitKind::tokens);
  EXPECT_GE(a.retry_after_ms, 1);
  EXPECT_EQ(a.requests->remaining, 10);  // consumed nothing
  EXPECT_EQ(a.tokens->remaining, 1000);
  // Exactly the tpm fits into an empty window.
  Admission b = w.admit(both(10, 1000), 1000, kT0);
  EXPECT_TRUE(b.allowed);
  EXPECT_FALSE(b.too_large);
  EXPECT_EQ(b.tokens->remaining, 0);
}

TEST(Admit, TokensRejectionConsumesNoRequest) {
  Windows w;
  Admission a = w.admit(both(10, 100), 80, kT0);
  ASSERT_TRUE(a.allowed);
  EXPECT_EQ(a.requests->remaining, 9);
  EXPECT_EQ(a.tokens->remaining, 20);
  Admission b = w.admit(both(10, 100), 30, kT0 + 1);
  EXPECT_FALSE(b.allowed);
  EXPECT_EQ(b.rejected_by, LimitKind::tokens);
  EXPECT_FALSE(b.too_large);
  EXPECT_EQ(b.requests->remaining, 9);  // unchanged
  EXPECT_EQ(b.tokens->remaining, 20);
  Admission c = w.admit(both(10, 100), 20, kT0 + 2);
  EXPECT_TRUE(c.allowed);
  EXPECT_EQ(c.requests->remaining, 8);
  EXPECT_EQ(c.tokens->remaining, 0);
}

TEST(Admit, RequestsRejectionConsumesNoTokens) {
  Windows w;
  ASSERT_TRUE(w.admit(both(1, 100), 10, kT0).allowed);
  Admission b = w.admit(both(1, 100), 10, kT0 + 1);
  EXPECT_FALSE(b.allowed);
  EXPECT_EQ(b.rejected_by, LimitKind::requests);
  EXPECT_EQ(b.tokens->remaining, 90);  // unchanged
  EXPECT_EQ(b.requests->remaining, 0);
  // A later key-level check: with rpm free again, all 90 remaining tokens are usable.
  Admission c = w.admit(both(1, 100), 90, 1'061'000);
  EXPECT_TRUE(c.allowed);
}

TEST(Admit, BothLimitsRejectingReportsRequestsAndTheLongerWait) {
  Windows w;
  ASSERT_TRUE(w.admit(both(1, 100), 100, 1'000'000).allowed);
  Admission a = w.admit(both(1, 100), 50, 1'030'000);
  EXPECT_FALSE(a.allowed);
  EXPECT_EQ(a.rejected_by, LimitKind::requests);
  EXPECT_EQ(a.retry_after_ms, 1'061'000 - 1'030'000);
}

TEST(Admit, AdmissionStateValues) {
  Windows w;
  ASSERT_TRUE(w.admit(both(10, 1000), 100, 1'000'300).allowed);
  Admission a = w.admit(both(10, 1000), 250, 1'005'250);
  ASSERT_TRUE(a.allowed);
  EXPECT_EQ(a.bucket_sec, 1005);
  ASSERT_TRUE(a.requests && a.tokens);
  EXPECT_EQ(a.requests->limit, 10);
  EXPECT_EQ(a.requests->remaining, 8);
  EXPECT_EQ(a.requests->reset_ms, (1005 + 61) * 1000 - 1'005'250);
  EXPECT_EQ(a.tokens->limit, 1000);
  EXPECT_EQ(a.tokens->remaining, 650);
  EXPECT_EQ(a.tokens->reset_ms, (1005 + 61) * 1000 - 1'005'250);
  EXPECT_EQ(a.retry_after_ms, 0);
}

TEST(Admit, NoLimitsAlwaysAllowsAndReportsNothing) {
  Windows w;
  for (int i = 0; i < 100; ++i) {
    Admission a = w.admit(KeyLimits{}, 1'000'000, kT0);
    ASSERT_TRUE(a.allowed);
    ASSERT_FALSE(a.requests);
    ASSERT_FALSE(a.tokens);
  }
}

// ---------------------------------------------------------------------------------------------
// MemoryStore with an injected clock
// ---------------------------------------------------------------------------------------------

TEST(MemoryStore, UsesTheInjectedClockAndKeepsKeysApart) {
  std::int64_t now = kT0;
  ratelimit::MemoryStore store([&now] { return now; });
  EXPECT_EQ(store.name(), "memory");
  EXPECT_TRUE(store.admit_now("key-0", rpm(1), 0).allowed);
  EXPECT_TRUE(store.admit_now("key-1", rpm(1), 0).allowed);  // another key: its own window
  Admission a = store.admit_now("key-0", rpm(1), 0);
  EXPECT_FALSE(a.allowed);
  EXPECT_EQ(a.retry_after_ms, 1'061'000 - kT0);
  now = 1'060'999;
  EXPECT_FALSE(store.admit_now("key-0", rpm(1), 0).allowed);
  now = 1'061'000;
  EXPECT_TRUE(store.admit_now("key-0", rpm(1), 0).allowed);
}

TEST(MemoryStore, AsyncAdmitAnswersLikeAdmitNow) {
  std::int64_t now = kT0;
  auto store = std::make_shared<ratelimit::MemoryStore>([&now] { return now; });
  boost::asio::io_context io;
  std::vector<std::optional<Admission>> answers;
  boost::asio::co_spawn(
      io,
      [&]() -> boost::asio::awaitable<void> {
        for (int i = 0; i < 3; ++i) answers.push_back(co_await store->admit("k", rpm(2), 0));
      },
      [](std::exception_ptr e) {
        if (e) std::rethrow_exception(e);
      });
  io.run();
  ASSERT_EQ(answers.size(), 3u);
  ASSERT_TRUE(answers[0] && answers[1] && answers[2]);
  EXPECT_TRUE(answers[0]->allowed);
  EXPECT_TRUE(answers[1]->allowed);
  EXPECT_FALSE(answers[2]->allowed);
}

TEST(MemoryStore, CorrectTokensAddsTheDeltaToTheRecordedBucket) {
  std::int64_t now = kT0;
  ratelimit::MemoryStore store([&now] { return now; });
  Admission a = store.admit_now("key-0", tpm(1000), 300);
  ASSERT_TRUE(a.allowed);
  EXPECT_EQ(a.bucket_sec, 1000);
  EXPECT_EQ(a.tokens->remaining, 700);

  now = 1'010'000;
  store.correct_tokens("key-0", a.bucket_sec, 200);  // the real usage was 500
  Admission b = store.admit_now("key-0", tpm(1000), 0);
  EXPECT_EQ(b.tokens->remaining, 500);
  store.correct_tokens("key-0", a.bucket_sec, -450);  // and finally 50
  Admission c = store.admit_now("key-0", tpm(1000), 0);
  EXPECT_EQ(c.tokens->remaining, 950);

  // The correction went to bucket 1000: it leaves the window with it.
  now = 1'061'000;
  Admission d = store.admit_now("key-0", tpm(1000), 0);
  EXPECT_EQ(d.tokens->remaining, 1000);
}

TEST(MemoryStore, CorrectTokensMakesLaterAdmissionsWait) {
  std::int64_t now = kT0;
  ratelimit::MemoryStore store([&now] { return now; });
  Admission a = store.admit_now("key-0", tpm(1000), 100);
  ASSERT_TRUE(a.allowed);
  store.correct_tokens("key-0", a.bucket_sec, 850);  // 950 used in bucket 1000
  now = 1'020'000;
  Admission b = store.admit_now("key-0", tpm(1000), 100);
  EXPECT_FALSE(b.allowed);
  EXPECT_EQ(b.rejected_by, LimitKind::tokens);
  EXPECT_EQ(b.retry_after_ms, 1'061'000 - now);
}

TEST(MemoryStore, CorrectTokensIgnoresABucketThatLeftTheWindow) {
  std::int64_t now = kT0;
  ratelimit::MemoryStore store([&now] { return now; });
  Admission a = store.admit_now("key-0", tpm(1000), 300);
  ASSERT_TRUE(a.allowed);
  now = 1'061'000;  // bucket 1000 is out
  store.correct_tokens("key-0", a.bucket_sec, 500);
  Admission b = store.admit_now("key-0", tpm(1000), 0);
  EXPECT_EQ(b.tokens->remaining, 1000);
  // Nor does it leak into the slot's next use (bucket 1061 shares bucket 1000's slot).
  Admission c = store.admit_now("key-0", tpm(1000), 10);
  EXPECT_EQ(c.bucket_sec, 1061);
  EXPECT_EQ(c.tokens->remaining, 990);
  // One millisecond before the bucket leaves, the correction still applies.
  std::int64_t now2 = kT0;
  ratelimit::MemoryStore store2([&now2] { return now2; });
  Admission e = store2.admit_now("key-0", tpm(1000), 300);
  now2 = 1'060'999;
  store2.correct_tokens("key-0", e.bucket_sec, 500);
  EXPECT_EQ(store2.admit_now("key-0", tpm(1000), 0).tokens->remaining, 200);
}

// ---------------------------------------------------------------------------------------------
// format_reset
// ---------------------------------------------------------------------------------------------

TEST(FormatReset, OpenAIDurationStrings) {
  using ratelimit::format_reset;
  EXPECT_EQ(format_reset(0), "0ms");
  EXPECT_EQ(format_reset(12), "12ms");
  EXPECT_EQ(format_reset(999), "999ms");
  EXPECT_EQ(format_reset(1000), "1s");
  EXPECT_EQ(format_reset(1500), "1.5s");
  EXPECT_EQ(format_reset(1250), "1.25s");
  EXPECT_EQ(format_reset(60000), "1m0s");
  EXPECT_EQ(format_reset(60700), "1m0.7s");
  EXPECT_EQ(format_reset(360000), "6m0s");
  EXPECT_EQ(format_reset(61001), "1m1.001s");
  EXPECT_EQ(format_reset(59999), "59.999s");
  EXPECT_EQ(format_reset(-5), "0ms");
}

// The buffer form (the response path's) against the string-building definition it replaced, at
// every millisecond of the first two minutes and at the extremes.
TEST(FormatReset, TheBufferFormAgreesWithTheDefinition) {
  const auto reference = [](std::int64_t ms) {
    if (ms < 0) ms = 0;
    if (ms < 1000) return std::to_string(ms) + "ms";
    const std::int64_t minutes = ms / 60000;
    const std::int64_t rest = ms % 60000;
    std::string seconds = std::to_string(rest / 1000);
    if (rest % 1000) {
      char frac[8];
      std::snprintf(frac, sizeof frac, ".%03d", static_cast<int>(rest % 1000));
      std::string f = frac;
      while (f.back() == '0') f.pop_back();
      seconds += f;
    }
    return (minutes ? std::to_string(minutes) + "m" : std::string()) + seconds + "s";
  };
  char buf[32];
  for (std::int64_t ms = -3; ms <= 130'000; ++ms)
    ASSERT_EQ(ratelimit::format_reset(ms, buf), reference(ms)) << ms;
  for (const std::int64_t ms : {std::numeric_limits<std::int64_t>::max(),
                                std::numeric_limits<std::int64_t>::min(), std::int64_t{86'400'123}})
    EXPECT_EQ(ratelimit::format_reset(ms, buf), reference(ms)) << ms;
}

// ---------------------------------------------------------------------------------------------
// estimate_tokens
// ---------------------------------------------------------------------------------------------

std::int64_t estimate(Endpoint endpoint, const std::string& body,
                      std::uint64_t default_tokens = 100) {
  RequestContext ctx;
  ctx.body = body;
  ctx.body_facts = inspect_body("application/json", body);
  ctx.path.endpoint = endpoint;
  return estimate_tokens(ctx, default_tokens);
}

TEST(EstimateTokens, ChatCountsStringValuesNotKeysPlusDefaultCompletion) {
  // "user" (4) + "abcdefgh" (8) = 12 characters -> 3 tokens; the keys role/content do not count.
  EXPECT_EQ(estimate(Endpoint::chat_completions,
                     R"({"model":"gpt-4o","messages":[{"role":"user","content":"abcdefgh"}]})"),
            3 + 100);
  // 13 characters -> ceil(13/4) = 4.
  EXPECT_EQ(estimate(Endpoint::chat_completions,
                     R"({"model":"gpt-4o","messages":[{"role":"user","content":"abcdefghi"}]})"),
            4 + 100);
  // The model and other members are not prompt text.
  EXPECT_EQ(estimate(Endpoint::chat_completions,
                     R"({"model":"a-very-long-model-name","user":"someone-long","messages":[]})"),
            0 + 100);
}

TEST(EstimateTokens, WhiteSpaceAroundKeysStillMarksThemAsKeys) {
  EXPECT_EQ(estimate(Endpoint::chat_completions,
                     "{\"messages\": [ {\"role\" : \"user\" ,\n \"content\"\t: \"abcd\" } ]}"),
            2 + 100);
}

TEST(EstimateTokens, MaxTokensReplacesTheDefault) {
  const std::string msgs = R"("messages":[{"role":"user","content":"abcdefgh"}])";
  EXPECT_EQ(estimate(Endpoint::chat_completions, "{" + msgs + R"(,"max_tokens":50})"), 3 + 50);
  EXPECT_EQ(estimate(Endpoint::chat_completions, "{" + msgs + R"(,"max_completion_tokens":70})"),
            3 + 70);
  EXPECT_EQ(estimate(Endpoint::responses, R"({"input":"abcdefgh","max_output_tokens":9})"), 2 + 9);
  // max_tokens on an endpoint that gets no default still counts.
  EXPECT_EQ(estimate(Endpoint::embeddings, R"({"input":"abcd","max_tokens":5})"), 1 + 5);
}

TEST(EstimateTokens, SaturatesInsteadOfOverflowing) {
  EXPECT_EQ(
      estimate(Endpoint::chat_completions, R"({"messages":[{"role":"user","content":"abcdefgh"}],)"
                                           R"("max_tokens":9223372036854775807})"),
      ratelimit::kMaxTokenAmount);
  EXPECT_EQ(estimate(Endpoint::chat_completions, R"({"messages":[],"max_tokens":1e400})"),
            ratelimit::kMaxTokenAmount);
  EXPECT_EQ(estimate(Endpoint::chat_completions, R"({"messages":[],"max_tokens":-5})", 7), 7);
  EXPECT_EQ(estimate(Endpoint::chat_completions, R"({"messages":[]})",
                     std::numeric_limits<std::uint64_t>::max()),
            ratelimit::kMaxTokenAmount);
  EXPECT_EQ(ratelimit::saturating_add(ratelimit::kMaxTokenAmount, ratelimit::kMaxTokenAmount),
            ratelimit::kMaxTokenAmount);
  EXPECT_EQ(ratelimit::clamp_tokens(-1LL), 0);
}

TEST(SlidingWindow, HostileCorrectionsCannotOverflowABucket) {
  ratelimit::SlidingWindow w;
  for (int i = 0; i < 100000; ++i) w.add(5, std::numeric_limits<std::int64_t>::max());
  EXPECT_GT(w.sum(5), 0);
  for (int i = 0; i < 100000; ++i) w.add(5, std::numeric_limits<std::int64_t>::min());
  EXPECT_LT(w.sum(5), 0);
}

TEST(EstimateTokens, DefaultCompletionOnlyForTextGeneratingEndpoints) {
  EXPECT_EQ(estimate(Endpoint::completions, R"({"model":"m","prompt":"hello"})"), 2 + 100);
  EXPECT_EQ(estimate(Endpoint::responses, R"({"model":"m","input":"hello"})"), 2 + 100);
  EXPECT_EQ(estimate(Endpoint::embeddings, R"({"model":"m","input":"hello"})"), 2);
  EXPECT_EQ(estimate(Endpoint::embeddings, R"({"model":"m","input":["abcd","efgh"]})"), 2);
  EXPECT_EQ(estimate(Endpoint::images_generations, R"({"model":"m","prompt":"a red cat"})"), 3);
  EXPECT_EQ(estimate(Endpoint::other, R"({"model":"m"})"), 0);
  EXPECT_EQ(estimate(Endpoint::chat_completions, R"({"messages":[]})", 1024), 1024);
}

TEST(EstimateTokens, MultiByteUtf8CountsAsOneCharacter) {
  // 4 characters, 8 bytes: one token, not two.
  EXPECT_EQ(estimate(Endpoint::embeddings, "{\"input\":\"\xC3\xA9\xC3\xA9\xC3\xA9\xC3\xA9\"}"), 1);
  // 4 emoji (4 bytes each) + 4 CJK (3 bytes each): 8 characters -> 2 tokens.
  EXPECT_EQ(estimate(Endpoint::embeddings,
                     "{\"input\":\"\xF0\x9F\x98\x80\xF0\x9F\x98\x80\xF0\x9F\x98\x80\xF0\x9F\x98\x80"
                     "\xE4\xB8\xAD\xE4\xB8\xAD\xE4\xB8\xAD\xE4\xB8\xAD\"}"),
            2);
}

TEST(EstimateTokens, ShortEscapesCountAsOneCharacter) {
  // \" \\ \n \t: one character each -> 4 characters, 1 token.
  EXPECT_EQ(estimate(Endpoint::embeddings, R"({"input":"\"\\\n\t"})"), 1);
}

// prompt_characters (request_facts.cpp) documents "an escape is one character" and counts code
// points, but a \uXXXX escape (how Python's json.dumps sends every non-ASCII character by
// default) is counted as five characters ('\u' skipped as one, then the four hex digits count
// as four more), and a surrogate pair as ten. Non-ASCII prompts sent escaped are over-estimated
// ~5x and hit the TPM limit early.
TEST(EstimateTokens, UnicodeEscapeCountsAsOneCharacter) {
  // "éééé" written as escapes: 4 characters -> 1 token (the estimate says 5).
  EXPECT_EQ(estimate(Endpoint::embeddings, R"({"input":"\u00e9\u00e9\u00e9\u00e9"})"), 1);
  // One emoji as a surrogate pair is one code point (the estimate counts 10 characters).
  EXPECT_EQ(estimate(Endpoint::embeddings, R"({"input":"\ud83d\ude00abc"})"), 1);
}

// ---------------------------------------------------------------------------------------------
// Stages through the pipeline: authenticate, authorize, models, rate_limit
// ---------------------------------------------------------------------------------------------

// sha256("sk-hashed-key-0004")
constexpr std::string_view kKeysYaml = R"(
upstreams:
  azure:
    provider: azure
    base_url: https://contoso.openai.azure.com
    api_key: UPSTREAM-SECRET
    deployments:
      gpt-4o: prod-4o
      gpt-4o-mini: mini-prod
routes:
  - {match: "gpt-4o*", upstream: azure}
rate_limits:
  default_completion_tokens: 100
keys:
  - {name: rpm-key, key: sk-rpm-key-0001, rpm: 2}
  - {name: tpm-key, key: sk-tpm-key-0002, tpm: 1000}
  - {name: conc-key, key: sk-conc-key-0003, max_concurrent: 2}
  - name: hashed-key
    key_sha256: 20e134047b07cc59d9f59b0db5a9c8fe337ddee813d3271fddda706b585bcdf0
    models: ["gpt-4o-mini"]
  - {name: both-key, key: sk-both-key-0005, rpm: 1, max_concurrent: 1}
  - {name: mixed-key, key: sk-mixed-key-0006, rpm: 10, tpm: 1000}
)";

const std::vector<std::string> kAllKeyValues{"sk-rpm-key-0001",  "sk-tpm-key-0002",
                                             "sk-conc-key-0003", "sk-hashed-key-0004",
                                             "sk-both-key-0005", "sk-mixed-key-0006"};

// "user" + "abcdefgh": 12 characters -> 3 tokens, + default 100.
constexpr std::string_view kChatBody =
    R"({"model":"gpt-4o","messages":[{"role":"user","content":"abcdefgh"}]})";
constexpr std::int64_t kChatCost = 103;

enum class CredentialStyle { bearer, bearer_lowercase, api_key, none };

// One request with its own storage; the context views it, so a Call never moves.
struct Call {
  std::string target;
  std::string body;
  HeaderList headers;
  RequestContext ctx;
  Verdict verdict = Verdict::proceed;

  Call() = default;
  Call(const Call&) = delete;
  Call& operator=(const Call&) = delete;

  json reply_json() const { return ctx.reply ? json::parse(ctx.reply->body) : json(); }
  std::optional<std::string> reply_header(std::string_view name) const {
    if (!ctx.reply) return std::nullopt;
    for (const auto& [n, v] : ctx.reply->headers) {
      if (n == name) return v;
    }
    return std::nullopt;
  }
};

Verdict run_pipeline(const Snapshot& snapshot, RequestContext& ctx) {
  boost::asio::io_context io;
  std::optional<Verdict> verdict;
  std::exception_ptr error;
  boost::asio::co_spawn(io, snapshot.pipeline.on_request(ctx),
                        [&](std::exception_ptr e, Verdict v) {
                          error = e;
                          verdict = v;
                        });
  io.run();
  if (error) std::rethrow_exception(error);
  EXPECT_TRUE(verdict) << "the pipeline did not complete";
  return verdict.value_or(Verdict::proceed);
}

class KeysTest : public ::testing::Test {
 protected:
  void SetUp() override {
    cfg_ = test::load_ok(kKeysYaml);
    ASSERT_TRUE(cfg_);
    store_ = std::make_shared<ratelimit::MemoryStore>([this] { return now_ms_; });
    concurrency_ = std::make_shared<ratelimit::ConcurrencyCounters>();
    PipelineServices services;
    services.counter_store = store_;
    services.concurrency = concurrency_;
    snapshot_ = make_snapshot(cfg_, services);
  }

  // A new configuration snapshot on the same process-wide state (what a reload will do).
  void install(std::string_view yaml) {
    cfg_ = test::load_ok(yaml);
    ASSERT_TRUE(cfg_);
    PipelineServices services;
    services.counter_store = store_;
    services.concurrency = concurrency_;
    snapshot_ = make_snapshot(cfg_, services);
  }

  std::unique_ptr<Call> send(std::string_view credential, std::string_view body = kChatBody,
                             std::string target = "/v1/chat/completions", verb method = verb::post,
                             CredentialStyle style = CredentialStyle::bearer) {
    auto c = std::make_unique<Call>();
    c->target = std::move(target);
    c->body = std::string(body);
    if (!c->body.empty()) c->headers.set(http::field::content_type, "application/json");
    switch (style) {
      case CredentialStyle::bearer:
        c->headers.set(http::field::authorization, "Bearer " + std::string(credential));
        break;
      case CredentialStyle::bearer_lowercase:
        c->headers.set(http::field::authorization, "bearer " + std::string(credential));
        break;
      case CredentialStyle::api_key: c->headers.set("api-key", credential); break;
      case CredentialStyle::none: break;
    }
    c->ctx.config = snapshot_->config.get();
    c->ctx.request_id = "rid-" + std::to_string(++requests_);
    c->ctx.peer = "127.0.0.1:5555";
    c->ctx.received = Clock::now();
    c->ctx.method = method;
    c->ctx.target = c->target;
    c->ctx.path = llmgw::classify_path(c->ctx.method, c->ctx.target);  // as the session does
    c->ctx.headers = &c->headers;
    c->ctx.body = c->body;
    c->ctx.bytes_in = c->body.size();
    c->verdict = run_pipeline(*snapshot_, c->ctx);
    // Every reply the gateway makes must keep the client's key to itself.
    if (c->ctx.reply) {
      for (const auto& k : kAllKeyValues) {
        EXPECT_EQ(c->ctx.reply->body.find(k), std::string::npos) << c->ctx.reply->body;
        for (const auto& [n, v] : c->ctx.reply->headers) EXPECT_EQ(v.find(k), std::string::npos);
      }
    }
    return c;
  }

  std::unique_ptr<Call> get(std::string_view credential, std::string target) {
    return send(credential, "", std::move(target), verb::get);
  }

  // The response headers the client would get for an admitted call: the gateway's fields in
  // place of the upstream's (as a reply the gateway makes takes them).
  http::fields response_headers(Call& c, const HeaderList& upstream = {}) {
    snapshot_->pipeline.on_response_headers(c.ctx, 200, upstream);
    http::fields out;
    for (const auto& f : upstream) out.insert(f.name(), f.name_string(), f.value());
    c.ctx.added_response_fields.apply_to(out);
    return out;
  }

  static void expect_error(const Call& c, unsigned status, std::string_view code) {
    EXPECT_EQ(c.verdict, Verdict::respond);
    ASSERT_TRUE(c.ctx.reply);
    EXPECT_EQ(c.ctx.reply->status, status);
    EXPECT_EQ(c.ctx.reply->error_code, code);
    EXPECT_EQ(c.ctx.reply->content_type, "application/json");
    EXPECT_EQ(c.reply_json()["error"]["code"], code);
    EXPECT_FALSE(c.ctx.upstream_status);
  }

  static void expect_admitted(const Call& c) {
    EXPECT_EQ(c.verdict, Verdict::proceed);
    EXPECT_FALSE(c.ctx.reply) << (c.ctx.reply ? c.ctx.reply->body : "");
    EXPECT_TRUE(c.ctx.route);
    EXPECT_EQ(c.ctx.rate_limited, -1);
  }

  std::shared_ptr<const config::Config> cfg_;
  std::shared_ptr<ratelimit::MemoryStore> store_;
  std::shared_ptr<ratelimit::ConcurrencyCounters> concurrency_;
  std::shared_ptr<const Snapshot> snapshot_;
  std::int64_t now_ms_ = kT0;
  int requests_ = 0;
};

// --- authenticate ---

TEST_F(KeysTest, BearerCredentialAuthenticates) {
  auto c = send("sk-rpm-key-0001");
  expect_admitted(*c);
  ASSERT_NE(c->ctx.key, nullptr);
  EXPECT_EQ(c->ctx.key->name, "rpm-key");
  EXPECT_EQ(c->ctx.key_index, 0u);
  // The client's key never goes upstream: the upstream gets its own.
  const UpstreamRequest upstream_request = test::first_attempt_request(c->ctx);
  EXPECT_EQ(upstream_request.value_of("api-key").value_or(""), "UPSTREAM-SECRET");
  EXPECT_EQ(upstream_request.value_of("authorization").value_or(""), "");
}

TEST_F(KeysTest, LowercaseBearerAndApiKeyHeaderAuthenticate) {
  auto a = send("sk-tpm-key-0002", kChatBody, "/v1/chat/completions", verb::post,
                CredentialStyle::bearer_lowercase);
  expect_admitted(*a);
  ASSERT_NE(a->ctx.key, nullptr);
  EXPECT_EQ(a->ctx.key->name, "tpm-key");
  auto b = send("sk-mixed-key-0006", kChatBody, "/v1/chat/completions", verb::post,
                CredentialStyle::api_key);
  expect_admitted(*b);
  ASSERT_NE(b->ctx.key, nullptr);
  EXPECT_EQ(b->ctx.key->name, "mixed-key");
  EXPECT_EQ(b->ctx.key_index, 5u);
}

TEST_F(KeysTest, CredentialExtraction) {
  HeaderList h;
  EXPECT_EQ(AuthStage::credential(h), "");
  h.set(http::field::authorization, "Bearer   sk-x");
  EXPECT_EQ(AuthStage::credential(h), "sk-x");
  h.set(http::field::authorization, "Basic dXNlcjpwYXNz");
  EXPECT_EQ(AuthStage::credential(h), "");
  h.set("api-key", "sk-y");
  EXPECT_EQ(AuthStage::credential(h), "sk-y");  // a non-Bearer Authorization falls back
}

// Mutual TLS: a key can be named by the client certificate's fingerprint instead of a secret.
TEST(AuthByCertificate, CertificateNamesAKeyOnlyWithoutASecretAndOnlyItsOwn) {
  const std::string file = ::testing::TempDir() + "llmgw-auth-cert-file.pem";
  std::ofstream(file) << "readable\n";
  auto cfg = test::load_ok(R"(
server:
  tls: {cert_file: ")" + file +
                           R"(", key_file: ")" + file + R"(", client_ca_file: ")" + file +
                           R"(", client_auth: optional}
upstreams:
  azure: {provider: azure, base_url: "https://x.openai.azure.com", api_key: k}
routes: [{match: "*", upstream: azure}]
keys:
  - {name: by-secret, key: sk-secret-0001}
  - {name: by-cert, client_cert_sha256: "0101010101010101010101010101010101010101010101010101010101010101"}
)");
  ASSERT_TRUE(cfg);
  AuthStage stage(*cfg);
  config::Sha256 known{};
  known.fill(0x01);
  config::Sha256 other{};
  other.fill(0x02);
  const auto run = [&](const config::Sha256* cert, std::string_view secret) {
    HeaderList h;
    if (!secret.empty()) h.set(http::field::authorization, "Bearer " + std::string(secret));
    RequestContext ctx;
    ctx.headers = &h;
    ctx.client_cert_sha256 = cert;
    const Verdict v = stage.on_request_headers(ctx);
    return std::pair{v, ctx.key ? ctx.key->name : std::string(ctx.reply ? "401" : "none")};
  };
  EXPECT_EQ(run(&known, ""), std::pair(Verdict::proceed, std::string("by-cert")));
  EXPECT_EQ(run(&other, ""), std::pair(Verdict::respond, std::string("401")));
  EXPECT_EQ(run(nullptr, ""), std::pair(Verdict::respond, std::string("401")));
  // A secret, when sent, decides: the certificate does not rescue a wrong one.
  EXPECT_EQ(run(&known, "sk-secret-0001"), std::pair(Verdict::proceed, std::string("by-secret")));
  EXPECT_EQ(run(&known, "sk-wrong-00000"), std::pair(Verdict::respond, std::string("401")));
  // A certificate-only key has no secret: nothing sent as a key can match it.
  EXPECT_EQ(run(nullptr, std::string(64, '0')), std::pair(Verdict::respond, std::string("401")));
}

TEST_F(KeysTest, MissingCredentialIs401InvalidApiKey) {
  auto c = send("", kChatBody, "/v1/chat/completions", verb::post, CredentialStyle::none);
  expect_error(*c, 401, "invalid_api_key");
  json body = c->reply_json();
  EXPECT_EQ(body["error"]["type"], "invalid_request_error");
  EXPECT_TRUE(body["error"]["param"].is_null());
  EXPECT_NE(body["error"]["message"].get<std::string>().find("didn't provide an API key"),
            std::string::npos);
  EXPECT_EQ(c->ctx.key, nullptr);
  // Authentication comes first: the body was not even parsed.
  EXPECT_FALSE(c->ctx.model);
}

TEST_F(KeysTest, EmptyBearerIsMissing) {
  auto c = send("", kChatBody);  // "Bearer " and nothing
  expect_error(*c, 401, "invalid_api_key");
}

TEST_F(KeysTest, WrongCredentialIs401AndTheMessageDoesNotEchoIt) {
  const std::string wrong = "sk-wrong-value-1234567";
  for (auto style : {CredentialStyle::bearer, CredentialStyle::api_key}) {
    auto c = send(wrong, kChatBody, "/v1/chat/completions", verb::post, style);
    expect_error(*c, 401, "invalid_api_key");
    EXPECT_EQ(c->reply_json()["error"]["message"], "Incorrect API key provided.");
    EXPECT_EQ(c->ctx.reply->body.find(wrong), std::string::npos);
    EXPECT_EQ(c->ctx.key, nullptr);
  }
  // A prefix or extension of a real key is wrong too.
  expect_error(*send("sk-rpm-key-000"), 401, "invalid_api_key");
  expect_error(*send("sk-rpm-key-00011"), 401, "invalid_api_key");
}

TEST_F(KeysTest, ModelsListNeedsAKeyToo) {
  auto c = send("", "", "/v1/models", verb::get, CredentialStyle::none);
  expect_error(*c, 401, "invalid_api_key");
}

TEST_F(KeysTest, KeySha256ConfigAuthenticates) {
  auto c = send("sk-hashed-key-0004", R"({"model":"gpt-4o-mini","messages":[]})");
  expect_admitted(*c);
  ASSERT_NE(c->ctx.key, nullptr);
  EXPECT_EQ(c->ctx.key->name, "hashed-key");
  // The digest itself is not a credential.
  expect_error(*send("20e134047b07cc59d9f59b0db5a9c8fe337ddee813d3271fddda706b585bcdf0"), 401,
               "invalid_api_key");
}

// RFC 9110 §11.1: the authentication scheme is a case-insensitive token. "Bearer" and "bearer"
// are accepted, "BEARER" (or "BeArEr") is not: the credential is then treated as missing (401
// "You didn't provide an API key").
TEST_F(KeysTest, AuthSchemeIsCaseInsensitive) {
  HeaderList h;
  h.set(http::field::authorization, "BEARER sk-x");
  EXPECT_EQ(AuthStage::credential(h), "sk-x");
  auto c = std::make_unique<Call>();
  c->headers.set(http::field::authorization, "BEARER sk-rpm-key-0001");
  c->ctx.config = snapshot_->config.get();
  c->ctx.method = verb::get;
  c->target = "/v1/models";
  c->ctx.target = c->target;
  c->ctx.path = llmgw::classify_path(c->ctx.method, c->ctx.target);  // as the session does
  c->ctx.headers = &c->headers;
  c->verdict = run_pipeline(*snapshot_, c->ctx);
  ASSERT_TRUE(c->ctx.reply);
  EXPECT_EQ(c->ctx.reply->status, 200u) << c->ctx.reply->body;
}

// --- authorize and the models list ---

TEST_F(KeysTest, AllowListRejectsOtherModelsWith403) {
  auto c = send("sk-hashed-key-0004", R"({"model":"gpt-4o","messages":[]})");
  expect_error(*c, 403, "model_not_allowed");
  json body = c->reply_json();
  EXPECT_EQ(body["error"]["type"], "invalid_request_error");
  EXPECT_EQ(body["error"]["param"], "model");
  const std::string message = body["error"]["message"];
  EXPECT_NE(message.find("hashed-key"), std::string::npos);
  EXPECT_NE(message.find("'gpt-4o'"), std::string::npos);
  // The Azure form names the model in the path; the allow-list applies the same.
  auto d = send("sk-hashed-key-0004", R"({"messages":[]})",
                "/openai/deployments/gpt-4o/chat/completions?api-version=2024-10-21");
  expect_error(*d, 403, "model_not_allowed");
}

// The 403 message quotes the model cut at 256 *bytes* (auth_stage.cpp: ctx.model->substr(0,
// 256)); a multi-byte character across byte 256 leaves half a UTF-8 sequence in the error body,
// which is then not valid JSON (SDKs cannot parse the error). The model came from valid JSON.
TEST_F(KeysTest, ModelNotAllowedReplyWithAModelCutInsideAUtf8CharacterIsValidJson) {
  std::string model = "gpt-5o-";  // 7 bytes: a 2-byte character spans bytes 255-256
  while (model.size() < 300) model += "\xC3\xA9";  // é; byte 256 is the first half of one
  auto c = send("sk-hashed-key-0004", R"({"model":")" + model + R"(","messages":[]})");
  ASSERT_TRUE(c->ctx.reply);
  EXPECT_EQ(c->ctx.reply->status, 403u);
  json body;
  EXPECT_NO_THROW(body = json::parse(c->ctx.reply->body)) << "the 403 body is not valid JSON";
}

// The same byte cut in the route stage's 404 model_not_found message (route_stage.cpp).
TEST_F(KeysTest, ModelNotFoundReplyWithAModelCutInsideAUtf8CharacterIsValidJson) {
  std::string model = "claude-";
  while (model.size() < 300) model += "\xC3\xA9";
  auto c = send("sk-mixed-key-0006", R"({"model":")" + model + R"(","messages":[]})");
  ASSERT_TRUE(c->ctx.reply);
  EXPECT_EQ(c->ctx.reply->status, 404u);
  json body;
  EXPECT_NO_THROW(body = json::parse(c->ctx.reply->body)) << "the 404 body is not valid JSON";
}

TEST_F(KeysTest, KeyWithoutAllowListMayUseAnyModel) {
  expect_admitted(*send("sk-mixed-key-0006", R"({"model":"gpt-4o-mini","messages":[]})"));
  expect_admitted(*send("sk-mixed-key-0006", R"({"model":"gpt-4o","messages":[]})"));
}

TEST_F(KeysTest, ModelsListIsFilteredByTheAllowList) {
  auto ids = [](const Call& c) {
    std::vector<std::string> out;
    const json body = c.reply_json();
    for (const auto& m : body["data"]) out.push_back(m["id"]);
    return out;
  };
  auto all = get("sk-mixed-key-0006", "/v1/models");
  ASSERT_TRUE(all->ctx.reply);
  EXPECT_EQ(all->ctx.reply->status, 200u);
  EXPECT_EQ(ids(*all), (std::vector<std::string>{"gpt-4o", "gpt-4o-mini"}));

  auto filtered = get("sk-hashed-key-0004", "/v1/models");
  ASSERT_TRUE(filtered->ctx.reply);
  EXPECT_EQ(filtered->ctx.reply->status, 200u);
  EXPECT_EQ(filtered->reply_json()["object"], "list");
  EXPECT_EQ(ids(*filtered), (std::vector<std::string>{"gpt-4o-mini"}));

  auto one = get("sk-hashed-key-0004", "/v1/models/gpt-4o-mini");
  ASSERT_TRUE(one->ctx.reply);
  EXPECT_EQ(one->ctx.reply->status, 200u);
  expect_error(*get("sk-hashed-key-0004", "/v1/models/gpt-4o"), 404, "model_not_found");
}

TEST(KeyAllowsModel, GlobsAndEmptyList) {
  config::ClientKey k;
  EXPECT_TRUE(key_allows_model(k, "anything"));
  k.models = {"gpt-4o*", "o3"};
  EXPECT_TRUE(key_allows_model(k, "gpt-4o"));
  EXPECT_TRUE(key_allows_model(k, "gpt-4o-mini"));
  EXPECT_TRUE(key_allows_model(k, "o3"));
  EXPECT_FALSE(key_allows_model(k, "o3-mini"));
  EXPECT_FALSE(key_allows_model(k, "gpt-4"));
}

// --- rate_limit ---

TEST_F(KeysTest, RpmBurstThen429WithRetryHeaders) {
  expect_admitted(*send("sk-rpm-key-0001"));
  now_ms_ = kT0 + 40;
  expect_admitted(*send("sk-rpm-key-0001"));
  now_ms_ = kT0 + 100;  // 1'000'400
  auto c = send("sk-rpm-key-0001");
  expect_error(*c, 429, "rate_limit_exceeded");
  json body = c->reply_json();
  EXPECT_EQ(body["error"]["type"], "requests");
  EXPECT_TRUE(body["error"]["param"].is_null());
  const std::string message = body["error"]["message"];
  EXPECT_NE(message.find("requests per min (RPM)"), std::string::npos) << message;
  EXPECT_NE(message.find("Limit 2"), std::string::npos) << message;
  EXPECT_NE(message.find("'rpm-key'"), std::string::npos) << message;
  // The window's wait is 60.6 s; the SDKs ignore a retry-after above 60 s, so 60 is said.
  EXPECT_NE(message.find("60.000s"), std::string::npos) << message;
  EXPECT_EQ(c->reply_header("retry-after-ms"), "60000");
  EXPECT_EQ(c->reply_header("retry-after"), "60");
  EXPECT_EQ(c->reply_header("x-gateway-rate-limited"), "requests");
  EXPECT_EQ(c->ctx.rate_limited, static_cast<int>(LimitKind::requests));

  now_ms_ = 1'061'000 - 1;
  auto d = send("sk-rpm-key-0001");
  expect_error(*d, 429, "rate_limit_exceeded");
  EXPECT_EQ(d->reply_header("retry-after-ms"), "1");
  EXPECT_EQ(d->reply_header("retry-after"), "1");
  now_ms_ = 1'061'000;
  expect_admitted(*send("sk-rpm-key-0001"));
}

TEST_F(KeysTest, RetryAfterSecondsRoundUpButNotExactSeconds) {
  now_ms_ = 1'000'000;
  expect_admitted(*send("sk-rpm-key-0001"));
  expect_admitted(*send("sk-rpm-key-0001"));
  now_ms_ = 1'001'000;
  auto c = send("sk-rpm-key-0001");
  EXPECT_EQ(c->reply_header("retry-after-ms"), "60000");
  EXPECT_EQ(c->reply_header("retry-after"), "60");
}

TEST_F(KeysTest, RejectedRequestsAreNotCountedAgainstRpm) {
  expect_admitted(*send("sk-rpm-key-0001"));
  expect_admitted(*send("sk-rpm-key-0001"));
  for (int i = 0; i < 5; ++i) expect_error(*send("sk-rpm-key-0001"), 429, "rate_limit_exceeded");
  now_ms_ = 1'061'000;
  expect_admitted(*send("sk-rpm-key-0001"));
  expect_admitted(*send("sk-rpm-key-0001"));
}

TEST_F(KeysTest, LimitsArePerKey) {
  expect_admitted(*send("sk-rpm-key-0001"));
  expect_admitted(*send("sk-rpm-key-0001"));
  expect_error(*send("sk-rpm-key-0001"), 429, "rate_limit_exceeded");
  expect_admitted(*send("sk-mixed-key-0006"));
}

TEST_F(KeysTest, LocalRepliesBeforeRateLimitingConsumeNothing) {
  // A 404 (route runs before rate_limit) does not count.
  for (int i = 0; i < 3; ++i)
    expect_error(*send("sk-rpm-key-0001", R"({"model":"claude","messages":[]})"), 404,
                 "model_not_found");
  expect_admitted(*send("sk-rpm-key-0001"));
  expect_admitted(*send("sk-rpm-key-0001"));
}

TEST_F(KeysTest, TpmTooLargeIs429TokensThatRetryingCannotFix) {
  auto c = send(
      "sk-tpm-key-0002",
      R"({"model":"gpt-4o","messages":[{"role":"user","content":"abcdefgh"}],"max_tokens":2000})");
  expect_error(*c, 429, "rate_limit_exceeded");
  json body = c->reply_json();
  EXPECT_EQ(body["error"]["type"], "tokens");
  const std::string message = body["error"]["message"];
  EXPECT_NE(message.find("Request too large"), std::string::npos) << message;
  EXPECT_NE(message.find("tokens per min (TPM)"), std::string::npos) << message;
  EXPECT_NE(message.find("Limit 1000, Requested 2003"), std::string::npos) << message;
  EXPECT_EQ(c->reply_header("x-gateway-rate-limited"), "tokens");
  ASSERT_TRUE(c->reply_header("retry-after"));
  ASSERT_TRUE(c->reply_header("retry-after-ms"));
  EXPECT_EQ(c->ctx.rate_limited, static_cast<int>(LimitKind::tokens));
  // It consumed nothing.
  expect_admitted(*send(
      "sk-tpm-key-0002",
      R"({"model":"gpt-4o","messages":[{"role":"user","content":"abcdefgh"}],"max_tokens":997})"));
}

// Security finding 2: max_tokens near INT64_MAX wrapped the estimate to a negative cost, which
// credited the window, and then every request passed a key with tpm 1000.
TEST_F(KeysTest, HugeMaxTokensNeitherWrapsTheEstimateNorCorruptsTheWindow) {
  for (std::string_view huge : {"9223372036854775807", "9223372036854775806",
                                "99999999999999999999999", "1e300", "2147483648", "4294967296.5"}) {
    auto c = send("sk-tpm-key-0002",
                  R"({"model":"gpt-4o","messages":[{"role":"user","content":"abcdefgh"}],)"
                  R"("max_tokens":)" +
                      std::string(huge) + "}");
    expect_error(*c, 400, "invalid_value");
    EXPECT_EQ(c->reply_json()["error"]["param"], "max_tokens") << huge;
  }
  // Values a limiter can count are counted, never wrapped.
  auto big = send("sk-tpm-key-0002", R"({"model":"gpt-4o","messages":[],"max_tokens":2147483647})");
  expect_error(*big, 429, "rate_limit_exceeded");
  // The window is intact: the key's 1000 tokens admit one 603-token request, not two.
  const std::string body =
      R"({"model":"gpt-4o","messages":[{"role":"user","content":"abcdefgh"}],"max_tokens":600})";
  expect_admitted(*send("sk-tpm-key-0002", body));
  expect_error(*send("sk-tpm-key-0002", body), 429, "rate_limit_exceeded");
}

TEST_F(KeysTest, FractionalAndExponentMaxTokensAreCounted) {
  // 1.5e3 is 1500 tokens: it must not fall back to the (smaller) default estimate.
  auto c = send("sk-tpm-key-0002", R"({"model":"gpt-4o","messages":[],"max_tokens":1.5e3})");
  expect_error(*c, 429, "rate_limit_exceeded");
  EXPECT_NE(std::string(c->reply_json()["error"]["message"]).find("Requested 1500"),
            std::string::npos);
}

TEST_F(KeysTest, TpmReachedIs429TokensWithRetryAfter) {
  const std::string body =
      R"({"model":"gpt-4o","messages":[{"role":"user","content":"abcdefgh"}],"max_tokens":600})";
  expect_admitted(*send("sk-tpm-key-0002", body));  // 603
  now_ms_ = 1'030'250;
  auto c = send("sk-tpm-key-0002", body);
  expect_error(*c, 429, "rate_limit_exceeded");
  const json j = c->reply_json();
  EXPECT_EQ(j["error"]["type"], "tokens");
  const std::string message = j["error"]["message"];
  EXPECT_NE(message.find("Rate limit reached for key 'tpm-key' on tokens per min (TPM)"),
            std::string::npos)
      << message;
  EXPECT_NE(message.find("Requested 603"), std::string::npos) << message;
  EXPECT_NE(message.find("30.750s"), std::string::npos) << message;
  EXPECT_EQ(c->reply_header("retry-after-ms"), "30750");
  EXPECT_EQ(c->reply_header("retry-after"), "31");
  EXPECT_EQ(c->reply_header("x-gateway-rate-limited"), "tokens");
  // A smaller request still fits.
  expect_admitted(*send("sk-tpm-key-0002"));  // 103: 706 in total
}

TEST_F(KeysTest, MaxConcurrentRejectsTheThirdWhileTwoAreInFlight) {
  auto first = send("sk-conc-key-0003");
  auto second = send("sk-conc-key-0003");
  expect_admitted(*first);
  expect_admitted(*second);
  auto third = send("sk-conc-key-0003");
  expect_error(*third, 429, "rate_limit_exceeded");
  json body = third->reply_json();
  EXPECT_EQ(body["error"]["type"], "requests");
  const std::string message = body["error"]["message"];
  EXPECT_NE(message.find("concurren"), std::string::npos) << message;
  EXPECT_NE(message.find("max_concurrent"), std::string::npos) << message;
  EXPECT_EQ(third->reply_header("x-gateway-rate-limited"), "concurrency");
  EXPECT_EQ(third->reply_header("retry-after"), "1");
  EXPECT_EQ(third->reply_header("retry-after-ms"), "1000");
  EXPECT_EQ(third->ctx.rate_limited, static_cast<int>(LimitKind::concurrency));
  // The rejected one holds no slot: dropping it frees nothing, still full.
  third.reset();
  expect_error(*send("sk-conc-key-0003"), 429, "rate_limit_exceeded");
  // Ending an admitted request (its context goes away) releases its slot.
  first.reset();
  auto fourth = send("sk-conc-key-0003");
  expect_admitted(*fourth);
  expect_error(*send("sk-conc-key-0003"), 429, "rate_limit_exceeded");
  second.reset();
  fourth.reset();
  auto a = send("sk-conc-key-0003");
  auto b = send("sk-conc-key-0003");
  expect_admitted(*a);
  expect_admitted(*b);
}

TEST_F(KeysTest, ConcurrencyIsPerKey) {
  auto a = send("sk-conc-key-0003");
  auto b = send("sk-conc-key-0003");
  expect_admitted(*a);
  expect_admitted(*b);
  std::vector<std::unique_ptr<Call>> others;
  for (int i = 0; i < 5; ++i) {
    others.push_back(send("sk-mixed-key-0006"));
    expect_admitted(*others.back());
  }
}

TEST_F(KeysTest, ConcurrencySlotIsReleasedWhenRpmRejects) {
  auto first = send("sk-both-key-0005");  // rpm 1, max_concurrent 1
  expect_admitted(*first);
  auto busy = send("sk-both-key-0005");
  expect_error(*busy, 429, "rate_limit_exceeded");
  EXPECT_EQ(busy->reply_header("x-gateway-rate-limited"), "concurrency");
  first.reset();
  // Concurrency admits it, the rpm rejects it: the slot must be given back at once.
  auto rpm_rejected = send("sk-both-key-0005");
  expect_error(*rpm_rejected, 429, "rate_limit_exceeded");
  EXPECT_EQ(rpm_rejected->reply_header("x-gateway-rate-limited"), "requests");
  // While that rejected context is still alive, the next one is judged by rpm, not concurrency.
  auto again = send("sk-both-key-0005");
  EXPECT_EQ(again->reply_header("x-gateway-rate-limited"), "requests");
  now_ms_ = 1'061'000;
  expect_admitted(*send("sk-both-key-0005"));
}

TEST_F(KeysTest, ResponseHeadersCarryTheKeysLimitsInOpenAIFormat) {
  auto first = send("sk-mixed-key-0006");
  expect_admitted(*first);
  http::fields h1 = response_headers(*first);
  EXPECT_EQ(h1["x-ratelimit-limit-requests"], "10");
  EXPECT_EQ(h1["x-ratelimit-remaining-requests"], "9");
  EXPECT_EQ(h1["x-ratelimit-reset-requests"], "1m0.7s");  // 1'061'000 - 1'000'300
  EXPECT_EQ(h1["x-ratelimit-limit-tokens"], "1000");
  EXPECT_EQ(h1["x-ratelimit-remaining-tokens"], std::to_string(1000 - kChatCost));
  EXPECT_EQ(h1["x-ratelimit-reset-tokens"], "1m0.7s");

  now_ms_ = 1'005'250;
  auto second = send("sk-mixed-key-0006");
  // The gateway's values replace the upstream's headers of the same names.
  HeaderList upstream;
  upstream.set("x-ratelimit-limit-requests", "5000");
  upstream.set("x-ratelimit-remaining-tokens", "123");
  http::fields h2 = response_headers(*second, upstream);
  EXPECT_EQ(h2["x-ratelimit-limit-requests"], "10");
  EXPECT_EQ(h2["x-ratelimit-remaining-requests"], "8");
  EXPECT_EQ(h2["x-ratelimit-reset-requests"], "1m0.75s");
  EXPECT_EQ(h2["x-ratelimit-remaining-tokens"], std::to_string(1000 - 2 * kChatCost));
  EXPECT_EQ(h2["x-ratelimit-reset-tokens"], "1m0.75s");
  std::size_t count = 0;
  for (const auto& f : h2) count += f.name_string() == "x-ratelimit-limit-requests" ? 1 : 0;
  EXPECT_EQ(count, 1u);
}

TEST_F(KeysTest, ResponseHeadersLeaveKindsTheKeyDoesNotHaveAlone) {
  auto c = send("sk-rpm-key-0001");
  HeaderList upstream;
  upstream.set("x-ratelimit-limit-tokens", "30000");
  upstream.set("x-ratelimit-reset-tokens", "6m0s");
  http::fields h = response_headers(*c, upstream);
  EXPECT_EQ(h["x-ratelimit-limit-requests"], "2");
  EXPECT_EQ(h["x-ratelimit-remaining-requests"], "1");
  EXPECT_EQ(h["x-ratelimit-limit-tokens"], "30000");
  EXPECT_EQ(h["x-ratelimit-reset-tokens"], "6m0s");
  EXPECT_EQ(h.count("x-ratelimit-remaining-tokens"), 0u);

  // A key with neither rpm nor tpm leaves every x-ratelimit-* header to the upstream.
  auto d = send("sk-conc-key-0003");
  HeaderList up2;
  up2.set("x-ratelimit-limit-requests", "77");
  http::fields h2 = response_headers(*d, up2);
  EXPECT_EQ(h2["x-ratelimit-limit-requests"], "77");
  EXPECT_EQ(h2.count("x-ratelimit-remaining-requests"), 0u);
}

TEST_F(KeysTest, TokenReservationIsCorrectedToTheRealUsage) {
  auto first = send("sk-tpm-key-0002");
  expect_admitted(*first);
  EXPECT_EQ(response_headers(*first)["x-ratelimit-remaining-tokens"], "897");
  first->ctx.usage = accounting::Usage{30, 20, 50};
  snapshot_->pipeline.on_response_end(first->ctx);
  snapshot_->pipeline.on_complete(first->ctx);
  first.reset();
  now_ms_ = kT0 + 5000;
  auto second = send("sk-tpm-key-0002");
  expect_admitted(*second);
  // 50 (real) + 103 (this reservation)
  EXPECT_EQ(response_headers(*second)["x-ratelimit-remaining-tokens"], "847");
  // Without usage (an error, a stream without a usage chunk) the estimate stands.
  snapshot_->pipeline.on_response_end(second->ctx);
  snapshot_->pipeline.on_complete(second->ctx);
  auto third = send("sk-tpm-key-0002");
  EXPECT_EQ(response_headers(*third)["x-ratelimit-remaining-tokens"], "744");
}

TEST_F(KeysTest, UsageReadFromTheUpstreamBodyCorrectsTheReservation) {
  auto c = send("sk-tpm-key-0002");
  expect_admitted(*c);
  // The upstream answers with JSON; the account stage reads its usage at the response's end,
  // before the rate_limit stage settles (response hooks run in reverse stage order).
  HeaderList h;
  h.set(http::field::content_type, "application/json");
  c->ctx.status = 200;
  c->ctx.upstream_status = 200;  // as the router's commit step sets it
  snapshot_->pipeline.on_response_headers(c->ctx, 200, h);
  EXPECT_EQ(c->ctx.added_response_fields.get("x-ratelimit-remaining-tokens"), "897");
  snapshot_->pipeline.on_response_body(
      c->ctx,
      R"({"choices":[{"index":0,"finish_reason":"stop","message":{"role":"assistant","content":"hi"}}],)");
  snapshot_->pipeline.on_response_body(
      c->ctx, R"("usage":{"prompt_tokens":12,"completion_tokens":8,"total_tokens":20}})");
  snapshot_->pipeline.on_response_end(c->ctx);
  ASSERT_TRUE(c->ctx.usage);
  EXPECT_EQ(c->ctx.usage->total_tokens, 20);
  // A client that sends its next request right away already sees the correction.
  auto next = send("sk-tpm-key-0002");
  EXPECT_EQ(response_headers(*next)["x-ratelimit-remaining-tokens"],
            std::to_string(1000 - 20 - 103));
  snapshot_->pipeline.on_complete(c->ctx);
  c.reset();
  auto after = send("sk-tpm-key-0002");
  EXPECT_EQ(response_headers(*after)["x-ratelimit-remaining-tokens"],
            std::to_string(1000 - 20 - 2 * 103));
}

TEST_F(KeysTest, ResponseEndReleasesTheConcurrencySlotOnce) {
  auto a = send("sk-conc-key-0003");
  auto b = send("sk-conc-key-0003");
  expect_admitted(*a);
  expect_admitted(*b);
  auto rejected = send("sk-conc-key-0003");
  expect_error(*rejected, 429, "rate_limit_exceeded");
  // The 429 is a local reply, which is also ended: it holds no slot, so it frees none.
  snapshot_->pipeline.on_response_end(rejected->ctx);
  snapshot_->pipeline.on_complete(rejected->ctx);
  rejected.reset();
  expect_error(*send("sk-conc-key-0003"), 429, "rate_limit_exceeded");
  // a's answer is complete: its slot is free although its context still exists.
  snapshot_->pipeline.on_response_end(a->ctx);
  auto c = send("sk-conc-key-0003");
  expect_admitted(*c);
  // Ending a's context now must not release a second time: b and c are in flight.
  snapshot_->pipeline.on_complete(a->ctx);
  a.reset();
  expect_error(*send("sk-conc-key-0003"), 429, "rate_limit_exceeded");
  b.reset();  // a cut response: its slot goes with its context
  auto d = send("sk-conc-key-0003");
  expect_admitted(*d);
  expect_error(*send("sk-conc-key-0003"), 429, "rate_limit_exceeded");
}

TEST_F(KeysTest, RejectedRequestIsNotCorrected) {
  auto first = send("sk-tpm-key-0002", R"({"model":"gpt-4o","messages":[],"max_tokens":900})");
  expect_admitted(*first);
  auto rejected = send("sk-tpm-key-0002");
  expect_error(*rejected, 429, "rate_limit_exceeded");
  rejected->ctx.usage = accounting::Usage{0, 0, 0};  // would be a -103 correction
  snapshot_->pipeline.on_response_end(rejected->ctx);
  snapshot_->pipeline.on_complete(rejected->ctx);
  auto again = send("sk-tpm-key-0002");
  expect_error(*again, 429, "rate_limit_exceeded");
}

// Runtime state is keyed by name: a snapshot whose keys are reordered, added and removed keeps the
// windows and in-flight counts of the keys it still has, and a new key starts clean.
TEST_F(KeysTest, LimitsOfKeysInBothSnapshotsCarryOverWhateverTheirPosition) {
  expect_admitted(*send("sk-rpm-key-0001"));
  expect_admitted(*send("sk-rpm-key-0001"));  // rpm 2: the window is full
  auto held = send("sk-conc-key-0003");       // one of conc-key's 2 slots, still in flight
  expect_admitted(*held);
  install(R"(
upstreams:
  azure:
    provider: azure
    base_url: https://contoso.openai.azure.com
    api_key: UPSTREAM-SECRET
routes:
  - {match: "gpt-4o*", upstream: azure}
rate_limits:
  default_completion_tokens: 100
keys:
  - {name: new-key, key: sk-new-key-0009, rpm: 1}
  - {name: conc-key, key: sk-conc-key-0003, max_concurrent: 2}
  - {name: mixed-key, key: sk-mixed-key-0006, rpm: 10, tpm: 1000}
  - {name: rpm-key, key: sk-rpm-key-0001, rpm: 2}
)");
  // rpm-key moved from position 0 to 3: its full window came with it.
  expect_error(*send("sk-rpm-key-0001"), 429, "rate_limit_exceeded");
  // new-key took position 0, where rpm-key's counters used to be: it starts clean.
  expect_admitted(*send("sk-new-key-0009"));
  // conc-key's request from the old snapshot still holds a slot: one more fits, not two.
  auto second = send("sk-conc-key-0003");
  expect_admitted(*second);
  expect_error(*send("sk-conc-key-0003"), 429, "rate_limit_exceeded");
  // tpm-key is gone: its credential no longer authenticates.
  expect_error(*send("sk-tpm-key-0002"), 401, "invalid_api_key");
}

// The default services: a MemoryStore on the system clock.
TEST(RateLimitStage, DefaultSnapshotUsesASystemClockMemoryStore) {
  auto cfg = test::load_ok(kKeysYaml);
  ASSERT_TRUE(cfg);
  auto snapshot = make_snapshot(cfg);
  std::vector<std::unique_ptr<Call>> calls;
  for (int i = 0; i < 3; ++i) {
    auto c = std::make_unique<Call>();
    c->body = std::string(kChatBody);
    c->target = "/v1/chat/completions";
    c->headers.set(http::field::content_type, "application/json");
    c->headers.set(http::field::authorization, "Bearer sk-rpm-key-0001");
    c->ctx.config = cfg.get();
    c->ctx.method = verb::post;
    c->ctx.target = c->target;
    c->ctx.path = llmgw::classify_path(c->ctx.method, c->ctx.target);  // as the session does
    c->ctx.headers = &c->headers;
    c->ctx.body = c->body;
    c->ctx.received = Clock::now();
    c->verdict = run_pipeline(*snapshot, c->ctx);
    calls.push_back(std::move(c));
  }
  EXPECT_EQ(calls[0]->verdict, Verdict::proceed);
  EXPECT_EQ(calls[1]->verdict, Verdict::proceed);
  ASSERT_EQ(calls[2]->verdict, Verdict::respond);
  ASSERT_TRUE(calls[2]->ctx.reply);
  EXPECT_EQ(calls[2]->ctx.reply->status, 429u);
  const std::int64_t ms = std::stoll(calls[2]->reply_header("retry-after-ms").value_or("0"));
  EXPECT_GE(ms, 59'000);
  EXPECT_LE(ms, 61'000);
  const std::string secs = calls[2]->reply_header("retry-after").value_or("");
  EXPECT_TRUE(secs == "60" || secs == "61") << secs;
}

// --- Leases of a shared (Redis) quota: sizes, local spending, deltas ---

using ratelimit::CounterDelta;
using ratelimit::LeaseGrant;
using ratelimit::LeasePolicy;
using ratelimit::LeaseSize;
using ratelimit::LocalLease;
using ratelimit::PendingDeltas;

LeasePolicy fraction_policy(double share) {
  return {LeasePolicy::Mode::fraction, share};
}

KeyLimits limits_of(std::optional<std::int64_t> rpm, std::optional<std::int64_t> tpm) {
  KeyLimits l;
  l.rpm = rpm;
  l.tpm = tpm;
  return l;
}

TEST(LeaseSize, OffNeverLeases) {
  const LeaseSize s = ratelimit::lease_size(limits_of(1'000'000'000, 1'000'000'000'000),
                                            {LeasePolicy::Mode::off, 0});
  EXPECT_FALSE(s.leased());
  EXPECT_EQ(s.requests, 1);
  EXPECT_EQ(s.tokens, 0);
}

TEST(LeaseSize, AutoLeasesOnePercentFrom6000RpmAndSmallerLimitsStayExact) {
  const LeasePolicy automatic;
  // Small limits keep one call per request: every existing answer stays exact.
  for (std::int64_t rpm : {1, 2, 5, 100, 1000, 5999}) {
    EXPECT_FALSE(ratelimit::lease_size(limits_of(rpm, std::nullopt), automatic).leased()) << rpm;
    EXPECT_FALSE(ratelimit::lease_size(limits_of(rpm, 1'000'000'000'000), automatic).leased())
        << rpm;
  }
  LeaseSize s = ratelimit::lease_size(limits_of(6000, 1'000'000), automatic);
  EXPECT_TRUE(s.leased());
  EXPECT_EQ(s.requests, 60);
  EXPECT_EQ(s.tokens, 10'000);
  // The benchmark's key (rpm 1e9, tpm 1e12): big slices, capped.
  s = ratelimit::lease_size(limits_of(1'000'000'000, 1'000'000'000'000), automatic);
  EXPECT_EQ(s.requests, ratelimit::kMaxRequestLease);
  EXPECT_EQ(s.tokens, ratelimit::kMaxTokenLease);
  // Without rpm the tpm decides.
  EXPECT_FALSE(ratelimit::lease_size(limits_of(std::nullopt, 5'999'999), automatic).leased());
  s = ratelimit::lease_size(limits_of(std::nullopt, 6'000'000), automatic);
  EXPECT_TRUE(s.leased());
  EXPECT_EQ(s.tokens, 60'000);
  EXPECT_FALSE(ratelimit::lease_size(limits_of(std::nullopt, std::nullopt), automatic).leased());
}

TEST(LeaseSize, AFractionOfEachLimitAndNoLeaseOfASingleRequest) {
  LeaseSize s = ratelimit::lease_size(limits_of(100, std::nullopt), fraction_policy(0.1));
  EXPECT_TRUE(s.leased());
  EXPECT_EQ(s.requests, 10);
  EXPECT_EQ(s.tokens, 0);
  s = ratelimit::lease_size(limits_of(100, 20'000), fraction_policy(0.1));
  EXPECT_EQ(s.requests, 10);
  EXPECT_EQ(s.tokens, 2'000);
  // rpm 2 (or anything whose share is below 2 requests): exact, whatever the tpm.
  EXPECT_FALSE(ratelimit::lease_size(limits_of(2, 1'000'000), fraction_policy(0.5)).leased());
  EXPECT_FALSE(ratelimit::lease_size(limits_of(19, std::nullopt), fraction_policy(0.1)).leased());
  EXPECT_EQ(ratelimit::lease_size(limits_of(20, std::nullopt), fraction_policy(0.1)).requests, 2);
  // A tpm-only key whose share rounds to no token is not leased either.
  EXPECT_FALSE(ratelimit::lease_size(limits_of(std::nullopt, 5), fraction_policy(0.1)).leased());
}

// A grant as the script makes it: rpm 100, lease of 10 counted at second 1000, Redis' clock at
// 1000.250 s, the window then holding 30 requests in all (20 from elsewhere, our 10).
LeaseGrant grant_at_1000_250() {
  LeaseGrant g;
  g.bucket_sec = 1000;
  g.now_ms = 1'000'250;
  g.requests = 10;
  g.tokens = 0;
  g.request_sum = 30;
  g.request_reset_ms = 60'750;
  return g;
}

TEST(LocalLease, SpendsTheGrantWithExactRemainingForThisReplicaThenAsksAgain) {
  const auto t0 = LocalLease::Clock::time_point{} + std::chrono::hours(1);
  const KeyLimits limits = limits_of(100, std::nullopt);
  LocalLease lease;
  EXPECT_FALSE(lease.try_spend(limits, 0, t0)) << "no lease yet";
  lease.install(grant_at_1000_250(), limits, t0);
  Admission first = lease.spend_granted(0, t0);
  EXPECT_TRUE(first.allowed);
  EXPECT_EQ(first.bucket_sec, 1000);
  ASSERT_TRUE(first.requests);
  EXPECT_EQ(first.requests->limit, 100);
  EXPECT_EQ(first.requests->remaining, 100 - 21) << "30 counted, 9 of them still ours";
  EXPECT_EQ(first.requests->reset_ms, 60'750);
  EXPECT_FALSE(first.tokens);
  for (int i = 2; i <= 10; ++i) {
    auto a = lease.try_spend(limits, 0, t0 + std::chrono::milliseconds(100));
    ASSERT_TRUE(a) << i;
    EXPECT_EQ(a->requests->remaining, 100 - 20 - i);
    EXPECT_EQ(a->requests->reset_ms, 60'650);
    EXPECT_EQ(a->bucket_sec, 1000);
  }
  EXPECT_FALSE(lease.try_spend(limits, 0, t0 + std::chrono::milliseconds(100))) << "spent";
  EXPECT_FALSE(lease.end()) << "nothing left to give back";
}

TEST(LocalLease, EndsWithRedisSecondMeasuredFromWhenTheCallWasSent) {
  const auto sent = LocalLease::Clock::time_point{} + std::chrono::hours(1);
  const KeyLimits limits = limits_of(100, std::nullopt);
  LocalLease lease;
  lease.install(grant_at_1000_250(), limits, sent);  // 750 ms of second 1000 left
  (void)lease.spend_granted(0, sent);
  EXPECT_TRUE(lease.try_spend(limits, 0, sent + std::chrono::milliseconds(749)));
  EXPECT_FALSE(lease.expired(sent + std::chrono::milliseconds(749)));
  EXPECT_TRUE(lease.expired(sent + std::chrono::milliseconds(750)));
  EXPECT_FALSE(lease.try_spend(limits, 0, sent + std::chrono::milliseconds(750)));
  // The rest goes back to the second it was counted in.
  auto rest = lease.end();
  ASSERT_TRUE(rest);
  EXPECT_EQ(rest->sec, 1000);
  EXPECT_EQ(rest->requests, -8);
  EXPECT_EQ(rest->tokens, 0);
  EXPECT_FALSE(lease.held());
  EXPECT_FALSE(lease.end()) << "given back once";
}

TEST(LocalLease, ALeaseForOtherLimitsIsNotSpent) {
  const auto t0 = LocalLease::Clock::time_point{} + std::chrono::hours(1);
  LocalLease lease;
  lease.install(grant_at_1000_250(), limits_of(100, std::nullopt), t0);
  (void)lease.spend_granted(0, t0);
  EXPECT_FALSE(lease.try_spend(limits_of(50, std::nullopt), 0, t0)) << "rpm changed by a reload";
  EXPECT_FALSE(lease.try_spend(limits_of(100, 1000), 0, t0)) << "a tpm added";
  EXPECT_TRUE(lease.try_spend(limits_of(100, std::nullopt), 0, t0));
}

TEST(LocalLease, TokensAreSpentByCostAndARequestThatDoesNotFitAsksRedis) {
  const auto t0 = LocalLease::Clock::time_point{} + std::chrono::hours(1);
  const KeyLimits limits = limits_of(1000, 100'000);
  LeaseGrant g;
  g.bucket_sec = 50;
  g.now_ms = 50'000;  // the first millisecond: a whole second to spend it
  g.requests = 10;
  g.tokens = 1'500 + 4'000;  // the trigger's 1500 and 4000 more
  g.request_sum = 10;
  g.token_sum = 5'500;
  g.request_reset_ms = g.token_reset_ms = 61'000;
  LocalLease lease;
  lease.install(g, limits, t0);
  Admission a = lease.spend_granted(1'500, t0);
  ASSERT_TRUE(a.tokens);
  EXPECT_EQ(a.tokens->remaining, 100'000 - 1'500);
  EXPECT_EQ(lease.tokens_left(), 4'000);
  auto b = lease.try_spend(limits, 3'000, t0);
  ASSERT_TRUE(b);
  EXPECT_EQ(b->tokens->remaining, 100'000 - 4'500);
  EXPECT_FALSE(lease.try_spend(limits, 1'001, t0)) << "1000 tokens left";
  EXPECT_TRUE(lease.try_spend(limits, 1'000, t0));
  EXPECT_EQ(lease.requests_left(), 7);
  auto rest = lease.end();
  ASSERT_TRUE(rest);
  EXPECT_EQ(rest->requests, -7);
  EXPECT_EQ(rest->tokens, 0);
}

TEST(PendingDeltas, MergesPerSecondDropsSecondsOutOfTheWindowAndEmptiesWhenTaken) {
  PendingDeltas p;
  p.add({100, 0, 0});
  EXPECT_TRUE(p.empty()) << "a zero delta is nothing to send";
  p.add({100, 0, 250});
  p.add({99, -3, -40});
  p.add({100, -2, -50});
  EXPECT_EQ(p.size(), 2u);
  p.add({100 + ratelimit::kWindowBuckets - 1, 0, 7});  // 99 is now out of the window, 100 not
  auto all = p.take();
  ASSERT_EQ(all.size(), 2u);
  EXPECT_EQ(all[0].sec, 100);
  EXPECT_EQ(all[0].requests, -2);
  EXPECT_EQ(all[0].tokens, 200);
  EXPECT_EQ(all[1].sec, 160);
  EXPECT_TRUE(p.empty());
  EXPECT_TRUE(p.take().empty());
}

net::Reply integer_array(std::initializer_list<long long> values) {
  net::Reply r;
  r.type = REDIS_REPLY_ARRAY;
  for (long long v : values) {
    net::Reply e;
    e.type = REDIS_REPLY_INTEGER;
    e.integer = v;
    r.elements.push_back(e);
  }
  return r;
}

TEST(DecodeAdmission, TwelveIntegersWithTheGrantAndOldNineElementRepliesAreRefused) {
  const KeyLimits limits = limits_of(100, 10'000);
  LeaseGrant g;
  auto a = net::decode_admission(
      integer_array({1, 0, 0, 0, 30, 4'000, 60'750, 60'750, 1000, 1'000'250, 10, 3'000}), limits,
      &g);
  ASSERT_TRUE(a);
  EXPECT_TRUE(a->allowed);
  EXPECT_EQ(a->bucket_sec, 1000);
  EXPECT_EQ(g.bucket_sec, 1000);
  EXPECT_EQ(g.now_ms, 1'000'250);
  EXPECT_EQ(g.requests, 10);
  EXPECT_EQ(g.tokens, 3'000);
  EXPECT_EQ(g.request_sum, 30);
  EXPECT_EQ(g.token_sum, 4'000);
  EXPECT_EQ(g.request_reset_ms, 60'750);
  // Sums a confused server sends are clamped where the lease's arithmetic stays defined.
  a = net::decode_admission(
      integer_array({1, 0, 0, 0, std::numeric_limits<long long>::min(),
                     std::numeric_limits<long long>::max(), -5, 0, 0, 0, 1, 1}),
      limits, &g);
  ASSERT_TRUE(a);
  EXPECT_EQ(g.request_sum, 0);
  EXPECT_EQ(g.token_sum, 1LL << 50);
  EXPECT_EQ(g.request_reset_ms, 0);
  EXPECT_FALSE(net::decode_admission(integer_array({1, 0, 0, 0, 1, 0, 0, 0, 1000}), limits));
}

}  // namespace
}  // namespace llmgw
