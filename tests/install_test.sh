#!/usr/bin/env bash
# Installs the built library into a temporary prefix, then builds and runs a consumer against
# it twice: with find_package(ratelimit) and with pkg-config.
# Usage: install_test.sh BUILD_DIR SOURCE_DIR
set -euo pipefail
build=$1
src=$2
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

cmake --install "$build" --prefix "$work/prefix" > "$work/install.log"
cmake -S "$src/tests/install" -B "$work/consumer" -G Ninja \
  -DCMAKE_PREFIX_PATH="$work/prefix" > "$work/configure.log"
cmake --build "$work/consumer" > "$work/build.log"
"$work/consumer/consumer"

pc_dir=$(dirname "$(find "$work/prefix" -name ratelimit.pc | head -n 1)")
flags=$(PKG_CONFIG_PATH="$pc_dir" pkg-config --cflags --libs ratelimit)
# shellcheck disable=SC2086
c++ "$src/tests/install/main.cc" $flags -o "$work/pc-consumer"
"$work/pc-consumer"
echo "install test: find_package and pkg-config consumers both passed"
