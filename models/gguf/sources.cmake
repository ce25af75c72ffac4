# models/gguf: the GGUF container, block formats and the llama-family mapping (target sieve_gguf).
# It needs only core, so its tests and fuzzer link no backend.
add_library(sieve_gguf STATIC
  ${CMAKE_CURRENT_LIST_DIR}/gguf_file.cc
  ${CMAKE_CURRENT_LIST_DIR}/gguf_model.cc
  ${CMAKE_CURRENT_LIST_DIR}/quant.cc
)
target_link_libraries(sieve_gguf PUBLIC sieve_core PRIVATE sieve_warnings)
# Dequantization matches ggml's reference bit for bit only if a*b+c is never fused into an FMA.
target_compile_options(sieve_gguf PRIVATE -ffp-contract=off)
