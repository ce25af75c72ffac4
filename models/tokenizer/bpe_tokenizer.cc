#include "models/tokenizer/bpe_tokenizer.h"

#include <fmt/format.h>
#include <spdlog/spdlog.h>

#include <algorithm>
#include <mutex>

#include "models/tokenizer/unicode.h"

namespace sieve::models {
namespace {

constexpr size_t kMaxCachedWordBytes = 64;
constexpr size_t kMaxCachedWords = 100000;

// Rank of a merge and the token it produces.
struct Merge {
  int32_t rank;
  int32_t new_id;
};

uint64_t pair_key(int32_t left, int32_t right) {
  return (static_cast<uint64_t>(static_cast<uint32_t>(left)) << 32) | static_cast<uint32_t>(right);
}

// The model's lookup tables.
struct BpeTables {
  TextMap<int32_t> ids_by_key;  // keys: bytes for byte-level vocabs
  absl::flat_hash_map<uint64_t, Merge> merges;
  int32_t byte_ids[256];        // byte-level: the token of each single byte, or -1
  int32_t byte_token_ids[256];  // byte fallback: the <0xXX> token of each byte, or -1
};

// A token text in the key space the model looks words up in: the bytes it stands for, for a
// byte-level vocabulary (so encoding never maps text to GPT-2's alphabet), else the text.
std::string model_key(const std::string& text, bool byte_level) {
  if (!byte_level) return text;
  std::string bytes;
  for (size_t pos = 0; pos < text.size();) {
    const unicode::Utf8Step step = unicode::decode_utf8(text, pos);
    const int byte =
        step.kind == unicode::Utf8Step::kValid ? unicode::code_point_to_byte(step.code_point) : -1;
    if (byte < 0) return text;
    bytes.push_back(static_cast<char>(byte));
    pos += step.length;
  }
  return bytes;
}

StatusOr<BpeTables> build_tables(const BpeSpec& spec) {
  BpeTables tables;
  absl::flat_hash_map<std::string_view, int32_t, TextHash, TextEq> ids_by_text;
  ids_by_text.reserve(spec.vocab.size());
  tables.ids_by_key.reserve(spec.vocab.size());
  for (const auto& [text, id] : spec.vocab) {
    ids_by_text.try_emplace(text, id);
    tables.ids_by_key.try_emplace(model_key(text, spec.byte_level), id);
  }
  for (int b = 0; b < 256; ++b) {
    const std::string byte(1, static_cast<char>(b));
    const auto it = tables.ids_by_key.find(byte);
    tables.byte_ids[b] = spec.byte_level && it != tables.ids_by_key.end() ? it->second : -1;
    const auto fallback = ids_by_text.find(fmt::format("<0x{:02X}>", b));
    tables.byte_token_ids[b] = fallback != ids_by_text.end() ? fallback->second : -1;
  }
  tables.merges.reserve(spec.merges.size());
  for (size_t rank = 0; rank < spec.merges.size(); ++rank) {
    const auto& [left, right] = spec.merges[rank];
    const auto l = ids_by_text.find(left);
    const auto r = ids_by_text.find(right);
    const auto merged = ids_by_text.find(left + right);
    for (const auto& [it, text] : {std::pair{l, left}, {r, right}, {merged, left + right}}) {
      if (it == ids_by_text.end()) {
        return InvalidArgumentError(
            fmt::format("merge {} ('{}', '{}'): token '{}' is not in the "
                        "vocabulary",
                        rank, left, right, text));
      }
    }
    // A repeated pair keeps its last rank, as HF's map does.
    tables.merges.insert_or_assign(pair_key(l->second, r->second),
                                   Merge{static_cast<int32_t>(rank), merged->second});
  }
  return tables;
}

class BpeTokenizer final : public TokenizerBase {
 public:
  BpeTokenizer(TokenizerParts parts, BpeSpec spec, BpeTables tables)
      : TokenizerBase(std::move(parts), /*normalized_in_model=*/true),
        spec_(std::move(spec)),
        tables_(std::move(tables)) {
    std::vector<AddedToken> normalized;
    std::vector<std::string> patterns;
    for (const AddedToken& token : added_tokens()) {
      if (!token.normalized) continue;
      normalized.push_back(token);
      patterns.push_back(normalize_text(spec_.normalizer, token.content));
    }
    normalized_matcher_ = AddedTokenMatcher(std::move(normalized), std::move(patterns));
  }

 protected:
  void encode_text(std::string_view text, bool at_start, std::vector<int32_t>* ids) const override;

 private:
  struct Symbol {
    int32_t id, prev, next, length;  // length 0: merged into its left neighbour
  };
  struct QueuedMerge {
    int32_t rank, pos, new_id;
    bool operator>(const QueuedMerge& o) const {
      return rank != o.rank ? rank > o.rank : pos > o.pos;
    }
  };
  // Per-thread buffers, reused across calls so that encoding allocates little.
  struct Scratch {
    std::string buffer;
    std::vector<TextSpan> spans;
    std::vector<Piece> pieces;
    std::vector<Symbol> symbols;
    std::vector<QueuedMerge> queue;
    std::vector<int32_t> word_ids;
  };

  void encode_word(std::string_view word, Scratch* scratch, std::vector<int32_t>* ids) const;
  void initial_symbols(std::string_view word, std::vector<Symbol>* symbols) const;
  void merge(std::vector<Symbol>* symbols, std::vector<QueuedMerge>* queue) const;

  BpeSpec spec_;
  BpeTables tables_;
  AddedTokenMatcher normalized_matcher_;
  mutable std::mutex cache_mutex_;
  mutable TextMap<std::vector<int32_t>> cache_;
};

void BpeTokenizer::encode_text(std::string_view text, bool at_start,
                               std::vector<int32_t>* ids) const {
  thread_local Scratch scratch;
  std::string normalized_storage;
  std::string_view normalized = text;
  if (!spec_.normalizer.empty()) {
    normalized_storage = normalize_text(spec_.normalizer, text);
    normalized = normalized_storage;
  }
  std::vector<TextSpan>& spans = scratch.spans;
  spans.clear();
  if (normalized_matcher_.empty()) {
    spans.push_back({0, normalized.size(), -1});
  } else {
    normalized_matcher_.split(normalized, &spans);
  }
  for (const TextSpan& span : spans) {
    if (span.id >= 0) {
      ids->push_back(span.id);
      continue;
    }
    scratch.buffer.assign(normalized.substr(span.begin, span.end - span.begin));
    pre_tokenize(spec_.pre_tokenizer, at_start && span.begin == 0, &scratch.buffer,
                 &scratch.pieces);
    for (const Piece& piece : scratch.pieces) {
      encode_word(std::string_view(scratch.buffer).substr(piece.begin, piece.end - piece.begin),
                  &scratch, ids);
    }
  }
  // A huge prompt should not pin its copy in every thread that ever encoded one.
  if (scratch.buffer.capacity() > (1 << 20)) std::string().swap(scratch.buffer);
}

void BpeTokenizer::encode_word(std::string_view word, Scratch* scratch,
                               std::vector<int32_t>* ids) const {
  if (spec_.ignore_merges) {
    const auto it = tables_.ids_by_key.find(word);
    if (it != tables_.ids_by_key.end()) {
      ids->push_back(it->second);
      return;
    }
  }
  const bool cacheable = word.size() <= kMaxCachedWordBytes;
  if (cacheable) {
    std::lock_guard lock(cache_mutex_);
    const auto it = cache_.find(word);
    if (it != cache_.end()) {
      ids->insert(ids->end(), it->second.begin(), it->second.end());
      return;
    }
  }
  initial_symbols(word, &scratch->symbols);
  merge(&scratch->symbols, &scratch->queue);
  std::vector<int32_t>& word_ids = scratch->word_ids;
  word_ids.clear();
  for (const Symbol& s : scratch->symbols) {
    if (s.length > 0) word_ids.push_back(s.id);
  }
  ids->insert(ids->end(), word_ids.begin(), word_ids.end());
  if (cacheable) {
    std::lock_guard lock(cache_mutex_);
    if (cache_.size() < kMaxCachedWords) cache_.try_emplace(word, word_ids);
  }
}

// HF's BPE::merge_word: one symbol per byte (byte-level) or character; an unknown character
// becomes its <0xXX> byte tokens (byte fallback) or the unknown token (fused when consecutive).
void BpeTokenizer::initial_symbols(std::string_view word, std::vector<Symbol>* symbols) const {
  symbols->clear();
  bool last_unknown = false;
  auto push = [&](int32_t id, int32_t length) {
    const auto pos = static_cast<int32_t>(symbols->size());
    symbols->push_back({id, pos - 1, pos + 1, length});
  };
  for (size_t pos = 0; pos < word.size();) {
    size_t length = 1;
    int32_t id = -1;
    if (spec_.byte_level) {
      id = tables_.byte_ids[static_cast<uint8_t>(word[pos])];
    } else {
      length = unicode::decode_utf8(word, pos).length;
      const auto it = tables_.ids_by_key.find(word.substr(pos, length));
      if (it != tables_.ids_by_key.end()) id = it->second;
    }
    if (id < 0 && spec_.byte_fallback) {
      bool all = true;
      for (size_t i = pos; i < pos + length; ++i) {
        all &= tables_.byte_token_ids[static_cast<uint8_t>(word[i])] >= 0;
      }
      if (all) {
        for (size_t i = pos; i < pos + length; ++i) {
          push(tables_.byte_token_ids[static_cast<uint8_t>(word[i])], 1);
        }
        pos += length;
        last_unknown = false;
        continue;
      }
    }
    if (id >= 0) {
      push(id, static_cast<int32_t>(length));
      last_unknown = false;
    } else if (spec_.unk_id) {
      if (spec_.fuse_unk && last_unknown) {
        symbols->back().length += static_cast<int32_t>(length);
      } else {
        push(*spec_.unk_id, static_cast<int32_t>(length));
      }
      last_unknown = true;
    }
    pos += length;
  }
  if (!symbols->empty()) symbols->back().next = -1;
}

// HF's Word::merge_all: repeatedly merges the lowest-ranked adjacent pair (leftmost on ties),
// with a min-heap and lazy deletion of stale entries: O(n log n) per word.
void BpeTokenizer::merge(std::vector<Symbol>* symbols, std::vector<QueuedMerge>* queue) const {
  std::vector<Symbol>& s = *symbols;
  queue->clear();
  const auto greater = std::greater<QueuedMerge>();
  auto enqueue = [&](int32_t pos) {
    const auto it = tables_.merges.find(pair_key(s[pos].id, s[s[pos].next].id));
    if (it == tables_.merges.end()) return;
    queue->push_back({it->second.rank, pos, it->second.new_id});
    std::push_heap(queue->begin(), queue->end(), greater);
  };
  for (int32_t pos = 0; pos + 1 < static_cast<int32_t>(s.size()); ++pos) enqueue(pos);
  while (!queue->empty()) {
    std::pop_heap(queue->begin(), queue->end(), greater);
    const QueuedMerge top = queue->back();
    queue->pop_back();
    Symbol& left = s[top.pos];
    if (left.length == 0 || left.next < 0) continue;
    const Symbol right = s[left.next];
    const auto it = tables_.merges.find(pair_key(left.id, right.id));
    if (it == tables_.merges.end() || it->second.new_id != top.new_id) continue;
    left.id = top.new_id;
    left.length += right.length;
    s[left.next].length = 0;
    left.next = right.next;
    if (right.next >= 0) s[right.next].prev = top.pos;
    if (left.prev >= 0) enqueue(left.prev);
    if (left.next >= 0) enqueue(top.pos);
  }
}

}  // namespace

Status apply_gguf_pre(std::string_view pre, BpeSpec* spec) {
  std::vector<NormalizerStep>* normalizer = &spec->normalizer;
  std::vector<PreTokenizerStep>* pre_tokenizer = &spec->pre_tokenizer;
  normalizer->clear();
  pre_tokenizer->clear();
  std::string_view split_pattern;
  bool digits = false;
  if (pre == "gpt-2" || pre == "gpt2" || pre == "default" || pre.empty()) {
    if (pre.empty()) spdlog::warn("GGUF has no tokenizer.ggml.pre; using GPT-2's pre-tokenizer");
  } else if (pre == "llama-bpe" || pre == "llama3" || pre == "llama-v3") {
    split_pattern = kLlama3Pattern;
    spec->ignore_merges = true;  // as Llama 3's tokenizer.json (and llama.cpp) have it
  } else if (pre == "qwen2") {
    split_pattern = kQwen2Pattern;
    normalizer->emplace_back(NormalizerStep::Kind::kUnicode);
  } else if (pre == "smollm" || pre == "starcoder" || pre == "refact") {
    digits = true;
  } else {
    return UnimplementedError(fmt::format(
        "tokenizer.ggml.pre '{}' is not supported (supported: gpt-2, default, llama-bpe, llama3, "
        "qwen2, smollm, starcoder, refact)",
        pre));
  }
  if (digits) {
    PreTokenizerStep step(PreTokenizerStep::Kind::kDigits);
    step.individual_digits = true;
    pre_tokenizer->push_back(std::move(step));
  }
  PreTokenizerStep byte_level(PreTokenizerStep::Kind::kByteLevel);
  if (split_pattern.empty()) {
    ASSIGN_OR_RETURN(byte_level.regex, Regex::compile(kGpt2Pattern));
  } else {
    PreTokenizerStep split(PreTokenizerStep::Kind::kSplit);
    ASSIGN_OR_RETURN(split.regex, Regex::compile(split_pattern));
    pre_tokenizer->push_back(std::move(split));
  }
  pre_tokenizer->push_back(std::move(byte_level));
  return OkStatus();
}

StatusOr<std::unique_ptr<Tokenizer>> make_bpe_tokenizer(TokenizerParts parts, BpeSpec spec) {
  ASSIGN_OR_RETURN(BpeTables tables, build_tables(spec));
  return std::unique_ptr<Tokenizer>(
      new BpeTokenizer(std::move(parts), std::move(spec), std::move(tables)));
}

}  // namespace sieve::models
