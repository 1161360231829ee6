// Runtime state that outlives a configuration snapshot is keyed by identity, never by position:
// UpstreamRegistry gives each snapshot its upstreams' pool slots and TLS contexts by name and
// connection settings, so a snapshot with upstreams reordered, added and removed reuses the pools
// (and TLS contexts) of the ones it kept.
#include <gtest/gtest.h>

#include "llm_gateway/net/io.hpp"
#include "test_support.hpp"

namespace llmgw {
namespace {

constexpr std::string_view kSnapshotA = R"(
upstreams:
  a: {provider: openai, base_url: "http://127.0.0.1:9001"}
  b: {provider: azure, base_url: "https://b.openai.azure.com", api_key: k}
  c: {provider: openai, base_url: "https://c.example.com"}
routes:
  - {match: "a-*", upstream: a}
  - {match: "b-*", upstream: b}
  - {match: "*", upstream: c}
)";

// c and a swapped places, b removed, d added; a's address is unchanged.
constexpr std::string_view kSnapshotB = R"(
upstreams:
  c: {provider: openai, base_url: "https://c.example.com"}
  d: {provider: openai, base_url: "http://127.0.0.1:9004"}
  a: {provider: openai, base_url: "http://127.0.0.1:9001"}
routes:
  - {match: "a-*", upstream: a}
  - {match: "*", upstream: c}
  - {match: "d-*", upstream: d}
)";

TEST(UpstreamRegistry, SnapshotsShareTheSlotsOfUpstreamsTheyBothHave) {
  auto a = test::load_ok(kSnapshotA);
  auto b = test::load_ok(kSnapshotB);
  ASSERT_TRUE(a && b);
  net::UpstreamRegistry registry(nullptr);
  const auto bound_a = registry.bind(*a);
  const auto bound_b = registry.bind(*b);
  ASSERT_EQ(bound_a.size(), 3u);
  ASSERT_EQ(bound_b.size(), 3u);
  // Each position holds its own upstream's slot.
  for (std::size_t i = 0; i < 3; ++i) {
    EXPECT_EQ(bound_a[i]->name, a->upstreams[i].name);
    EXPECT_EQ(bound_b[i]->name, b->upstreams[i].name);
  }
  // a (0 -> 2) and c (2 -> 0) moved: the same slots, pools and TLS contexts.
  EXPECT_EQ(bound_b[2], bound_a[0]);
  EXPECT_EQ(bound_b[0], bound_a[2]);
  EXPECT_TRUE(bound_b[0]->tls);   // https
  EXPECT_FALSE(bound_b[2]->tls);  // http
  // d is new: a slot of its own, no other's pool.
  for (const auto& s : bound_a) EXPECT_NE(bound_b[1]->id, s->id);
  // Slot ids are distinct, so pools never mix.
  EXPECT_NE(bound_a[0]->id, bound_a[1]->id);
  EXPECT_NE(bound_a[1]->id, bound_a[2]->id);
}

TEST(UpstreamRegistry, ANewAddressUnderTheSameNameGetsANewPool) {
  auto a = test::load_ok(kSnapshotA);
  auto moved = test::load_ok(R"(
upstreams:
  a: {provider: openai, base_url: "http://127.0.0.1:9999"}
routes:
  - {match: "*", upstream: a}
)");
  ASSERT_TRUE(a && moved);
  net::UpstreamRegistry registry(nullptr);
  const auto first = registry.bind(*a);
  const auto second = registry.bind(*moved);
  EXPECT_NE(second[0]->id, first[0]->id);  // connections to the old address are never reused
  EXPECT_NE(net::upstream_identity(a->upstreams[0]), net::upstream_identity(moved->upstreams[0]));
}

}  // namespace
}  // namespace llmgw
