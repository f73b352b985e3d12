#!/usr/bin/env bash
# `arbor score` against the float64 PyTorch forward (tools/score_reference.py): per-token
# log-probs and perplexity of token ids and of text, in process on every checked-in model (bf16,
# f32 sharded, f16 tied, the Game of 24 model) and through a mesh (`arbor up`, test model, with
# expert workers and with the experts in the router); bad ids files are refused naming the file.
# Bounded: each mesh must be up within 90 s, each call done within 120 s.
set -euo pipefail
arbor=$1
source_dir=$2
py=/usr/bin/python3
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

# compare GOT.json REF.json: every token's log-prob within 1e-4 of the reference (the engine is
# f32, the reference float64; measured: at most 1.6e-5) and the perplexities within 1e-5 relative.
compare() {
  "$py" - "$1" "$2" <<'PY'
import json, sys
got, ref = (json.load(open(p)) for p in sys.argv[1:3])
g, r = got["tokens"], ref["tokens"]
assert len(g) == len(r) and len(g) > 0, (len(g), len(r))
worst = 0.0
for a, b in zip(g, r):
    assert (a["index"], a["id"]) == (b["index"], b["id"]), (a, b)
    worst = max(worst, abs(a["logprob"] - b["logprob"]))
assert worst <= 1e-4, f"max |logprob - reference| = {worst}"
rel = abs(got["perplexity"] - ref["perplexity"]) / ref["perplexity"]
assert rel <= 1e-5, f"perplexity {got['perplexity']} vs reference {ref['perplexity']}"
assert ref["gate_margin"] > 1e-4, f"the reference has a near-tie in gating: {ref['gate_margin']}"
print(f"  {len(g)} tokens, max |diff| {worst:.2e}, perplexity {got['perplexity']:.4f} "
      f"(reference {ref['perplexity']:.4f})")
PY
}

# ids GOT.json: the scored ids, first token included, comma-separated.
ids_of() {
  "$py" -c 'import json,sys; j=json.load(open(sys.argv[1])); t=j["tokens"]
print(",".join(str(x) for x in [sys.argv[2]] + [e["id"] for e in t]))' "$1" "$2"
}

text="The tree of thoughts grows: 4 9 10 13"
for model in models/test-moe tests/data/tiny-mha-top1 tests/data/tiny-gqa4-tied models/game24-moe; do
  echo "== $model, in process"
  dir=$source_dir/$model
  # Text: BOS + the tokenizer's ids; the reference scores the same ids.
  timeout 120 "$arbor" score --model "$dir" --text "$text" --json > "$work/text.json"
  timeout 120 "$py" "$source_dir/tools/score_reference.py" "$dir" \
    --ids "$(ids_of "$work/text.json" 1)" > "$work/ref.json"
  compare "$work/text.json" "$work/ref.json"
  # An ids file, commas and newlines mixed, with top alternatives.
  printf '1, 40 41\n42,7 300\n12 9\n' > "$work/ids.txt"
  timeout 120 "$arbor" score --model "$dir" --ids_file "$work/ids.txt" --top_logprobs 3 --json \
    > "$work/ids.json"
  timeout 120 "$py" "$source_dir/tools/score_reference.py" "$dir" --ids 1,40,41,42,7,300,12,9 \
    > "$work/ref.json"
  compare "$work/ids.json" "$work/ref.json"
done

echo "== bad input"
printf '1 2 x3\n' > "$work/bad.txt"
if out=$("$arbor" score --model "$source_dir/models/test-moe" --ids_file "$work/bad.txt" 2>&1); then
  echo "a bad ids file was accepted"; exit 1
fi
grep -q "bad.txt: byte 4: expected a token id" <<< "$out" || { echo "$out"; exit 1; }
printf '1 2 384\n' > "$work/bad.txt"
if out=$("$arbor" score --model "$source_dir/models/test-moe" --ids_file "$work/bad.txt" 2>&1); then
  echo "a token outside the vocabulary was accepted"; exit 1
fi
grep -q "384 outside" <<< "$out" || { echo "$out"; exit 1; }

echo "== through a mesh"
source "$source_dir/tools/arbor_up.bash"
arbor_up "$arbor" --model "$source_dir/models/test-moe" --workers 2
router=$(arbor_endpoint router)
kvstore=$(arbor_endpoint kvstore)
[ -n "$router" ] && [ -n "$kvstore" ] || { cat "$ARBOR_UP_DIR/ready.json"; exit 1; }
timeout 120 "$arbor" score --router "$router" --kvstore "$kvstore" --ids_file "$work/ids.txt" \
  --top_logprobs 2 --json > "$work/mesh.json"
timeout 120 "$py" "$source_dir/tools/score_reference.py" "$source_dir/models/test-moe" \
  --ids 1,40,41,42,7,300,12,9 > "$work/ref.json"
compare "$work/mesh.json" "$work/ref.json"
timeout 120 "$arbor" score --router "$router" --kvstore "$kvstore" --text "$text" --json \
  > "$work/mesh-text.json"
timeout 120 "$py" "$source_dir/tools/score_reference.py" "$source_dir/models/test-moe" \
  --ids "$(ids_of "$work/mesh-text.json" 1)" > "$work/ref.json"
compare "$work/mesh-text.json" "$work/ref.json"
timeout 120 "$arbor" score --router "$router" --kvstore "$kvstore" --ids_file "$work/ids.txt" \
  | tail -1 | grep -q "perplexity"
kill -TERM "$ARBOR_UP_PID"
wait "$ARBOR_UP_PID" || true

echo "== through a mesh whose router hosts the experts (arbor up --workers 0)"
arbor_up "$arbor" --model "$source_dir/models/test-moe" --workers 0
grep -q '"name": "expert' "$ARBOR_UP_DIR/ready.json" && { echo "expert workers started"; exit 1; }
timeout 120 "$arbor" score --router "$(arbor_endpoint router)" --kvstore "$(arbor_endpoint kvstore)" \
  --ids_file "$work/ids.txt" --json > "$work/local.json"
timeout 120 "$py" "$source_dir/tools/score_reference.py" "$source_dir/models/test-moe" \
  --ids 1,40,41,42,7,300,12,9 > "$work/ref.json"
compare "$work/local.json" "$work/ref.json"
echo "ok"
