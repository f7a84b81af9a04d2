#!/bin/sh
# A "go test -exec" wrapper for macOS: signs the test binary ad hoc with the
# com.apple.security.hypervisor entitlement (entitlements.plist at the root
# of the repository), then runs it with go test's arguments. Usage, from the
# repository root:
#
#	go test -exec "$PWD/hvf/testdata/codesign-exec.sh" ./hvf/
set -eu
bin=$1
shift
root=$(cd "$(dirname "$0")/../.." && pwd)
codesign --force --sign - --entitlements "$root/entitlements.plist" "$bin"
exec "$bin" "$@"
