#!/usr/bin/env python3
"""Bring a kernel work tree to "pristine base + our overlay files + our patches".

Each run computes the wanted content of every file the overlay or the patches touch, starting from
the pristine unpack, and writes only files whose content differs, so kbuild rebuilds exactly what
changed. Files touched by a previous run but no longer by this one are restored from pristine (or
removed if the base has no such file). Patches are applied to pristine copies every time, so a patch
is never applied twice and an edited patch takes effect on the next run.

usage: overlay.py REPO PRISTINE WORK
       overlay.py --list REPO      (print the overlay files, one per line: make-patches' list)
       overlay.py --patch-sources REPO SOURCE DEST PREFIX
           (for the out-of-tree kvm.ko: our patches' changes to the C files (.c, .h) under PREFIX,
            applied to SOURCE's copies and written to DEST, each only if changed; prints each
            path. A SOURCE that already carries a patch, such as our own work tree, is left as
            it is.)
       overlay.py --patch-sections REPO DEST PREFIX
           (for the DKMS package: the same changes as patches of their own, one per patch and file,
            written to DEST in the order they apply, for dkms/build to apply with patch -p1)
"""

import os
import pathlib
import shutil
import subprocess
import sys
import tempfile

# Top-level directories of the repository that mirror kernel paths.
OVERLAY_ROOTS = ("virt", "rust", "Documentation", "tools", "include", "arch")
# Files under those roots that do not belong in the kernel tree: our own programs, and what only
# the out-of-tree kvm.ko uses (the top-level Kbuild): its C helpers, which in tree come from
# rust/helpers, and its copy of the buffers' UAPI, which in tree is include/uapi/linux/kvm.h.
NOT_KERNEL = ("tools/rtc-vmm/", "virt/kvm/rust/helpers.c", "virt/kvm/rust/helpers.h",
              "virt/kvm/rust/uapi.h")
MANIFEST = ".kvmrs-overlay-manifest"


def tracked_files(repo: pathlib.Path) -> list[str]:
    """Overlay files: what git knows about (tracked or untracked, not ignored) under OVERLAY_ROOTS."""
    out = subprocess.run(
        ["git", "-C", str(repo), "ls-files", "--cached", "--others", "--exclude-standard", "-z", "--", *OVERLAY_ROOTS],
        check=True, capture_output=True).stdout.decode()
    return sorted({f for f in out.split("\0")
                   if f and (repo / f).is_file() and not f.startswith(NOT_KERNEL)})


def file_sections(patch: pathlib.Path):
    """Split a patch into (path, text) per file it changes, dropping the commit message. The path
    is the new file's (`+++ b/`), or the old one's (`--- a/`) for a file the patch deletes."""
    sections, current, old, new = [], [], None, None

    def name(line, prefix):
        return line[len(prefix):].split("\t")[0].strip() if line.startswith(prefix) else None

    def close():
        if current:
            sections.append((new or old, "".join(current)))

    for line in patch.read_text(errors="replace").splitlines(keepends=True):
        if line.startswith("--- a/") or line.startswith("--- /dev/null"):
            close()
            current, old, new = [line], name(line, "--- a/"), None
        elif current:
            if new is None and line.startswith("+++ "):
                new = name(line, "+++ b/")
            current.append(line)
    close()
    return sections


def patch_targets(patch: pathlib.Path) -> set[str]:
    return {rel for rel, _ in file_sections(patch)}


def wanted_contents(repo, pristine):
    """Map each touched path to its wanted bytes, or None when the result must not exist."""
    wanted = {}
    patches = sorted((repo / "patches").glob("*.patch"))
    with tempfile.TemporaryDirectory() as tmp:
        tmp = pathlib.Path(tmp)
        targets = set()
        for p in patches:
            targets |= patch_targets(p)
        for rel in targets:
            if (pristine / rel).is_file():
                (tmp / rel).parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(pristine / rel, tmp / rel)
        for p in patches:
            r = subprocess.run(["patch", "-p1", "--batch", "--forward", "--silent", "-d", str(tmp), "-i", str(p)],
                               capture_output=True, text=True)
            if r.returncode:
                sys.exit(f"error: {p.name} does not apply to the base tree:\n{r.stdout}{r.stderr}")
        for rel in targets:
            f = tmp / rel
            wanted[rel] = f.read_bytes() if f.is_file() else None
    for rel in tracked_files(repo):
        if rel in wanted:
            sys.exit(f"error: {rel} is both an overlay file and patched; keep one")
        wanted[rel] = (repo / rel).read_bytes()
    return wanted


def patch_sources(repo, source, dest, prefix):
    """--patch-sources: see the module docstring."""
    with tempfile.TemporaryDirectory() as tmp:
        tmp = pathlib.Path(tmp)
        done = []
        for p in sorted((repo / "patches").glob("*.patch")):
            for rel, text in file_sections(p):
                if not rel.startswith(prefix) or not rel.endswith((".c", ".h")):
                    continue
                work = tmp / rel
                if not work.exists():
                    if not (source / rel).is_file():
                        sys.exit(f"error: {p.name} changes {rel}, which {source} does not have")
                    work.parent.mkdir(parents=True, exist_ok=True)
                    shutil.copy2(source / rel, work)
                    done.append(rel)
                run = ["patch", "-p1", "--batch", "--silent", "-d", str(tmp)]
                if subprocess.run(run + ["--forward"], input=text, text=True,
                                  capture_output=True).returncode == 0:
                    continue
                if subprocess.run(run + ["--reverse", "--dry-run"], input=text, text=True,
                                  capture_output=True).returncode == 0:
                    continue  # the source already carries it
                sys.exit(f"error: {p.name} does not apply to {source / rel}")
        for rel in done:
            write_if_changed(dest / rel, (tmp / rel).read_bytes())
            print(rel)


def patch_sections(repo, dest, prefix):
    """--patch-sections: see the module docstring."""
    dest.mkdir(parents=True, exist_ok=True)
    n = 0
    for p in sorted((repo / "patches").glob("*.patch")):
        for rel, text in file_sections(p):
            if rel.startswith(prefix) and rel.endswith((".c", ".h")):
                n += 1
                (dest / f"{n:02d}-{p.name[:4]}-{rel.replace('/', '_')}.patch").write_text(text)
                print(rel)


def write_if_changed(path: pathlib.Path, data) -> bool:
    if data is None:
        if path.exists():
            path.unlink()
            return True
        return False
    if path.is_file() and path.read_bytes() == data:
        return False
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".kvmrs-tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)
    return True


def main():
    if sys.argv[1:2] == ["--patch-sources"]:
        repo, source, dest = (pathlib.Path(a).resolve() for a in sys.argv[2:5])
        patch_sources(repo, source, dest, sys.argv[5])
        return
    if sys.argv[1:2] == ["--patch-sections"]:
        patch_sections(pathlib.Path(sys.argv[2]).resolve(), pathlib.Path(sys.argv[3]), sys.argv[4])
        return
    if sys.argv[1:2] == ["--list"]:
        print("".join(f"{rel}\n" for rel in tracked_files(pathlib.Path(sys.argv[2]).resolve())), end="")
        return
    repo, pristine, work = (pathlib.Path(a).resolve() for a in sys.argv[1:4])
    wanted = wanted_contents(repo, pristine)
    manifest = work / MANIFEST
    previous = set(manifest.read_text().split("\n")) - {""} if manifest.exists() else set()
    changed = []
    for rel in sorted(previous - wanted.keys()):
        base = pristine / rel
        if write_if_changed(work / rel, base.read_bytes() if base.is_file() else None):
            changed.append(f"restored {rel}")
    for rel, data in sorted(wanted.items()):
        if write_if_changed(work / rel, data):
            changed.append(f"updated {rel}")
    manifest.write_text("".join(f"{rel}\n" for rel in sorted(wanted)))
    for line in changed:
        print(f"    {line}")


if __name__ == "__main__":
    main()
