# squib's build entry points. The two commands a new machine needs are
# ./lab/demo.sh (boot, in the lab, a microVM) and ./test.sh (every test);
# the targets below wrap them and the day-to-day builds.

GO ?= go
export CGO_ENABLED := 0

.PHONY: build squibd-linux-arm64 test demo bench-boot bench-blk bench-net fuzz clean

# squibd for this machine; on macOS, ad-hoc signed with entitlements.plist:
# the hypervisor entitlement, without which Hypervisor.framework refuses to
# create a VM, and allow-jit, for guest code run from RAM mapped from a
# snapshot's memory file. hvf/testdata/codesign-exec.sh signs the Mac tests
# with the same file.
build:
	$(GO) build -o bin/squibd ./cmd/squibd
ifeq ($(shell uname -s),Darwin)
	codesign --force --sign - --entitlements entitlements.plist bin/squibd
endif

# squibd for arm64 Linux hosts (and the lab).
squibd-linux-arm64:
	GOOS=linux GOARCH=arm64 $(GO) build -o bin/squibd-linux-arm64 ./cmd/squibd

test:
	./test.sh

demo:
	./lab/demo.sh

# Boot-time and memory figures, measured in the lab (emulated: read the ratios).
bench-boot:
	$(GO) test -run '^$$' -bench Boot -benchtime 1x -timeout 60m ./e2e/

# virtio-blk throughput against L1's own, both page sizes (emulated: read the ratios).
bench-blk:
	$(GO) test -run '^$$' -bench BlkLab -benchtime 1x -timeout 90m ./e2e/

# vsock and user-mode TCP throughput against L1's Unix socket and loopback
# TCP, both page sizes (emulated: read the ratios).
bench-net:
	$(GO) test -run '^$$' -bench NetLab -benchtime 1x -timeout 90m ./e2e/

# A short run of every fuzz target.
fuzz:
	$(GO) test -run '^$$' -fuzz FuzzParse -fuzztime 30s ./fdt/
	$(GO) test -run '^$$' -fuzz FuzzHandle -fuzztime 30s ./psci/
	$(GO) test -run '^$$' -fuzz FuzzDecodeState -fuzztime 30s ./snapshot/
	$(GO) test -run '^$$' -fuzz FuzzMemoryFile -fuzztime 30s ./snapshot/
	$(GO) test -run '^$$' -fuzz FuzzServer -fuzztime 30s ./api/
	$(GO) test -run '^$$' -fuzz FuzzChain -fuzztime 30s ./virtio/
	$(GO) test -run '^$$' -fuzz FuzzQueue -fuzztime 30s ./virtio/
	$(GO) test -run '^$$' -fuzz FuzzTransport -fuzztime 30s ./virtio/
	$(GO) test -run '^$$' -fuzz FuzzParse -fuzztime 30s ./devices/blk/
	$(GO) test -run '^$$' -fuzz FuzzPacket -fuzztime 30s ./devices/vsock/
	$(GO) test -run '^$$' -fuzz FuzzConnect -fuzztime 30s ./devices/vsock/
	$(GO) test -run '^$$' -fuzz FuzzTxChain -fuzztime 30s ./devices/netdev/
	$(GO) test -run '^$$' -fuzz FuzzUserFrame -fuzztime 30s ./devices/netdev/

clean:
	rm -rf bin
