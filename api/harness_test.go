package api

import (
	"encoding/json"
	"io"
	"strings"
	"testing"

	"github.com/squibvm/squib/hv"
)

// deser begins Firecracker's fault for a request body that does not decode.
const deser = "An error occurred when deserializing the json body of a request: "

// jsonString is s as a JSON string.
func jsonString(s string) string { b, _ := json.Marshal(s); return string(b) }

// newTestController is a Controller on backend h (which tests may share
// between controllers), stopped and closed when the test ends.
func newTestController(t *testing.T, h hv.Hypervisor) *Controller {
	ctl := NewController(Options{Log: io.Discard, Console: io.Discard,
		OpenHypervisor: func() (hv.Hypervisor, error) { return h, nil }})
	t.Cleanup(ctl.Close)
	t.Cleanup(ctl.Stop)
	return ctl
}

// serveTestController is newTestController's Controller served on a
// socket, and a client of it.
func serveTestController(t *testing.T, h hv.Hypervisor) (*Controller, *Client) {
	ctl := newTestController(t, h)
	return ctl, serve(t, ctl)
}

// refuse sends a request that must be answered with a fault containing want.
func refuse(t *testing.T, c *Client, method, path, body, want string) {
	t.Helper()
	err := within(c, method, path, json.RawMessage(body), nil)
	if f, ok := err.(*Fault); !ok || !strings.Contains(f.Message, want) {
		t.Errorf("%s %s %s: %v, want a fault with %q", method, path, body, err, want)
	}
}

// mustDo sends a request that must succeed.
func mustDo(t *testing.T, c *Client, method, path, body string) {
	t.Helper()
	if err := within(c, method, path, json.RawMessage(body), nil); err != nil {
		t.Fatalf("%s %s %s: %v", method, path, body, err)
	}
}
