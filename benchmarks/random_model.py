"""Build a random-weight transformers folder of a real architecture, for speed runs.

Speed does not depend on weight values, and the GPU machine cannot receive real weights
(at most 64 MiB travel with a command), so GPU speed benchmarks run on a model of the
real shape with random weights: same layers, heads, KV heads, hidden and vocabulary
sizes, same tokenizer, hence the same token counts and the same FLOPs per forward.

Shapes (configs as published for the Qwen2.5 family; the tokenizer is the shared Qwen2.5
one, taken from a folder that holds it, e.g. a converted pack):

- ``qwen2.5-1.5b``: Qwen2.5(-Coder)-1.5B-Instruct, the packs' quality model;
- ``qwen2.5-7b``: Qwen2.5(-Coder)-7B-Instruct.

    python benchmarks/random_model.py --shape qwen2.5-1.5b --tokenizer ~/.cache/hoprank/hf/qwen2.5-coder-1.5b \\
        --out /tmp/q15 --device cuda
    python benchmarks/perf_rankers.py --model /tmp/q15 --device cuda --queries 8

Generation from random weights is noise: RankGPT's parse falls back (recorded in its
trace) and its length is whatever the noise gives up to the cap; ``perf_rankers.py``
therefore also times RankGPT at its cap (forced ``max_new_tokens``). Quality figures
never come from such a model.
"""

from __future__ import annotations

import argparse
import json
import shutil
import time
from pathlib import Path
from typing import Any

SHAPES: dict[str, dict[str, Any]] = {
    "qwen2.5-1.5b": {
        "hidden_size": 1536,
        "intermediate_size": 8960,
        "num_hidden_layers": 28,
        "num_attention_heads": 12,
        "num_key_value_heads": 2,
        "vocab_size": 151936,
        "tie_word_embeddings": True,
    },
    "qwen2.5-7b": {
        "hidden_size": 3584,
        "intermediate_size": 18944,
        "num_hidden_layers": 28,
        "num_attention_heads": 28,
        "num_key_value_heads": 4,
        "vocab_size": 152064,
        "tie_word_embeddings": False,
    },
    # a 2-layer toy of the same family, to check the script itself on a CPU
    "qwen2.5-tiny": {
        "hidden_size": 64,
        "intermediate_size": 128,
        "num_hidden_layers": 2,
        "num_attention_heads": 4,
        "num_key_value_heads": 2,
        "vocab_size": 151936,
        "tie_word_embeddings": True,
    },
}
COMMON = {
    "model_type": "qwen2",
    "architectures": ["Qwen2ForCausalLM"],
    "hidden_act": "silu",
    "max_position_embeddings": 32768,
    "rms_norm_eps": 1e-6,
    "rope_theta": 1000000.0,
    "use_sliding_window": False,
    "bos_token_id": 151643,
    "eos_token_id": 151645,
    "initializer_range": 0.02,
}
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "chat_template.jinja", "generation_config.json")


def build(shape: str, tokenizer_dir: Path, out: Path, device: str, seed: int) -> dict[str, Any]:
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    if shape not in SHAPES:
        raise SystemExit(f"unknown shape {shape!r}; known: {', '.join(SHAPES)}")
    t0 = time.perf_counter()
    out.mkdir(parents=True, exist_ok=True)
    for name in TOKENIZER_FILES:
        src = tokenizer_dir / name
        if src.exists():
            shutil.copy(src, out / name)
    if not (out / "tokenizer.json").exists():
        raise SystemExit(f"no tokenizer.json in {tokenizer_dir}")
    cfg = AutoConfig.for_model(**COMMON, **SHAPES[shape])
    torch.manual_seed(seed)
    with torch.device(device):
        model = AutoModelForCausalLM.from_config(cfg, dtype=torch.bfloat16)
    n_params = sum(p.numel() for p in model.parameters())
    model.save_pretrained(out)
    info = {
        "shape": shape,
        "params": n_params,
        "seconds": round(time.perf_counter() - t0, 1),
        "random_weights": True,
        "seed": seed,
    }
    (out / "random-weights.json").write_text(json.dumps(info, indent=1))
    return info


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--shape", default="qwen2.5-1.5b", choices=sorted(SHAPES))
    ap.add_argument("--tokenizer", type=Path, required=True, help="folder with the Qwen2.5 tokenizer.json")
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--device", default="cpu", help="where the random weights are drawn (cuda is faster)")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    print(json.dumps(build(args.shape, args.tokenizer, args.out, args.device, args.seed)))


if __name__ == "__main__":
    main()
