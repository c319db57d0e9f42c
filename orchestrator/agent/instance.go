package agent

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"kvmstack/orchestrator/api"
	"kvmstack/orchestrator/client"
	"kvmstack/orchestrator/state"
)

// vmm exit codes (docs/VMM.md).
const (
	exitPowerOff = 0
	exitReset    = 3
)

// update is a new record of an instance, or its deletion (rec nil).
type update struct {
	rec   *state.Instance
	index uint64 // the instances index the record was read at
}

// instance supervises one instance: a goroutine that owns its vmm process
// and moves it towards the cluster's record, one step at a time.
type instance struct {
	a   *hostAgent
	id  string
	dir string
	log *slog.Logger

	updates chan update
	// opCtx ends when the instance is deleted, cutting short a build.
	opCtx     context.Context
	cancelOps context.CancelFunc

	// Owned by the supervisor goroutine.
	rec        *state.Instance
	recIndex   uint64
	proc       *vmmProcess
	lost       string // exit status of a vmm found dead when the agent started
	handledSeq int
	restartAt  time.Time
	failures   int
}

func (a *hostAgent) newInstanceLocked(ctx context.Context, id string) *instance {
	opCtx, cancel := context.WithCancel(ctx)
	in := &instance{a: a, id: id, dir: filepath.Join(a.instDir, id), log: a.log.With("instance", id),
		updates: make(chan update, 1), opCtx: opCtx, cancelOps: cancel,
		proc: a.adopted[id], lost: a.lost[id]}
	delete(a.adopted, id)
	delete(a.lost, id)
	if raw, err := os.ReadFile(filepath.Join(in.dir, fileActionSeq)); err == nil {
		in.handledSeq, _ = strconv.Atoi(strings.TrimSpace(string(raw)))
	}
	a.insts[id] = in
	a.wg.Add(1)
	go in.run(ctx)
	return in
}

// push hands the supervisor a newer record; an unread older one is
// replaced, as only the latest matters. A deletion (empty update) also
// cancels any build in progress.
func (in *instance) push(u update) {
	if u.rec == nil {
		in.cancelOps()
	}
	for {
		select {
		case in.updates <- u:
			return
		default:
		}
		select {
		case <-in.updates:
		default:
		}
	}
}

func (in *instance) run(ctx context.Context) {
	defer in.a.wg.Done()
	defer func() {
		in.a.mu.Lock()
		if in.a.insts[in.id] == in {
			delete(in.a.insts, in.id)
		}
		in.a.mu.Unlock()
		in.cancelOps()
	}()
	timer := time.NewTimer(time.Hour)
	timer.Stop()
	for {
		var procDone <-chan struct{}
		if in.proc != nil {
			procDone = in.proc.done
		}
		if !in.restartAt.IsZero() {
			timer.Reset(time.Until(in.restartAt))
		}
		select {
		case <-ctx.Done():
			// The vmm keeps running for the next agent.
			return
		case u := <-in.updates:
			if u.rec == nil {
				in.destroy()
				return
			}
			if in.rec != nil && (len(u.rec.History) < len(in.rec.History) || u.rec.ActionSeq < in.rec.ActionSeq) {
				continue // older than what a state report returned
			}
			in.rec, in.recIndex = u.rec, u.index
		case <-procDone:
			in.exited(ctx)
		case <-timer.C:
		}
		timer.Stop()
		in.step(ctx)
	}
}

// step moves the instance one stage towards its record.
func (in *instance) step(ctx context.Context) {
	rec := in.rec
	if rec == nil {
		return
	}
	due := !in.restartAt.IsZero() && !time.Now().Before(in.restartAt)
	switch rec.State {
	case state.InstanceScheduled:
		if in.report(ctx, state.InstanceBuilding, "preparing on host "+in.a.cfg.HostName) {
			in.build(ctx, "started")
		}
	case state.InstanceBuilding:
		if in.proc != nil {
			in.report(ctx, state.InstanceRunning, fmt.Sprintf("vmm pid %d re-adopted", in.proc.pid))
		} else {
			in.build(ctx, "started")
		}
	case state.InstanceRunning, state.InstancePaused:
		if in.proc == nil {
			in.failed(ctx, "vmm is not running after an agent restart: "+orUnknown(in.lost))
			return
		}
	case state.InstanceStopped:
		if in.proc != nil {
			// Stopped while the agent was away, but the vmm is back or
			// was never stopped: the record wins.
			in.stopVMM(ctx, false)
		}
		if due {
			in.restartAt = time.Time{}
			in.build(ctx, "restarted after a guest power-off (restart policy always)")
		}
	case state.InstanceError:
		if in.proc != nil {
			in.stopVMM(ctx, false)
		}
		if due {
			in.restartAt = time.Time{}
			if in.report(ctx, state.InstanceBuilding, fmt.Sprintf("restarting (restart policy %s, attempt %d)", in.rec.RestartPolicy, in.failures)) {
				in.build(ctx, "restarted")
				if in.proc == nil && in.rec.State == state.InstanceError && in.opCtx.Err() == nil {
					// The restart failed too: keep trying, ever more slowly.
					in.scheduleRestart()
				}
			}
		}
		return
	}
	in.applyAction(ctx)
}

func orUnknown(s string) string {
	if s == "" {
		return statusUnknown
	}
	return s
}

// build makes the instance run: images, disk, network, vmm. It reports
// running with reason, or error with what failed; a failed build leaves no
// disk or temporary file behind.
func (in *instance) build(ctx context.Context, reason string) {
	proc, err := in.start(in.opCtx)
	if err != nil {
		if in.opCtx.Err() != nil {
			return // deleted (or the agent is stopping) meanwhile
		}
		in.log.Warn("build failed", "err", err)
		if !in.diskInUse() {
			in.removeUnused()
		}
		in.report(ctx, state.InstanceError, err.Error())
		return
	}
	in.proc = proc
	in.report(ctx, state.InstanceRunning, fmt.Sprintf("%s: vmm pid %d", reason, proc.pid))
}

// diskInUse reports whether the disk may hold a guest's data: a vmm came
// up on it before.
func (in *instance) diskInUse() bool {
	_, err := os.Stat(filepath.Join(in.dir, fileRan))
	return err == nil
}

// removeUnused removes what a build that never brought a guest up left:
// everything but the vmm's logs (they tell why), and the directory if no
// log was written.
func (in *instance) removeUnused() {
	ents, _ := os.ReadDir(in.dir)
	kept := 0
	for _, e := range ents {
		if e.Name() == fileVMMLog || e.Name() == fileConsole {
			kept++
			continue
		}
		os.RemoveAll(filepath.Join(in.dir, e.Name()))
	}
	if kept == 0 {
		os.Remove(in.dir)
	}
}

// start fetches what the instance needs and starts its vmm, returning once
// the vmm answers on its socket.
func (in *instance) start(ctx context.Context) (*vmmProcess, error) {
	rec := in.rec
	if rec.KernelID == "" {
		return nil, errors.New("instance has no kernel image")
	}
	if err := os.MkdirAll(in.dir, 0o700); err != nil {
		return nil, fmt.Errorf("instance directory: %w", err)
	}
	kernel, err := in.fetch(ctx, rec.KernelID)
	if err != nil {
		return nil, err
	}
	// vmm records its own exit status: an agent that adopts it after a
	// restart is not its parent and cannot wait for it.
	args := []string{"--api-socket", filepath.Join(in.dir, fileSocket), "--exit-status-file", filepath.Join(in.dir, fileExitStatus), "--kernel", kernel,
		"--cpus", strconv.Itoa(rec.VCPUs), "--memory", strconv.Itoa(rec.MemoryMB) + "M", "--serial", "stdio", "--rng"}
	if rec.InitrdID != "" {
		initrd, err := in.fetch(ctx, rec.InitrdID)
		if err != nil {
			return nil, err
		}
		args = append(args, "--initrd", initrd)
	}
	if rec.ImageID != "" {
		disk := filepath.Join(in.dir, fileDisk)
		if _, err := os.Stat(disk); err != nil {
			// A restart keeps the guest's disk; only a first start copies.
			src, err := in.fetch(ctx, rec.ImageID)
			if err != nil {
				return nil, err
			}
			cloned, err := prepareDisk(ctx, src, disk, int64(rec.DiskGB)<<30)
			if err != nil {
				return nil, err
			}
			in.log.Info("disk prepared", "reflink", cloned, "size_gb", rec.DiskGB)
		}
		args = append(args, "--disk", "path="+disk+",id=root")
	}
	ports, err := in.a.waitPorts(ctx, in.id, in.recIndex)
	if err != nil {
		return nil, err
	}
	for _, p := range ports {
		spec := "tap=" + p.Tap + ",mac=" + p.MAC
		if ns := in.a.cfg.Netns; ns != "" {
			spec += ",netns=" + ns
		}
		args = append(args, "--net", spec)
	}
	if cl := rec.Metadata["cmdline"]; cl != "" {
		args = append(args, "--cmdline", cl)
	}
	proc, err := startVMM(in.a.cfg.VMMPath, args, in.a.cfg.VMMEnv, in.dir)
	if err != nil {
		return nil, err
	}
	vc := NewVMMClient(filepath.Join(in.dir, fileSocket))
	defer vc.Close()
	deadline := time.Now().Add(in.a.cfg.StartTimeout)
	for {
		ictx, cancel := context.WithTimeout(ctx, time.Second)
		_, err := vc.Info(ictx)
		cancel()
		if err == nil {
			if err := os.WriteFile(filepath.Join(in.dir, fileRan), nil, 0o600); err != nil {
				in.killProc(proc)
				return nil, fmt.Errorf("instance directory: %w", err)
			}
			return proc, nil
		}
		select {
		case <-proc.done:
			return nil, fmt.Errorf("vmm exited during start: %s%s", proc.status, in.logTail())
		case <-ctx.Done():
			in.killProc(proc)
			return nil, ctx.Err()
		case <-time.After(50 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			in.killProc(proc)
			return nil, fmt.Errorf("vmm did not answer on its socket within %s: %w%s", in.a.cfg.StartTimeout, err, in.logTail())
		}
	}
}

// logTail is the end of vmm.log, for error reasons.
func (in *instance) logTail() string {
	raw, err := os.ReadFile(filepath.Join(in.dir, fileVMMLog))
	if err != nil || len(raw) == 0 {
		return ""
	}
	s := strings.TrimSpace(string(raw))
	if len(s) > 300 {
		s = "..." + s[len(s)-300:]
	}
	return " (vmm.log: " + s + ")"
}

// fetch returns the cached path of an image, retrying downloads that fail
// for other reasons than the bytes themselves.
func (in *instance) fetch(ctx context.Context, id string) (string, error) {
	var err error
	for attempt := range 3 {
		var img *state.Image
		if img, err = in.a.image(ctx, id); err == nil {
			var p string
			if p, err = in.a.images.Get(ctx, img); err == nil {
				return p, nil
			}
		}
		var ae *client.APIError
		if errors.Is(err, ErrDigest) || errors.As(err, &ae) && ae.Status < 500 || ctx.Err() != nil || isNoSpace(err) {
			return "", err
		}
		sleepCtx(ctx, time.Duration(attempt+1)*500*time.Millisecond)
	}
	return "", err
}

func isNoSpace(err error) bool {
	return errors.Is(err, syscall.ENOSPC) || errors.Is(err, syscall.EDQUOT)
}

// exited handles the end of the vmm: a guest reset restarts it at once; a
// power-off stops the instance; anything else is an error. The restart
// policy may schedule a new start.
func (in *instance) exited(ctx context.Context) {
	p := in.proc
	in.proc = nil
	os.Remove(filepath.Join(in.dir, filePID))
	if time.Since(p.started) > time.Minute {
		in.failures = 0
	}
	if in.rec == nil {
		return
	}
	policy := in.rec.RestartPolicy
	switch {
	case p.code == exitReset:
		in.log.Info("guest reset; starting a new vmm")
		if proc, err := in.start(in.opCtx); err != nil {
			in.failed(ctx, "restart after a guest reset failed: "+err.Error())
		} else {
			in.proc = proc
		}
	case p.code == exitPowerOff:
		if in.report(ctx, state.InstanceStopped, "guest powered off (vmm exit status 0)") && policy == state.RestartAlways {
			in.scheduleRestart()
		}
	default:
		in.failed(ctx, fmt.Sprintf("vmm pid %d exited: %s%s", p.pid, p.status, in.logTail()))
	}
}

// failed reports an error and, if the restart policy says so, schedules a
// restart with exponential backoff.
func (in *instance) failed(ctx context.Context, reason string) {
	if !in.report(ctx, state.InstanceError, reason) {
		return
	}
	if p := in.rec.RestartPolicy; p == state.RestartOnFailure || p == state.RestartAlways {
		in.scheduleRestart()
	}
}

func (in *instance) scheduleRestart() {
	d := in.a.cfg.RestartBackoff << min(in.failures, 10)
	in.failures++
	in.restartAt = time.Now().Add(min(d, time.Minute))
	in.log.Info("restart scheduled", "in", min(d, time.Minute), "attempt", in.failures)
}

// applyAction carries out the latest power action asked for, once.
func (in *instance) applyAction(ctx context.Context) {
	rec := in.rec
	if rec.ActionSeq <= in.handledSeq || in.proc == nil && rec.State != state.InstanceStopped {
		return
	}
	vc := NewVMMClient(filepath.Join(in.dir, fileSocket))
	defer vc.Close()
	var err error
	switch {
	case rec.Action == state.ActionStop && (rec.State == state.InstanceRunning || rec.State == state.InstancePaused):
		how := in.stopVMM(ctx, rec.State == state.InstanceRunning)
		in.report(ctx, state.InstanceStopped, "stopped by user ("+how+")")
	case rec.Action == state.ActionStart && rec.State == state.InstanceStopped:
		in.restartAt = time.Time{}
		in.build(ctx, "started by user")
	case rec.Action == state.ActionPause && rec.State == state.InstanceRunning:
		if err = vc.SetState(ctx, "paused"); err == nil {
			in.report(ctx, state.InstancePaused, "paused by user")
		}
	case rec.Action == state.ActionResume && rec.State == state.InstancePaused:
		if err = vc.SetState(ctx, "running"); err == nil {
			in.report(ctx, state.InstanceRunning, "resumed by user")
		}
	case rec.Action == state.ActionReboot && (rec.State == state.InstanceRunning || rec.State == state.InstancePaused):
		in.stopVMM(ctx, false)
		if in.report(ctx, state.InstanceStopped, "rebooting (asked by user)") {
			in.build(ctx, "rebooted by user")
		}
	default:
		in.log.Info("power action does not apply", "action", rec.Action, "state", rec.State)
	}
	if err != nil {
		in.log.Warn("power action failed", "action", rec.Action, "err", err)
	}
	in.handledSeq = rec.ActionSeq
	if err := writeFileAtomic(filepath.Join(in.dir, fileActionSeq), []byte(strconv.Itoa(rec.ActionSeq)+"\n")); err != nil {
		in.log.Warn("action sequence file", "err", err)
	}
}

// stopVMM ends the vmm: with graceful, the ACPI power button first and
// StopTimeout for the guest to power off; then POST /vm/kill, then
// SIGKILL. It says how the vmm ended.
func (in *instance) stopVMM(ctx context.Context, graceful bool) string {
	p := in.proc
	if p == nil {
		return "not running"
	}
	in.proc = nil
	defer os.Remove(filepath.Join(in.dir, filePID))
	if graceful {
		vc := NewVMMClient(filepath.Join(in.dir, fileSocket))
		err := vc.Shutdown(ctx)
		vc.Close()
		if err == nil && waitDone(p, in.a.cfg.StopTimeout) {
			return "guest powered off"
		}
	}
	in.killProc(p)
	return "vmm killed"
}

// killProc stops a vmm at once through its API, else by SIGKILL, and
// waits for it to end.
func (in *instance) killProc(p *vmmProcess) {
	vc := NewVMMClient(filepath.Join(in.dir, fileSocket))
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	err := vc.Kill(ctx)
	cancel()
	vc.Close()
	if err == nil && waitDone(p, 5*time.Second) {
		return
	}
	if err := p.signal(syscall.SIGKILL); err != nil && !p.exited() {
		in.log.Warn("kill vmm", "pid", p.pid, "err", err)
	}
	if !waitDone(p, 10*time.Second) {
		in.log.Error("vmm does not exit after SIGKILL", "pid", p.pid)
	}
}

func waitDone(p *vmmProcess, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-p.done:
		return true
	case <-t.C:
		return false
	}
}

// destroy ends the vmm of a deleted instance and removes its directory.
func (in *instance) destroy() {
	if in.proc != nil {
		in.killProc(in.proc)
		in.proc = nil
	}
	if err := os.RemoveAll(in.dir); err != nil {
		in.log.Warn("remove instance directory", "err", err)
	}
	in.log.Info("instance removed")
}

// report sends a state change with its reason, retrying while no server
// answers. It returns false if the change was refused (the record moved
// on meanwhile; the next update brings it).
func (in *instance) report(ctx context.Context, st, reason string) bool {
	if len(reason) > 1000 {
		reason = reason[:1000]
	}
	for delay := 200 * time.Millisecond; ; delay = min(2*delay, 5*time.Second) {
		var got state.Instance
		_, err := in.a.call(ctx, http.MethodPost, "/v1/instances/"+in.id+"/state", nil, api.StateRequest{State: st, Reason: reason}, &got)
		if err == nil {
			in.log.Info("state", "state", st, "reason", reason)
			if got.ID == in.id {
				in.rec = &got
			}
			return true
		}
		var ae *client.APIError
		if errors.As(err, &ae) && ae.Status < 500 || ctx.Err() != nil {
			in.log.Warn("state report refused", "state", st, "reason", reason, "err", err)
			return false
		}
		in.log.Warn("state report", "err", err)
		if !sleepCtx(ctx, delay) {
			return false
		}
	}
}
