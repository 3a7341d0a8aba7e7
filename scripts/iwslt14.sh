#!/usr/bin/env bash
# The full fairseq-nas pipeline on IWSLT'14 De-En with the papers' settings: ShrinkNAS' space
# and Dynamic Space Shrinking, RankNAS' ranking, pruning and search, HAT's latency-constrained
# workflow, then fine-tuning and BLEU.  See --help; the stages live in scripts/common.sh.
#
# GPUs: the training stages use fairseq's own distributed training.  On one machine GPUS=N
# passes --distributed-world-size N and fairseq starts one process per GPU.  Across machines,
# start the recipe on every node with LAUNCHER set to torchrun, e.g. on node R of 2 nodes
# with 8 GPUs each:
#     LAUNCHER="torchrun --nnodes 2 --node_rank R --nproc_per_node 8 --master_addr HOST0 --master_port 29500" \
#         GPUS=8 bash scripts/iwslt14.sh
# fairseq then reads RANK/WORLD_SIZE from torchrun's environment (--distributed-world-size is
# not passed).  Without torchrun, fairseq's own way works too: run the printed fairseq-train
# command (DRY_RUN=1) on each node with --distributed-init-method tcp://HOST0:PORT
# --distributed-world-size 16 --distributed-rank $((8 * R)).  The other stages run on one
# device; on a cluster run them on node 0 only (e.g. SUPERNET stage done elsewhere: its
# output supernet/DONE exists, so it is skipped).
set -euo pipefail

PROG=iwslt14.sh
# shellcheck source=scripts/common.sh
. "$(dirname "${BASH_SOURCE[0]}")/common.sh"

usage() {
    cat <<USAGE
usage: bash scripts/$PROG [--work DIR] [--archive de-en.tgz] [--gpus N] [--device cpu|cuda[:N]]
           [--latency-ms L] [--max-params P] [--arch ARCH] [--space S] [--baselines SPECS] [--dry-run]

IWSLT'14 De-En end to end with the papers' settings (joint BPE 10k, ShrinkNAS space).
${STAGES_HELP/PREPARE/prepare-iwslt14.sh}

Options (each can also be set by the environment variable in capitals):
  --work DIR        WORK: working folder (default work/iwslt14)
  --archive FILE    ARCHIVE: the IWSLT'14 de-en.tgz (default: prepare-iwslt14.sh downloads it)
  --gpus N          GPUS: GPUs for the training stages (--distributed-world-size N);
                    0 = train on the CPU (default: the GPUs nvidia-smi lists)
  --device D        DEVICE: where latency is measured and the search measures its top K:
                    cpu or cuda[:N] (default cuda if GPUS > 0, else cpu)
  --latency-ms L    LATENCY_MS: the search's latency limit in ms (default 150)
  --max-params P    MAX_PARAMS: also a parameter limit (ShrinkNAS' constraint: 10000000)
  --arch ARCH       ARCH: the supernet (default supernet_shrinknas_iwslt14; also
                    supernet_hat_iwslt14, supernet_ranknas_iwslt14)
  --space S         SPACE: the search space, a shipped name or a YAML file (default: the
                    arch's own); the supernet is then trained with --search-space S
  --baselines SPECS BASELINES: measure the claim (DESIGN.md section 11) instead of one search:
                    fairseq transformers EMBED:ENC:DEC[,...] inside the space (e.g. 240:6:3,320:6:6
                    for the ShrinkNAS space), trained from scratch for SCRATCH_UPDATES (40000); one
                    search per baseline at its measured latency less LATENCY_MARGIN (0.02); the
                    found architecture from scratch and the found subnet fine-tuned; WORK/REPORT.md
                    and WORK/comparison.jsonl
  --dry-run         DRY_RUN=1: print the commands (a runnable script) instead of running them
  -h, --help        show this help
$COMMON_ENV_HELP
USAGE
}

WORK="${WORK:-work/iwslt14}" DATA_INPUT="${ARCHIVE:-}" GPUS="${GPUS:-}" DEVICE="${DEVICE:-}"
LATENCY_MS="${LATENCY_MS:-150}" MAX_PARAMS="${MAX_PARAMS:-}" DRY_RUN="${DRY_RUN:-0}"
ARCH="${ARCH:-supernet_shrinknas_iwslt14}"
while [[ $# -gt 0 ]]; do
    arg="$1"
    if [[ "$arg" == --*=* ]]; then shift; set -- "${arg%%=*}" "${arg#*=}" "$@"; arg="$1"; fi
    case "$arg" in
        -h|--help) usage; exit 0 ;;
        --work) need_value "$@"; WORK="$2"; shift 2 ;;
        --archive) need_value "$@"; DATA_INPUT="$2"; shift 2 ;;
        --gpus) need_value "$@"; GPUS="$2"; shift 2 ;;
        --device) need_value "$@"; DEVICE="$2"; shift 2 ;;
        --latency-ms) need_value "$@"; LATENCY_MS="$2"; shift 2 ;;
        --max-params) need_value "$@"; MAX_PARAMS="$2"; shift 2 ;;
        --arch) need_value "$@"; ARCH="$2"; shift 2 ;;
        --space) need_value "$@"; SPACE="$2"; shift 2 ;;
        --baselines) need_value "$@"; BASELINES="$2"; shift 2 ;;
        --dry-run) DRY_RUN=1; shift ;;
        *) die "unknown option '$arg' (see --help)" ;;
    esac
done

PREPARE=prepare-iwslt14.sh PREPARE_INPUT_OPT=--archive PREPARE_EXTRA=()
BPE_SIZE=10000 TGT_LANG=en SRC_LEN=23
MODEL_ARGS=()
[[ -z "$DATA_INPUT" || -f "$DATA_INPUT" ]] || die "--archive/ARCHIVE $DATA_INPUT is not a file"
recipe_setup
recipe_run
