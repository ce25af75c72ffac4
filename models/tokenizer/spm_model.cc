#include "models/tokenizer/spm_model.h"

#include <cstdint>
#include <cstring>

namespace sieve::models {
namespace {

// Field numbers of sentencepiece_model.proto.
constexpr int kModelPieces = 1, kModelTrainerSpec = 2, kModelNormalizerSpec = 3;
constexpr int kPieceText = 1, kPieceScore = 2, kPieceType = 3;
constexpr int kTrainerModelType = 3, kTrainerByteFallback = 35;
constexpr int kNormalizerName = 1, kNormalizerAddDummyPrefix = 3,
              kNormalizerRemoveExtraWhitespaces = 4, kNormalizerEscapeWhitespaces = 5;

enum WireType { kVarint = 0, kFixed64 = 1, kLengthDelimited = 2, kFixed32 = 5 };

// One field of a message: its number, wire type, and value (varint/fixed or bytes).
struct Field {
  int number = 0;
  int wire_type = 0;
  uint64_t value = 0;
  std::string_view bytes;
};

class WireReader {
 public:
  explicit WireReader(std::string_view data) : data_(data) {}
  bool done() const { return pos_ >= data_.size(); }

  // Reads the next field; false when the bytes are malformed.
  bool next(Field* field) {
    uint64_t key = 0;
    if (!varint(&key)) return false;
    field->number = static_cast<int>(key >> 3);
    field->wire_type = static_cast<int>(key & 7);
    switch (field->wire_type) {
      case kVarint:
        return varint(&field->value);
      case kFixed64:
        return fixed(8, &field->value);
      case kFixed32:
        return fixed(4, &field->value);
      case kLengthDelimited: {
        uint64_t length = 0;
        if (!varint(&length) || length > data_.size() - pos_) return false;
        field->bytes = data_.substr(pos_, length);
        pos_ += length;
        return true;
      }
      default:
        return false;
    }
  }

 private:
  bool varint(uint64_t* value) {
    *value = 0;
    for (int shift = 0; shift < 64 && pos_ < data_.size(); shift += 7) {
      const auto byte = static_cast<uint8_t>(data_[pos_++]);
      *value |= static_cast<uint64_t>(byte & 0x7F) << shift;
      if ((byte & 0x80) == 0) return true;
    }
    return false;
  }
  bool fixed(size_t size, uint64_t* value) {
    if (data_.size() - pos_ < size) return false;
    *value = 0;
    for (size_t i = 0; i < size; ++i) {
      *value |= static_cast<uint64_t>(static_cast<uint8_t>(data_[pos_ + i])) << (8 * i);
    }
    pos_ += size;
    return true;
  }

  std::string_view data_;
  size_t pos_ = 0;
};

Status malformed(std::string_view what) {
  return InvalidArgumentError(std::string("malformed sentencepiece model: ") + std::string(what));
}

Status parse_piece(std::string_view bytes, SpmModel::Piece* piece) {
  WireReader reader(bytes);
  Field f;
  while (!reader.done()) {
    if (!reader.next(&f)) return malformed("pieces");
    if (f.number == kPieceText && f.wire_type == kLengthDelimited) {
      piece->text = std::string(f.bytes);
    } else if (f.number == kPieceScore && f.wire_type == kFixed32) {
      const auto bits = static_cast<uint32_t>(f.value);
      std::memcpy(&piece->score, &bits, sizeof(bits));
    } else if (f.number == kPieceType && f.wire_type == kVarint) {
      piece->type = static_cast<int>(f.value);
    }
  }
  return OkStatus();
}

void put_varint(uint64_t value, std::string* out) {
  while (value >= 0x80) {
    out->push_back(static_cast<char>((value & 0x7F) | 0x80));
    value >>= 7;
  }
  out->push_back(static_cast<char>(value));
}

void put_key(int number, WireType type, std::string* out) {
  put_varint((static_cast<uint64_t>(number) << 3) | type, out);
}

void put_bytes(int number, std::string_view bytes, std::string* out) {
  put_key(number, kLengthDelimited, out);
  put_varint(bytes.size(), out);
  out->append(bytes);
}

void put_uint(int number, uint64_t value, std::string* out) {
  put_key(number, kVarint, out);
  put_varint(value, out);
}

}  // namespace

StatusOr<SpmModel> parse_spm_model(std::string_view bytes) {
  SpmModel model;
  WireReader reader(bytes);
  Field f;
  while (!reader.done()) {
    if (!reader.next(&f)) return malformed("ModelProto");
    if (f.wire_type != kLengthDelimited) continue;
    if (f.number == kModelPieces) {
      RETURN_IF_ERROR(parse_piece(f.bytes, &model.pieces.emplace_back()));
    } else if (f.number == kModelTrainerSpec) {
      WireReader spec(f.bytes);
      Field g;
      while (!spec.done()) {
        if (!spec.next(&g)) return malformed("trainer_spec");
        if (g.wire_type != kVarint) continue;
        if (g.number == kTrainerModelType) model.model_type = static_cast<int>(g.value);
        if (g.number == kTrainerByteFallback) model.byte_fallback = g.value != 0;
      }
    } else if (f.number == kModelNormalizerSpec) {
      WireReader spec(f.bytes);
      Field g;
      while (!spec.done()) {
        if (!spec.next(&g)) return malformed("normalizer_spec");
        if (g.number == kNormalizerName && g.wire_type == kLengthDelimited) {
          model.normalizer_name = std::string(g.bytes);
        }
        if (g.wire_type != kVarint) continue;
        if (g.number == kNormalizerAddDummyPrefix) model.add_dummy_prefix = g.value != 0;
        if (g.number == kNormalizerRemoveExtraWhitespaces) {
          model.remove_extra_whitespaces = g.value != 0;
        }
        if (g.number == kNormalizerEscapeWhitespaces) model.escape_whitespaces = g.value != 0;
      }
    }
  }
  if (model.pieces.empty()) return malformed("no pieces");
  return model;
}

std::string serialize_spm_model(const SpmModel& model) {
  std::string out;
  std::string message;
  for (const SpmModel::Piece& piece : model.pieces) {
    message.clear();
    put_bytes(kPieceText, piece.text, &message);
    put_key(kPieceScore, kFixed32, &message);
    uint32_t bits = 0;
    std::memcpy(&bits, &piece.score, sizeof(bits));
    for (int i = 0; i < 4; ++i) message.push_back(static_cast<char>((bits >> (8 * i)) & 0xFF));
    put_uint(kPieceType, static_cast<uint64_t>(piece.type), &message);
    put_bytes(kModelPieces, message, &out);
  }
  message.clear();
  put_uint(kTrainerModelType, static_cast<uint64_t>(model.model_type), &message);
  put_uint(kTrainerByteFallback, model.byte_fallback ? 1 : 0, &message);
  put_bytes(kModelTrainerSpec, message, &out);
  message.clear();
  put_bytes(kNormalizerName, model.normalizer_name, &message);
  put_uint(kNormalizerAddDummyPrefix, model.add_dummy_prefix ? 1 : 0, &message);
  put_uint(kNormalizerRemoveExtraWhitespaces, model.remove_extra_whitespaces ? 1 : 0, &message);
  put_uint(kNormalizerEscapeWhitespaces, model.escape_whitespaces ? 1 : 0, &message);
  put_bytes(kModelNormalizerSpec, message, &out);
  return out;
}

}  // namespace sieve::models
