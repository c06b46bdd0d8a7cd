#!/bin/bash
# Everything that needs real RDMA, in one boot of the rxe VM (make check runs
# it through tests/e2e/t_rxe.sh): the VM selftest (devices, ib_write_bw,
# rdma_cm, NUMA), the RDMA link's two-process test, and rmig migrations
# (in clear, encrypted: t_tls.sh, and failing over); and the kvm backend on
# the VM's nested KVM (t_kvm.sh).
set -u
cd "$(dirname "$0")/../.."
BUILD=${BUILD:-build}
rc=0
echo "=== selftest"
tests/rxe/selftest.sh || rc=1
echo "=== link_selftest"
"$BUILD/rxe/link_selftest" || rc=1
echo "=== t_migrate"
RMIG=$BUILD/rmig tests/rxe/t_migrate.sh || rc=1
echo "=== t_tls"
RMIG=$BUILD/rmig tests/rxe/t_tls.sh || rc=1
# before t_failover: a tunnel's first RDMA connection after t_failover's
# device deletions and re-adds does not complete (not understood yet)
echo "=== t_tunnel"
RMIG=$BUILD/rmig tests/rxe/t_tunnel.sh || rc=1
echo "=== t_failover"
RMIG=$BUILD/rmig tests/rxe/t_failover.sh || rc=1
# Not t_rails.sh: tests/e2e/t_rxe.sh boots it alone. After t_failover's
# device deletions and re-adds, every new RDMA connection in this boot is
# refused (seen in run_all and t_rails together; see tests/rxe/README.md).
echo "=== t_kvm"
RMIG=$BUILD/rmig BUILD=$BUILD tests/rxe/t_kvm.sh || rc=1
exit $rc
