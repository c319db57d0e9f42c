package api

// routes registers every endpoint with its policy action; the action is
// checked before the handler runs.
func (s *Server) routes() {
	s.handle("POST /v1/auth/tokens", "auth:token:create", 0, s.createToken)
	s.handle("GET /v1/auth/tokens", "auth:token:show", local, s.showToken)
	s.handle("DELETE /v1/auth/tokens", "auth:token:revoke", 0, s.revokeToken)
	s.handle("POST /v1/auth/keys", "auth:key:rotate", 0, s.rotateKey)

	s.handle("GET /v1/projects", "project:list", 0, s.listProjects)
	s.handle("POST /v1/projects", "project:create", 0, s.createProject)
	s.handle("GET /v1/projects/{id}", "auth:token:show", 0, s.showProject)
	s.handle("DELETE /v1/projects/{id}", "project:delete", 0, s.deleteProject)
	s.handle("GET /v1/projects/{id}/quota", "quota:show", 0, s.showQuota)
	s.handle("PUT /v1/projects/{id}/quota", "quota:set", 0, s.setQuota)

	s.handle("GET /v1/users", "user:list", 0, s.listUsers)
	s.handle("POST /v1/users", "user:create", 0, s.createUser)
	s.handle("DELETE /v1/users/{id}", "user:delete", 0, s.deleteUser)
	s.handle("GET /v1/roles", "role:list", 0, s.listRoles)
	s.handle("POST /v1/roles", "role:assign", 0, s.assignRole)
	s.handle("DELETE /v1/roles/{user}/{project}", "role:unassign", 0, s.unassignRole)

	s.handle("GET /v1/flavors", "flavor:list", 0, s.listFlavors)
	s.handle("POST /v1/flavors", "flavor:create", 0, s.createFlavor)
	s.handle("GET /v1/flavors/{id}", "flavor:list", 0, s.showFlavor)
	s.handle("DELETE /v1/flavors/{id}", "flavor:delete", 0, s.deleteFlavor)

	s.handle("GET /v1/hosts", "host:list", 0, s.listHosts)
	s.handle("POST /v1/hosts", "host:register", 0, s.registerHost)
	s.handle("GET /v1/hosts/{id}", "host:list", 0, s.showHost)
	s.handle("DELETE /v1/hosts/{id}", "host:delete", 0, s.deleteHost)
	s.handle("POST /v1/hosts/{id}/heartbeat", "host:heartbeat", 0, s.heartbeat)
	s.handle("POST /v1/hosts/{id}/enable", "host:update", 0, s.enableHost(true))
	s.handle("POST /v1/hosts/{id}/disable", "host:update", 0, s.enableHost(false))
	s.handle("POST /v1/hosts/{id}/evacuate", "host:update", 0, s.evacuateHost)

	s.handle("GET /v1/images", "image:list", 0, s.listImages)
	s.handle("POST /v1/images", "image:create", upload, s.uploadImage)
	s.handle("GET /v1/images/{id}", "image:list", 0, s.showImage)
	s.handle("GET /v1/images/{id}/file", "image:download", local, s.downloadImage)
	s.handle("DELETE /v1/images/{id}", "image:delete", 0, s.deleteImage)

	s.handle("GET /v1/server-groups", "server-group:list", 0, s.listGroups)
	s.handle("POST /v1/server-groups", "server-group:create", 0, s.createGroup)
	s.handle("GET /v1/server-groups/{id}", "server-group:list", 0, s.showGroup)
	s.handle("DELETE /v1/server-groups/{id}", "server-group:list", 0, s.deleteGroup)

	s.handle("GET /v1/instances", "instance:list", 0, s.listInstances)
	s.handle("POST /v1/instances", "instance:create", 0, s.createInstances)
	s.handle("GET /v1/instances/{id}", "instance:list", 0, s.showInstance)
	s.handle("DELETE /v1/instances/{id}", "instance:list", 0, s.deleteInstance)
	s.handle("POST /v1/instances/{id}/action", "instance:list", 0, s.instanceAction)
	s.handle("POST /v1/instances/{id}/state", "instance:set-state", 0, s.setInstanceState)
	// Evacuation moves capacity between hosts: a system admin's decision.
	s.handle("POST /v1/instances/{id}/evacuate", "host:update", 0, s.evacuateInstance)

	s.handle("GET /v1/instances/{id}/ports", "instance:list", 0, s.listInstancePorts)
	// Console streams are proxied to the instance's host by whichever
	// server receives them: nothing is replicated.
	s.handle("GET /v1/instances/{id}/console", "instance:console", local, s.consoleOutput)
	s.handle("POST /v1/instances/{id}/console", "instance:console", local, s.consoleInput)

	s.handle("GET /v1/networks", "network:list", 0, s.listNetworks)
	s.handle("POST /v1/networks", "network:create", 0, s.createNetwork)
	s.handle("GET /v1/networks/{id}", "network:list", 0, s.showNetwork)
	s.handle("DELETE /v1/networks/{id}", "network:list", 0, s.deleteNetwork)
	s.handle("GET /v1/networks/{id}/ports", "network:list", 0, s.listNetworkPorts)
	s.handle("GET /v1/ports", "port:host", 0, s.hostPorts)

	s.handle("GET /v1/cluster/members", "cluster:members", local, s.members)
	s.handle("POST /v1/cluster/join", "cluster:join", 0, s.join)
	s.handle("DELETE /v1/cluster/members/{id}", "cluster:remove", 0, s.removeMember)
	s.handle("GET /v1/cluster/status", "cluster:members", local, s.status)
	s.handle("GET /v1/internal/blobs/{sha256}", "cluster:blob", local, s.internalBlob)
	s.handle("GET /v1/metrics", "metrics:show", local, s.metrics)
}
