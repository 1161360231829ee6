#pragma once
// The OpenAI operations the gateway knows by name. The names double as metric labels, access-log
// values and the keys of an upstream's `api_versions` map, so they are part of the contract.
#include <optional>
#include <string_view>

namespace llmgw {

enum class Endpoint {
  chat_completions,
  completions,
  embeddings,
  images_generations,
  images_edits,
  audio_transcriptions,
  audio_translations,
  audio_speech,
  responses,
  files,
  batches,
  models,
  fine_tuning,
  assistants,  // also threads and vector_stores: the Assistants API family
  other,
};

inline constexpr Endpoint kAllEndpoints[] = {
    Endpoint::chat_completions,
    Endpoint::completions,
    Endpoint::embeddings,
    Endpoint::images_generations,
    Endpoint::images_edits,
    Endpoint::audio_transcriptions,
    Endpoint::audio_translations,
    Endpoint::audio_speech,
    Endpoint::responses,
    Endpoint::files,
    Endpoint::batches,
    Endpoint::models,
    Endpoint::fine_tuning,
    Endpoint::assistants,
    Endpoint::other,
};

std::string_view endpoint_name(Endpoint e);
std::optional<Endpoint> endpoint_from_name(std::string_view name);

}  // namespace llmgw
