#!/usr/bin/env bash
# Builds the DGL environment and runs the backend tests in it.
#
# DGL on PyPI stops at 2.1.0, which needs torch==2.2.1 and numpy<2 (its import fails otherwise), so the
# DGL backend lives in a venv of its own (default .venv-dgl; override with DGL_VENV=path):
#   torch 2.2.1, dgl 2.1.0, numpy 1.26, pandas 2.x, plus every other dependency of the project (read from
#   setup.cfg so the whole toolkit works there too), and the project itself installed with --no-deps.
# About 2.9 GB of wheels on the first build, kept in a wheelhouse (DGL_WHEELHOUSE, default
# ~/.cache/txpert-kg/dgl-wheels) for the next builds; later runs skip the build entirely when the venv
# imports dgl and setup.cfg / pyproject.toml / this script did not change.
#
# Usage: bash .ci/dgl_env.sh            build (if needed) and run the tests
#        bash .ci/dgl_env.sh --build    build only
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-$(command -v python3.11 || command -v python3)}"
VENV="${DGL_VENV:-.venv-dgl}"
WHEELS="${DGL_WHEELHOUSE:-${XDG_CACHE_HOME:-$HOME/.cache}/txpert-kg/dgl-wheels}"
export DGLBACKEND=pytorch
export TXPERT_REQUIRE_DGL=1   # tests/test_gnn_backends.py fails instead of skipping when dgl does not import
PIN_ARGS=(torch==2.2.1 dgl==2.1.0 "numpy<2" "torchdata<0.8" packaging "pandas>=2,<3" pyyaml pydantic)

want="$(cat .ci/dgl_env.sh setup.cfg pyproject.toml | sha256sum | cut -c1-16)"
stamp="$VENV/.installed"
if [ -x "$VENV/bin/python" ] && [ "$(cat "$stamp" 2>/dev/null)" = "$want" ] \
   && "$VENV/bin/python" -c "import dgl, torch_geometric" >/dev/null 2>&1; then
    echo "dgl-env: $VENV is up to date"
else
    start=$(date +%s)
    test -x "$VENV/bin/python" || "$PYTHON" -m venv "$VENV"
    "$VENV/bin/python" -m pip install --quiet --upgrade pip
    # the project's other requirements (install_requires + test extra) minus the ones pinned above
    mapfile -t DEPS < <("$VENV/bin/python" - <<'PY'
import configparser, re
cfg = configparser.ConfigParser()
cfg.read("setup.cfg")
reqs = cfg["options"]["install_requires"].split("\n") + cfg["options.extras_require"]["test"].split("\n")
pinned = {"torch", "numpy", "pandas"}
for req in reqs:
    req = req.split("#")[0].strip()
    name = re.split(r"[<>=!~\[; ]", req, maxsplit=1)[0].lower()
    if req and name not in pinned:
        print(req)
PY
)
    # pip's own HTTP cache does not keep these wheels here, so keep a wheelhouse: the first build downloads
    # about 2.9 GB into it, later builds (fresh clones under CI included) only check it against the index
    mkdir -p "$WHEELS"
    "$VENV/bin/python" -m pip download --quiet -d "$WHEELS" --find-links "$WHEELS" "${PIN_ARGS[@]}" "${DEPS[@]}"
    "$VENV/bin/python" -m pip install --quiet --no-index --find-links "$WHEELS" "${PIN_ARGS[@]}" "${DEPS[@]}"
    "$VENV/bin/python" -m pip install --quiet --no-deps -e .
    "$VENV/bin/python" -c "import dgl, torch, numpy, pandas; print('dgl-env: dgl', dgl.__version__, 'torch', torch.__version__, 'numpy', numpy.__version__, 'pandas', pandas.__version__)"
    echo "$want" > "$stamp"
    echo "dgl-env: built $VENV in $(( $(date +%s) - start )) s"
fi

if [ "${1:-}" = "--build" ]; then exit 0; fi

start=$(date +%s)
# the toolkit's entry points import in this environment too
"$VENV/bin/kgbuild" --help >/dev/null
"$VENV/bin/txpert" --help >/dev/null
# backend tests (dgl-marked) and the graph / gnn tests, with DGL importable
"$VENV/bin/python" -m pytest -q -p no:cacheprovider -m "dgl or not slow" tests/test_graph.py tests/test_gnn_*.py
echo "ci: DGL environment tests finished in $(( $(date +%s) - start )) s"
