// The end of a non-stream response too long for the account stage to keep whole (more than
// 1 MiB: an embeddings answer for a large batch). The stage keeps only the last 64 KiB and
// searches it backwards for the "usage" member (usage_from_tail in account_stage.cpp), so the
// search starts anywhere, inside strings, in a cut escape or a cut number. The input is the last
// bytes of the body; 1 MiB of white space comes before it. (A separate target from `response`:
// the megabyte each run copies makes it about a hundred times slower.)
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

#include "account_run.hpp"
#include "fuzz_support.hpp"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  // More than the stage's whole-body limit (account_stage.cpp, kMaxJsonBody).
  static const std::string padding(1024 * 1024 + 1, ' ');
  const llmgw::fuzz::AccountRun run("application/json", 200, false,
                                    {padding, llmgw::fuzz::as_text(data, size)},
                                    /*record_delivered=*/false);
  // Nothing to compare with: the padding holds no usage, so whatever is found came from the
  // input. The sanitizers watch the search.
  (void)run;
  return 0;
}
