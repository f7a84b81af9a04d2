package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/squibvm/squib/api"
)

// clientTimeout bounds one client command.
const clientTimeout = time.Minute

// defaultPower is the default of --vcpu-power, and the server's.
const defaultPower = "saved"

// clientCmd runs the client commands, which talk to a running squibd:
// status, pause, resume, drive and snapshot create|load. On success each prints
// the microVM's state; on a fault it prints the server's fault message and
// fails.
func clientCmd(name string, args []string, stdout, stderr io.Writer) (int, error) {
	what := name
	if name == "snapshot" {
		if len(args) > 0 && (args[0] == "describe" || args[0] == "verify" || args[0] == "merge") {
			return snapshotFileCmd(args[0], args[1:], stdout, stderr)
		}
		if len(args) == 0 || (args[0] != "create" && args[0] != "load") {
			return 0, usageError{"usage: squibd snapshot create|load --socket PATH --snapshot FILE --mem FILE\n" +
				"       squibd snapshot describe|verify|merge --snapshot FILE ... (-h for their flags)"}
		}
		what, args = name+" "+args[0], args[1:]
	}
	fs := flag.NewFlagSet("squibd "+what, flag.ContinueOnError)
	fs.SetOutput(stderr)
	socket := fs.String("socket", "", "API socket `path` of the squibd to talk to")
	asJSON := fs.Bool("json", false, "print JSON instead of text")
	var snapshot, mem, power, driveID, drivePath, vsockUDS string
	var resume, diff, copyMem, track bool
	var overrides []api.NetworkOverride
	if name == "drive" {
		fs.StringVar(&driveID, "id", "", "the drive's `id` (its drive_id)")
		fs.StringVar(&drivePath, "path", "", "the image `file` to make its medium")
	}
	if name == "snapshot" {
		fs.StringVar(&snapshot, "snapshot", "", "snapshot state `file`")
		fs.StringVar(&mem, "mem", "", "guest memory `file`")
		if what == "snapshot create" {
			fs.BoolVar(&diff, "diff", false, "write only the memory written since the last snapshot (needs dirty-page tracking)")
		} else {
			fs.BoolVar(&resume, "resume", false, "resume the microVM once loaded")
			fs.StringVar(&power, "vcpu-power", defaultPower, "which vCPUs run: `saved` (each as saved) or boot_vcpu (vCPU 0 only; refused if a secondary was saved online)")
			fs.BoolVar(&copyMem, "copy-memory", false, "read the memory file in instead of mapping it copy-on-write")
			fs.BoolVar(&track, "track-dirty-pages", false, "track the guest's writes, for diff snapshots of the restored microVM")
			fs.StringVar(&vsockUDS, "vsock-uds", "", "give the restored vsock device the Unix socket `PATH` instead of the saved one (vsock_override)")
			fs.Func("net", "give a restored interface another backend of its kind: `ID=tap:NAME`, ID=unixgram:PATH or ID=publish:SPEC[;SPEC...] (network_overrides; repeatable)", func(v string) error {
				o, err := parseNetOverride(v)
				overrides = append(overrides, o)
				return err
			})
		}
	}
	if err := parseFlags(fs, args); errors.Is(err, flag.ErrHelp) {
		return exitOK, nil
	} else if err != nil {
		return 0, err
	}
	if *socket == "" {
		return 0, usageError{"--socket is required"}
	}
	if name == "drive" && (driveID == "" || drivePath == "") {
		return 0, usageError{"usage: squibd drive --socket PATH --id DRIVE --path FILE"}
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
	case "drive":
		err = c.Do(ctx, http.MethodPatch, "/drives/"+url.PathEscape(driveID), api.PartialDrive{DriveID: &driveID, PathOnHost: &drivePath}, nil)
	case "snapshot create":
		typ := "Full"
		if diff {
			typ = "Diff"
		}
		err = c.Do(ctx, http.MethodPut, "/snapshot/create", api.SnapshotCreate{SnapshotPath: &snapshot, MemFilePath: &mem, SnapshotType: &typ}, nil)
	case "snapshot load":
		// Options at their defaults are left out, so that the default
		// request, free of squib's own fields, is one Firecracker accepts.
		file := "File"
		body := api.SnapshotLoad{SnapshotPath: &snapshot, MemBackend: &api.MemBackend{BackendType: &file, BackendPath: &mem},
			ResumeVM: unlessDefault(resume, false), TrackDirtyPages: unlessDefault(track, false),
			VCPUPower: unlessDefault(power, defaultPower), CopyMemory: unlessDefault(copyMem, false)}
		if vsockUDS != "" {
			body.VsockOverride = &api.VsockOverride{UDSPath: &vsockUDS}
		}
		body.NetworkOverrides = overrides
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

// unlessDefault returns &v, or nil (a field left out) when v is def.
func unlessDefault[T comparable](v, def T) *T {
	if v == def {
		return nil
	}
	return &v
}

func printJSON(w io.Writer, v any) {
	b, _ := json.Marshal(v)
	fmt.Fprintf(w, "%s\n", b)
}

// parseNetOverride parses a snapshot load --net value.
func parseNetOverride(v string) (api.NetworkOverride, error) {
	id, spec, _ := strings.Cut(v, "=")
	kind, arg, _ := strings.Cut(spec, ":")
	o := api.NetworkOverride{IfaceID: &id}
	switch {
	case id == "":
	case kind == "tap" && arg != "":
		o.HostDevName = &arg
		return o, nil
	case kind == "unixgram" && arg != "":
		o.UnixgramPath = &arg
		return o, nil
	case kind == "publish":
		p := []string{}
		if arg != "" {
			p = strings.Split(arg, ";")
		}
		o.Publish = &p
		return o, nil
	}
	return o, fmt.Errorf("%q: use ID=tap:NAME, ID=unixgram:PATH or ID=publish:SPEC[;SPEC...]", v)
}
