// Server-side TLS for the gateway's listeners (see listener_tls.hpp).
#include "llm_gateway/net/listener_tls.hpp"

#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>

#include <boost/asio/error.hpp>
#include <boost/asio/ssl/error.hpp>
#include <boost/beast/core/error.hpp>
#include <stdexcept>
#include <string>

#include "llm_gateway/observability/metrics.hpp"

namespace llmgw::net {

namespace ssl = boost::asio::ssl;

namespace {

// TLS 1.2 suites of Mozilla's "intermediate" profile: ECDHE key exchange (forward secrecy) and
// AEAD ciphers only. TLS 1.3's own suites are all of that kind and stay at OpenSSL's defaults.
constexpr const char* kTls12Ciphers =
    "ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-RSA-AES128-GCM-SHA256:"
    "ECDHE-ECDSA-AES256-GCM-SHA384:ECDHE-RSA-AES256-GCM-SHA384:"
    "ECDHE-ECDSA-CHACHA20-POLY1305:ECDHE-RSA-CHACHA20-POLY1305";

// The gateway speaks HTTP/1.1 only. A client that offers ALPN without http/1.1 (h2 only) is
// refused with no_application_protocol (RFC 7301 §3.2) rather than left to fail on its first frame.
int select_alpn(SSL*, const unsigned char** out, unsigned char* outlen, const unsigned char* in,
                unsigned int inlen, void*) {
  static constexpr unsigned char kHttp11[] = {8, 'h', 't', 't', 'p', '/', '1', '.', '1'};
  unsigned char* selected = nullptr;
  if (SSL_select_next_proto(&selected, outlen, kHttp11, sizeof kHttp11, in, inlen) !=
      OPENSSL_NPN_NEGOTIATED)
    return SSL_TLSEXT_ERR_ALERT_FATAL;
  *out = selected;
  return SSL_TLSEXT_ERR_OK;
}

[[noreturn]] void fail(std::string_view where, const char* setting, const std::string& file,
                       const std::string& why) {
  throw std::runtime_error(std::string(where) + "." + setting + " '" + file + "': " + why);
}

std::string openssl_reason() {
  const unsigned long e = ERR_get_error();
  ERR_clear_error();
  if (e == 0) return "unusable";
  if (ERR_GET_LIB(e) == ERR_LIB_X509 && (ERR_GET_REASON(e) == X509_R_KEY_VALUES_MISMATCH ||
                                         ERR_GET_REASON(e) == X509_R_KEY_TYPE_MISMATCH))
    return "the key does not belong to the certificate";
  const char* reason = ERR_reason_error_string(e);
  return reason ? reason : "unusable";
}

}  // namespace

std::shared_ptr<ssl::context> make_listener_tls_context(const config::ListenerTls& tls,
                                                        std::string_view where) {
  auto ctx = std::make_shared<ssl::context>(ssl::context::tls_server);
  SSL_CTX* handle = ctx->native_handle();
  SSL_CTX_set_min_proto_version(handle, tls.tls13_only ? TLS1_3_VERSION : TLS1_2_VERSION);
  SSL_CTX_set_options(handle, SSL_OP_NO_COMPRESSION | SSL_OP_NO_RENEGOTIATION);
  // As nginx does: an idle keep-alive connection gives its record buffers back (about 34 KiB).
  SSL_CTX_set_mode(handle, SSL_MODE_RELEASE_BUFFERS);
  SSL_CTX_set_cipher_list(handle, kTls12Ciphers);
  SSL_CTX_set_alpn_select_cb(handle, select_alpn, nullptr);
  // Resumed sessions must carry the context they were verified in; without an id OpenSSL refuses
  // to resume any session of a context that verifies client certificates.
  static constexpr unsigned char kSessionContext[] = "llm-gateway";
  SSL_CTX_set_session_id_context(handle, kSessionContext, sizeof kSessionContext - 1);
  ERR_clear_error();

  if (SSL_CTX_use_certificate_chain_file(handle, tls.cert_file.c_str()) != 1)
    fail(where, "cert_file", tls.cert_file, openssl_reason());
  if (SSL_CTX_use_PrivateKey_file(handle, tls.key_file.c_str(), SSL_FILETYPE_PEM) != 1)
    fail(where, "key_file", tls.key_file, openssl_reason());
  if (SSL_CTX_check_private_key(handle) != 1)
    fail(where, "key_file", tls.key_file, "the key does not belong to the certificate");

  if (tls.client_auth != config::ClientAuth::none) {
    if (SSL_CTX_load_verify_locations(handle, tls.client_ca_file.c_str(), nullptr) != 1)
      fail(where, "client_ca_file", tls.client_ca_file, openssl_reason());
    // The CA names sent in the CertificateRequest, so a client with several certificates picks
    // the right one.
    STACK_OF(X509_NAME)* names = SSL_load_client_CA_file(tls.client_ca_file.c_str());
    if (!names) fail(where, "client_ca_file", tls.client_ca_file, "no CA certificate in it");
    SSL_CTX_set_client_CA_list(handle, names);
    int mode = SSL_VERIFY_PEER;
    if (tls.client_auth == config::ClientAuth::required) mode |= SSL_VERIFY_FAIL_IF_NO_PEER_CERT;
    SSL_CTX_set_verify(handle, mode, nullptr);
  } else {
    SSL_CTX_set_verify(handle, SSL_VERIFY_NONE, nullptr);
  }
  ERR_clear_error();
  return ctx;
}

namespace {
std::string_view failure_name(const boost::system::error_code& ec) {
  namespace asio_error = boost::asio::error;
  if (ec == boost::beast::error::timeout) return "timeout";
  if (ec == asio_error::eof || ec == asio_error::connection_reset ||
      ec == asio_error::broken_pipe || ec == ssl::error::stream_truncated ||
      ec == asio_error::operation_aborted)
    return "closed";
  if (ec.category() == asio_error::get_ssl_category()) {
    switch (ERR_GET_REASON(static_cast<unsigned long>(ec.value()))) {
      case SSL_R_HTTP_REQUEST:
      case SSL_R_HTTPS_PROXY_REQUEST: return "plain_http";
      case SSL_R_PEER_DID_NOT_RETURN_A_CERTIFICATE:
      case SSL_R_CERTIFICATE_VERIFY_FAILED:
      case SSL_R_NO_CERTIFICATES_RETURNED: return "client_certificate";
      case SSL_R_UNSUPPORTED_PROTOCOL:
      case SSL_R_WRONG_VERSION_NUMBER:
      case SSL_R_VERSION_TOO_LOW:
      case SSL_R_NO_PROTOCOLS_AVAILABLE: return "version";
      default: break;
    }
  }
  return "protocol";
}
}  // namespace

std::size_t handshake_failure_reason(const boost::system::error_code& ec) {
  const std::string_view name = failure_name(ec);
  const auto& names = observability::Metrics::kTlsHandshakeFailures;
  for (std::size_t i = 0; i < names.size(); ++i) {
    if (name == names[i]) return i;
  }
  return names.size() - 1;  // "protocol"
}

std::optional<config::Sha256> verified_peer_certificate_sha256(SSL* ssl) {
  if (SSL_get_verify_result(ssl) != X509_V_OK) return std::nullopt;
  X509* cert = SSL_get1_peer_certificate(ssl);
  if (!cert) return std::nullopt;
  config::Sha256 out{};
  unsigned int len = 0;
  const bool ok = X509_digest(cert, EVP_sha256(), out.data(), &len) == 1 && len == out.size();
  X509_free(cert);
  if (!ok) return std::nullopt;
  return out;
}

}  // namespace llmgw::net
