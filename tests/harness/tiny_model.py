"""A tiny random-weight llama model in GGUF format, so the real llama.cpp serving path runs without a download.

The architecture, the tokenizer (an SPM vocabulary with the 256 byte tokens, so any text encodes) and the
file format are the real ones; only the weights are random, so the output is gibberish. The same
arguments always give the same bytes (fixed seed). Default size: 64 wide, 2 blocks, about 0.5 MB.
Larger widths make generation slower, which bench/llm uses for streams that last tens of seconds.
"""

import os

WORDS = ["the", "a", "and", "of", "to", "in", "is", "it", "you", "that", "he", "was", "for", "on", "are",
         "with", "as", "I", "his", "they", "be", "at", "one", "have", "this", "from", "or", "had", "by",
         "hot", "word", "but", "what", "some", "we", "can", "out", "other", "were", "all", "there", "when"]
EOS_ID = 2


def vocabulary():
    """(tokens, scores, token types): <unk> <s> </s>, the byte tokens <0x00>..<0xFF>, then '▁word' pieces."""
    tokens = ["<unk>", "<s>", "</s>"] + ["<0x%02X>" % b for b in range(256)] + ["\u2581" + w for w in WORDS]
    types = [2, 3, 3] + [6] * 256 + [1] * len(WORDS)    # unknown, control, byte, normal
    scores = [0.0] * 259 + [-float(i) for i in range(len(WORDS))]
    return tokens, scores, types


def write(path, width=64, blocks=2, heads=4, context=8192, seed=1234):
    """Write the model to `path` (atomically: a half-written model would fail to load) and return path."""
    import gguf
    import numpy as np

    rng = np.random.RandomState(seed)
    tokens, scores, types = vocabulary()
    vocab = len(tokens)
    ff = width * 2

    def weights(*shape):
        return (rng.standard_normal(shape) * 0.2).astype(np.float32)

    tmp = path + ".tmp"
    writer = gguf.GGUFWriter(tmp, "llama")
    writer.add_name("forever-slurm-tiny-%dx%d" % (width, blocks))
    writer.add_context_length(context)
    writer.add_embedding_length(width)
    writer.add_block_count(blocks)
    writer.add_feed_forward_length(ff)
    writer.add_head_count(heads)
    writer.add_head_count_kv(heads)
    writer.add_rope_dimension_count(width // heads)
    writer.add_layer_norm_rms_eps(1e-5)
    writer.add_file_type(gguf.LlamaFileType.ALL_F32)
    writer.add_tokenizer_model("llama")
    writer.add_token_list(tokens)
    writer.add_token_scores(scores)
    writer.add_token_types(types)
    writer.add_bos_token_id(1)
    writer.add_eos_token_id(EOS_ID)
    writer.add_unk_token_id(0)
    # numpy shapes are ggml's dimensions reversed: token_embd is ne=[width, vocab].
    writer.add_tensor("token_embd.weight", weights(vocab, width))
    writer.add_tensor("output_norm.weight", np.ones(width, dtype=np.float32))
    writer.add_tensor("output.weight", weights(vocab, width))
    for i in range(blocks):
        prefix = "blk.%d." % i
        writer.add_tensor(prefix + "attn_norm.weight", np.ones(width, dtype=np.float32))
        for name in ("attn_q", "attn_k", "attn_v", "attn_output"):
            writer.add_tensor(prefix + name + ".weight", weights(width, width))
        writer.add_tensor(prefix + "ffn_norm.weight", np.ones(width, dtype=np.float32))
        writer.add_tensor(prefix + "ffn_gate.weight", weights(ff, width))
        writer.add_tensor(prefix + "ffn_up.weight", weights(ff, width))
        writer.add_tensor(prefix + "ffn_down.weight", weights(width, ff))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    os.replace(tmp, path)
    return path


def missing_llm_packages():
    """The Python packages the real llama.cpp tests need that are not importable here."""
    missing = []
    for module, package in (("llama_cpp.server", "llama-cpp-python[server]"), ("gguf", "gguf")):
        try:
            __import__(module)
        except ImportError:
            missing.append(package)
    return missing


if __name__ == "__main__":
    import argparse
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("path")
    parser.add_argument("--width", type=int, default=64)
    parser.add_argument("--blocks", type=int, default=2)
    args = parser.parse_args()
    print(write(args.path, args.width, args.blocks))
