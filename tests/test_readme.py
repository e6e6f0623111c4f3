"""Every Python example in the README runs on its own, as one script in a fresh interpreter,
and prints what the README says to expect.

Convention: a ```python block may be followed (before the next ```python block) by a ```text
block of its expected output. Each expected line must match a line of the script's output, in
order (other output lines may come between). Numbers match any number (they can differ in
the last digits on another machine), and "..." matches anything; the words must agree, so
a "FAILED" the README explains cannot silently turn into "passed" or the reverse.
"""

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

README = Path(__file__).parents[1] / "README.md"
FENCE = re.compile(r"^```(\w*)\n(.*?)^```", flags=re.S | re.M)
NUMBER = r"(?:[-+]?(?:\d+\.?\d*|\.\d+)(?:e[-+]?\d+)?|nan|inf)"


def examples(text: str) -> list[tuple[str, str | None]]:
    """(python source, expected output or None) for every ```python block, in order."""
    pairs: list[tuple[str, str | None]] = []
    for kind, body in FENCE.findall(text):
        if kind == "python":
            pairs.append((body, None))
        elif kind == "text" and pairs and pairs[-1][1] is None:
            pairs[-1] = (pairs[-1][0], body)
    return pairs


def line_pattern(expected: str) -> re.Pattern:
    """An expected output line as a regex: numbers match any number, "..." anything."""
    parts = re.split(rf"(\.\.\.|{NUMBER})", expected.strip())
    regex = "".join(".*" if part == "..." else NUMBER if re.fullmatch(NUMBER, part)
                    else re.escape(part) for part in parts if part)
    return re.compile(rf"\s*{regex}\s*$")


def unmatched(expected: str, output: str) -> list[str]:
    """Expected lines not found, in order, among the output's lines."""
    lines, missing, i = output.splitlines(), [], 0
    for line in filter(str.strip, expected.splitlines()):
        pattern = line_pattern(line)
        j = next((k for k in range(i, len(lines)) if pattern.match(lines[k])), None)
        if j is None:
            missing.append(line)
        else:
            i = j + 1
    return missing


EXAMPLES = examples(README.read_text())


def test_readme_has_examples_with_expected_output():
    assert len(EXAMPLES) >= 3
    assert all(expected is not None for _, expected in EXAMPLES), (
        "every README example says what output to expect, in a ```text block after it")


def test_expected_output_matching_has_power():
    expected = "Bayes' loop FAILED at level 0.01 (combined p = 7.29e-18; ...). Largest ..."
    assert not unmatched(expected, "Bayes' loop FAILED at level 0.01 (combined p = 0.002; x"
                                   "). Largest difference")
    assert unmatched(expected, "Bayes' loop passed at level 0.01 (combined p = 0.5; x). "
                               "Largest difference")
    assert unmatched("a\nb", "b\na") == ["b"]  # order matters


@pytest.mark.parametrize(("source", "expected"), EXAMPLES,
                         ids=[f"example-{i + 1}" for i in range(len(EXAMPLES))])
def test_readme_example_runs_on_its_own(tmp_path, source, expected):
    script = tmp_path / "example.py"
    script.write_text(source)
    env = {**os.environ, "MPLBACKEND": "Agg"}
    done = subprocess.run([sys.executable, str(script)], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    missing = unmatched(expected or "", done.stdout)
    assert not missing, (f"the README's expected output does not match what the example "
                         f"printed; missing {missing}\n--- printed:\n{done.stdout}")
