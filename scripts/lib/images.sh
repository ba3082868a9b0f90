# Shared by scripts/build-test-images.sh and scripts/build-compose-images.sh (sourced, not run):
# building local images FROM scratch with the legacy builder, each labelled with the sha256 of its
# inputs so it is rebuilt only when they change. The caller sets PROG (its name, for messages).

export DOCKER_BUILDKIT=0   # the legacy builder: no buildx plugin, no registry

die() { echo "$PROG: $*" >&2; exit 1; }

# image_current TAG SHA: true when TAG exists and was built from inputs with this SHA.
image_current() {
    local have
    have="$(docker image inspect -f '{{ index .Config.Labels "threadcycle.inputs-sha256" }}' "$1" 2>/dev/null || true)"
    [ "$have" = "$2" ]
}

# build TAG SHA CONTEXT: build CONTEXT as TAG, labelled with SHA.
build() {
    local log
    log="$(mktemp)"
    if ! docker build -q --label "threadcycle.inputs-sha256=$2" -t "$1" "$3" >"$log" 2>&1; then
        tail -n 30 "$log" >&2
        rm -f "$log"
        die "building $1 failed"
    fi
    rm -f "$log"
    echo "$PROG: built $1"
}

# build_context TAG CONTEXT: build CONTEXT as TAG unless an image from the same files exists.
build_context() {
    local sha
    sha="$(cd "$2" && find . -type f -print0 | sort -z | xargs -0 sha256sum | sha256sum | cut -d' ' -f1)"
    if image_current "$1" "$sha"; then
        echo "$PROG: $1 is up to date"
        return
    fi
    build "$1" "$sha" "$2"
}

# copy_libs BINARY ROOTFS: every shared library BINARY needs, and the loader, at their own paths.
copy_libs() {
    if ldd "$1" 2>&1 | grep -q 'not found'; then
        ldd "$1" >&2
        die "$1 needs libraries that are not installed here"
    fi
    local lib
    for lib in $(ldd "$1" 2>/dev/null | awk '/=>/ { if ($3 ~ /^\//) print $3; next } $1 ~ /^\// { print $1 }'); do
        mkdir -p "$2$(dirname "$lib")"
        cp -L "$lib" "$2$lib"
    done
}

# busybox_static: print the path of Debian's static busybox, installing busybox-static if missing.
busybox_static() {
    if ! dpkg -s busybox-static >/dev/null 2>&1; then
        echo "$PROG: installing busybox-static" >&2
        export DEBIAN_FRONTEND=noninteractive
        apt-get install -y -qq busybox-static >/dev/null 2>&1 \
            || { apt-get update -qq && apt-get install -y -qq busybox-static >/dev/null; }
    fi
    local bb
    bb="$(dpkg -L busybox-static 2>/dev/null | grep -E '/bin/busybox$' | head -n1)"
    bb="${bb:-/bin/busybox}"
    [ -x "$bb" ] || die "busybox-static installed no /bin/busybox"
    echo "$bb"
}
