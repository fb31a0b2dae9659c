"""Generated documentation must match the binary (STYLE 23): docs/schema.md is the output of
`opsdb schema --markdown` and docs/config.md the output of `opsdb config --markdown`. When one
is missing or stale, run `make docs` and commit the result."""

from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("doc,command", [("docs/schema.md", "schema"),
                                         ("docs/config.md", "config")])
def test_generated_doc_is_current(run_cli, doc, command):
    cp = run_cli(command, "--markdown")
    assert cp.returncode == 0, cp.stderr
    assert cp.stdout.startswith("# "), cp.stdout[:200]
    path = ROOT / doc
    assert path.is_file(), f"{doc} is missing: run `make docs` and commit it"
    committed = path.read_text()
    if committed != cp.stdout:
        old, new = committed.splitlines(), cp.stdout.splitlines()
        first = next((i for i, (a, b) in enumerate(zip(old, new)) if a != b),
                     min(len(old), len(new)))
        pytest.fail(f"{doc} is stale (it differs from `opsdb {command} --markdown` from line "
                    f"{first + 1}: {old[first] if first < len(old) else '<end>'!r} vs "
                    f"{new[first] if first < len(new) else '<end>'!r}): run `make docs` and "
                    f"commit it", pytrace=False)
