#!/usr/bin/env bash
# The README's main job: installs what is missing, builds the `arbor` CLI, and generates text
# with the CPU engine on the checked-in test model (random weights: the text is gibberish; the
# embedded Game of 24 model replaces it). Extra arguments go to `arbor generate`.
set -euo pipefail
cd "$(dirname "$0")/.."
bash tools/setup.sh
ARBOR_BUILD_TARGETS=arbor_cli bash tools/build.sh
./build/bin/arbor generate --model models/test-moe --prompt "4 9 10 13" --max_tokens 32 \
  --logprobs "$@"
