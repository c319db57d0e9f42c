package kvmhost

import (
	"bytes"
	"context"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
)

// readCPIO parses a newc archive back into names and contents.
func readCPIO(t *testing.T, b []byte) map[string]string {
	t.Helper()
	out := map[string]string{}
	align := func(n int) int { return (n + 3) &^ 3 }
	for off := 0; ; {
		if off+110 > len(b) || string(b[off:off+6]) != "070701" {
			t.Fatalf("bad header at %d", off)
		}
		field := func(i int) int {
			v, err := strconv.ParseUint(string(b[off+6+8*i:off+14+8*i]), 16, 32)
			if err != nil {
				t.Fatal(err)
			}
			return int(v)
		}
		size, nameLen := field(6), field(11)
		name := string(b[off+110 : off+110+nameLen-1])
		data := align(off + 110 + nameLen)
		if name == "TRAILER!!!" {
			return out
		}
		out[name] = string(b[data : data+size])
		off = align(data + size)
	}
}

func TestCPIORoundTrip(t *testing.T) {
	var buf bytes.Buffer
	c := newCPIOWriter(&buf)
	files := map[string]string{"/a/b/c.txt": "hello", "/a/d": "", "/e": "xyz1"}
	for _, k := range sortedKeys(files) {
		if err := c.addBytes(k, 0o644, []byte(files[k])); err != nil {
			t.Fatal(err)
		}
	}
	if err := c.close(); err != nil {
		t.Fatal(err)
	}
	got := readCPIO(t, buf.Bytes())
	for k, v := range files {
		if got[strings.TrimPrefix(k, "/")] != v {
			t.Errorf("%s = %q, want %q", k, got[strings.TrimPrefix(k, "/")], v)
		}
	}
	if _, ok := got["a/b"]; !ok {
		t.Errorf("parent directory a/b missing: %v", got)
	}
}

// TestRunReportsStatusAndKVM boots the test host and checks that the
// command sees /dev/kvm and that its exit status comes back.
func TestRunReportsStatusAndKVM(t *testing.T) {
	dir, _ := filepath.Abs("../../build/kvmhost")
	if err := Available(dir); err != nil {
		t.Skipf("test host not prepared here: %v", err)
	}
	if testing.Short() {
		t.Skip("boots a QEMU test host (~15 s); skipped in -short")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	var out bytes.Buffer
	status, err := Run(ctx, Config{
		Dir:     dir,
		Args:    []string{"sh", "-c", "test -c /dev/kvm && echo have-kvm; echo \"$MARK\"; exit 7"},
		Env:     []string{"MARK=it's marked"},
		WorkDir: "/tmp/wd",
		Output:  &out,
	})
	if err != nil {
		t.Fatalf("Run: %v\n%s", err, out.String())
	}
	if status != 7 {
		t.Errorf("status = %d, want 7", status)
	}
	for _, want := range []string{"have-kvm", "it's marked"} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("output lacks %q:\n%s", want, out.String())
		}
	}
}

func TestSplitRunFlag(t *testing.T) {
	for _, tc := range []struct {
		args    []string
		rest    []string
		pattern string
	}{
		{[]string{"-test.v=true", "-test.timeout=40m0s"}, []string{"-test.timeout=40m0s"}, ""},
		{[]string{"-test.run=^TestA$", "-test.count=1"}, []string{"-test.count=1"}, "^TestA$"},
		{[]string{"-test.run", "TestB", "-test.v"}, nil, "TestB"},
		{[]string{"--test.run=X/y"}, nil, "X/y"},
	} {
		rest, pattern := splitRunFlag(tc.args)
		if strings.Join(rest, " ") != strings.Join(tc.rest, " ") || pattern != tc.pattern {
			t.Errorf("splitRunFlag(%q) = %q, %q; want %q, %q", tc.args, rest, pattern, tc.rest, tc.pattern)
		}
	}
}

func TestProgressFollowsTopLevelTests(t *testing.T) {
	p := newProgress(time.Minute)
	for _, l := range []string{
		"=== RUN   TestA",
		"=== RUN   TestA/sub",
		"    --- PASS: TestA/sub (0.1s)",
		"--- PASS: TestA (1.00s)",
		"=== RUN   TestB",
		"--- FAIL: TestB (2.00s)",
		"=== RUN   TestC",
		"=== RUN   TestC/x",
		"--- PASS: TestC/x (0.1s)", // a subtest line never ends its parent
	} {
		p.line(l)
	}
	running, finished, failed := p.state()
	if running != "TestC" || !finished["TestA"] || !finished["TestB"] || finished["TestC"] || !failed {
		t.Errorf("running %q, finished %v, failed %v", running, finished, failed)
	}
	if p.overdue(time.Now()) {
		t.Error("overdue right after a test started")
	}
	if !p.overdue(time.Now().Add(2 * time.Minute)) {
		t.Error("not overdue after its budget")
	}
}

// TestRunSplitRecoversFromWedgedHost plays test hosts that wedge in a test
// (no output until killed) and checks that unfinished tests run again in a
// fresh host, the wedged one first, and that a test wedging twice fails.
func TestRunSplitRecoversFromWedgedHost(t *testing.T) {
	for _, tc := range []struct {
		name   string
		wedges map[string]int // test -> boots in which it wedges
		fail   string         // a test that fails normally
		want   int
		boots  int
	}{
		{"clean", nil, "", 0, 1},
		{"wedge once", map[string]int{"TestB": 1}, "", 0, 2},
		{"wedge twice", map[string]int{"TestB": 2}, "", 1, 3},
		{"failure before wedge", map[string]int{"TestC": 1}, "TestA", 1, 2},
	} {
		t.Run(tc.name, func(t *testing.T) {
			boots := 0
			wedged := map[string]int{}
			exec := func(ctx context.Context, args []string, watch func(string)) (int, error) {
				boots++
				run := args[len(args)-1]
				status := 0
				for _, name := range []string{"TestA", "TestB", "TestC"} {
					if !strings.Contains(run, name) {
						continue
					}
					watch("=== RUN   " + name)
					if wedged[name] < tc.wedges[name] {
						wedged[name]++
						<-ctx.Done()
						return -1, ctx.Err()
					}
					if name == tc.fail {
						watch("--- FAIL: " + name + " (0.01s)")
						status = 1
						continue
					}
					watch("--- PASS: " + name + " (0.01s)")
				}
				return status, nil
			}
			got := runSplit(exec, 50*time.Millisecond, "self", nil, []string{"TestA", "TestB", "TestC"})
			if got != tc.want || boots != tc.boots {
				t.Errorf("status %d after %d boots; want %d after %d", got, boots, tc.want, tc.boots)
			}
		})
	}
}

// TestExecCancelReportsCPU cancels a test host that is busy forever and
// checks that it is killed and says where its CPU was.
func TestExecCancelReportsCPU(t *testing.T) {
	dir, _ := filepath.Abs("../../build/kvmhost")
	if err := Available(dir); err != nil {
		t.Skipf("test host not prepared here: %v", err)
	}
	if testing.Short() {
		t.Skip("boots a QEMU test host; skipped in -short")
	}
	var out bytes.Buffer
	h, err := Prepare(Config{Dir: dir, Output: &out, WorkDir: "/tmp"})
	if err != nil {
		t.Fatal(err)
	}
	defer h.Close()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	watch := func(line string) {
		if strings.Contains(line, "spinning") {
			cancel()
		}
	}
	start := time.Now()
	status, err := h.Exec(ctx, []string{"sh", "-c", "echo spinning; while :; do :; done"}, watch)
	if err == nil {
		t.Fatalf("Exec returned status %d, want a cancellation error", status)
	}
	if time.Since(start) > 2*time.Minute {
		t.Errorf("cancel took %v", time.Since(start))
	}
	if !strings.Contains(out.String(), "test host CPU when cancelled") || !strings.Contains(out.String(), "RIP=") {
		t.Errorf("no CPU state in output:\n%s", out.String())
	}
}

// TestRunSplitRerunsRepeatedTest covers -test.count: a test that passed
// once and wedges in its next round is not taken for finished.
func TestRunSplitRerunsRepeatedTest(t *testing.T) {
	boots := 0
	exec := func(ctx context.Context, args []string, watch func(string)) (int, error) {
		boots++
		watch("=== RUN   TestA")
		watch("--- PASS: TestA (0.01s)")
		watch("=== RUN   TestA")
		if boots == 1 {
			<-ctx.Done()
			return -1, ctx.Err()
		}
		watch("--- PASS: TestA (0.01s)")
		return 0, nil
	}
	if got := runSplit(exec, 50*time.Millisecond, "self", []string{"-test.count=2"}, []string{"TestA"}); got != 0 || boots != 2 {
		t.Errorf("status %d after %d boots; want 0 after 2", got, boots)
	}
}

func TestLivenessNudgesThenGivesUp(t *testing.T) {
	t0 := time.Unix(1000, 0)
	at := func(d time.Duration) time.Time { return t0.Add(d) }
	type step struct {
		tick         bool
		at           time.Duration
		nudge, wedge bool
	}
	for _, tc := range []struct {
		name  string
		steps []step
	}{
		{"never ticks", []step{
			{at: bootGrace - time.Second},
			{at: bootGrace + time.Second, nudge: true},
			{at: bootGrace + time.Second + wakeGrace/2},
			{at: bootGrace + 2*time.Second + wakeGrace, wedge: true},
		}},
		{"ticks steadily", []step{
			{tick: true, at: 10 * time.Second},
			{at: 10*time.Second + silence - time.Second},
			{tick: true, at: 10*time.Second + silence},
			{at: 10*time.Second + 2*silence - time.Second},
		}},
		{"wakes after a nudge", []step{
			{tick: true, at: 10 * time.Second},
			{at: 11*time.Second + silence, nudge: true},
			{tick: true, at: 12*time.Second + silence},
			{at: 13*time.Second + silence},
			{at: 12*time.Second + 2*silence - time.Second},
			{at: 13*time.Second + 2*silence, nudge: true},
			{at: 14*time.Second + 2*silence + wakeGrace, wedge: true},
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			l := newLiveness(t0)
			for i, s := range tc.steps {
				if s.tick {
					l.tick(at(s.at))
				}
				nudge, wedge, _ := l.check(at(s.at))
				if nudge != s.nudge || wedge != s.wedge {
					t.Fatalf("step %d at %v: nudge %v wedge %v, want %v %v", i, s.at, nudge, wedge, s.nudge, s.wedge)
				}
			}
		})
	}
}
