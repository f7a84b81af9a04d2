package main

import (
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"path/filepath"
	"strconv"
	"strings"
	"unicode/utf16"
	"unicode/utf8"

	"github.com/squibvm/squib/psci"
	"github.com/squibvm/squib/snapshot"
)

// snapshotFileUsage is the synopsis of each offline snapshot command.
var snapshotFileUsage = map[string]string{
	"describe": "--snapshot STATE [--restore-shape] [--json]",
	"verify":   "--snapshot STATE --mem MEM [--json]",
	"merge":    "--snapshot BASE_STATE --mem BASE_MEM --diff STATE:MEM [--diff STATE:MEM ...] --out-snapshot STATE --out-mem MEM [--json]",
}

// snapshotFileCmd runs the offline snapshot commands, which read snapshot
// files and need no running squibd: describe (summarize a state file), verify
// (check a state file and its memory file completely) and merge (fold diff
// snapshots into a full one).
func snapshotFileCmd(what string, args []string, stdout, stderr io.Writer) (int, error) {
	synopsis, ok := snapshotFileUsage[what]
	if !ok {
		return 0, usageError{fmt.Sprintf("unknown snapshot command %q", what)}
	}
	fs := flag.NewFlagSet("squibd snapshot "+what, flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() {
		fmt.Fprintf(fs.Output(), "usage: squibd snapshot %s %s\n", what, synopsis)
		fs.PrintDefaults()
	}
	var state, mem, outState, outMem string
	var shape bool
	var diffs []snapshot.Files
	asJSON := fs.Bool("json", false, "print JSON instead of text")
	switch what {
	case "describe":
		fs.StringVar(&state, "snapshot", "", "snapshot state `file`")
		fs.BoolVar(&shape, "restore-shape", false, "also show which vCPUs run after a restore, under each --vcpu-power policy")
	case "verify":
		fs.StringVar(&state, "snapshot", "", "snapshot state `file`")
		fs.StringVar(&mem, "mem", "", "guest memory `file`")
	case "merge":
		fs.StringVar(&state, "snapshot", "", "the base (full) snapshot's state `file`")
		fs.StringVar(&mem, "mem", "", "the base snapshot's memory `file`")
		fs.Func("diff", "a diff snapshot to fold in, as `STATE:MEM`; repeat it for each diff, oldest first", func(v string) error {
			f, err := parseDiff(v)
			if err == nil {
				diffs = append(diffs, f)
			}
			return err
		})
		fs.StringVar(&outState, "out-snapshot", "", "state `file` of the merged snapshot to write")
		fs.StringVar(&outMem, "out-mem", "", "memory `file` of the merged snapshot to write")
	}
	if err := parseFlags(fs, args); errors.Is(err, flag.ErrHelp) {
		return exitOK, nil
	} else if err != nil {
		return 0, err
	}
	switch {
	case state == "":
		return 0, usageError{"--snapshot is required"}
	case what != "describe" && mem == "":
		return 0, usageError{"--mem is required"}
	}

	var status int
	var err error
	switch what {
	case "describe":
		status, err = describeCmd(state, shape, *asJSON, stdout)
	case "verify":
		status, err = verifyCmd(state, mem, *asJSON, stdout)
	default:
		switch {
		case len(diffs) == 0:
			return 0, usageError{"at least one --diff STATE:MEM is required"}
		case outState == "":
			return 0, usageError{"--out-snapshot is required"}
		case outMem == "":
			return 0, usageError{"--out-mem is required"}
		case filepath.Clean(outState) == filepath.Clean(outMem):
			return 0, usageError{"--out-snapshot and --out-mem name the same file"}
		}
		status, err = mergeCmd(snapshot.Files{State: state, Memory: mem}, diffs, snapshot.Files{State: outState, Memory: outMem}, *asJSON, stdout)
	}
	if err != nil {
		err = plainError{err}
	}
	return status, err
}

// plainError keeps the message of an error about snapshot files to one line
// of plain text. The snapshot package quotes what it takes from a file, but
// a message also holds paths, which may hold anything: a control character
// (a line break, an escape sequence) or a character that prints as nothing
// is shown escaped, as in a Go string literal.
type plainError struct{ err error }

func (e plainError) Error() string { return escapeText(e.err.Error()) }
func (e plainError) Unwrap() error { return e.err }

// escapeText returns s with every byte that is not valid UTF-8, and every
// character that does not print (a space does), escaped as strconv.Quote
// would; the rest, quotes and backslashes included, stays as it is.
func escapeText(s string) string {
	var b strings.Builder
	for i, c := range s {
		switch _, size := utf8.DecodeRuneInString(s[i:]); {
		case c == utf8.RuneError && size == 1:
			fmt.Fprintf(&b, `\x%02x`, s[i])
		case c == ' ' || strconv.IsPrint(c):
			b.WriteRune(c)
		default:
			q := strconv.QuoteRune(c)
			b.WriteString(q[1 : len(q)-1])
		}
	}
	return b.String()
}

// printPlainJSON prints v as one line of JSON, like printJSON, with every
// character that does not print escaped. encoding/json escapes the control
// characters below U+0020 but not DEL, the C1 controls (U+0080-U+009F, which
// some terminals take as escape sequences) or bidirectional overrides such
// as U+202E, and a state file's strings may hold them. Outside its strings
// compact JSON holds only printable ASCII, so escaping them as \uXXXX keeps
// the JSON valid and its strings the same.
func printPlainJSON(w io.Writer, v any) {
	b, _ := json.Marshal(v)
	var out strings.Builder
	for _, c := range string(b) {
		if c == ' ' || strconv.IsPrint(c) {
			out.WriteRune(c)
			continue
		}
		if r1, r2 := utf16.EncodeRune(c); r1 != utf8.RuneError {
			fmt.Fprintf(&out, `\u%04x\u%04x`, r1, r2)
		} else {
			fmt.Fprintf(&out, `\u%04x`, c)
		}
	}
	fmt.Fprintf(w, "%s\n", out.String())
}

// pathText spells a path given on the command line for text output: as it
// is when every character of it prints, else quoted.
func pathText(p string) string {
	if escapeText(p) != p {
		return strconv.Quote(p)
	}
	return p
}

// parseDiff parses a --diff value, STATE:MEM. Paths holding a colon cannot
// be given this way; the value must have exactly one.
func parseDiff(v string) (snapshot.Files, error) {
	st, mem, ok := strings.Cut(v, ":")
	if !ok || st == "" || mem == "" || strings.Contains(mem, ":") {
		return snapshot.Files{}, errors.New("want STATE:MEM, the state file and the memory file of a diff snapshot, separated by one colon")
	}
	return snapshot.Files{State: st, Memory: mem}, nil
}

// restoreShape is the power state of each vCPU after a restore, under each
// value of the API's vcpu_power (and snapshot load --vcpu-power).
type restoreShape struct {
	BootVCPU []string `json:"boot_vcpu"` // null when the policy is refused
	// BootVCPURefused says why a load with boot_vcpu is refused.
	BootVCPURefused string   `json:"boot_vcpu_refused,omitempty"`
	Saved           []string `json:"saved"`
}

// describeOutput is the JSON of snapshot describe.
type describeOutput struct {
	snapshot.Report
	RestoreShape *restoreShape `json:"restore_shape,omitempty"`
}

func describeCmd(state string, shape, asJSON bool, stdout io.Writer) (int, error) {
	r, err := snapshot.Describe(state)
	if err != nil {
		return 0, err
	}
	out := describeOutput{Report: r}
	if shape {
		if out.RestoreShape, err = shapeOf(r.VCPUs); err != nil {
			return 0, fmt.Errorf("%s: %w", state, err)
		}
	}
	if asJSON {
		printPlainJSON(stdout, out)
		return exitOK, nil
	}
	if err := r.WriteText(stdout); err != nil {
		return 0, err
	}
	if s := out.RestoreShape; s != nil {
		boot := strings.Join(s.BootVCPU, " ")
		if s.BootVCPURefused != "" {
			boot = "refused: " + s.BootVCPURefused
		}
		fmt.Fprintf(stdout, "restore shape (--vcpu-power), vCPU 0 first:\n  saved      %s\n  boot_vcpu  %s\n",
			strings.Join(s.Saved, " "), boot)
	}
	return exitOK, nil
}

// shapeOf computes the restore shape of the saved vCPUs with
// psci.RestoreShape, from the power state names the report holds.
func shapeOf(vcpus []snapshot.VCPUReport) (*restoreShape, error) {
	saved := make([]psci.Power, len(vcpus))
	for i, c := range vcpus {
		p, ok := parsePower(c.Power)
		if !ok {
			return nil, fmt.Errorf("vCPU %d: unknown power state %q", i, c.Power)
		}
		saved[i] = p
	}
	names := func(ps []psci.Power) []string {
		s := make([]string, len(ps))
		for i, p := range ps {
			s[i] = p.String()
		}
		return s
	}
	shape, err := psci.RestoreShape(saved, psci.RestoreSaved)
	if err != nil {
		return nil, err
	}
	out := &restoreShape{Saved: names(shape)}
	if boot, err := psci.RestoreShape(saved, psci.RestoreBSPOnly); err != nil {
		out.BootVCPURefused = err.Error()
	} else {
		out.BootVCPU = names(boot)
	}
	return out, nil
}

// parsePower is the inverse of psci.Power.String for the valid states.
func parsePower(name string) (psci.Power, bool) {
	for _, p := range []psci.Power{psci.On, psci.Off, psci.OnPending} {
		if p.String() == name {
			return p, true
		}
	}
	return 0, false
}

// verifyOutput is the JSON of snapshot verify. Report is nil when the state
// file could not be read.
type verifyOutput struct {
	*snapshot.Report
	OK    bool   `json:"ok"`
	Error string `json:"error,omitempty"`
}

func verifyCmd(state, mem string, asJSON bool, stdout io.Writer) (int, error) {
	r, err := snapshot.Verify(state, mem)
	read := r.Header.ID != "" // the report holds what could be read even on failure
	if asJSON {
		out := verifyOutput{OK: err == nil}
		if read {
			out.Report = &r
		}
		if err != nil {
			out.Error = err.Error()
		}
		printPlainJSON(stdout, out)
		if err != nil {
			return 0, err
		}
		return exitOK, nil
	}
	if read {
		if werr := r.WriteText(stdout); werr != nil && err == nil {
			err = werr
		}
	}
	if err != nil {
		return 0, err
	}
	fmt.Fprintln(stdout, "ok: state file and memory file are intact")
	return exitOK, nil
}

// mergeOutput is the JSON of snapshot merge.
type mergeOutput struct {
	ID    string `json:"id"`
	Diffs int    `json:"diffs"` // diffs folded into the base
	snapshot.Files
}

func mergeCmd(base snapshot.Files, diffs []snapshot.Files, out snapshot.Files, asJSON bool, stdout io.Writer) (int, error) {
	st, err := snapshot.Merge(base, diffs, out)
	if err != nil {
		return 0, err
	}
	if asJSON {
		printPlainJSON(stdout, mergeOutput{ID: st.Header.ID, Diffs: len(diffs), Files: out})
		return exitOK, nil
	}
	fmt.Fprintf(stdout, "merged %d diff(s) into full snapshot %s\n  state  %s\n  memory %s\n", len(diffs), st.Header.ID,
		pathText(out.State), pathText(out.Memory))
	return exitOK, nil
}
