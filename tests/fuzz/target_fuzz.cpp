// Request targets: the path decides the operation, the Azure deployment, and so where the
// upstream credential goes. The input is a request line without the version: the method, one
// space, the target ("POST /openai/deployments/gpt-4o/chat/completions?api-version=x"); without a
// space the whole input is the target of a POST.
//
// Every function that reads a raw target is one entry of kTargetReaders, so a new one is one
// more line there.
#include <ostream>  // first: Boost 1.81 core/detail/string_view.hpp needs it but does not include it

#include <boost/beast/http/verb.hpp>
#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

#include "fuzz_support.hpp"
#include "llm_gateway/translate/request_facts.hpp"
#include "llm_gateway/translate/request_target.hpp"

namespace {

using llmgw::fuzz::require;
namespace http = boost::beast::http;

void check_classify(http::verb method, std::string_view target) {
  const llmgw::PathFacts f = llmgw::classify_path(method, target);
  require(llmgw::fuzz::within(f.query, target), "the query is a view of the target");
  require(f.op_path.size() <= target.size(), "the operation is part of the target");
  if (f.path_model) {
    require(f.format == llmgw::InboundFormat::azure_deployment, "a path model only under Azure");
    require(f.path_model->size() <= target.size(), "decoding never grows the deployment name");
  }
}

void check_percent(http::verb, std::string_view target) {
  const std::optional<std::string> decoded = llmgw::percent_decode(target);
  if (!decoded) return;
  require(decoded->size() <= target.size(), "decoding never grows the text");
  // Encoding one segment and decoding it again gives the segment back, whatever its bytes.
  const std::string encoded = llmgw::percent_encode_segment(*decoded);
  require(encoded.find('/') == std::string::npos, "an encoded segment has no '/'");
  require(llmgw::percent_decode(encoded) == decoded, "decode(encode(x)) == x");
}

// The properties the gateway relies on (README "Security"): an accepted target is a view of the
// input in origin-form, holds no dot-segment, no empty inner segment, no encoded separator, and
// names a deployment only as /openai/deployments/{name}/{op}; it classifies the same way again.
void check_request_target(http::verb method, std::string_view target) {
  const llmgw::TargetCheck c = llmgw::check_request_target(target);
  if (!c.error.empty()) return;
  const std::string_view origin = c.origin;
  require(origin == "/" || llmgw::fuzz::within(origin, target), "origin is a view of the target");
  require(!origin.empty() && origin.front() == '/', "origin-form");
  const std::string_view path = origin.substr(0, origin.find('?'));
  for (std::size_t i = 0; i < path.size(); ++i) {
    const auto c8 = static_cast<unsigned char>(path[i]);
    require(c8 > 0x20 && c8 < 0x7f, "only visible ASCII in an accepted path");
  }
  require(path.find("//") == std::string_view::npos, "no empty segment");
  require(path.find("/../") == std::string_view::npos && !path.ends_with("/..") &&
              path.find("/./") == std::string_view::npos && !path.ends_with("/."),
          "no dot-segment");
  const llmgw::TargetCheck again = llmgw::check_request_target(origin);
  require(again.error.empty() && again.origin == origin, "the origin passes as it is");
  const llmgw::PathFacts f = llmgw::classify_path(method, origin);
  if (f.path_model) {
    const std::string& d = *f.path_model;
    require(d.find('/') == std::string::npos && d != ".." && d != ".",
            "a deployment from the path is one plain segment");
  }
}

using TargetReader = void (*)(http::verb, std::string_view);
constexpr TargetReader kTargetReaders[] = {
    check_classify,
    check_percent,
    check_request_target,
};

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const std::string_view text = llmgw::fuzz::as_text(data, size);
  http::verb method = http::verb::post;
  std::string_view target = text;
  if (const std::size_t sp = text.find(' '); sp != std::string_view::npos) {
    method = http::string_to_verb(text.substr(0, sp));
    target = text.substr(sp + 1);
  }
  for (TargetReader read : kTargetReaders) read(method, target);
  return 0;
}
