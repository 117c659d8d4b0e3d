#!/usr/bin/env bash
# Prepare .gpu/ (git-ignored) for scripts/bench/gpu_suite.sh on a GPU machine that cannot download anything:
# .gpu/wheels holds the packages its image lacks (wandb, omegaconf, datasets, razdel and those of their requirements
# that are not on it), at the versions installed here, for its Python (3.12, manylinux x86_64), one version each;
# .gpu/data holds the data the suite reads (tinystories/, tinyshakespeare/, wikitext-2/). Run it here, where PyPI
# can be reached, from the repository root:
#
#   bash scripts/bench/gpu_prepare.sh [--python-version 3.12] [--dest .gpu] [--data ../shared/data] [--no-data]
#
# Then, on the GPU machine (the repository with .gpu/ carried along):
#   bash scripts/bench/gpu_suite.sh results/bench/gpu --wheels .gpu/wheels --data .gpu/data
set -euo pipefail
REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
cd "$REPO"
PYVER=3.12 DEST=.gpu DATA="$REPO/../shared/data" COPY_DATA=1
while (($#)); do
  case "$1" in
    --python-version) PYVER="$2"; shift 2 ;;
    --dest) DEST="$2"; shift 2 ;;
    --data) DATA="$2"; shift 2 ;;
    --no-data) COPY_DATA=0; shift ;;
    *) sed -n '2,12p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'; exit 2 ;;
  esac
done
export PIP_DISABLE_PIP_VERSION_CHECK=1

# What the GPU image lacks: lmbench's own requirements wandb, omegaconf, datasets, razdel, and their requirements
# that are neither on the image (GPU_HAS) nor brought there by what is (IMPLIED).
SHIP=(wandb cwevals distro opentelemetry-api opentelemetry-sdk opentelemetry-semantic-conventions opentelemetry-proto
      opentelemetry-exporter-otlp-proto-http opentelemetry-exporter-otlp-proto-common opentelemetry-exporter-otlp-common
      opentelemetry-exporter-http-transport googleapis-common-protos pydantic pydantic-core annotated-types
      typing-inspection platformdirs omegaconf antlr4-python3-runtime datasets dill multiprocess razdel
      sentencepiece)  # the image's 0.2.2 is below lmbench's floor 0.2.3 (tabs dropped from the alphabet)
GPU_HAS="torch transformers accelerate tokenizers sentencepiece safetensors numpy huggingface-hub pandas pyarrow
 matplotlib tqdm psutil tabulate tensorboard xxhash pyyaml requests click protobuf pytest pytest-timeout pytest-xdist
 rich filelock fsspec regex packaging typing-extensions jinja2"
IMPLIED="certifi idna urllib3 charset-normalizer anyio h11 httpcore httpx hf-xet sniffio python-dateutil six tzdata
 markupsafe typer shellingham"  # requirements of requests, huggingface-hub, pandas, jinja2 (there with them)

WHEELS="$DEST/wheels"
rm -rf "$WHEELS"
mkdir -p "$WHEELS"
PLATFORMS=(--platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64
           --platform manylinux2014_x86_64 --platform manylinux1_x86_64)
MORE=(--platform manylinux_2_24_x86_64 --platform manylinux_2_31_x86_64 --platform manylinux_2_34_x86_64
      --platform manylinux_2_35_x86_64)
for name in "${SHIP[@]}"; do
  version=$(python3 -c "import importlib.metadata as m, sys
try: print(m.version(sys.argv[1]))
except m.PackageNotFoundError: pass" "$name")
  if [[ -z "$version" ]]; then
    echo "gpu_prepare: $name is not installed here; skipped (install lmbench's requirements first)" >&2
    continue
  fi
  args=(download -q --no-deps --only-binary=:all: --python-version "$PYVER" --implementation cp -d "$WHEELS")
  python3 -m pip "${args[@]}" "${PLATFORMS[@]}" "$name==$version" 2>/dev/null \
    || python3 -m pip "${args[@]}" "${PLATFORMS[@]}" "${MORE[@]}" "$name==$version"
  echo "  $name==$version"
done

# Every requirement of a shipped wheel is shipped, on the image, or brought there by what is.
python3 - "$WHEELS" "$GPU_HAS $IMPLIED" "$PYVER" <<'EOF'
import re, sys, zipfile
from pathlib import Path
from packaging.markers import Marker
from packaging.requirements import Requirement
folder, known, pyver = Path(sys.argv[1]), set(sys.argv[2].split()), sys.argv[3]
norm = lambda n: re.sub(r"[-_.]+", "-", n).lower()
wheels = sorted(folder.glob("*.whl"))
names = [norm(w.name.split("-")[0]) for w in wheels]
dupes = {n for n in names if names.count(n) > 1}
assert not dupes, f"more than one version of {dupes}"
shipped, missing = set(names), []
env = {"python_version": pyver, "python_full_version": pyver + ".0", "sys_platform": "linux",
       "platform_system": "Linux", "platform_machine": "x86_64", "implementation_name": "cpython", "extra": ""}
for wheel in wheels:
    with zipfile.ZipFile(wheel) as z:
        meta = next(n for n in z.namelist() if n.endswith(".dist-info/METADATA"))
        for line in z.read(meta).decode().splitlines():
            if line.startswith("Requires-Dist:"):
                req = Requirement(line.split(":", 1)[1].strip())
                if req.marker and not req.marker.evaluate(env):
                    continue
                if norm(req.name) not in shipped | {norm(k) for k in known}:
                    missing.append(f"{wheel.name}: {req}")
print(f"{len(wheels)} wheels, every requirement covered" if not missing else "NOT COVERED:\n  " + "\n  ".join(missing))
sys.exit(1 if missing else 0)
EOF

if ((COPY_DATA)); then
  rm -rf "$DEST/data"
  mkdir -p "$DEST/data"
  for d in tinystories tinyshakespeare wikitext-2; do
    cp -r "$DATA/$d" "$DEST/data/$d"
  done
  chmod -R u+w "$DEST/data"
fi
du -sh "$WHEELS" "$DEST/data" 2>/dev/null || true
size=$(du -sm "$DEST" | cut -f1)
echo "$DEST: ${size} MiB (limit 50)"
((size <= 50)) || { echo "gpu_prepare: $DEST is over 50 MiB" >&2; exit 1; }
