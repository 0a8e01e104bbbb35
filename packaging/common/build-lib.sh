# shellcheck shell=bash
# Shared by scripts/build-deb and scripts/build-sysext (sourced, not run).
#
# Finds or builds the binary to package, tells its architecture, and makes
# the architecture-independent payload (man pages, completions, bundle) with
# a binary that runs on this machine.
#
# Environment:
#   SIGHTLINE_BIN       package this binary instead of building
#                       target/release/sightline (or
#                       target/aarch64-unknown-linux-gnu/release/sightline
#                       for --arch arm64 on an x86-64 machine) with
#                       `cargo build --release --locked`
#   SIGHTLINE_HOST_BIN  a binary of the same version that runs here, used for
#                       `manpage`, `completions` and `bundle export` when the
#                       packaged binary is for another architecture
#   SOURCE_DATE_EPOCH   timestamp for files and changelogs (default: the last
#                       commit's time, else now)

sl_root=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
sl_prog=$(basename "$0")

sl_log() { printf '%s: %s\n' "$sl_prog" "$*" >&2; }
sl_die() {
	sl_log "error: $*"
	exit 1
}

# sl_need CMD [PACKAGE]: fail clearly when a tool is missing.
sl_need() {
	command -v "$1" >/dev/null 2>&1 ||
		sl_die "$1 is not installed (apt-get install ${2:-$1}, or run scripts/test-deps)"
}

# The [package] version from Cargo.toml.
sl_cargo_version() {
	local v
	v=$(awk '
		/^\[/ { in_pkg = ($0 == "[package]") }
		in_pkg && /^version[ \t]*=/ { gsub(/.*=[ \t]*"|".*/, ""); print; exit }
	' "$sl_root/Cargo.toml")
	[[ -n $v ]] || sl_die "no [package] version in $sl_root/Cargo.toml"
	printf '%s\n' "$v"
}

# The Debian architecture of an ELF file (amd64 or arm64), from its e_machine.
sl_elf_arch() {
	local f=$1 magic machine
	magic=$(od -An -tx1 -N4 "$f" | tr -d ' \n')
	[[ $magic == 7f454c46 ]] || sl_die "$f is not an ELF binary"
	machine=$(od -An -tu2 -j18 -N2 --endian=little "$f" | tr -d ' \n')
	case $machine in
	62) echo amd64 ;;
	183) echo arm64 ;;
	*) sl_die "$f is for ELF machine $machine; only x86-64 (amd64) and aarch64 (arm64) are packaged" ;;
	esac
}

# The Debian architecture of this machine.
sl_host_arch() {
	case $(uname -m) in
	x86_64) echo amd64 ;;
	aarch64 | arm64) echo arm64 ;;
	*) uname -m ;;
	esac
}

# Rust target triple for a Debian architecture.
sl_rust_target() {
	case $1 in
	amd64) echo x86_64-unknown-linux-gnu ;;
	arm64) echo aarch64-unknown-linux-gnu ;;
	*) sl_die "unsupported architecture $1 (amd64 or arm64)" ;;
	esac
}

# Checks an --arch value.
sl_check_arch() {
	case $1 in
	amd64 | arm64) ;;
	*) sl_die "--arch must be amd64 or arm64, not '$1'" ;;
	esac
}

# cargo build --release --locked into the repository's own target/ (for
# ARCH when it is not this machine's).
sl_cargo_build() {
	local arch=$1 args=(build --release --locked --manifest-path "$sl_root/Cargo.toml" --target-dir "$sl_root/target")
	sl_need cargo
	if [[ $arch != "$(sl_host_arch)" ]]; then
		local triple
		triple=$(sl_rust_target "$arch")
		args+=(--target "$triple")
		if command -v rustup >/dev/null 2>&1 && ! rustup target list --installed | grep -qx "$triple"; then
			sl_die "the Rust standard library for $triple is missing: rustup target add $triple (see docs/packaging.md)"
		fi
		if [[ $arch == arm64 ]]; then
			export CARGO_TARGET_AARCH64_UNKNOWN_LINUX_GNU_LINKER="${CARGO_TARGET_AARCH64_UNKNOWN_LINUX_GNU_LINKER:-aarch64-linux-gnu-gcc}"
			sl_need "$CARGO_TARGET_AARCH64_UNKNOWN_LINUX_GNU_LINKER" gcc-aarch64-linux-gnu
		fi
	fi
	sl_log "building: cargo ${args[*]}"
	cargo "${args[@]}" >&2 || sl_die "cargo build failed; see docs/packaging.md for cross builds"
}

# sl_binary ARCH_OR_EMPTY: prints the binary to package. SIGHTLINE_BIN wins;
# otherwise the repository's release build. cargo runs every time (a no-op
# when the build is current), so a stale target/release binary is never
# packaged.
sl_binary() {
	local want=$1 bin
	if [[ -n ${SIGHTLINE_BIN:-} ]]; then
		[[ -f $SIGHTLINE_BIN ]] || sl_die "SIGHTLINE_BIN=$SIGHTLINE_BIN is not a file"
		bin=$SIGHTLINE_BIN
	else
		[[ -n $want ]] || want=$(sl_host_arch)
		if [[ $want == "$(sl_host_arch)" ]]; then
			bin=$sl_root/target/release/sightline
		else
			bin=$sl_root/target/$(sl_rust_target "$want")/release/sightline
		fi
		sl_cargo_build "$want"
		[[ -f $bin ]] || sl_die "cargo build did not produce $bin"
	fi
	printf '%s\n' "$bin"
}

# sl_host_binary BIN: prints a binary that runs here and has BIN's version.
sl_host_binary() {
	local bin=$1 host
	if [[ $(sl_elf_arch "$bin") == "$(sl_host_arch)" ]]; then
		host=$bin
	elif [[ -n ${SIGHTLINE_HOST_BIN:-} ]]; then
		host=$SIGHTLINE_HOST_BIN
	else
		host=$sl_root/target/release/sightline
		sl_cargo_build "$(sl_host_arch)"
	fi
	[[ -x $host ]] || sl_die "$host is not executable"
	local v
	v=$("$host" --version) || sl_die "$host --version failed"
	[[ $v == "sightline $(sl_cargo_version)" ]] ||
		sl_die "$host says '$v' but Cargo.toml has $(sl_cargo_version); rebuild it"
	printf '%s\n' "$host"
}

# sl_strip ARCH IN OUT: strips like dh_strip does for executables.
sl_strip() {
	local arch=$1 in=$2 out=$3 tool=""
	if [[ $arch == "$(sl_host_arch)" ]] && command -v strip >/dev/null 2>&1; then
		tool="strip"
	elif [[ $arch == arm64 ]] && command -v aarch64-linux-gnu-strip >/dev/null 2>&1; then
		tool=aarch64-linux-gnu-strip
	elif [[ $arch == amd64 ]] && command -v x86_64-linux-gnu-strip >/dev/null 2>&1; then
		tool=x86_64-linux-gnu-strip
	elif command -v llvm-strip >/dev/null 2>&1; then
		tool=llvm-strip
	else
		sl_die "no strip for $arch (apt-get install binutils, or binutils-aarch64-linux-gnu for arm64)"
	fi
	install -m 0755 "$in" "$out"
	"$tool" --remove-section=.comment --remove-section=.note "$out" ||
		sl_die "$tool failed on $in"
}

# SOURCE_DATE_EPOCH, or the last commit's time, or now.
sl_epoch() {
	if [[ -n ${SOURCE_DATE_EPOCH:-} ]]; then
		echo "$SOURCE_DATE_EPOCH"
	elif git -C "$sl_root" log -1 --format=%ct >/dev/null 2>&1; then
		git -C "$sl_root" log -1 --format=%ct
	else
		date +%s
	fi
}

# sl_payload HOST_BIN DIR: man pages (sections 1 and 5, gzipped), completions and the bundle
# in DIR/{man,completions,bundle}.
sl_payload() {
	local host=$1 dir=$2
	mkdir -p "$dir/man" "$dir/completions" "$dir/bundle"
	"$host" manpage --out "$dir/man" >/dev/null || sl_die "$host manpage failed"
	compgen -G "$dir/man/*.1" >/dev/null || sl_die "$host manpage wrote no pages"
	[[ -f $dir/man/sightline.toml.5 ]] || sl_die "$host manpage wrote no sightline.toml.5"
	gzip -9n "$dir"/man/*
	"$host" completions bash >"$dir/completions/sightline.bash" || sl_die "completions bash failed"
	"$host" completions zsh >"$dir/completions/_sightline" || sl_die "completions zsh failed"
	"$host" completions fish >"$dir/completions/sightline.fish" || sl_die "completions fish failed"
	"$host" bundle export --out "$dir/bundle" >/dev/null || sl_die "$host bundle export failed"
	[[ -f $dir/bundle/bundle.tar && -f $dir/bundle/bundle.tar.sha256 ]] ||
		sl_die "bundle export did not write bundle.tar and bundle.tar.sha256"
}

# sl_usr_tree BIN ARCH PAYLOAD DEST: the /usr part shared by the
# .deb and the system extension.
sl_usr_tree() {
	local bin=$1 arch=$2 payload=$3 dest=$4
	install -d -m 0755 "$dest/usr/bin" "$dest/usr/lib/systemd/system" "$dest/usr/lib/tmpfiles.d" \
		"$dest/usr/share/sightline" "$dest/usr/lib/sightline/config.d"
	sl_strip "$arch" "$bin" "$dest/usr/bin/sightline"
	local u
	for u in sightline.service sightline-throttle.service sightline-throttle.timer; do
		install -m 0644 "$sl_root/units/$u" "$dest/usr/lib/systemd/system/$u"
	done
	install -m 0644 "$sl_root/files/tmpfiles.d/sightline.conf" "$dest/usr/lib/tmpfiles.d/sightline.conf"
	install -m 0644 "$payload/bundle/bundle.tar" "$payload/bundle/bundle.tar.sha256" "$dest/usr/share/sightline/"
	install -m 0644 "$sl_root/packaging/common/10-package.toml" "$dest/usr/lib/sightline/config.d/10-package.toml"
	# The pristine commented defaults, which config errors and
	# sightline.toml(5) point to (the copy in /etc is the admin's to edit).
	install -d -m 0755 "$dest/usr/share/doc/sightline"
	install -m 0644 "$sl_root/files/config.toml" "$dest/usr/share/doc/sightline/config.toml"
}

# sl_clamp_mtimes DIR EPOCH: every mtime at most EPOCH (reproducible archives).
sl_clamp_mtimes() {
	find "$1" -newermt "@$2" -print0 | xargs -0r touch --no-dereference --date="@$2"
}
