#!/usr/bin/env bash
# Runs squib's whole test suite on a Debian/Ubuntu x86_64 (or arm64) machine:
# vet for every target platform, unit tests, and the lab tests that boot real
# arm64 guests. Installs what it needs first (needs root or sudo).
set -euo pipefail
cd "$(dirname "$0")"
. ./lab/go-env.sh
bash lab/setup.sh

echo "== vet (host, linux/arm64, darwin/arm64)"
go vet ./...
GOOS=linux GOARCH=arm64 CGO_ENABLED=0 go vet ./...
GOOS=darwin GOARCH=arm64 CGO_ENABLED=0 go build ./...
GOOS=darwin GOARCH=arm64 CGO_ENABLED=0 go vet ./...
unformatted=$(gofmt -l .)
if [ -n "$unformatted" ]; then
	echo "gofmt needed: $unformatted" >&2
	exit 1
fi

echo "== tests"
# The lab reruns an L1's commands once when one fails (lab/README.md); the
# tests name each such failure in this file, printed whether they pass or not.
export SQUIB_LAB_RERUN_LOG
SQUIB_LAB_RERUN_LOG=$(mktemp)
status=0
go test -count=1 -timeout 80m "$@" ./... || status=$?
if [ -s "$SQUIB_LAB_RERUN_LOG" ]; then
	echo "== lab commands that failed once and were run again in a fresh L1"
	cat "$SQUIB_LAB_RERUN_LOG"
fi
rm -f "$SQUIB_LAB_RERUN_LOG"
exit "$status"
