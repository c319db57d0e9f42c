package main

import (
	"io"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"kvmstack/vmm"
)

func TestDeviceFlags(t *testing.T) {
	dir := t.TempDir()
	img := filepath.Join(dir, "disk.img")
	if err := os.WriteFile(img, make([]byte, 4096), 0o644); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name  string
		args  []string
		disks []vmm.DiskConfig
		nets  []vmm.NetConfig
		rng   bool
		err   string
	}{
		{"rng", []string{"--rng"}, nil, nil, true, ""},
		{"disk", []string{"--disk", "path=" + img}, []vmm.DiskConfig{{Path: img}}, nil, false, ""},
		{"twoDisks", []string{"--disk", "path=" + img + ",readonly=on,id=root", "--disk", "path=" + img},
			[]vmm.DiskConfig{{Path: img, ReadOnly: true, ID: "root"}, {Path: img}}, nil, false, ""},
		{"net", []string{"--net", "tap=tap0,mac=52:54:00:12:34:56"}, nil, []vmm.NetConfig{{Tap: "tap0", MAC: "52:54:00:12:34:56"}}, false, ""},
		{"netNetns", []string{"--net", "tap=ktp-1,netns=/var/run/netns/dev"}, nil, []vmm.NetConfig{{Tap: "ktp-1", Netns: "/var/run/netns/dev"}}, false, ""},
		{"diskNoPath", []string{"--disk", "readonly=on"}, nil, nil, false, "path= is required"},
		{"diskUnknownKey", []string{"--disk", "path=" + img + ",cache=none"}, nil, nil, false, "unknown key"},
		{"diskBadReadonly", []string{"--disk", "path=" + img + ",readonly=maybe"}, nil, nil, false, "on or off"},
		{"diskMissing", []string{"--disk", "path=/nonexistent.img"}, nil, nil, false, "/nonexistent.img"},
		{"diskIDTooLong", []string{"--disk", "path=" + img + ",id=" + strings.Repeat("x", 21)}, nil, nil, false, "longer than 20"},
		{"diskRateLimit", []string{"--disk", "path=" + img + ",bw=2M,iops=500,iops_burst=100"}, []vmm.DiskConfig{{Path: img, RateLimit: limits(t, "bw=2M", "iops=500", "iops_burst=100")}}, nil, false, ""},
		{"diskBadRate", []string{"--disk", "path=" + img + ",bw=fast"}, nil, nil, false, "bw"},
		{"netRateLimit", []string{"--net", "tap=tap0,bw=1M"}, nil, []vmm.NetConfig{{Tap: "tap0", RateLimit: limits(t, "bw=1M")}}, false, ""},
		{"netNoTap", []string{"--net", "mac=52:54:00:12:34:56"}, nil, nil, false, "tap= is required"},
		{"netBadMAC", []string{"--net", "tap=tap0,mac=zz"}, nil, nil, false, "MAC"},
		{"netMulticastMAC", []string{"--net", "tap=tap0,mac=01:00:5e:00:00:01"}, nil, nil, false, "multicast"},
		{"netDupKey", []string{"--net", "tap=a,tap=b"}, nil, nil, false, "twice"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			o, err := parseFlags(append([]string{"--kernel", "/etc/hostname"}, tt.args...), io.Discard)
			if tt.err != "" {
				if err == nil || !strings.Contains(err.Error(), tt.err) {
					t.Fatalf("error %v, want one containing %q", err, tt.err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(o.cfg.Disks, tt.disks) || !reflect.DeepEqual(o.cfg.Nets, tt.nets) || o.cfg.RNG != tt.rng {
				t.Fatalf("disks %+v nets %+v rng %v", o.cfg.Disks, o.cfg.Nets, o.cfg.RNG)
			}
		})
	}
}

func TestConfigFile(t *testing.T) {
	dir := t.TempDir()
	img := filepath.Join(dir, "disk.img")
	if err := os.WriteFile(img, make([]byte, 4096), 0o644); err != nil {
		t.Fatal(err)
	}
	write := func(s string) string {
		p := filepath.Join(dir, "vm.json")
		if err := os.WriteFile(p, []byte(s), 0o644); err != nil {
			t.Fatal(err)
		}
		return p
	}
	good := write(`{"kernel": "/etc/hostname", "cpus": 2, "memory": "256M", "rng": true,
		"disks": [{"path": "` + img + `", "readonly": true, "id": "root"}], "nets": [{"tap": "tap0"}]}`)
	o, err := parseFlags([]string{"--config", good, "--cpus", "1", "--disk", "path=" + img}, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	want := []vmm.DiskConfig{{Path: img, ReadOnly: true, ID: "root"}, {Path: img}}
	if o.cfg.Kernel != "/etc/hostname" || o.cfg.CPUs != 1 || o.cfg.MemoryBytes != 256<<20 || !o.cfg.RNG ||
		!reflect.DeepEqual(o.cfg.Disks, want) || len(o.cfg.Nets) != 1 {
		t.Fatalf("config %+v", o.cfg)
	}
	for _, bad := range []struct{ json, err string }{
		{`{"kernel": "/etc/hostname", "disk": []}`, "unknown field"},
		{`{"kernel": "/etc/hostname"} {}`, "after the JSON"},
		{`{"kernel": 3}`, "cannot unmarshal"},
	} {
		if _, err := parseFlags([]string{"--config", write(bad.json)}, io.Discard); err == nil || !strings.Contains(err.Error(), bad.err) {
			t.Errorf("config %s: error %v, want %q", bad.json, err, bad.err)
		}
	}
}

// limits builds the RateLimit the given key=value options describe.
func limits(t *testing.T, opts ...string) vmm.RateLimit {
	t.Helper()
	var l vmm.RateLimit
	for _, o := range opts {
		k, v, _ := strings.Cut(o, "=")
		if err := l.SetOption(k, v); err != nil {
			t.Fatal(err)
		}
	}
	return l
}
