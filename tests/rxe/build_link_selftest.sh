#!/bin/bash
# Build tests/rxe/link_selftest.c with the links it tests (transport/rdma.c,
# tcp.c, registry.c) into build/rxe/link_selftest; SAN=1: ASan+UBSan build
# into build/rxe/link_selftest.san. Run it inside the VM:
#   tests/rxe/vm.sh -- build/rxe/link_selftest        (or --numa)
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo=$(cd "$here/../.." && pwd)
out=$repo/build/rxe
mkdir -p "$out"
cflags=(-std=gnu11 -D_GNU_SOURCE -Wall -Wextra -Werror -fPIC -fvisibility=hidden -pthread
	-O2 -g -I"$repo/include" -I"$repo/proto" -I"$repo/transport" -I"$repo/engine"
	-I"$repo/backends")
bin=$out/link_selftest
if [ "${SAN:-0}" = 1 ]; then
	cflags+=(-fsanitize=address,undefined -fno-omit-frame-pointer -fno-sanitize-recover=undefined)
	bin=$out/link_selftest.san
fi
cd "$repo"
cc "${cflags[@]}" -o "$bin" tests/rxe/link_selftest.c transport/rdma.c transport/tcp.c \
	transport/registry.c -libverbs -lrdmacm -lnuma
echo "$bin"
