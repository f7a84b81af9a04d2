#!/bin/sh
# A "go test -exec" wrapper for macOS: signs the test binary ad hoc with the
# entitlements of entitlements.plist at the root of the repository, the file
# squibd is signed with (com.apple.security.hypervisor, and
# com.apple.security.cs.allow-jit for guest RAM mapped from a snapshot file),
# then runs it with go test's arguments. Usage, from the repository root:
#
#	go test -exec "$PWD/hvf/testdata/codesign-exec.sh" ./hvf/
set -eu
bin=$1
shift
root=$(cd "$(dirname "$0")/../.." && pwd)
codesign --force --sign - --entitlements "$root/entitlements.plist" "$bin"
exec "$bin" "$@"
