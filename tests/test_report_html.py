"""report.html: self-contained (nothing but the file), the same tables and numbers as report.md and
report.csv, the flags explained from one place; and rendered by a real headless Chromium."""

from __future__ import annotations

import base64
import csv
import os
import re
import shutil
import subprocess
from html import escape
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest
from records_fixture import make_record, sweep

from robustlab.results.flags import FLAG_MEANINGS, UNKNOWN_FLAG
from robustlab.results.html import png_size
from robustlab.results.outcomes import OUTCOMES_FILE, append_outcomes, attach, split
from robustlab.results.report import main
from robustlab.results.store import append_records

ROOT = Path(__file__).resolve().parents[1]
CHECK_SCRIPT = ROOT / "scripts" / "check_report_html.sh"
N = 200


def seeded_pair(root: Path) -> None:
    """mnist: miat and pgd_at, two seeds each, with per-example outcomes on the same points (a
    seed spread in every cell and a paired comparison with pgd_at); a flag on one seed's fgsm."""
    rng = np.random.default_rng(0)
    for defense, p in (("miat", 0.6), ("pgd_at", 0.45)):
        for seed in (0, 1):
            recs = []
            for attack in ("pgd", "fgsm"):
                robust = rng.random(N) < p + (0.1 if attack == "fgsm" else 0)
                flags = (
                    ["clean_at_chance"] if (defense, seed, attack) == ("miat", 1, "fgsm") else []
                )
                rec = make_record(
                    dataset="mnist",
                    defense=defense,
                    attack=attack,
                    seed=seed,
                    config_hash=f"{defense}-{seed}",
                    seed_group=f"{defense}-g",
                    run_id=f"{defense}-{seed}",
                    robust_acc=float(robust.mean()),
                    clean_acc=0.95,
                    sanity_flags=flags,
                    finished=f"2024-02-0{seed + 1}T00:00:00",
                ) | {"test_points": "mnist-test-200"}
                attach(rec, np.arange(N), np.ones(N, bool), robust)
                recs.append(rec)
            cell = root / "mnist" / defense / f"seed_{seed}"
            append_outcomes(cell / OUTCOMES_FILE, split(recs))
            append_records(cell / "records.jsonl", recs)


@pytest.fixture(scope="module")
def reported(tmp_path_factory):
    """A report of the records fixture's sweep (digits: flags, eps curves, a rerun) beside the
    seeded mnist pair, paired against pgd_at."""
    root = tmp_path_factory.mktemp("sweep")
    for sub, recs in sweep().items():
        append_records(root / "digits" / sub / "records.jsonl", recs)
    seeded_pair(root)
    main([str(root), "--baseline", "pgd_at"])
    return root


class Page(HTMLParser):
    """Tags, attributes, <style> text and every table's cell texts of a page."""

    def __init__(self, text: str) -> None:
        super().__init__(convert_charrefs=True)
        self.tags: list[tuple[str, dict[str, str | None]]] = []
        self.styles: list[str] = []
        self.tables: list[list[list[str]]] = []
        self._in_style = False
        self._cell: list[str] | None = None
        self.feed(text)

    def handle_starttag(self, tag, attrs):
        self.tags.append((tag, dict(attrs)))
        if tag == "style":
            self._in_style = True
        elif tag == "table":
            self.tables.append([])
        elif tag == "tr":
            self.tables[-1].append([])
        elif tag in ("td", "th"):
            self._cell = []

    def handle_endtag(self, tag):
        if tag == "style":
            self._in_style = False
        elif tag in ("td", "th") and self._cell is not None:
            self.tables[-1][-1].append("".join(self._cell).strip())
            self._cell = None

    def handle_data(self, data):
        if self._in_style:
            self.styles.append(data)
        if self._cell is not None:
            self._cell.append(data)


def markdown_tables(md: str) -> list[list[list[str]]]:
    """The tables of report.md, as written: ``"| " + " | ".join(cells) + " |"`` per row."""
    tables: list[list[list[str]]] = []
    current = None
    for line in [*md.splitlines(), ""]:
        if re.fullmatch(r"\|(---\|)+", line):
            continue
        if line.startswith("| ") and line.endswith(" |"):
            current = [] if current is None else current
            current.append([c.strip() for c in line[2:-2].split(" | ")])
        elif current is not None:
            tables.append(current)
            current = None
    return tables


def test_the_page_references_only_itself(reported):
    text = (reported / "report.html").read_text(encoding="utf-8")
    page = Page(text)
    tags = {tag for tag, _ in page.tags}
    assert not tags & {"script", "link", "iframe", "object", "embed", "base", "source", "video"}
    style = "".join(page.styles)
    assert "url(" not in style and "@import" not in style and "@font-face" not in style
    assert not any("style" in attrs for _, attrs in page.tags)  # no inline style to load from
    images = [attrs for tag, attrs in page.tags if tag == "img"]
    assert len(images) == 3  # digits: heatmap and eps curves; mnist: heatmap
    for attrs in images:
        src = attrs["src"]
        assert src.startswith("data:image/png;base64,")
        data = base64.b64decode(src.split(",", 1)[1], validate=True)
        assert png_size(data) == (int(attrs["width"]), int(attrs["height"]))
    for _, attrs in page.tags:
        for name in ("src", "href", "action", "poster", "srcset", "data"):
            value = attrs.get(name)
            if value is not None and name != "src":
                assert value.startswith("#"), (name, value)
    assert not re.search(r"""(?:src|href)\s*=\s*["']?\s*(?:[a-z]+:)?//""", text, re.I)
    assert "http://" not in text and "https://" not in text
    assert (reported / "heatmap_digits.png").read_bytes() in [
        base64.b64decode(a["src"].split(",", 1)[1]) for a in images
    ]


def test_the_page_shows_the_tables_of_report_md(reported):
    page = Page((reported / "report.html").read_text(encoding="utf-8"))
    md = markdown_tables((reported / "report.md").read_text(encoding="utf-8"))
    assert [t[0][0] for t in md] == ["defense", "defense", "defense"]  # digits, mnist, vs pgd_at
    assert page.tables == md
    assert any("±" in cell for row in page.tables[1] for cell in row)  # the seed spreads


def _pct(value: str) -> str:
    return f"{100 * float(value):.1f}"


def test_the_page_carries_the_numbers_of_report_csv(reported):
    page = Page((reported / "report.html").read_text(encoding="utf-8"))
    with open(reported / "report.csv", newline="", encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh))
    expected = set()
    for r in rows:
        if r.get("seed_spread.robust.mean"):
            m, sd, lo, hi = (
                _pct(r[f"seed_spread.robust.{k}"]) for k in ("mean", "sd", "min", "max")
            )
            expected.add(f"{m} ± {sd} [{lo}, {hi}] x{r['seed_spread.robust.n']}")
        else:
            lo, hi = r["robust_ci"].split(";")
            expected.add(f"{_pct(r['robust_acc'])} [{_pct(lo)}, {_pct(hi)}]")
    grid_cells = [
        cell.removeprefix("⚠ ")
        for table in page.tables[:2]
        for row in table[1:]
        for cell in row[2:]
    ]
    shown = [c for c in grid_cells if c]
    assert len(shown) == 15  # digits 11, mnist 4
    for cell in shown:
        assert any(cell.startswith(e) for e in expected), cell
    deltas = {
        f"{100 * float(r['vs_baseline.delta_robust']):+.1f}"
        for r in rows
        if r.get("vs_baseline.delta_robust")
    }
    compared = page.tables[2]
    column = compared[0].index("robust delta [95% CI]")
    assert len(compared) == 3 and {row[column].split(" ")[0] for row in compared[1:]} == deltas


def test_every_flag_robustlab_raises_is_explained_once(reported):
    """The meanings live in robustlab/results/flags.py: every flag the code raises and README's
    "The evaluation" names has one, and the page explains each raised flag once."""
    raised = set()
    for path in (ROOT / "robustlab").rglob("*.py"):
        source = path.read_text(encoding="utf-8")
        raised |= set(re.findall(r"""_add\(\w+, "(\w+)"\)""", source))
        raised |= set(re.findall(r"""^FLAG = "(\w+)"$""", source, re.M))
    raised.add("inference_expects_other_training")  # appended by the evaluator
    assert len(raised) >= 12 and raised <= set(FLAG_MEANINGS)
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    section = readme.split("## The evaluation", 1)[1].split("\n## ", 1)[0]
    flags_bullet = section.split("- Sanity flags", 1)[1].split("\n- ", 1)[0]
    named = set(re.findall(r"`([a-z_]+)`", flags_bullet)) | {"catastrophic_overfitting"}
    assert named <= set(FLAG_MEANINGS)

    text = (reported / "report.html").read_text(encoding="utf-8")
    assert text.count(escape(FLAG_MEANINGS["clean_at_chance"])) == 1
    assert text.count(escape(UNKNOWN_FLAG)) == 1  # the fixture's robust_above_attack_free_noise
    assert 'href="#flag-clean_at_chance"' in text and 'id="flag-clean_at_chance"' in text


def chromium() -> str | None:
    return (
        os.environ.get("CHROMIUM") or shutil.which("chromium") or shutil.which("chromium-browser")
    )


@pytest.mark.slow
@pytest.mark.skipif(
    chromium() is None,
    reason="no chromium: as root, apt-get update && apt-get install -y chromium",
)
def test_a_headless_chromium_renders_the_tables_and_decodes_the_images(reported, tmp_path):
    """scripts/check_report_html.sh: the page loaded from file:// in Chromium; its rendered
    tables equal report.md's and every image decodes. A tampered copy fails it."""
    done = subprocess.run(
        [str(CHECK_SCRIPT), str(reported)], capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    assert "3 table(s)" in done.stdout and "3 image(s) decoded" in done.stdout

    bad = tmp_path / "bad"
    bad.mkdir()
    shutil.copy(reported / "report.md", bad)
    text = (reported / "report.html").read_text(encoding="utf-8")
    text = re.sub(r"base64,[A-Za-z0-9+/]{64}", "base64," + "A" * 64, text, count=1)
    (bad / "report.html").write_text(text.replace("| fgsm", "| FGSM").replace(">fgsm<", ">FGSM<"))
    done = subprocess.run(
        [str(CHECK_SCRIPT), str(bad)], capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 1
    assert "did not decode" in done.stderr and "differ from report.md" in done.stderr
