module github.com/squibvm/squib

go 1.24

require (
	github.com/ebitengine/purego v0.10.2
	golang.org/x/sys v0.33.0
)
