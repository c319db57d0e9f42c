package cluster

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"kvmstack/orchestrator/api"
	"kvmstack/orchestrator/client"
	"kvmstack/orchestrator/state"
)

func rawRequest(t *testing.T, addr, method, path, token, ctype string, body io.Reader) (int, string) {
	t.Helper()
	req, err := http.NewRequest(method, "http://"+addr+path, body)
	if err != nil {
		t.Fatal(err)
	}
	if token != "" {
		req.Header.Set(api.HeaderToken, token)
	}
	if ctype != "" {
		req.Header.Set("Content-Type", ctype)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

func TestSecurity(t *testing.T) {
	c := sharedCluster(t)
	c.dumpLogsOnFailure(t)
	ctx := context.Background()
	adm := c.clientFor(0)
	if _, err := adm.Do(ctx, http.MethodPost, "/v1/flavors", nil, api.FlavorRequest{Name: "sec-small", VCPUs: 1, MemoryMB: 128}, nil); err != nil {
		t.Fatal(err)
	}
	alice := newProjectUser(t, c, 1, "sec-a", state.RoleMember)
	bob := newProjectUser(t, c, 2, "sec-b", state.RoleMember)
	reader := newProjectUser(t, c, 0, "sec-a-ro", state.RoleReader)
	// The reader is a reader of project sec-a, not of its own project.
	if _, err := adm.Do(ctx, http.MethodPost, "/v1/roles", nil, api.RoleRequest{User: "sec-a-ro-reader", Project: "sec-a", Role: state.RoleReader}, nil); err != nil {
		t.Fatal(err)
	}
	reader.Token = ""
	if _, err := reader.Login(ctx, "sec-a-ro-reader", "password-sec-a-ro-reader", "sec-a"); err != nil {
		t.Fatal(err)
	}
	var aliceInst []*state.Instance
	if _, err := alice.Do(ctx, http.MethodPost, "/v1/instances", nil, api.InstanceRequest{Name: "secret", Flavor: "sec-small"}, &aliceInst); err != nil {
		t.Fatal(err)
	}
	data := []byte(strings.Repeat("alice's image ", 100))
	sum := sha256.Sum256(data)
	img, err := alice.UploadImage(ctx, "alice-disk", state.ImageDisk, "", hex.EncodeToString(sum[:]), bytes.NewReader(data), int64(len(data)), nil)
	if err != nil {
		t.Fatal(err)
	}
	addr := c.procs[0].http

	t.Run("no token is 401", func(t *testing.T) {
		for _, p := range []string{"/v1/instances", "/v1/images", "/v1/flavors", "/v1/projects"} {
			if code, _ := rawRequest(t, addr, http.MethodGet, p, "", "", nil); code != http.StatusUnauthorized {
				t.Errorf("GET %s without token: %d", p, code)
			}
		}
	})
	t.Run("forged token is 401", func(t *testing.T) {
		forged := alice.Token[:len(alice.Token)-4] + "AAAA"
		if code, _ := rawRequest(t, addr, http.MethodGet, "/v1/instances", forged, "", nil); code != http.StatusUnauthorized {
			t.Errorf("forged token: %d", code)
		}
	})
	t.Run("expired token is 401", func(t *testing.T) {
		var tr api.TokenResponse
		if _, err := client.New(addr, "").Do(ctx, http.MethodPost, "/v1/auth/tokens", nil,
			api.TokenRequest{User: "sec-a-member", Password: "password-sec-a-member", Project: "sec-a", TTL: "1s"}, &tr); err != nil {
			t.Fatal(err)
		}
		if code, _ := rawRequest(t, addr, http.MethodGet, "/v1/instances", tr.Token, "", nil); code != http.StatusOK {
			t.Fatalf("fresh short token: %d", code)
		}
		waitFor(t, "token expiry", 10*time.Second, func() bool { return time.Now().After(tr.ExpiresAt) })
		if code, _ := rawRequest(t, addr, http.MethodGet, "/v1/instances", tr.Token, "", nil); code != http.StatusUnauthorized {
			t.Errorf("expired token: %d", code)
		}
	})
	t.Run("revoked token is 401 on every server", func(t *testing.T) {
		cl := client.New(c.procs[1].http, "")
		if _, err := cl.Login(ctx, "sec-b-member", "password-sec-b-member", "sec-b"); err != nil {
			t.Fatal(err)
		}
		idx, err := cl.Do(ctx, http.MethodDelete, "/v1/auth/tokens", nil, nil, nil)
		if err != nil {
			t.Fatal(err)
		}
		for i, p := range c.procs {
			// Wait for the revocation to be applied locally, then use the
			// token against this server's own state.
			waitFor(t, fmt.Sprintf("server %d to apply index %d", i, idx), 30*time.Second, func() bool {
				st, err := c.status(i)
				return err == nil && atoi(st.Raft["applied_index"]) >= idx
			})
			if code, _ := rawRequest(t, p.http, http.MethodGet, "/v1/instances?stale", cl.Token, "", nil); code != http.StatusUnauthorized {
				t.Errorf("revoked token on server %d: %d", i, code)
			}
		}
	})
	t.Run("other project cannot see or touch instances and images", func(t *testing.T) {
		var list []*state.Instance
		if _, err := bob.Do(ctx, http.MethodGet, "/v1/instances", nil, nil, &list); err != nil {
			t.Fatal(err)
		}
		for _, in := range list {
			if in.ProjectID != "" && in.ID == aliceInst[0].ID {
				t.Fatal("bob sees alice's instance")
			}
		}
		for _, p := range []string{"/v1/instances/" + aliceInst[0].ID, "/v1/images/" + img.ID, "/v1/images/" + img.ID + "/file"} {
			if _, err := bob.Do(ctx, http.MethodGet, p, nil, nil, nil); !client.IsStatus(err, http.StatusNotFound) {
				t.Errorf("bob GET %s: %v", p, err)
			}
		}
		if _, err := bob.Do(ctx, http.MethodDelete, "/v1/instances/"+aliceInst[0].ID, nil, nil, nil); !client.IsStatus(err, http.StatusNotFound) {
			t.Errorf("bob deleting alice's instance: %v", err)
		}
		var imgs []*state.Image
		if _, err := bob.Do(ctx, http.MethodGet, "/v1/images", nil, nil, &imgs); err != nil || len(imgs) != 0 {
			t.Errorf("bob lists images %v: %v", imgs, err)
		}
		if _, err := bob.Do(ctx, http.MethodPost, "/v1/instances", nil, api.InstanceRequest{Name: "steal", Flavor: "sec-small", Image: img.ID}, nil); !client.IsStatus(err, http.StatusNotFound) {
			t.Errorf("bob booting alice's private image: %v", err)
		}
	})
	t.Run("reader cannot write", func(t *testing.T) {
		if _, err := reader.Do(ctx, http.MethodGet, "/v1/instances/"+aliceInst[0].ID, nil, nil, nil); err != nil {
			t.Fatalf("reader cannot read its project: %v", err)
		}
		if _, err := reader.Do(ctx, http.MethodPost, "/v1/instances", nil, api.InstanceRequest{Name: "x", Flavor: "sec-small"}, nil); !client.IsStatus(err, http.StatusForbidden) {
			t.Errorf("reader create: %v", err)
		}
		if _, err := reader.Do(ctx, http.MethodDelete, "/v1/instances/"+aliceInst[0].ID, nil, nil, nil); !client.IsStatus(err, http.StatusForbidden) {
			t.Errorf("reader delete: %v", err)
		}
		if _, err := alice.Do(ctx, http.MethodPost, "/v1/flavors", nil, api.FlavorRequest{Name: "evil", VCPUs: 1, MemoryMB: 128}, nil); !client.IsStatus(err, http.StatusForbidden) {
			t.Errorf("member creating a flavor: %v", err)
		}
		if _, err := alice.Do(ctx, http.MethodPost, "/v1/hosts", nil, api.HostRequest{Name: "evil", VCPUs: 1, MemoryMB: 128}, nil); !client.IsStatus(err, http.StatusForbidden) {
			t.Errorf("member registering a host: %v", err)
		}
	})
	t.Run("oversized and malformed bodies are 4xx", func(t *testing.T) {
		big := `{"name":"` + strings.Repeat("x", 2<<20) + `"}`
		cases := []struct {
			name, body string
			want       int
		}{
			{"oversized", big, http.StatusRequestEntityTooLarge},
			{"malformed", `{"name":`, http.StatusBadRequest},
			{"unknown field", `{"name":"a","flavor":"sec-small","admin":true}`, http.StatusBadRequest},
			{"trailing data", `{"name":"a","flavor":"sec-small"} {}`, http.StatusBadRequest},
			{"wrong type", `{"name":1}`, http.StatusBadRequest},
			{"bad name", `{"name":"../../etc","flavor":"sec-small"}`, http.StatusBadRequest},
		}
		for _, tc := range cases {
			for i, p := range c.procs {
				code, body := rawRequest(t, p.http, http.MethodPost, "/v1/instances", alice.Token, "application/json", strings.NewReader(tc.body))
				if code != tc.want || !strings.Contains(body, `"error"`) {
					t.Errorf("%s via server %d: %d %s", tc.name, i, code, body[:min(len(body), 200)])
				}
			}
		}
	})
	t.Run("wrong sha256 upload is rejected and nothing kept", func(t *testing.T) {
		payload := []byte("some bytes that do not match")
		wrong := strings.Repeat("ab", 32)
		for i := range c.procs {
			_, err := client.New(c.procs[i].http, alice.Token).UploadImage(ctx, "bad", state.ImageDisk, "", wrong, bytes.NewReader(payload), int64(len(payload)), nil)
			if !client.IsStatus(err, http.StatusBadRequest) {
				t.Errorf("wrong sha256 via server %d: %v", i, err)
			}
		}
		big := bytes.Repeat([]byte{1}, 2<<20)
		bsum := sha256.Sum256(big)
		if _, err := alice.UploadImage(ctx, "big", state.ImageDisk, "", hex.EncodeToString(bsum[:]), bytes.NewReader(big), int64(len(big)), nil); !client.IsStatus(err, http.StatusRequestEntityTooLarge) {
			t.Errorf("oversized upload: %v", err)
		}
		var imgs []*state.Image
		if _, err := alice.Do(ctx, http.MethodGet, "/v1/images", nil, nil, &imgs); err != nil {
			t.Fatal(err)
		}
		if len(imgs) != 1 || imgs[0].ID != img.ID {
			t.Errorf("images after rejected uploads: %+v", imgs)
		}
		for _, p := range c.procs {
			for _, d := range []string{wrong, hex.EncodeToString(bsum[:])} {
				if _, err := os.Stat(filepath.Join(p.dir, "data", "blobs", "sha256", d)); err == nil {
					t.Errorf("server %s kept rejected blob %s", p.name, d)
				}
			}
			tmp, _ := os.ReadDir(filepath.Join(p.dir, "data", "blobs", "tmp"))
			if len(tmp) != 0 {
				t.Errorf("server %s kept temporary upload files", p.name)
			}
		}
	})
	t.Run("key rotation keeps old tokens valid", func(t *testing.T) {
		if _, err := adm.Do(ctx, http.MethodPost, "/v1/auth/keys", nil, struct{}{}, nil); err != nil {
			t.Fatal(err)
		}
		if _, err := alice.Do(ctx, http.MethodGet, "/v1/instances", nil, nil, nil); err != nil {
			t.Errorf("token signed by the previous key: %v", err)
		}
		fresh := client.New(addr, "")
		if _, err := fresh.Login(ctx, "sec-a-member", "password-sec-a-member", "sec-a"); err != nil {
			t.Fatal(err)
		}
		if _, err := fresh.Do(ctx, http.MethodGet, "/v1/instances", nil, nil, nil); err != nil {
			t.Errorf("token signed by the new key: %v", err)
		}
	})
	t.Run("wrong password and foreign project login", func(t *testing.T) {
		if _, err := client.New(addr, "").Login(ctx, "sec-a-member", "wrong-password", "sec-a"); !client.IsStatus(err, http.StatusUnauthorized) {
			t.Errorf("wrong password: %v", err)
		}
		if _, err := client.New(addr, "").Login(ctx, "sec-a-member", "password-sec-a-member", "sec-b"); !client.IsStatus(err, http.StatusForbidden) {
			t.Errorf("login to a project without a role: %v", err)
		}
	})
}
