package main

import (
	"net/http"
	"net/url"

	"github.com/urfave/cli/v2"

	"kvmstack/orchestrator/api"
)

func networkCommand() *cli.Command {
	cmds := crud("/v1/networks", []string{"id", "name", "cidr", "gateway", "vni", "ports", "addresses"},
		[]cli.Flag{&cli.BoolFlag{Name: "all-projects", Usage: "every project (system admin)"}},
		func(c *cli.Context) url.Values {
			if c.Bool("all-projects") {
				return url.Values{"all_projects": {"1"}}
			}
			return nil
		})
	cmds = append(cmds,
		&cli.Command{Name: "create", ArgsUsage: "NAME", Flags: []cli.Flag{
			&cli.StringFlag{Name: "cidr", Usage: "IPv4 subnet, /16 to /29 (gateway = first address, DHCP = second)", Required: true},
		}, Action: create("/v1/networks", func(c *cli.Context) (any, error) {
			n, err := needArg(c, "name")
			return api.NetworkRequest{Name: n, CIDR: c.String("cidr")}, err
		})},
		&cli.Command{Name: "ports", Usage: "list a network's ports", ArgsUsage: "NETWORK", Action: func(c *cli.Context) error {
			n, err := needArg(c, "network")
			if err != nil {
				return err
			}
			var out []map[string]any
			if _, err := apiClient(c).Do(ctxOf(c), http.MethodGet, "/v1/networks/"+url.PathEscape(n)+"/ports", nil, nil, &out); err != nil {
				return err
			}
			return printResult(c, out, "id", "instance_id", "index", "mac", "ip")
		}})
	return &cli.Command{Name: "network", Usage: "manage tenant networks (names or ids)", Subcommands: cmds}
}

// instanceAddresses is a created instance with its NIC addresses in one
// column, so `instance create --network` shows what each guest got.
type instanceAddresses struct {
	api.InstanceView
	IPs string `json:"ips"`
}

func withAddresses(list []api.InstanceView) []instanceAddresses {
	out := make([]instanceAddresses, len(list))
	for i, v := range list {
		out[i].InstanceView = v
		for j, p := range v.Ports {
			if j > 0 {
				out[i].IPs += ","
			}
			out[i].IPs += p.IP
		}
	}
	return out
}
