package compose

import (
	"net/netip"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"

	"go.yaml.in/yaml/v3"
)

// nginxConf is the gateway's configuration (the gateway profile of docker-compose.yml).
const nginxConf = "deploy/nginx/nginx.conf"

// gatewayFile is the part of docker-compose.yml that the gateway profile adds: the fields of
// services that only the gateway uses, and the network's addresses.
type gatewayFile struct {
	Services map[string]struct {
		Profiles []string `yaml:"profiles"`
		Networks map[string]struct {
			IPv4Address string `yaml:"ipv4_address"`
		} `yaml:"networks"`
		User     string   `yaml:"user"`
		ReadOnly bool     `yaml:"read_only"`
		Tmpfs    []string `yaml:"tmpfs"`
	} `yaml:"services"`
	Networks map[string]struct {
		IPAM struct {
			Config []struct {
				Subnet  string `yaml:"subnet"`
				IPRange string `yaml:"ip_range"`
			} `yaml:"config"`
		} `yaml:"ipam"`
	} `yaml:"networks"`
}

// TestGateway holds the gateway profile to the services and to deploy/nginx/nginx.conf: an nginx
// off by default, on one published port that its configuration listens on, whose upstreams are the
// services at their ports, at a fixed address that is exactly what account trusts in
// TRUSTED_PROXIES, and that no other container can be given. e2e/gateway runs the configuration
// itself in front of the services.
func TestGateway(t *testing.T) {
	p := loadProject(t, composeFile)
	g := p.Services["gateway"]
	if g == nil {
		t.Fatal("no service gateway")
	}
	extra := loadGatewayFile(t)
	gx := extra.Services["gateway"]

	// Optional: the system starts, and is secure, without it. (The observability profile's
	// services are held to their profile by TestObservability.)
	if !slices.Equal(gx.Profiles, []string{"gateway"}) {
		t.Errorf("gateway: profiles %q, want [gateway]", gx.Profiles)
	}
	for name, s := range extra.Services {
		if name != "gateway" && len(s.Profiles) > 0 && !slices.Equal(s.Profiles, []string{observabilityProfile}) {
			t.Errorf("%s has profiles %q: the default profile must start the whole system", name, s.Profiles)
		}
		if _, ok := p.Services[name].DependsOn["gateway"]; ok {
			t.Errorf("%s depends on the gateway, which is optional", name)
		}
	}

	if !regexp.MustCompile(`^nginx:1\.\d+(\.\d+)?(-alpine)?$`).MatchString(g.Image) {
		t.Errorf("gateway: image %q: want the official nginx image at a pinned version", g.Image)
	}
	checkRestart(t, g)
	if !gx.ReadOnly || gx.User == "" || strings.HasPrefix(gx.User, "0") || strings.HasPrefix(gx.User, "root") {
		t.Errorf("gateway: read_only %v, user %q: want a read-only root and a non-root user", gx.ReadOnly, gx.User)
	}

	// It runs deploy/nginx/nginx.conf, with a writable prefix for the pid and temporary files.
	i := slices.Index(g.Command, "-c")
	if len(g.Command) == 0 || g.Command[0] != "nginx" || i < 0 || i+1 >= len(g.Command) {
		t.Fatalf("gateway: command %q: want nginx ... -c <config>", g.Command)
	}
	if src, ok := g.mount(g.Command[i+1]); !ok || filepath.Clean(src) != nginxConf {
		t.Errorf("gateway: %s is not mounted at %s: %q", nginxConf, g.Command[i+1], g.Volumes)
	}
	if j := slices.Index(g.Command, "-p"); j < 0 || j+1 >= len(g.Command) || !slices.Contains(gx.Tmpfs, strings.TrimSuffix(g.Command[j+1], "/")) {
		t.Errorf("gateway: command %q, tmpfs %q: want a prefix (-p) on a tmpfs, for the pid and temporary files", g.Command, gx.Tmpfs)
	}
	conf := readNginxConf(t)

	// One port, published on 127.0.0.1 like the services', which the configuration listens on.
	listen := regexp.MustCompile(`(?m)^\s*listen\s+(\d+);`).FindAllStringSubmatch(conf, -1)
	if len(listen) != 1 {
		t.Fatalf("%s: %d listen directives, want one port", nginxConf, len(listen))
	}
	port := listen[0][1]
	if want := []string{"127.0.0.1:" + port + ":" + port}; !slices.Equal(g.Ports, want) {
		t.Errorf("gateway: ports %q, want %q (the port %s listens on)", g.Ports, want, nginxConf)
	}
	if g.Healthcheck == nil || !slices.Contains(g.Healthcheck.Test, "http://127.0.0.1:"+port+"/healthz") {
		t.Errorf("gateway: health check does not ask http://127.0.0.1:%s/healthz: %+v", port, g.Healthcheck)
	}

	// /svc/ goes to the service svc at its port, looked up in Docker's DNS.
	upstreams := map[string]string{}
	for _, m := range regexp.MustCompile(`(?m)^\s*set \$([a-z]+)_upstream http://([a-z]+:\d+);`).FindAllStringSubmatch(conf, -1) {
		upstreams[m[1]] = m[2]
	}
	for svc, svcPort := range services {
		if got, want := upstreams[svc], svc+":"+svcPort; got != want {
			t.Errorf("%s: $%s_upstream is http://%s, want http://%s (the service's HTTP_ADDR port)", nginxConf, svc, got, want)
		}
		loc := regexp.MustCompile(`(?s)location /` + svc + `/ \{[^}]*rewrite \^/` + svc + `\(/\.\*\)\$ \$1 break;[^}]*proxy_pass \$` + svc + `_upstream;`)
		if !loc.MatchString(conf) {
			t.Errorf("%s: no location /%s/ that takes the prefix off and passes to $%s_upstream", nginxConf, svc, svc)
		}
	}
	if len(upstreams) != len(services) {
		t.Errorf("%s: upstreams %v, want one per service %v", nginxConf, upstreams, keys(services))
	}
	if !regexp.MustCompile(`(?m)^\s*resolver 127\.0\.0\.11[ ;]`).MatchString(conf) {
		t.Errorf("%s: no resolver 127.0.0.11 (Docker's DNS, which the upstreams' names need)", nginxConf)
	}
	if !regexp.MustCompile(`(?m)^\s*proxy_set_header X-Forwarded-For \$remote_addr;`).MatchString(conf) {
		t.Errorf("%s: X-Forwarded-For is not set to $remote_addr", nginxConf)
	}

	// The gateway's address: fixed, inside the network's subnet, outside the range Docker gives
	// other containers from; and exactly what account trusts.
	addr, err := netip.ParseAddr(gx.Networks["default"].IPv4Address)
	if err != nil {
		t.Fatalf("gateway: no fixed ipv4_address on the default network: %v", err)
	}
	ipam := extra.Networks["default"].IPAM.Config
	if len(ipam) != 1 {
		t.Fatalf("networks.default.ipam.config: %d entries, want 1", len(ipam))
	}
	subnet, err1 := netip.ParsePrefix(ipam[0].Subnet)
	dynamic, err2 := netip.ParsePrefix(ipam[0].IPRange)
	if err1 != nil || err2 != nil {
		t.Fatalf("networks.default.ipam.config: subnet %q, ip_range %q: want both", ipam[0].Subnet, ipam[0].IPRange)
	}
	if !subnet.Contains(addr) || dynamic.Contains(addr) || !subnet.Contains(dynamic.Addr()) || dynamic.Bits() <= subnet.Bits() {
		t.Errorf("gateway address %s, subnet %s, ip_range %s: want the address in the subnet, outside ip_range, itself inside the subnet", addr, subnet, dynamic)
	}
	for _, files := range variants {
		account := loadProject(t, files...).Services["account"]
		trusted := trustedProxies(t, account.Environment["TRUSTED_PROXIES"])
		if want := []netip.Prefix{netip.PrefixFrom(addr, 32)}; !slices.Equal(trusted, want) {
			t.Errorf("%v: account's TRUSTED_PROXIES %v, want exactly the gateway's address %v", files, trusted, want)
		}
	}
}

// loadGatewayFile reads docker-compose.yml into gatewayFile.
func loadGatewayFile(t *testing.T) gatewayFile {
	t.Helper()
	raw, err := os.ReadFile(filepath.Join(root, composeFile))
	if err != nil {
		t.Fatal(err)
	}
	text, err := interpolate(string(raw))
	if err != nil {
		t.Fatal(err)
	}
	var f gatewayFile
	if err := yaml.Unmarshal([]byte(text), &f); err != nil {
		t.Fatalf("%s: %v", composeFile, err)
	}
	return f
}

// readNginxConf reads deploy/nginx/nginx.conf without its comments.
func readNginxConf(t *testing.T) string {
	t.Helper()
	raw, err := os.ReadFile(filepath.Join(root, nginxConf))
	if err != nil {
		t.Fatal(err)
	}
	return regexp.MustCompile(`(?m)^\s*#.*$`).ReplaceAllString(string(raw), "")
}

// trustedProxies parses TRUSTED_PROXIES as account does: comma-separated CIDRs, a bare address
// standing for itself.
func trustedProxies(t *testing.T, v string) []netip.Prefix {
	t.Helper()
	var out []netip.Prefix
	for _, s := range strings.Split(v, ",") {
		s = strings.TrimSpace(s)
		if s == "" {
			continue
		}
		if a, err := netip.ParseAddr(s); err == nil {
			out = append(out, netip.PrefixFrom(a, a.BitLen()))
			continue
		}
		p, err := netip.ParsePrefix(s)
		if err != nil {
			t.Fatalf("TRUSTED_PROXIES %q: %v", v, err)
		}
		out = append(out, p.Masked())
	}
	return out
}
