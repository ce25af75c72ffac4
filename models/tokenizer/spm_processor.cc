// No Abseil header may be included here (see spm_processor.h).
#include "models/tokenizer/spm_processor.h"

#include <sentencepiece_processor.h>

namespace sieve::models {

struct SpmProcessor::Impl {
  sentencepiece::SentencePieceProcessor processor;
};

SpmProcessor::SpmProcessor(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
SpmProcessor::~SpmProcessor() = default;

std::unique_ptr<SpmProcessor> SpmProcessor::load(std::string_view serialized_model,
                                                 std::string* error) {
  auto impl = std::make_unique<Impl>();
  const sentencepiece::util::Status status =
      impl->processor.LoadFromSerializedProto(serialized_model);
  if (!status.ok()) {
    *error = status.ToString();
    return nullptr;
  }
  return std::unique_ptr<SpmProcessor>(new SpmProcessor(std::move(impl)));
}

void SpmProcessor::encode(std::string_view text, std::vector<int32_t>* ids) const {
  std::vector<int> pieces;
  // Encode fails only for an unloaded model, which load() rules out.
  (void)impl_->processor.Encode(text, &pieces);
  ids->insert(ids->end(), pieces.begin(), pieces.end());
}

}  // namespace sieve::models
