#!/usr/bin/env bash
# The whole fairseq-nas pipeline on the generated demo corpus, sized for a 2-core CPU:
# supernet with DSS -> measured latency -> collect -> rank (+ prune) -> latency model ->
# search under a latency limit -> export -> fine-tune -> translate and score, plus the
# largest and smallest subnets and a fairseq `transformer` of similar size for comparison.
# Ends with a summary table and OUT/REPORT.md (with plots).
#
#   bash scripts/demo.sh [OUT]            (default OUT: demo-out)
#   DEMO_SIZE=tiny bash scripts/demo.sh   a minutes-long smoke run (used by the tests)
#   DATA_BIN=DIR bash scripts/demo.sh     your own corpus: a data-bin from prepare-parallel.sh
#       (BPE output is decoded with its sentencepiece model; TGT_LANG, default en, is the
#       language BLEU detokenizes). Any size variable below (SUPER_UPDATES, FT_UPDATES, ...)
#       can be set in the environment to override the DEMO_SIZE default.
#
# Every stage is skipped when its output exists, so an interrupted demo resumes.
set -euo pipefail

usage() { sed -n '2,15p' "$0" | sed 's/^# \{0,1\}//'; }
case "${1:-}" in -h|--help) usage; exit 0 ;; -*) echo "demo.sh: error: unknown option $1" >&2; exit 2 ;; esac

REPO="$(cd "$(dirname "$0")/.." && pwd)"
OUT="$(mkdir -p "${1:-demo-out}" && cd "${1:-demo-out}" && pwd)"
if [ -x "$REPO/.venv/bin/python" ]; then export PATH="$REPO/.venv/bin:$PATH"; fi
PY="${PYTHON:-python}"
export PYTHONWARNINGS=ignore OMP_NUM_THREADS="${OMP_NUM_THREADS:-2}"
SPACE="$REPO/scripts/demo-space.yaml"
USER_DIR="$REPO/fairseq_nas"

# defaults() sets each NAME=VALUE only where the environment has not set NAME
defaults() { local kv k; for kv in "$@"; do k="${kv%%=*}"; [ -n "${!k:-}" ] || printf -v "$k" '%s' "${kv#*=}"; done; }
case "${DEMO_SIZE:-small}" in
  small) defaults TRAIN=6000 SUPER_UPDATES=500 DSS_EVERY=3 DSS_TIMES=2 DSS_ITERS=3 DSS_POP=16 N_LAT=60 LAT_RUNS=20 \
                  N_COLLECT=80 EVAL_SENTS=150 GENS=15 POP=40 PARENTS=10 MUT=15 CROSS=15 FT_UPDATES=150 TOPK=3 \
                  DIV_SUBNETS=24 ;;
  tiny)  defaults TRAIN=800 SUPER_UPDATES=40 DSS_EVERY=1 DSS_TIMES=2 DSS_ITERS=2 DSS_POP=8 N_LAT=16 LAT_RUNS=3 \
                  N_COLLECT=20 EVAL_SENTS=30 GENS=3 POP=12 PARENTS=4 MUT=4 CROSS=4 FT_UPDATES=6 TOPK=2 \
                  DIV_SUBNETS=6 ;;
  *) echo "demo.sh: error: DEMO_SIZE must be small or tiny, got ${DEMO_SIZE}" >&2; exit 2 ;;
esac

mkdir -p "$OUT/plots"
T0=$(date +%s)
stage() { echo; echo "=== [$(( $(date +%s) - T0 ))s] $*"; }
have() { [ -e "$1" ] && echo "    (done: $1)"; }
TRAIN_COMMON=(--user-dir "$USER_DIR" --optimizer adam --adam-betas "(0.9, 0.98)" --lr 1e-3
              --lr-scheduler inverse_sqrt --warmup-updates 100 --max-tokens 2048
              --criterion label_smoothed_cross_entropy --label-smoothing 0.1 --dropout 0.1
              --no-progress-bar --log-format json --log-interval 10 --no-epoch-checkpoints
              --required-batch-size-multiple 1 --num-workers 0 --seed 1)
GEN_COMMON=(--user-dir "$USER_DIR" --beam 5 --batch-size 64 --gen-subset test --required-batch-size-multiple 1
            --max-len-a 1.2 --max-len-b 10)
TGT_LANG="${TGT_LANG:-en}"
if [ -n "${DATA_BIN:-}" ]; then
  DATA="$(cd "$DATA_BIN" 2>/dev/null && pwd)" \
    || { echo "demo.sh: error: DATA_BIN=$DATA_BIN: no such directory (a data-bin from prepare-parallel.sh)" >&2; exit 2; }
  for f in dict."$TGT_LANG".txt test.*-*."$TGT_LANG".idx; do
    compgen -G "$DATA/$f" > /dev/null \
      || { echo "demo.sh: error: DATA_BIN=$DATA: no $f (needs train/valid/test of a pair whose target is TGT_LANG=$TGT_LANG)" >&2; exit 2; }
  done
  # prepare-parallel.sh puts its sentencepiece model next to the data-bin
  [ -f "$DATA/../bpe/spm.model" ] && GEN_COMMON+=(--post-process sentencepiece)
else
  DATA="$OUT/data/data-bin"
fi

if [ -n "${DATA_BIN:-}" ]; then
  stage "1. data: $DATA ($(wc -l < "$DATA/dict.$TGT_LANG.txt") target types)"
else
  stage "1. data: generated corpus ($TRAIN training pairs)"
  bash "$REPO/data-prep/prepare-demo.sh" "$OUT/data" --train "$TRAIN" --valid 300 --test 300 | tail -3
fi

stage "2. supernet with Dynamic Space Shrinking ($SUPER_UPDATES updates)"
if ! have "$OUT/supernet/done"; then
  mkdir -p "$OUT/supernet"
  fairseq-train "$DATA" "${TRAIN_COMMON[@]}" --task supernet_translation --arch supernet --search-space "$SPACE" \
      --sampler dss --dss-every-epochs "$DSS_EVERY" --dss-times "$DSS_TIMES" --dss-iterations "$DSS_ITERS" \
      --dss-population "$DSS_POP" --dss-valid-tokens 4096 --dss-divergence-subnets "$DIV_SUBNETS" \
      --dss-divergence-tokens 1024 \
      --max-update "$SUPER_UPDATES" --save-dir "$OUT/supernet" 2>&1 | tee -a "$OUT/supernet/train.log" \
      | grep -E '"(train|valid)"|DSS|dss' | cut -c1-200 || true
  [ -f "$OUT/supernet/checkpoint_last.pt" ] || { echo "demo.sh: error: supernet training failed; see $OUT/supernet/train.log" >&2; exit 1; }
  touch "$OUT/supernet/done"
fi
SUPERNET="$OUT/supernet/checkpoint_last.pt"
fairseq-nas report dss "$OUT/supernet" --log "$OUT/supernet/train.log" --out "$OUT/plots" > /dev/null || true

stage "3. measured latency of $N_LAT subnets on this CPU"
fairseq-nas latency --space "$SPACE" -n "$N_LAT" --seed 1 --dict "$DATA" --runs "$LAT_RUNS" --warmup 2 \
    --threads 1 --out "$OUT/latency.jsonl" | tail -2

stage "4. collect: inherited-weight validation loss of $N_COLLECT subnets"
fairseq-nas collect "$DATA" --supernet "$SUPERNET" --space "$SPACE" -n "$N_COLLECT" --seed 2 \
    --max-sentences-eval "$EVAL_SENTS" --cpu --out "$OUT/archs.jsonl" --no-progress | tail -2

stage "5. rank: latency model; pairwise GBDT ranker, importance, pruned space"
fairseq-nas rank "$OUT/latency.jsonl" --target latency_ms --space "$SPACE" --refit \
    --out "$OUT/latency_model" > "$OUT/latency_model.txt"
grep -iE "tau|within|latency" "$OUT/latency_model.txt" | head -6 || true
# hardware-aware pruning (RankNAS): groups that matter for latency stay searchable too
fairseq-nas rank "$OUT/archs.jsonl" --target valid_loss --space "$SPACE" --prune --theta 1.15 \
    --keep-important "$OUT/latency_model/importance.json" \
    --importance-samples 60 --refit --out "$OUT/ranker" | tail -27
cp "$OUT/ranker/importance.png" "$OUT/plots/importance.png" 2>/dev/null || true

stage "6. search under a latency limit"
LIMIT=$("$PY" - "$OUT/latency.jsonl" <<'EOF'
import json, statistics, sys
ms = [json.loads(l)["latency_ms"] for l in open(sys.argv[1]) if l.strip()]
print(f"{statistics.median(ms):.2f}")  # the median measured latency: a limit half the space meets
EOF
)
echo "    latency limit: $LIMIT ms (median measured subnet)"
SEARCH_SPACE="$OUT/ranker/pruned_space.yaml"; [ -f "$SEARCH_SPACE" ] || SEARCH_SPACE="$SPACE"
search() {
  fairseq-nas search --space "$1" --feature-space "$SPACE" --ranker "$OUT/ranker" \
      --latency-model "$OUT/latency_model" --latency-ms "$LIMIT" --dict "$DATA" --threads 1 \
      --runs "$LAT_RUNS" --warmup 2 --top-k "$TOPK" --generations "$GENS" --population "$POP" \
      --parents "$PARENTS" --mutations "$MUT" --crossovers "$CROSS" --out "$OUT/search" --resume \
      2>&1 | tee "$OUT/search.log"  # pipefail: the status is the search's
}
if ! have "$OUT/search/best.json"; then
  if ! search "$SEARCH_SPACE"; then
    grep -q "no subnet meets the limit" "$OUT/search.log" && [ "$SEARCH_SPACE" != "$SPACE" ] \
      || { echo "demo.sh: error: search failed; see above" >&2; exit 1; }
    echo "    the pruned space cannot meet the limit (its fixed values are too slow): searching the full space"
    rm -rf "$OUT/search"
    search "$SPACE"
  fi
fi
cp "$OUT/search/pareto.png" "$OUT/plots/pareto.png"

stage "7. export and fine-tune: the subnet found, the largest and the smallest subnet"
fairseq-nas space sample "$SPACE" --largest > "$OUT/largest.json"
fairseq-nas space sample "$SPACE" --smallest > "$OUT/smallest.json"
cp "$OUT/search/best.json" "$OUT/found.json"
for name in found largest smallest; do
  if ! have "$OUT/finetune-$name/done"; then
    fairseq-nas export --supernet "$SUPERNET" --subnet "$OUT/$name.json" --out "$OUT/$name.pt" > "$OUT/$name.export.txt"
    echo "    $(head -1 "$OUT/$name.export.txt")"
    fairseq-train "$DATA" "${TRAIN_COMMON[@]}" --arch nas_subnet --subnet "$OUT/$name.pt" \
        --finetune-from-model "$OUT/$name.pt" --max-update "$FT_UPDATES" --lr 5e-4 --warmup-updates 10 \
        --save-dir "$OUT/finetune-$name" > "$OUT/finetune-$name.log" 2>&1 \
      || { echo "demo.sh: error: fine-tuning $name failed; see $OUT/finetune-$name.log" >&2; exit 1; }
    touch "$OUT/finetune-$name/done"
  fi
done

stage "8. baseline: a fairseq transformer of similar size, trained from scratch for the same updates"
read -r B_EMB B_LAYERS_E B_LAYERS_D < <("$PY" - "$OUT/found.json" <<'EOF'
import json, sys
s = json.load(open(sys.argv[1]))
print(s["encoder"]["embed_dim"], len(s["encoder"]["layers"]), len(s["decoder"]["layers"]))
EOF
)
if ! have "$OUT/transformer/done"; then
  fairseq-train "$DATA" "${TRAIN_COMMON[@]}" --arch transformer --share-decoder-input-output-embed \
      --encoder-embed-dim "$B_EMB" --decoder-embed-dim "$B_EMB" --encoder-ffn-embed-dim $((2 * B_EMB)) \
      --decoder-ffn-embed-dim $((2 * B_EMB)) --encoder-attention-heads 4 --decoder-attention-heads 4 \
      --encoder-layers "$B_LAYERS_E" --decoder-layers "$B_LAYERS_D" \
      --max-update $((SUPER_UPDATES + FT_UPDATES)) --save-dir "$OUT/transformer" > "$OUT/transformer.log" 2>&1 \
    || { echo "demo.sh: error: baseline training failed; see $OUT/transformer.log" >&2; exit 1; }
  touch "$OUT/transformer/done"
fi
# the same architecture as a subnet, so that its latency is measured with the same protocol
"$PY" - "$B_EMB" "$B_LAYERS_E" "$B_LAYERS_D" > "$OUT/transformer.json" <<'EOF'
import json, sys
e, le, ld = map(int, sys.argv[1:])
lay = dict(operator="self_attention", ffn_dim=2 * e, heads=4, activation="relu", rpr_len=0, norm="post")
print(json.dumps({"encoder": {"embed_dim": e, "layers": [lay] * le},
                  "decoder": {"embed_dim": e, "layers": [dict(lay, enc_attn_layers=1)] * ld}}))
EOF

stage "9. translate the test set (beam 5), score, measure latency"
for name in found largest smallest transformer; do
  ck="$OUT/finetune-$name/checkpoint_best.pt"; [ "$name" = transformer ] && ck="$OUT/transformer/checkpoint_best.pt"
  if ! have "$OUT/$name.bleu.json"; then
    fairseq-generate "$DATA" "${GEN_COMMON[@]}" --path "$ck" > "$OUT/$name.gen" 2> "$OUT/$name.gen.log"
    fairseq-nas bleu "$OUT/$name.gen" --lang "$TGT_LANG" --json "$OUT/$name.bleu.json" > "$OUT/$name.bleu.txt"
    echo "    $name: $(head -1 "$OUT/$name.bleu.txt")"
  fi
done
"$PY" - "$OUT" > "$OUT/compare.subnets.jsonl" <<'EOF'
import json, sys  # one subnet per line: found, largest, smallest, transformer
for name in ("found", "largest", "smallest", "transformer"):
    print(json.dumps(json.load(open(f"{sys.argv[1]}/{name}.json"))))
EOF
"$PY" - "$SPACE" "$OUT/compare-space.yaml" <<'EOF'
import sys, yaml  # the demo space plus post-norm, so the transformer's architecture is in it
d = yaml.safe_load(open(sys.argv[1]))
for st in ("encoder", "decoder"):
    d[st]["norm"] = ["pre", "post"]
d["name"] = "demo_compare"
yaml.safe_dump(d, open(sys.argv[2], "w"), sort_keys=False)
EOF
fairseq-nas latency --space "$OUT/compare-space.yaml" --subnets "$OUT/compare.subnets.jsonl" --dict "$DATA" --runs "$LAT_RUNS" \
    --warmup 2 --threads 1 --out "$OUT/compare.latency.jsonl" --no-share-all-embeddings | tail -1

stage "10. report"
"$PY" -m fairseq_nas.report.demo "$OUT" --limit-ms "$LIMIT" --seconds $(( $(date +%s) - T0 )) ${DATA_BIN:+--data "$DATA"}
