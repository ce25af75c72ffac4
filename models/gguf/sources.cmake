# models/gguf: the GGUF container, block formats and the llama-family mapping (target sieve_gguf).
