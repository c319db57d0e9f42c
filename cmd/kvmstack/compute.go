package main

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"strings"
	"time"

	"github.com/urfave/cli/v2"

	"kvmstack/orchestrator/api"
	"kvmstack/orchestrator/state"
)

func flavorCommand() *cli.Command {
	cmds := crud("/v1/flavors", []string{"id", "name", "vcpus", "memory_mb", "disk_gb"}, nil, nil)
	cmds = append(cmds, &cli.Command{Name: "create", ArgsUsage: "NAME", Flags: []cli.Flag{
		&cli.IntFlag{Name: "vcpus", Required: true}, &cli.IntFlag{Name: "memory", Usage: "MiB", Required: true}, &cli.IntFlag{Name: "disk", Usage: "GiB"},
	}, Action: create("/v1/flavors", func(c *cli.Context) (any, error) {
		n, err := needArg(c, "name")
		return api.FlavorRequest{Name: n, VCPUs: c.Int("vcpus"), MemoryMB: c.Int("memory"), DiskGB: c.Int("disk")}, err
	})})
	return &cli.Command{Name: "flavor", Usage: "manage flavors", Subcommands: cmds}
}

func hostCommand() *cli.Command {
	cmds := crud("/v1/hosts", []string{"id", "name", "status", "enabled", "vcpus", "used_vcpus", "memory_mb", "used_memory_mb", "instances"}, nil, nil)
	cmds = append(cmds, &cli.Command{Name: "create", Usage: "register a host (agents do this themselves)", ArgsUsage: "NAME", Flags: []cli.Flag{
		&cli.IntFlag{Name: "vcpus", Required: true}, &cli.IntFlag{Name: "memory", Usage: "MiB", Required: true}, &cli.IntFlag{Name: "disk", Usage: "GiB"},
		&cli.StringFlag{Name: "address"}, &cli.StringFlag{Name: "underlay-ip", Usage: "address other hosts send VXLAN traffic to"},
		&cli.Float64Flag{Name: "cpu-ratio"}, &cli.Float64Flag{Name: "ram-ratio"}, &cli.Float64Flag{Name: "disk-ratio"},
	}, Action: create("/v1/hosts", func(c *cli.Context) (any, error) {
		n, err := needArg(c, "name")
		return api.HostRequest{Name: n, Address: c.String("address"), UnderlayIP: c.String("underlay-ip"), VCPUs: c.Int("vcpus"), MemoryMB: c.Int("memory"), DiskGB: c.Int("disk"),
			CPURatio: c.Float64("cpu-ratio"), RAMRatio: c.Float64("ram-ratio"), DiskRatio: c.Float64("disk-ratio")}, err
	})})
	for _, verb := range []string{"heartbeat", "enable", "disable"} {
		cmds = append(cmds, &cli.Command{Name: verb, ArgsUsage: "HOST", Action: func(c *cli.Context) error {
			h, err := needArg(c, "host")
			if err != nil {
				return err
			}
			_, err = apiClient(c).Do(ctxOf(c), http.MethodPost, "/v1/hosts/"+url.PathEscape(h)+"/"+verb, nil, struct{}{}, nil)
			return err
		}})
	}
	cmds = append(cmds, hostEvacuateCommand())
	return &cli.Command{Name: "host", Usage: "manage compute hosts", Subcommands: cmds}
}

func groupCommand() *cli.Command {
	cmds := crud("/v1/server-groups", []string{"id", "name", "policy", "project_id"}, nil, nil)
	cmds = append(cmds, &cli.Command{Name: "create", ArgsUsage: "NAME", Flags: []cli.Flag{
		&cli.StringFlag{Name: "policy", Usage: "affinity or anti-affinity", Required: true},
	}, Action: create("/v1/server-groups", func(c *cli.Context) (any, error) {
		n, err := needArg(c, "name")
		return api.GroupRequest{Name: n, Policy: c.String("policy")}, err
	})})
	return &cli.Command{Name: "server-group", Usage: "manage server groups", Subcommands: cmds}
}

func instanceCommand() *cli.Command {
	listFlags := []cli.Flag{&cli.StringFlag{Name: "state"}, &cli.StringFlag{Name: "host"}, &cli.StringFlag{Name: "name"},
		&cli.BoolFlag{Name: "all-projects", Usage: "every project (system admin)"}}
	cmds := crud("/v1/instances", []string{"id", "name", "state", "host_id", "vcpus", "memory_mb", "project_id"}, listFlags, func(c *cli.Context) url.Values {
		q := url.Values{}
		for _, f := range []string{"state", "host", "name"} {
			if v := c.String(f); v != "" {
				q.Set(f, v)
			}
		}
		if c.Bool("all-projects") {
			q.Set("all_projects", "1")
		}
		return q
	})
	cmds = append(cmds,
		&cli.Command{Name: "create", ArgsUsage: "NAME", Flags: []cli.Flag{
			&cli.StringFlag{Name: "flavor", Required: true}, &cli.StringFlag{Name: "image"}, &cli.StringFlag{Name: "kernel"}, &cli.StringFlag{Name: "initrd"},
			&cli.StringFlag{Name: "server-group"}, &cli.StringSliceFlag{Name: "meta", Usage: "KEY=VALUE metadata"},
			&cli.StringSliceFlag{Name: "network", Usage: "attach a NIC on this network (name or id; repeat for more NICs, in order)"},
			&cli.IntFlag{Name: "count", Value: 1}, &cli.DurationFlag{Name: "wait", Usage: "wait this long for the instances to be scheduled"},
			&cli.StringFlag{Name: "restart-policy", Usage: "when the vmm exits on its own: never, on-failure or always", Value: state.RestartNever},
		}, Action: func(c *cli.Context) error {
			n, err := needArg(c, "name")
			if err != nil {
				return err
			}
			meta := map[string]string{}
			for _, kv := range c.StringSlice("meta") {
				k, v, ok := strings.Cut(kv, "=")
				if !ok {
					return fmt.Errorf("--meta %q is not KEY=VALUE", kv)
				}
				meta[k] = v
			}
			req := api.InstanceRequest{Name: n, Flavor: c.String("flavor"), Image: c.String("image"), Kernel: c.String("kernel"), Initrd: c.String("initrd"),
				ServerGroup: c.String("server-group"), Metadata: meta, Count: c.Int("count"), Networks: c.StringSlice("network"),
				RestartPolicy: c.String("restart-policy")}
			cl := apiClient(c)
			var created []api.InstanceView
			idx, err := cl.Do(ctxOf(c), http.MethodPost, "/v1/instances", nil, req, &created)
			if err != nil {
				return err
			}
			if len(req.Networks) > 0 && c.Duration("wait") == 0 {
				return printResult(c, withAddresses(created), "id", "name", "state", "host_id", "ips")
			}
			out := make([]*state.Instance, len(created))
			for i, v := range created {
				out[i] = v.Instance
			}
			if d := c.Duration("wait"); d > 0 {
				ids := map[string]bool{}
				for _, in := range out {
					ids[in.ID] = true
				}
				deadline := time.Now().Add(d)
				for time.Now().Before(deadline) {
					var all []*state.Instance
					next, err := cl.Do(ctxOf(c), http.MethodGet, "/v1/instances", url.Values{"index": {fmt.Sprint(idx)}, "wait": {"5s"}}, nil, &all)
					if err != nil {
						return err
					}
					idx = next
					out, done := out[:0], true
					for _, in := range all {
						if ids[in.ID] {
							out = append(out, in)
							done = done && in.State != state.InstancePending
						}
					}
					if done && len(out) == len(ids) {
						return printResult(c, out, "id", "name", "state", "host_id")
					}
				}
				return fmt.Errorf("instances still pending after %s", d)
			}
			return printResult(c, out, "id", "name", "state", "host_id")
		}},
		&cli.Command{Name: "ports", Usage: "list an instance's NICs", ArgsUsage: "ID", Action: func(c *cli.Context) error {
			id, err := needArg(c, "id")
			if err != nil {
				return err
			}
			ports, err := apiClient(c).InstancePorts(ctxOf(c), id)
			if err != nil {
				return err
			}
			return printResult(c, ports, "index", "id", "network_id", "mac", "ip")
		}},
		&cli.Command{Name: "set-state", Usage: "record a state change (agents)", ArgsUsage: "ID STATE", Flags: []cli.Flag{&cli.StringFlag{Name: "reason"}},
			Action: func(c *cli.Context) error {
				if c.NArg() != 2 {
					return fmt.Errorf("need ID and STATE")
				}
				var out any
				if _, err := apiClient(c).Do(ctxOf(c), http.MethodPost, "/v1/instances/"+url.PathEscape(c.Args().Get(0))+"/state", nil,
					api.StateRequest{State: c.Args().Get(1), Reason: c.String("reason")}, &out); err != nil {
					return err
				}
				return printResult(c, out)
			}})
	cmds = append(cmds, instanceEvacuateCommand(), instanceConsoleCommand())
	cmds = append(cmds, instanceActionCommands()...)
	return &cli.Command{Name: "instance", Usage: "manage instances", Subcommands: cmds}
}

// instanceActions are the power actions `kvmstack instance VERB` asks for.
var instanceActions = []struct{ verb, usage string }{
	{state.ActionStop, "power an instance off (its disk and placement stay)"},
	{state.ActionStart, "boot a stopped instance again"},
	{state.ActionReboot, "reset a running or paused instance"},
	{state.ActionPause, "freeze an instance's vCPUs"},
	{state.ActionResume, "run a paused instance again"},
}

// instanceActionCommands returns one command per power action. The server
// only records the request; the host's agent carries it out and reports the
// new state, so the printed state is the one before the action.
func instanceActionCommands() []*cli.Command {
	var cmds []*cli.Command
	for _, a := range instanceActions {
		cmds = append(cmds, &cli.Command{Name: a.verb, Usage: a.usage, ArgsUsage: "NAME_OR_ID", Action: func(c *cli.Context) error {
			arg, err := needArg(c, "instance")
			if err != nil {
				return err
			}
			cl := apiClient(c)
			in, err := cl.Instance(ctxOf(c), arg)
			if err != nil {
				return err
			}
			in, err = cl.InstanceAction(ctxOf(c), in.ID, a.verb)
			if err != nil {
				return err
			}
			return printResult(c, in, "id", "name", "state", "action", "host_id")
		}})
	}
	return cmds
}

func imageCommand() *cli.Command {
	cmds := crud("/v1/images", []string{"id", "name", "kind", "size", "visibility", "sha256"}, nil, nil)
	cmds = append(cmds,
		&cli.Command{Name: "create", Usage: "upload an image", ArgsUsage: "NAME", Flags: []cli.Flag{
			&cli.StringFlag{Name: "file", Required: true}, &cli.StringFlag{Name: "kind", Usage: "kernel, initrd or disk", Value: state.ImageDisk},
			&cli.BoolFlag{Name: "public", Usage: "visible to every project (system admin)"},
			&cli.BoolFlag{Name: "no-progress"},
		}, Action: func(c *cli.Context) error {
			n, err := needArg(c, "name")
			if err != nil {
				return err
			}
			f, err := os.Open(c.String("file"))
			if err != nil {
				return err
			}
			defer f.Close()
			st, err := f.Stat()
			if err != nil {
				return err
			}
			h := sha256.New()
			if _, err := io.Copy(h, f); err != nil {
				return fmt.Errorf("hash %s: %w", f.Name(), err)
			}
			if _, err := f.Seek(0, io.SeekStart); err != nil {
				return err
			}
			vis := state.VisibilityPrivate
			if c.Bool("public") {
				vis = state.VisibilityPublic
			}
			var progress func(int64)
			if !c.Bool("no-progress") {
				progress = progressBar(c.App.ErrWriter, st.Size())
			}
			img, err := apiClient(c).UploadImage(ctxOf(c), n, c.String("kind"), vis, hex.EncodeToString(h.Sum(nil)), f, st.Size(), progress)
			if progress != nil {
				fmt.Fprintln(c.App.ErrWriter)
			}
			if err != nil {
				return err
			}
			return printResult(c, img)
		}},
		&cli.Command{Name: "download", ArgsUsage: "ID", Flags: []cli.Flag{&cli.StringFlag{Name: "out", Required: true}}, Action: func(c *cli.Context) error {
			id, err := needArg(c, "id")
			if err != nil {
				return err
			}
			f, err := os.Create(c.String("out"))
			if err != nil {
				return err
			}
			if err := apiClient(c).DownloadImage(ctxOf(c), id, f); err != nil {
				f.Close()
				os.Remove(f.Name())
				return err
			}
			return f.Close()
		}})
	return &cli.Command{Name: "image", Usage: "manage images", Subcommands: cmds}
}

// progressBar returns a callback drawing a 40-column bar on w.
func progressBar(w io.Writer, total int64) func(int64) {
	last := -1
	return func(n int64) {
		pct := 100
		if total > 0 {
			pct = int(n * 100 / total)
		}
		if pct == last {
			return
		}
		last = pct
		fill := pct * 40 / 100
		fmt.Fprintf(w, "\r[%s%s] %3d%% %d/%d bytes", strings.Repeat("#", fill), strings.Repeat(".", 40-fill), pct, n, total)
	}
}
