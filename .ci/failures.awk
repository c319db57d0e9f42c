# Prints the whole output of each failed top-level test in a `go test -v` log
# (at most the last 200 lines of each), so that CI's report carries the
# guest console and vmm stderr a failing test logged, not only the log's tail.
/^=== RUN   [^\/]+$/ { name = $3; n = 0; delete buf }
name != "" { buf[++n] = $0 }
$0 ~ "^--- FAIL: " && name != "" && $3 == name {
	print "=== output of failed test " name " ==="
	first = n > 200 ? n - 199 : 1
	for (i = first; i <= n; i++) print buf[i]
	name = ""
}
$0 ~ "^--- (PASS|SKIP): " && $3 == name { name = "" }
