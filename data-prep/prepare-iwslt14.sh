#!/usr/bin/env bash
# IWSLT'14 German-English from the original TED archive (de-en.tgz of the 2014-01 release)
# to a fairseq data-bin, as fairseq's examples/translation/prepare-iwslt14.sh does, with
# sacremoses and sentencepiece instead of Moses' perl scripts and subword-nmt.  See --help.
set -euo pipefail

PROG=prepare-iwslt14.sh
# shellcheck source=data-prep/common.sh
. "$(dirname "${BASH_SOURCE[0]}")/common.sh"

# fairseq's mirror of the wit3 file (https://wit3.fbk.eu/archive/2014-01/texts/de/en/de-en.tgz, offline now).
DEFAULT_URL="http://dl.fbaipublicfiles.com/fairseq/data/iwslt14/de-en.tgz"
# The published sha256 of de-en.tgz is not known to this project, so none is shipped (an
# invented value would only mislead).  Set it here, or pass --sha256, once you have one.
KNOWN_SHA256=""
CLASSIC_TEST="TED.dev2010,TEDX.dev2012,TED.tst2010,TED.tst2011,TED.tst2012"

usage() {
    cat <<EOF
usage: bash data-prep/$PROG --out DIR [--archive de-en.tgz | --url URL] [--sha256 HEX]
           [--bpe-size N] [--tags classic|all] [--test-sets LIST] [--workers N] [--force]

IWSLT'14 De-En TED talks -> DIR/data-bin (source de, target en, joined dictionary),
following fairseq's classic recipe (examples/translation/prepare-iwslt14.sh):
  1. checksum  sha256 of the archive, checked and recorded in DIR/archive.sha256
  2. extract   de-en/train.tags.de-en.{de,en} and the IWSLT14.TED*.xml dev/test files
  3. text      train.tags: drop the talk headers (--tags); xml: the <seg> texts, U+2019 -> ';
               Moses tokenization (sacremoses, no escaping), lowercasing; train pairs kept
               if both sides have 1-175 tokens and a length ratio <= 1.5 (clean-corpus-n);
               every 23rd kept pair -> valid, the rest -> train; test = the --test-sets
  4. BPE+bin   joint sentencepiece BPE (--bpe-size) and fairseq-preprocess, by
               data-prep/prepare-parallel.sh --tokenize none

  --out DIR        output folder: DIR/orig (extracted files, and the download), DIR/text
                   (tokenized, lowercased text), DIR/tok, DIR/bpe, DIR/data-bin
  --archive FILE   a local copy of de-en.tgz.  Without it, DIR/orig/de-en.tgz is used,
                   or downloaded with curl/wget from --url (this needs network access)
  --url URL        download address (default $DEFAULT_URL)
  --sha256 HEX     the archive's expected sha256.  No published checksum is shipped: without
                   --sha256 the first run records the archive's checksum in DIR/archive.sha256
                   and later runs check the archive against it
  --bpe-size N     joint sentencepiece BPE vocabulary (default 10000)
  --tags MODE      classic (default): as fairseq's recipe, drop the lines with <url>,
                   <talkid> or <keywords> and strip the <title>/<description> tags, keeping
                   their text (this gives the standard split); all: drop every line that
                   starts with '<' (titles, descriptions, speakers, ... too)
  --test-sets LIST comma-separated IWSLT14.<set>.de-en xml sets concatenated into test
                   (default $CLASSIC_TEST, as fairseq's recipe;
                   TED.dev2010,TED.tst2010,TED.tst2011,TED.tst2012 leaves out TEDX)
  --workers N      processes for tokenization, BPE and binarization (default: CPUs, at most 8)
  --force          redo every step (and accept an archive whose checksum differs from the record)
  -h, --help       show this help

fairseq's recipe with Moses' perl tools yields 160239 train, 7283 valid and 6750 test pairs;
sacremoses may differ by a few pairs.  Each step is skipped when its inputs and options are
unchanged, so a rerun is quick.  Train on it with e.g. fairseq-train DIR/data-bin ...;
decode with fairseq-generate ... --post-process sentencepiece.
Environment: PYTHON (default: the repo's .venv/bin/python, else python3).
EOF
}

OUT="" ARCHIVE="" URL="$DEFAULT_URL" SHA256="" BPE_SIZE=10000 TAGS=classic TEST_SETS="$CLASSIC_TEST" FORCE=0
WORKERS=$(nproc 2>/dev/null || echo 1); (( WORKERS <= 8 )) || WORKERS=8
while [[ $# -gt 0 ]]; do
    arg="$1"
    if [[ "$arg" == --*=* ]]; then  # --opt=value -> --opt value
        shift; set -- "${arg%%=*}" "${arg#*=}" "$@"; arg="$1"
    fi
    case "$arg" in
        -h|--help) usage; exit 0 ;;
        --out) need_value "$@"; OUT="$2"; shift 2 ;;
        --archive) need_value "$@"; ARCHIVE="$2"; shift 2 ;;
        --url) need_value "$@"; URL="$2"; shift 2 ;;
        --sha256) need_value "$@"; SHA256="$2"; shift 2 ;;
        --bpe-size) need_value "$@"; BPE_SIZE="$2"; shift 2 ;;
        --tags) need_value "$@"; TAGS="$2"; shift 2 ;;
        --test-sets) need_value "$@"; TEST_SETS="$2"; shift 2 ;;
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
is_posint "$WORKERS" || die "--workers must be a positive integer, got '$WORKERS'"
WORKERS=$((10#$WORKERS))
[[ "$TAGS" == classic || "$TAGS" == all ]] || die "--tags must be 'classic' or 'all', got '$TAGS'"
[[ -z "$SHA256" || "$SHA256" =~ ^[0-9a-fA-F]{64}$ ]] || die "--sha256 must be 64 hexadecimal digits, got '$SHA256'"
[[ -n "$SHA256" ]] || SHA256="$KNOWN_SHA256"
IFS=, read -r -a SETS <<<"$TEST_SETS"
(( ${#SETS[@]} > 0 )) || die "--test-sets is empty"
for s in "${SETS[@]}"; do
    [[ "$s" =~ ^TEDX?\.(dev|tst)[0-9]{4}$ ]] || die "--test-sets: '$s' is not a set name like TED.tst2010 or TEDX.dev2012"
done

PY="$(find_python)"
find_preprocess >/dev/null
"$PY" -c "import sacremoses, sentencepiece" 2>/dev/null \
    || die "$PY cannot import sacremoses and sentencepiece (run 'make setup')"
TOOLS="$DATA_PREP_DIR/corpus_tools.py"

LANGS=(de en)
MEMBERS=()
for l in "${LANGS[@]}"; do MEMBERS+=("de-en/train.tags.de-en.$l"); done
for s in "${SETS[@]}"; do
    for l in "${LANGS[@]}"; do MEMBERS+=("de-en/IWSLT14.$s.de-en.$l.xml"); done
done

DOWNLOAD=0
if [[ -n "$ARCHIVE" ]]; then
    [[ -e "$ARCHIVE" ]] || die "--archive $ARCHIVE does not exist"
    [[ -f "$ARCHIVE" && -r "$ARCHIVE" ]] || die "--archive $ARCHIVE is not a readable file"
elif [[ -f "$OUT/orig/de-en.tgz" ]]; then
    ARCHIVE="$OUT/orig/de-en.tgz"
else
    ARCHIVE="$OUT/orig/de-en.tgz" DOWNLOAD=1
    command -v curl >/dev/null 2>&1 || command -v wget >/dev/null 2>&1 \
        || die "no --archive given and neither curl nor wget is installed to download $URL"
fi

# check_archive FILE: a gzip'ed tar holding the members this script reads.
check_archive() {
    local f="$1" listing m
    [[ "$(head -c 2 "$f" | od -An -tx1 | tr -d ' \n')" == 1f8b ]] \
        || die "$f is not a gzip file (expected IWSLT'14's de-en.tgz)"
    listing="$(tar -tzf "$f" 2>/dev/null)" || die "$f is not a readable .tgz archive"
    for m in "${MEMBERS[@]}"; do
        grep -qxF -e "$m" -e "./$m" <<<"$listing" \
            || die "$f has no $m (expected the IWSLT'14 2014-01 de-en.tgz layout; see --help for --test-sets)"
    done
}
(( DOWNLOAD )) || check_archive "$ARCHIVE"

# ---- step bookkeeping (as prepare-parallel.sh) ------------------------------------------------
mkdir -p "$OUT"
STAMPS="$OUT/.stamps"
mkdir -p "$STAMPS"
is_done() { [[ $FORCE -eq 0 && -f "$STAMPS/$1" && "$(cat "$STAMPS/$1")" == "$2" ]]; }
mark_done() { echo "$2" >"$STAMPS/$1"; }
export DATA_PREP_PROG="$PROG"  # corpus_tools.py prints its one-line errors under this script's name
py() { "$PY" "$TOOLS" "$@" || exit 1; }
START=$(date +%s)

# ---- 0. download ------------------------------------------------------------------------------
if (( DOWNLOAD )); then
    mkdir -p "$OUT/orig"
    info "[0/4] downloading $URL -> $ARCHIVE"
    err="$OUT/orig/download.err"
    if command -v curl >/dev/null 2>&1; then
        curl -fsSL --retry 2 --connect-timeout 30 -o "$ARCHIVE.part" "$URL" 2>"$err" || true
    else
        wget -q --tries=2 --timeout=30 -O "$ARCHIVE.part" "$URL" 2>"$err" || true
    fi
    if [[ ! -s "$ARCHIVE.part" ]] || ! tar -tzf "$ARCHIVE.part" >/dev/null 2>&1; then
        reason="$(tr '\n' ' ' <"$err" | tr -s ' ' | cut -c1-200)"
        rm -f "$ARCHIVE.part" "$err"
        fail "could not download $URL (${reason:-no data}); without network access, fetch de-en.tgz" \
             "elsewhere and pass --archive PATH"
    fi
    rm -f "$err"
    mv "$ARCHIVE.part" "$ARCHIVE"
    check_archive "$ARCHIVE"
fi

# ---- 1. checksum ------------------------------------------------------------------------------
info "[1/4] sha256 of $ARCHIVE"
opts=(--record "$OUT/archive.sha256")
[[ -z "$SHA256" ]] || opts+=(--expect "$(basename "$ARCHIVE")=$SHA256")
(( FORCE )) && opts+=(--force)
CHECK="$(py checksum "${opts[@]}" "$ARCHIVE")"
read -r _ ARCHIVE_SHA HOW <<<"$CHECK"
echo "  $ARCHIVE_SHA ($HOW)"

# ---- 2. extract -------------------------------------------------------------------------------
ORIG="$OUT/orig"
SIG_EXTRACT="extract: sha256=$ARCHIVE_SHA members=${MEMBERS[*]}"
if is_done iwslt14-extract "$SIG_EXTRACT"; then
    info "[2/4] extracted files in $ORIG/de-en are up to date"
else
    rm -f "$STAMPS"/iwslt14-{extract,text}
    rm -rf "$ORIG/de-en"; mkdir -p "$ORIG"
    info "[2/4] extracting ${#MEMBERS[@]} files -> $ORIG/de-en"
    listing="$(tar -tzf "$ARCHIVE")"
    names=()
    for m in "${MEMBERS[@]}"; do
        if grep -qxF "$m" <<<"$listing"; then names+=("$m"); else names+=("./$m"); fi
    done
    tar -xzf "$ARCHIVE" -C "$ORIG" "${names[@]}" 2>"$ORIG/tar.err" \
        || fail "extracting $ARCHIVE failed: $(head -n 1 "$ORIG/tar.err")"
    rm -f "$ORIG/tar.err"
    mark_done iwslt14-extract "$SIG_EXTRACT"
fi

# ---- 3. clean, tokenize, lowercase, filter, split ---------------------------------------------
TEXT="$OUT/text"
TOOLS_HASH="$("$PY" -c 'import hashlib, sys; print(hashlib.sha256(b"".join(open(p, "rb").read() for p in sys.argv[1:])).hexdigest()[:16])' \
    "$TOOLS" "$DATA_PREP_DIR/text_pipeline.py")"
SIG_TEXT="$SIG_EXTRACT"$'\n'"text: tools=$TOOLS_HASH tags=$TAGS len=1-175 ratio=1.5 valid-every=23 test=$TEST_SETS"
if is_done iwslt14-text "$SIG_TEXT"; then
    info "[3/4] text in $TEXT is up to date"
else
    rm -f "$STAMPS/iwslt14-text"
    rm -rf "$TEXT"; mkdir -p "$TEXT/tmp"
    T="$TEXT/tmp" D="$ORIG/de-en"
    info "[3/4] cleaning (--tags $TAGS), Moses tokenization, lowercasing, length filter -> $TEXT"
    TAG_STATS="$(py train-tags --mode "$TAGS" "$D/train.tags.de-en.de" "$D/train.tags.de-en.en" \
        "$T/train.tags.de" "$T/train.tags.en")"
    for l in "${LANGS[@]}"; do
        py tokenize --lang "$l" --lowercase --workers "$WORKERS" --out "$T/train.tok.$l" "$T/train.tags.$l" >/dev/null
    done
    FILTER_STATS="$(py filter --src de --tgt en --min-len 1 --max-len 175 --ratio 1.5 \
        --holdout-every 23 --holdout "$TEXT/valid" "$T/train.tok" "$TEXT/train")"
    for s in "${SETS[@]}"; do
        for l in "${LANGS[@]}"; do py segs "$D/IWSLT14.$s.de-en.$l.xml" "$T/$s.$l" >/dev/null; done
        nd=$(count_lines "$T/$s.de") ne=$(count_lines "$T/$s.en")
        (( nd == ne )) || fail "IWSLT14.$s.de-en: the de file has $nd segments, the en file $ne"
    done
    for l in "${LANGS[@]}"; do
        inputs=(); for s in "${SETS[@]}"; do inputs+=("$T/$s.$l"); done
        py tokenize --lang "$l" --lowercase --workers "$WORKERS" --out "$TEXT/test.$l" "${inputs[@]}" >/dev/null
    done
    echo "{\"tags\": $TAG_STATS, \"filter\": $FILTER_STATS}" >"$TEXT/stats.json"
    rm -rf "$T"
    mark_done iwslt14-text "$SIG_TEXT"
fi

# ---- 4. BPE + binarize ----------------------------------------------------------------------------
info "[4/4] joint BPE ($BPE_SIZE) and binarization with prepare-parallel.sh"
opts=(--src de --tgt en --train "$TEXT/train" --valid "$TEXT/valid" --test "$TEXT/test" --out "$OUT"
      --tokenize none --bpe-size "$BPE_SIZE" --workers "$WORKERS")
(( FORCE )) && opts+=(--force)
bash "$DATA_PREP_DIR/prepare-parallel.sh" "${opts[@]}" | sed 's/^/  /'  # pipefail: its failure stops here

# ---- summary --------------------------------------------------------------------------------------
info "done in $(elapsed "$START")"
"$PY" - "$TEXT/stats.json" "$TAGS" <<'EOF'
import json, sys
s = json.load(open(sys.argv[1]))
t, f = s["tags"], s["filter"]
print(f"  train.tags: {t['dropped']} header lines dropped (--tags {sys.argv[2]})"
      + (f"; {t['tag_like']} kept lines still start with '<' (--tags all drops them)" if t["tag_like"] else ""))
print(f"  filter:     {f['kept']} of {f['input']} pairs kept (1-175 tokens, ratio 1.5; dropped: "
      f"{f['empty']} empty, {f['too_long']} too long, {f['ratio']} ratio)")
EOF
published=""
[[ "$TAGS" == classic && "$TEST_SETS" == "$CLASSIC_TEST" ]] && published=" (fairseq's recipe: 160239 / 7283 / 6750)"
echo "  split:      train $(count_lines "$TEXT/train.de"), valid $(count_lines "$TEXT/valid.de")," \
     "test $(count_lines "$TEXT/test.de") pairs$published"
echo "  archive:    $ARCHIVE (sha256 $ARCHIVE_SHA)"
echo "  data-bin:   $(cd "$OUT/data-bin" && pwd)"
