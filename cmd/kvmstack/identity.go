package main

import (
	"net/http"
	"net/url"
	"os"

	"github.com/urfave/cli/v2"

	"kvmstack/orchestrator/api"
	"kvmstack/orchestrator/client"
	"kvmstack/orchestrator/state"
)

func loginCommand() *cli.Command {
	return &cli.Command{
		Name:  "login",
		Usage: "get a project-scoped token and cache it (mode 0600)",
		Flags: []cli.Flag{
			&cli.StringFlag{Name: "user", Aliases: []string{"u"}, Value: "admin"},
			&cli.StringFlag{Name: "password", Usage: "password (or KVMSTACK_PASSWORD, or stdin)"},
			&cli.StringFlag{Name: "project", Aliases: []string{"p"}, Value: "admin"},
			&cli.BoolFlag{Name: "print-token", Usage: "print the token (for KVMSTACK_TOKEN) instead of a summary"},
		},
		Action: func(c *cli.Context) error {
			pw, err := readPassword(c, "password")
			if err != nil {
				return err
			}
			cl := client.New(c.String("addr"), "")
			tr, err := cl.Login(ctxOf(c), c.String("user"), pw, c.String("project"))
			if err != nil {
				return err
			}
			if err := saveToken(tokenCache{Addr: c.String("addr"), Token: tr.Token, Project: tr.ProjectID, ExpiresAt: tr.ExpiresAt}); err != nil {
				return err
			}
			if c.Bool("print-token") {
				_, err = c.App.Writer.Write([]byte(tr.Token + "\n"))
				return err
			}
			tr.Token = ""
			return printResult(c, tr)
		},
	}
}

func logoutCommand() *cli.Command {
	return &cli.Command{
		Name:  "logout",
		Usage: "revoke the cached token and forget it",
		Action: func(c *cli.Context) error {
			_, err := apiClient(c).Do(ctxOf(c), http.MethodDelete, "/v1/auth/tokens", nil, nil, nil)
			if p, perr := cachePath(); perr == nil {
				os.Remove(p)
			}
			return err
		},
	}
}

func tokenCommand() *cli.Command {
	return &cli.Command{
		Name:  "token",
		Usage: "inspect, revoke tokens and rotate signing keys",
		Subcommands: []*cli.Command{
			{Name: "show", Action: func(c *cli.Context) error {
				var out api.TokenResponse
				if _, err := apiClient(c).Do(ctxOf(c), http.MethodGet, "/v1/auth/tokens", nil, nil, &out); err != nil {
					return err
				}
				return printResult(c, out)
			}},
			{Name: "rotate-key", Usage: "add a new signing key (old keys verify until their tokens expire)", Action: func(c *cli.Context) error {
				var out map[string]string
				if _, err := apiClient(c).Do(ctxOf(c), http.MethodPost, "/v1/auth/keys", nil, struct{}{}, &out); err != nil {
					return err
				}
				return printResult(c, out)
			}},
		},
	}
}

// crud builds list/show/delete subcommands for a collection.
func crud(path string, cols []string, listFlags []cli.Flag, listQuery func(*cli.Context) url.Values) []*cli.Command {
	return []*cli.Command{
		{Name: "list", Flags: listFlags, Action: func(c *cli.Context) error {
			var q url.Values
			if listQuery != nil {
				q = listQuery(c)
			}
			var out []map[string]any
			if _, err := apiClient(c).Do(ctxOf(c), http.MethodGet, path, q, nil, &out); err != nil {
				return err
			}
			return printResult(c, out, cols...)
		}},
		{Name: "show", ArgsUsage: "ID", Action: func(c *cli.Context) error {
			id, err := needArg(c, "id")
			if err != nil {
				return err
			}
			var out map[string]any
			if _, err := apiClient(c).Do(ctxOf(c), http.MethodGet, path+"/"+url.PathEscape(id), nil, nil, &out); err != nil {
				return err
			}
			return printResult(c, out)
		}},
		{Name: "delete", ArgsUsage: "ID", Action: func(c *cli.Context) error {
			id, err := needArg(c, "id")
			if err != nil {
				return err
			}
			_, err = apiClient(c).Do(ctxOf(c), http.MethodDelete, path+"/"+url.PathEscape(id), nil, nil, nil)
			return err
		}},
	}
}

func create(path string, body func(*cli.Context) (any, error)) cli.ActionFunc {
	return func(c *cli.Context) error {
		in, err := body(c)
		if err != nil {
			return err
		}
		var out any
		if _, err := apiClient(c).Do(ctxOf(c), http.MethodPost, path, nil, in, &out); err != nil {
			return err
		}
		return printResult(c, out)
	}
}

func projectCommand() *cli.Command {
	cmds := crud("/v1/projects", []string{"id", "name", "description"}, nil, nil)
	cmds = append(cmds,
		&cli.Command{Name: "create", ArgsUsage: "NAME", Flags: []cli.Flag{&cli.StringFlag{Name: "description"}},
			Action: create("/v1/projects", func(c *cli.Context) (any, error) {
				n, err := needArg(c, "name")
				return api.ProjectRequest{Name: n, Description: c.String("description")}, err
			})},
		&cli.Command{Name: "quota", Usage: "show or set a project's quota", ArgsUsage: "PROJECT", Flags: []cli.Flag{
			&cli.IntFlag{Name: "instances", Value: -2}, &cli.IntFlag{Name: "vcpus", Value: -2}, &cli.IntFlag{Name: "memory", Usage: "MiB", Value: -2},
		}, Action: func(c *cli.Context) error {
			p, err := needArg(c, "project")
			if err != nil {
				return err
			}
			cl := apiClient(c)
			path := "/v1/projects/" + url.PathEscape(p) + "/quota"
			if c.IsSet("instances") || c.IsSet("vcpus") || c.IsSet("memory") {
				var cur api.QuotaView
				if _, err := cl.Do(ctxOf(c), http.MethodGet, path, nil, nil, &cur); err != nil {
					return err
				}
				q := api.QuotaRequest{Instances: cur.Instances, VCPUs: cur.VCPUs, MemoryMB: cur.MemoryMB}
				if c.IsSet("instances") {
					q.Instances = c.Int("instances")
				}
				if c.IsSet("vcpus") {
					q.VCPUs = c.Int("vcpus")
				}
				if c.IsSet("memory") {
					q.MemoryMB = c.Int("memory")
				}
				if _, err := cl.Do(ctxOf(c), http.MethodPut, path, nil, q, nil); err != nil {
					return err
				}
			}
			var out api.QuotaView
			if _, err := cl.Do(ctxOf(c), http.MethodGet, path, nil, nil, &out); err != nil {
				return err
			}
			return printResult(c, out)
		}})
	return &cli.Command{Name: "project", Usage: "manage projects", Subcommands: cmds}
}

func userCommand() *cli.Command {
	cmds := crud("/v1/users", []string{"id", "name", "created_at"}, nil, nil)
	cmds = append(cmds, &cli.Command{Name: "create", ArgsUsage: "NAME", Flags: []cli.Flag{
		&cli.StringFlag{Name: "password", Usage: "password (or KVMSTACK_PASSWORD, or stdin)"},
		&cli.StringFlag{Name: "project", Usage: "give the user a role on this project"},
		&cli.StringFlag{Name: "role", Value: state.RoleMember},
	}, Action: create("/v1/users", func(c *cli.Context) (any, error) {
		n, err := needArg(c, "name")
		if err != nil {
			return nil, err
		}
		pw, err := readPassword(c, "password")
		return api.UserRequest{Name: n, Password: pw, Project: c.String("project"), Role: c.String("role")}, err
	})})
	// Users have no show endpoint: drop it.
	cmds = append(cmds[:1], cmds[2:]...)
	return &cli.Command{Name: "user", Usage: "manage users", Subcommands: cmds}
}

func roleCommand() *cli.Command {
	flags := []cli.Flag{&cli.StringFlag{Name: "user", Required: true}, &cli.StringFlag{Name: "project", Required: true}}
	return &cli.Command{Name: "role", Usage: "manage role assignments (admin, member, reader)", Subcommands: []*cli.Command{
		{Name: "assign", Flags: append(flags, &cli.StringFlag{Name: "role", Value: state.RoleMember}), Action: func(c *cli.Context) error {
			_, err := apiClient(c).Do(ctxOf(c), http.MethodPost, "/v1/roles", nil, api.RoleRequest{User: c.String("user"), Project: c.String("project"), Role: c.String("role")}, nil)
			return err
		}},
		{Name: "unassign", Flags: flags, Action: func(c *cli.Context) error {
			_, err := apiClient(c).Do(ctxOf(c), http.MethodDelete, "/v1/roles/"+url.PathEscape(c.String("user"))+"/"+url.PathEscape(c.String("project")), nil, nil, nil)
			return err
		}},
		{Name: "list", Flags: []cli.Flag{&cli.StringFlag{Name: "project"}}, Action: func(c *cli.Context) error {
			var out []map[string]any
			q := url.Values{}
			if p := c.String("project"); p != "" {
				q.Set("project", p)
			}
			if _, err := apiClient(c).Do(ctxOf(c), http.MethodGet, "/v1/roles", q, nil, &out); err != nil {
				return err
			}
			return printResult(c, out, "user_id", "project_id", "role")
		}},
	}}
}
