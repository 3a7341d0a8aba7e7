#!/usr/bin/env bash
# Prepare your own parallel corpus for fairseq: (Moses tokenization) -> (lowercasing)
# -> (joint sentencepiece BPE) -> fairseq-preprocess.  See --help.
set -euo pipefail

PROG=prepare-parallel.sh
# shellcheck source=data-prep/common.sh
. "$(dirname "${BASH_SOURCE[0]}")/common.sh"

usage() {
    cat <<EOF
usage: bash data-prep/$PROG --src L1 --tgt L2 --train PREFIX --valid PREFIX [--test PREFIX] --out DIR
           [--tokenize moses|none] [--lowercase] [--bpe-size N] [--bpe-sample N]
           [--joined-dictionary | --no-joined-dictionary] [--workers N] [--force]

Raw parallel text PREFIX.L1 / PREFIX.L2 (one sentence per line, line i of one side
translates line i of the other) -> DIR/data-bin for fairseq-train.

  --src L1, --tgt L2     language codes = the file suffixes (also Moses' language)
  --train/--valid/--test PREFIX   text files PREFIX.L1 and PREFIX.L2 (--test optional)
  --out DIR              output folder: DIR/tok (tokenized text), DIR/bpe (BPE text and
                         the model DIR/bpe/spm.model), DIR/data-bin (binarized)
  --tokenize moses|none  moses (default): sacremoses punctuation normalization and
                         tokenization (no HTML escaping); none: text is already tokenized
  --lowercase            lowercase after tokenization
  --bpe-size N           joint sentencepiece BPE vocabulary, trained on the train split of
                         both sides (default 10000); clamped with a warning when the text
                         is too small for N; 0 = no BPE (word level)
  --bpe-sample N         sentences sampled (shuffled) to train BPE (default 2000000)
  --joined-dictionary    one dictionary for both languages (default)
  --no-joined-dictionary separate dictionaries
  --workers N            processes for tokenization, BPE and fairseq-preprocess
                         (default: CPUs, at most 8)
  --force                redo every step
  -h, --help             show this help

Every step is skipped when its inputs and options are unchanged since its last run.
Translations of a BPE model decode with: fairseq-generate ... --post-process sentencepiece
Environment: PYTHON (default: the repo's .venv/bin/python, else python3).
EOF
}

SRC="" TGT="" OUT="" TOKENIZE=moses LOWERCASE=0 BPE_SIZE=10000 BPE_SAMPLE=2000000 JOINED=1 FORCE=0
WORKERS=$(nproc 2>/dev/null || echo 1); (( WORKERS <= 8 )) || WORKERS=8
declare -A PREFIX=()
while [[ $# -gt 0 ]]; do
    arg="$1"
    if [[ "$arg" == --*=* ]]; then  # --opt=value -> --opt value
        shift; set -- "${arg%%=*}" "${arg#*=}" "$@"; arg="$1"
    fi
    case "$arg" in
        -h|--help) usage; exit 0 ;;
        --src) need_value "$@"; SRC="$2"; shift 2 ;;
        --tgt) need_value "$@"; TGT="$2"; shift 2 ;;
        --train|--valid|--test) need_value "$@"; PREFIX[${arg#--}]="$2"; shift 2 ;;
        --out) need_value "$@"; OUT="$2"; shift 2 ;;
        --tokenize) need_value "$@"; TOKENIZE="$2"; shift 2 ;;
        --lowercase) LOWERCASE=1; shift ;;
        --bpe-size) need_value "$@"; BPE_SIZE="$2"; shift 2 ;;
        --bpe-sample) need_value "$@"; BPE_SAMPLE="$2"; shift 2 ;;
        --joined-dictionary) JOINED=1; shift ;;
        --no-joined-dictionary) JOINED=0; shift ;;
        --workers) need_value "$@"; WORKERS="$2"; shift 2 ;;
        --force) FORCE=1; shift ;;
        *) die "unknown option '$arg' (see --help)" ;;
    esac
done

# ---- validate everything before any work -------------------------------------------
for opt in src tgt out; do
    var="${opt^^}"; [[ -n "${!var}" ]] || die "missing --$opt (see --help)"
done
for opt in train valid; do
    [[ -n "${PREFIX[$opt]:-}" ]] || die "missing --$opt PREFIX (see --help)"
done
for lang in "$SRC" "$TGT"; do
    [[ "$lang" =~ ^[A-Za-z][A-Za-z0-9_-]*$ ]] || die "language code '$lang' must be letters, digits, '_' or '-'"
done
[[ "$SRC" != "$TGT" ]] || die "--src and --tgt must differ, both are '$SRC'"
[[ "$TOKENIZE" == moses || "$TOKENIZE" == none ]] || die "--tokenize must be 'moses' or 'none', got '$TOKENIZE'"
is_nonnegint "$BPE_SIZE" || die "--bpe-size must be a non-negative integer (0 = no BPE), got '$BPE_SIZE'"
is_posint "$BPE_SAMPLE" || die "--bpe-sample must be a positive integer, got '$BPE_SAMPLE'"
is_posint "$WORKERS" || die "--workers must be a positive integer, got '$WORKERS'"
BPE_SIZE=$((10#$BPE_SIZE)) BPE_SAMPLE=$((10#$BPE_SAMPLE)) WORKERS=$((10#$WORKERS))
[[ ! -e "$OUT" || -d "$OUT" ]] || die "--out '$OUT' exists and is not a folder"

SPLITS=(train valid)
[[ -n "${PREFIX[test]:-}" ]] && SPLITS+=(test)

declare -A LINES=()
for split in "${SPLITS[@]}"; do
    for lang in "$SRC" "$TGT"; do
        f="${PREFIX[$split]}.$lang"
        [[ -e "$f" ]] || die "$split file $f does not exist"
        [[ -f "$f" && -r "$f" ]] || die "$split file $f is not a readable file"
    done
    fs="${PREFIX[$split]}.$SRC" ft="${PREFIX[$split]}.$TGT"
    read -r ns ws < <(awk 'NF { w++ } END { print NR, w + 0 }' "$fs")
    read -r nt wt < <(awk 'NF { w++ } END { print NR, w + 0 }' "$ft")
    (( ws > 0 )) || die "$split split is empty: $fs has no text"
    (( wt > 0 )) || die "$split split is empty: $ft has no text"
    (( ns == nt )) || die "$split split: line counts differ: $fs has $ns lines, $ft has $nt"
    LINES[$split]=$ns
done
(( BPE_SIZE == 0 || BPE_SIZE >= 8 )) || die "--bpe-size must be 0 (no BPE) or at least 8, got $BPE_SIZE"

PY="$(find_python)"
PREPROCESS="$(find_preprocess)"
[[ "$TOKENIZE" != moses ]] || "$PY" -c "import sacremoses" 2>/dev/null \
    || die "$PY cannot import sacremoses (needed for --tokenize moses; run 'make setup')"
(( BPE_SIZE == 0 )) || "$PY" -c "import sentencepiece" 2>/dev/null \
    || die "$PY cannot import sentencepiece (needed for --bpe-size > 0; run 'make setup')"
PIPE="$DATA_PREP_DIR/text_pipeline.py"

# ---- step bookkeeping -----------------------------------------------------------------
# Each step's signature chains the previous one, so a changed input or option redoes
# that step and every later one.  A stamp is written only when its step has finished.
mkdir -p "$OUT"
STAMPS="$OUT/.stamps"
mkdir -p "$STAMPS"
file_sig() {  # path, size, mtime
    local f="$1" st
    st=$(stat -c '%s %Y' "$f" 2>/dev/null || stat -f '%z %m' "$f")
    echo "$(cd "$(dirname "$f")" && pwd)/$(basename "$f") $st"
}
is_done() { [[ $FORCE -eq 0 && -f "$STAMPS/$1" && "$(cat "$STAMPS/$1")" == "$2" ]]; }
mark_done() { echo "$2" >"$STAMPS/$1"; }
TOOL_HASH="$("$PY" -c 'import hashlib, sys; print(hashlib.sha256(open(sys.argv[1], "rb").read()).hexdigest()[:16])' \
    "$PIPE")"

SIG_TOK="tok: pipeline=$TOOL_HASH tokenize=$TOKENIZE lowercase=$LOWERCASE src=$SRC tgt=$TGT"
for split in "${SPLITS[@]}"; do
    for lang in "$SRC" "$TGT"; do SIG_TOK+=$'\n'"$split.$lang: $(file_sig "${PREFIX[$split]}.$lang")"; done
done
SIG_BPE="$SIG_TOK"$'\n'"bpe: size=$BPE_SIZE sample=$BPE_SAMPLE"
SIG_BIN="$SIG_BPE"$'\n'"bin: joined=$JOINED"
START=$(date +%s)

# ---- 1. tokenize / normalize ---------------------------------------------------------------
TOK="$OUT/tok"
if is_done tok "$SIG_TOK"; then
    info "[1/3] tokenized text in $TOK is up to date"
else
    rm -f "$STAMPS"/{tok,bpe,bin}
    rm -rf "$TOK"; mkdir -p "$TOK"
    what="normalizing whitespace"
    [[ $TOKENIZE == moses ]] && what="Moses tokenization"
    (( LOWERCASE )) && what+=" + lowercasing"
    info "[1/3] $what -> $TOK"
    for split in "${SPLITS[@]}"; do
        for lang in "$SRC" "$TGT"; do
            opts=(--lang "$lang" --workers "$WORKERS")
            [[ $TOKENIZE == moses ]] && opts+=(--moses)
            (( LOWERCASE )) && opts+=(--lowercase)
            "$PY" "$PIPE" tokenize "${opts[@]}" "${PREFIX[$split]}.$lang" "$TOK/$split.$lang" \
                || exit 1  # python printed the error
        done
    done
    mark_done tok "$SIG_TOK"
fi

# ---- 2. sentencepiece BPE ------------------------------------------------------------------
BPE="$OUT/bpe"
if (( BPE_SIZE == 0 )); then
    rm -rf "$BPE"; rm -f "$STAMPS/bpe"
    info "[2/3] no BPE (--bpe-size 0): word-level vocabulary"
    BIN_INPUT="$TOK"
elif is_done bpe "$SIG_BPE"; then
    info "[2/3] BPE text and model in $BPE are up to date"
    BIN_INPUT="$BPE"
else
    rm -f "$STAMPS"/{bpe,bin}
    rm -rf "$BPE"; mkdir -p "$BPE"
    info "[2/3] training joint sentencepiece BPE ($BPE_SIZE) on train.$SRC + train.$TGT -> $BPE/spm.model"
    PIECES=$("$PY" "$PIPE" spm-train --prefix "$BPE/spm" --vocab-size "$BPE_SIZE" --sample "$BPE_SAMPLE" \
        --workers "$WORKERS" "$TOK/train.$SRC" "$TOK/train.$TGT") || exit 1  # python printed the error
    echo "$PIECES" >"$BPE/bpe-size.txt"
    for split in "${SPLITS[@]}"; do
        for lang in "$SRC" "$TGT"; do
            "$PY" "$PIPE" spm-encode --model "$BPE/spm.model" --workers "$WORKERS" \
                "$TOK/$split.$lang" "$BPE/$split.$lang" || exit 1
        done
    done
    mark_done bpe "$SIG_BPE"
    BIN_INPUT="$BPE"
fi

# ---- 3. binarize ---------------------------------------------------------------------------
BIN="$OUT/data-bin"
if is_done bin "$SIG_BIN"; then
    info "[3/3] $BIN is up to date"
else
    rm -f "$STAMPS/bin"
    rm -rf "$BIN"; mkdir -p "$BIN"
    info "[3/3] binarizing with $PREPROCESS -> $BIN"
    opts=(--source-lang "$SRC" --target-lang "$TGT" --trainpref "$BIN_INPUT/train"
          --validpref "$BIN_INPUT/valid" --destdir "$BIN" --workers "$WORKERS")
    [[ -n "${PREFIX[test]:-}" ]] && opts+=(--testpref "$BIN_INPUT/test")
    (( JOINED )) && opts+=(--joined-dictionary)
    run_logged "$BIN/preprocess.out" "$PREPROCESS" "${opts[@]}"
    rm -f "$BIN/preprocess.out"  # fairseq keeps its own data-bin/preprocess.log
    mark_done bin "$SIG_BIN"
fi

# ---- summary ---------------------------------------------------------------------------------
info "done in $(elapsed "$START")"
pairs=""
for split in "${SPLITS[@]}"; do pairs+="${pairs:+, }$split ${LINES[$split]}"; done
echo "  pairs:    $pairs"
if (( BPE_SIZE > 0 )); then
    echo "  BPE:      $(cat "$BPE/bpe-size.txt") sentencepiece pieces (asked $BPE_SIZE), model $BPE/spm.model"
fi
echo "  dict:     $SRC $(dict_size "$BIN/dict.$SRC.txt"), $TGT $(dict_size "$BIN/dict.$TGT.txt") entries" \
     "incl. 4 specials$( (( JOINED )) && echo " (joined)")"
unk=$(awk -v s="$SRC" -v t="$TGT" '/replaced \(by <unk>\)/ {
          n = split($2, p, "/"); f = p[n]; sub(":$", "", f); pct = $(NF - 3)
          out = out (out ? ", " : "") f " " pct } END { print out }' "$BIN/preprocess.log" 2>/dev/null || true)
[[ -z "$unk" ]] || echo "  <unk>:    $unk"
echo "  data-bin: $(cd "$BIN" && pwd)"
