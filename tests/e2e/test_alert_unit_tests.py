"""`opsdb alerts test`: rule unit tests, as docs/alerts.md ("Rule unit tests") describes them and
as src/alert/ruletest.c runs them.

* the example of docs/alerts.md (a rule file and its test file) passes as written;
* failing checks are reported with the test file's line, the expected and the actual alerts, the
  counts and exit status 1 — for a wrong annotation, an alert expected that is still pending, an
  alert firing where none was expected, a label missing from the expectation;
* promtool's value notation (`_xN`, `A+BxN`, `A-BxN`) gives the samples it says, read back
  at each evaluation by an SQL rule that makes the sample's value a label;
* `default_rules: true` tests the shipped rules;
* every mistake in a test file, and a bad rule file, is refused naming the file and line.

Each expectation is worked out here from the rule's definition and the input the test writes.
"""
import re
import textwrap
from pathlib import Path

import pytest

from conftest import run_cli

ROOT = Path(__file__).resolve().parents[2]


def doc_example(name):
    """The ```yaml block of docs/alerts.md whose first line is `# NAME`."""
    doc = (ROOT / "docs/alerts.md").read_text()
    m = re.search(r"```yaml\n(# " + re.escape(name) + r"\n.*?)```", doc, re.S)
    assert m, f"docs/alerts.md has no yaml block starting with '# {name}'"
    return m.group(1)


@pytest.fixture
def example(tmp_path):
    (tmp_path / "cpu_rules.yaml").write_text(doc_example("cpu_rules.yaml"))
    test = tmp_path / "cpu_rules_test.yaml"
    test.write_text(doc_example("cpu_rules_test.yaml"))
    return test


def line_of(path, needle, nth=1):
    """1-based line of the nth line of path containing needle."""
    seen = 0
    for i, line in enumerate(Path(path).read_text().splitlines(), 1):
        if needle in line:
            seen += 1
            if seen == nth:
                return i
    raise AssertionError(f"{needle!r} not in {path}")


def test_the_documented_example_passes(example):
    cp = run_cli("alerts", "test", example)
    assert cp.returncode == 0, cp.stdout + cp.stderr
    assert 'test "HighCPU fires after its for and resolves below resolve_threshold": ok (4 checks)' \
        in cp.stdout
    assert 'test "CheckoutErrors on a burst of 500s": ok (2 checks)' in cp.stdout
    assert cp.stdout.rstrip().endswith("2 tests, 2 passed, 0 failed")
    # no migration chatter for the temporary databases
    assert "migrat" not in cp.stderr


def test_failing_checks_name_the_line_and_show_both_sides(example):
    text = example.read_text()
    text = text.replace('{summary: "cpu high on h1"}', '{summary: "cpu high on h9"}')
    text = text.replace("eval_time: 1m45s", "eval_time: 2m15s")  # 75 s above 90: firing
    text = text.replace("eval_time: 6m\n", "eval_time: 5m\n")  # 70 only since 4m45s: still firing
    text = text.replace("{endpoint: /checkout, severity: warning}", "{endpoint: /checkout}")
    example.write_text(text)
    cp = run_cli("alerts", "test", example)
    assert cp.returncode == 1, cp.stdout + cp.stderr
    out = cp.stdout
    name = "HighCPU fires after its for and resolves below resolve_threshold"
    firing = '{"component":"web","host":"h1","severity":"critical"}'
    ann = '{"summary":"cpu high on h1"}'
    at = line_of(example, "eval_time: 2m15s") - 0
    assert f'{example}:{at}: test "{name}": HighCPU at 2m15s:\n' \
        f"    expected no HighCPU alert firing\n" \
        f"    got      {firing} annotations {ann}\n" in out, out
    at = line_of(example, "eval_time: 2m30s")
    assert f'{example}:{at}: test "{name}": HighCPU at 2m30s:\n' \
        f'    expected {firing} annotations {{"summary":"cpu high on h9"}}\n' \
        f"    got      {firing} annotations {ann}\n" in out, out
    at = line_of(example, "eval_time: 5m")
    assert f'{example}:{at}: test "{name}": HighCPU at 5m:\n' \
        f"    expected no HighCPU alert firing\n" in out, out
    at = line_of(example, "eval_time: 45s")
    assert f'{example}:{at}: test "CheckoutErrors on a burst of 500s": CheckoutErrors at 45s:\n' \
        f'    expected {{"endpoint":"/checkout"}}\n' \
        f'    got      {{"endpoint":"/checkout","severity":"warning"}} annotations {{}}\n' in out
    # the 4m check still passes; both tests fail
    assert f"HighCPU at 4m" not in out
    assert out.rstrip().endswith("2 tests, 0 passed, 2 failed")


VALUE_RULES = """\
groups:
  - name: g
    interval: 15s
    rules:
      - alert: Above
        table: system_metrics
        metric: x
        aggregation: max
        window: 15s
        op: ">"
        threshold: 2.5
"""

# an SQL rule without a threshold: an alert per row, the sample's value as its label v
SAMPLE_RULES = """\
groups:
  - name: g
    interval: 15s
    rules:
      - alert: Sample
        sql: >
          SELECT value AS v, value FROM system_metrics
          WHERE metric = 'x' AND ts > :now - 15000 AND ts <= :now
"""


def test_value_notation_gives_the_samples_it_says(tmp_path):
    (tmp_path / "r.yaml").write_text(SAMPLE_RULES)
    # 15 s apart from 0 s: _ _ 1 2 3 4 5 4 3 2 _ _ 7 7 7 -2.5 -1
    values = "_x2 1+1x4 4-1x2 _ _ 7x2 -2.5+1.5x1"
    samples = [None, None, 1, 2, 3, 4, 5, 4, 3, 2, None, None, 7, 7, 7, -2.5, -1]
    checks = []
    for i, v in enumerate(samples):
        if v is not None:
            text = f"{v:g}"
            exp = f'\n          - exp_labels: {{v: "{text}"}}'
        else:
            exp = " []"
        checks.append(f"      - eval_time: {15 * i}s\n        alertname: Sample\n"
                      f"        exp_alerts:{exp}\n")
    test = tmp_path / "t.yaml"
    test.write_text(textwrap.dedent(f"""\
        rule_files: [r.yaml]
        tests:
          - interval: 15s
            input_series:
              - series: 'x{{host="h"}}'
                values: '{values}'
            alert_rule_test:
        """) + "".join(checks))
    cp = run_cli("alerts", "test", test)
    assert cp.returncode == 0, cp.stdout + cp.stderr
    assert f'test "#1": ok ({len(samples)} checks)' in cp.stdout


def test_default_rules_can_be_tested(tmp_path):
    """HostHighCPU of the default set: avg over 5m > 90 for 5m, evaluated every 30 s."""
    test = tmp_path / "t.yaml"
    test.write_text(textwrap.dedent("""\
        default_rules: true
        tests:
          - interval: 1m
            input_series:
              - series: 'cpu_usage{host="db-1",component="db"}'
                values: '95x20'
            alert_rule_test:
              - eval_time: 4m30s
                alertname: HostHighCPU
              - eval_time: 5m
                alertname: HostHighCPU
                exp_alerts:
                  - exp_labels: {host: db-1, component: db, severity: critical,
                                 team: infrastructure}
        """))
    cp = run_cli("alerts", "test", test)
    assert cp.returncode == 0, cp.stdout + cp.stderr
    assert cp.stdout.rstrip().endswith("1 test, 1 passed, 0 failed")


GOOD_TEST = """\
rule_files: [r.yaml]
tests:
  - interval: 15s
    input_series:
      - series: 'x{host="h"}'
        values: '1 2 3'
    input_rows:
      - table: api_usage
        rows:
          - {at: 5s, endpoint: /a, method: GET, status_code: 200}
    alert_rule_test:
      - eval_time: 30s
        alertname: Above
        exp_alerts:
          - exp_labels: {host: h, component: ""}
"""


@pytest.mark.parametrize("old,new,needle,message", [
    ("tests:", "tests:\n", "tests:", None),  # unchanged: the good file passes
    ("interval: 15s", "intervall: 15s", "intervall",
     "tests: unknown key 'intervall' (expected name, start, interval, input_series, "
     "input_rows, alert_rule_test)"),
    ("'1 2 3'", "'1 2x 3'", "values:",
     "values: '2x' is not a value (expected a number, _ for none"),
    ("table: api_usage", "table: api_usagez", "api_usagez",
     "table: no table 'api_usagez' (docs/schema.md lists them)"),
    ("status_code: 200", "status_code: 99", "status_code",
     "input for api_usage: status_code"),
    ("{at: 5s, ", "{", "endpoint: /a",
     "rows: each row needs at: (its time after the test's start, like 90s)"),
    ("{at: 5s, ", "{at: 5s, ts: 5, ", "endpoint: /a",
     "rows: give at: (after the test's start), not ts:"),
    ("eval_time: 30s", "eval_time: soon", "eval_time",
     "eval_time: 'soon' is not a duration (like 30s, 5m, 1h)"),
    ("series: 'x{host=\"h\"}'", "series: 'x{host=h}'", "- series:",
     "series: 'x{host=h}': expected name=\"value\" pairs in braces"),
    ("rule_files: [r.yaml]", "rule_files: [nope.yaml]", "rule_files",
     "rule_files: cannot read"),
    ("exp_labels:", "exp_label:", "exp_label:",
     "exp_alerts: unknown key 'exp_label' (expected exp_labels, exp_annotations)"),
    ("rule_files: [r.yaml]", "rule_files: [r.yaml]\nsetup: 1", "setup:",
     "the test file: unknown key 'setup' (expected rule_files, default_rules, start, tests)"),
])
def test_mistakes_in_a_test_file_name_the_line(tmp_path, old, new, needle, message):
    (tmp_path / "r.yaml").write_text(VALUE_RULES)
    test = tmp_path / "t.yaml"
    assert old in GOOD_TEST
    test.write_text(GOOD_TEST.replace(old, new, 1))
    cp = run_cli("alerts", "test", test)
    if message is None:
        assert cp.returncode == 0, cp.stdout + cp.stderr
        assert cp.stdout.rstrip().endswith("1 test, 1 passed, 0 failed")
        return
    assert cp.returncode == 1, cp.stdout + cp.stderr
    line = line_of(test, needle)
    assert f"opsdb: {test}:{line}: {message}" in cp.stderr, cp.stderr
    assert "(and a file that could not be run)" in cp.stdout


def test_a_bad_rule_file_is_named_with_its_line(tmp_path):
    (tmp_path / "r.yaml").write_text(VALUE_RULES.replace('op: ">"', 'op: "=>"'))
    test = tmp_path / "t.yaml"
    test.write_text(GOOD_TEST)
    cp = run_cli("alerts", "test", test)
    assert cp.returncode == 1
    rules = (tmp_path / "r.yaml").resolve()
    assert f"{rules}:{line_of(rules, 'op:')}: op: '=>' is not one of" in cp.stderr, cp.stderr


def test_usage_errors(tmp_path):
    cp = run_cli("alerts", "test")
    assert cp.returncode == 2 and "alerts test needs a test file" in cp.stderr
    cp = run_cli("alerts", "test", tmp_path / "missing.yaml")
    assert cp.returncode == 1 and "missing.yaml" in cp.stderr
    empty = tmp_path / "empty.yaml"
    empty.write_text("")
    cp = run_cli("alerts", "test", empty)
    assert cp.returncode == 1 and "expected a map with rule_files and tests" in cp.stderr
