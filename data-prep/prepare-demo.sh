#!/usr/bin/env bash
# Generate the synthetic demo corpus (data-prep/make_demo_corpus.py) and binarize it
# for fairseq.  See --help.
set -euo pipefail

PROG=prepare-demo.sh
# shellcheck source=data-prep/common.sh
. "$(dirname "${BASH_SOURCE[0]}")/common.sh"

usage() {
    cat <<EOF
usage: bash data-prep/$PROG DIR [--train N] [--valid N] [--test N] [--seed S] [--force]

Generate a small deterministic synthetic parallel corpus (languages 'src' -> 'tgt':
word-by-word lexicon, local adjective-noun reordering, verb-final target clauses,
long-distance subject-verb agreement; see data-prep/make_demo_corpus.py) and
binarize it with fairseq-preprocess (joined dictionary, --workers 1).

  DIR          output folder; the script owns DIR/raw, DIR/data-bin and DIR/.prepare-demo.stamp
  --train N    training pairs (default 20000)
  --valid N    validation pairs (default 500)
  --test N     test pairs (default 500)
  --seed S     corpus seed, a non-negative integer (default 1); same arguments => same files
  --force      regenerate even if DIR is up to date
  -h, --help   show this help

Writes DIR/raw/{train,valid,test}.{src,tgt} (text) and DIR/data-bin (fairseq binary:
dict.src.txt, dict.tgt.txt, train.src-tgt.src.bin/.idx, ...).  A rerun with the same
arguments does nothing; different arguments regenerate.
Environment: PYTHON (default: the repo's .venv/bin/python, else python3).
EOF
}

DIR="" TRAIN=20000 VALID=500 TEST=500 SEED=1 FORCE=0
while [[ $# -gt 0 ]]; do
    arg="$1"
    if [[ "$arg" == --*=* ]]; then  # --opt=value -> --opt value
        shift; set -- "${arg%%=*}" "${arg#*=}" "$@"; arg="$1"
    fi
    case "$arg" in
        -h|--help) usage; exit 0 ;;
        --train) need_value "$@"; TRAIN="$2"; shift 2 ;;
        --valid) need_value "$@"; VALID="$2"; shift 2 ;;
        --test)  need_value "$@"; TEST="$2"; shift 2 ;;
        --seed)  need_value "$@"; SEED="$2"; shift 2 ;;
        --force) FORCE=1; shift ;;
        -*) die "unknown option '$arg' (see --help)" ;;
        *)  [[ -z "$DIR" ]] || die "only one DIR expected, got '$DIR' and '$arg'"
            DIR="$arg"; shift ;;
    esac
done

[[ -n "$DIR" ]] || die "missing DIR (usage: $PROG DIR [--train N] [--valid N] [--test N] [--seed S])"
for pair in "--train:$TRAIN" "--valid:$VALID" "--test:$TEST"; do
    is_posint "${pair#*:}" || die "${pair%%:*} must be a positive integer, got '${pair#*:}'"
done
is_nonnegint "$SEED" || die "--seed must be a non-negative integer, got '$SEED'"
[[ ! -e "$DIR" || -d "$DIR" ]] || die "DIR '$DIR' exists and is not a folder"
TRAIN=$((10#$TRAIN)) VALID=$((10#$VALID)) TEST=$((10#$TEST)) SEED=$((10#$SEED))

PY="$(find_python)"
PREPROCESS="$(find_preprocess)"
GENERATOR="$DATA_PREP_DIR/make_demo_corpus.py"

summary() {
    local raw="$DIR/raw" bin
    bin="$(cd "$DIR/data-bin" && pwd)"
    local src_types tgt_types
    src_types=$(awk '{ for (i = 1; i <= NF; i++) v[$i] } END { print length(v) }' "$raw/train.src")
    tgt_types=$(awk '{ for (i = 1; i <= NF; i++) v[$i] } END { print length(v) }' "$raw/train.tgt")
    echo "  pairs:    train $(count_lines "$raw/train.src"), valid $(count_lines "$raw/valid.src")," \
         "test $(count_lines "$raw/test.src")"
    echo "  vocab:    src $src_types, tgt $tgt_types word types (train);" \
         "joined dictionary $(dict_size "$bin/dict.src.txt") entries incl. 4 specials"
    echo "  lengths:  $(awk '{ n += NF; if (NF > m) m = NF } END { printf "mean %.1f, max %d tokens", n / NR, m }' \
        "$raw/train.src") (train, src)"
    echo "  raw text: $DIR/raw/{train,valid,test}.{src,tgt}"
    echo "  data-bin: $bin"
}

mkdir -p "$DIR"
STAMP="$DIR/.prepare-demo.stamp"
GEN_HASH="$("$PY" -c 'import hashlib, sys; print(hashlib.sha256(open(sys.argv[1], "rb").read()).hexdigest()[:16])' \
    "$GENERATOR")"
WANT="train=$TRAIN valid=$VALID test=$TEST seed=$SEED generator=$GEN_HASH"

outputs_present() {
    local f
    for f in raw/{train,valid,test}.{src,tgt} data-bin/dict.{src,tgt}.txt \
             data-bin/{train,valid,test}.src-tgt.{src,tgt}.{bin,idx}; do
        [[ -s "$DIR/$f" ]] || return 1
    done
}

if [[ $FORCE -eq 0 && -f "$STAMP" && "$(cat "$STAMP")" == "$WANT" ]] && outputs_present; then
    info "$DIR is up to date ($WANT); skipping"
    summary
    exit 0
fi

START=$(date +%s)
# The stamp is written last: an interrupted run leaves no stamp and is redone.
rm -f "$STAMP"
rm -rf "$DIR/raw" "$DIR/data-bin"

info "generating $TRAIN/$VALID/$TEST pairs (seed $SEED)"
"$PY" "$GENERATOR" --out "$DIR/raw" --train "$TRAIN" --valid "$VALID" --test "$TEST" --seed "$SEED" >/dev/null \
    || fail "the corpus generator failed"

info "binarizing with $PREPROCESS"
mkdir -p "$DIR/data-bin"
run_logged "$DIR/data-bin/preprocess.out" "$PREPROCESS" --source-lang src --target-lang tgt \
    --trainpref "$DIR/raw/train" --validpref "$DIR/raw/valid" --testpref "$DIR/raw/test" \
    --destdir "$DIR/data-bin" --joined-dictionary --workers 1
rm -f "$DIR/data-bin/preprocess.out"  # fairseq keeps its own data-bin/preprocess.log
echo "$WANT" >"$STAMP"

info "done in $(elapsed "$START")"
summary
