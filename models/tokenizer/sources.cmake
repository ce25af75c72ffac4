# models/tokenizer: BPE and SentencePiece tokenizers, chat templates (target sieve_tokenizer).
# It needs only core, so its tests link no backend. utf8proc (Debian libutf8proc-dev) does the
# Unicode normalization (NFC for Qwen2) and character categories.
pkg_check_modules(UTF8PROC REQUIRED IMPORTED_TARGET libutf8proc)

add_library(sieve_tokenizer STATIC
  ${CMAKE_CURRENT_LIST_DIR}/added_vocabulary.cc
  ${CMAKE_CURRENT_LIST_DIR}/bpe_tokenizer.cc
  ${CMAKE_CURRENT_LIST_DIR}/chat_template.cc
  ${CMAKE_CURRENT_LIST_DIR}/hf_tokenizer_json.cc
  ${CMAKE_CURRENT_LIST_DIR}/json_fields.cc
  ${CMAKE_CURRENT_LIST_DIR}/pre_tokenizer.cc
  ${CMAKE_CURRENT_LIST_DIR}/sentencepiece_tokenizer.cc
  ${CMAKE_CURRENT_LIST_DIR}/spm_model.cc
  ${CMAKE_CURRENT_LIST_DIR}/spm_processor.cc
  ${CMAKE_CURRENT_LIST_DIR}/token_decoder.cc
  ${CMAKE_CURRENT_LIST_DIR}/tokenizer.cc
  ${CMAKE_CURRENT_LIST_DIR}/tokenizer_base.cc
  ${CMAKE_CURRENT_LIST_DIR}/unicode.cc
)
target_link_libraries(sieve_tokenizer
  PUBLIC sieve_core
  PRIVATE absl::flat_hash_map nlohmann_json::nlohmann_json PkgConfig::PCRE2
          PkgConfig::SENTENCEPIECE PkgConfig::UTF8PROC sieve_warnings)
