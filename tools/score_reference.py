#!/usr/bin/python3
"""The float64 PyTorch reference for `arbor score`: the log-probability of every token of a list
of token ids given those before it, from a model folder's weights exactly as stored, through the
independent forward of tools/make_test_model.py (full recompute, no cache).

    /usr/bin/python3 tools/score_reference.py models/test-moe --ids 1,45,7,9

Prints JSON: {"tokens": [{"index": i, "id": id, "logprob": lp}, ...], "sum_logprob": s,
"perplexity": p}, one entry per token after the first.
"""

import argparse
import json
import math
import os
import struct
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from make_test_model import forward  # noqa: E402

DTYPES = {"F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16}


def read_safetensors(path):
    with open(path, "rb") as f:
        data = f.read()
    (n,) = struct.unpack("<Q", data[:8])
    header = json.loads(data[8:8 + n])
    base, out = 8 + n, {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        lo, hi = info["data_offsets"]
        t = torch.frombuffer(bytearray(data[base + lo:base + hi]), dtype=DTYPES[info["dtype"]])
        out[name] = t.reshape(info["shape"])
    return out


def read_weights(model_dir):
    index = os.path.join(model_dir, "model.safetensors.index.json")
    if not os.path.exists(index):
        return read_safetensors(os.path.join(model_dir, "model.safetensors"))
    with open(index) as f:
        files = sorted(set(json.load(f)["weight_map"].values()))
    weights = {}
    for name in files:
        weights.update(read_safetensors(os.path.join(model_dir, name)))
    return weights


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("model", help="model folder")
    ap.add_argument("--ids", required=True, help="comma-separated token ids")
    args = ap.parse_args()
    with open(os.path.join(args.model, "config.json")) as f:
        cfg = json.load(f)
    cfg.setdefault("head_dim", cfg["hidden_size"] // cfg["num_attention_heads"])
    ids = [int(x) for x in args.ids.split(",")]
    stats = {"gate_margin": float("inf")}
    logits = forward(read_weights(args.model), cfg, ids, stats)  # [T, vocab] float64
    logp = torch.log_softmax(logits, dim=-1)
    tokens = [{"index": i, "id": ids[i], "logprob": logp[i - 1, ids[i]].item()}
              for i in range(1, len(ids))]
    total = sum(t["logprob"] for t in tokens)
    print(json.dumps({"tokens": tokens, "sum_logprob": total,
                      "perplexity": math.exp(-total / len(tokens)),
                      "gate_margin": stats["gate_margin"]}))


if __name__ == "__main__":
    main()
