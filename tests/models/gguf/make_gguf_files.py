"""Builds small GGUF files with gguf.GGUFWriter, and references for the C++ tests.

Usage: make_gguf_files.py OUT_DIR SEED [--tiny]

--tiny writes the same files with one layer and hidden size 32 (a few KB each): the fuzzer's
seed corpus (fuzz/corpus/gguf).

Writes into OUT_DIR:
  metadata.gguf        every metadata value type, arrays (nested too), alignment 64, and a few
                       tensors of several types; metadata.tensors lists "name type_id dims..."
                       (ggml order) and metadata.<name>.f32 holds each tensor's dequantized values.
  llama.gguf, qwen2.gguf, qwen3.gguf
                       tiny models (2 layers) with a tokenizer; <model>.ref/ holds one file per
                       Hugging Face weight name (<hf name>.f32) and manifest.txt ("hf_name dims...",
                       HF order). For llama, Q and K are written permuted as llama.cpp's converter
                       does, and the references are the unpermuted (Hugging Face) matrices; llama
                       also has Llama 3 RoPE scaling as rope_freqs.weight, as the converter writes it.
  missing_tensor.gguf  llama without blk.1.ffn_up.weight.
  gpt2.gguf            an architecture Sieve does not support.
"""

import sys
from pathlib import Path

import numpy as np
import gguf
from gguf import GGMLQuantizationType as T
from gguf import GGUFValueType as V

HIDDEN, HEADS, KV_HEADS, HEAD_DIM, INTER, LAYERS, VOCAB = 256, 4, 2, 64, 512, 2, 64


def hf_to_gguf_permute(w: np.ndarray, n_head: int) -> np.ndarray:
    """llama.cpp's convert_hf_to_gguf.py LlamaModel.permute: rotate-half rows -> adjacent pairs."""
    return (w.reshape(n_head, 2, w.shape[0] // n_head // 2, *w.shape[1:])
            .swapaxes(1, 2).reshape(w.shape))


def gguf_to_hf_unpermute(w: np.ndarray, n_head: int) -> np.ndarray:
    """The inverse, written independently: adjacent pairs -> rotate-half rows."""
    head_dim = w.shape[0] // n_head
    return (w.reshape(n_head, head_dim // 2, 2, *w.shape[1:])
            .swapaxes(1, 2).reshape(w.shape))


def llama3_rope_factors(theta: float, dim: int, factor: float, low: float, high: float,
                        original: int) -> np.ndarray:
    """The rope_freqs.weight llama.cpp's converter writes for rope_type llama3."""
    factors = []
    for freq in 1.0 / (theta ** (np.arange(0, dim, 2, dtype=np.float32) / dim)):
        wavelen = 2 * np.pi / freq
        if wavelen < original / high:
            factors.append(1.0)
        elif wavelen > original / low:
            factors.append(factor)
        else:
            smooth = (original / wavelen - low) / (high - low)
            factors.append(1 / ((1 - smooth) / factor + smooth))
    return np.array(factors, dtype=np.float32)


def random_k_blocks(rng, qtype, shape) -> np.ndarray:
    """Raw k-quant blocks for an f32 `shape` (random bytes, finite f16 scales)."""
    block_size, type_size = gguf.GGML_QUANT_SIZES[qtype]
    n = int(np.prod(shape)) // block_size
    blocks = rng.integers(0, 256, size=(n, type_size), dtype=np.uint8)
    halves = {T.Q4_K: [0, 2], T.Q5_K: [0, 2], T.Q6_K: [208]}[qtype]
    for off in halves:
        d = (rng.standard_normal(n) * 1e-3).astype(np.float16).view(np.uint8).reshape(-1, 2)
        blocks[:, off:off + 2] = d
    return blocks.reshape(*shape[:-1], shape[-1] // block_size * type_size)


def encode(rng, w: np.ndarray, qtype) -> tuple[np.ndarray, np.ndarray]:
    """(bytes or array to write, its dequantized f32 values)."""
    if qtype == T.F32:
        return w.astype(np.float32), w.astype(np.float32)
    if qtype in (T.Q4_K, T.Q5_K, T.Q6_K):
        raw = random_k_blocks(rng, qtype, w.shape)
    else:
        raw = gguf.quants.quantize(w.astype(np.float32), qtype)
    return raw, gguf.quants.dequantize(raw, qtype).astype(np.float32).reshape(w.shape)


def add_tensor(writer, name, data, qtype):
    if qtype == T.F32:
        writer.add_tensor(name, data)
    elif qtype == T.F16:
        writer.add_tensor(name, data)  # np.float16 array
    else:
        writer.add_tensor(name, data, raw_dtype=qtype)


def write_metadata_file(out: Path, rng) -> None:
    w = gguf.GGUFWriter(str(out / "metadata.gguf"), arch="testarch")
    w.add_custom_alignment(64)
    w.add_uint8("t.u8", 200)
    w.add_int8("t.i8", -100)
    w.add_uint16("t.u16", 65000)
    w.add_int16("t.i16", -30000)
    w.add_uint32("t.u32", 4000000000)
    w.add_int32("t.i32", -2000000000)
    w.add_float32("t.f32", 1.5)
    w.add_uint64("t.u64", 2**63 + 5)
    w.add_int64("t.i64", -(2**62) - 3)
    w.add_float64("t.f64", 3.141592653589793)
    w.add_bool("t.bool", True)
    w.add_bool("t.false", False)
    w.add_string("t.str", "h\u00e9llo \U0001F600")
    w.add_key_value("t.empty_str", "", V.STRING)  # add_string skips empty strings
    w.add_array("t.arr_i32", [1, -2, 3])
    w.add_key_value("t.arr_u8", [1, 2, 255], V.ARRAY, sub_type=V.UINT8)
    w.add_key_value("t.arr_i16", [-7, 7], V.ARRAY, sub_type=V.INT16)
    w.add_key_value("t.arr_u64", [2**64 - 1, 0], V.ARRAY, sub_type=V.UINT64)
    w.add_key_value("t.arr_i64", [-(2**63), 2**63 - 1], V.ARRAY, sub_type=V.INT64)
    w.add_key_value("t.arr_f64", [0.25, -1e300], V.ARRAY, sub_type=V.FLOAT64)
    w.add_array("t.arr_f32", [0.5, -2.25, 1e-3])
    w.add_array("t.arr_bool", [True, False, True])
    w.add_array("t.arr_str", ["a", "", "ccc"])
    w.add_array("t.nested", [[1, 2], [3]])
    w.add_array("t.nested_str", [["x"], ["y", "zz"]])
    w.add_array("t.nested2", [[[1.0], [2.0, 3.0]]])

    tensors = [
        ("t.f32", rng.standard_normal((3, 4)).astype(np.float32), T.F32),
        ("t.1d", rng.standard_normal(5).astype(np.float32), T.F32),
        ("t.f16", rng.standard_normal((2, 32)).astype(np.float16), T.F16),
        ("t.bf16", rng.standard_normal((2, 32)).astype(np.float32), T.BF16),
        ("t.q8_0", rng.standard_normal((2, 64)).astype(np.float32), T.Q8_0),
        ("t.q4_0_3d", rng.standard_normal((2, 3, 32)).astype(np.float32), T.Q4_0),
        ("t.q4_k", rng.standard_normal((1, 256)).astype(np.float32), T.Q4_K),
        ("t.q6_k", rng.standard_normal((2, 256)).astype(np.float32), T.Q6_K),
    ]
    listing = []
    for name, values, qtype in tensors:
        if qtype == T.F16:
            data, ref = values, values.astype(np.float32)
        else:
            data, ref = encode(rng, values, qtype)
        add_tensor(w, name, data, qtype)
        listing.append(" ".join([name, str(int(qtype))] + [str(d) for d in reversed(values.shape)]))
        ref.astype("<f4").tofile(out / f"metadata.{name}.f32")
    (out / "metadata.tensors").write_text("\n".join(listing) + "\n")
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


def write_tokenizer(w, spm: bool) -> None:
    tokens = ["<unk>", "<s>", "</s>"] + [f"tok{i}" for i in range(VOCAB - 3)]
    w.add_tokenizer_model("llama" if spm else "gpt2")
    w.add_tokenizer_pre("default" if spm else "smollm")
    w.add_token_list(tokens)
    w.add_token_types([2, 3, 3] + [1] * (VOCAB - 3))
    if spm:
        w.add_token_scores([-float(i) for i in range(VOCAB)])
    else:
        w.add_token_merges(["t o", "to k", "tok 1"])
        w.add_add_bos_token(False)
    w.add_bos_token_id(1)
    w.add_eos_token_id(2)
    w.add_eot_token_id(5)
    w.add_unk_token_id(0)
    w.add_pad_token_id(2)
    w.add_chat_template("{% for m in messages %}{{ m.content }}{% endfor %}")


def write_model(out: Path, rng, arch: str, skip: str = "", file_name: str = "") -> None:
    name = file_name or arch
    w = gguf.GGUFWriter(str(out / f"{name}.gguf"), arch=arch)
    w.add_block_count(LAYERS)
    w.add_context_length(4096)
    w.add_embedding_length(HIDDEN)
    w.add_feed_forward_length(INTER)
    w.add_head_count(HEADS)
    w.add_head_count_kv(KV_HEADS)
    w.add_layer_norm_rms_eps(1e-5 if arch == "llama" else 1e-6)
    w.add_rope_freq_base(10000.0 if arch == "llama" else 1000000.0)
    if arch == "qwen2":
        w.add_rope_scaling_type(gguf.RopeScalingType.YARN)
        w.add_rope_scaling_factor(4.0)
        w.add_rope_scaling_orig_ctx_len(1024)
    if arch == "qwen3":
        w.add_key_length(HEAD_DIM)
        w.add_value_length(HEAD_DIM)
    write_tokenizer(w, spm=(arch == "qwen2"))

    permuted = arch == "llama"
    refs: dict[str, np.ndarray] = {}

    def put(gguf_name, hf_name, hf_weight, qtype, permute_heads=0):
        if gguf_name == skip:
            return
        stored = hf_to_gguf_permute(hf_weight, permute_heads) if permute_heads else hf_weight
        if qtype == T.F16:
            data = stored.astype(np.float16)
            ref = data.astype(np.float32)
        else:
            data, ref = encode(rng, stored, qtype)
        add_tensor(w, gguf_name, data, qtype)
        if permute_heads:
            if qtype == T.F32:
                ref = hf_weight  # the Hugging Face matrix itself
            else:
                ref = gguf_to_hf_unpermute(ref, permute_heads)
        refs[hf_name] = ref

    def mat(rows, cols):
        return (rng.standard_normal((rows, cols)) * 0.05).astype(np.float32)

    def vec(n):
        return (1.0 + rng.standard_normal(n) * 0.1).astype(np.float32)

    q_dim, kv_dim = HEADS * HEAD_DIM, KV_HEADS * HEAD_DIM
    put("token_embd.weight", "model.embed_tokens.weight", mat(VOCAB, HIDDEN), T.Q8_0)
    for i in range(LAYERS):
        b, h = f"blk.{i}.", f"model.layers.{i}."
        qk_type = T.F32 if i == 0 else T.Q8_0
        put(b + "attn_norm.weight", h + "input_layernorm.weight", vec(HIDDEN), T.F32)
        put(b + "attn_q.weight", h + "self_attn.q_proj.weight", mat(q_dim, HIDDEN), qk_type,
            HEADS if permuted else 0)
        put(b + "attn_k.weight", h + "self_attn.k_proj.weight", mat(kv_dim, HIDDEN), qk_type,
            KV_HEADS if permuted else 0)
        put(b + "attn_v.weight", h + "self_attn.v_proj.weight", mat(kv_dim, HIDDEN), T.F16)
        put(b + "attn_output.weight", h + "self_attn.o_proj.weight", mat(HIDDEN, q_dim), T.BF16)
        if arch == "qwen2":
            put(b + "attn_q.bias", h + "self_attn.q_proj.bias", vec(q_dim), T.F32)
            put(b + "attn_k.bias", h + "self_attn.k_proj.bias", vec(kv_dim), T.F32)
            put(b + "attn_v.bias", h + "self_attn.v_proj.bias", vec(kv_dim), T.F32)
        if arch == "qwen3":
            put(b + "attn_q_norm.weight", h + "self_attn.q_norm.weight", vec(HEAD_DIM), T.F32)
            put(b + "attn_k_norm.weight", h + "self_attn.k_norm.weight", vec(HEAD_DIM), T.F32)
        put(b + "ffn_norm.weight", h + "post_attention_layernorm.weight", vec(HIDDEN), T.F32)
        put(b + "ffn_gate.weight", h + "mlp.gate_proj.weight", mat(INTER, HIDDEN),
            T.Q4_0 if i == 0 else T.Q4_K)
        put(b + "ffn_up.weight", h + "mlp.up_proj.weight", mat(INTER, HIDDEN),
            T.Q5_1 if i == 0 else T.Q5_K)
        put(b + "ffn_down.weight", h + "mlp.down_proj.weight", mat(HIDDEN, INTER),
            T.Q4_1 if i == 0 else T.Q6_K)
    put("output_norm.weight", "model.norm.weight", vec(HIDDEN), T.F32)
    if arch == "llama":  # Llama 3.1-style RoPE scaling: factor 8, original context 1024
        w.add_tensor("rope_freqs.weight", llama3_rope_factors(10000.0, HEAD_DIM, 8.0, 1.0, 4.0, 1024))
    if arch != "llama":  # llama ties its embeddings
        put("output.weight", "lm_head.weight", mat(VOCAB, HIDDEN), T.Q5_0)

    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    if skip or arch not in ("llama", "qwen2", "qwen3"):
        return
    ref_dir = out / f"{name}.ref"
    ref_dir.mkdir(exist_ok=True)
    lines = []
    for hf_name, ref in refs.items():
        ref.astype("<f4").tofile(ref_dir / f"{hf_name}.f32")
        lines.append(" ".join([hf_name] + [str(d) for d in ref.shape]))
    (ref_dir / "manifest.txt").write_text("\n".join(lines) + "\n")


def main() -> None:
    global HIDDEN, HEADS, KV_HEADS, HEAD_DIM, INTER, LAYERS, VOCAB
    if "--tiny" in sys.argv[3:]:
        HIDDEN, HEADS, KV_HEADS, HEAD_DIM, INTER, LAYERS, VOCAB = 32, 2, 1, 16, 32, 1, 8
    out = Path(sys.argv[1])
    rng = np.random.default_rng(int(sys.argv[2]))
    out.mkdir(parents=True, exist_ok=True)
    write_metadata_file(out, rng)
    for arch in ("llama", "qwen2", "qwen3"):
        write_model(out, rng, arch)
    write_model(out, rng, "llama", skip="blk.1.ffn_up.weight", file_name="missing_tensor")
    write_model(out, rng, "gpt2", file_name="gpt2")


if __name__ == "__main__":
    main()
