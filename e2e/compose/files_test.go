package compose

import (
	"bufio"
	"errors"
	"fmt"
	"go/ast"
	"go/parser"
	"go/token"
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"

	"go.yaml.in/yaml/v3"
)

// root is the repository root, seen from this package's directory.
const root = "../.."

// File names, relative to root.
const (
	composeFile = "docker-compose.yml"
	clusterFile = "deploy/compose.cluster.yml"
	dockerfile  = "Dockerfile" // of every service, which its build argument SERVICE names
)

// project is the part of a compose file these tests read. Environment, depends_on and commands
// must use the map / list forms, which the files use throughout.
type project struct {
	Services map[string]*composeService `yaml:"services"`
	Volumes  map[string]any             `yaml:"volumes"`
}

type composeService struct {
	Image       string                `yaml:"image"`
	Build       *build                `yaml:"build"`
	Command     []string              `yaml:"command"`
	Environment map[string]string     `yaml:"environment"`
	Ports       []string              `yaml:"ports"`
	Volumes     []string              `yaml:"volumes"`
	DependsOn   map[string]dependency `yaml:"depends_on"`
	Healthcheck *healthcheck          `yaml:"healthcheck"`
	Restart     string                `yaml:"restart"`
}

type build struct {
	Context    string            `yaml:"context"`
	Dockerfile string            `yaml:"dockerfile"`
	Args       map[string]string `yaml:"args"`
}

type dependency struct {
	Condition string `yaml:"condition"`
}

type healthcheck struct {
	Test []string `yaml:"test"`
}

// interpolation matches ${NAME}, ${NAME:-default} and ${NAME-default}.
var interpolation = regexp.MustCompile(`\$\{([A-Za-z_][A-Za-z0-9_]*)(?:(:?-)([^}]*))?\}`)

// interpolate replaces every variable with its default, as docker compose does with an empty
// environment; a variable without a default is an error, since `up` must work without an .env.
func interpolate(text string) (string, error) {
	var missing []string
	out := interpolation.ReplaceAllStringFunc(text, func(m string) string {
		sub := interpolation.FindStringSubmatch(m)
		if sub[2] == "" {
			missing = append(missing, sub[1])
		}
		return sub[3]
	})
	if len(missing) > 0 {
		return "", fmt.Errorf("variables without a default: %s", strings.Join(missing, ", "))
	}
	if i := strings.Index(strings.ReplaceAll(out, "$$", ""), "$"); i >= 0 {
		return "", fmt.Errorf("a bare $ (write $$, or ${NAME:-default}) near %q", out[max(0, i-20):min(len(out), i+20)])
	}
	return out, nil
}

// loadProject reads and merges the compose files, as `docker compose -f a -f b` does for the
// fields these tests read.
func loadProject(t *testing.T, files ...string) *project {
	t.Helper()
	var merged *project
	for _, f := range files {
		raw, err := os.ReadFile(filepath.Join(root, f))
		if err != nil {
			t.Fatal(err)
		}
		text, err := interpolate(string(raw))
		if err != nil {
			t.Fatalf("%s: %v", f, err)
		}
		var p project
		dec := yaml.NewDecoder(strings.NewReader(text))
		if err := dec.Decode(&p); err != nil {
			t.Fatalf("%s: %v", f, err)
		}
		if merged == nil {
			merged = &p
			continue
		}
		merge(merged, &p)
	}
	return merged
}

// merge lays over onto base: scalars and lists replace, environment and depends_on merge by key,
// volumes merge by mount target.
func merge(base, over *project) {
	if base.Volumes == nil {
		base.Volumes = map[string]any{}
	}
	for k, v := range over.Volumes {
		base.Volumes[k] = v
	}
	for name, o := range over.Services {
		b, ok := base.Services[name]
		if !ok {
			base.Services[name] = o
			continue
		}
		if o.Image != "" {
			b.Image = o.Image
		}
		if o.Build != nil {
			b.Build = o.Build
		}
		if o.Command != nil {
			b.Command = o.Command
		}
		if o.Healthcheck != nil {
			b.Healthcheck = o.Healthcheck
		}
		if o.Restart != "" {
			b.Restart = o.Restart
		}
		if o.Ports != nil {
			b.Ports = o.Ports
		}
		b.Environment = mergeMap(b.Environment, o.Environment)
		b.DependsOn = mergeMap(b.DependsOn, o.DependsOn)
		for _, v := range o.Volumes {
			_, target, _ := splitVolume(v)
			b.Volumes = slices.DeleteFunc(b.Volumes, func(old string) bool {
				_, t, _ := splitVolume(old)
				return t == target
			})
			b.Volumes = append(b.Volumes, v)
		}
	}
}

func mergeMap[V any](base, over map[string]V) map[string]V {
	if base == nil && over == nil {
		return nil
	}
	out := map[string]V{}
	for k, v := range base {
		out[k] = v
	}
	for k, v := range over {
		out[k] = v
	}
	return out
}

// splitVolume splits a short-syntax volume "source:target[:mode]".
func splitVolume(v string) (source, target, mode string) {
	parts := strings.Split(v, ":")
	switch len(parts) {
	case 1:
		return "", parts[0], ""
	case 2:
		return parts[0], parts[1], ""
	default:
		return parts[0], parts[1], parts[2]
	}
}

// mount returns the source of the volume of s mounted at target, and whether there is one.
func (s *composeService) mount(target string) (string, bool) {
	for _, v := range s.Volumes {
		src, tgt, _ := splitVolume(v)
		if tgt == target {
			return src, true
		}
	}
	return "", false
}

// isBindMount tells a host path ("./x", "/x") from a named volume.
func isBindMount(source string) bool {
	return strings.HasPrefix(source, ".") || strings.HasPrefix(source, "/")
}

// sdkPackages are the packages of events that read variables of their own wherever they decide
// (events/tracing: the OpenTelemetry SDK's OTEL_*), rather than through a function a service
// calls: a service whose code imports one, directly or through other packages of events, reads
// every variable it names.
var sdkPackages = []string{"events/tracing"}

// envReads is what a module's non-test Go sources read from the environment: string literals
// given to getenv, os.Getenv or os.LookupEnv, directly or through a local helper closure (such as
// LoadConfig's set), plus what the functions of events/service that it calls read, plus what the
// sdkPackages it links read.
func envReads(t *testing.T, module string) map[string]bool {
	t.Helper()
	service := funcReads(t, "events/service")
	reads := map[string]bool{}
	linked := eventsImports(t, module)
	for _, pkg := range sdkPackages {
		if !linked[pkg] {
			continue
		}
		for _, file := range goFiles(t, pkg) {
			for _, d := range file.Decls {
				if fd, ok := d.(*ast.FuncDecl); ok && fd.Body != nil {
					for name := range literalReads(fd.Body) {
						reads[name] = true
					}
				}
			}
		}
	}
	for _, file := range goFiles(t, module) {
		importName := ""
		for _, imp := range file.Imports {
			if strings.Trim(imp.Path.Value, `"`) != "github.com/authmesh/events/service" {
				continue
			}
			importName = "service"
			if imp.Name != nil {
				importName = imp.Name.Name
			}
		}
		for _, d := range file.Decls {
			fd, ok := d.(*ast.FuncDecl)
			if !ok || fd.Body == nil {
				continue
			}
			for name := range literalReads(fd.Body) {
				reads[name] = true
			}
			ast.Inspect(fd.Body, func(n ast.Node) bool {
				call, ok := n.(*ast.CallExpr)
				if !ok || importName == "" {
					return true
				}
				if sel, ok := call.Fun.(*ast.SelectorExpr); ok {
					if id, ok := sel.X.(*ast.Ident); ok && id.Name == importName {
						for name := range service[sel.Sel.Name] {
							reads[name] = true
						}
					}
				}
				return true
			})
		}
	}
	return reads
}

// eventsImports returns the packages of the events module (as folders: events/service) that the
// non-test sources of module import, directly or through one another.
func eventsImports(t *testing.T, module string) map[string]bool {
	t.Helper()
	const prefix = "github.com/authmesh/"
	seen := map[string]bool{}
	files := goFiles(t, module) // every package of the module
	var queue []string
	for {
		for _, file := range files {
			for _, imp := range file.Imports {
				p, ok := strings.CutPrefix(strings.Trim(imp.Path.Value, `"`), prefix)
				if !ok || (p != "events" && !strings.HasPrefix(p, "events/")) || seen[p] {
					continue
				}
				seen[p] = true
				queue = append(queue, p)
			}
		}
		if len(queue) == 0 {
			return seen
		}
		files, queue = packageFiles(t, queue[0]), queue[1:]
	}
}

// packageFiles parses the non-test Go files of the one package in dir (relative to root), not of
// the packages below it.
func packageFiles(t *testing.T, dir string) []*ast.File {
	t.Helper()
	entries, err := os.ReadDir(filepath.Join(root, dir))
	if err != nil {
		t.Fatal(err)
	}
	fset := token.NewFileSet()
	var files []*ast.File
	for _, e := range entries {
		name := e.Name()
		if e.IsDir() || !strings.HasSuffix(name, ".go") || strings.HasSuffix(name, "_test.go") {
			continue
		}
		f, err := parser.ParseFile(fset, filepath.Join(root, dir, name), nil, parser.ImportsOnly)
		if err != nil {
			t.Fatal(err)
		}
		files = append(files, f)
	}
	return files
}

// funcReads maps each function of the package in dir to the variables it reads, counting the
// package's own functions it calls.
func funcReads(t *testing.T, dir string) map[string]map[string]bool {
	t.Helper()
	direct := map[string]map[string]bool{}
	calls := map[string][]string{}
	for _, file := range goFiles(t, dir) {
		for _, d := range file.Decls {
			fd, ok := d.(*ast.FuncDecl)
			if !ok || fd.Body == nil || fd.Recv != nil {
				continue
			}
			name := fd.Name.Name
			direct[name] = literalReads(fd.Body)
			ast.Inspect(fd.Body, func(n ast.Node) bool {
				if call, ok := n.(*ast.CallExpr); ok {
					if id, ok := call.Fun.(*ast.Ident); ok {
						calls[name] = append(calls[name], id.Name)
					}
				}
				return true
			})
		}
	}
	out := map[string]map[string]bool{}
	for name := range direct {
		seen := map[string]bool{}
		reads := map[string]bool{}
		var visit func(string)
		visit = func(f string) {
			if seen[f] {
				return
			}
			seen[f] = true
			for v := range direct[f] {
				reads[v] = true
			}
			for _, c := range calls[f] {
				if _, ok := direct[c]; ok {
					visit(c)
				}
			}
		}
		visit(name)
		out[name] = reads
	}
	return out
}

// literalReads finds the variable names read in body: getenv("X"), os.Getenv("X"),
// os.LookupEnv("X"), and h(..., "X", ...) where h is a closure defined in body that passes that
// parameter to getenv.
func literalReads(body *ast.BlockStmt) map[string]bool {
	reads := map[string]bool{}
	helpers := map[string]int{} // closure name -> index of the parameter it passes to getenv
	ast.Inspect(body, func(n ast.Node) bool {
		as, ok := n.(*ast.AssignStmt)
		if !ok || len(as.Lhs) != 1 || len(as.Rhs) != 1 {
			return true
		}
		id, ok := as.Lhs[0].(*ast.Ident)
		lit, ok2 := as.Rhs[0].(*ast.FuncLit)
		if !ok || !ok2 {
			return true
		}
		var params []string
		for _, f := range lit.Type.Params.List {
			for _, n := range f.Names {
				params = append(params, n.Name)
			}
		}
		ast.Inspect(lit.Body, func(n ast.Node) bool {
			call, ok := n.(*ast.CallExpr)
			if !ok || !isGetenv(call.Fun) || len(call.Args) == 0 {
				return true
			}
			if arg, ok := call.Args[0].(*ast.Ident); ok {
				if i := slices.Index(params, arg.Name); i >= 0 {
					helpers[id.Name] = i
				}
			}
			return true
		})
		return true
	})
	ast.Inspect(body, func(n ast.Node) bool {
		call, ok := n.(*ast.CallExpr)
		if !ok {
			return true
		}
		idx := -1
		if isGetenv(call.Fun) {
			idx = 0
		} else if id, ok := call.Fun.(*ast.Ident); ok {
			if i, ok := helpers[id.Name]; ok {
				idx = i
			}
		}
		if idx < 0 || idx >= len(call.Args) {
			return true
		}
		if bl, ok := call.Args[idx].(*ast.BasicLit); ok && bl.Kind == token.STRING {
			if s, err := strconv.Unquote(bl.Value); err == nil {
				reads[s] = true
			}
		}
		return true
	})
	return reads
}

func isGetenv(fun ast.Expr) bool {
	switch f := fun.(type) {
	case *ast.Ident:
		return f.Name == "getenv"
	case *ast.SelectorExpr:
		x, ok := f.X.(*ast.Ident)
		return ok && x.Name == "os" && (f.Sel.Name == "Getenv" || f.Sel.Name == "LookupEnv")
	}
	return false
}

// goFiles parses the non-test Go files under dir (relative to root).
func goFiles(t *testing.T, dir string) []*ast.File {
	t.Helper()
	fset := token.NewFileSet()
	var files []*ast.File
	err := filepath.WalkDir(filepath.Join(root, dir), func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() && d.Name() == "testdata" {
			return filepath.SkipDir
		}
		if d.IsDir() || !strings.HasSuffix(path, ".go") || strings.HasSuffix(path, "_test.go") {
			return nil
		}
		f, err := parser.ParseFile(fset, path, nil, parser.SkipObjectResolution)
		if err != nil {
			return err
		}
		files = append(files, f)
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if len(files) == 0 {
		t.Fatalf("no Go files under %s", dir)
	}
	return files
}

// instruction is one Dockerfile instruction, continuation lines joined.
type instruction struct {
	Cmd  string // upper-case: FROM, COPY, RUN, ...
	Args string
}

// parseDockerfile reads the instructions of a Dockerfile.
func parseDockerfile(t *testing.T, path string) []instruction {
	t.Helper()
	f, err := os.Open(filepath.Join(root, path))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var out []instruction
	var cur strings.Builder
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		if strings.HasSuffix(line, `\`) {
			cur.WriteString(strings.TrimSuffix(line, `\`) + " ")
			continue
		}
		cur.WriteString(line)
		cmd, args, _ := strings.Cut(cur.String(), " ")
		out = append(out, instruction{Cmd: strings.ToUpper(cmd), Args: strings.TrimSpace(args)})
		cur.Reset()
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	return out
}

// serviceDockerfile is the Dockerfile as Docker reads it for service svc, built with
// --build-arg SERVICE=svc.
func serviceDockerfile(t *testing.T, svc string) []instruction {
	t.Helper()
	ins, err := expandArgs(parseDockerfile(t, dockerfile), map[string]string{"SERVICE": svc})
	if err != nil {
		t.Fatalf("%s: %v", dockerfile, err)
	}
	return ins
}

// argRef matches $NAME and ${NAME}.
var argRef = regexp.MustCompile(`\$(?:\{([A-Za-z_][A-Za-z0-9_]*)\}|([A-Za-z_][A-Za-z0-9_]*))`)

// expandArgs replaces the references to the build arguments args as Docker does: only in a stage
// that declares the argument (ARG NAME), only in the instructions Docker expands (and in RUN,
// whose shell sees the argument in its environment), never in the exec form of ENTRYPOINT or CMD.
// A reference Docker would leave empty or literal, or an argument no stage declares, is an error;
// so is one in FROM, which only arguments declared before the first FROM could fill.
func expandArgs(ins []instruction, args map[string]string) ([]instruction, error) {
	expands := map[string]bool{"ADD": true, "COPY": true, "ENV": true, "EXPOSE": true, "LABEL": true,
		"STOPSIGNAL": true, "USER": true, "VOLUME": true, "WORKDIR": true, "RUN": true}
	used := map[string]bool{}
	var declared map[string]bool // in the current stage; nil before the first FROM
	var errs []string
	out := make([]instruction, 0, len(ins))
	for _, in := range ins {
		switch in.Cmd {
		case "FROM":
			declared = map[string]bool{}
		case "ARG":
			name, _, _ := strings.Cut(in.Args, "=")
			if declared != nil {
				declared[name] = true
				used[name] = true
			}
		}
		in.Args = argRef.ReplaceAllStringFunc(in.Args, func(ref string) string {
			m := argRef.FindStringSubmatch(ref)
			name := m[1] + m[2]
			value, ok := args[name]
			var msg string
			switch {
			case !ok:
				return ref // not a build argument: a shell variable of RUN, say
			case !expands[in.Cmd]:
				msg = fmt.Sprintf("%s %s: Docker does not expand %s here", in.Cmd, in.Args, ref)
			case !declared[name]:
				msg = fmt.Sprintf("%s %s: %s in a stage without ARG %s", in.Cmd, in.Args, ref, name)
			}
			if msg != "" && !slices.Contains(errs, msg) {
				errs = append(errs, msg)
			}
			return value
		})
		out = append(out, in)
	}
	for name := range args {
		if !used[name] {
			errs = append(errs, fmt.Sprintf("no stage declares ARG %s", name))
		}
	}
	if len(errs) > 0 {
		return nil, errors.New(strings.Join(errs, "; "))
	}
	return out, nil
}

// resolveLinks follows p through the symbolic links of links (link -> absolute target).
func resolveLinks(p string, links map[string]string) string {
	for range len(links) + 1 {
		target, ok := links[p]
		if !ok {
			break
		}
		p = target
	}
	return p
}

// shellWords splits a simple shell command line: words separated by blanks, with single and
// double quotes (no escapes, no expansions), which is all the build commands use.
func shellWords(s string) ([]string, error) {
	var words []string
	var cur strings.Builder
	inWord := false
	var quote rune
	for _, r := range s {
		switch {
		case quote != 0:
			if r == quote {
				quote = 0
			} else {
				cur.WriteRune(r)
			}
		case r == '\'' || r == '"':
			quote, inWord = r, true
		case r == ' ' || r == '\t':
			if inWord {
				words = append(words, cur.String())
				cur.Reset()
				inWord = false
			}
		case strings.ContainsRune(`\$;&|<>()`+"`", r):
			return nil, fmt.Errorf("unsupported shell syntax %q in %q", r, s)
		default:
			cur.WriteRune(r)
			inWord = true
		}
	}
	if quote != 0 {
		return nil, fmt.Errorf("unterminated quote in %q", s)
	}
	if inWord {
		words = append(words, cur.String())
	}
	return words, nil
}

// dockerignore is the pattern list of a .dockerignore file.
type dockerignore []ignorePattern

type ignorePattern struct {
	re      *regexp.Regexp
	include bool // a "!" line
}

// loadDockerignore reads root/.dockerignore with Docker's rules: paths relative to the context,
// "*" and "?" within one path element, "**" across any number of them, a pattern that matches a
// directory covers everything beneath it, "!" re-includes, and the last matching line wins.
func loadDockerignore(t *testing.T) dockerignore {
	t.Helper()
	raw, err := os.ReadFile(filepath.Join(root, ".dockerignore"))
	if err != nil {
		t.Fatal(err)
	}
	var d dockerignore
	for _, line := range strings.Split(string(raw), "\n") {
		line = strings.TrimSpace(line)
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		include := strings.HasPrefix(line, "!")
		line = filepath.ToSlash(filepath.Clean(strings.TrimPrefix(strings.TrimPrefix(line, "!"), "/")))
		var re strings.Builder
		re.WriteString("^")
		for i := 0; i < len(line); i++ {
			switch c := line[i]; {
			case strings.HasPrefix(line[i:], "**/"):
				re.WriteString("(.*/)?")
				i += 2
			case strings.HasPrefix(line[i:], "**"):
				re.WriteString(".*")
				i++
			case c == '*':
				re.WriteString("[^/]*")
			case c == '?':
				re.WriteString("[^/]")
			default:
				re.WriteString(regexp.QuoteMeta(string(c)))
			}
		}
		re.WriteString("(/.*)?$")
		d = append(d, ignorePattern{re: regexp.MustCompile(re.String()), include: include})
	}
	return d
}

// excluded tells whether path (slash-separated, relative to the context) is left out.
func (d dockerignore) excluded(path string) bool {
	out := false
	for _, p := range d {
		if p.re.MatchString(path) {
			out = !p.include
		}
	}
	return out
}
