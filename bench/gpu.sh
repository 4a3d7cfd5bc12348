#!/usr/bin/env bash
# The GPU benchmark runs whose results are kept in bench/results/gpu-*.json.
# Run on a CUDA machine from the repository root, with the worker's dependencies installed:
#   bash bench/gpu.sh check bert-512 bert-50 minilm-512 minilm-50
# Each step writes its JSON (and chart) to $OUT (default: bench/results). Extra settings pass
# through the environment, e.g. EMBED_PROCESSES=4 EMBED_MODEL__REPLICAS=2.
set -u
OUT=${OUT:-bench/results}
MODELS=${MODELS:-/tmp/embed-models}
TOKENIZER=${TOKENIZER:-}  # a directory with vocab.txt and tokenizer.json (default: the bundled model's)
export HF_HUB_OFFLINE=1 PYTHONUNBUFFERED=1 EMBED_LOG_LEVEL=${EMBED_LOG_LEVEL:-WARNING}
mkdir -p "$OUT" "$MODELS"

model() {  # model SHAPE: a random-weight model of that shape (speed does not depend on the weights)
    [ -f "$MODELS/$1/config.json" ] || python3 scripts/random_model.py "$1" "$MODELS/$1" ${TOKENIZER:+--tokenizer "$TOKENIZER"} >/dev/null
    echo "$MODELS/$1"
}

bench() {  # bench LABEL SHAPE TOKENS DOCS: documents of exactly TOKENS tokens
    local label=$1 shape=$2 tokens=$3 docs=$4
    echo "== $label: $shape, $docs documents of $tokens tokens, processes ${EMBED_PROCESSES:-1}, replicas ${EMBED_MODEL__REPLICAS:-1}"
    EMBED_MODEL__NAME=$(model "$shape") timeout "${STEP_TIMEOUT:-280}" python3 -m loadgen bench --synthetic "$docs" --lengths "$tokens-$tokens" \
        --st-batch-sizes "${ST_BATCH_SIZES:-64,128,256}" ${SKIP_ST:+--skip st} --partitions "${PARTITIONS:-8}" --out "$OUT" --label "$label${LABEL_SUFFIX:-}"
}

for step in "$@"; do
    case $step in
        check) timeout 240 python3 scripts/gpu_check.py "$(model bert-base)" --out "$OUT/gpu-check-bert-base.json" ;;
        bert-512) bench gpu-bert-base-512 bert-base 512 "${DOCS_512:-20000}" ;;
        bert-50) bench gpu-bert-base-50 bert-base 50 "${DOCS_50:-200000}" ;;
        minilm-512) bench gpu-minilm-l6-512 minilm-l6 512 "${DOCS_512:-20000}" ;;
        minilm-50) bench gpu-minilm-l6-50 minilm-l6 50 "${DOCS_50:-200000}" ;;
        *) echo "unknown step $step" >&2; exit 2 ;;
    esac
done
