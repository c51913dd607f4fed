package service

import (
	"runtime"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/prometheus/client_golang/prometheus"
)

func TestBuildInfoCollector(t *testing.T) {
	tests := []struct {
		name              string
		version, revision string // the linker's variables
		want              map[string]string
	}{
		{name: "from the toolchain", want: map[string]string{"version": "(devel)", "revision": "unknown", "goversion": runtime.Version()}},
		{name: "from the linker", version: "v1.4.0", revision: "0123abc",
			want: map[string]string{"version": "v1.4.0", "revision": "0123abc", "goversion": runtime.Version()}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			Version, Revision = tt.version, tt.revision
			t.Cleanup(func() { Version, Revision = "", "" })
			reg := prometheus.NewRegistry()
			reg.MustRegister(NewBuildInfoCollector("blog"))
			families, err := reg.Gather()
			if err != nil {
				t.Fatal(err)
			}
			if len(families) != 1 || families[0].GetName() != "blog_build_info" || len(families[0].GetMetric()) != 1 {
				t.Fatalf("gathered %v, want one series of blog_build_info", families)
			}
			m := families[0].GetMetric()[0]
			got := map[string]string{}
			for _, l := range m.GetLabel() {
				got[l.GetName()] = l.GetValue()
			}
			if diff := cmp.Diff(tt.want, got); diff != "" {
				t.Errorf("labels (-want +got):\n%s", diff)
			}
			if v := m.GetGauge().GetValue(); v != 1 {
				t.Errorf("value = %v, want 1", v)
			}
		})
	}
}
