package plumb

import (
	"errors"
	"fmt"
	"io/fs"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strings"
)

// linkSysctl is one per-interface setting under /proc/sys/net.
type linkSysctl struct {
	family string // "ipv4" or "ipv6"
	key    string
	value  string
}

// The host stack has no business on an overlay network: a bridge carries
// no address, so IPv4 received on it must never be routed onward (per
// device forwarding off, re-checked on every pass because toggling
// net.ipv4.conf.all.forwarding rewrites every device's value), and IPv6 is
// off on every link, so the host neither answers guests nor floods its own
// link-local chatter (router solicitations, MLD) to every remote.
var (
	bridgeSysctls = []linkSysctl{{"ipv4", "forwarding", "0"}, {"ipv6", "disable_ipv6", "1"}}
	portSysctls   = []linkSysctl{{"ipv6", "disable_ipv6", "1"}}
)

// sysctls applies settings (by link name), inside the namespace: each
// namespace has its own /proc/sys/net, chosen by the thread that opens it,
// so all of them are done in one trip onto such a thread. A family the
// kernel lacks (no /proc/sys/net/ipv6) is skipped.
func (r *Reconciler) sysctls(settings map[string][]linkSysctl) error {
	type change struct{ name, setting string }
	var changed []change
	names := slices.Sorted(maps.Keys(settings))
	err := r.ns.Do(func() error {
		var errs []error
		for _, name := range names {
			for _, s := range settings[name] {
				p := filepath.Join("/proc/sys/net", s.family, "conf", name, s.key)
				b, err := os.ReadFile(p)
				if errors.Is(err, fs.ErrNotExist) && s.family == "ipv6" {
					if _, err := os.Stat("/proc/sys/net/ipv6"); errors.Is(err, fs.ErrNotExist) {
						continue
					}
				}
				if err != nil {
					errs = append(errs, fmt.Errorf("read %s: %w", p, err))
					continue
				}
				if strings.TrimSpace(string(b)) == s.value {
					continue
				}
				if err := os.WriteFile(p, []byte(s.value), 0o644); err != nil {
					errs = append(errs, fmt.Errorf("write %s: %w", p, err))
					continue
				}
				changed = append(changed, change{name, s.family + "." + s.key + "=" + s.value})
			}
		}
		return errors.Join(errs...)
	})
	for _, c := range changed {
		r.log.Info("set link sysctl", "name", c.name, "setting", c.setting)
	}
	return err
}
