// The egress proxy's configuration: its URL, NO_PROXY matching in every form, and which proxy
// the environment gives an upstream.
#include <gtest/gtest.h>

#include "llm_gateway/config/egress.hpp"
#include "test_support.hpp"

namespace llmgw::config {
namespace {

TEST(NoProxy, Domains) {
  // "example.com": itself and its subdomains, on a label boundary.
  EXPECT_TRUE(no_proxy_matches("example.com", "example.com", 443, false));
  EXPECT_TRUE(no_proxy_matches("example.com", "api.example.com", 443, false));
  EXPECT_FALSE(no_proxy_matches("example.com", "badexample.com", 443, false));
  // ".example.com": subdomains only.
  EXPECT_TRUE(no_proxy_matches(".example.com", "a.b.example.com", 443, false));
  EXPECT_FALSE(no_proxy_matches(".example.com", "example.com", 443, false));
  // Case-insensitive, spaces around entries, empty entries ignored.
  EXPECT_TRUE(no_proxy_matches(" foo.test , ,EXAMPLE.com ", "Api.Example.COM", 443, false));
  EXPECT_FALSE(no_proxy_matches("", "example.com", 443, false));
  EXPECT_TRUE(no_proxy_matches("*", "anything.at.all", 1, false));
  EXPECT_TRUE(no_proxy_matches("localhost", "localhost", 8443, false));
}

TEST(NoProxy, PortsLimitAnEntry) {
  EXPECT_TRUE(no_proxy_matches("example.com:8443", "api.example.com", 8443, false));
  EXPECT_FALSE(no_proxy_matches("example.com:8443", "api.example.com", 443, false));
  EXPECT_TRUE(no_proxy_matches("[::1]:8080", "::1", 8080, true));
  EXPECT_FALSE(no_proxy_matches("[::1]:8080", "::1", 8081, true));
  EXPECT_FALSE(no_proxy_matches("example.com:notaport", "example.com", 443, false));
}

TEST(NoProxy, IpLiteralsAndCidrMatchIpHostsOnly) {
  EXPECT_TRUE(no_proxy_matches("10.1.2.3", "10.1.2.3", 443, true));
  EXPECT_FALSE(no_proxy_matches("10.1.2.3", "10.1.2.4", 443, true));
  EXPECT_TRUE(no_proxy_matches("10.0.0.0/8", "10.200.3.4", 443, true));
  EXPECT_FALSE(no_proxy_matches("10.0.0.0/8", "11.0.0.1", 443, true));
  EXPECT_TRUE(no_proxy_matches("192.168.1.0/24", "192.168.1.77", 80, true));
  EXPECT_FALSE(no_proxy_matches("192.168.1.0/24", "192.168.2.1", 80, true));
  EXPECT_TRUE(no_proxy_matches("fd00::/8", "fd12:3456::1", 443, true));
  EXPECT_TRUE(no_proxy_matches("::1", "::1", 443, true));
  // An IP entry never matches a host name, and a domain never matches an IP literal.
  EXPECT_FALSE(no_proxy_matches("127.0.0.1", "localhost", 443, false));
  EXPECT_FALSE(no_proxy_matches("0.0.1", "10.0.0.1", 443, true));
  // Malformed CIDR: no match.
  EXPECT_FALSE(no_proxy_matches("10.0.0.0/99", "10.0.0.1", 443, true));
}

TEST(ProxyUrl, CredentialsSchemeAndPort) {
  std::string error;
  auto p = parse_proxy_url("http://corp%5Cuser:p%40ss@proxy.corp:3128", error);
  ASSERT_TRUE(p) << error;
  EXPECT_FALSE(p->tls);
  EXPECT_EQ(p->host, "proxy.corp");
  EXPECT_EQ(p->port, 3128);
  EXPECT_EQ(p->authorization, "Basic Y29ycFx1c2VyOnBAc3M=");  // corp\user:p@ss
  EXPECT_EQ(p->display(), "http://proxy.corp:3128");
  auto d = parse_proxy_url("http://proxy.corp", error);
  ASSERT_TRUE(d);
  EXPECT_EQ(d->port, 80);
  EXPECT_TRUE(d->authorization.empty());
  auto s = parse_proxy_url("https://[::1]", error);
  ASSERT_TRUE(s);
  EXPECT_TRUE(s->tls);
  EXPECT_EQ(s->display(), "https://[::1]:443");
  EXPECT_FALSE(parse_proxy_url("socks5://proxy:1080", error));
  EXPECT_FALSE(parse_proxy_url("proxy.corp:3128", error));
}

TEST(ProxyFromEnvironment, LowercaseWinsAndNoProxyExcludes) {
  auto env = test::fake_env({{"HTTPS_PROXY", "http://upper:1"},
                             {"https_proxy", "http://lower:2"},
                             {"HTTP_PROXY", "http://plain:3"},
                             {"NO_PROXY", "internal.corp"},
                             {"no_proxy", "excluded.corp"}});
  EXPECT_EQ(proxy_url_from_env(env, true, "api.openai.com", 443, false), "http://lower:2");
  EXPECT_EQ(proxy_url_from_env(env, false, "api.openai.com", 80, false), "http://plain:3");
  EXPECT_EQ(proxy_url_from_env(env, true, "x.excluded.corp", 443, false), std::nullopt);
  // The lowercase no_proxy wins: internal.corp is not excluded.
  EXPECT_EQ(proxy_url_from_env(env, true, "internal.corp", 443, false), "http://lower:2");
  EXPECT_EQ(proxy_url_from_env(test::fake_env(), true, "api.openai.com", 443, false), std::nullopt);
}

TEST(ProxyConfig, UpstreamSettingOverridesTheEnvironment) {
  auto env = test::fake_env(
      {{"HTTPS_PROXY", "http://user:pw@proxy.corp:3128"}, {"NO_PROXY", "*.nothing"}});
  auto cfg = test::load_ok(R"(upstreams:
  env: {provider: azure, base_url: "https://a.openai.azure.com", api_key: k}
  none: {provider: azure, base_url: "https://b.openai.azure.com", api_key: k, proxy: none}
  own: {provider: azure, base_url: "https://c.openai.azure.com", api_key: k, proxy: "http://other:8080"}
routes: [{match: "*", upstream: env}]
)",
                           env);
  ASSERT_TRUE(cfg);
  ASSERT_TRUE(cfg->upstreams[0].proxy);
  EXPECT_EQ(cfg->upstreams[0].proxy->display(), "http://proxy.corp:3128");
  EXPECT_FALSE(cfg->upstreams[1].proxy);
  ASSERT_TRUE(cfg->upstreams[2].proxy);
  EXPECT_EQ(cfg->upstreams[2].proxy->host, "other");
  const auto r = load_config_text(
      "upstreams:\n  a: {provider: azure, base_url: 'https://a.openai.azure.com', api_key: k, "
      "proxy: 'ftp://x'}\nroutes: [{match: '*', upstream: a}]\n",
      "t.yaml", test::fake_env());
  ASSERT_FALSE(r.problems.empty());
  EXPECT_NE(test::problems_text(r).find("proxy must be an http"), std::string::npos)
      << test::problems_text(r);
}

}  // namespace
}  // namespace llmgw::config
