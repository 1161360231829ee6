#pragma once
#include "llm_gateway/pipeline/stage.hpp"

struct evp_md_st;  // OpenSSL's EVP_MD

namespace llmgw {

// Authenticate: with client keys configured, the request must present one (`Authorization:
// Bearer K` or `api-key: K`); it is compared in constant time against the stored SHA-256
// digests. It runs before anything else looks at the request, so a client without a valid key
// learns nothing. Without keys every request is anonymous (local sidecar mode).
class AuthStage final : public Stage {
 public:
  explicit AuthStage(const config::Config& cfg);
  ~AuthStage() override;
  std::string_view name() const override { return "authenticate"; }
  Verdict on_request_headers(RequestContext& ctx) override;

  // The credential a request presents, or "" (exposed for tests).
  static std::string_view credential(const HeaderList& headers);

 private:
  void sha256(std::string_view data, config::Sha256& out) const;

  const config::Config& cfg_;
  ::evp_md_st* sha256_ = nullptr;  // fetched once: an implicit fetch per request is costly
};

// Authorize: a key's `models` allow-list (globs), checked once the model is known: on the header
// for a deployment named in an Azure-style path (before the body is read), then on the model the
// request finally routes by. 403 model_not_allowed otherwise.
class AuthorizeStage final : public Stage {
 public:
  std::string_view name() const override { return "authorize"; }
  Verdict on_request_headers(RequestContext& ctx) override;
  Verdict on_request(RequestContext& ctx) override;
};

// True when `key` may use `model` (no allow-list, or a glob of it matches).
bool key_allows_model(const config::ClientKey& key, std::string_view model);

}  // namespace llmgw
