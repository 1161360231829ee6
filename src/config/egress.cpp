#include "llm_gateway/config/egress.hpp"

#include <arpa/inet.h>
#include <openssl/evp.h>

#include <algorithm>
#include <array>
#include <boost/url/parse.hpp>
#include <cctype>
#include <charconv>
#include <cstring>

namespace llmgw::config {

namespace {

std::string lower(std::string_view s) {
  std::string out(s);
  std::transform(out.begin(), out.end(), out.begin(),
                 [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
  return out;
}

std::string_view trim(std::string_view s) {
  while (!s.empty() && (s.front() == ' ' || s.front() == '\t')) s.remove_prefix(1);
  while (!s.empty() && (s.back() == ' ' || s.back() == '\t')) s.remove_suffix(1);
  return s;
}

// An IPv4 or IPv6 literal as 16 bytes (IPv4 mapped), with its family.
struct Ip {
  std::array<unsigned char, 16> bytes{};
  bool v4 = false;
};

std::optional<Ip> parse_ip(std::string_view text) {
  std::string s(text);
  if (s.size() > 2 && s.front() == '[' && s.back() == ']') s = s.substr(1, s.size() - 2);
  Ip ip;
  in_addr a4{};
  if (inet_pton(AF_INET, s.c_str(), &a4) == 1) {
    ip.v4 = true;
    std::memcpy(ip.bytes.data() + 12, &a4, 4);
    return ip;
  }
  in6_addr a6{};
  if (inet_pton(AF_INET6, s.c_str(), &a6) == 1) {
    std::memcpy(ip.bytes.data(), &a6, 16);
    return ip;
  }
  return std::nullopt;
}

bool in_cidr(const Ip& ip, const Ip& net, unsigned prefix) {
  if (ip.v4 != net.v4) return false;
  unsigned bits = net.v4 ? prefix + 96 : prefix;
  for (std::size_t i = 0; i < 16 && bits > 0; ++i) {
    const unsigned take = std::min(bits, 8u);
    const unsigned char mask = static_cast<unsigned char>(0xFF << (8 - take));
    if ((ip.bytes[i] & mask) != (net.bytes[i] & mask)) return false;
    bits -= take;
  }
  return true;
}

bool entry_matches(std::string_view entry, std::string_view host, std::uint16_t port,
                   bool host_is_ip) {
  if (entry == "*") return true;
  // A trailing ":port" (not part of an IPv6 literal or a CIDR) limits the entry to that port.
  std::optional<std::uint16_t> only_port;
  const std::size_t colon = entry.rfind(':');
  const bool bracketed = entry.starts_with('[');
  const bool bare_ipv6 = !bracketed && std::count(entry.begin(), entry.end(), ':') > 1;
  if (colon != std::string_view::npos && !bare_ipv6 &&
      (!bracketed || (colon > 0 && entry[colon - 1] == ']'))) {
    std::uint16_t p = 0;
    const std::string_view digits = entry.substr(colon + 1);
    auto [end, ec] = std::from_chars(digits.data(), digits.data() + digits.size(), p);
    if (ec != std::errc() || end != digits.data() + digits.size()) return false;
    only_port = p;
    entry = entry.substr(0, colon);
  }
  if (only_port && *only_port != port) return false;
  if (bracketed && entry.size() > 2 && entry.back() == ']')
    entry = entry.substr(1, entry.size() - 2);

  // IP literals and CIDR ranges: IP-literal hosts only.
  const std::size_t slash = entry.find('/');
  if (slash != std::string_view::npos || parse_ip(entry)) {
    if (!host_is_ip) return false;
    const auto ip = parse_ip(host);
    const auto net = parse_ip(entry.substr(0, slash));
    if (!ip || !net) return false;
    if (slash == std::string_view::npos) return ip->bytes == net->bytes && ip->v4 == net->v4;
    unsigned prefix = 0;
    const std::string_view digits = entry.substr(slash + 1);
    auto [end, ec] = std::from_chars(digits.data(), digits.data() + digits.size(), prefix);
    if (ec != std::errc() || end != digits.data() + digits.size() ||
        prefix > (net->v4 ? 32u : 128u))
      return false;
    return in_cidr(*ip, *net, prefix);
  }
  if (host_is_ip) return false;
  // Domains: ".example.com" its subdomains; "example.com" itself too. On a label boundary.
  const bool subdomains_only = entry.starts_with('.');
  if (subdomains_only) entry.remove_prefix(1);
  if (entry.empty()) return false;
  if (host == entry) return !subdomains_only;
  return host.size() > entry.size() && host.ends_with(entry) &&
         host[host.size() - entry.size() - 1] == '.';
}

std::string base64(std::string_view in) {
  std::string out(4 * ((in.size() + 2) / 3) + 1, '\0');
  const int n = EVP_EncodeBlock(reinterpret_cast<unsigned char*>(out.data()),
                                reinterpret_cast<const unsigned char*>(in.data()),
                                static_cast<int>(in.size()));
  out.resize(static_cast<std::size_t>(n));
  return out;
}

}  // namespace

std::string EgressProxy::display() const {
  const bool v6 = host.find(':') != std::string::npos;
  return std::string(tls ? "https://" : "http://") + (v6 ? "[" + host + "]" : host) + ":" +
         std::to_string(port);
}

std::optional<EgressProxy> parse_proxy_url(std::string_view url, std::string& error) {
  auto u = boost::urls::parse_absolute_uri(url);
  if (!u) {
    error = "is not an absolute URL";
    return std::nullopt;
  }
  EgressProxy p;
  const std::string scheme = lower(u->scheme());
  if (scheme == "https") {
    p.tls = true;
  } else if (scheme != "http") {
    error = "must be an http:// or https:// URL";
    return std::nullopt;
  }
  p.host = std::string(u->encoded_host_address());
  if (p.host.empty()) {
    error = "has no host";
    return std::nullopt;
  }
  p.host_is_ip = u->host_type() == boost::urls::host_type::ipv4 ||
                 u->host_type() == boost::urls::host_type::ipv6;
  p.port = u->has_port() ? u->port_number() : (p.tls ? 443 : 80);
  if (p.port == 0) {
    error = "has an invalid port";
    return std::nullopt;
  }
  if (u->has_userinfo()) {
    const std::string user = u->user();
    const std::string password = u->password();
    p.authorization = "Basic " + base64(user + ":" + password);
  }
  return p;
}

bool no_proxy_matches(std::string_view no_proxy, std::string_view host, std::uint16_t port,
                      bool host_is_ip) {
  const std::string h = lower(host);
  const std::string list = lower(no_proxy);
  std::string_view rest = list;
  while (!rest.empty()) {
    const std::size_t comma = rest.find(',');
    const std::string_view entry = trim(rest.substr(0, comma));
    rest = comma == std::string_view::npos ? std::string_view() : rest.substr(comma + 1);
    if (!entry.empty() && entry_matches(entry, h, port, host_is_ip)) return true;
  }
  return false;
}

std::optional<std::string> proxy_url_from_env(const EnvLookup& env, bool tls, std::string_view host,
                                              std::uint16_t port, bool host_is_ip) {
  auto first_set = [&](const char* a, const char* b) -> std::optional<std::string> {
    auto v = env(a);
    if (v && !v->empty()) return v;
    v = env(b);
    if (v && !v->empty()) return v;
    return std::nullopt;
  };
  const auto url =
      tls ? first_set("https_proxy", "HTTPS_PROXY") : first_set("http_proxy", "HTTP_PROXY");
  if (!url) return std::nullopt;
  if (auto no_proxy = first_set("no_proxy", "NO_PROXY")) {
    if (no_proxy_matches(*no_proxy, host, port, host_is_ip)) return std::nullopt;
  }
  return url;
}

}  // namespace llmgw::config
