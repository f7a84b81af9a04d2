package api

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"unicode"
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
// as Firecracker does for most bodies; duplicate keys, at any depth, and
// data after the value are refused always.
func decode(body []byte, v any, strict bool) error {
	if err := duplicateKey(body); err != nil {
		return err
	}
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

// duplicateKey refuses a JSON value with an object that has a key twice,
// where encoding/json would silently take the last, as Firecracker (serde)
// does: "duplicate field `vcpu_count`", and where the object is when it is
// not the outermost one. Keys that differ only in case count as the same,
// as encoding/json matches both to one field. Malformed JSON passes: the
// decoder then says what is wrong with it.
func duplicateKey(body []byte) error {
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.UseNumber()
	var stack []*jsonLevel
	for {
		tok, err := dec.Token()
		if err != nil {
			return nil
		}
		var top *jsonLevel
		if len(stack) > 0 {
			top = stack[len(stack)-1]
		}
		if key, ok := tok.(string); ok && top != nil && top.wantKey {
			if err := top.add(key); err != nil {
				return err
			}
			continue
		}
		switch tok { // a value begins or ends
		case json.Delim('{'), json.Delim('['):
			l := &jsonLevel{object: tok == json.Delim('{')}
			if l.object {
				l.keys, l.wantKey = map[string]string{}, true
			}
			if top != nil {
				l.name = top.child()
			}
			stack = append(stack, l)
			continue
		case json.Delim('}'), json.Delim(']'):
			stack = stack[:len(stack)-1]
		}
		if len(stack) == 0 {
			return nil // the first value is complete; decode refuses more
		}
		stack[len(stack)-1].valueDone()
	}
}

// jsonLevel is an object or array duplicateKey is in.
type jsonLevel struct {
	object  bool
	name    string            // where it is: "" outermost, "machine-config", "drives[0]"
	keys    map[string]string // an object's keys so far, by foldKey
	key     string            // an object's current key
	wantKey bool              // an object's next token is a key or its end
	n       int               // an array's elements so far
}

func (l *jsonLevel) add(key string) error {
	fold := foldKey(key)
	if first, dup := l.keys[fold]; dup {
		where := ""
		if l.name != "" {
			where = fmt.Sprintf(" in `%s`", l.name)
		}
		if first != key {
			where += fmt.Sprintf(" (also given as `%s`)", first)
		}
		return bodyError("duplicate field `%s`%s", key, where)
	}
	l.keys[fold] = key
	l.key, l.wantKey = key, false
	return nil
}

// child names the value that begins at l's current position.
func (l *jsonLevel) child() string {
	switch {
	case !l.object:
		return fmt.Sprintf("%s[%d]", l.name, l.n)
	case l.name == "":
		return l.key
	}
	return l.name + "." + l.key
}

func (l *jsonLevel) valueDone() {
	if l.object {
		l.wantKey = true
	} else {
		l.n++
	}
}

// foldKey is how encoding/json compares a key with a field's name: without
// regard to case, each rune replaced by the least of its case folding orbit.
func foldKey(key string) string {
	return strings.Map(func(r rune) rune {
		for {
			f := unicode.SimpleFold(r)
			if f <= r {
				return f
			}
			r = f
		}
	}, key)
}
