// Package api is squibd's control API: Firecracker's HTTP/JSON API on a
// Unix socket, with Firecracker's paths, bodies, status codes, phase rules
// and fault messages wherever squib has the concept. A Controller owns the
// microVM and is the one serialized path into the vmm package; a Server
// turns HTTP requests into Controller calls; Listen handles the socket file;
// Client talks to a running squibd.
//
// Successful PUT and PATCH requests answer 204 with no body, GETs 200 with
// JSON, and every failure 400 with {"fault_message": "..."}.
package api

import (
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"path"
	"strings"
	"time"
)

// MaxPayload is the largest request body accepted, Firecracker's default.
const MaxPayload = 51200

// Server serves a Controller's API.
type Server struct {
	ctl  *Controller
	http *http.Server
}

// NewServer returns a server for ctl.
func NewServer(ctl *Controller) *Server {
	s := &Server{ctl: ctl}
	mux := http.NewServeMux()
	for _, rt := range routes {
		mux.Handle(rt.pattern, s.handler(rt))
	}
	mux.HandleFunc("/", s.invalidPath)
	s.http = &http.Server{
		Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Server", "squibd")
			// ServeMux would redirect an unclean path; Firecracker refuses it.
			if p := r.URL.Path; !strings.HasPrefix(p, "/") || path.Clean(p) != p {
				s.invalidPath(w, r)
				return
			}
			mux.ServeHTTP(w, r)
		}),
		// A client that connects and sends nothing, or sends a body
		// slowly, holds only its own connection: bodies are read before
		// the controller's lock is taken, and these bound the wait.
		ReadHeaderTimeout: 10 * time.Second,
		ReadTimeout:       60 * time.Second,
		IdleTimeout:       time.Hour, // keep-alive clients such as Firecracker's SDK
	}
	return s
}

// Serve answers requests on l until Close.
func (s *Server) Serve(l net.Listener) error {
	err := s.http.Serve(l)
	if errors.Is(err, http.ErrServerClosed) {
		return nil
	}
	return err
}

// Close stops the server and closes its listener and connections.
func (s *Server) Close() error { return s.http.Close() }

// handler wraps a route: it reads the body under Firecracker's rules,
// calls the route, answers, and counts the request in the metrics.
func (s *Server) handler(rt route) http.Handler {
	method, _, _ := strings.Cut(rt.pattern, " ")
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method != method { // ServeMux gives a GET route HEAD requests too
			s.invalidPath(w, r)
			return
		}
		start := time.Now()
		body, err := readBody(w, r, method)
		var out any
		if err == nil {
			out, err = rt.handle(s.ctl, r.PathValue("id"), body)
		}
		s.ctl.metrics.request(method, rt.metric, err == nil, time.Since(start))
		switch {
		case err != nil:
			s.fail(w, r, err)
		case out == nil:
			w.WriteHeader(http.StatusNoContent)
			s.ctl.Log().Info("API request", "method", r.Method, "path", r.URL.Path, "status", http.StatusNoContent)
		default:
			writeJSON(w, http.StatusOK, out)
			s.ctl.Log().Debug("API request", "method", r.Method, "path", r.URL.Path, "status", http.StatusOK)
		}
	})
}

func (s *Server) invalidPath(w http.ResponseWriter, r *http.Request) {
	s.fail(w, r, fmt.Errorf("Invalid request method and/or path: %s %s.", r.Method, strings.TrimPrefix(r.URL.Path, "/")))
}

func (s *Server) fail(w http.ResponseWriter, r *http.Request, err error) {
	writeFault(w, err)
	s.ctl.Log().Warn("API request failed", "method", r.Method, "path", r.URL.Path, "fault", err.Error())
}

// readBody reads a request's body: none for GET, a non-empty one of at most
// MaxPayload bytes for PUT and PATCH.
func readBody(w http.ResponseWriter, r *http.Request, method string) ([]byte, error) {
	if method == http.MethodGet {
		if r.ContentLength != 0 {
			return nil, errGetBody
		}
		return nil, nil
	}
	tooLarge := func(size string) error {
		w.Header().Set("Connection", "close") // do not read the rest
		return fmt.Errorf("Request payload with size %s is larger than the limit of %d allowed by server.", size, MaxPayload)
	}
	if r.ContentLength > MaxPayload {
		return nil, tooLarge(fmt.Sprint(r.ContentLength))
	}
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, MaxPayload))
	if errors.As(err, new(*http.MaxBytesError)) {
		return nil, tooLarge(fmt.Sprintf("over %d", MaxPayload))
	}
	if err != nil {
		return nil, fmt.Errorf("reading the request body: %w", err)
	}
	if len(body) == 0 {
		if method == http.MethodPatch {
			return nil, errEmptyPatch
		}
		return nil, errEmptyPut
	}
	return body, nil
}
