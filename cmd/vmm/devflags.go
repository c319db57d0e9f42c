package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"strings"

	"kvmstack/virtio/ratelimit"
	"kvmstack/vmm"
)

// diskFlags collects repeated --disk path=PATH[,readonly=on][,id=ID] with
// the rate-limit keys (ratelimit.OptionKeys: bw=2M,iops=500,...).
type diskFlags []vmm.DiskConfig

func (d *diskFlags) String() string { return fmt.Sprint(len(*d), " disks") }

func (d *diskFlags) Set(s string) error {
	kv, err := parseKV(s, append([]string{"path", "readonly", "id"}, ratelimit.OptionKeys...)...)
	if err != nil {
		return err
	}
	disk := vmm.DiskConfig{Path: kv["path"], ID: kv["id"]}
	if err := setRateLimit(&disk.RateLimit, kv); err != nil {
		return fmt.Errorf("%q: %w", s, err)
	}
	if disk.Path == "" {
		return fmt.Errorf("%q: path= is required", s)
	}
	if ro, ok := kv["readonly"]; ok {
		if disk.ReadOnly, err = parseOnOff(ro); err != nil {
			return fmt.Errorf("%q: readonly: %w", s, err)
		}
	}
	*d = append(*d, disk)
	return nil
}

// netFlags collects repeated --net tap=NAME[,mac=MAC] with the rate-limit
// keys, which limit each direction.
type netFlags []vmm.NetConfig

func (n *netFlags) String() string { return fmt.Sprint(len(*n), " nets") }

func (n *netFlags) Set(s string) error {
	kv, err := parseKV(s, append([]string{"tap", "mac", "netns"}, ratelimit.OptionKeys...)...)
	if err != nil {
		return err
	}
	if kv["tap"] == "" {
		return fmt.Errorf("%q: tap= is required", s)
	}
	nc := vmm.NetConfig{Tap: kv["tap"], MAC: kv["mac"], Netns: kv["netns"]}
	if err := setRateLimit(&nc.RateLimit, kv); err != nil {
		return fmt.Errorf("%q: %w", s, err)
	}
	*n = append(*n, nc)
	return nil
}

// setRateLimit applies the rate-limit keys present in kv.
func setRateLimit(l *vmm.RateLimit, kv map[string]string) error {
	for _, k := range ratelimit.OptionKeys {
		if v, ok := kv[k]; ok {
			if err := l.SetOption(k, v); err != nil {
				return err
			}
		}
	}
	return nil
}

// parseKV splits k=v,k=v, accepting only the given keys, each once.
func parseKV(s string, keys ...string) (map[string]string, error) {
	kv := map[string]string{}
	for _, part := range strings.Split(s, ",") {
		k, v, ok := strings.Cut(part, "=")
		if !ok {
			return nil, fmt.Errorf("%q: want key=value, got %q", s, part)
		}
		known := false
		for _, want := range keys {
			known = known || k == want
		}
		if !known {
			return nil, fmt.Errorf("%q: unknown key %q (want %s)", s, k, strings.Join(keys, ", "))
		}
		if _, dup := kv[k]; dup {
			return nil, fmt.Errorf("%q: %s given twice", s, k)
		}
		kv[k] = v
	}
	return kv, nil
}

func parseOnOff(s string) (bool, error) {
	switch s {
	case "on", "true", "yes", "1":
		return true, nil
	case "off", "false", "no", "0":
		return false, nil
	}
	return false, fmt.Errorf("%q: want on or off", s)
}

// fileConfig is the --config file: the flags' settings as JSON.
type fileConfig struct {
	Kernel  string           `json:"kernel"`
	Initrd  string           `json:"initrd"`
	Cmdline string           `json:"cmdline"`
	CPUs    int              `json:"cpus"`
	Memory  string           `json:"memory"`
	Disks   []vmm.DiskConfig `json:"disks"`
	Nets    []vmm.NetConfig  `json:"nets"`
	RNG     bool             `json:"rng"`
}

// loadConfigFile reads path strictly: unknown fields and trailing data are
// errors, so a typo never silently drops a setting.
func loadConfigFile(path string) (*fileConfig, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	var fc fileConfig
	if err := dec.Decode(&fc); err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	if dec.More() {
		return nil, fmt.Errorf("%s: data after the JSON object", path)
	}
	return &fc, nil
}

// applyFile fills what the command line did not set from the file; the
// file's disks and nets come before the command line's.
func applyFile(o *options, fc *fileConfig, set map[string]bool, mem *string) {
	if !set["kernel"] && fc.Kernel != "" {
		o.cfg.Kernel = fc.Kernel
	}
	if !set["initrd"] && fc.Initrd != "" {
		o.cfg.Initrd = fc.Initrd
	}
	if !set["cmdline"] && fc.Cmdline != "" {
		o.cfg.Cmdline = fc.Cmdline
	}
	if !set["cpus"] && fc.CPUs != 0 {
		o.cfg.CPUs = fc.CPUs
	}
	if !set["memory"] && fc.Memory != "" {
		*mem = fc.Memory
	}
	if !set["rng"] {
		o.cfg.RNG = fc.RNG
	}
	o.cfg.Disks = append(append([]vmm.DiskConfig(nil), fc.Disks...), o.cfg.Disks...)
	o.cfg.Nets = append(append([]vmm.NetConfig(nil), fc.Nets...), o.cfg.Nets...)
}
