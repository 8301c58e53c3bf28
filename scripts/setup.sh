#!/usr/bin/env bash
# Install everything Shoal needs on a Debian machine: system packages (as root,
# only those missing), a virtualenv in .venv, and Shoal itself in editable mode
# with its development tools. Idempotent; safe to run again.
set -euo pipefail
cd "$(dirname "$0")/.."

need=()
for pair in sshd:openssh-server ssh:openssh-client ip:iproute2 tc:iproute2 nft:nftables \
            rsync:rsync unshare:util-linux man:man-db groff:groff-base zsh:zsh fish:fish \
            chromium:chromium; do  # chromium: the dashboard's browser tests (Playwright drives it)
  cmd=${pair%%:*}; pkg=${pair#*:}
  command -v "$cmd" >/dev/null 2>&1 || [ -x "/usr/sbin/$cmd" ] || need+=("$pkg")
done
if [ ${#need[@]} -gt 0 ]; then
  if [ "$(id -u)" = 0 ]; then
    echo "setup: installing ${need[*]}" >&2
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
  else
    echo "setup: missing ${need[*]}; install them as root (apt-get install ${need[*]})" >&2
  fi
fi

PY=${PYTHON:-python3}
# A venv cut short (an interrupted first run leaves python without pip) is made again.
if [ ! -x .venv/bin/python ] || ! .venv/bin/python -m pip --version >/dev/null 2>&1; then
  rm -rf .venv
  "$PY" -m venv .venv
fi
.venv/bin/python -m pip install -q --disable-pip-version-check -e '.[dev]' 2>&1 \
  | grep -v "^WARNING: Location" >&2 || true
.venv/bin/python -c 'import shoal, asyncssh, yaml' >/dev/null
# Byte-compile the package as a wheel install would: with PYTHONDONTWRITEBYTECODE set
# (CI images often set it), an editable install would otherwise recompile every module
# on every `shoal` start (~60 ms of `shoal run`'s start-up).
.venv/bin/python -m compileall -q src/shoal >/dev/null
# The console script pip writes imports re (for Windows suffixes) before main(): ~7-10 ms
# of the ~27 ms of client CPU a `shoal run` through `shoal serve` costs (cli/fastpath.py).
# This one does only what main() needs; rewritten only when it differs.
launcher=$(mktemp)
printf '#!%s\nimport sys\nfrom shoal.cli.main import main\n\nif __name__ == "__main__":\n    sys.exit(main())\n' \
  "$(pwd)/.venv/bin/python" > "$launcher"
if cmp -s "$launcher" .venv/bin/shoal; then rm -f "$launcher"; else install -m 0755 "$launcher" .venv/bin/shoal; rm -f "$launcher"; fi

# Shell completion and the man page, generated from the parser (shoal completion, shoal man);
# as root into the system's directories, else into the user's. Rewritten only when changed.
install_generated() {  # install_generated DEST COMMAND...
  local dest=$1 tmp; shift
  tmp=$(mktemp)
  if ! .venv/bin/shoal "$@" > "$tmp"; then
    rm -f "$tmp"; echo "setup: shoal $* failed; $dest not installed" >&2; return 0
  fi
  mkdir -p "$(dirname "$dest")"
  if cmp -s "$tmp" "$dest"; then rm -f "$tmp"; else install -m 0644 "$tmp" "$dest"; rm -f "$tmp"; fi
}
if [ "$(id -u)" = 0 ]; then
  if [ -d /usr/share/bash-completion/completions ]; then
    install_generated /usr/share/bash-completion/completions/shoal completion bash
  else
    install_generated /etc/bash_completion.d/shoal completion bash
  fi
  install_generated /usr/local/share/zsh/site-functions/_shoal completion zsh
  install_generated /usr/local/share/fish/vendor_completions.d/shoal.fish completion fish
  install_generated /usr/local/share/man/man1/shoal.1 man
else
  data=${XDG_DATA_HOME:-$HOME/.local/share}
  install_generated "$data/bash-completion/completions/shoal" completion bash
  install_generated "$data/zsh/site-functions/_shoal" completion zsh
  install_generated "${XDG_CONFIG_HOME:-$HOME/.config}/fish/completions/shoal.fish" completion fish
  install_generated "$data/man/man1/shoal.1" man
fi
