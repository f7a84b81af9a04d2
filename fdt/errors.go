package fdt

import "fmt"

// Error describes the first misuse of a [Builder]. Finish returns it as an
// error of type *Error.
type Error struct {
	Path    string // path of the node being written, such as "/cpus/cpu@0"; "" outside any node
	Problem string // what went wrong, such as `duplicate property "reg"`
}

func (e *Error) Error() string {
	if e.Path == "" {
		return "fdt: " + e.Problem
	}
	return "fdt: " + e.Path + ": " + e.Problem
}

// FormatError reports a malformed blob passed to [Parse].
type FormatError struct {
	Off int    // byte offset in the blob where the problem was found
	Msg string // description of the problem
}

func (e *FormatError) Error() string {
	return fmt.Sprintf("fdt: malformed blob at offset %#x: %s", e.Off, e.Msg)
}
