# Shared helpers and the stages of the recipes scripts/iwslt14.sh and scripts/wmt14.sh.
# A recipe sets PROG, sources this file, parses its options into the variables listed
# above recipe_setup, then calls recipe_setup and recipe_run.
# shellcheck shell=bash

SCRIPTS_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO_ROOT="$(cd "$SCRIPTS_DIR/.." && pwd)"
USER_DIR="$REPO_ROOT/fairseq_nas"

die() { echo "$PROG: error: $*" >&2; exit 2; }   # bad usage, before any work
fail() { echo "$PROG: error: $*" >&2; exit 1; }  # a failed stage
say() { echo "$PROG: $*"; }

need_value() {
    [[ $# -ge 2 && -n "$2" && "$2" != --* ]] || die "option $1 needs a value (see --help)"
}
is_nonnegint() { [[ "$1" =~ ^[0-9]+$ ]]; }
is_posint() { [[ "$1" =~ ^[0-9]+$ ]] && (( 10#$1 > 0 )); }
is_posnum() { [[ "$1" =~ ^([0-9]+\.?[0-9]*|\.[0-9]+)$ ]] && [[ ! "$1" =~ ^[0.]+$ ]]; }

# words VAR "TEXT": split TEXT on whitespace into the array VAR (for *_EXTRA variables).
words() { read -r -a "$1" <<<"${2:-}"; }

# tool NAME: NAME on PATH, else the repo's .venv/bin/NAME, else just NAME (for DRY_RUN output).
tool() {
    if command -v "$1" >/dev/null 2>&1; then command -v "$1"
    elif [[ -x "$REPO_ROOT/.venv/bin/$1" ]]; then echo "$REPO_ROOT/.venv/bin/$1"
    else echo "$1"; fi
}

# Number of visible GPUs (0 without nvidia-smi).
count_gpus() {
    if command -v nvidia-smi >/dev/null 2>&1; then
        nvidia-smi -L 2>/dev/null | grep -c '^GPU' || true
    else
        echo 0
    fi
}

# quote ARG...: one copy-pasteable shell line (arguments quoted only where needed).
quote() {
    local out="" a
    for a in "$@"; do
        if [[ "$a" =~ ^[A-Za-z0-9_./:=,+@%-]+$ ]]; then out+="$a "
        else out+="'${a//\'/\'\\\'\'}' "; fi
    done
    echo "${out% }"
}

# run CMD...: with DRY_RUN=1 print the command only; else print it (with "+ ") and run it.
run() {
    if [[ "${DRY_RUN:-0}" == 1 ]]; then quote "$@"; return 0; fi
    echo "+ $(quote "$@")"
    local rc=0
    "$@" || rc=$?
    (( rc == 0 )) || fail "stage $STAGE failed: '$(basename "$1")' exited with status $rc"
}

# run_to FILE CMD...: run with stdout to FILE (written to FILE.tmp, renamed when done).
run_to() {
    local file="$1"; shift
    if [[ "${DRY_RUN:-0}" == 1 ]]; then echo "$(quote "$@") > $(quote "$file")"; return 0; fi
    echo "+ $(quote "$@") > $(quote "$file")"
    local rc=0
    "$@" >"$file.tmp" || rc=$?
    (( rc == 0 )) || fail "stage $STAGE failed: '$(basename "$1")' exited with status $rc (output: $file.tmp)"
    mv "$file.tmp" "$file"
}

# mark FILE: the stage is finished (its OUTPUT, for stages whose tools write as they go).
mark() {
    if [[ "${DRY_RUN:-0}" == 1 ]]; then return 0; fi
    mkdir -p "$(dirname "$1")"
    date -u +%Y-%m-%dT%H:%M:%SZ >"$1"
}

# stage NAME OUTPUT FUNCTION: run FUNCTION unless OUTPUT exists.
STAGES_RUN=() STAGES_SKIPPED=()
stage() {
    STAGE="$1"
    local output="$2" func="$3"
    if [[ -e "$output" ]]; then
        echo "# skip $STAGE: $output exists"
        STAGES_SKIPPED+=("$STAGE")
    else
        echo "# stage $STAGE -> $output"
        "$func"
        if [[ "${DRY_RUN:-0}" != 1 && ! -e "$output" ]]; then
            fail "stage $STAGE finished but did not write $output"
        fi
        STAGES_RUN+=("$STAGE")
    fi
}

elapsed() { local s=$(( $(date +%s) - $1 )); printf '%dh%02dm%02ds' $((s / 3600)) $((s % 3600 / 60)) $((s % 60)); }

abs_path() { if [[ "$1" == /* ]]; then echo "$1"; else echo "$PWD/${1#./}"; fi; }

# ---- the pipeline ------------------------------------------------------------------------------
# Set by the recipe (options and environment):
#   WORK, GPUS, DEVICE, LATENCY_MS, MAX_PARAMS, DRY_RUN, ARCH, SPACE (may be empty: ARCH's space)
#   DATA_INPUT        --archive FILE (IWSLT) / --archives DIR (WMT), may be empty
#   PREPARE           data-prep script name; PREPARE_INPUT_OPT its option for DATA_INPUT
#   PREPARE_EXTRA     array of further options of the data-prep script
#   BPE_SIZE, TGT_LANG, SRC_LEN (latency protocol: 23 IWSLT, 30 WMT)
#   MODEL_ARGS        array of model options for both training stages (e.g. --share-all-embeddings)
recipe_setup() {
    SUPERNET_UPDATES="${SUPERNET_UPDATES:-50000}" FINETUNE_UPDATES="${FINETUNE_UPDATES:-30000}"
    MAX_TOKENS="${MAX_TOKENS:-4096}" UPDATE_FREQ="${UPDATE_FREQ:-1}"
    LATENCY_N="${LATENCY_N:-2000}" COLLECT_N="${COLLECT_N:-300}" THETA="${THETA:-1.15}"
    # ShrinkNAS' Dynamic Space Shrinking; SAMPLER_ARGS= (set and empty) trains with uniform sampling.
    SAMPLER_ARGS="${SAMPLER_ARGS---sampler dss --dss-every-epochs 10 --dss-times 5}"

    [[ "$DRY_RUN" == 0 || "$DRY_RUN" == 1 ]] || die "DRY_RUN must be 0 or 1, got '$DRY_RUN'"
    [[ "$ARCH" =~ ^supernet_[a-z0-9_]+$ ]] || die "--arch/ARCH must be a supernet_* architecture, got '$ARCH'"
    SPACE_ARGS=()
    if [[ -n "${SPACE:-}" ]]; then  # a shipped space by name, or a YAML file
        if [[ -f "$SPACE" ]]; then
            SPACE="$(abs_path "$SPACE")"
        elif [[ ! -f "$USER_DIR/spaces/$SPACE.yaml" ]]; then
            die "--space/SPACE '$SPACE' is neither a file nor a shipped space (fairseq_nas/spaces/*.yaml)"
        fi
        SPACE_ARGS=(--search-space "$SPACE")
    else
        SPACE="${ARCH#supernet_}"
        [[ -f "$USER_DIR/spaces/$SPACE.yaml" ]] \
            || die "--arch/ARCH $ARCH: no shipped space $SPACE (fairseq_nas/spaces/$SPACE.yaml)"
    fi
    [[ -n "$GPUS" ]] || GPUS="$(count_gpus)"
    is_nonnegint "$GPUS" || die "--gpus/GPUS must be a non-negative integer, got '$GPUS'"
    GPUS=$((10#$GPUS))
    [[ -n "$DEVICE" ]] || { (( GPUS > 0 )) && DEVICE=cuda || DEVICE=cpu; }
    [[ "$DEVICE" =~ ^(cpu|cuda(:[0-9]+)?)$ ]] || die "--device/DEVICE must be cpu or cuda[:N], got '$DEVICE'"
    is_posnum "$LATENCY_MS" || die "--latency-ms/LATENCY_MS must be a positive number, got '$LATENCY_MS'"
    [[ -z "$MAX_PARAMS" ]] || is_posint "$MAX_PARAMS" \
        || die "--max-params/MAX_PARAMS must be a positive integer, got '$MAX_PARAMS'"
    local v name
    for v in SUPERNET_UPDATES FINETUNE_UPDATES MAX_TOKENS UPDATE_FREQ LATENCY_N COLLECT_N; do
        is_posint "${!v}" || die "$v must be a positive integer, got '${!v}'"
    done
    is_posnum "$THETA" || die "THETA must be a positive number, got '$THETA'"
    [[ -z "${BASELINES:-}" ]] || claim_setup
    [[ -z "$DATA_INPUT" || -e "$DATA_INPUT" ]] || die "$PREPARE_INPUT_OPT $DATA_INPUT does not exist"
    [[ -z "$DATA_INPUT" ]] || DATA_INPUT="$(abs_path "$DATA_INPUT")"
    [[ -n "$WORK" ]] || die "--work/WORK is empty"
    [[ ! -e "$WORK" || -d "$WORK" ]] || die "--work/WORK '$WORK' exists and is not a folder"
    WORK="$(abs_path "$WORK")"

    words SAMPLER "$SAMPLER_ARGS"
    words LAUNCH "${LAUNCHER:-}"
    for v in SUPERNET LATENCY COLLECT RANK SEARCH FINETUNE GENERATE; do
        name="${v}_EXTRA"
        words "X_$v" "${!name:-}"
    done
    TRAIN="$(tool fairseq-train)" GENERATE="$(tool fairseq-generate)" NAS="$(tool fairseq-nas)"
    DATA="$WORK/data/data-bin"
    CKPT="$WORK/supernet/checkpoint_last.pt"
    DIST=()
    if (( GPUS == 0 )); then DIST=(--cpu)
    elif (( ${#LAUNCH[@]} == 0 )); then DIST=(--distributed-world-size "$GPUS"); fi
    (( UPDATE_FREQ == 1 )) || DIST+=(--update-freq "$UPDATE_FREQ")
    OPTIM=(--optimizer adam --adam-betas '(0.9, 0.98)' --lr 5e-4 --lr-scheduler inverse_sqrt
           --warmup-updates 10000 --max-tokens "$MAX_TOKENS" --criterion label_smoothed_cross_entropy
           --label-smoothing 0.1)
}

st_data() {
    local opts=(--out "$WORK/data" --bpe-size "$BPE_SIZE" "${PREPARE_EXTRA[@]}")
    [[ -z "$DATA_INPUT" ]] || opts+=("$PREPARE_INPUT_OPT" "$DATA_INPUT")
    run bash "$REPO_ROOT/data-prep/$PREPARE" "${opts[@]}"
    mark "$WORK/data/DONE"
}
st_supernet() {
    run "${LAUNCH[@]}" "$TRAIN" "$DATA" --user-dir "$USER_DIR" --task supernet_translation --arch "$ARCH" \
        "${SPACE_ARGS[@]}" "${MODEL_ARGS[@]}" "${OPTIM[@]}" --max-update "$SUPERNET_UPDATES" --ddp-backend legacy_ddp \
        "${SAMPLER[@]}" --save-dir "$WORK/supernet" --no-epoch-checkpoints "${DIST[@]}" "${X_SUPERNET[@]}"
    mark "$WORK/supernet/DONE"
}
st_latency() {
    run "$NAS" latency --space "$SPACE" -n "$LATENCY_N" --dict "$DATA" --device "$DEVICE" --src-len "$SRC_LEN" \
        --out "$WORK/latency/latency.jsonl" "${X_LATENCY[@]}"
    mark "$WORK/latency/DONE"
}
st_collect() {
    local cpu=(); [[ "$DEVICE" != cpu ]] || cpu=(--cpu)
    run "$NAS" collect "$DATA" --supernet "$CKPT" --space "$SPACE" -n "$COLLECT_N" --flops-len "$SRC_LEN" \
        --out "$WORK/collect/archs.jsonl" "${cpu[@]}" "${X_COLLECT[@]}"
    mark "$WORK/collect/DONE"
}
st_rank() {
    run "$NAS" rank "$WORK/collect/archs.jsonl" --target valid_loss --out "$WORK/ranker" --prune \
        --theta "$THETA" "${X_RANK[@]}"
    mark "$WORK/ranker/DONE"
}
st_latency_model() {
    run "$NAS" rank "$WORK/latency/latency.jsonl" --target drift_corrected_ms --space "$SPACE" \
        --out "$WORK/latency_model" "${X_RANK[@]}"
    mark "$WORK/latency_model/DONE"
}
st_search() {
    local opts=()
    [[ -z "$MAX_PARAMS" ]] || opts+=(--max-params "$MAX_PARAMS")
    [[ ! -s "$WORK/search/search.jsonl" ]] || opts+=(--resume)
    run "$NAS" search --space "$WORK/ranker/pruned_space.yaml" --feature-space "$SPACE" \
        --ranker "$WORK/ranker" --latency-model "$WORK/latency_model" --latency-ms "$LATENCY_MS" \
        --dict "$DATA" --device "$DEVICE" --src-len "$SRC_LEN" --out "$WORK/search" "${opts[@]}" "${X_SEARCH[@]}"
}
st_export() {
    run "$NAS" export --supernet "$CKPT" --subnet "$WORK/search/best.json" --out "$WORK/subnet.pt"
}
# _finetune SUBNET.pt SAVE_DIR: fine-tune an exported subnet from its inherited weights.
_finetune() {
    run "${LAUNCH[@]}" "$TRAIN" "$DATA" --user-dir "$USER_DIR" --arch nas_subnet --subnet "$1" \
        --finetune-from-model "$1" "${MODEL_ARGS[@]}" "${OPTIM[@]}" --max-update "$FINETUNE_UPDATES" \
        --save-dir "$2" --no-epoch-checkpoints "${DIST[@]}" "${X_FINETUNE[@]}"
    mark "$2/DONE"
}
st_finetune() { _finetune "$WORK/subnet.pt" "$WORK/finetune"; }
# _evaluate CHECKPOINT GEN_OUT BLEU_JSON: translate the test set (beam 5) and score it.
_evaluate() {
    local cpu=(); (( GPUS > 0 )) || cpu=(--cpu)
    # --required-batch-size-multiple 1: with fairseq's default 8, fairseq-generate drops the last
    # batch when it is not a multiple of 8 (fairseq issue #5036): 6 of IWSLT's 6750 test sentences.
    run_to "$2" "$GENERATE" "$DATA" --user-dir "$USER_DIR" --path "$1" \
        --gen-subset test --beam 5 --batch-size 128 --required-batch-size-multiple 1 --post-process sentencepiece \
        "${cpu[@]}" "${X_GENERATE[@]}"
    run "$NAS" bleu "$2" --lang "$TGT_LANG" --json "$3"
}
st_evaluate() { _evaluate "$WORK/finetune/checkpoint_best.pt" "$WORK/gen.out" "$WORK/bleu.json"; }

# ---- the claim (DESIGN.md section 11), with --baselines: fairseq transformers of several sizes,
# each inside the space, trained from scratch for SCRATCH_UPDATES; the supernet searched once
# per baseline with its measured latency less LATENCY_MARGIN as the limit; the found architecture
# trained from scratch for SCRATCH_UPDATES and the found subnet fine-tuned for FINETUNE_UPDATES;
# every trained model timed together; WORK/REPORT.md and WORK/comparison.jsonl.
claim_setup() {
    SCRATCH_UPDATES="${SCRATCH_UPDATES:-40000}" LATENCY_MARGIN="${LATENCY_MARGIN:-0.02}"
    is_posint "$SCRATCH_UPDATES" || die "SCRATCH_UPDATES must be a positive integer, got '$SCRATCH_UPDATES'"
    (( FINETUNE_UPDATES < SCRATCH_UPDATES )) \
        || die "FINETUNE_UPDATES ($FINETUNE_UPDATES) must be fewer than SCRATCH_UPDATES ($SCRATCH_UPDATES)"
    is_posnum "$LATENCY_MARGIN" || [[ "$LATENCY_MARGIN" =~ ^0*\.?0*$ ]] \
        || die "LATENCY_MARGIN must be a number in [0, 1), got '$LATENCY_MARGIN'"
    PY="$(tool python)"; [[ -x "$REPO_ROOT/.venv/bin/python" ]] && PY="$REPO_ROOT/.venv/bin/python"
    local share=--no-share-all-embeddings line err
    [[ " ${MODEL_ARGS[*]} " == *" --share-all-embeddings "* ]] && share=--share-all-embeddings
    BASELINE_NAMES=() BASELINE_ARGS=()
    err="$("$PY" -m fairseq_nas.report.claim baselines --space "$SPACE" --specs "$BASELINES" $share --print \
            2>&1 >/dev/null)" || die "--baselines/BASELINES: ${err#claim: error: }"
    while read -r line; do
        BASELINE_NAMES+=("${line%% *}") BASELINE_ARGS+=("${line#* }")
    done < <("$PY" -m fairseq_nas.report.claim baselines --space "$SPACE" --specs "$BASELINES" $share --print)
    CLAIM="$WORK/claim"
}
st_baselines() {
    local i args
    for i in "${!BASELINE_NAMES[@]}"; do
        words args "${BASELINE_ARGS[$i]}"
        run "${LAUNCH[@]}" "$TRAIN" "$DATA" --user-dir "$USER_DIR" "${args[@]}" --dropout 0.3 --attention-dropout 0.1 \
            "${OPTIM[@]}" --max-update "$SCRATCH_UPDATES" --save-dir "$CLAIM/${BASELINE_NAMES[$i]}/baseline" \
            --no-epoch-checkpoints "${DIST[@]}" "${X_SUPERNET[@]}"
    done
    # each baseline's architecture as a subnet (baseline.json) and the names, for the report
    run_to "$CLAIM/baselines.txt" "$PY" -m fairseq_nas.report.claim baselines --space "$SPACE" --specs "$BASELINES" \
        --out "$CLAIM"
    mark "$CLAIM/baselines.DONE"
}
_checkpoints() {  # _checkpoints MODEL...: every baseline's WORK/claim/NAME/MODEL/checkpoint_best.pt
    local n m; for n in "${BASELINE_NAMES[@]}"; do for m in "$@"; do echo "$CLAIM/$n/$m/checkpoint_best.pt"; done; done
}
st_baseline_latency() {
    local cks; mapfile -t cks < <(_checkpoints baseline)
    run "$NAS" latency --checkpoints "${cks[@]}" --dict "$DATA" --device "$DEVICE" --src-len "$SRC_LEN" \
        --out "$CLAIM/baseline-latency.jsonl" "${X_LATENCY[@]}"
}
st_claim_search() {
    local d="$CLAIM/$B" opts=()
    [[ -z "$MAX_PARAMS" ]] || opts+=(--max-params "$MAX_PARAMS")
    [[ ! -s "$d/search/search.jsonl" ]] || opts+=(--resume)
    run "$PY" -m fairseq_nas.report.claim limit --latency "$CLAIM/baseline-latency.jsonl" \
        --checkpoint "$d/baseline/checkpoint_best.pt" --margin "$LATENCY_MARGIN" --out "$d/search.json"
    local search=("$NAS" search --space "$SPACE" --ranker "$WORK/ranker" --latency-model "$WORK/latency_model")
    local rest=(--dict "$DATA" --device "$DEVICE" --src-len "$SRC_LEN" --out "$d/search" "${opts[@]}" "${X_SEARCH[@]}")
    if [[ "$DRY_RUN" == 1 ]]; then  # the limit is known once the baseline is measured: a shell variable
        echo "limit=\$($(quote "$PY") -c 'import json,sys; print(json.load(open(sys.argv[1]))[\"limit_ms\"])' $(quote "$d/search.json"))"
        echo "$(quote "${search[@]}") --latency-ms \"\$limit\" $(quote "${rest[@]}")"
        return 0
    fi
    local limit; limit="$("$PY" -c 'import json,sys; print(json.load(open(sys.argv[1]))["limit_ms"])' "$d/search.json")"
    run "${search[@]}" --latency-ms "$limit" "${rest[@]}"
}
st_claim_export() {
    run "$NAS" export --supernet "$CKPT" --subnet "$CLAIM/$B/search/best.json" --out "$CLAIM/$B/found.pt"
    run cp "$CLAIM/$B/search/best.json" "$CLAIM/$B/found.json"
}
st_claim_scratch() {
    run "${LAUNCH[@]}" "$TRAIN" "$DATA" --user-dir "$USER_DIR" --arch nas_subnet --subnet "$CLAIM/$B/found.pt" \
        "${MODEL_ARGS[@]}" "${OPTIM[@]}" --max-update "$SCRATCH_UPDATES" --save-dir "$CLAIM/$B/scratch" \
        --no-epoch-checkpoints "${DIST[@]}" "${X_FINETUNE[@]}"
    mark "$CLAIM/$B/scratch/DONE"
}
st_claim_finetune() { _finetune "$CLAIM/$B/found.pt" "$CLAIM/$B/finetune"; }
st_claim_evaluate() {
    local m
    for m in baseline scratch finetune; do
        _evaluate "$CLAIM/$B/$m/checkpoint_best.pt" "$CLAIM/$B/$m.gen" "$CLAIM/$B/$m.bleu.json"
    done
}
st_claim_latency() {
    local cks; mapfile -t cks < <(_checkpoints baseline scratch finetune)
    run "$NAS" latency --checkpoints "${cks[@]}" --dict "$DATA" --device "$DEVICE" --src-len "$SRC_LEN" \
        --out "$CLAIM/latency.jsonl" "${X_LATENCY[@]}"
}
st_claim_report() {
    run "$PY" -m fairseq_nas.report.claim report "$WORK" --title "fairseq-nas $PROG report"
}
claim_run() {
    stage baselines "$CLAIM/baselines.DONE" st_baselines
    stage baseline_latency "$CLAIM/baseline-latency.jsonl" st_baseline_latency
    for B in "${BASELINE_NAMES[@]}"; do
        stage "search:$B" "$CLAIM/$B/search/best.json" st_claim_search
        stage "export:$B" "$CLAIM/$B/found.pt" st_claim_export
        stage "scratch:$B" "$CLAIM/$B/scratch/DONE" st_claim_scratch
        stage "finetune:$B" "$CLAIM/$B/finetune/DONE" st_claim_finetune
        stage "evaluate:$B" "$CLAIM/$B/finetune.bleu.json" st_claim_evaluate
    done
    stage claim_latency "$CLAIM/latency.jsonl" st_claim_latency
    stage report "$WORK/REPORT.md" st_claim_report
}

recipe_run() {
    local start
    start=$(date +%s)
    if [[ "$DRY_RUN" == 1 ]]; then
        echo "# $PROG --dry-run: the commands of the stages that would run (WORK=$WORK)"
    else
        mkdir -p "$WORK"
        say "WORK=$WORK GPUS=$GPUS DEVICE=$DEVICE LATENCY_MS=$LATENCY_MS ARCH=$ARCH"
    fi
    stage data "$WORK/data/DONE" st_data
    stage supernet "$WORK/supernet/DONE" st_supernet
    stage latency "$WORK/latency/DONE" st_latency
    stage collect "$WORK/collect/DONE" st_collect
    stage rank "$WORK/ranker/DONE" st_rank
    stage latency_model "$WORK/latency_model/DONE" st_latency_model
    if [[ -n "${BASELINES:-}" ]]; then
        claim_run
        [[ "$DRY_RUN" == 1 ]] && return 0
        say "done in $(elapsed "$start"): ran ${STAGES_RUN[*]:-nothing}; skipped ${STAGES_SKIPPED[*]:-nothing}"
        echo "  report: $WORK/REPORT.md (one row per baseline: $WORK/comparison.jsonl)"
        return 0
    fi
    stage search "$WORK/search/best.json" st_search
    stage export "$WORK/subnet.pt" st_export
    stage finetune "$WORK/finetune/DONE" st_finetune
    stage evaluate "$WORK/bleu.json" st_evaluate
    [[ "$DRY_RUN" == 1 ]] && return 0
    say "done in $(elapsed "$start"): ran ${STAGES_RUN[*]:-nothing}; skipped ${STAGES_SKIPPED[*]:-nothing}"
    echo "  best subnet: $WORK/search/best.json"
    echo "  model:       $WORK/finetune/checkpoint_best.pt"
    echo "  BLEU:        $(tr -s ' \n' ' ' <"$WORK/bleu.json" | cut -c1-200)  ($WORK/bleu.json)"
}

# The stages, for the recipes' --help.
STAGES_HELP="Each stage is skipped when its output exists (delete it to redo the stage); the training
stages resume from their last checkpoint, latency and collect from their last row.
  stage          what                                                    output (under WORK)
  data           data-prep/PREPARE: text, joint BPE, binarized data
                                                                         data/DONE (data/data-bin)
  supernet       fairseq-train --task supernet_translation --arch ARCH, adam (0.9, 0.98),
                 lr 5e-4, inverse_sqrt, 10k warm-up, 4096 tokens per GPU, 50k updates,
                 label smoothing 0.1, legacy_ddp, DSS every 10 epochs 5 times  supernet/DONE
  latency        fairseq-nas latency: 2000 subnets measured on DEVICE    latency/DONE
  collect        fairseq-nas collect: inherited-weight valid loss of 300 subnets  collect/DONE
  rank           fairseq-nas rank archs.jsonl --prune --theta 1.15       ranker/DONE
  latency_model  fairseq-nas rank latency.jsonl --target drift_corrected_ms latency_model/DONE
  search         fairseq-nas search in ranker/pruned_space.yaml under LATENCY_MS  search/best.json
  export         fairseq-nas export of search/best.json                  subnet.pt
  finetune       fairseq-train --arch nas_subnet from the inherited weights, 30k updates
                                                                         finetune/DONE
  evaluate       fairseq-generate --beam 5 on test; fairseq-nas bleu     gen.out, bleu.json"

COMMON_ENV_HELP="More environment variables: SUPERNET_UPDATES (50000), FINETUNE_UPDATES (30000),
MAX_TOKENS (4096, per GPU), UPDATE_FREQ (1), LATENCY_N (2000), COLLECT_N (300), THETA (1.15),
SAMPLER_ARGS (default '--sampler dss --dss-every-epochs 10 --dss-times 5'; set it empty for
uniform sampling), LAUNCHER (multi-node: see the header of this script), and arguments
appended to one stage's command: SUPERNET_EXTRA, LATENCY_EXTRA, COLLECT_EXTRA, RANK_EXTRA
(both rank stages), SEARCH_EXTRA, FINETUNE_EXTRA, GENERATE_EXTRA."
