package repo

import (
	"go/parser"
	"go/token"
	"io/fs"
	"net/url"
	"os"
	"path"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
)

// root is the repository root, seen from this package's directory.
const root = "../.."

// skipDirs hold no text of the repository: git's store, the build output, make run's state.
// Folders named node_modules (what npm installs, e2e/interop/jose) are skipped wherever they are.
var skipDirs = map[string]bool{".git": true, "bin": true, "tmp": true}

// ref is a path that a file names, at a line of it.
type ref struct {
	line   int
	target string
}

func TestMarkdownLinksResolve(t *testing.T) {
	files := repoFiles(t, func(rel string) bool { return strings.HasSuffix(rel, ".md") })
	found := 0
	for _, f := range files {
		for _, l := range markdownLinks(readFile(t, f)) {
			found++
			if problem := checkLink(f, l.target); problem != "" {
				t.Errorf("%s:%d: link %s: %s", f, l.line, l.target, problem)
			}
		}
	}
	if found == 0 {
		t.Fatalf("no links in %d Markdown files: the scan has gone blind", len(files))
	}
}

func TestMentionedFilesExist(t *testing.T) {
	files := repoFiles(t, mentionsChecked)
	found := 0
	for _, f := range files {
		var refs []ref
		if strings.HasSuffix(f, ".go") {
			refs = goCommentMentions(t, f)
		} else {
			refs = mentions(readFile(t, f))
		}
		found += len(refs)
		for _, r := range refs {
			if !mentionResolves(f, r.target, refs) {
				t.Errorf("%s:%d: names %s, which is no file of the repository (from its root or from %s)",
					f, r.line, r.target, path.Dir(f))
			}
		}
	}
	if found == 0 {
		t.Fatalf("no file names in %d files: the scan has gone blind", len(files))
	}
}

// mentionsChecked tells the files whose mentions of other files are checked: the comments of Go
// sources, and the whole text of Markdown, shell scripts, the Makefile, the Dockerfile and the NATS
// and YAML configuration. (Ignore files are left out: they name files that need not exist.)
func mentionsChecked(rel string) bool {
	name := path.Base(rel)
	switch {
	case strings.HasSuffix(name, ".go"), strings.HasSuffix(name, ".md"), strings.HasSuffix(name, ".sh"),
		strings.HasSuffix(name, ".conf"), strings.HasSuffix(name, ".yml"), strings.HasSuffix(name, ".yaml"),
		name == "Makefile", name == "Dockerfile":
		return true
	}
	raw, err := os.ReadFile(filepath.Join(root, rel))
	if err != nil {
		return false
	}
	// A script without an extension, such as .ci/run.
	first, _, _ := strings.Cut(string(raw), "\n")
	return strings.HasPrefix(first, "#!") && strings.HasSuffix(first, "sh")
}

// checkLink says what is wrong with the link target of a Markdown file (relative to root), or ""
// if it is fine: a URL with a scheme or an anchor of the same page is not checked; any other
// target, without its #anchor, must name a file or folder inside the repository, relative to the
// file's folder (or to the root, if it starts with /).
func checkLink(file, target string) string {
	if regexp.MustCompile(`^[A-Za-z][A-Za-z0-9+.-]*:`).MatchString(target) {
		return "" // https:, mailto: ...
	}
	target, _, _ = strings.Cut(target, "#")
	target, _, _ = strings.Cut(target, "?")
	if target == "" {
		return ""
	}
	p, err := url.PathUnescape(target)
	if err != nil {
		return err.Error()
	}
	if strings.HasPrefix(p, "/") {
		p = path.Clean(strings.TrimPrefix(p, "/"))
	} else {
		p = path.Join(path.Dir(file), p)
	}
	if p == ".." || strings.HasPrefix(p, "../") {
		return "outside the repository"
	}
	if _, err := os.Stat(filepath.Join(root, filepath.FromSlash(p))); err != nil {
		return "no such file in the repository"
	}
	return ""
}

// mentionResolves reports whether target, named in file, is a file of the repository: relative to
// the root or to file's folder. A bare name (no folder) also resolves when file names the same file
// in full elsewhere, as a comment may use the short name once it has said where the file lives.
func mentionResolves(file, target string, all []ref) bool {
	if isRepoFile(target) || isRepoFile(path.Join(path.Dir(file), target)) {
		return true
	}
	if strings.Contains(target, "/") {
		return false
	}
	for _, r := range all {
		if path.Base(r.target) == target && r.target != target && mentionResolves(file, r.target, nil) {
			return true
		}
	}
	return false
}

// isRepoFile reports whether p, relative to root, is a regular file inside the repository.
func isRepoFile(p string) bool {
	p = path.Clean(p)
	if p == ".." || strings.HasPrefix(p, "../") || strings.HasPrefix(p, "/") {
		return false
	}
	fi, err := os.Stat(filepath.Join(root, filepath.FromSlash(p)))
	return err == nil && fi.Mode().IsRegular()
}

var (
	// fence opens or closes a fenced code block.
	fence = regexp.MustCompile("^\\s{0,3}(```|~~~)")
	// codeSpan is an inline code span.
	codeSpan = regexp.MustCompile("`+[^`]*`+")
	// inlineLink is [text](target "title") or ![alt](target), the target optionally in <>.
	inlineLink = regexp.MustCompile(`\[[^\]]*\]\(\s*(?:<([^>]*)>|([^\s)]+))(?:\s+(?:"[^"]*"|'[^']*'|\([^)]*\)))?\s*\)`)
	// linkDefinition is a reference definition: [label]: target.
	linkDefinition = regexp.MustCompile(`^\s{0,3}\[[^\]]+\]:\s*<?([^\s>]+)>?`)
)

// markdownLinks returns the link targets of a Markdown text, outside code.
func markdownLinks(text string) []ref {
	var out []ref
	inFence := false
	for i, line := range strings.Split(text, "\n") {
		if fence.MatchString(line) {
			inFence = !inFence
			continue
		}
		if inFence {
			continue
		}
		if m := linkDefinition.FindStringSubmatch(line); m != nil {
			out = append(out, ref{line: i + 1, target: m[1]})
			continue
		}
		line = codeSpan.ReplaceAllString(line, "``")
		for _, m := range inlineLink.FindAllStringSubmatch(line, -1) {
			out = append(out, ref{line: i + 1, target: m[1] + m[2]})
		}
	}
	return out
}

var (
	// pathToken is a maximal run of the characters of a relative path.
	pathToken = regexp.MustCompile(`[A-Za-z0-9_.-]+(?:/[A-Za-z0-9_.-]+)*`)
	// checkedName is a file name with one of the extensions checked, after a non-empty stem.
	checkedName = regexp.MustCompile(`(?:^|/)[^/]*[A-Za-z0-9_-]\.(?:md|conf|ya?ml)$`)
)

// mentions returns the relative paths of Markdown, NATS configuration and YAML files that text
// names. An absolute path (a container's), a URL, a glob and a variable's expansion are left out.
func mentions(text string) []ref {
	var out []ref
	for i, line := range strings.Split(text, "\n") {
		for _, loc := range pathToken.FindAllStringIndex(line, -1) {
			tok := strings.TrimRight(line[loc[0]:loc[1]], ".")
			if !checkedName.MatchString(tok) {
				continue
			}
			if loc[0] > 0 && strings.ContainsRune("/*$}~@:", rune(line[loc[0]-1])) {
				continue
			}
			out = append(out, ref{line: i + 1, target: tok})
		}
	}
	return out
}

// goCommentMentions returns the mentions in the comments of a Go file.
func goCommentMentions(t *testing.T, file string) []ref {
	t.Helper()
	fset := token.NewFileSet()
	f, err := parser.ParseFile(fset, filepath.Join(root, file), nil, parser.ParseComments|parser.SkipObjectResolution)
	if err != nil {
		t.Fatal(err)
	}
	var out []ref
	for _, g := range f.Comments {
		for _, c := range g.List {
			first := fset.Position(c.Pos()).Line
			for _, r := range mentions(c.Text) {
				out = append(out, ref{line: first + r.line - 1, target: r.target})
			}
		}
	}
	return out
}

// repoFiles lists the files under root, slash-separated and relative to it, that keep says to.
func repoFiles(t *testing.T, keep func(rel string) bool) []string {
	t.Helper()
	var files []string
	err := filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, err := filepath.Rel(root, p)
		if err != nil {
			return err
		}
		rel = filepath.ToSlash(rel)
		if d.IsDir() {
			if skipDirs[rel] || d.Name() == "node_modules" {
				return filepath.SkipDir
			}
			return nil
		}
		if d.Type().IsRegular() && keep(rel) {
			files = append(files, rel)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	slices.Sort(files)
	return files
}

func readFile(t *testing.T, rel string) string {
	t.Helper()
	raw, err := os.ReadFile(filepath.Join(root, filepath.FromSlash(rel)))
	if err != nil {
		t.Fatal(err)
	}
	return string(raw)
}
