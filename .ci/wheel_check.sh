#!/usr/bin/env bash
# Install check: the project works from a wheel, not only from a checkout.
#
# Builds a wheel from a copy of the checkout, installs it into a fresh venv outside the checkout (torch ==
# 2.13.0 first, the CPU wheel the Makefile uses; the other dependencies from the package index / pip cache),
# then, from a folder outside the checkout: kgbuild fetch --list (manifests are package data), kgbuild
# --help, txpert --help, and a tiny simulate -> build graphs (kgbuild Python API) -> train -> predict.
# Everything happens in one mktemp -d folder, deleted at the end; nothing is written into the checkout.
set -euo pipefail
repo="$(cd "$(dirname "$0")/.." && pwd)"
PYTHON="${PYTHON:-$(command -v python3.11 || command -v python3)}"
work="$(mktemp -d "${TMPDIR:-/tmp}/txpert-wheel-check.XXXXXX")"
trap 'rm -rf "$work"' EXIT
start=$(date +%s)
step() { echo "wheel-check: $* ($(( $(date +%s) - start )) s)"; }

# 1. wheel, built from a copy (setuptools writes build/ and *.egg-info beside the sources)
mkdir -p "$work/src" "$work/dist"
(cd "$repo" && git ls-files -z --cached --others --exclude-standard | xargs -0 tar -cf - --ignore-failed-read 2>/dev/null) \
    | tar -xf - -C "$work/src"
"$PYTHON" -m venv "$work/venv"
venv="$work/venv/bin"
"$venv/python" -m pip install --quiet --upgrade pip setuptools wheel
"$venv/python" -m pip wheel --quiet --no-deps --no-build-isolation -w "$work/dist" "$work/src"
wheel="$(ls "$work/dist"/txpert_kg-*.whl)"
"$venv/python" -c 'import sys, zipfile; print("\n".join(zipfile.ZipFile(sys.argv[1]).namelist()))' "$wheel" \
    > "$work/wheel-files.txt"
grep -q '^kgbuild/manifests/string.toml$' "$work/wheel-files.txt" || { echo "wheel-check: manifests missing from $wheel"; exit 1; }
grep -q '^gnn/backends/fused_attention.c$' "$work/wheel-files.txt" || { echo "wheel-check: kernel source missing from $wheel"; exit 1; }
step "built $(basename "$wheel")"

# 2. install: torch first (the pinned CPU wheel), then the wheel and its dependencies
"$venv/python" -m pip install --quiet --no-compile torch==2.13.0
"$venv/python" -m pip install --quiet --no-compile "$wheel"
"$venv/python" -m pip check
step "installed into a clean venv"

# 3. from outside the checkout
mkdir -p "$work/run"
cd "$work/run"
export KGBUILD_CACHE_DIR="$work/cache" TXPERT_KERNEL_CACHE="$work/kernels" MPLBACKEND=Agg
unset KGBUILD_MANIFEST_DIR PYTHONPATH
"$venv/kgbuild" fetch --list > "$work/fetch-list.txt"
head -n 3 "$work/fetch-list.txt"
grep -q '^string ' "$work/fetch-list.txt"
"$venv/kgbuild" --help >/dev/null
"$venv/txpert" --help >/dev/null
"$venv/txpert" simulate -o sim --genes 60 --singles 12 --doubles 0 --cells-per-perturbation 20 >/dev/null
step "CLIs run"
"$venv/python" - "$repo" <<'PY'
import sys
from pathlib import Path

repo = Path(sys.argv[1]).resolve()
import kgbuild
import txpert_head

for mod in (kgbuild, txpert_head):  # imported from the venv, not from the checkout
    assert repo not in Path(mod.__file__).resolve().parents, f"{mod.__name__} imported from the checkout: {mod.__file__}"
from gnn.backends import fused_attention

assert fused_attention.library() is not None, "the fused attention kernels did not build from the installed source"
assert fused_attention.kernel_path().parent.resolve() == Path("../kernels").resolve(), fused_attention.kernel_path()
sim = Path("sim")
string = kgbuild.string(sim / "string/9606.protein.links.sim.txt.gz", sim / "string/9606.protein.info.sim.txt.gz",
                        min_score=400)
go = kgbuild.go(sim / "go/go-basic.obo", sim / "go/goa_human.sim.gaf.gz")
screen = kgbuild.screen(sim / "screen/screen_gene_embeddings.sim.parquet", top_pct=5, layer_name="screen")
graph = kgbuild.merge(string, go, screen, output="multi.kg.npz")
print(graph.format_summary())
assert string.meta["layers"]["string"]["inputs"][0]["sha256"]
options = dict(epochs=1, hidden=16, encoder_dim=8, device="cpu", progress=False)
predictor = txpert_head.train(str(sim / "perturbseq.h5ad"), "multi.kg.npz", "run", baselines=False, vcc=False,
                              **options)
txpert_head.predict("run", predictor.perturbed_genes[:2], out="pred.h5ad")
import anndata

adata = anndata.read_h5ad("pred.h5ad")
assert adata.n_obs >= 1 and adata.n_vars > 0, adata
print(f"predicted {adata.n_obs} perturbation(s) x {adata.n_vars} genes")
PY
step "build -> train -> predict through the Python API"
if [ -e "$repo/build" ] && [ "$repo/build" -nt "$work/venv" ]; then echo "wheel-check: wrote $repo/build"; exit 1; fi
step "done"
