package vmm

import (
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"testing"
	"time"

	"kvmstack/virtio/block"
	"kvmstack/virtio/ratelimit"
)

func TestConfigRateLimitValidate(t *testing.T) {
	good := RateLimit{Bandwidth: TokenBucket{Size: 1 << 20, RefillTime: time.Second}}
	bad := RateLimit{Ops: TokenBucket{Size: 10}} // no refill time
	tests := []struct {
		name string
		cfg  Config
		ok   bool
	}{
		{"disk limited", Config{Disks: []DiskConfig{{Path: "d", RateLimit: good}}}, true},
		{"net limited", Config{Nets: []NetConfig{{Tap: "t0", RateLimit: good}}}, true},
		{"disk invalid", Config{Disks: []DiskConfig{{Path: "d", RateLimit: bad}}}, false},
		{"net invalid", Config{Nets: []NetConfig{{Tap: "t0", RateLimit: bad}}}, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tt.cfg.Kernel, tt.cfg.CPUs, tt.cfg.MemoryBytes = "vmlinux", 1, 128<<20
			err := tt.cfg.Validate()
			if (err == nil) != tt.ok {
				t.Fatalf("Validate = %v, want ok=%v", err, tt.ok)
			}
			if err != nil && (!errors.Is(err, ErrConfig) || !errors.Is(err, ratelimit.ErrInvalid)) {
				t.Fatalf("%v does not wrap ErrConfig and ratelimit.ErrInvalid", err)
			}
		})
	}
}

// TestDiskConfigJSON checks the rate_limit field of the --config file and
// the API bodies: Firecracker's form, left out when zero.
func TestDiskConfigJSON(t *testing.T) {
	in := `{"path":"/d.img","rate_limit":{"bandwidth":{"size":209715,"refill_time":100},"ops":{"size":50,"one_time_burst":1000,"refill_time":100}}}`
	var d DiskConfig
	if err := json.Unmarshal([]byte(in), &d); err != nil {
		t.Fatal(err)
	}
	want := RateLimit{
		Bandwidth: TokenBucket{Size: 209715, RefillTime: 100 * time.Millisecond},
		Ops:       TokenBucket{Size: 50, RefillTime: 100 * time.Millisecond, OneTimeBurst: 1000},
	}
	if d.RateLimit != want {
		t.Fatalf("decoded %+v, want %+v", d.RateLimit, want)
	}
	out, err := json.Marshal(d)
	if err != nil {
		t.Fatal(err)
	}
	if string(out) != in {
		t.Fatalf("marshal = %s, want %s", out, in)
	}
	plain, err := json.Marshal(NetConfig{Tap: "t0"})
	if err != nil {
		t.Fatal(err)
	}
	if string(plain) != `{"tap":"t0"}` {
		t.Fatalf("unlimited net marshals as %s", plain)
	}
	if err := json.Unmarshal([]byte(`{"path":"x","rate_limit":{"bandwidth":{"size":1}}}`), &d); !errors.Is(err, ratelimit.ErrInvalid) {
		t.Fatalf("invalid bucket: %v", err)
	}
}

// TestSetDiskRateLimit finds disks by index among the machine's devices.
func TestSetDiskRateLimit(t *testing.T) {
	var m Machine
	for range 2 {
		p := filepath.Join(t.TempDir(), "disk.img")
		if err := os.WriteFile(p, make([]byte, 4096), 0o600); err != nil {
			t.Fatal(err)
		}
		d, err := block.New(block.Config{Path: p})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { d.Close() })
		m.virtio = append(m.virtio, pciFunction{dev: d})
	}
	l := RateLimit{Ops: TokenBucket{Size: 7, RefillTime: time.Second}}
	if err := m.SetDiskRateLimit(1, l); err != nil {
		t.Fatal(err)
	}
	if got, err := m.DiskRateLimit(1); err != nil || got != l {
		t.Fatalf("disk 1 limit %+v, %v; want %+v", got, err, l)
	}
	if got, _ := m.DiskRateLimit(0); got.Enabled() {
		t.Fatalf("disk 0 limited too: %+v", got)
	}
	for _, i := range []int{-1, 2} {
		if err := m.SetDiskRateLimit(i, l); !errors.Is(err, ErrNoDevice) {
			t.Fatalf("disk %d: %v, want ErrNoDevice", i, err)
		}
	}
	if err := m.SetNetRateLimit(0, l); !errors.Is(err, ErrNoDevice) {
		t.Fatalf("net 0: %v, want ErrNoDevice", err)
	}
	if _, err := m.NetRateLimit(0); !errors.Is(err, ErrNoDevice) {
		t.Fatalf("net 0: %v, want ErrNoDevice", err)
	}
	if err := m.SetDiskRateLimit(0, RateLimit{Ops: TokenBucket{Size: 1}}); !errors.Is(err, ErrConfig) {
		t.Fatalf("invalid limit: %v, want ErrConfig", err)
	}
}
