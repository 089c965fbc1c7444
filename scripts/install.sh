#!/usr/bin/env bash
# `make install`: lokid and lokictl on PATH for this user, as pipx would put them there.
# A private virtual environment under $PREFIX/share/lokid/venv holds a copy of this
# checkout (not an editable link: the clone may be moved or deleted afterwards);
# $PREFIX/bin gets the two commands, plus lokictl's man page and shell completions.
#   usage: scripts/install.sh [PREFIX]      (default: ~/.local)
#          scripts/install.sh --uninstall [PREFIX]
set -euo pipefail
cd "$(dirname "$0")/.."
uninstall=0
if [ "${1:-}" = "--uninstall" ]; then uninstall=1; shift; fi
prefix="${1:-$HOME/.local}"
venv="$prefix/share/lokid/venv"
bin="$prefix/bin"
man="$prefix/share/man/man1/lokictl.1"
bash_completion="$prefix/share/bash-completion/completions/lokictl"
zsh_completion="$prefix/share/zsh/site-functions/_lokictl"
fish_completion="$prefix/share/fish/vendor_completions.d/lokictl.fish"

if [ "$uninstall" = 1 ]; then
    for cmd in lokid lokictl; do
        if [ -L "$bin/$cmd" ]; then rm -f "$bin/$cmd"; fi
    done
    rm -rf "$venv" "$man" "$bash_completion" "$zsh_completion" "$fish_completion"
    rmdir "$(dirname "$venv")" 2>/dev/null || true
    echo "removed lokid and lokictl from $prefix"
    exit 0
fi

rm -rf "$venv"
mkdir -p "$(dirname "$venv")"
bash scripts/bootstrap-python.sh "$venv"
"$venv/bin/python" -m pip install -q --disable-pip-version-check .
mkdir -p "$bin" "$(dirname "$man")" "$(dirname "$bash_completion")" \
    "$(dirname "$zsh_completion")" "$(dirname "$fish_completion")"
for cmd in lokid lokictl; do
    ln -sfn "$venv/bin/$cmd" "$bin/$cmd"
done
"$venv/bin/lokictl" man > "$man"
"$venv/bin/lokictl" completion bash > "$bash_completion"
"$venv/bin/lokictl" completion zsh > "$zsh_completion"
"$venv/bin/lokictl" completion fish > "$fish_completion"
echo "installed lokid and lokictl $("$venv/bin/lokictl" --version | cut -d' ' -f2) into $bin"
echo "  man page: $man; completions for bash, zsh and fish under $prefix/share"
case ":$PATH:" in
    *":$bin:"*) ;;
    *) echo "  $bin is not on your PATH: add  export PATH=\"$bin:\$PATH\"  to your shell's rc file" ;;
esac
