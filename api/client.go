package api

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
)

// Client talks to squibd (or Firecracker) over its API socket.
type Client struct {
	http *http.Client
}

// NewClient returns a client for the API socket at path.
func NewClient(path string) *Client {
	var d net.Dialer
	return &Client{http: &http.Client{Transport: &http.Transport{
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			return d.DialContext(ctx, "unix", path)
		},
	}}}
}

// Do sends a request with in as its JSON body (none if nil) and decodes a
// 200 answer into out (if not nil). A fault comes back as a *Fault.
func (c *Client) Do(ctx context.Context, method, path string, in, out any) error {
	var body io.Reader
	if in != nil {
		b, err := json.Marshal(in)
		if err != nil {
			return err
		}
		body = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, "http://localhost"+path, body)
	if err != nil {
		return err
	}
	if in != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := c.http.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return err
	}
	switch {
	case resp.StatusCode == http.StatusNoContent:
		return nil
	case resp.StatusCode == http.StatusOK:
		if out == nil {
			return nil
		}
		return json.Unmarshal(b, out)
	}
	var f Fault
	if json.Unmarshal(b, &f) != nil || f.Message == "" {
		return fmt.Errorf("%s %s: %s: %q", method, path, resp.Status, b)
	}
	return &f
}

// InstanceInfo returns GET /.
func (c *Client) InstanceInfo(ctx context.Context) (InstanceInfo, error) {
	var info InstanceInfo
	err := c.Do(ctx, http.MethodGet, "/", nil, &info)
	return info, err
}

// SetState pauses (VMPaused) or resumes (VMResumed) the microVM.
func (c *Client) SetState(ctx context.Context, state string) error {
	return c.Do(ctx, http.MethodPatch, "/vm", VM{State: &state}, nil)
}

// Close releases the client's idle connections.
func (c *Client) Close() { c.http.CloseIdleConnections() }
