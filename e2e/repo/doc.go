// Package repo holds the tests that keep the repository readable on its own: every relative link
// in its Markdown, and every file that a Go comment, a Markdown page, a shell script, the Makefile,
// the Dockerfile or a NATS or YAML configuration names, points at a file of the repository (not at
// one that lives elsewhere, or that has moved).
package repo
