"""The docs name tests; every test they name exists.

The README and the pages under `docs/` cite tests in inline code as `tests/test_x.py::test_name`,
`test_x.py::test_name`, `::test_name` (the file last named in the same table row or paragraph), a file
alone (`tests/test_x.py`) or a bare `test_name` (defined in some file under `tests/`). Test names are
read from the test files' syntax trees (module-level `test*` functions and `Test*` classes' methods),
so nothing is imported. Relative links between the pages must point at files that exist.
"""
import ast
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
TESTS = ROOT / "tests"

CODE_SPAN = re.compile(r"`([^`\n]+)`")
FILE = r"(?:tests/)?(test_\w+\.py)"
QUALIFIED = re.compile(rf"^{FILE}((?:::\w+(?:\[[^\]]*\])?)+)$")
CONTINUED = re.compile(r"^((?:::\w+(?:\[[^\]]*\])?)+)$")
FILE_ALONE = re.compile(rf"^{FILE}$")
BARE = re.compile(r"^(test_\w+)(?:\[[^\]]*\])?$")
LINK = re.compile(r"\]\(([^)#\s]+)(?:#[^)]*)?\)")


def doc_pages():
    return [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]


def defined_tests(tests_dir=TESTS):
    """{file name: {"test_f", "TestC::test_m", ...}} for every tests/test_*.py."""
    found = {}
    for path in sorted(tests_dir.glob("test_*.py")):
        names = set()
        for node in ast.parse(path.read_text(), str(path)).body:
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and node.name.startswith("test"):
                names.add(node.name)
            elif isinstance(node, ast.ClassDef) and node.name.startswith("Test"):
                names.update(f"{node.name}::{item.name}" for item in node.body
                             if isinstance(item, (ast.FunctionDef, ast.AsyncFunctionDef))
                             and item.name.startswith("test"))
        found[path.name] = names
    return found


def blocks(text):
    """Each table row is a block; other lines group into blank-line separated paragraphs."""
    paragraph = []
    for line in text.splitlines():
        if line.lstrip().startswith("|"):
            if paragraph:
                yield "\n".join(paragraph)
                paragraph = []
            yield line
        elif line.strip():
            paragraph.append(line)
        elif paragraph:
            yield "\n".join(paragraph)
            paragraph = []
    if paragraph:
        yield "\n".join(paragraph)


def missing_tests(text, defined):
    """The test references in markdown `text` that name no test in `defined`, as readable strings."""
    every_name = {name.split("::")[-1] for names in defined.values() for name in names}
    missing = []
    for block in blocks(text):
        current = None
        for span in CODE_SPAN.findall(block):
            span = span.strip()
            if m := QUALIFIED.match(span):
                current, names = m.group(1), m.group(2)
            elif m := CONTINUED.match(span):
                if current is None:
                    missing.append(f"{span} (no test file named before it)")
                    continue
                names = m.group(1)
            elif m := FILE_ALONE.match(span):
                current = m.group(1)
                if current not in defined:
                    missing.append(f"{span} (no such file in tests/)")
                continue
            elif m := BARE.match(span):
                if m.group(1) not in every_name:
                    missing.append(f"{span} (defined in no file in tests/)")
                continue
            else:
                continue
            name = re.sub(r"\[[^\]]*\]", "", names)[2:]
            if current not in defined:
                missing.append(f"{current}::{name} (no such file in tests/)")
            elif name not in defined[current]:
                missing.append(f"{current}::{name}")
    return missing


def test_every_test_the_docs_name_exists():
    defined = defined_tests()
    cited = 0
    problems = []
    for page in doc_pages():
        text = page.read_text()
        cited += sum(1 for span in CODE_SPAN.findall(text) if "test_" in span)
        problems += [f"{page.relative_to(ROOT)}: {p}" for p in missing_tests(text, defined)]
    assert cited > 50, f"the docs name only {cited} tests: is the parser still reading them?"
    assert problems == []


def test_a_wrong_name_is_caught():
    defined = {"test_a.py": {"test_one", "TestK::test_two"}, "test_b.py": {"test_three"}}
    text = (
        "| x | `tests/test_a.py::test_one`, `::test_nope`, `test_b.py::test_three[p1]` |\n"
        "| y | `::test_one` |\n"
        "\n"
        "Tests (`tests/test_a.py::TestK::test_two`): `test_three`, `test_four`, `test_c.py`,\n"
        "`test_b.py::test_one`.\n"
    )
    assert missing_tests(text, defined) == [
        "test_a.py::test_nope",
        "::test_one (no test file named before it)",
        "test_four (defined in no file in tests/)",
        "test_c.py (no such file in tests/)",
        "test_b.py::test_one",
    ]


def test_every_link_between_the_pages_resolves():
    broken = []
    for page in doc_pages():
        for target in LINK.findall(page.read_text()):
            if "://" in target or target.startswith("mailto:"):
                continue
            if not (page.parent / target).exists():
                broken.append(f"{page.relative_to(ROOT)}: {target}")
    assert broken == []
