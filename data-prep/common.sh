# Shared helpers for the data-prep scripts.  Source it after setting PROG:
#     PROG=prepare-demo.sh; . "$(dirname "${BASH_SOURCE[0]}")/common.sh"
# shellcheck shell=bash

DATA_PREP_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO_ROOT="$(cd "$DATA_PREP_DIR/.." && pwd)"

# One-line error on stderr, non-zero exit (2: bad usage, before any work).
die() { echo "$PROG: error: $*" >&2; exit 2; }
# One-line error for a failure during the work.
fail() { echo "$PROG: error: $*" >&2; exit 1; }
warn() { echo "$PROG: warning: $*" >&2; }
info() { echo "$PROG: $*"; }

# The python: $PYTHON, else the repo's .venv, else python3.
find_python() {
    if [[ -n "${PYTHON:-}" ]]; then
        command -v "$PYTHON" >/dev/null 2>&1 || die "PYTHON=$PYTHON is not an executable"
        command -v "$PYTHON"
    elif [[ -x "$REPO_ROOT/.venv/bin/python" ]]; then
        echo "$REPO_ROOT/.venv/bin/python"
    elif command -v python3 >/dev/null 2>&1; then
        command -v python3
    else
        die "no python found: set PYTHON, run 'make setup', or install python3"
    fi
}

# fairseq-preprocess: on PATH, else in the repo's .venv.
find_preprocess() {
    if command -v fairseq-preprocess >/dev/null 2>&1; then
        command -v fairseq-preprocess
    elif [[ -x "$REPO_ROOT/.venv/bin/fairseq-preprocess" ]]; then
        echo "$REPO_ROOT/.venv/bin/fairseq-preprocess"
    else
        die "fairseq-preprocess not found on PATH nor in $REPO_ROOT/.venv/bin (run 'make setup')"
    fi
}

# is_posint VALUE: a positive decimal integer (no sign, no leading junk).
is_posint() { [[ "$1" =~ ^[0-9]+$ ]] && (( 10#$1 > 0 )); }
is_nonnegint() { [[ "$1" =~ ^[0-9]+$ ]]; }

# need_value OPTION "$@": the option at $1 must be followed by a value.
need_value() {
    [[ $# -ge 2 && -n "$2" && "$2" != --* ]] || die "option $1 needs a value (see --help)"
}

# Number of lines, counting an unterminated last line (as Python and fairseq do).
count_lines() { awk 'END { print NR }' "$1"; }

# Dictionary size as fairseq loads it: the file's entries plus 4 specials (<s> <pad> </s> <unk>).
dict_size() { echo $(( $(count_lines "$1") + 4 )); }

# Run a command with its output in LOG; on failure, show the log's tail and fail.
run_logged() {
    local log="$1"; shift
    if ! "$@" >"$log" 2>&1; then
        echo "---- last lines of $log ----" >&2
        tail -n 15 "$log" >&2
        fail "'$(basename "$1")' failed (full log: $log)"
    fi
}

# Human-readable elapsed time since START (seconds since epoch).
elapsed() { local s=$(( $(date +%s) - $1 )); echo "${s}s"; }
