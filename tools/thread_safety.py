#!/usr/bin/python3
"""Clang's thread-safety analysis over every translation unit whose own code or project headers
carry lock annotations (ABSL_GUARDED_BY and friends): each is parsed with clang++ -fsyntax-only
-Wthread-safety -Werror using the build's own flags (compile_commands.json). Exits 1 naming every
warning, so a CI step fails on one. Usage: tools/thread_safety.py BUILD_DIR"""
import concurrent.futures
import json
import os
import re
import shlex
import subprocess
import sys

ANNOTATION = re.compile(rb"ABSL_(PT_)?GUARDED_BY|ABSL_(EXCLUSIVE|SHARED)_LOCKS_REQUIRED|"
                        rb"ABSL_LOCKS_EXCLUDED|ABSL_ACQUIRED_(AFTER|BEFORE)")
INCLUDE = re.compile(rb'^\s*#\s*include\s+"([^"]+)"', re.M)
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SCANNED = ("libs", "services", "tools", "kernels", "bench", "tests")


def include_dirs(args):
    dirs = []
    for i, a in enumerate(args):
        for flag in ("-I", "-isystem"):
            if a == flag and i + 1 < len(args):
                dirs.append(args[i + 1])
            elif a.startswith(flag) and len(a) > len(flag):
                dirs.append(a[len(flag):])
    return dirs


def annotated(path, dirs, seen):
    """Whether `path` or a project header it includes (transitively) has an annotation."""
    if path in seen:
        return False
    seen.add(path)
    try:
        text = open(path, "rb").read()
    except OSError:
        return False
    if ANNOTATION.search(text):
        return True
    here = os.path.dirname(path)
    for inc in INCLUDE.findall(text):
        inc = inc.decode()
        for d in [here] + dirs:
            cand = os.path.normpath(os.path.join(d, inc))
            if cand.startswith(ROOT + os.sep) and "/build" not in cand[len(ROOT):] \
                    and os.path.exists(cand):
                if annotated(cand, dirs, seen):
                    return True
                break
    return False


def clang_args(args, source):
    out = ["clang++", "-fsyntax-only", "-Wthread-safety", "-Wthread-safety-beta", "-Werror",
           "-Wno-unknown-warning-option"]
    skip = False
    for a in args[1:]:
        if skip:
            skip = False
            continue
        if a in ("-o", "-c", "-MF", "-MT", "-MQ"):
            skip = True
            continue
        if a in ("-MD", "-MMD", source) or a.endswith("ccache"):
            continue
        if a.startswith("-W") and a != "-Werror":
            continue  # the build's own warnings are gcc's business
        out.append(a)
    return out + [source]


def main():
    build = sys.argv[1] if len(sys.argv) > 1 else "build"
    commands = json.load(open(os.path.join(build, "compile_commands.json")))
    jobs = []
    for c in commands:
        source = os.path.abspath(os.path.join(c["directory"], c["file"]))
        rel = os.path.relpath(source, ROOT)
        if not source.endswith(".cc") or not rel.startswith(SCANNED):
            continue
        args = c["arguments"] if "arguments" in c else shlex.split(c["command"])
        if args[0].endswith("ccache"):
            args = args[1:]
        if annotated(source, include_dirs(args), set()):
            jobs.append((rel, c["directory"], clang_args(args, source)))
    failed = []
    with concurrent.futures.ThreadPoolExecutor(os.cpu_count() or 2) as pool:
        runs = {pool.submit(subprocess.run, a, cwd=d, capture_output=True, text=True): rel
                for rel, d, a in jobs}
        for f in concurrent.futures.as_completed(runs):
            r = f.result()
            if r.returncode != 0:
                failed.append(runs[f])
                sys.stderr.write(r.stderr)
    print(f"thread-safety analysis: {len(jobs)} annotated translation units, "
          f"{len(failed)} with warnings")
    for rel in sorted(failed):
        print(f"  {rel}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
