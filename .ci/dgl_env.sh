#!/usr/bin/env bash
# Builds the DGL environment and runs the backend tests in it.
#
# DGL on PyPI stops at 2.1.0, which needs torch==2.2.1 and numpy<2 (its import fails otherwise), so the
# DGL backend lives in a venv of its own (default .venv-dgl; override with DGL_VENV=path):
#   torch 2.2.1, dgl 2.1.0, numpy 1.26, pandas 2.x, plus every other dependency of the project (read from
#   setup.cfg so the whole toolkit works there too), and the project itself installed with --no-deps.
#
# Disk: torch 2.2.1 from PyPI comes with its CUDA libraries (about 6 GB installed), so the third-party
# packages are installed once per machine, not once per clone:
#   $CACHE/txpert-kg/dgl-wheels        the downloaded wheels (about 2.9 GB; DGL_WHEELHOUSE overrides)
#   $CACHE/txpert-kg/dgl-site-<hash>   those wheels installed with `pip install --target` (DGL_SITE overrides);
#                                      <hash> covers this script, setup.cfg and pyproject.toml, so a change
#                                      of dependencies builds a new one (older ones are removed). Built
#                                      under a .part name and renamed when complete.
#   .venv-dgl                          a small venv per clone: pip, the project (editable) and a .pth
#                                      file that adds dgl-site-<hash> as a site directory.
# A fresh clone with a built cache therefore costs about 30 MB and a few seconds instead of 6 GB.
#
# Usage: bash .ci/dgl_env.sh            build (if needed) and run the tests
#        bash .ci/dgl_env.sh --build    build only
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-$(command -v python3.11 || command -v python3)}"
VENV="${DGL_VENV:-.venv-dgl}"
CACHE="${XDG_CACHE_HOME:-$HOME/.cache}/txpert-kg"
WHEELS="${DGL_WHEELHOUSE:-$CACHE/dgl-wheels}"
export DGLBACKEND=pytorch
export TXPERT_REQUIRE_DGL=1   # tests/test_gnn_backends.py fails instead of skipping when dgl does not import
PIN_ARGS=(torch==2.2.1 dgl==2.1.0 "numpy<2" "torchdata<0.8" packaging "pandas>=2,<3" pyyaml pydantic)

want="$(cat .ci/dgl_env.sh setup.cfg pyproject.toml | sha256sum | cut -c1-16)"
SITE="${DGL_SITE:-$CACHE/dgl-site-$want}"

free_gb() { df -Pk "$1" | awk 'NR==2 {printf "%d", $4 / 1048576}'; }

# 1. the shared third-party packages
if [ ! -f "$SITE/.complete" ]; then
    start=$(date +%s)
    mkdir -p "$CACHE" "$WHEELS"
    if [ "$(free_gb "$CACHE")" -lt 10 ]; then
        echo "dgl-env: warning: $(free_gb "$CACHE") GB free under $CACHE; building the DGL packages needs about 9 GB" >&2
    fi
    # pip of a throwaway venv does the work (the machine's own pip may be older)
    tool="$CACHE/dgl-pip.part"
    rm -rf "$tool" "$SITE.part"
    "$PYTHON" -m venv "$tool"
    "$tool/bin/python" -m pip install --quiet --upgrade pip
    # the project's other requirements (install_requires + test extra) minus the ones pinned above
    mapfile -t DEPS < <("$tool/bin/python" - <<'PY'
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
    # about 2.9 GB into it, later builds only check it against the index
    "$tool/bin/python" -m pip download --quiet --no-cache-dir -d "$WHEELS" --find-links "$WHEELS" "${PIN_ARGS[@]}" "${DEPS[@]}"
    "$tool/bin/python" -m pip install --quiet --no-cache-dir --no-index --find-links "$WHEELS" \
        --target "$SITE.part" "${PIN_ARGS[@]}" "${DEPS[@]}"
    rm -rf "$tool"
    touch "$SITE.part/.complete"
    # only one set of DGL packages per machine: drop the ones built for other dependency lists
    if [ -z "${DGL_SITE:-}" ]; then
        find "$CACHE" -maxdepth 1 -name 'dgl-site-*' ! -name "dgl-site-$want*" -exec rm -rf {} +
    fi
    rm -rf "$SITE"
    mv "$SITE.part" "$SITE"
    echo "dgl-env: installed the DGL packages into $SITE in $(( $(date +%s) - start )) s"
fi

# 2. the clone's own small venv on top of them
stamp="$VENV/.installed"
if [ -x "$VENV/bin/python" ] && [ "$(cat "$stamp" 2>/dev/null)" = "$SITE" ] \
   && "$VENV/bin/python" -c "import dgl, torch_geometric, kgbuild" >/dev/null 2>&1; then
    echo "dgl-env: $VENV is up to date"
else
    rm -rf "$VENV"
    "$PYTHON" -m venv "$VENV"
    purelib="$("$VENV/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')"
    # a .pth line starting with "import" is executed at start-up; addsitedir also runs the .pth files there
    echo "import site; site.addsitedir('$SITE')" > "$purelib/txpert_dgl_site.pth"
    "$VENV/bin/python" -m pip install --quiet --no-deps -e .
    "$VENV/bin/python" -c "import dgl, torch, numpy, pandas; print('dgl-env: dgl', dgl.__version__, 'torch', torch.__version__, 'numpy', numpy.__version__, 'pandas', pandas.__version__)"
    echo "$SITE" > "$stamp"
fi

if [ "${1:-}" = "--build" ]; then exit 0; fi

start=$(date +%s)
# the toolkit's entry points import in this environment too
"$VENV/bin/kgbuild" --help >/dev/null
"$VENV/bin/txpert" --help >/dev/null
# backend tests (dgl-marked) and the graph / gnn tests, with DGL importable
"$VENV/bin/python" -m pytest -q -p no:cacheprovider -m "dgl or not slow" tests/test_graph.py tests/test_gnn_*.py
echo "ci: DGL environment tests finished in $(( $(date +%s) - start )) s"
