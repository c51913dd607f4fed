package repo

import (
	"testing"

	"github.com/google/go-cmp/cmp"
)

// The scans find what they must and nothing else; otherwise the checks above pass on nothing.

func TestMarkdownLinks(t *testing.T) {
	tests := []struct {
		name string
		text string
		want []ref
	}{
		{"inline", "see [the contract](docs/contract.md).", []ref{{1, "docs/contract.md"}}},
		{"code in the text", "[`docs/operations.md`](docs/operations.md#exit-codes)", []ref{{1, "docs/operations.md#exit-codes"}}},
		{"two on a line, title", `[a](a.md "A") and ![b](img/b.png)`, []ref{{1, "a.md"}, {1, "img/b.png"}}},
		{"angle brackets", "[a](<my file.md>)", []ref{{1, "my file.md"}}},
		{"reference definition", "text\n[contract]: docs/contract.md", []ref{{2, "docs/contract.md"}}},
		{"URL", "[Jepsen](https://jepsen.io/analyses/nats-2.12.1)", []ref{{1, "https://jepsen.io/analyses/nats-2.12.1"}}},
		{"in a code span", "write `[a](missing.md)` for a link", nil},
		{"in a fenced block", "```\n[a](missing.md)\n```\n[b](b.md)", []ref{{4, "b.md"}}},
		{"not a link", "a [bracket] (and a parenthesis)", nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if diff := cmp.Diff(tt.want, markdownLinks(tt.text), cmp.AllowUnexported(ref{})); diff != "" {
				t.Errorf("markdownLinks(%q) (-want +got):\n%s", tt.text, diff)
			}
		})
	}
}

func TestMentions(t *testing.T) {
	tests := []struct {
		name string
		text string
		want []ref
	}{
		{"paths", "See RELIABILITY.md and docs/scaling.md.", []ref{{1, "RELIABILITY.md"}, {1, "docs/scaling.md"}}},
		{"config files", "include auth.conf\n- ./deploy/nats/nats.conf:/etc/nats/authmesh.conf:ro",
			[]ref{{1, "auth.conf"}, {2, "./deploy/nats/nats.conf"}}},
		{"yml and yaml", "docker-compose.yml, deploy/x.yaml", []ref{{1, "docker-compose.yml"}, {1, "deploy/x.yaml"}}},
		{"parent folder", "(../shared/STYLE.md)", []ref{{1, "../shared/STYLE.md"}}},
		{"absolute", "mounted at /etc/nats/auth.conf", nil},
		{"URL", "https://github.com/nats-io/nats-server/blob/main/README.md", nil},
		{"glob and variable", "**/*.md, $DIR/x.conf, ${DIR}/y.yml", nil},
		{"other extensions", "users-stream.json, Dockerfile, go.yaml.in/yaml/v3, x.mdx, notes.md5", nil},
		{"no stem", "a .md file", nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if diff := cmp.Diff(tt.want, mentions(tt.text), cmp.AllowUnexported(ref{})); diff != "" {
				t.Errorf("mentions(%q) (-want +got):\n%s", tt.text, diff)
			}
		})
	}
}

func TestCheckLink(t *testing.T) {
	tests := []struct {
		file, target string
		ok           bool
	}{
		{"README.md", "docs/contract.md", true},
		{"README.md", "docs/contract.md#events", true},
		{"README.md", "docs", true},
		{"docs/architecture.md", "security.md", true},
		{"docs/architecture.md", "../deploy/nats/nats.conf", true},
		{"docs/architecture.md", "/docs/security.md", true},
		{"docs/architecture.md", "#the-replica-race", true},
		{"README.md", "https://example.com/missing.md", true},
		{"README.md", "mailto:ops@example.com", true},
		{"README.md", "docs/missing.md", false},
		{"docs/architecture.md", "docs/contract.md", false}, // relative to docs/
		{"README.md", "../shared/STYLE.md", false},          // outside, even where it exists
		{"docs/scaling.md", "RELIABILITY.md", false},
	}
	for _, tt := range tests {
		problem := checkLink(tt.file, tt.target)
		if got := problem == ""; got != tt.ok {
			t.Errorf("checkLink(%q, %q) = %q, want ok %v", tt.file, tt.target, problem, tt.ok)
		}
	}
}

func TestMentionResolves(t *testing.T) {
	full := []ref{{1, "deploy/nats/auth.conf"}, {2, "auth.conf"}}
	tests := []struct {
		file, target string
		all          []ref
		want         bool
	}{
		{"events/bus/bus.go", "deploy/nats/auth.conf", nil, true},
		{"deploy/nats/nats.conf", "auth.conf", nil, true},             // next to it
		{"events/natstest/natstest.go", "auth.conf", full, true},      // named in full elsewhere in the file
		{"events/natstest/natstest.go", "auth.conf", full[1:], false}, // only the bare name
		{"docker-compose.yml", "./deploy/nats/nats.conf", nil, true},
		{"deploy/nats/nats.conf", "RELIABILITY.md", nil, false},
		{"deploy/nats/nats.conf", "docs/missing.md", nil, false},
		{"docs/scaling.md", "../../shared/STYLE.md", nil, false}, // outside the repository
		{"Makefile", "docs", nil, false},                         // a folder, not a file
	}
	for _, tt := range tests {
		if got := mentionResolves(tt.file, tt.target, tt.all); got != tt.want {
			t.Errorf("mentionResolves(%q, %q) = %v, want %v", tt.file, tt.target, got, tt.want)
		}
	}
}
