package main

import (
	"fmt"
	"net/http"
	"net/url"

	"github.com/urfave/cli/v2"

	"kvmstack/orchestrator/api"
	"kvmstack/orchestrator/client"
	"kvmstack/orchestrator/state"
)

// evacuatedColumns are the table columns of an evacuation's result.
var evacuatedColumns = []string{"id", "name", "state", "host_id"}

func instanceEvacuateCommand() *cli.Command {
	return &cli.Command{Name: "evacuate", Usage: "rebuild an instance of a down host on another host (system admin)", ArgsUsage: "NAME_OR_ID",
		Action: func(c *cli.Context) error {
			arg, err := needArg(c, "instance")
			if err != nil {
				return err
			}
			cl := apiClient(c)
			id, err := resolveInstance(c, cl, arg)
			if err != nil {
				return err
			}
			res, err := cl.EvacuateInstance(ctxOf(c), id)
			if err != nil {
				return err
			}
			return printResult(c, evacuated(res), evacuatedColumns...)
		}}
}

func hostEvacuateCommand() *cli.Command {
	return &cli.Command{Name: "evacuate", Usage: "rebuild every instance of a down host on other hosts, all or none", ArgsUsage: "HOST",
		Action: func(c *cli.Context) error {
			h, err := needArg(c, "host")
			if err != nil {
				return err
			}
			res, err := apiClient(c).EvacuateHost(ctxOf(c), h)
			if err != nil {
				return err
			}
			return printResult(c, evacuated(res), evacuatedColumns...)
		}}
}

func evacuated(res *api.EvacuateResponse) []*state.Instance {
	out := make([]*state.Instance, 0, len(res.Instances))
	for _, v := range res.Instances {
		out = append(out, v.Instance)
	}
	return out
}

// resolveInstance turns an instance id or a unique name (in any project the
// token sees) into its id.
func resolveInstance(c *cli.Context, cl *client.Client, arg string) (string, error) {
	var in state.Instance
	_, err := cl.Do(ctxOf(c), http.MethodGet, "/v1/instances/"+url.PathEscape(arg), nil, nil, &in)
	if err == nil {
		return in.ID, nil
	}
	if !client.IsStatus(err, http.StatusNotFound) {
		return "", err
	}
	var list []*state.Instance
	if _, err := cl.Do(ctxOf(c), http.MethodGet, "/v1/instances", url.Values{"name": {arg}, "all_projects": {"1"}}, nil, &list); err != nil {
		return "", err
	}
	switch len(list) {
	case 0:
		return "", fmt.Errorf("instance %q not found", arg)
	case 1:
		return list[0].ID, nil
	}
	return "", fmt.Errorf("%d instances are named %q: give the id", len(list), arg)
}
