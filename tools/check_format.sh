#!/usr/bin/env bash
# Checks that every C++ source (*.h, *.cc, *.cc.in under include/ src/ server/ tools/ tests/ bench/
# examples/) is formatted as .clang-format says, with clang-format-14 (CI: .ci/run).
#
#   tools/check_format.sh          report the files that differ (exit 1 when any does)
#   tools/check_format.sh --fix    reformat them in place
#
# CLANG_FORMAT overrides the binary (default clang-format-14: other versions format differently).
set -euo pipefail
cd "$(dirname "$0")/.."

mode=check
case "${1:-}" in
  "") ;;
  --fix) mode=fix ;;
  -h | --help)
    sed -n '2,8p' "$0" | sed 's/^# \{0,1\}//'
    exit 0
    ;;
  *)
    echo "check_format: unknown argument \"$1\"; use --fix to reformat, or no argument to check" >&2
    exit 2
    ;;
esac

clang_format=${CLANG_FORMAT:-clang-format-14}
if ! command -v "$clang_format" > /dev/null; then
  echo "check_format: $clang_format not found; install it (apt-get install clang-format-14)" \
    "or set CLANG_FORMAT" >&2
  exit 2
fi

dirs=()
for d in include src server tools tests bench examples; do
  [ -d "$d" ] && dirs+=("$d")
done
mapfile -d '' files < <(find "${dirs[@]}" -type f \( -name '*.h' -o -name '*.cc' -o -name '*.cc.in' \) \
  -print0 | sort -z)
if [ "${#files[@]}" -eq 0 ]; then
  echo "check_format: no C++ sources found under ${dirs[*]}" >&2
  exit 2
fi

if [ "$mode" = fix ]; then
  "$clang_format" -i --style=file "${files[@]}"
  echo "check_format: formatted ${#files[@]} files with $clang_format"
  exit 0
fi

# clang-format reads *.cc.in as C++ (an unknown extension); readme_example.cc.in keeps its
# @VARIABLE@ lines out of reach with "clang-format off".
if ! "$clang_format" --dry-run --Werror --style=file "${files[@]}"; then
  echo >&2
  for f in "${files[@]}"; do
    "$clang_format" --dry-run --Werror --style=file "$f" > /dev/null 2>&1 || echo "  $f" >&2
  done
  echo "check_format: the files above are not formatted as .clang-format says; run" \
    "tools/check_format.sh --fix ($clang_format -i) and commit the result" >&2
  exit 1
fi
echo "check_format: ${#files[@]} files formatted as .clang-format says ($clang_format)"
