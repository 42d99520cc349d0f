# shellcheck shell=bash
# compose-smoke step 2, base images: for each base image that is absent, a local stand-in
# under its name (scripts/docker-standins/README.md), reused by later runs while its
# files are unchanged. Sourced by scripts/compose-smoke.
# Checked whole with `shellcheck -x -a scripts/compose-smoke`; alone, the globals shared
# with that script read as unassigned or unused:
# shellcheck disable=SC2034,SC2154

# image_kind REF: absent, standin (labelled by this script) or real.
image_kind() {
  local label
  if ! label=$(docker image inspect -f "{{ index .Config.Labels \"$standin_label\" }}" "$1" 2>/dev/null); then
    echo absent
  elif [ -n "$label" ] && [ "$label" != "<no value>" ]; then
    echo standin
  else
    echo real
  fi
}

# A stand-in's definition: one left by an earlier run is reused only when it
# was built from the same files.
hash_label="compose-smoke.standin-hash"
definition_hash() { # definition_hash REF
  local dir=scripts/docker-standins/${1%%:*}
  (cd "$dir" && find . -type f -print0 | sort -z | xargs -0 sha256sum) | sha256sum | cut -c1-16
}

# needs_standin REF: true when a stand-in for REF must be built here.
needs_standin() {
  case $(image_kind "$1") in
    real) say "$1: the real image is present, used as is"; return 1 ;;
    standin)
      if [ "$(docker image inspect -f "{{ index .Config.Labels \"$hash_label\" }}" "$1")" = "$(definition_hash "$1")" ]; then
        say "$1: stand-in left by an earlier run, same definition: reused"
        return 1
      fi
      say "$1: stand-in left by an earlier run, older definition: rebuilt"
      run standins docker rmi "$1"
      return 0
      ;;
    absent) return 0 ;;
  esac
}

# --- the step ----------------------------------------------------------------------------------
provide_base_images() {
  build_debian=0 build_rust=0 build_postgres=0 build_haproxy=0
  # The rust, postgres and haproxy stand-ins are built FROM debian:bookworm-slim (the
  # real one when present), as the real ones are.
  if needs_standin "$debian_image"; then build_debian=1; fi
  if needs_standin "$rust_image"; then build_rust=1; fi
  if needs_standin "$postgres_image"; then build_postgres=1; fi
  if needs_standin "$haproxy_image"; then build_haproxy=1; fi
  if [ "$build_debian" = 1 ]; then build_debian_standin; fi
  if [ "$build_rust" = 1 ]; then prepare_rust_context; fi
  build_standins
  if [ "${#built_images[@]}" -gt 0 ]; then
    note "stand-ins built: ${built_images[*]}"
  else
    note "no stand-in built"
  fi
}

# build_debian_standin: debootstrap's minbase, made like the slim image, imported.
build_debian_standin() {
  command -v debootstrap >/dev/null || apt_install debootstrap
  local rootfs=$work/rootfs
  run standins debootstrap --variant=minbase bookworm "$rootfs" http://deb.debian.org/debian
  # What debian:bookworm-slim has beyond minbase: its apt sources, the container
  # tweaks for apt and dpkg, the slim path excludes, no services started by dpkg.
  cp -a scripts/docker-standins/debian/rootfs/. "$rootfs/"
  rm -f "$rootfs/etc/apt/sources.list"
  (
    cd "$rootfs" || exit
    find usr/share/doc -mindepth 1 ! -type d ! -name copyright -delete
    find usr/share/doc -mindepth 1 -type d -empty -delete
    rm -rf usr/share/man/* usr/share/info/* usr/share/groff/* usr/share/linda/* \
      usr/share/lintian/overrides/* usr/share/locale/* \
      var/lib/apt/lists/* var/cache/apt/*.bin var/cache/apt/archives/*.deb var/log/*.log
  )
  # This machine's extra CA certificates, for the builds that reach its TLS egress.
  if [ -d /usr/local/share/ca-certificates ]; then
    cp -a /usr/local/share/ca-certificates/. "$rootfs/usr/local/share/ca-certificates/"
  fi
  say "\$ tar -C $rootfs -c . | docker import - $debian_image"
  tar -C "$rootfs" --numeric-owner -c . | docker import \
    --change 'CMD ["bash"]' \
    --change "LABEL org.opencontainers.image.description=\"local stand-in for $debian_image, built by scripts/compose-smoke\" $standin_label=\"$debian_image\" $hash_label=\"$(definition_hash "$debian_image")\"" \
    - "$debian_image" >>"$work/standins.log"
  unmount_under "$rootfs"
  rm -rf --one-file-system "$rootfs"
  built_images+=("$debian_image")
}

# find_rust_toolchain: sets rust_toolchain and rust_version, the machine's Rust
# $rust_want toolchain (a release, not a beta or nightly).
find_rust_toolchain() {
  local tc version
  rust_toolchain=
  for tc in "$rustup_home"/toolchains/*/; do
    version=$("$tc/bin/rustc" -V 2>/dev/null | awk '{print $2}') || continue
    case $version in "$rust_want".*-* | "$rust_want".*[!0-9.]*) ;; "$rust_want".*) rust_toolchain=${tc%/}; rust_version=$version; break ;; esac
  done
  [ -n "$rust_toolchain" ] || die "no Rust $rust_want toolchain under $rustup_home/toolchains (the rust stand-in copies it)"
}

# prepare_rust_context: sets rust_ctx, the rust stand-in's build context: the machine's
# own Rust toolchain, laid out as in the official image.
prepare_rust_context() {
  local rustup_bin host dst kept=() manifest component proxy settings_version
  rustup_home=${RUSTUP_HOME:-$HOME/.rustup}
  rustup_bin=$(command -v rustup) || die "the rust stand-in needs rustup and a $rust_want toolchain on this machine"
  find_rust_toolchain
  host=$("$rust_toolchain/bin/rustc" -vV | sed -n 's/^host: //p')
  rust_ctx=$work/rust-context
  dst=$rust_ctx/usr/local/rustup/toolchains/$rust_version-$host
  mkdir -p "$dst" "$rust_ctx/usr/local/cargo/bin" "$rust_ctx/ca-certificates"
  # Only the components of the official image's minimal profile: rustc, cargo,
  # rust-std. Each other component's files are listed in its rustup manifest.
  : >"$work/toolchain.exclude"
  for manifest in "$rust_toolchain"/lib/rustlib/manifest-*; do
    component=${manifest##*/manifest-}
    case $component in
      rustc-* | cargo-* | rust-std-*) kept+=("$component") ;;
      *)
        echo "./lib/rustlib/manifest-$component" >>"$work/toolchain.exclude"
        sed -n 's/^\(file\|dir\)://p' "$manifest" | sed 's|^|./|' >>"$work/toolchain.exclude"
        ;;
    esac
  done
  say "\$ tar -C $rust_toolchain -c . | tar -C $dst -x  (components: ${kept[*]})"
  tar -C "$rust_toolchain" --anchored -X "$work/toolchain.exclude" -cf - . | tar -C "$dst" -xf -
  printf '%s\n' "${kept[@]}" >"$dst/lib/rustlib/components"
  cp "$rustup_bin" "$rust_ctx/usr/local/cargo/bin/rustup"
  for proxy in cargo cargo-clippy cargo-fmt cargo-miri clippy-driver rls rust-analyzer \
    rust-gdb rust-gdbgui rust-lldb rustc rustdoc rustfmt; do
    ln -s rustup "$rust_ctx/usr/local/cargo/bin/$proxy"
  done
  settings_version=$(sed -n 's/^version = //p' "$rustup_home/settings.toml" 2>/dev/null)
  printf 'version = %s\ndefault_toolchain = "%s"\nprofile = "minimal"\n\n[overrides]\n' \
    "${settings_version:-\"12\"}" "$rust_version-$host" >"$rust_ctx/usr/local/rustup/settings.toml"
  chmod -R a+w "$rust_ctx/usr/local/rustup" "$rust_ctx/usr/local/cargo"
  if [ -d /usr/local/share/ca-certificates ]; then
    cp -a /usr/local/share/ca-certificates/. "$rust_ctx/ca-certificates/"
  fi
  say "toolchain $rust_version-$host ($(du -sh "$dst" | cut -f1)) from $rust_toolchain"
}

# build_standins: the rust, postgres and haproxy stand-ins that are needed, side by side
# (mostly downloads and copies); each one's output to $work/standin-NAME.log.
build_standins() {
  local pids=() names=() build_failed=() i name
  if [ "$build_rust" = 1 ]; then
    say "\$ docker build --network host -t $rust_image -f scripts/docker-standins/rust/Dockerfile $rust_ctx  (log: $work/standin-rust.log)"
    docker build --network host --build-arg "RUST_VERSION=$rust_version" --label "$hash_label=$(definition_hash "$rust_image")" \
      -t "$rust_image" -f scripts/docker-standins/rust/Dockerfile "$rust_ctx" >"$work/standin-rust.log" 2>&1 &
    pids+=($!) names+=(rust)
  fi
  if [ "$build_postgres" = 1 ]; then
    say "\$ docker build --network host -t $postgres_image scripts/docker-standins/postgres  (log: $work/standin-postgres.log)"
    docker build --network host --label "$hash_label=$(definition_hash "$postgres_image")" \
      -t "$postgres_image" scripts/docker-standins/postgres >"$work/standin-postgres.log" 2>&1 &
    pids+=($!) names+=(postgres)
  fi
  if [ "$build_haproxy" = 1 ]; then
    say "\$ docker build --network host -t $haproxy_image scripts/docker-standins/haproxy  (log: $work/standin-haproxy.log)"
    docker build --network host --label "$hash_label=$(definition_hash "$haproxy_image")" \
      -t "$haproxy_image" scripts/docker-standins/haproxy >"$work/standin-haproxy.log" 2>&1 &
    pids+=($!) names+=(haproxy)
  fi
  for i in "${!pids[@]}"; do
    if ! wait "${pids[i]}"; then build_failed+=("${names[i]}"); fi
  done
  for name in "${build_failed[@]}"; do
    printf '    --- last lines of %s ---\n' "$work/standin-$name.log" >&2
    tail -n 40 "$work/standin-$name.log" | sed 's/^/    | /' >&2
  done
  [ "${#build_failed[@]}" = 0 ] || die "building the stand-in(s) failed: ${build_failed[*]}"
  [ "$build_rust" = 0 ] || { built_images+=("$rust_image"); rm -rf "$rust_ctx"; }
  [ "$build_postgres" = 0 ] || built_images+=("$postgres_image")
  [ "$build_haproxy" = 0 ] || built_images+=("$haproxy_image")
}
