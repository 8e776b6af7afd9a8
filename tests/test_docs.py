"""The documentation agrees with the repository: README.md and docs/*.md.

(a) every relative link and image resolves to a file in the repository (anchors are not checked; http(s) links are
ignored); (b) every config file named (``configs/x.yml`` or ``x.yml``) is in configs/, unless it is one of the example
files a reader writes (EXAMPLE_FILES); (c) every ``--flag`` is one that its program takes: flags after ``main.py`` on
a command line are checked against ``main.py --help``, flags after another script (benchmarks/*.py, tools/*.py,
torchrun, ...) against that script's parser, and flags named without a program against all of them; (d) the config
keys of docs/configs.md's "Every key" tables are exactly the keys of configs/schema.py.
"""
import ast
import contextlib
import dataclasses
import io
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]

# files the docs name as examples for the reader to write (overlays, the broken configs of the error table) or that a
# run writes; they are not shipped in configs/
EXAMPLE_FILES = {
    "ssm_compiled.yml",                                      # docs/reliability.md: a refused config
    "config.yml",                                            # the config a run writes into run/logs/<doc>/
    "my.yml", "inpaint.yml", "bpd.yml", "eval_is.yml", "longer.yml", "new_lr.yml", "fastfid.yml", "published.yml",
    "table1.yml", "table1_denoise.yml",                                                  # overlays
    "missing.yml", "empty.yml", "broken.yml", "typo.yml", "type.yml", "neglr.yml", "sigmas.yml", "batch0.yml",
    "odd.yml", "mnist_offline.yml", "digits_tiny.yml", "big.yml", "dup.yml",            # the error table
}

# programs other than the project's Python scripts, with the flags the docs use
EXTERNAL_FLAGS = {
    "torchrun": {"--standalone", "--nproc_per_node", "--nnodes", "--run-path"},
    "tensorboard": {"--logdir"},
    "pytest": set(),
    "pip": set(),
}

LINK = re.compile(r"!?\[[^\]]*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
IMG = re.compile(r"<img\b[^>]*\bsrc=[\"']([^\"']+)[\"']", re.I)
CONFIG_NAME = re.compile(r"(?<![\w/.-])(configs/)?([\w-]+\.yml)\b")
FLAG = re.compile(r"(?<![\w-])(--[a-z][a-z0-9_-]*)")
PROGRAM = re.compile(r"(?<![\w/])(main\.py|benchmarks/\w+\.(?:py|sh)|tools/\w+\.py|torchrun|tensorboard|pytest|pip)\b")
SPAN = re.compile(r"(`+)(.+?)\1")


def lines_of(page):
    """(line number, text, inside a fenced code block) for every line of ``page``."""
    out, fenced = [], False
    for n, line in enumerate(page.read_text(encoding="utf-8").splitlines(), 1):
        if line.lstrip().startswith("```"):
            fenced = not fenced
            continue
        out.append((n, line, fenced))
    return out


def where(page, n):
    return f"{page.relative_to(ROOT)}:{n}"


# ---------------------------------------------------------------- (a) links and images


def test_every_relative_link_and_image_resolves():
    broken = []
    for page in PAGES:
        for n, line, fenced in lines_of(page):
            if fenced:
                continue
            for target in LINK.findall(line) + IMG.findall(line):
                if re.match(r"[a-zA-Z][a-zA-Z0-9+.-]*:", target) or target.startswith("#"):
                    continue                                    # http(s), mailto, ...; an anchor on the same page
                path = (page.parent / target.split("#", 1)[0]).resolve()
                if not path.exists() or ROOT not in (path, *path.parents):
                    broken.append(f"{where(page, n)}: link {target!r} does not resolve to a file in the repository")
    assert not broken, "broken links:\n" + "\n".join(broken)


# ---------------------------------------------------------------- (b) config files


def test_every_named_config_file_exists():
    shipped = {p.name for p in (ROOT / "configs").glob("*.yml")}
    missing = []
    for page in PAGES:
        for n, line, _ in lines_of(page):
            for prefix, name in CONFIG_NAME.findall(line):
                if name in shipped or (not prefix and name in EXAMPLE_FILES):
                    continue
                missing.append(f"{where(page, n)}: config {prefix}{name} is not in configs/")
    assert not missing, ("config files named but not shipped (add them to configs/, or to EXAMPLE_FILES if the "
                         "reader writes them):\n" + "\n".join(missing))


# ---------------------------------------------------------------- (c) flags


def main_flags():
    """The long flags ``main.py --help`` lists."""
    import main
    out = io.StringIO()
    with contextlib.redirect_stdout(out), pytest.raises(SystemExit):
        main.parse_args(["--help"])
    flags = set(FLAG.findall(out.getvalue()))
    assert {"--runner", "--config", "--doc", "--test"} <= flags, out.getvalue()
    return flags


def script_flags(path):
    """The long flags a script declares with ``add_argument`` (read from its source, not run)."""
    flags = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Call) and getattr(node.func, "attr", None) == "add_argument":
            flags |= {a.value for a in node.args if isinstance(a, ast.Constant) and str(a.value).startswith("--")}
    return flags


def program_flags():
    programs = {"main.py": main_flags(), **EXTERNAL_FLAGS}
    for folder in ("benchmarks", "tools"):
        for script in (ROOT / folder).glob("*.py"):
            programs[f"{folder}/{script.name}"] = script_flags(script)
    gpu_check = ROOT / "benchmarks" / "gpu_check.sh"
    programs["benchmarks/gpu_check.sh"] = (set(FLAG.findall(gpu_check.read_text(encoding="utf-8")))
                                           if gpu_check.exists() else {"--dry-run"})
    return programs


def flag_uses(page):
    """(line number, flag, program or None) for every ``--flag`` of ``page``: on a command line (a code block line
    or an inline code span) the program is the last one named before the flag."""
    for n, line, fenced in lines_of(page):
        pieces = [line] if fenced else [m.group(2) for m in SPAN.finditer(line)] + [SPAN.sub(" ", line)]
        for piece in pieces:
            programs = [(m.start(), m.group(1)) for m in PROGRAM.finditer(piece)]
            for m in FLAG.finditer(piece):
                before = [name for at, name in programs if at < m.start()]
                yield n, m.group(1), before[-1] if before else None


def test_every_flag_is_one_its_program_takes():
    programs = program_flags()
    known = set().union(*programs.values())
    wrong = []
    for page in PAGES:
        for n, flag, program in flag_uses(page):
            if program is None and flag not in known:
                wrong.append(f"{where(page, n)}: {flag} is not a flag of main.py (nor of any script the docs name)")
            elif program is not None and flag not in programs[program]:
                wrong.append(f"{where(page, n)}: {flag} is not a flag of {program} "
                             f"(it takes {', '.join(sorted(programs[program])) or 'none'})")
    assert not wrong, "unknown flags:\n" + "\n".join(wrong)


# ---------------------------------------------------------------- (d) config keys


def documented_keys():
    """The keys in the first column of the tables under docs/configs.md's "## Every key", with their lines."""
    keys, inside = {}, False
    for n, line, fenced in lines_of(ROOT / "docs" / "configs.md"):
        if line.startswith("## "):
            inside = line.strip() == "## Every key"
        if inside and not fenced and line.startswith("|"):
            first = line.strip("|").split("|", 1)[0]
            for key in re.findall(r"`([a-z_]+\.[a-z_0-9]+)`", first):
                keys.setdefault(key, n)
    return keys


def schema_keys():
    from configs.schema import Config
    return {f"{section.name}.{f.name}" for section in dataclasses.fields(Config)
            for f in dataclasses.fields(section.default_factory)}


def test_every_config_key_is_documented_and_exists():
    documented, schema = documented_keys(), schema_keys()
    assert documented, "docs/configs.md has no '## Every key' tables"
    errors = [f"docs/configs.md:{n}: {key} is documented but configs/schema.py has no such key"
              for key, n in sorted(documented.items()) if key not in schema]
    errors += [f"configs/schema.py: {key} is not documented in docs/configs.md (## Every key)"
               for key in sorted(schema - set(documented))]
    assert not errors, "docs/configs.md and configs/schema.py disagree:\n" + "\n".join(errors)
