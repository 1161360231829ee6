// The multipart/form-data reader (audio and image uploads): it finds the model field in a body
// of up to the request size limit, with a boundary the client chooses. The input's first line is
// the boundary parameter as the client writes it (quoted or not, with more parameters if the
// fuzzer likes); the rest is the body.
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

#include "fuzz_support.hpp"
#include "llm_gateway/translate/request_facts.hpp"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  using llmgw::fuzz::require;
  const auto [boundary_param, body] =
      llmgw::fuzz::split_first_line(llmgw::fuzz::as_text(data, size));
  const std::string content_type = "multipart/form-data; boundary=" + std::string(boundary_param);

  const std::string_view boundary = llmgw::multipart_boundary(content_type);
  require(llmgw::fuzz::within(boundary, content_type), "the boundary is a view of the header");

  const llmgw::BodyFacts f = llmgw::inspect_body(content_type, body);
  if (body.empty()) return 0;
  require(f.kind == llmgw::BodyKind::multipart, "multipart content type read as multipart");
  require(f.model_begin <= f.model_end && f.model_end <= body.size(), "model span inside the body");
  if (f.model) {
    // Translation replaces exactly this span with the upstream's model name.
    require(*f.model == body.substr(f.model_begin, f.model_end - f.model_begin),
            "the model span holds the model");
  }
  return 0;
}
