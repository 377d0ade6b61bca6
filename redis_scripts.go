package exporter

import (
	"embed"
	"strings"

	"github.com/redis/go-redis/v9"
)

// The Lua scripts of RedisStore live in lua/*.lua, each opening with a
// block that lists its KEYS, ARGV and replies. Every state change of a job
// is one of them; common.lua is prepended to those that work on a job's
// keys (all but renew.lua and the owner index's).

//go:embed lua/*.lua
var luaFiles embed.FS

var (
	scriptCreate  = redis.NewScript(lua("common") + lua("create"))
	scriptAbandon = redis.NewScript(lua("common") + lua("abandon"))
	scriptGet     = redis.NewScript(lua("common") + lua("get"))
	scriptWrite   = redis.NewScript(lua("common") + lua("write"))
	scriptCancel  = redis.NewScript(lua("common") + lua("cancel"))
	scriptRenew   = redis.NewScript(lua("renew"))

	// The instances' reports (redis_instances.go).
	scriptInstanceReport = redis.NewScript(lua("instance_report"))
	scriptInstances      = redis.NewScript(lua("instances"))

	// The durable queue: scripts on a job's keys, and on a queue shard's
	// (queue.lua prepended).
	scriptEnqueue     = redis.NewScript(lua("common") + lua("enqueue"))
	scriptBegin       = redis.NewScript(lua("common") + lua("begin"))
	scriptRelease     = redis.NewScript(lua("common") + lua("release"))
	scriptProbe       = redis.NewScript(lua("common") + lua("probe"))
	luaQueuePush      = lua("queue") + lua("queue_push")
	scriptQueuePush   = redis.NewScript(luaQueuePush)
	scriptQueueClaim  = redis.NewScript(lua("queue") + lua("queue_claim"))
	scriptQueueSettle = redis.NewScript(lua("queue") + lua("queue_settle"))
	scriptQueueDue    = redis.NewScript(lua("queue") + lua("queue_due"))

	// The owner index's scripts are sent whole (EVAL) in pipelines that
	// cannot load a missing script and go on.
	luaIndex     = lua("index")
	luaKeepIndex = lua("keep_index")
)

// lua returns lua/<name>.lua without its opening comment block, which is
// documentation for readers, not for Redis (the owner index's scripts are
// sent whole with every call).
func lua(name string) string {
	b, err := luaFiles.ReadFile("lua/" + name + ".lua")
	if err != nil {
		panic("exporter: missing embedded script " + name) // a build without lua/: cannot run
	}
	s := string(b)
	for strings.HasPrefix(s, "--") {
		_, s, _ = strings.Cut(s, "\n")
	}
	return s
}
