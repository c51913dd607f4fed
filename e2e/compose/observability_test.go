package compose

import (
	"encoding/json"
	"net"
	"net/url"
	"os"
	"path"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"

	"go.yaml.in/yaml/v3"
)

// observabilityProfile is the compose profile of the metrics, alerts, dashboards and traces.
const observabilityProfile = "observability"

// The configuration files of the profile, relative to root.
const (
	prometheusConf   = "deploy/prometheus/prometheus.yml"
	grafanaProvision = "deploy/grafana/provisioning"
	grafanaDashboard = "deploy/grafana/dashboards"
	collectorConf    = "deploy/otel/collector.yaml"
)

// TestObservability holds the observability profile of docker-compose.yml to the services and to
// its configuration files: four optional containers at pinned versions, published on 127.0.0.1
// only; Prometheus running deploy/prometheus/prometheus.yml with its rule files beside it and
// scraping every service at its port; Grafana provisioned with that Prometheus and the dashboards
// of deploy/grafana/dashboards; the collector running deploy/otel/collector.yaml, receiving OTLP
// over HTTP (what the services send) and exporting to the profile's Jaeger; and the services given
// OTEL_EXPORTER_OTLP_ENDPOINT empty by default (tracing off). e2e/observability checks the rules
// and the dashboard against the metrics the services expose.
func TestObservability(t *testing.T) {
	p := loadProject(t, composeFile)
	profiles := map[string][]string{}
	for name, s := range loadGatewayFile(t).Services {
		profiles[name] = s.Profiles
	}
	want := []string{"grafana", "jaeger", "otel-collector", "prometheus"}
	var got []string
	for name, prof := range profiles {
		if slices.Contains(prof, observabilityProfile) {
			got = append(got, name)
			if len(prof) != 1 {
				t.Errorf("%s: profiles %q, want [%s]", name, prof, observabilityProfile)
			}
		}
	}
	slices.Sort(got)
	if !slices.Equal(got, want) {
		t.Fatalf("services of the %s profile: %v, want %v", observabilityProfile, got, want)
	}
	for name, s := range p.Services {
		for _, o := range want {
			if _, ok := s.DependsOn[o]; ok && !slices.Contains(profiles[name], observabilityProfile) {
				t.Errorf("%s depends on %s, which is optional", name, o)
			}
		}
	}
	pinned := regexp.MustCompile(`^[a-z0-9./-]+:v?\d+\.\d+\.\d+$`)
	for _, name := range want {
		s := p.Services[name]
		if !pinned.MatchString(s.Image) {
			t.Errorf("%s: image %q: want a pinned x.y.z version", name, s.Image)
		}
		checkRestart(t, s)
		for _, port := range s.Ports {
			if !strings.HasPrefix(port, "127.0.0.1:") {
				t.Errorf("%s: port %q is published beyond 127.0.0.1", name, port)
			}
		}
	}

	// The services: tracing off unless asked for.
	raw, err := os.ReadFile(filepath.Join(root, composeFile))
	if err != nil {
		t.Fatal(err)
	}
	if n := strings.Count(string(raw), "OTEL_EXPORTER_OTLP_ENDPOINT: ${OTEL_EXPORTER_OTLP_ENDPOINT:-}\n"); n != len(services) {
		t.Errorf("%d services are given OTEL_EXPORTER_OTLP_ENDPOINT: ${OTEL_EXPORTER_OTLP_ENDPOINT:-}, want all %d", n, len(services))
	}
	for svc := range services {
		if v, ok := p.Services[svc].Environment["OTEL_EXPORTER_OTLP_ENDPOINT"]; !ok || v != "" {
			t.Errorf("%s: OTEL_EXPORTER_OTLP_ENDPOINT = %q (given: %v), want given, empty by default", svc, v, ok)
		}
	}

	checkPrometheus(t, p.Services["prometheus"])
	checkGrafana(t, p.Services["grafana"], p.Services["prometheus"])
	checkCollector(t, p.Services["otel-collector"], p.Services["jaeger"])
}

// checkPrometheus: the configuration and every rule file it names are mounted from the
// repository, and it scrapes each service, as its own job, at the port of its HTTP_ADDR.
func checkPrometheus(t *testing.T, s *composeService) {
	t.Helper()
	conf := flagValue(s.Command, "--config.file")
	if src, ok := s.mount(conf); !ok || path.Clean(src) != prometheusConf {
		t.Fatalf("prometheus: %s is not mounted at --config.file %q: %q", prometheusConf, conf, s.Volumes)
	}
	var cfg struct {
		RuleFiles     []string `yaml:"rule_files"`
		ScrapeConfigs []struct {
			JobName       string `yaml:"job_name"`
			StaticConfigs []struct {
				Targets []string `yaml:"targets"`
			} `yaml:"static_configs"`
		} `yaml:"scrape_configs"`
	}
	readYAML(t, prometheusConf, &cfg)
	if len(cfg.RuleFiles) == 0 {
		t.Errorf("%s names no rule file", prometheusConf)
	}
	for _, f := range cfg.RuleFiles {
		src, ok := s.mount(path.Join(path.Dir(conf), f))
		if !ok || path.Clean(src) != path.Join(path.Dir(prometheusConf), f) {
			t.Errorf("prometheus: rule file %s is not mounted beside the configuration from %s", f, path.Dir(prometheusConf))
		}
	}
	jobs := map[string][]string{}
	for _, sc := range cfg.ScrapeConfigs {
		for _, st := range sc.StaticConfigs {
			jobs[sc.JobName] = append(jobs[sc.JobName], st.Targets...)
		}
	}
	for svc, port := range services {
		if want := []string{svc + ":" + port}; !slices.Equal(jobs[svc], want) {
			t.Errorf("%s: job %s scrapes %q, want %q", prometheusConf, svc, jobs[svc], want)
		}
	}
	if len(jobs) != len(services) {
		t.Errorf("%s: jobs %v, want one per service %v", prometheusConf, keys(jobs), keys(services))
	}
}

// checkGrafana: provisioning mounted from the repository, its data source the profile's
// Prometheus, its dashboard provider reading a folder mounted from deploy/grafana/dashboards, and
// the dashboards' panels naming the data source's uid.
func checkGrafana(t *testing.T, s, prometheus *composeService) {
	t.Helper()
	if src, ok := s.mount("/etc/grafana/provisioning"); !ok || path.Clean(src) != grafanaProvision {
		t.Fatalf("grafana: %s is not mounted at /etc/grafana/provisioning: %q", grafanaProvision, s.Volumes)
	}
	var ds struct {
		Datasources []struct {
			UID  string `yaml:"uid"`
			Type string `yaml:"type"`
			URL  string `yaml:"url"`
		} `yaml:"datasources"`
	}
	readYAML(t, grafanaProvision+"/datasources/prometheus.yml", &ds)
	if len(ds.Datasources) != 1 || ds.Datasources[0].Type != "prometheus" {
		t.Fatalf("grafana data sources %+v, want one of type prometheus", ds.Datasources)
	}
	promPort := "9090" // Prometheus's default --web.listen-address
	if flagValue(prometheus.Command, "--web.listen-address") != "" || !slices.Contains(prometheus.Ports, "127.0.0.1:9090:"+promPort) {
		t.Errorf("prometheus: command %q, ports %q: want it on its default port %s", prometheus.Command, prometheus.Ports, promPort)
	}
	if u, err := url.Parse(ds.Datasources[0].URL); err != nil || u.Host != "prometheus:"+promPort {
		t.Errorf("grafana data source URL %q, want http://prometheus:%s", ds.Datasources[0].URL, promPort)
	}
	uid := ds.Datasources[0].UID

	var prov struct {
		Providers []struct {
			Type    string `yaml:"type"`
			Options struct {
				Path string `yaml:"path"`
			} `yaml:"options"`
		} `yaml:"providers"`
	}
	readYAML(t, grafanaProvision+"/dashboards/authmesh.yml", &prov)
	if len(prov.Providers) != 1 || prov.Providers[0].Type != "file" {
		t.Fatalf("grafana dashboard providers %+v, want one of type file", prov.Providers)
	}
	if src, ok := s.mount(prov.Providers[0].Options.Path); !ok || path.Clean(src) != grafanaDashboard {
		t.Errorf("grafana: the provider reads %s, where %s is not mounted: %q", prov.Providers[0].Options.Path, grafanaDashboard, s.Volumes)
	}
	dashboards, err := filepath.Glob(filepath.Join(root, grafanaDashboard, "*.json"))
	if err != nil || len(dashboards) == 0 {
		t.Fatalf("no dashboard in %s: %v", grafanaDashboard, err)
	}
	for _, f := range dashboards {
		raw, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		var d struct {
			UID    string `json:"uid"`
			Panels []struct {
				Title      string `json:"title"`
				Type       string `json:"type"`
				Datasource *struct {
					UID string `json:"uid"`
				} `json:"datasource"`
			} `json:"panels"`
		}
		if err := json.Unmarshal(raw, &d); err != nil {
			t.Fatalf("%s: %v", f, err)
		}
		if d.UID == "" {
			t.Errorf("%s: no uid", f)
		}
		for _, panel := range d.Panels {
			if panel.Type == "row" {
				continue
			}
			if panel.Datasource == nil || panel.Datasource.UID != uid {
				t.Errorf("%s: panel %q does not use the data source %q", f, panel.Title, uid)
			}
		}
	}
}

// checkCollector: deploy/otel/collector.yaml mounted where the command reads it, an OTLP/HTTP
// receiver on the port the services are told to send to (4318), and its traces exported to the
// profile's Jaeger over OTLP.
func checkCollector(t *testing.T, s, jaeger *composeService) {
	t.Helper()
	conf := flagValue(s.Command, "--config")
	if src, ok := s.mount(conf); !ok || path.Clean(src) != collectorConf {
		t.Fatalf("otel-collector: %s is not mounted at --config %q: %q", collectorConf, conf, s.Volumes)
	}
	var cfg struct {
		Receivers map[string]struct {
			Protocols map[string]struct {
				Endpoint string `yaml:"endpoint"`
			} `yaml:"protocols"`
		} `yaml:"receivers"`
		Exporters map[string]struct {
			Endpoint string `yaml:"endpoint"`
		} `yaml:"exporters"`
		Service struct {
			Pipelines map[string]struct {
				Receivers []string `yaml:"receivers"`
				Exporters []string `yaml:"exporters"`
			} `yaml:"pipelines"`
		} `yaml:"service"`
	}
	readYAML(t, collectorConf, &cfg)
	traces, ok := cfg.Service.Pipelines["traces"]
	if !ok {
		t.Fatalf("%s has no traces pipeline", collectorConf)
	}
	if !slices.Contains(traces.Receivers, "otlp") {
		t.Errorf("%s: the traces pipeline does not receive from otlp: %q", collectorConf, traces.Receivers)
	}
	if _, port, _ := net.SplitHostPort(cfg.Receivers["otlp"].Protocols["http"].Endpoint); port != "4318" {
		t.Errorf("%s: no OTLP/HTTP receiver on 4318 (the services export OTLP over HTTP)", collectorConf)
	}
	toJaeger := false
	for _, name := range traces.Exporters {
		host, _, _ := net.SplitHostPort(cfg.Exporters[name].Endpoint)
		if (name == "otlp" || strings.HasPrefix(name, "otlp/")) && host == "jaeger" {
			toJaeger = true
		}
	}
	if !toJaeger {
		t.Errorf("%s: the traces pipeline exports to no OTLP endpoint on jaeger: %q", collectorConf, traces.Exporters)
	}
	if jaeger == nil || !strings.HasPrefix(jaeger.Image, "jaegertracing/") {
		t.Errorf("jaeger: %+v, want a jaegertracing image", jaeger)
	}
	if _, ok := s.DependsOn["jaeger"]; !ok {
		t.Error("otel-collector does not start after jaeger")
	}
}

// flagValue returns the value of a --name=value or --name value argument, "" if absent.
func flagValue(args []string, name string) string {
	for i, a := range args {
		if v, ok := strings.CutPrefix(a, name+"="); ok {
			return v
		}
		if a == name && i+1 < len(args) {
			return args[i+1]
		}
	}
	return ""
}

// readYAML decodes the file (relative to root) into v.
func readYAML(t *testing.T, file string, v any) {
	t.Helper()
	raw, err := os.ReadFile(filepath.Join(root, file))
	if err != nil {
		t.Fatal(err)
	}
	if err := yaml.Unmarshal(raw, v); err != nil {
		t.Fatalf("%s: %v", file, err)
	}
}
