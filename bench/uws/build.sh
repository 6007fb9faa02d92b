#!/usr/bin/env bash
# Builds the uWebSockets baseline of `tickwire-bench fanout` (bench/uws/fanout_uws.cpp).
# Usage: bench/uws/build.sh UWEBSOCKETS_DIR [OUT]
#   UWEBSOCKETS_DIR: a checkout of github.com/uNetworking/uWebSockets with its uSockets
#   submodule (git clone --recursive, or uSockets copied into UWEBSOCKETS_DIR/uSockets).
#   OUT: the binary (default target/fanout_uws).
# Flags as uWebSockets' own build.c builds its examples: -O3 -march=native -flto, C++2b, no TLS,
# no zlib (compression is off in the baseline), epoll (uSockets' default on Linux).
# Then: TICKWIRE_UWS_BIN=target/fanout_uws cargo run --release -p tickwire-bench -- fanout --servers tickwire,uws,tuned
set -euo pipefail
uws=${1:?usage: bench/uws/build.sh UWEBSOCKETS_DIR [OUT]}
here=$(cd "$(dirname "$0")" && pwd)
out=$(realpath -m "${2:-$here/../../target/fanout_uws}")
obj=$(mktemp -d)
trap 'rm -rf "$obj"' EXIT
(cd "$obj" && cc -DLIBUS_NO_SSL -std=c11 -I"$uws/uSockets/src" -O3 -march=native -flto=auto -c \
    "$uws"/uSockets/src/*.c "$uws"/uSockets/src/eventing/*.c "$uws"/uSockets/src/crypto/*.c)
g++ -DLIBUS_NO_SSL -DUWS_NO_ZLIB -std=c++2b -O3 -march=native -flto=auto -I"$uws/src" -I"$uws/uSockets/src" \
    "$here/fanout_uws.cpp" "$obj"/*.o -pthread -o "$out"
echo "built $out"
