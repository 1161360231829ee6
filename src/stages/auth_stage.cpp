#include "llm_gateway/stages/auth_stage.hpp"
#include "llm_gateway/translate/json_scan.hpp"

#include <openssl/crypto.h>
#include <openssl/evp.h>

#include <boost/beast/core/string.hpp>
#include <memory>

#include "llm_gateway/routing/glob.hpp"

namespace llmgw {
namespace http = boost::beast::http;

bool key_allows_model(const config::ClientKey& key, std::string_view model) {
  if (key.models.empty()) return true;
  for (const auto& pattern : key.models) {
    if (glob_match(pattern, model)) return true;
  }
  return false;
}

AuthStage::AuthStage(const config::Config& cfg)
    : cfg_(cfg), sha256_(EVP_MD_fetch(nullptr, "SHA256", nullptr)) {}

AuthStage::~AuthStage() {
  EVP_MD_free(sha256_);
}

namespace {
struct DigestContextFree {
  void operator()(EVP_MD_CTX* ctx) const { EVP_MD_CTX_free(ctx); }
};
}  // namespace

void AuthStage::sha256(std::string_view data, config::Sha256& out) const {
  const EVP_MD* md = sha256_ ? static_cast<const EVP_MD*>(sha256_) : EVP_sha256();
  // One digest context per thread, reused: EVP_Digest makes and frees one (and takes a reference
  // on the algorithm) per call, which cost more than the hash of a key itself.
  thread_local std::unique_ptr<EVP_MD_CTX, DigestContextFree> ctx(EVP_MD_CTX_new());
  unsigned int len = 0;
  if (!ctx || EVP_DigestInit_ex2(ctx.get(), md, nullptr) != 1 ||
      EVP_DigestUpdate(ctx.get(), data.data(), data.size()) != 1 ||
      EVP_DigestFinal_ex(ctx.get(), out.data(), &len) != 1 || len != out.size()) {
    // Out of memory inside OpenSSL: the one-shot call, whose failure leaves a digest that
    // matches no key (zeros are not a key's digest unless SHA-256 is broken).
    if (EVP_Digest(data.data(), data.size(), out.data(), &len, md, nullptr) != 1) out.fill(0);
  }
}

std::string_view AuthStage::credential(const HeaderList& headers) {
  if (auto a = headers.find(http::field::authorization); a != headers.end()) {
    std::string_view v = a->value();
    // The scheme name is case-insensitive (RFC 9110 §11.1).
    if (v.size() > 7 && boost::beast::iequals(v.substr(0, 7), "bearer ")) {
      v.remove_prefix(7);
      while (!v.empty() && v.front() == ' ') v.remove_prefix(1);
      return v;
    }
  }
  if (auto k = headers.find("api-key"); k != headers.end()) return k->value();
  return {};
}

Verdict AuthStage::on_request_headers(RequestContext& ctx) {
  if (cfg_.keys.empty()) return Verdict::proceed;  // anonymous: no client keys configured
  const std::string_view presented = credential(*ctx.headers);
  if (presented.empty()) {
    // Without a secret, a verified client certificate (mutual TLS) can name the key.
    if (ctx.client_cert_sha256) {
      const config::Sha256& cert = *ctx.client_cert_sha256;
      for (std::size_t i = 0; i < cfg_.keys.size(); ++i) {
        const auto& want = cfg_.keys[i].client_cert_sha256;
        if (want && CRYPTO_memcmp(want->data(), cert.data(), cert.size()) == 0) {
          ctx.key = &cfg_.keys[i];
          ctx.key_index = i;
          return Verdict::proceed;
        }
      }
      ctx.reply = error_reply(401, "invalid_request_error", "invalid_api_key", std::nullopt,
                              "No key is configured for this client certificate, and no API key "
                              "was sent ('Authorization: Bearer <key>' or 'api-key: <key>').");
      return Verdict::respond;
    }
    ctx.reply = error_reply(401, "invalid_request_error", "invalid_api_key", std::nullopt,
                            "You didn't provide an API key. Send it as 'Authorization: Bearer "
                            "<key>' or 'api-key: <key>'.");
    return Verdict::respond;
  }
  config::Sha256 digest{};
  sha256(presented, digest);
  // Every digest is compared, in constant time, so the time taken says nothing about which
  // (or whether any) key nearly matched.
  const config::ClientKey* found = nullptr;
  std::size_t found_index = 0;
  for (std::size_t i = 0; i < cfg_.keys.size(); ++i) {
    if (CRYPTO_memcmp(digest.data(), cfg_.keys[i].digest.data(), digest.size()) == 0 &&
        cfg_.keys[i].has_secret) {
      found = &cfg_.keys[i];
      found_index = i;
    }
  }
  if (!found) {
    ctx.reply = error_reply(401, "invalid_request_error", "invalid_api_key", std::nullopt,
                            "Incorrect API key provided.");
    return Verdict::respond;
  }
  ctx.key = found;
  ctx.key_index = found_index;
  return Verdict::proceed;
}

namespace {
LocalReply not_allowed(const config::ClientKey& key, std::string_view model) {
  return error_reply(403, "invalid_request_error", "model_not_allowed", "model",
                     "The key '" + key.name + "' may not use the model '" +
                         std::string(json::truncate_chars(model, 256)) + "'.");
}
}  // namespace

Verdict AuthorizeStage::on_request_headers(RequestContext& ctx) {
  // The deployment an Azure-style path addresses is the model, whatever the body says.
  const auto& named = ctx.path.path_model;
  if (ctx.key && named && !named->empty() && !key_allows_model(*ctx.key, *named)) {
    ctx.reply = not_allowed(*ctx.key, *named);
    return Verdict::respond;
  }
  return Verdict::proceed;
}

Verdict AuthorizeStage::on_request(RequestContext& ctx) {
  if (ctx.key && ctx.model && !key_allows_model(*ctx.key, *ctx.model)) {
    ctx.reply = not_allowed(*ctx.key, *ctx.model);
    return Verdict::respond;
  }
  return Verdict::proceed;
}

}  // namespace llmgw
