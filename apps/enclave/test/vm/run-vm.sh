#!/bin/sh
# Boots vsock-vm with the repository shared and runs the VM suite inside it (real vsock, CID 1).
# The shared folder is always <repo>/../shared, whichever clone runs this.
set -eu
pkg=$(cd "$(dirname "$0")/../.." && pwd)
repo=$(cd "$pkg/../.." && pwd)
vm="$repo/../shared/tools/vsock-vm"
if [ ! -x "$vm" ]; then
  echo "test:vm: $vm not found; skipping the VM suite" >&2
  exit 0
fi
exec "$vm" --share "$repo" --cwd "$pkg" --timeout 600 -- \
  "ENCLAVE_EXTRAS_VSOCK_DIR= node $repo/node_modules/vitest/vitest.mjs run -c vitest.vm.config.ts ${EE_VM_ARGS:-} --reporter=default --reporter=json --outputFile.json=.vitest-vm-report.json"
