#!/usr/bin/env bash
# Time README.md's commands as a newcomer meets them: a fresh virtual environment, the README's
# install command, then each command in a fresh folder.
#
#   benchmarks/time_readme.sh [VENV_DIR]      # from the repository root, on an idle machine
#
# Prints one line per command: wall seconds and the command. The first `milr demo` includes
# Python compiling torch's and transformers' bytecode; the second shows a warm start.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
venv=${1:-/tmp/milr-readme-venv}
rm -rf "$venv"
python3 -m venv "$venv"
# shellcheck disable=SC1091
. "$venv/bin/activate"
export PIP_CONSTRAINT="$root/.ci/constraints.txt" HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1
work=$(mktemp -d)
log="$work/log.txt"

t() {
    local start end
    start=$(date +%s%N)
    if ! bash -c "$1" >"$log" 2>&1; then
        cat "$log"
        echo "FAILED: $1"
        exit 1
    fi
    end=$(date +%s%N)
    printf '%7.1f s  %s\n' "$(( (end - start) / 1000000 ))e-3" "$1"
}

echo "machine: $(nproc --all) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)"
t "pip install -q -e '.[critics]'"
cd "$work"
t "milr demo"
t "milr demo --out milr-demo-2"
t "milr critics"
t "milr score milr-demo/01-*/initial.png milr-demo/01-*/final.png --prompt 'a photo of a green circle' --critic shapes --critic colorfulness:weight=0.5"
t "milr generate 'a photo of three triangles' --model shapes --critic shapes --out run1"
t "milr generate 'a photo of two red circles' --model shapes --critic shapes --select best --out run2"
t "python -c 'import milr; r = milr.run_milr(\"shapes\", [\"shapes\"], \"a photo of three triangles\", max_steps=20); r.save(\"run1\"); print(r)'"
cd "$root"
t "pip install -q -e '.[test]'"
echo "(then: tox — the whole suite; not timed here)"
