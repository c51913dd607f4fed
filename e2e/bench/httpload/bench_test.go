package httpload

import (
	"testing"
	"time"

	"github.com/authmesh/e2e/bench/load"
	"github.com/authmesh/events/benchfig"
)

// BenchmarkReportServices measures the running services over HTTP (see the package doc) and saves
// the sections 1-http, 5-memory and 6-login. It ignores b.N.
func BenchmarkReportServices(b *testing.B) {
	sys := startSystem(b)

	hsc := httpScaleOf()
	watch := load.WatchRSS(sys.pid, 100*time.Millisecond)
	vs := measureHTTP(b, sys, hsc)
	underLoad, err := watch.Stop()
	if err != nil {
		b.Fatal(err)
	}
	save(b, httpSection(vs, hsc))

	logins, params := loginSection(b, sys, loginScaleOf())
	save(b, logins)

	ssc := stormScaleOf()
	var storms []storm
	for i := range ssc.storms {
		st := runStorm(b, sys, ssc)
		b.Logf("storm %d: %v, slowest %s; account RSS %.0f MiB before, %.0f MiB at most, %.0f MiB %s after",
			i+1, st.statuses, st.slowest.Round(time.Millisecond), load.MiB(st.before), load.MiB(st.peak), load.MiB(st.after), ssc.after)
		storms = append(storms, st)
	}
	save(b, memorySection(sys, underLoad, storms, params, ssc))
}

func save(b *testing.B, s benchfig.Section) {
	if err := benchfig.Save(s); err != nil {
		b.Fatal(err)
	}
}
