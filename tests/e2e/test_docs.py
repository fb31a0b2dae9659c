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


def test_alerts_doc_shows_the_default_rules_as_they_run(run_cli, tmp_path):
    """docs/alerts.md quotes `opsdb alerts defaults` whole, the text is a rule file that
    `opsdb alerts check` accepts, and every rule's runbook anchor exists in the page."""
    cp = run_cli("alerts", "defaults")
    assert cp.returncode == 0, cp.stderr
    doc = (ROOT / "docs/alerts.md").read_text()
    assert "```yaml\n" + cp.stdout + "```" in doc, \
        "docs/alerts.md does not quote `opsdb alerts defaults`: paste its output again"
    rules = tmp_path / "defaults.yaml"
    rules.write_text(cp.stdout)
    check = run_cli("alerts", "check", rules)
    assert check.returncode == 0 and "ok, 8 groups, 17 rules" in check.stdout, check
    for anchor in sorted(set(line.split("docs/alerts.md#")[1].split('"')[0]
                             for line in cp.stdout.splitlines() if "docs/alerts.md#" in line)):
        heading = next((h for h in doc.splitlines() if h.startswith("#### ")
                        and h[5:].strip().lower() == anchor), None)
        assert heading, f"runbook anchor #{anchor} has no '#### ' heading in docs/alerts.md"
