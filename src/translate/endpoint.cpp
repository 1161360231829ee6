#include "llm_gateway/translate/endpoint.hpp"

namespace llmgw {

std::string_view endpoint_name(Endpoint e) {
  switch (e) {
    case Endpoint::chat_completions: return "chat_completions";
    case Endpoint::completions: return "completions";
    case Endpoint::embeddings: return "embeddings";
    case Endpoint::images_generations: return "images_generations";
    case Endpoint::images_edits: return "images_edits";
    case Endpoint::audio_transcriptions: return "audio_transcriptions";
    case Endpoint::audio_translations: return "audio_translations";
    case Endpoint::audio_speech: return "audio_speech";
    case Endpoint::responses: return "responses";
    case Endpoint::files: return "files";
    case Endpoint::batches: return "batches";
    case Endpoint::models: return "models";
    case Endpoint::fine_tuning: return "fine_tuning";
    case Endpoint::assistants: return "assistants";
    case Endpoint::other: return "other";
  }
  return "other";
}

std::optional<Endpoint> endpoint_from_name(std::string_view name) {
  for (Endpoint e : kAllEndpoints) {
    if (endpoint_name(e) == name) return e;
  }
  return std::nullopt;
}

}  // namespace llmgw
