package api

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
)

// Fault messages that clients may know from Firecracker keep Firecracker's
// exact wording, capitals and full stops included.
var (
	errBeforeStart         = errors.New("The requested operation is not supported before starting the microVM.")
	errAfterStart          = errors.New("The requested operation is not supported after starting the microVM.")
	errLoadAfterBootConfig = errors.New("Load snapshot error: Loading a microVM snapshot not allowed " +
		"after configuring boot-specific resources.")
	errEmptyPut   = errors.New("Empty PUT request.")
	errEmptyPatch = errors.New("Empty PATCH request.")
	errGetBody    = errors.New("GET request cannot have a body.")
)

// writeFault answers a failed request. Firecracker answers 400 for every
// failure, whatever its cause, so there is no mapping from error to status.
func writeFault(w http.ResponseWriter, err error) {
	writeJSON(w, http.StatusBadRequest, Fault{Message: err.Error()})
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	b, err := json.Marshal(v)
	if err != nil { // only our own wire types get here
		panic(err)
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	w.Write(b)
}

// bodyError is a request body that does not parse, in Firecracker's words.
func bodyError(format string, args ...any) error {
	return fmt.Errorf("An error occurred when deserializing the json body of a request: "+format+".", args...)
}

// decode parses a JSON request body into v. strict refuses unknown fields,
// as Firecracker does for most bodies; data after the value is refused always.
func decode(body []byte, v any, strict bool) error {
	dec := json.NewDecoder(bytes.NewReader(body))
	if strict {
		dec.DisallowUnknownFields()
	}
	if err := dec.Decode(v); err != nil {
		return bodyError("%v", err)
	}
	if _, err := dec.Token(); err != io.EOF {
		return bodyError("trailing characters after the JSON value")
	}
	return nil
}

// field is a required body field and whether the request has it.
type field struct {
	name    string
	present bool
}

// required reports the first missing field as Firecracker does.
func required(fields ...field) error {
	for _, f := range fields {
		if !f.present {
			return bodyError("missing field `%s`", f.name)
		}
	}
	return nil
}
