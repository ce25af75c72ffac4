# models/tokenizer: BPE and SentencePiece tokenizers, chat templates (target sieve_tokenizer).
