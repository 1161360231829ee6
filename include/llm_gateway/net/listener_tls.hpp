#pragma once
// TLS on the gateway's own listeners (server.tls, admin.tls): the server context a listener's
// handshakes use, what a failed handshake is counted as, and the client certificate's
// fingerprint that client keys can be matched by.
#include <ostream>  // first: Boost 1.81 core/detail/string_view.hpp needs it but does not include it

#include <boost/asio/ssl/context.hpp>
#include <boost/system/error_code.hpp>
#include <memory>
#include <optional>
#include <string_view>

#include "llm_gateway/config/config.hpp"

namespace llmgw::net {

// TLS 1.2 (or 1.3 only) with forward-secret AEAD ciphers, ALPN http/1.1, the certificate chain and
// key from the files, and client certificates checked against client_ca_file when client_auth
// asks for them. Throws std::runtime_error naming the setting and file (never their content) when
// a file is unusable or the key does not belong to the certificate. `where` is "server.tls" or
// "admin.tls".
std::shared_ptr<boost::asio::ssl::context> make_listener_tls_context(const config::ListenerTls& tls,
                                                                     std::string_view where);

// Which of Metrics::kTlsHandshakeFailures a failed handshake's error is (its index).
std::size_t handshake_failure_reason(const boost::system::error_code& ec);

// The SHA-256 of the verified client certificate (its DER), or nullopt without one.
std::optional<config::Sha256> verified_peer_certificate_sha256(SSL* ssl);

}  // namespace llmgw::net
