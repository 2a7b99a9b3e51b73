#!/usr/bin/env bash
# The prepared GPU check (issue 15), for a bare CUDA machine that has Python, torch and typer:
#   bash benchmarks/gpu_check.sh OUT_DIR [extra gpu_check options]
# run from the repository root. It installs what that machine lacks (zarr, numcodecs, dask,
# pydantic, ...) from wheels in .whl/ beside the checkout, without network, then runs
# `python -m vidlat.benchmarks.gpu_check --device cuda --out OUT_DIR`. Fetch the wheels
# beforehand on a machine with PyPI access, e.g. for Python 3.12 on x86-64:
#   pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
#     --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 -d .whl \
#     zarr numcodecs donfig crc32c dask distributed cloudpickle toolz partd locket fsspec \
#     pydantic pydantic-core annotated-types typing-inspection safetensors pyyaml pytest \
#     pluggy iniconfig rich
set -euo pipefail
out=${1:-gpu_check_out}
shift || true
site=/tmp/vidlat-site
if compgen -G ".whl/*.whl" > /dev/null; then
  python3 -m pip install -q --no-index --no-deps --no-compile --upgrade --target "$site" .whl/*.whl
fi
# the repository root is the package `vidlat`: make it importable under that name
mkdir -p /tmp/vidlat-src
ln -sfn "$PWD" /tmp/vidlat-src/vidlat
export PYTHONPATH="/tmp/vidlat-src:$site${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
python3 -m vidlat.benchmarks.gpu_check --device cuda --out "$out" "$@"
