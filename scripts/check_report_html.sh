#!/usr/bin/env bash
# Checks a report page in a real headless browser:
#
#   scripts/check_report_html.sh DIR      DIR: where robustlab-report wrote report.html and report.md
#
# Chromium (Debian: apt-get install -y chromium; or $CHROMIUM) loads DIR/report.html from a file://
# URL, with no server and no network, inside an iframe of a small checker page of its own (the
# report itself stays script-free). The checker reads the rendered DOM of the report and dumps it
# (--dump-dom) as JSON; this script then requires that
#   - every table of report.md is rendered, cell for cell, with the same texts (the grid of each
#     dataset, and the "vs baseline" tables when there are some);
#   - every image decoded (img.decode() resolved, naturalWidth x naturalHeight = its declared size)
#     from a data: URI, at least one per dataset;
#   - the page runs no script.
# --allow-file-access-from-files lets the checker page read the report's DOM (file: URLs are
# opaque origins otherwise); nothing else is loosened.
#
# Exit status: 0 the page is good; 1 it is not (one line per problem); 2 usage or missing files;
# 3 no Chromium. Measured on 2 cores: about 2 s.
set -euo pipefail

if [ $# -ne 1 ]; then
    echo "usage: $0 DIR  (the directory holding report.html and report.md)" >&2
    exit 2
fi
DIR=$(cd "$1" 2>/dev/null && pwd) || { echo "check_report_html: $1 is not a directory" >&2; exit 2; }
for f in report.html report.md; do
    [ -f "$DIR/$f" ] || { echo "check_report_html: no $f in $DIR (run robustlab-report $1)" >&2; exit 2; }
done
CHROMIUM=${CHROMIUM:-$(command -v chromium || command -v chromium-browser || command -v google-chrome || true)}
if [ -z "$CHROMIUM" ]; then
    echo "check_report_html: no chromium (as root: apt-get update && apt-get install -y chromium)" >&2
    exit 3
fi
PYTHON=${PYTHON:-python3}

WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT
PAGE_URL=$("$PYTHON" -c 'import pathlib, sys; print(pathlib.Path(sys.argv[1]).as_uri())' "$DIR/report.html")

cat > "$WORK/checker.html" <<EOF
<!DOCTYPE html>
<html><head><meta charset="utf-8"></head><body>
<pre id="result">{"error": "the report did not load"}</pre>
<iframe id="page" src="$PAGE_URL" width="1400" height="900"></iframe>
<script>
document.getElementById("page").addEventListener("load", function () {
  var out = document.getElementById("result");
  try {
    var doc = this.contentDocument;
    var tables = Array.from(doc.querySelectorAll("table")).map(function (t) {
      return Array.from(t.rows).map(function (r) {
        return Array.from(r.cells).map(function (c) { return c.textContent; });
      });
    });
    var imgs = Array.from(doc.images);
    var result = {
      title: doc.title,
      scripts: doc.scripts.length,
      tables: tables,
      images: imgs.map(function (i) {
        return {alt: i.alt, scheme: i.src.split(":")[0], complete: i.complete,
                naturalWidth: i.naturalWidth, naturalHeight: i.naturalHeight,
                width: Number(i.getAttribute("width")), height: Number(i.getAttribute("height")),
                decoded: false};
      })
    };
    out.textContent = JSON.stringify(result);
    imgs.forEach(function (img, k) {
      img.decode().then(function () {
        result.images[k].decoded = true;
        out.textContent = JSON.stringify(result);
      }, function () {});
    });
  } catch (e) {
    out.textContent = JSON.stringify({error: String(e)});
  }
});
</script>
</body></html>
EOF

"$CHROMIUM" --headless --no-sandbox --disable-gpu --allow-file-access-from-files \
    --virtual-time-budget=5000 --dump-dom "file://$WORK/checker.html" > "$WORK/dom.html" \
    2> "$WORK/chromium.log" || { cat "$WORK/chromium.log" >&2; echo "check_report_html: chromium failed" >&2; exit 1; }

"$PYTHON" - "$WORK/dom.html" "$DIR/report.md" <<'EOF'
import html
import json
import re
import sys

dom, md = (open(p, encoding="utf-8").read() for p in sys.argv[1:3])
found = re.search(r'<pre id="result">(.*?)</pre>', dom, re.S)
result = json.loads(html.unescape(found.group(1))) if found else {"error": "no result in the DOM"}
if "error" in result:
    sys.exit(f"check_report_html: {result['error']}")

tables, table = [], None  # report.md's tables, as written: "| " + " | ".join(cells) + " |"
for line in md.splitlines() + [""]:
    if re.fullmatch(r"\|(---\|)+", line):
        continue
    if line.startswith("| ") and line.endswith(" |"):
        table = [] if table is None else table
        table.append([c.strip() for c in line[2:-2].split(" | ")])
    elif table is not None:
        tables.append(table)
        table = None

problems = []
rendered = [[[c.strip() for c in row] for row in t] for t in result["tables"]]
if rendered != tables:
    problems.append(
        f"the rendered tables ({len(rendered)}) differ from report.md's ({len(tables)}): "
        + next((f"{a} != {b}" for t, u in zip(rendered, tables) for a, b in zip(t, u) if a != b),
               "different counts")
    )
datasets = len(re.findall(r"^## (?!vs )", md, re.M))
images = result["images"]
if len(images) < datasets:
    problems.append(f"{len(images)} image(s) for {datasets} dataset(s)")
for img in images:
    if img["scheme"] != "data":
        problems.append(f"image {img['alt']!r} is not embedded ({img['scheme']}:)")
    if not (img["complete"] and img["decoded"] and img["naturalWidth"] > 0):
        problems.append(f"image {img['alt']!r} did not decode")
    elif (img["naturalWidth"], img["naturalHeight"]) != (img["width"], img["height"]):
        problems.append(
            f"image {img['alt']!r} decoded at {img['naturalWidth']}x{img['naturalHeight']}, "
            f"declared {img['width']}x{img['height']}"
        )
if result["scripts"]:
    problems.append(f"the page has {result['scripts']} script(s)")
for p in problems:
    print(f"check_report_html: {p}", file=sys.stderr)
if problems:
    sys.exit(1)
rows = sum(len(t) - 1 for t in rendered)
sizes = ", ".join(f"{i['naturalWidth']}x{i['naturalHeight']}" for i in images)
print(
    f"report.html OK in {result['title']!r}: {len(rendered)} table(s), {rows} row(s) as in "
    f"report.md; {len(images)} image(s) decoded ({sizes}); no script"
)
EOF
