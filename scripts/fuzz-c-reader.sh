#!/usr/bin/env bash
# Coverage-guided fuzzing of the C policy reader (engine/core/_policyscan.c) under
# AddressSanitizer, through the atheris harness (tests/fuzz/atheris_parsers.py).
#
# The extension is rebuilt with clang (-fsanitize=address,fuzzer-no-link) into a
# scratch copy of the engine package, so the C code reports its coverage to
# libFuzzer and any out-of-bounds read or write aborts with a report; atheris's
# ASan+libFuzzer runtime is preloaded. The installed build is left alone.
#
# Usage: scripts/fuzz-c-reader.sh [libFuzzer options]   (default -runs=1000000)
# Needs: clang, and atheris in the running Python (pip install atheris).
set -euo pipefail
cd "$(dirname "$0")/.."
python=${PYTHON:-python3}
command -v clang >/dev/null || { echo "fuzz-c-reader: clang is required (apt-get install clang)" >&2; exit 2; }
runtime=$("$python" -c 'import atheris, os; print(os.path.join(atheris.path(), "asan_with_fuzzer.so"))')
scratch=$(mktemp -d)
trap 'rm -rf "$scratch"' EXIT
cp -r engine "$scratch/"
find "$scratch/engine" -name '*.so' -delete
clang -shared -fPIC -g -O1 -fsanitize=address,fuzzer-no-link \
  -I"$("$python" -c 'import sysconfig; print(sysconfig.get_paths()["include"])')" \
  engine/core/_policyscan.c \
  -o "$scratch/engine/core/_policyscan$("$python" -c 'import sysconfig; print(sysconfig.get_config_var("EXT_SUFFIX"))')"
# The scratch copy shadows the installed package; check that the sanitized build loads.
LD_PRELOAD="$runtime" ASAN_OPTIONS=detect_leaks=0 PYTHONPATH="$scratch" "$python" -P -c '
import engine.core.policy as p
assert p.__file__.startswith("'"$scratch"'"), p.__file__
assert p._c_parse is not None, "the sanitized C reader did not load"
print("fuzz-c-reader: sanitized C reader loaded from", p.__file__)'
[ $# -gt 0 ] || set -- -runs=1000000
exec env LD_PRELOAD="$runtime" ASAN_OPTIONS=detect_leaks=0 PYTHONPATH="$scratch" \
  "$python" tests/fuzz/atheris_parsers.py -max_len=4096 "$@"
