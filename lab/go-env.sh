# Sourced by squib's scripts: puts a Go toolchain that can build squib on
# PATH. Go 1.21 or newer fetches the toolchain go.mod asks for through the
# module proxy; on a machine without one, Debian's backports package is used.
_squib_go_ok() {
	command -v go >/dev/null 2>&1 || return 1
	case "$(go env GOVERSION 2>/dev/null)" in
	go1.2[1-9]* | go1.[3-9][0-9]*) return 0 ;;
	esac
	return 1
}
if ! _squib_go_ok; then
	for d in /usr/local/go/bin /usr/lib/go-1.23/bin; do
		[ -x "$d/go" ] && PATH="$d:$PATH"
	done
fi
if ! _squib_go_ok; then
	bash "$(dirname "${BASH_SOURCE[0]}")/setup.sh" --go
	PATH="/usr/lib/go-1.23/bin:$PATH"
fi
export PATH GOTOOLCHAIN="${GOTOOLCHAIN:-auto}"
unset -f _squib_go_ok
