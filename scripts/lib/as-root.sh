# Sourced by the scripts that install packages or run podman. `as_root CMD…`
# runs CMD as root: directly when the script already is root, else through
# passwordless sudo (what GitHub's hosted runners give their non-root
# user), keeping PATH and the Rust toolchain's location; otherwise it says
# what needs root and fails.
as_root() {
  if [ "$(id -u)" = 0 ]; then
    "$@"
  elif command -v sudo >/dev/null && sudo -n true 2>/dev/null; then
    sudo -n -E env "PATH=$PATH" "RUSTUP_HOME=${RUSTUP_HOME:-$HOME/.rustup}" "CARGO_HOME=${CARGO_HOME:-$HOME/.cargo}" "$@"
  else
    echo "needs root or passwordless sudo: $*" >&2
    return 1
  fi
}
