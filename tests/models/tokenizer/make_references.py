"""Builds the reference tokenizers and expected outputs the tokenizer tests compare Sieve with.

There is no model hub here, so the vocabularies are trained on the spot, by the same packages
that define the behaviour Sieve copies: Hugging Face `tokenizers` (byte-level BPE with the
GPT-2, Llama 3, Qwen2 and SmolLM2 pipelines, as those models' tokenizer.json files declare them)
and `sentencepiece` (BPE and unigram models with byte fallback, plus the tokenizer.json that
transformers' LlamaConverter would make of them). The real SmolLM2 vocabulary comes from the
default GGUF when it is present. Everything is seeded, so the output is deterministic.

Usage: make_references.py OUT_DIR [GGUF_PATH]
Writes OUT_DIR/index.json: {"cases": [{name, kind, dir | vocab, encode: [...], decode: [...]}]},
where dir is relative to OUT_DIR.
"""

import json
import os
import random
import sys

import sentencepiece as spm
from tokenizers import AddedToken, Regex, Tokenizer, decoders, models, normalizers
from tokenizers import pre_tokenizers, processors, trainers

HERE = os.path.dirname(os.path.abspath(__file__))
CORPUS = json.load(open(os.path.join(HERE, "fixtures", "corpus.json"), encoding="utf-8"))

GPT2 = r"""'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"""
LLAMA3 = (r"""(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}|"""
          r""" ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+""")
QWEN2 = (r"""(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}|"""
         r""" ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+""")

SPECIALS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]


def training_text(seed):
    """The corpus, several times, plus seeded word salad drawn from it."""
    rng = random.Random(seed)
    words = " ".join(CORPUS).split(" ")
    lines = list(CORPUS) * 3
    for _ in range(400):
        lines.append(" ".join(rng.choice(words) for _ in range(rng.randint(3, 20))))
    return lines


def add_test_tokens(tok):
    """Added tokens that exercise HF's matching options."""
    tok.add_special_tokens([AddedToken("<|im", special=True, normalized=False)])
    tok.add_tokens([
        AddedToken("<mask>", lstrip=True, special=False, normalized=False),
        AddedToken("[LONG]", single_word=True, special=False, normalized=False),
        AddedToken("hello world", special=False, normalized=True),
        AddedToken("caf\u00e9", special=False, normalized=True),
    ])


def byte_level_tokenizer(name):
    tok = Tokenizer(models.BPE())
    if name == "gpt2":
        tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    elif name == "llama3":
        tok.pre_tokenizer = pre_tokenizers.Sequence([
            pre_tokenizers.Split(Regex(LLAMA3), behavior="isolated", invert=False),
            pre_tokenizers.ByteLevel(add_prefix_space=False, trim_offsets=True, use_regex=False),
        ])
    elif name == "qwen2":
        tok.normalizer = normalizers.NFC()
        tok.pre_tokenizer = pre_tokenizers.Sequence([
            pre_tokenizers.Split(Regex(QWEN2), behavior="isolated", invert=False),
            pre_tokenizers.ByteLevel(add_prefix_space=False, trim_offsets=False, use_regex=False),
        ])
    elif name == "smollm2":
        tok.pre_tokenizer = pre_tokenizers.Sequence([
            pre_tokenizers.Digits(individual_digits=True),
            pre_tokenizers.ByteLevel(add_prefix_space=False, trim_offsets=True, use_regex=True),
        ])
    specials = SPECIALS + (["<|begin_of_text|>", "<|eot_id|>"] if name == "llama3" else [])
    trainer = trainers.BpeTrainer(vocab_size=2000, special_tokens=specials, show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(training_text(seed=len(name)), trainer=trainer)
    tok.decoder = decoders.ByteLevel()
    if name == "llama3":
        bos = tok.token_to_id("<|begin_of_text|>")
        tok.post_processor = processors.Sequence([
            processors.ByteLevel(trim_offsets=False),
            processors.TemplateProcessing(single="<|begin_of_text|> $A",
                                          special_tokens=[("<|begin_of_text|>", bos)]),
        ])
        # Llama 3's tokenizer.json takes a word that is a token whole.
        spec = json.loads(tok.to_str())
        spec["model"]["ignore_merges"] = True
        tok = Tokenizer.from_str(json.dumps(spec))
    else:
        tok.post_processor = processors.ByteLevel(trim_offsets=False)
    add_test_tokens(tok)
    return tok


def write_llama3_configs(tok, d):
    """tokenizer_config.json and generation_config.json as Llama 3.1 Instruct's: BOS/EOS names,
    the chat template, and several EOS ids."""
    template = open(os.path.join(HERE, "fixtures", "chat_templates", "llama3.1_instruct.jinja"),
                    encoding="utf-8").read()
    with open(os.path.join(d, "tokenizer_config.json"), "w", encoding="utf-8") as f:
        json.dump({"bos_token": "<|begin_of_text|>", "eos_token": "<|eot_id|>",
                   "chat_template": template}, f)
    with open(os.path.join(d, "generation_config.json"), "w") as f:
        json.dump({"eos_token_id": [tok.token_to_id("<|endoftext|>"),
                                    tok.token_to_id("<|eot_id|>")]}, f)


def train_sentencepiece(out_dir, model_type):
    os.makedirs(out_dir, exist_ok=True)
    prefix = os.path.join(out_dir, "tokenizer")
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(training_text(seed=7)), model_prefix=prefix,
        model_type=model_type, vocab_size=800, byte_fallback=True, character_coverage=0.98,
        normalization_rule_name="identity", remove_extra_whitespaces=False,
        add_dummy_prefix=True, split_digits=True, allow_whitespace_only_pieces=True,
        hard_vocab_limit=False,
        unk_id=0, bos_id=1, eos_id=2, pad_id=-1, num_threads=1, minloglevel=2)
    return spm.SentencePieceProcessor(model_file=prefix + ".model")


def llama_converter(sp, model_type, legacy, add_eos=False, extra_special=()):
    """What transformers' LlamaConverter builds from a tokenizer.model (with add_eos_token and
    added_tokens_decoder entries of a tokenizer_config.json when given)."""
    vocab = {sp.id_to_piece(i): i for i in range(sp.get_piece_size())}
    scores = [(sp.id_to_piece(i), sp.get_score(i)) for i in range(sp.get_piece_size())]
    if model_type == "bpe":
        merges = []
        for piece, score in scores:
            local = []
            for i in range(1, len(piece)):
                left, right = piece[:i], piece[i:]
                if left in vocab and right in vocab:
                    local.append((left, right, score))
            local.sort(key=lambda m: (vocab[m[0]], vocab[m[1]]))
            merges.extend(local)
        merges.sort(key=lambda m: m[2], reverse=True)
        model = models.BPE(vocab, [(a, b) for a, b, _ in merges], unk_token="<unk>",
                           fuse_unk=True, byte_fallback=True)
    else:
        model = models.Unigram(scores, unk_id=0, byte_fallback=True)
    tok = Tokenizer(model)
    if legacy:
        tok.normalizer = normalizers.Sequence([normalizers.Prepend("\u2581"),
                                               normalizers.Replace(" ", "\u2581")])
    else:
        tok.pre_tokenizer = pre_tokenizers.Metaspace(replacement="\u2581",
                                                     prepend_scheme="first", split=False)
    tok.decoder = decoders.Sequence([decoders.Replace("\u2581", " "), decoders.ByteFallback(),
                                     decoders.Fuse(), decoders.Strip(" ", 1, 0)])
    tok.add_special_tokens([AddedToken(t, special=True, normalized=False)
                            for t in ("<unk>", "<s>", "</s>")])
    tok.add_special_tokens([AddedToken(t, special=True, normalized=False) for t in extra_special])
    tok.post_processor = processors.TemplateProcessing(
        single="<s> $A </s>" if add_eos else "<s> $A",
        special_tokens=[("<s>", 1), ("</s>", 2)] if add_eos else [("<s>", 1)])
    return tok


# Pieces random texts are made of: scripts, digits, apostrophes, every kind of whitespace,
# format characters, combining marks, emoji parts and special-token look-alikes.
PIECES = (list("abcXYZ019_-.,;:!?'\"()[]{}<>|/\\@#$%^&*+=~`") +
          [" ", "  ", "\t", "\n", "\r\n", "\r", "\x0b", "\x0c", "\x85", "\xa0", "\u1680",
           "\u2000", "\u2009", "\u2028", "\u3000", "\u180e", "\u200b", "\ufeff", "\u0301",
           "\u0308", "\u200d", "\ufe0f", "\U0001F600", "\U0001F44D", "\U0001F3FD", "\U0001F1FA",
           "\u4e2d", "\u6587", "\u3042", "\ud55c", "\u0645", "\u0631", "\u0928", "\u094d",
           "\u0414", "\u00e9", "\u00df", "\u0130", "\u017f", "\u212a", "\u0663", "\uff11",
           "\u00b2", "\u2167", "'s", "'T", "'re", "'VE", "'m", "'ll", "'D", "123", "4567",
           "<|im_end|>", "<|endoftext|>", "<|im", "<mask>", "[LONG]", "<s>", "</s>", "<|user|>",
           "hello world", "cafe\u0301", "\u2581", "\u0120", "<0x41>"])


def random_texts(seed, count=150):
    rng = random.Random(seed)
    return ["".join(rng.choice(PIECES) for _ in range(rng.randint(1, 40))) for _ in range(count)]


def expectations(tok, seed):
    """Encodings of every corpus text (and all of it at once) and of random texts, and decodings
    of id sequences, some of them random, which is where UTF-8 repair and byte-fallback runs are
    tested."""
    texts = CORPUS + ["\n".join(CORPUS)] + random_texts(seed=1000 + seed)
    encode = []
    for text in texts:
        encode.append({"text": text,
                       "ids": tok.encode(text, add_special_tokens=False).ids,
                       "ids_special": tok.encode(text, add_special_tokens=True).ids})
    rng = random.Random(seed)
    size = tok.get_vocab_size(with_added_tokens=True)
    id_lists = [e["ids_special"] for e in encode]
    id_lists += [[rng.randrange(size) for _ in range(rng.randint(1, 12))] for _ in range(300)]
    decode = [{"ids": ids, "text": tok.decode(ids, skip_special_tokens=False),
               "text_skip": tok.decode(ids, skip_special_tokens=True)} for ids in id_lists]
    return encode, decode


def gguf_vocab_from_tokenizer(tok, pre, add_bos):
    """What a GGUF converter would store for a byte-level tokenizer: tokens by id, merges,
    control tokens for the special added ones."""
    spec = json.loads(tok.to_str())
    size = tok.get_vocab_size(with_added_tokens=True)
    tokens = [tok.id_to_token(i) for i in range(size)]
    special = {t["id"] for t in spec["added_tokens"] if t["special"]}
    user = {t["id"] for t in spec["added_tokens"] if not t["special"]}
    types = [3 if i in special else 4 if i in user else 1 for i in range(size)]
    merges = [m if isinstance(m, str) else " ".join(m) for m in spec["model"]["merges"]]
    bos = tok.token_to_id("<|begin_of_text|>")
    return {"model": "gpt2", "pre": pre, "tokens": tokens, "token_types": types,
            "merges": merges, "bos_id": bos if bos is not None else -1,
            "eos_id": tok.token_to_id("<|endoftext|>"), "add_bos": add_bos}


def main():
    out = sys.argv[1]
    gguf_path = sys.argv[2] if len(sys.argv) > 2 else ""
    os.makedirs(out, exist_ok=True)
    cases = []

    gguf_pre = {"gpt2": "gpt-2", "llama3": "llama-bpe", "qwen2": "qwen2", "smollm2": "smollm"}
    for name in ("gpt2", "llama3", "qwen2", "smollm2"):
        tok = byte_level_tokenizer(name)
        d = os.path.join(out, name)
        os.makedirs(d, exist_ok=True)
        tok.save(os.path.join(d, "tokenizer.json"))
        if name == "llama3":
            write_llama3_configs(tok, d)
        encode, decode = expectations(tok, seed=len(name))
        cases.append({"name": name, "kind": "hf_dir", "dir": name, "encode": encode,
                      "decode": decode})
        # The same vocabulary as a GGUF "gpt2" one: ids must not change (BOS aside, which the
        # GGUF's add_bos flag decides; Llama 3's tokenizer.json adds it).
        vocab = gguf_vocab_from_tokenizer(tok, gguf_pre[name], add_bos=name == "llama3")
        # GGUF loses the added tokens' lstrip/single_word/normalized flags: leave out the texts
        # that depend on them.
        plain = [e for e in encode
                 if not any(t in e["text"] for t in ("<mask>", "[LONG]", "hello world", "caf"))]
        cases.append({"name": name + "_gguf", "kind": "vocab", "vocab": vocab, "encode": plain,
                      "decode": decode})

    for model_type in ("bpe", "unigram"):
        d = os.path.join(out, "spm_" + model_type)
        sp = train_sentencepiece(d, model_type)
        # The unigram directory also has a tokenizer_config.json that adds EOS and a token.
        with_config = model_type == "unigram"
        if with_config:
            config = {"add_bos_token": True, "add_eos_token": True, "bos_token": "<s>",
                      "eos_token": "</s>",
                      "added_tokens_decoder": {str(sp.get_piece_size()): {
                          "content": "<|user|>", "lstrip": False, "normalized": False,
                          "rstrip": False, "single_word": False, "special": True}}}
            with open(os.path.join(d, "tokenizer_config.json"), "w") as f:
                json.dump(config, f)
        for legacy in (True, False):
            tok = llama_converter(sp, model_type, legacy, add_eos=with_config,
                                  extra_special=("<|user|>",) if with_config else ())
            encode, decode = expectations(tok, seed=11)
            if legacy:
                # tokenizer.model through libsentencepiece, against the legacy converter.
                sp_ids = [sp.encode(e["text"]) for e in encode]
                case = {"name": "spm_" + model_type, "kind": "hf_dir", "dir": os.path.basename(d),
                        "encode": encode, "decode": decode, "sentencepiece_ids": sp_ids}
                if model_type == "unigram":
                    # Unigram segmentations can tie in score; sentencepiece versions break ties
                    # differently, so the test accepts an equally scored segmentation.
                    case["scores"] = [sp.get_score(i) for i in range(sp.get_piece_size())]
                    # HF's Unigram lets "<0x41>" written in the text match the byte piece;
                    # sentencepiece (and so Sieve) never matches byte pieces in text.
                    for e in encode:
                        if "<0x" in e["text"]:
                            e["hf_differs"] = True
                cases.append(case)
            if model_type == "bpe":
                variant = "legacy" if legacy else "first"
                jd = os.path.join(out, "spm_json_%s_%s" % (model_type, variant))
                os.makedirs(jd, exist_ok=True)
                tok.save(os.path.join(jd, "tokenizer.json"))
                cases.append({"name": os.path.basename(jd), "kind": "hf_dir",
                              "dir": os.path.basename(jd),
                              "encode": encode, "decode": decode})
                if legacy:
                    types = [2 if sp.is_unknown(i) else 3 if sp.is_control(i) else
                             6 if sp.is_byte(i) else 5 if sp.is_unused(i) else 1
                             for i in range(sp.get_piece_size())]
                    vocab = {"model": "llama", "pre": "default",
                             "tokens": [sp.id_to_piece(i) for i in range(sp.get_piece_size())],
                             "scores": [sp.get_score(i) for i in range(sp.get_piece_size())],
                             "token_types": types, "bos_id": 1, "eos_id": 2, "unknown_id": 0,
                             "add_bos": True, "add_space_prefix": True}
                    cases.append({"name": "spm_bpe_gguf", "kind": "vocab", "vocab": vocab,
                                  "encode": encode, "decode": decode})

    if gguf_path and os.path.exists(gguf_path):
        cases.append(smollm2_gguf_case(gguf_path))

    with open(os.path.join(out, "index.json"), "w", encoding="utf-8") as f:
        json.dump({"cases": cases, "chat": render_chats()}, f, ensure_ascii=False)


def render_chats():
    """Every committed template on every committed conversation, rendered by jinja2 the way
    transformers' apply_chat_template renders it (sandboxed, trim_blocks, lstrip_blocks,
    raise_exception, tojson); a template's exception is recorded as the expected error."""
    import jinja2
    from jinja2.ext import loopcontrols
    from jinja2.sandbox import ImmutableSandboxedEnvironment

    def raise_exception(message):
        raise jinja2.exceptions.TemplateError(message)

    def tojson(x, ensure_ascii=False, indent=None, separators=None, sort_keys=False):
        return json.dumps(x, ensure_ascii=ensure_ascii, indent=indent, separators=separators,
                          sort_keys=sort_keys)

    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True,
                                        extensions=[loopcontrols])
    env.filters["tojson"] = tojson
    env.globals["raise_exception"] = raise_exception
    fixtures = os.path.join(HERE, "fixtures")
    spec = json.load(open(os.path.join(fixtures, "conversations.json"), encoding="utf-8"))
    chats = []
    for t in spec["templates"]:
        source = open(os.path.join(fixtures, "chat_templates", t["file"]), encoding="utf-8").read()
        template = env.from_string(source)
        results = []
        for c in spec["conversations"]:
            try:
                text = template.render(messages=c["messages"],
                                       add_generation_prompt=c["add_generation_prompt"],
                                       bos_token=t["bos_token"], eos_token=t["eos_token"])
                results.append({"text": text})
            except jinja2.exceptions.TemplateError as e:
                results.append({"error": str(e)})
        chats.append({"file": t["file"], "results": results})
    return chats


def smollm2_gguf_case(path):
    """The real SmolLM2 vocabulary from the GGUF, against tokenizers built from the same
    vocabulary and merges with SmolLM2's tokenizer.json pipeline."""
    from gguf import GGUFReader
    reader = GGUFReader(path)

    def strings(key):
        f = reader.fields[key]
        return [bytes(f.parts[i]).decode("utf-8") for i in f.data]

    def scalar(key):
        f = reader.fields[key]
        return f.parts[f.data[0]].tolist()[0]

    tokens = strings("tokenizer.ggml.tokens")
    merges = strings("tokenizer.ggml.merges")
    f = reader.fields["tokenizer.ggml.token_type"]
    types = [int(f.parts[i][0]) for i in f.data]
    model = models.BPE({t: i for i, t in enumerate(tokens)},
                       [tuple(m.split(" ", 1)) for m in merges])
    tok = Tokenizer(model)
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Digits(individual_digits=True),
        pre_tokenizers.ByteLevel(add_prefix_space=False, trim_offsets=True, use_regex=True),
    ])
    tok.decoder = decoders.ByteLevel()
    tok.add_special_tokens([AddedToken(tokens[i], special=True, normalized=False)
                            for i, t in enumerate(types) if t == 3])
    encode, decode = expectations(tok, seed=5)
    chat = reader.fields["tokenizer.chat_template"]
    # A chat rendered by the GGUF's own template and tokenized by HF: what a server sends.
    import jinja2
    template = jinja2.Environment(trim_blocks=True, lstrip_blocks=True).from_string(
        bytes(chat.parts[-1]).decode("utf-8"))
    chat_messages = [{"role": "user", "content": "What is the capital of France?"},
                     {"role": "assistant", "content": "Paris."},
                     {"role": "user", "content": "And of \u65e5\u672c? \U0001F5FE"}]
    chat_ids = tok.encode(template.render(messages=chat_messages, add_generation_prompt=True),
                          add_special_tokens=False).ids
    vocab = {"model": "gpt2", "pre": bytes(reader.fields["tokenizer.ggml.pre"].parts[-1]).decode(),
             "tokens": tokens, "token_types": types, "merges": merges,
             "bos_id": scalar("tokenizer.ggml.bos_token_id"),
             "eos_id": scalar("tokenizer.ggml.eos_token_id"),
             "unknown_id": scalar("tokenizer.ggml.unknown_token_id"),
             "add_bos": bool(scalar("tokenizer.ggml.add_bos_token")),
             "chat_template": bytes(chat.parts[-1]).decode("utf-8")}
    return {"name": "smollm2_real_gguf", "kind": "vocab", "vocab": vocab, "encode": encode,
            "decode": decode, "chat": {"messages": chat_messages, "ids": chat_ids}}


if __name__ == "__main__":
    main()
