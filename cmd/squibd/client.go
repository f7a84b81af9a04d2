package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"time"

	"github.com/squibvm/squib/api"
)

// clientTimeout bounds one client command.
const clientTimeout = time.Minute

// clientCmd runs the client commands, which talk to a running squibd:
// status, pause, resume and snapshot create|load. On success each prints
// the microVM's state; on a fault it prints the server's fault message and
// fails.
func clientCmd(name string, args []string, stdout, stderr io.Writer) (int, error) {
	what := name
	if name == "snapshot" {
		if len(args) == 0 || (args[0] != "create" && args[0] != "load") {
			return 0, usageError{"usage: squibd snapshot create|load --socket PATH --snapshot FILE --mem FILE"}
		}
		what, args = name+" "+args[0], args[1:]
	}
	fs := flag.NewFlagSet("squibd "+what, flag.ContinueOnError)
	fs.SetOutput(stderr)
	socket := fs.String("socket", "", "API socket `path` of the squibd to talk to")
	asJSON := fs.Bool("json", false, "print JSON instead of text")
	var snapshot, mem string
	var resume bool
	if name == "snapshot" {
		fs.StringVar(&snapshot, "snapshot", "", "snapshot state `file`")
		fs.StringVar(&mem, "mem", "", "guest memory `file`")
		if what == "snapshot load" {
			fs.BoolVar(&resume, "resume", false, "resume the microVM once loaded")
		}
	}
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return exitOK, nil
		}
		return 0, usageError{err.Error()}
	}
	switch {
	case fs.NArg() > 0:
		return 0, usageError{fmt.Sprintf("unexpected argument %q", fs.Arg(0))}
	case *socket == "":
		return 0, usageError{"--socket is required"}
	}

	ctx, cancel := context.WithTimeout(context.Background(), clientTimeout)
	defer cancel()
	c := api.NewClient(*socket)
	defer c.Close()
	var err error
	switch what {
	case "pause":
		err = c.SetState(ctx, api.VMPaused)
	case "resume":
		err = c.SetState(ctx, api.VMResumed)
	case "snapshot create":
		err = c.Do(ctx, http.MethodPut, "/snapshot/create", api.SnapshotCreate{SnapshotPath: &snapshot, MemFilePath: &mem}, nil)
	case "snapshot load":
		body := api.SnapshotLoad{SnapshotPath: &snapshot, MemBackend: &api.MemBackend{BackendType: new(string), BackendPath: &mem}}
		*body.MemBackend.BackendType = "File"
		if resume {
			body.ResumeVM = &resume
		}
		err = c.Do(ctx, http.MethodPut, "/snapshot/load", body, nil)
	}
	var info api.InstanceInfo
	if err == nil {
		info, err = c.InstanceInfo(ctx)
	}
	var fault *api.Fault
	switch {
	case errors.As(err, &fault):
		if *asJSON {
			printJSON(stdout, fault)
		}
		return 0, errors.New(fault.Message)
	case err != nil:
		return 0, fmt.Errorf("talking to squibd at %s: %w", *socket, err)
	case *asJSON:
		printJSON(stdout, info)
	default:
		fmt.Fprintf(stdout, "id:      %s\nstate:   %s\nversion: %s %s\n", info.ID, info.State, info.AppName, info.VMMVersion)
	}
	return exitOK, nil
}

func printJSON(w io.Writer, v any) {
	b, _ := json.Marshal(v)
	fmt.Fprintf(w, "%s\n", b)
}
