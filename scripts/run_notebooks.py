#!/usr/bin/env python3
"""Executes the evcxr (Rust) notebooks without Jupyter and writes their outputs in place.

evcxr_jupyter needs a crates.io download and a ~30-minute build; where it cannot be had (an
offline machine) this runs the same cells the way evcxr's semantics give them:

- every `:dep NAME = SPEC` line becomes a dependency of one generated crate (paths are taken
  relative to the notebook, as evcxr does), built `--release --offline` with the repository's
  Cargo.lock and its target directory, so the crate and its dependencies are not compiled again;
- the code cells, in order, become the body of one `main`: a variable of one cell is seen by the
  next, as in a kernel session;
- a cell whose last statement is an expression shows its value as evcxr does: through the
  value's own `evcxr_display` method when its type has one (an inherent method wins over the
  fallback trait below, exactly as method resolution picks it), else its `Debug` text;
- stdout and stderr are split per cell by marker lines; `EVCXR_BEGIN_CONTENT mime … 
  EVCXR_END_CONTENT` blocks become rich outputs; a panic becomes the failing cell's error and the
  cells after it are left unexecuted.

The notebook records what executed it (`metadata.exaone_compress`: runner, commit, date).

    python3 scripts/run_notebooks.py [notebooks/NAME.ipynb ...]     # default: every notebook
"""

import argparse
import datetime
import json
import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
MARK = "\x1eNB_CELL"
FALLBACK = r"""
#[allow(dead_code)]
trait NbShowDebug {
    fn evcxr_display(&self);
}
impl<T: std::fmt::Debug + ?Sized> NbShowDebug for T {
    fn evcxr_display(&self) {
        println!("EVCXR_BEGIN_CONTENT text/plain\n{:?}\nEVCXR_END_CONTENT", self);
    }
}
fn nb_cell(i: usize) {
    use std::io::Write;
    let _ = std::io::stdout().flush();
    println!("\x1eNB_CELL {i}");
    eprintln!("\x1eNB_CELL {i}");
    let _ = std::io::stdout().flush();
}
"""


def lines_of(text):
    """Lines ending in "\\n" only (str.splitlines also breaks at \\x1e, the marker's first char)."""
    return [l for l in re.split(r"(?<=\n)", text) if l]


def source(cell):
    s = cell.get("source", "")
    return "".join(s) if isinstance(s, list) else s


def strip_comments_and_strings(code):
    """The code with comments blanked and string/char literals replaced by spaces (same
    length), so that brackets and semicolons can be counted."""
    out, i, n = [], 0, len(code)
    while i < n:
        c = code[i]
        if code.startswith("//", i):
            j = code.find("\n", i)
            j = n if j < 0 else j
            out.append(" " * (j - i))
            i = j
        elif code.startswith("/*", i):
            j = code.find("*/", i + 2)
            j = n if j < 0 else j + 2
            out.append(re.sub(r"[^\n]", " ", code[i:j]))
            i = j
        elif c == "r" and re.match(r'r#*"', code[i:]) and (i == 0 or not (code[i - 1].isalnum() or code[i - 1] == "_")):
            hashes = re.match(r"r(#*)\"", code[i:]).group(1)
            end = code.find('"' + hashes, i + 2 + len(hashes))
            j = n if end < 0 else end + 1 + len(hashes)
            out.append(re.sub(r"[^\n]", " ", code[i:j]))
            i = j
        elif c == '"':
            j = i + 1
            while j < n and code[j] != '"':
                j += 2 if code[j] == "\\" else 1
            j = min(j + 1, n)
            out.append(re.sub(r"[^\n]", " ", code[i:j]))
            i = j
        elif c == "'":
            m = re.match(r"'(\\.[^']*|[^\\'])'", code[i:])
            if m:  # a char literal (a lifetime has no closing quote)
                out.append(" " * len(m.group(0)))
                i += len(m.group(0))
            else:
                out.append(c)
                i += 1
        else:
            out.append(c)
            i += 1
    return "".join(out)


ITEM = re.compile(r"^(pub\s+)?(use|fn|struct|enum|impl|trait|mod|const|static|type|let|extern|macro_rules!)\b")


def split_last_expression(code):
    """(statements, expression) where `expression` is the cell's trailing expression (None when
    the cell ends with a statement or an item)."""
    bare = strip_comments_and_strings(code)
    end = len(bare.rstrip())
    if end == 0 or bare[end - 1] == ";":
        return code, None
    depth, start = 0, 0
    for i, c in enumerate(bare[:end]):
        if c in "([{":
            depth += 1
        elif c in ")]}":
            depth -= 1
            if depth == 0 and c == "}":
                rest = bare[i + 1 : end].lstrip()
                if rest and not re.match(r"(else\b|[.?)\],]|as\b|[-+*/%&|^=<>!])", rest):
                    start = i + 1
        elif c == ";" and depth == 0:
            start = i + 1
    expr = code[start:end].strip()
    if not expr or ITEM.match(strip_comments_and_strings(expr).strip()):
        return code, None
    return code[:start], expr


def main_rs(cells):
    body = []
    for i, code in cells:
        stmts, expr = split_last_expression(code)
        body.append(f"nb_cell({i});")
        body.append(stmts)
        if expr is not None:
            body.append(f"{{ let nb_value = &({expr}); nb_value.evcxr_display(); }}")
    return "#![allow(unused)]\n" + FALLBACK + "\nfn main() {\n" + "\n".join(body) + "\n}\n"


def cargo_toml(deps, nb_dir):
    lines = ['[package]\nname = "notebook"\nversion = "0.0.0"\nedition = "2021"\n\n[workspace]\n\n[dependencies]']
    for d in deps:
        name, spec = [x.strip() for x in d.split("=", 1)]
        spec = re.sub(r'path\s*=\s*"([^"]+)"', lambda m: 'path = ' + json.dumps(str((nb_dir / m.group(1)).resolve())), spec)
        lines.append(f"{name} = {spec}")
    # the repository's release profile, so that its compiled dependencies are reused
    lines.append("\n[profile.release]\ndebug = false\nincremental = true\n")
    return "\n".join(lines)


def outputs_of(stdout, stderr):
    """Per cell index: the list of notebook outputs, from the marker-split streams."""
    cells = {}

    def split(text):
        parts, cur = {}, None
        for line in lines_of(text):
            if line.startswith(MARK):
                cur = int(line[len(MARK):].strip())
                parts[cur] = ""
            elif cur is not None:
                parts[cur] += line
        return parts

    out, err = split(stdout), split(stderr)
    for i in set(out) | set(err):
        outs, text = [], out.get(i, "")
        plain = ""
        pos = 0
        for m in re.finditer(r"EVCXR_BEGIN_CONTENT (\S+)\n(.*?)\nEVCXR_END_CONTENT\n?", text, re.S):
            plain += text[pos : m.start()]
            pos = m.end()
            mime, content = m.group(1), m.group(2)
            if plain:
                outs.append({"name": "stdout", "output_type": "stream", "text": plain})
                plain = ""
            data = {mime: content if mime == "image/png" else lines_of(content)}
            outs.append({"output_type": "execute_result", "data": data, "metadata": {}, "execution_count": None})
        plain += text[pos:]
        if plain:
            outs.append({"name": "stdout", "output_type": "stream", "text": plain})
        if err.get(i):
            outs.append({"name": "stderr", "output_type": "stream", "text": err[i]})
        cells[i] = outs
    return cells


def commit():
    try:
        c = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()
        dirty = subprocess.run(["git", "-C", str(ROOT), "status", "--porcelain", "--untracked-files=no", "--", ".", ":!notebooks"], capture_output=True, text=True).stdout.strip()
        return c + ("+changes" if dirty else "")
    except OSError:
        return "unknown"


def run(path, target_dir):
    nb = json.loads(path.read_text())
    deps, cells = [], []
    code_cells = [c for c in nb["cells"] if c["cell_type"] == "code"]
    for i, c in enumerate(code_cells, start=1):
        lines = source(c).splitlines()
        deps += [l[len(":dep"):].strip() for l in lines if l.startswith(":dep")]
        cells.append((i, "\n".join(l for l in lines if not l.startswith(":"))))
    with tempfile.TemporaryDirectory(prefix="notebook-") as d:
        d = Path(d)
        (d / "src").mkdir()
        (d / "Cargo.toml").write_text(cargo_toml(deps, path.parent.resolve()))
        (d / "src" / "main.rs").write_text(main_rs(cells))
        lock = ROOT / "Cargo.lock"
        if lock.exists():
            (d / "Cargo.lock").write_bytes(lock.read_bytes())
        env = dict(os.environ, CARGO_TARGET_DIR=str(target_dir))
        build = subprocess.run(["cargo", "build", "--release", "--offline", "--quiet"], cwd=d, env=env, capture_output=True, text=True)
        if build.returncode != 0:
            sys.stderr.write(build.stderr)
            raise SystemExit(f"{path}: its cells do not compile (the errors above name src/main.rs of the generated crate)")
        exe = Path(target_dir) / "release" / "notebook"
        # run from the notebook's directory, as a kernel started by Jupyter would be
        proc = subprocess.run([str(exe)], cwd=path.parent, capture_output=True, text=True)
    outs = outputs_of(proc.stdout, proc.stderr)
    last = max(outs) if outs else 0
    failed = proc.returncode != 0
    for i, c in enumerate(code_cells, start=1):
        ran = i in outs
        c["outputs"] = outs.get(i, [])
        c["execution_count"] = i if ran else None
        for o in c["outputs"]:
            if o["output_type"] == "execute_result":
                o["execution_count"] = i
        if failed and i == last:
            c["outputs"].append({"output_type": "error", "ename": "panic", "evalue": f"exit status {proc.returncode}", "traceback": []})
    nb.setdefault("metadata", {})["exaone_compress"] = {
        "executed_by": "scripts/run_notebooks.py (the cells compiled in order as one program; evcxr semantics)",
        "commit": commit(),
        "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
    }
    return nb, not failed


def write(path, nb):
    tmp = path.with_name("." + path.name + ".tmp")
    tmp.write_text(json.dumps(nb, indent=1, ensure_ascii=False) + "\n")
    os.replace(tmp, path)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("notebooks", nargs="*", type=Path)
    ap.add_argument("--target-dir", type=Path, default=ROOT / "target", help="cargo target directory to share (default: the repository's)")
    a = ap.parse_args()
    paths = a.notebooks or sorted((ROOT / "notebooks").glob("*.ipynb"))
    ok, done = True, []
    # every notebook runs before any is written: a rewritten notebook would make the crate's
    # build script mark the commit of the later ones "+changes"
    for p in paths:
        t0 = datetime.datetime.now()
        nb, good = run(p, a.target_dir)
        ok &= good
        done.append((p, nb))
        print(f"{p.name}: {'executed' if good else 'FAILED'} in {(datetime.datetime.now() - t0).total_seconds():.0f} s")
    for p, nb in done:
        write(p, nb)
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
