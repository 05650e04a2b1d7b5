"""The packages cellclr needs beyond torch, pinned to the versions installed here, for another
Python: what ``bench/gpu_bundle.sh`` downloads for a GPU machine that has only Python and torch.

    python bench/bundle_requirements.py [--python-version 3.12] [--extra pytest ...]

Walks the requirements of the installed ``cellclr`` (and of the ``--extra`` packages, by default
pytest for gpu_check's tests) through the installed distributions, with markers evaluated for
the target Python on Linux; stops at torch, which the target machine brings. Prints one
``name==version`` a line (names normalised, so pydantic_core is pydantic-core), and, on stderr,
the requirements the target needs that are not installed here (printed unpinned).
"""

from __future__ import annotations

import argparse
import platform
import re
import sys
from importlib import metadata

from packaging.markers import default_environment
from packaging.requirements import Requirement

SKIP = {"torch"}  # the GPU machine's own build


def normalise(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def closure(roots: list[str], python_version: str) -> tuple[dict[str, str], set[str]]:
    env = default_environment()
    env.update(
        python_version=python_version,
        python_full_version=f"{python_version}.0",
        sys_platform="linux",
        platform_system="Linux",
        os_name="posix",
        platform_machine=platform.machine() or "x86_64",
    )
    pinned: dict[str, str] = {}
    missing: set[str] = set()
    todo = [Requirement(r) for r in roots]
    while todo:
        req = todo.pop()
        name = normalise(req.name)
        if name in SKIP or name in pinned:
            continue
        try:
            dist = metadata.distribution(req.name)
        except metadata.PackageNotFoundError:
            missing.add(f"{req.name}{req.specifier}")
            continue
        pinned[name] = dist.version
        for text in dist.requires or []:
            sub = Requirement(text)
            extras = req.extras or {""}
            if sub.marker is None or any(sub.marker.evaluate({**env, "extra": e}) for e in extras):
                todo.append(sub)
    return pinned, missing


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--python-version", default=f"{sys.version_info[0]}.{sys.version_info[1]}")
    ap.add_argument("--extra", action="append", default=None, help="more packages (pytest)")
    args = ap.parse_args()
    pinned, missing = closure(["cellclr", *(args.extra or ["pytest"])], args.python_version)
    pinned.pop("cellclr", None)  # built from the checkout
    for name in sorted(pinned):
        print(f"{name}=={pinned[name]}")
    for req in sorted(missing):
        print(req)
        print(f"bundle_requirements: {req} is not installed here: unpinned", file=sys.stderr)


if __name__ == "__main__":
    main()
