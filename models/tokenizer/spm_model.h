#pragma once
// The fields of sentencepiece's ModelProto that Sieve reads and writes, with a minimal proto2
// wire-format reader and writer: Debian ships no sentencepiece_model.pb.h, and a GGUF "llama"
// vocabulary becomes a ModelProto in memory so that libsentencepiece, not a second hand-written
// algorithm, encodes it.

#include <string>
#include <string_view>
#include <vector>

#include "core/status.h"

namespace sieve::models {

struct SpmModel {
  // SentencePiece::Type (the same numbers as GGUF's tokenizer.ggml.token_type).
  enum PieceType {
    kNormal = 1,
    kUnknown = 2,
    kControl = 3,
    kUserDefined = 4,
    kUnused = 5,
    kByte = 6
  };
  struct Piece {
    std::string text;
    float score = 0.0f;
    int type = kNormal;
  };
  std::vector<Piece> pieces;
  int model_type = 1;  // TrainerSpec.ModelType: 1 unigram, 2 BPE, 3 word, 4 char
  bool byte_fallback = false;
  std::string normalizer_name;
  bool add_dummy_prefix = true;  // NormalizerSpec defaults
  bool remove_extra_whitespaces = true;
  bool escape_whitespaces = true;
};

// Reads the fields above from a serialized ModelProto (a tokenizer.model file's bytes); other
// fields are skipped. An error says what is malformed.
StatusOr<SpmModel> parse_spm_model(std::string_view bytes);

// A serialized ModelProto with the fields above, which libsentencepiece can load.
std::string serialize_spm_model(const SpmModel& model);

}  // namespace sieve::models
