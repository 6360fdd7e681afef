#!/usr/bin/env bash
# Download the wheels the lent GPU machine lacks into .whl/ (git-ignored; name it in the device tool's
# `carry`). That machine has Python 3.12 with torch, numpy, scikit-learn, scikit-image, onnx, typer,
# rich, tensorboard and PyYAML, but no pydantic, which typer ≥ 0.29 and labelforge's CLI need; typer
# itself travels too so the CLI runs on the version it is tested with. Training, `eval` and `export`
# need nothing else (checked in a venv holding only the machine's packages plus these wheels).
#
#   scripts/device-wheels.sh          (here, where pip reaches a package registry)
set -euo pipefail
cd "$(dirname "$0")/.."
rm -rf .whl && mkdir -p .whl
PLATFORMS=(--platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64
           --platform manylinux2014_x86_64 --platform manylinux1_x86_64)
# The versions this checkout's .venv resolved, so the device runs what the tests ran.
pins=()
for name in pydantic pydantic-core annotated-types typing-inspection typer annotated-doc; do
  version=$(.venv/bin/python -c "import importlib.metadata as m; print(m.version('$name'))")
  pins+=("$name==$version")
done
python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
  "${PLATFORMS[@]}" -d .whl "${pins[@]}"
ls -1 .whl
