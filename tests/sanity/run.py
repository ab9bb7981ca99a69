"""Run `ansible-test sanity` on this checkout as the collection it is (`make sanity`).

ansible-test only runs from a real `.../ansible_collections/<namespace>/<name>/` directory; the symlink in
collections/ resolves back to the checkout, so it does not count. This script copies the files git knows of
(committed, staged or new and not ignored: what you are about to commit) into
`.sanity/ansible_collections/pgdr/supabase/` (gitignored), makes that copy a git tree of its own so ansible-test
lists the same files, and runs ansible-test there with HOME at `.sanity/home`: its per-test virtual environments
(exact pins from ansible-test's own requirement files) are cached there between runs and nothing is written to
the user's home. Arguments are passed to `ansible-test sanity`, e.g. `--test validate-modules`.
"""

import os
import shutil
import subprocess
import sys
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[2]
WORK = ROOT / ".sanity"
HOME = WORK / "home"
PYTHON = f"{sys.version_info.major}.{sys.version_info.minor}"
# The symlink that lets a checkout find itself by FQCN; the staged copy is the collection itself.
NOT_STAGED = ("collections/",)


def collection_name():
    """Return (namespace, name) from galaxy.yml."""
    galaxy = yaml.safe_load((ROOT / "galaxy.yml").read_text(encoding="utf-8"))
    return galaxy["namespace"], galaxy["name"]


def checkout_files():
    """Return the paths git would commit now: tracked, staged or new, not ignored, not deleted."""
    try:
        listing = subprocess.run(
            ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
            cwd=ROOT,
            check=True,
            capture_output=True,
        ).stdout
    except (OSError, subprocess.CalledProcessError) as exc:
        sys.exit(f"sanity: cannot list the files of {ROOT} with git ({exc}); run it from a git checkout")
    paths = sorted({p.decode() for p in listing.split(b"\0") if p})
    return [p for p in paths if not p.startswith(NOT_STAGED) and os.path.lexists(ROOT / p)]


def stage(target):
    """Copy the checkout's files into target (emptied first), keeping modes and symlinks."""
    if target.exists():
        shutil.rmtree(target)
    target.mkdir(parents=True)
    paths = checkout_files()
    for path in paths:
        source, copy = ROOT / path, target / path
        copy.parent.mkdir(parents=True, exist_ok=True)
        if source.is_symlink():
            copy.symlink_to(os.readlink(source))
        else:
            shutil.copy2(source, copy)
    subprocess.run(["git", "init", "-q"], cwd=target, check=True)
    return len(paths)


def pip_bootstrap_version():
    """Return the pip version ansible-test bootstraps into its virtual environments."""
    from ansible_test._internal.python_requirements import get_venv_packages

    class Python:
        version = PYTHON

    return get_venv_packages(Python())["pip"]


def install_pip_bootstrap():
    """Put get_pip.py where ansible-test looks before it tries to download its own."""
    cache = HOME / ".ansible" / "test" / "cache"
    cache.mkdir(parents=True, exist_ok=True)
    version = pip_bootstrap_version()
    shutil.copyfile(Path(__file__).with_name("get_pip.py"), cache / f"get_pip_{version.replace('.', '_')}.py")


def main():
    namespace, name = collection_name()
    target = WORK / "ansible_collections" / namespace / name
    count = stage(target)
    install_pip_bootstrap()
    print(f"sanity: {count} files staged in {target.relative_to(ROOT)}", flush=True)
    env = dict(os.environ, HOME=str(HOME))
    ansible_test = Path(sys.executable).with_name("ansible-test")
    command = [str(ansible_test), "sanity", "--python", PYTHON, *sys.argv[1:]]
    sys.exit(subprocess.run(command, cwd=target, env=env, check=False).returncode)


if __name__ == "__main__":
    main()
