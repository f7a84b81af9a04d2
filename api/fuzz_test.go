package api

import (
	"bytes"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"testing"

	"github.com/squibvm/squib/hv"
)

var methods = []string{"GET", "PUT", "PATCH", "DELETE", "POST"}

// FuzzServer sends arbitrary requests to a fresh server and checks that
// every answer is one of the API's shapes: 200 with JSON, 204 with no
// body, or 400 with a fault message. The API tests in cmd/squibd check
// what the answers say, against a real squibd.
//
//	go test -run '^$' -fuzz FuzzServer -fuzztime 30s ./api/
func FuzzServer(f *testing.F) {
	seeds := []struct {
		method     byte
		path, body string
	}{
		{0, "/", ""}, {0, "/version", ""}, {0, "/vm/config", ""}, {0, "/machine-config", ""},
		{1, "/machine-config", `{"vcpu_count": 2, "mem_size_mib": 256, "smt": false}`},
		{2, "/machine-config", `{"track_dirty_pages": true}`},
		{1, "/boot-source", `{"kernel_image_path": "/nonexistent", "boot_args": "console=ttyAMA0"}`},
		{1, "/actions", `{"action_type": "InstanceStart"}`},
		{1, "/actions", `{"action_type": "FlushMetrics"}`},
		{2, "/vm", `{"state": "Paused"}`},
		{1, "/snapshot/create", `{"snapshot_path": "s", "mem_file_path": "m", "snapshot_type": "Diff"}`},
		{1, "/snapshot/load", `{"snapshot_path": "s", "mem_backend": {"backend_type": "File", "backend_path": "m"}, "resume_vm": true}`},
		{1, "/snapshot/load", `{"snapshot_path": "s", "mem_file_path": "m", "vsock_override": {"uds_path": "v"}}`},
		{1, "/vsock", `{"guest_cid": 3, "uds_path": "/nonexistent/v.sock", "vsock_id": "vsock"}`},
		{1, "/drives/rootfs", `{}`}, {2, "/drives/rootfs", `{"drive_id": "rootfs", "path_on_host": "x"}`}, {3, "/x//y/../", "{"},
	}
	for _, s := range seeds {
		f.Add(s.method, s.path, []byte(s.body))
	}
	f.Fuzz(func(t *testing.T, method byte, path string, body []byte) {
		if path == "/logger" || path == "/metrics" {
			t.Skip("these create files wherever the body says")
		}
		ctl := NewController(Options{
			OpenHypervisor: func() (hv.Hypervisor, error) { return nil, hv.ErrNoHypervisor },
			Log:            io.Discard,
		})
		defer ctl.Close()
		req := httptest.NewRequest(methods[int(method)%len(methods)], "/", bytes.NewReader(body))
		req.URL.Path = path
		w := httptest.NewRecorder()
		NewServer(ctl).http.Handler.ServeHTTP(w, req)
		got := w.Body.Bytes()
		switch w.Code {
		case http.StatusOK:
			if !json.Valid(got) {
				t.Fatalf("200 with %q", got)
			}
		case http.StatusNoContent:
			if len(got) != 0 {
				t.Fatalf("204 with %q", got)
			}
		case http.StatusBadRequest:
			var f Fault
			if json.Unmarshal(got, &f) != nil || f.Message == "" {
				t.Fatalf("400 with %q", got)
			}
		default:
			t.Fatalf("status %d, %q", w.Code, got)
		}
	})
}
