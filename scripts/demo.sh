#!/usr/bin/env bash
# The whole fairseq-nas pipeline on the generated demo corpus, sized for a 2-core CPU, and the
# tool's claim measured (DESIGN.md section 11): fairseq `transformer` baselines of several sizes,
# each inside the search space; one supernet (SAMPLER: uniform, sandwich or dss), searched once per baseline with the
# baseline's own measured latency as the limit; then, per baseline,
#   claim 1: the found architecture trained from scratch for SCRATCH_UPDATES beats the baseline
#            trained from scratch for the same updates, at no more measured latency;
#   claim 2: the found subnet fine-tuned from its inherited weights for FT_UPDATES (fewer)
#            reaches that BLEU.
# Ends with OUT/REPORT.md (verdict first, BLEU-vs-latency plot, table, compute of each path),
# OUT/comparison.jsonl (one row per baseline) and a summary on stdout.
#
#   bash scripts/demo.sh [OUT]            (default OUT: demo-out)
#   DEMO_SIZE=tiny bash scripts/demo.sh   a minutes-long smoke run (used by the tests)
#   DATA_BIN=DIR bash scripts/demo.sh     your own corpus: a data-bin from data-prep/prepare-*.sh
#       (BPE output is decoded with its sentencepiece model; TGT_LANG, default en, is the
#       language BLEU detokenizes). Any size variable below (SUPER_UPDATES, SCRATCH_UPDATES,
#       FT_UPDATES, BASELINES, SPACE, LR, FT_LR, ...) can be set in the environment to override the default.
#
# Every stage is skipped when its output exists, so an interrupted demo resumes. Independent
# trainings run two at a time (JOBS=2), one thread each; latency is measured with nothing else running.
set -euo pipefail

usage() { sed -n '2,21p' "$0" | sed 's/^# \{0,1\}//'; }
case "${1:-}" in -h|--help) usage; exit 0 ;; -*) echo "demo.sh: error: unknown option $1" >&2; exit 2 ;; esac

REPO="$(cd "$(dirname "$0")/.." && pwd)"
OUT="$(mkdir -p "${1:-demo-out}" && cd "${1:-demo-out}" && pwd)"
if [ -x "$REPO/.venv/bin/python" ]; then export PATH="$REPO/.venv/bin:$PATH"; fi
PY="${PYTHON:-python}"
export PYTHONWARNINGS=ignore OMP_NUM_THREADS=1
SPACE="${SPACE:-$REPO/scripts/demo-space.yaml}"
USER_DIR="$REPO/fairseq_nas"

# defaults() sets each NAME=VALUE only where the environment has not set NAME
defaults() { local kv k; for kv in "$@"; do k="${kv%%=*}"; [ -n "${!k:-}" ] || printf -v "$k" '%s' "${kv#*=}"; done; }
case "${DEMO_SIZE:-small}" in
  small) defaults TRAIN=6000 SUPER_UPDATES=1200 DSS_EVERY=4 DSS_TIMES=2 DSS_ITERS=3 DSS_POP=16 N_LAT=32 LAT_RUNS=10 \
                  N_COLLECT=40 EVAL_SENTS=100 GENS=10 POP=30 PARENTS=8 MUT=11 CROSS=11 SCRATCH_UPDATES=400 \
                  FT_UPDATES=300 TOPK=5 DIV_SUBNETS=16 BASELINES=96:3:2,128:3:3 LAT_ROUNDS=5 ;;
  tiny)  defaults TRAIN=800 SUPER_UPDATES=120 DSS_EVERY=1 DSS_TIMES=2 DSS_ITERS=2 DSS_POP=8 N_LAT=16 LAT_RUNS=3 \
                  N_COLLECT=20 EVAL_SENTS=30 GENS=3 POP=12 PARENTS=4 MUT=4 CROSS=4 SCRATCH_UPDATES=12 FT_UPDATES=6 \
                  TOPK=2 DIV_SUBNETS=6 BASELINES=128:3:3 LAT_ROUNDS=3 ;;
  *) echo "demo.sh: error: DEMO_SIZE must be small or tiny, got ${DEMO_SIZE}" >&2; exit 2 ;;
esac
# LATENCY_MARGIN: the search's predicted-latency limit is the latency model's figure for the baseline's
# architecture less this share (the baseline's own measured figure swung 34-88 ms between measurements
# on a noisy VM, and a limit from a slow one let the search pick subnets 1.6x slower). REFERENCE_MARGIN: the top K are then timed in the same rounds as the baseline checkpoint
# itself, and the winner must measure at least this share below it there. (Held instead to the
# baseline's earlier figure, a subnet's measured latency moved 4-9% between the search and the final
# measurement on this 2-core VM: a 2% margin let a found model end up slower than its baseline.) The
# comparison is round by round, and the first candidate that meets it is timed again with the baseline
# in fresh rounds before it wins (`search --reference`; on a noisy machine the first of 15 figures to
# pass was often a lucky one).
defaults JOBS=2 SAMPLER=uniform LATENCY_MARGIN=0.04 REFERENCE_MARGIN=0.02 LR=2e-3 PRUNE=0
# LR: every training's peak learning rate (supernet, baselines, found from scratch); FT_LR: fine-tuning's
defaults FT_LR="$LR"
# the final measurement (stage 10) that the claims' latency verdicts rest on: 3x the runs and rounds of
# the others; each found model is judged by its median per-round ratio to its baseline there
defaults FINAL_RUNS=$(( LAT_RUNS * 3 )) FINAL_ROUNDS=$(( LAT_ROUNDS * 3 ))
case "$SAMPLER" in dss|uniform|sandwich) ;;
  *) echo "demo.sh: error: SAMPLER must be dss, uniform or sandwich, got $SAMPLER" >&2; exit 2 ;; esac
defaults FT_WARMUP=$(( FT_UPDATES / 4 > 10 ? FT_UPDATES / 4 : 10 ))
(( FT_UPDATES < SCRATCH_UPDATES )) \
  || { echo "demo.sh: error: FT_UPDATES=$FT_UPDATES must be fewer than SCRATCH_UPDATES=$SCRATCH_UPDATES (claim 2)" >&2; exit 2; }

mkdir -p "$OUT/plots" "$OUT/claim"
T0=$(date +%s)
stage() { echo; echo "=== [$(( $(date +%s) - T0 ))s] $*"; }
have() { [ -e "$1" ] && echo "    (done: $1)"; }
TRAIN_COMMON=(--user-dir "$USER_DIR" --optimizer adam --adam-betas "(0.9, 0.98)" --lr "$LR"
              --lr-scheduler inverse_sqrt --warmup-updates 100 --max-tokens 2048
              --criterion label_smoothed_cross_entropy --label-smoothing 0.1 --dropout 0.1
              --no-progress-bar --log-format json --log-interval 10 --no-epoch-checkpoints
              --required-batch-size-multiple 1 --num-workers 0 --seed 1)
GEN_COMMON=(--user-dir "$USER_DIR" --beam 5 --batch-size 64 --gen-subset test --required-batch-size-multiple 1
            --max-len-a 1.2 --max-len-b 10)
TGT_LANG="${TGT_LANG:-en}"
if [ -n "${DATA_BIN:-}" ]; then
  DATA="$(cd "$DATA_BIN" 2>/dev/null && pwd)" \
    || { echo "demo.sh: error: DATA_BIN=$DATA_BIN: no such directory (a data-bin from data-prep/prepare-parallel.sh, prepare-iwslt14.sh or prepare-wmt14.sh)" >&2; exit 2; }
  for f in dict."$TGT_LANG".txt test.*-*."$TGT_LANG".idx; do
    compgen -G "$DATA/$f" > /dev/null \
      || { echo "demo.sh: error: DATA_BIN=$DATA: no $f (needs train/valid/test of a pair whose target is TGT_LANG=$TGT_LANG)" >&2; exit 2; }
  done
  # prepare-parallel.sh puts its sentencepiece model next to the data-bin
  [ -f "$DATA/../bpe/spm.model" ] && GEN_COMMON+=(--post-process sentencepiece)
else
  DATA="$OUT/data/data-bin"
fi
LAT_COMMON=(--dict "$DATA" --runs "$LAT_RUNS" --rounds "$LAT_ROUNDS" --warmup 2 --threads 1 --no-progress)

# compute RUN STAGE NAME UPDATES PASSES SECONDS: one row of OUT/claim/compute.jsonl
compute() { printf '{"stage": "%s", "name": "%s", "updates": %s, "passes": %s, "seconds": %s}\n' "$@" \
              >> "$OUT/claim/compute.jsonl"; }
# timed STAGE NAME UPDATES PASSES_PER_UPDATE DONE_FILE CMD...: run CMD, record its compute, touch DONE_FILE
timed() {
  local st="$1" name="$2" up="$3" ppu="$4" done_file="$5" t; shift 5
  [ -e "$done_file" ] && return 0
  t=$(date +%s)
  "$@" || return 1
  compute "$st" "$name" "$up" $(( up * ppu )) $(( $(date +%s) - t ))
  touch "$done_file"
}
# parallel FUNCTION ARG...: FUNCTION ARG for every ARG, JOBS at a time; fails if any failed
parallel() {
  local fn="$1" a i=0 rc=0 st f; shift
  st="$(mktemp -d)"
  for a in "$@"; do
    while (( $(jobs -rp | wc -l) >= JOBS )); do wait -n 2>/dev/null || true; done
    ( if "$fn" "$a"; then echo 0; else echo 1; fi > "$st/$i" ) &
    i=$((i + 1))
  done
  wait
  for f in "$st"/*; do [ "$(cat "$f")" = 0 ] || rc=1; done
  rm -rf "$st"
  return $rc
}

if [ -n "${DATA_BIN:-}" ]; then
  stage "1. data: $DATA ($(wc -l < "$DATA/dict.$TGT_LANG.txt") target types)"
else
  stage "1. data: generated corpus ($TRAIN training pairs)"
  bash "$REPO/data-prep/prepare-demo.sh" "$OUT/data" --train "$TRAIN" --valid 300 --test 300 | tail -3
fi
"$PY" -m fairseq_nas.report.claim baselines --space "$SPACE" --specs "$BASELINES" --out "$OUT/claim" \
  > "$OUT/claim/baselines.txt"
mapfile -t NAMES < "$OUT/claim/baselines.txt"
echo "    baselines (fairseq transformer, each inside the space): ${NAMES[*]}"

case "$SAMPLER" in
  dss) SAMPLER_ARGS=(--sampler dss --dss-every-epochs "$DSS_EVERY" --dss-times "$DSS_TIMES" --dss-iterations "$DSS_ITERS"
                     --dss-population "$DSS_POP" --dss-valid-tokens 4096 --dss-divergence-subnets "$DIV_SUBNETS"
                     --dss-divergence-tokens 1024); PASSES=1 ;;
  uniform) SAMPLER_ARGS=(--sampler uniform); PASSES=1 ;;
  sandwich) SAMPLER_ARGS=(--sampler sandwich --sandwich-random 1); PASSES=3 ;;
  *) echo "demo.sh: error: SAMPLER must be dss, uniform or sandwich, got $SAMPLER" >&2; exit 2 ;;
esac
supernet_job() {
  [ -e "$OUT/supernet/done" ] && return 0  # before the redirect below, which would empty the log
  timed supernet "$SAMPLER" "$SUPER_UPDATES" "$PASSES" "$OUT/supernet/done" \
    fairseq-train "$DATA" "${TRAIN_COMMON[@]}" --task supernet_translation --arch supernet --search-space "$SPACE" \
      --share-all-embeddings "${SAMPLER_ARGS[@]}" --max-update "$SUPER_UPDATES" --save-dir "$OUT/supernet" > "$OUT/supernet/train.log" 2>&1 \
    || { echo "demo.sh: error: supernet training failed; see $OUT/supernet/train.log" >&2; return 1; }
}
baseline_job() {
  local run="$OUT/claim/$1" args
  [ -e "$run/baseline/done" ] && return 0  # a finished job keeps its log
  mapfile -t args < "$run/baseline.args"
  timed "baseline training" "$1" "$SCRATCH_UPDATES" 1 "$run/baseline/done" \
    fairseq-train "$DATA" "${TRAIN_COMMON[@]}" "${args[@]}" --max-update "$SCRATCH_UPDATES" \
      --save-dir "$run/baseline" > "$run/baseline.log" 2>&1 \
    || { echo "demo.sh: error: training baseline $1 failed; see $run/baseline.log" >&2; return 1; }
}
first_job() { if [ "$1" = supernet ]; then supernet_job; else for n in "${NAMES[@]}"; do baseline_job "$n"; done; fi; }

stage "2. supernet ($SAMPLER, $SUPER_UPDATES updates) and the baselines from scratch ($SCRATCH_UPDATES updates each), side by side"
mkdir -p "$OUT/supernet"
parallel first_job supernet baselines
grep -E '"valid"' "$OUT/supernet/train.log" | tail -1 | cut -c1-160 || true
SUPERNET="$OUT/supernet/checkpoint_last.pt"
[ "$SAMPLER" = dss ] && { fairseq-nas report dss "$OUT/supernet" --log "$OUT/supernet/train.log" --out "$OUT/plots" > /dev/null || true; }

stage "3. measured latency of $N_LAT subnets and the baselines' architectures on this CPU"
# the baselines' architectures (as subnets) among the latency model's rows: their predicted latency is
# the search limits (stage 7). The supernet shares its embeddings: params are counted so here and in the search
have "$OUT/latency-subnets.jsonl" || { fairseq-nas space sample "$SPACE" -n "$N_LAT" --seed 1
  for n in "${NAMES[@]}"; do cat "$OUT/claim/$n/baseline.json"; done; } > "$OUT/latency-subnets.jsonl.tmp" \
  && mv "$OUT/latency-subnets.jsonl.tmp" "$OUT/latency-subnets.jsonl"
fairseq-nas latency --space "$SPACE" --subnets "$OUT/latency-subnets.jsonl" "${LAT_COMMON[@]}" --share-all-embeddings \
    --out "$OUT/latency.jsonl" | tail -2

stage "4. collect: inherited-weight validation loss of $N_COLLECT subnets"
fairseq-nas collect "$DATA" --supernet "$SUPERNET" --space "$SPACE" -n "$N_COLLECT" --seed 2 \
    --eval-sentences "$EVAL_SENTS" --cpu --out "$OUT/archs.jsonl" --no-progress | tail -2

stage "5. rank: latency model; pairwise GBDT ranker, importance, pruned space"
fairseq-nas rank "$OUT/latency.jsonl" --target drift_corrected_ms --space "$SPACE" --refit \
    --out "$OUT/latency_model" > "$OUT/latency_model.txt"
grep -iE "tau|within|latency" "$OUT/latency_model.txt" | head -6 || true
# hardware-aware pruning (RankNAS): groups that matter for latency stay searchable too
fairseq-nas rank "$OUT/archs.jsonl" --target valid_loss --space "$SPACE" --prune --theta 1.15 \
    --keep-important "$OUT/latency_model/importance.json" \
    --importance-samples 60 --refit --out "$OUT/ranker" | tail -27
cp "$OUT/ranker/importance.png" "$OUT/plots/importance.png" 2>/dev/null || true

stage "6. measured latency of the trained baselines (the search limits)"
BASE_CKPTS=(); for n in "${NAMES[@]}"; do BASE_CKPTS+=("$OUT/claim/$n/baseline/checkpoint_best.pt"); done
fairseq-nas latency --checkpoints "${BASE_CKPTS[@]}" "${LAT_COMMON[@]}" --out "$OUT/claim/baseline-latency.jsonl"

stage "7. search once per baseline: the predicted latency of its architecture less ${LATENCY_MARGIN} as the limit, the top $TOPK timed with it"
# PRUNE=1 searches the pruned space (falling back to the full one where it cannot meet a limit)
search_space="$SPACE"; [ "$PRUNE" = 1 ] && [ -f "$OUT/ranker/pruned_space.yaml" ] && search_space="$OUT/ranker/pruned_space.yaml"
search() {  # search SPACE_FILE NAME LIMIT
  fairseq-nas search --space "$1" --feature-space "$SPACE" --ranker "$OUT/ranker" \
      --latency-model "$OUT/latency_model" --latency-ms "$3" --dict "$DATA" --share-all-embeddings --threads 1 --no-progress \
      --runs "$LAT_RUNS" --rounds "$LAT_ROUNDS" --warmup 2 --top-k "$TOPK" --generations "$GENS" --population "$POP" \
      --parents "$PARENTS" --mutations "$MUT" --crossovers "$CROSS" --out "$OUT/claim/$2/search" --resume \
      --reference "$OUT/claim/$2/baseline/checkpoint_best.pt" --reference-margin "$REFERENCE_MARGIN" \
      2>&1 | tee "$OUT/claim/$2/search.log" | tail -4  # pipefail: the status is the search's
}
for n in "${NAMES[@]}"; do
  run="$OUT/claim/$n"
  # the latency model's figure for the baseline's architecture less the margin -> run/search.json (what the
  # report reads too): predictions are held to a prediction, which does not move with the machine's speed
  limit=$("$PY" -m fairseq_nas.report.claim limit --latency "$OUT/claim/baseline-latency.jsonl" \
            --checkpoint "$run/baseline/checkpoint_best.pt" --margin "$LATENCY_MARGIN" --out "$run/search.json" \
            --latency-model "$OUT/latency_model" --subnet "$run/baseline.json" --space "$SPACE")
  echo "  $n: limit $limit ms"
  if ! have "$run/search/best.json"; then
    rc=0; search "$search_space" "$n" "$limit" || rc=$?
    if (( rc != 0 )); then  # exit status 3: no subnet of that space meets the limit
      (( rc == 3 )) && [ "$search_space" != "$SPACE" ] \
        || { echo "demo.sh: error: search for $n failed; see $run/search.log" >&2; exit 1; }
      echo "    the pruned space cannot meet the limit (its fixed values are too slow): searching the full space"
      rm -rf "$run/search"
      search "$SPACE" "$n" "$limit" || { echo "demo.sh: error: search for $n failed; see $run/search.log" >&2; exit 1; }
    fi
  fi
  cp "$run/search/best.json" "$run/found.json"
  cp "$run/search/pareto.png" "$OUT/plots/pareto-$n.png"
  [ -f "$run/found.pt" ] || fairseq-nas export --supernet "$SUPERNET" --subnet "$run/found.json" --out "$run/found.pt" \
    > "$run/found.export.txt"
done

stage "8. the found architectures from scratch ($SCRATCH_UPDATES updates) and the found subnets fine-tuned ($FT_UPDATES updates)"
second_job() {
  local n="${1#*:}" run="$OUT/claim/${1#*:}"
  [ -e "$run/${1%%:*}/done" ] && return 0  # a finished job keeps its log
  if [ "${1%%:*}" = scratch ]; then
    timed "found architecture from scratch" "$n" "$SCRATCH_UPDATES" 1 "$run/scratch/done" \
      fairseq-train "$DATA" "${TRAIN_COMMON[@]}" --arch nas_subnet --subnet "$run/found.pt" \
        --max-update "$SCRATCH_UPDATES" --save-dir "$run/scratch" > "$run/scratch.log" 2>&1 \
      || { echo "demo.sh: error: training $n's found architecture failed; see $run/scratch.log" >&2; return 1; }
  else
    timed "found subnet fine-tuning" "$n" "$FT_UPDATES" 1 "$run/finetune/done" \
      fairseq-train "$DATA" "${TRAIN_COMMON[@]}" --arch nas_subnet --subnet "$run/found.pt" \
        --finetune-from-model "$run/found.pt" --max-update "$FT_UPDATES" --lr "$FT_LR" --warmup-updates "$FT_WARMUP" \
        --save-dir "$run/finetune" > "$run/finetune.log" 2>&1 \
      || { echo "demo.sh: error: fine-tuning $n's found subnet failed; see $run/finetune.log" >&2; return 1; }
  fi
}
# longest first (the baselines are listed smallest first), so the two slots end together
jobs2=(); for ((i = ${#NAMES[@]} - 1; i >= 0; i--)); do jobs2+=("scratch:${NAMES[i]}"); done
for ((i = ${#NAMES[@]} - 1; i >= 0; i--)); do jobs2+=("finetune:${NAMES[i]}"); done
parallel second_job "${jobs2[@]}"

stage "9. translate the test set (beam 5) and score"
gen_job() {
  local run="$OUT/claim/${1#*:}" m="${1%%:*}"
  [ -f "$run/$m.bleu.json" ] && return 0
  fairseq-generate "$DATA" "${GEN_COMMON[@]}" --path "$run/$m/checkpoint_best.pt" > "$run/$m.gen" 2> "$run/$m.gen.log" \
    || { echo "demo.sh: error: translating with $run/$m failed; see $run/$m.gen.log" >&2; return 1; }
  fairseq-nas bleu "$run/$m.gen" --lang "$TGT_LANG" --json "$run/$m.bleu.json" > "$run/$m.bleu.txt"
}
jobs3=(); for n in "${NAMES[@]}"; do for m in baseline scratch finetune; do jobs3+=("$m:$n"); done; done
parallel gen_job "${jobs3[@]}"

stage "10. measured latency of every trained model, all together"
ALL=(); for n in "${NAMES[@]}"; do for m in baseline scratch finetune; do ALL+=("$OUT/claim/$n/$m/checkpoint_best.pt"); done; done
fairseq-nas latency --checkpoints "${ALL[@]}" "${LAT_COMMON[@]}" --runs "$FINAL_RUNS" --rounds "$FINAL_ROUNDS" \
    --out "$OUT/claim/latency.jsonl" | tail -n +2

stage "11. report"
"$PY" -m fairseq_nas.report.demo "$OUT" --seconds $(( $(date +%s) - T0 )) ${DATA_BIN:+--data "$DATA"} \
  --space "$SPACE" --scratch-updates "$SCRATCH_UPDATES" --ft-updates "$FT_UPDATES" \
  --recipe "Adam, inverse square root schedule, peak lr $LR after 100 warm-up updates for the supernet, the baselines and the found architectures; fine-tuning at peak lr $FT_LR after $FT_WARMUP; 2,048 tokens per update, label smoothing 0.1, dropout 0.1"
