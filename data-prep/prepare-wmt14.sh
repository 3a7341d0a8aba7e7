#!/usr/bin/env bash
# WMT'14 English-German from the original WMT archives to a fairseq data-bin, in the way of
# fairseq's examples/translation/prepare-wmt14en2de.sh --icml17, with sacremoses and
# sentencepiece instead of Moses' perl scripts and subword-nmt.  See --help.
set -euo pipefail

PROG=prepare-wmt14.sh
# shellcheck source=data-prep/common.sh
. "$(dirname "${BASH_SOURCE[0]}")/common.sh"

# The WMT'14 release (fairseq's recipe with --icml17; the wmt17 dev.tgz also holds newstest2013).
FILES=(training-parallel-europarl-v7.tgz training-parallel-commoncrawl.tgz training-parallel-nc-v9.tgz
       dev.tgz test-full.tgz)
URLS=(http://statmt.org/wmt13/training-parallel-europarl-v7.tgz
      http://statmt.org/wmt13/training-parallel-commoncrawl.tgz
      http://statmt.org/wmt14/training-parallel-nc-v9.tgz
      http://statmt.org/wmt14/dev.tgz
      http://statmt.org/wmt14/test-full.tgz)
# training corpus i (files CORPUS.de / CORPUS.en) is in FILES[i]
CORPORA=(training/europarl-v7.de-en commoncrawl.de-en training/news-commentary-v9.de-en)
TEST_MEMBERS=(test-full/newstest2014-deen-src.en.sgm test-full/newstest2014-deen-ref.de.sgm)
# Published sha256 checksums of these archives are not known to this project, so none are
# shipped (invented values would only mislead); add NAME=HEX entries here, or pass --sha256.
KNOWN_SHA256=()

usage() {
    cat <<EOF
usage: bash data-prep/$PROG --out DIR [--archives FOLDER] [--sha256 NAME=HEX ...]
           [--bpe-size N] [--sample-train N] [--seed S] [--max-len N] [--workers N] [--force]

WMT'14 En-De -> DIR/data-bin (source en, target de, joined dictionary):
  train  europarl-v7, commoncrawl and news-commentary-v9 de-en (about 4.5M pairs):
         Moses punctuation normalization, removal of non-printing characters and
         tokenization with hyphen splitting (-a) by sacremoses, no escaping, case kept;
         pairs kept if both sides have 1-250 tokens and a length ratio <= 1.5
  valid  newstest2013 (dev.tgz: dev/newstest2013-{src,ref}.{en,de}.sgm, else newstest2013.{en,de})
  test   newstest2014, full version (test-full.tgz: test-full/newstest2014-deen-src.en.sgm and
         test-full/newstest2014-deen-ref.de.sgm), tokenized the same way (-a)
  then joint sentencepiece BPE (--bpe-size) and fairseq-preprocess, by
  data-prep/prepare-parallel.sh --tokenize none.

  --out DIR          output folder: DIR/orig (extracted files), DIR/text (tokenized text),
                     DIR/tok, DIR/bpe, DIR/data-bin, DIR/archives.sha256
  --archives FOLDER  the folder holding the five archives:
$(for i in "${!FILES[@]}"; do printf '                       %-36s %s\n' "${FILES[$i]}" "${URLS[$i]}"; done)
                     Without --archives, DIR/orig is used and missing archives are downloaded
                     there with curl/wget (this needs network access).
  --sha256 NAME=HEX  expected sha256 of archive NAME (repeatable).  No published checksums are
                     shipped: the first run records each archive's sha256 in
                     DIR/archives.sha256 and later runs check the archives against it
  --bpe-size N       joint sentencepiece BPE vocabulary (default 32000)
  --sample-train N   keep N random training pairs after the length filter (seeded by --seed,
                     in corpus order); default 0: all
  --seed S           seed of --sample-train (default 1)
  --max-len N        length filter: at most N tokens per side (default 250)
  --workers N        processes for tokenization, BPE and binarization (default: CPUs, at most 8)
  --force            redo every step (and accept archives whose checksums differ from the record)
  -h, --help         show this help

Differences from fairseq's prepare-wmt14en2de.sh --icml17: valid is newstest2013 (fairseq's
script holds out every 100th training pair instead); the length filter counts Moses tokens
(fairseq's counts its 40k BPE pieces); the BPE is sentencepiece.  newstest2013 has 3000 and
newstest2014 (full) 3003 sentences.  Each step is skipped when its inputs and options are
unchanged; an interrupted tokenization resumes per file.  Decode with
fairseq-generate ... --post-process sentencepiece.
Environment: PYTHON (default: the repo's .venv/bin/python, else python3).
EOF
}

OUT="" ARCHIVES="" BPE_SIZE=32000 SAMPLE=0 SEED=1 MAX_LEN=250 FORCE=0
WORKERS=$(nproc 2>/dev/null || echo 1); (( WORKERS <= 8 )) || WORKERS=8
EXPECT=("${KNOWN_SHA256[@]}")
while [[ $# -gt 0 ]]; do
    arg="$1"
    if [[ "$arg" == --*=* && "$arg" != --sha256=* ]]; then  # --opt=value -> --opt value
        shift; set -- "${arg%%=*}" "${arg#*=}" "$@"; arg="$1"
    fi
    case "$arg" in
        -h|--help) usage; exit 0 ;;
        --out) need_value "$@"; OUT="$2"; shift 2 ;;
        --archives) need_value "$@"; ARCHIVES="$2"; shift 2 ;;
        --sha256=*) EXPECT+=("${arg#--sha256=}"); shift ;;
        --sha256) need_value "$@"; EXPECT+=("$2"); shift 2 ;;
        --bpe-size) need_value "$@"; BPE_SIZE="$2"; shift 2 ;;
        --sample-train) need_value "$@"; SAMPLE="$2"; shift 2 ;;
        --seed) need_value "$@"; SEED="$2"; shift 2 ;;
        --max-len) need_value "$@"; MAX_LEN="$2"; shift 2 ;;
        --workers) need_value "$@"; WORKERS="$2"; shift 2 ;;
        --force) FORCE=1; shift ;;
        *) die "unknown option '$arg' (see --help)" ;;
    esac
done

# ---- validate everything before any work -------------------------------------------
[[ -n "$OUT" ]] || die "missing --out DIR (see --help)"
[[ ! -e "$OUT" || -d "$OUT" ]] || die "--out '$OUT' exists and is not a folder"
is_posint "$BPE_SIZE" || die "--bpe-size must be a positive integer, got '$BPE_SIZE'"
BPE_SIZE=$((10#$BPE_SIZE))
(( BPE_SIZE >= 8 )) || die "--bpe-size must be at least 8, got $BPE_SIZE"
is_nonnegint "$SAMPLE" || die "--sample-train must be a non-negative integer (0: all pairs), got '$SAMPLE'"
SAMPLE=$((10#$SAMPLE))
is_nonnegint "$SEED" || die "--seed must be a non-negative integer, got '$SEED'"
SEED=$((10#$SEED))
is_posint "$MAX_LEN" || die "--max-len must be a positive integer, got '$MAX_LEN'"
MAX_LEN=$((10#$MAX_LEN))
is_posint "$WORKERS" || die "--workers must be a positive integer, got '$WORKERS'"
WORKERS=$((10#$WORKERS))
for e in "${EXPECT[@]}"; do
    name="${e%%=*}"
    [[ "$e" == *=* && "${e#*=}" =~ ^[0-9a-fA-F]{64}$ ]] || die "--sha256 must be NAME=HEX with 64 hex digits, got '$e'"
    [[ " ${FILES[*]} " == *" $name "* ]] || die "--sha256 $name: not one of the archives (${FILES[*]})"
done

PY="$(find_python)"
find_preprocess >/dev/null
"$PY" -c "import sacremoses, sentencepiece" 2>/dev/null \
    || die "$PY cannot import sacremoses and sentencepiece (run 'make setup')"
TOOLS="$DATA_PREP_DIR/corpus_tools.py"

if [[ -n "$ARCHIVES" ]]; then
    [[ -d "$ARCHIVES" ]] || die "--archives $ARCHIVES is not a folder"
    SRC_DIR="$ARCHIVES"
else
    SRC_DIR="$OUT/orig"
fi
MISSING=()
for f in "${FILES[@]}"; do
    p="$SRC_DIR/$f"
    if [[ ! -e "$p" ]]; then
        [[ -z "$ARCHIVES" ]] || die "--archives $ARCHIVES has no $f (see --help for where to get it)"
        MISSING+=("$f")
        continue
    fi
    [[ -f "$p" && -r "$p" ]] || die "$p is not a readable file"
    [[ "$(head -c 2 "$p" | od -An -tx1 | tr -d ' \n')" == 1f8b ]] || die "$p is not a gzip file"
done
if (( ${#MISSING[@]} )); then
    command -v curl >/dev/null 2>&1 || command -v wget >/dev/null 2>&1 \
        || die "no --archives given, ${MISSING[*]} not in $SRC_DIR, and neither curl nor wget is installed"
fi

# member FILE LISTING CANDIDATE...: the first candidate that is in the archive listing
member() {
    local listing="$1" c; shift
    for c in "$@"; do
        if grep -qxF "$c" <<<"$listing"; then echo "$c"; return 0; fi
        if grep -qxF "./$c" <<<"$listing"; then echo "./$c"; return 0; fi
    done
    return 1
}
# Small archives: check their layout now (the training archives are checked while extracting).
check_small() {
    DEV_LIST="$(tar -tzf "$SRC_DIR/dev.tgz" 2>/dev/null)" || die "$SRC_DIR/dev.tgz is not a readable .tgz archive"
    VALID_EN="$(member "$DEV_LIST" dev/newstest2013-src.en.sgm dev/newstest2013-ref.en.sgm dev/newstest2013.en)" \
        || die "$SRC_DIR/dev.tgz has no dev/newstest2013-src.en.sgm (nor -ref.en.sgm, newstest2013.en)"
    VALID_DE="$(member "$DEV_LIST" dev/newstest2013-ref.de.sgm dev/newstest2013-src.de.sgm dev/newstest2013.de)" \
        || die "$SRC_DIR/dev.tgz has no dev/newstest2013-ref.de.sgm (nor -src.de.sgm, newstest2013.de)"
    local test_list m found
    test_list="$(tar -tzf "$SRC_DIR/test-full.tgz" 2>/dev/null)" \
        || die "$SRC_DIR/test-full.tgz is not a readable .tgz archive"
    TEST_NAMES=()
    for m in "${TEST_MEMBERS[@]}"; do
        found="$(member "$test_list" "$m")" || die "$SRC_DIR/test-full.tgz has no $m"
        TEST_NAMES+=("$found")
    done
}
[[ " ${MISSING[*]} " == *" dev.tgz "* || " ${MISSING[*]} " == *" test-full.tgz "* ]] || check_small

# ---- step bookkeeping (as prepare-parallel.sh) ------------------------------------------------
mkdir -p "$OUT"
STAMPS="$OUT/.stamps"
mkdir -p "$STAMPS"
is_done() { [[ $FORCE -eq 0 && -f "$STAMPS/$1" && "$(cat "$STAMPS/$1")" == "$2" ]]; }
mark_done() { echo "$2" >"$STAMPS/$1"; }
export DATA_PREP_PROG="$PROG"  # corpus_tools.py prints its one-line errors under this script's name
py() { "$PY" "$TOOLS" "$@" || exit 1; }
START=$(date +%s)

# ---- 0. download missing archives -----------------------------------------------------------
if (( ${#MISSING[@]} )); then
    mkdir -p "$SRC_DIR"
    for i in "${!FILES[@]}"; do
        f="${FILES[$i]}" url="${URLS[$i]}"
        [[ " ${MISSING[*]} " == *" $f "* ]] || continue
        info "[0/4] downloading $url -> $SRC_DIR/$f"
        err="$SRC_DIR/$f.err"
        if command -v curl >/dev/null 2>&1; then
            curl -fsSL --retry 2 --connect-timeout 30 -o "$SRC_DIR/$f.part" "$url" 2>"$err" || true
        else
            wget -q --tries=2 --timeout=30 -O "$SRC_DIR/$f.part" "$url" 2>"$err" || true
        fi
        if [[ ! -s "$SRC_DIR/$f.part" ]] || ! gzip -t "$SRC_DIR/$f.part" 2>/dev/null; then
            reason="$(tr '\n' ' ' <"$err" | tr -s ' ' | cut -c1-200)"
            rm -f "$SRC_DIR/$f.part" "$err"
            fail "could not download $url (${reason:-no data}); without network access, fetch the archives" \
                 "elsewhere and pass --archives FOLDER"
        fi
        rm -f "$err"
        mv "$SRC_DIR/$f.part" "$SRC_DIR/$f"
    done
    check_small
fi

# ---- 1. checksums -----------------------------------------------------------------------------
info "[1/4] sha256 of the archives in $SRC_DIR"
opts=(--record "$OUT/archives.sha256")
for e in "${EXPECT[@]}"; do opts+=(--expect "$e"); done
(( FORCE )) && opts+=(--force)
paths=(); for f in "${FILES[@]}"; do paths+=("$SRC_DIR/$f"); done
CHECK="$(py checksum "${opts[@]}" "${paths[@]}")"
sed 's/^/  /' <<<"$CHECK"
SUMS="$(awk '{ print $1, $2 }' <<<"$CHECK" | tr '\n' ' ')"

# ---- 2. extract -------------------------------------------------------------------------------
ORIG="$OUT/orig"
SIG_EXTRACT="extract: $SUMS valid=$VALID_EN,$VALID_DE"
if is_done wmt14-extract "$SIG_EXTRACT"; then
    info "[2/4] extracted files in $ORIG are up to date"
else
    rm -f "$STAMPS"/wmt14-{extract,text}
    rm -rf "$ORIG/training" "$ORIG/commoncrawl.de-en".{de,en} "$ORIG/dev" "$ORIG/test-full"
    mkdir -p "$ORIG"
    info "[2/4] extracting the corpora -> $ORIG"
    untar() {  # ARCHIVE MEMBER...
        local a="$1"; shift
        tar -xzf "$a" -C "$ORIG" "$@" 2>"$ORIG/tar.err" \
            || fail "extracting from $a failed: $(grep -m1 -i 'not found\|error' "$ORIG/tar.err" || head -n 1 "$ORIG/tar.err")"
    }
    for i in "${!CORPORA[@]}"; do
        untar "$SRC_DIR/${FILES[$i]}" "${CORPORA[$i]}.de" "${CORPORA[$i]}.en"
    done
    untar "$SRC_DIR/dev.tgz" "$VALID_EN" "$VALID_DE"
    untar "$SRC_DIR/test-full.tgz" "${TEST_NAMES[@]}"
    rm -f "$ORIG/tar.err"
    mark_done wmt14-extract "$SIG_EXTRACT"
fi

# ---- 3. tokenize, filter, sample ------------------------------------------------------------------
TEXT="$OUT/text"
T="$TEXT/tmp"
TOOLS_HASH="$("$PY" -c 'import hashlib, sys; print(hashlib.sha256(b"".join(open(p, "rb").read() for p in sys.argv[1:])).hexdigest()[:16])' \
    "$TOOLS" "$DATA_PREP_DIR/text_pipeline.py")"
SIG_TOKENIZE="$SIG_EXTRACT"$'\n'"tokenize: tools=$TOOLS_HASH"
SIG_TEXT="$SIG_TOKENIZE"$'\n'"filter: len=1-$MAX_LEN ratio=1.5 sample=$SAMPLE seed=$SEED"
if is_done wmt14-text "$SIG_TEXT"; then
    info "[3/4] text in $TEXT is up to date"
else
    rm -f "$STAMPS/wmt14-text"
    # tokenized files in TEXT/tmp survive an interruption: they are reused if made the same way
    if (( FORCE )) || [[ ! -f "$T/.sig" || "$(cat "$T/.sig")" != "$SIG_TOKENIZE" ]]; then
        rm -rf "$TEXT"; mkdir -p "$T"; echo "$SIG_TOKENIZE" >"$T/.sig"
    fi
    info "[3/4] Moses normalization + tokenization (-a), length filter 1-$MAX_LEN -> $TEXT"
    for c in "${CORPORA[@]}"; do
        nd=$(count_lines "$ORIG/$c.de") ne=$(count_lines "$ORIG/$c.en")
        (( nd == ne )) || fail "$ORIG/$c: the de file has $nd lines, the en file $ne"
    done
    for l in en de; do
        if [[ -f "$T/train.tok.$l" ]]; then
            echo "  train.$l: tokenized already"
        else
            inputs=(); for c in "${CORPORA[@]}"; do inputs+=("$ORIG/$c.$l"); done
            echo "  train.$l: tokenizing $(( $(for f in "${inputs[@]}"; do count_lines "$f"; done | paste -sd+) )) lines"
            py tokenize --lang "$l" --normalize --remove-non-printing --aggressive-dash --workers "$WORKERS" \
                --out "$T/train.tok.$l" "${inputs[@]}" >/dev/null
        fi
    done
    opts=(--src en --tgt de --min-len 1 --max-len "$MAX_LEN" --ratio 1.5)
    (( SAMPLE == 0 )) || opts+=(--sample "$SAMPLE" --seed "$SEED")
    FILTER_STATS="$(py filter "${opts[@]}" "$T/train.tok" "$TEXT/train")"
    heldout() {  # SPLIT MEMBER_EN MEMBER_DE
        local split="$1" l m
        for l in en de; do
            [[ $l == en ]] && m="$2" || m="$3"
            m="$ORIG/${m#./}"
            if [[ "$m" == *.sgm ]]; then py segs "$m" "$T/$split.raw.$l" >/dev/null
            else cp "$m" "$T/$split.raw.$l"; fi
            py tokenize --lang "$l" --aggressive-dash --workers "$WORKERS" --out "$TEXT/$split.$l" \
                "$T/$split.raw.$l" >/dev/null
        done
        local ne nd
        ne=$(count_lines "$TEXT/$split.en") nd=$(count_lines "$TEXT/$split.de")
        (( ne == nd )) || fail "$split: $2 has $ne segments, $3 has $nd"
    }
    heldout valid "$VALID_EN" "$VALID_DE"
    heldout test "${TEST_NAMES[0]}" "${TEST_NAMES[1]}"
    echo "{\"filter\": $FILTER_STATS}" >"$TEXT/stats.json"
    rm -rf "$T"
    mark_done wmt14-text "$SIG_TEXT"
fi

# ---- 4. BPE + binarize ----------------------------------------------------------------------------
info "[4/4] joint BPE ($BPE_SIZE) and binarization with prepare-parallel.sh"
opts=(--src en --tgt de --train "$TEXT/train" --valid "$TEXT/valid" --test "$TEXT/test" --out "$OUT"
      --tokenize none --bpe-size "$BPE_SIZE" --workers "$WORKERS")
(( FORCE )) && opts+=(--force)
bash "$DATA_PREP_DIR/prepare-parallel.sh" "${opts[@]}" | sed 's/^/  /'  # pipefail: its failure stops here

# ---- summary --------------------------------------------------------------------------------------
info "done in $(elapsed "$START")"
"$PY" - "$TEXT/stats.json" "$MAX_LEN" "$SAMPLE" <<'EOF'
import json, sys
f = json.load(open(sys.argv[1]))["filter"]
sample = f" -> {f['train']} sampled (--sample-train)" if int(sys.argv[3]) else ""
print(f"  filter:     {f['kept']} of {f['input']} training pairs kept (1-{sys.argv[2]} tokens, ratio 1.5; "
      f"dropped: {f['empty']} empty, {f['too_long']} too long, {f['ratio']} ratio){sample}")
EOF
echo "  split:      train $(count_lines "$TEXT/train.en"), valid $(count_lines "$TEXT/valid.en") (newstest2013)," \
     "test $(count_lines "$TEXT/test.en") (newstest2014) pairs"
echo "  archives:   $SRC_DIR (sha256 in $OUT/archives.sha256)"
echo "  data-bin:   $(cd "$OUT/data-bin" && pwd)"
