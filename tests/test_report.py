"""``vecfmt report``: the figures it computes, checked against known data, and the page as a person sees
it, opened in a real headless Chromium (Debian's package) that reports console errors, uncaught
exceptions, failed loads and every network request over the DevTools protocol."""

from __future__ import annotations

import base64
import fcntl
import html
import json
import os
import re
import select
import shutil
import signal
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pytest

from tests.helpers import assert_one_clear_error, make_table, vecfmt_cli, write_namespaced
from tests.servers.postgres import unavailable
from vecfmt.ops.report import ReportError, build_report, gather, load_verify_json, pca_2d
from vecfmt.quality.verify import verify
from vecfmt.reader import Dump
from vecfmt.schema import vector_digests, vectors_array
from vecfmt.writer import ParquetOptions

HOSTILE_NS = '<script>alert("ns")</script>'
HOSTILE_KEY = "<img src=x onerror=alert(1)> $a$b"
DIM = 16


# --- a dump with known duplicates, zero vectors, null named vectors and hostile names ---------------


def known_tables() -> dict[str, pa.Table]:
    """Default namespace, 300 rows: row 5's vector repeated in rows 10, 150 and 250 (three files apart),
    row 41 equal to row 40; rows 50 (+0.0) and 52 (-0.0) all zeros, row 51 near zero; the named vector
    ``img`` null in every tenth row. A second namespace with a hostile name, ids (rows 3 and 7 the same
    vector) and metadata key."""
    base = make_table(300, DIM, named={"img": 4})
    vectors = base.column("values").combine_chunks().values.to_numpy().reshape(300, DIM).copy()
    vectors[[10, 150, 250]] = vectors[5]
    vectors[41] = vectors[40]
    vectors[50] = 0.0
    vectors[51] = vectors[51] * 1e-8
    vectors[52] = -0.0
    img = base.column("values_img").combine_chunks()
    img_nulls = pa.FixedSizeListArray.from_arrays(img.values, 4, mask=pa.array(np.arange(300) % 10 == 0))
    default = base.set_column(1, "values", vectors_array(vectors)).set_column(
        base.schema.get_field_index("values_img"), "values_img", img_nulls)
    other = make_table(120, DIM, seed=1, prefix="<b>x</b>-", named={"img": 4})
    theirs = other.column("values").combine_chunks().values.to_numpy().reshape(120, DIM).copy()
    theirs[7] = theirs[3]
    other = other.set_column(1, "values", vectors_array(theirs))
    metadata = [json.dumps({HOSTILE_KEY: i, "half": i if i % 2 else None}) for i in range(120)]
    other = other.set_column(other.schema.get_field_index("metadata"), "metadata", pa.array(metadata, pa.string()))
    return {"": default, HOSTILE_NS: other}


@pytest.fixture(scope="module")
def known_dump(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("report") / "dump"
    write_namespaced(str(root), known_tables(), max_chunksize=50, metric="euclidean",
                     options=ParquetOptions(max_file_rows=100))
    return root


def test_figures_of_a_known_dump(known_dump):
    stats = gather(Dump.open(str(known_dump)), sample=10_000)
    default, other = stats.namespaces
    assert (default.name, default.rows_read, default.files) == ("", 300, 3)
    values = default.vectors["values"]
    assert (values.vectors, values.nulls, values.non_finite) == (300, 0, 0)
    assert (values.duplicate_rows, values.duplicated_vectors) == (4, 2)
    assert values.duplicate_examples == [["id-5", "id-10", "id-150", "id-250"], ["id-40", "id-41"]]
    assert (values.zero, values.near_zero) == (2, 3)  # +0.0 and -0.0 are both zero, and not duplicates
    assert len(values.norms) == 300
    np.testing.assert_allclose(np.sort(values.norms)[:3], [0, 0, np.linalg.norm(known_tables()[""].column(
        "values")[51].values.to_numpy().astype(np.float64))], rtol=1e-6)
    img = default.vectors["values_img"]
    # the 30 null vectors (zeros underneath) are neither duplicates nor zero vectors
    assert (img.vectors, img.nulls, img.duplicate_rows, img.zero) == (270, 30, 0, 0)
    assert other.name == HOSTILE_NS and other.vectors["values"].duplicate_examples == [["<b>x</b>-3", "<b>x</b>-7"]]
    assert other.metadata["sampled_rows"] == 120
    assert other.metadata["keys"][HOSTILE_KEY] == {"types": ["integer"], "fill_rate": 1.0}
    assert other.metadata["keys"]["half"] == {"types": ["integer", "null"], "fill_rate": 0.5}
    assert default.metadata_null_rows == sum(1 for i in range(300) if i % 7 == 3)
    assert len(stats.map_vectors) == 420 and sorted(set(stats.map_namespaces.tolist())) == [0, 1]


@pytest.mark.parametrize("dim", [6, 7, 64])  # read as 64-bit words, and as 32-bit ones for an odd width
def test_bit_digests_tell_every_bit_apart(dim):
    rng = np.random.default_rng(dim)
    row = rng.standard_normal(dim).astype(np.float32)
    flipped = np.repeat(row[None], dim * 32, axis=0)
    bits = flipped.view(np.uint32)
    bits[np.arange(dim * 32), np.arange(dim * 32) // 32] ^= (np.uint32(1) << (np.arange(dim * 32) % 32)).astype(
        np.uint32)  # every single bit of the row flipped, one row each
    digests = vector_digests(np.vstack([row, row, flipped]))
    assert digests[0] == digests[1] and len(np.unique(digests[1:])) == dim * 32 + 1
    zeros = np.zeros((2, dim), np.float32)
    zeros[1, 0] = -0.0
    assert vector_digests(zeros)[0] != vector_digests(zeros)[1]
    # the signs of any two components flipped: a bare product modulo 2**64 maps every top-bit flip to 2**63,
    # so such rows collide by the hundred
    pairs = [(i, j) for i in range(dim) for j in range(i + 1, dim)]
    signs = np.repeat(row[None], len(pairs), axis=0)
    for n, (i, j) in enumerate(pairs):  # a few hundred test rows
        signs[n, [i, j]] *= -1
    assert len(np.unique(vector_digests(signs))) == len(pairs)


def test_bit_digests_of_both_signs_of_a_word_flipped():
    """At 768 dimensions, both signs of one 64-bit word flipped, for each of the 384 words: a mixing that
    only folds high bits down by xor-shifts (x ^= x >> 32; x ^= x >> 16) leaves this change in bits 47 and
    63, and two of these rows collided with it."""
    row = np.random.default_rng(768).standard_normal(768).astype(np.float32)
    rows = np.repeat(row[None], 385, axis=0)
    words = np.arange(384)
    rows[words + 1, 2 * words] *= -1
    rows[words + 1, 2 * words + 1] *= -1
    assert len(np.unique(vector_digests(rows))) == 385


def test_samples_are_uniform_and_bounded(known_dump):
    """A sample smaller than the dump: exactly ``sample`` rows in the map, drawn from every file of both
    namespaces, and the same rows from one run to the next."""
    stats = gather(Dump.open(str(known_dump)), sample=60)
    assert stats.map_vectors.shape == (60, DIM)
    assert set(stats.map_namespaces.tolist()) == {0, 1}
    assert [ns.metadata["sampled_rows"] for ns in stats.namespaces] == [60, 60]
    again = gather(Dump.open(str(known_dump)), sample=60)
    np.testing.assert_array_equal(stats.map_vectors, again.map_vectors)
    every = np.concatenate([t.column("values").combine_chunks().values.to_numpy().reshape(-1, DIM)
                            for t in known_tables().values()])
    rows = [int(np.flatnonzero((every == v).all(axis=1))[0]) for v in stats.map_vectors]
    assert min(rows) < 100 and max(rows) >= 300 and len({r // 100 for r in rows}) >= 4  # spread over the files


def test_pca_finds_the_main_directions():
    rng = np.random.default_rng(0)
    # spread 3 along axis 0 and 1 along axis 2, uncorrelated in the sample itself: the principal
    # components are exactly those axes, and the coordinates the centred values
    t, u = rng.standard_normal((2, 500))
    t -= t.mean()
    u -= u.mean() + (u @ t) / (t @ t) * t
    t, u = 3 * t / t.std(), u / u.std()
    along = np.zeros((500, 4))
    along[:, 0], along[:, 2] = t, u
    coords, explained = pca_2d((along + 5).astype(np.float32), "euclidean")
    assert coords.shape == (500, 2)
    np.testing.assert_allclose(explained, [0.9, 0.1], atol=1e-5)
    np.testing.assert_allclose(np.abs(coords), np.abs(along[:, [0, 2]]), atol=1e-4)
    # cosine ignores length: the same directions at other lengths map to the same points
    scaled = along * rng.uniform(0.5, 4, (500, 1)) + 1e-3
    a, _ = pca_2d(scaled.astype(np.float32), "cosine")
    b, _ = pca_2d((scaled * 7).astype(np.float32), "cosine")
    np.testing.assert_allclose(np.abs(a), np.abs(b), atol=1e-5)
    assert pca_2d(np.ones((1, 3), np.float32), "cosine")[0].shape == (1, 2)  # one row, no variance: no error


@pytest.mark.parametrize("rows", [12, 400])  # fewer rows than dimensions, and more: both ways to the axes
def test_pca_of_points_in_a_plane_keeps_their_distances(rows):
    rng = np.random.default_rng(rows)
    plane = np.linalg.qr(rng.standard_normal((40, 2)))[0]  # two orthonormal directions in 40 dimensions
    points = rng.standard_normal((rows, 2)) @ plane.T + rng.standard_normal(40)
    coords, explained = pca_2d(points.astype(np.float32), "euclidean")
    assert explained.sum() == pytest.approx(1.0, abs=1e-6)
    distances = np.linalg.norm(points[:, None] - points[None], axis=2)
    np.testing.assert_allclose(np.linalg.norm(coords[:, None] - coords[None], axis=2), distances, atol=1e-4)


def test_verify_json_is_checked(tmp_path):
    (tmp_path / "inspect.json").write_text(json.dumps({"uri": "x", "total_rows": 3}))
    with pytest.raises(ReportError, match="not the output of `vecfmt verify --json`: it has no 'source'"):
        load_verify_json(tmp_path / "inspect.json")
    with pytest.raises(ReportError, match="not JSON"):
        load_verify_json(_write(tmp_path / "broken.json", "{"))
    with pytest.raises(ReportError, match="not a JSON object"):
        load_verify_json(_write(tmp_path / "list.json", "[1, 2]"))
    fake = {"source": "a", "target": "b", "passed": True, "problems": [], "namespaces": {}, "search": {"k": 10}}
    with pytest.raises(ReportError, match=r"'search\.queries'"):
        load_verify_json(fake)
    figures = dict.fromkeys(("k", "queries", "overlap", "identical", "recall_source", "recall_target",
                             "worst_overlap", "worst_recall_target"), 1)
    assert load_verify_json({**fake, "search": {**figures, "metric": "cosine"}})["search"]["k"] == 1
    with pytest.raises(ReportError, match="search figures are not numbers"):
        load_verify_json({**fake, "search": {**figures, "queries": "many", "metric": "cosine"}})
    with pytest.raises(ReportError, match="'namespaces' are not what verify writes"):
        load_verify_json({**fake, "search": None, "namespaces": {"": {"missing": "<b>"}}})
    search = {**figures, "metric": "cosine", "queries": 3}
    assert load_verify_json({**fake, "search": {**search, "overlap_per_query": [1, 0.5, 0]}})
    with pytest.raises(ReportError, match=r"'search\.overlap_per_query' has 2 figures for 3 queries"):
        load_verify_json({**fake, "search": {**search, "overlap_per_query": [1, 0.5]}})
    for bad in ([1, "x", 0], [1, float("nan"), 0], [1, 2, 0], "1,1,1"):
        with pytest.raises(ReportError, match=r"'search\.recall_target_per_query' is not a list of figures"):
            load_verify_json({**fake, "search": {**search, "recall_target_per_query": bad}})


def _verify_json(**search: Any) -> dict[str, Any]:
    """What ``vecfmt verify --json`` prints for a clean dump-to-dump check, its search figures replaced."""
    figures = {"k": 10, "queries": 10, "metric": "cosine", "overlap": 1.0, "identical": 1.0, "recall_source": 1.0,
               "recall_target": 1.0, "worst_overlap": 1.0, "worst_recall_target": 1.0}
    return {"source": "src", "target": "dst", "passed": True, "problems": [], "sample": 2000, "namespaces": {},
            "search": {**figures, **search}, "min_recall": None, "min_overlap": None}


def test_the_distribution_of_verifys_figures(known_dump):
    """Per-query figures drawn as a histogram, with the mean, the worst query, the 10th percentile, the
    median and the queries at 1.0 beside it; without them (an older verify) the aggregates alone, said so."""
    overlaps = [1.0, 0.9, 1.0, 0.2, 1.0, 0.5, 1.0, 0.9, 1.0, 1.0]  # mean 0.85; 10th percentile 0.2 + 0.9 * 0.3
    recalls = [1.0] * 9 + [0.6]
    page = build_report(str(known_dump), sample=50, verify_json=_verify_json(
        overlap=0.85, worst_overlap=0.2, recall_target=0.96, worst_recall_target=0.6, overlap_per_query=overlaps,
        recall_target_per_query=recalls))
    assert '<figure id="verify-distribution"><img alt="verify search quality: distribution over the queries" ' \
           'src="data:image/png;base64,' in page
    cells = [re.findall(r"<td>([^<]*)</td>", row) for row in re.findall(r"<tr>(.*?)</tr>", page)]
    assert ["0.8500", "0.2000", "0.4700", "1.0000", "6 (60.0%)"] in [c[1:] for c in cells if c and "overlap" in c[0]]
    assert ["0.9600", "0.6000", "0.9600", "1.0000", "9 (90.0%)"] in [
        c[1:] for c in cells if c and c[0].startswith("recall@10 of the target")]
    assert "No distribution was recorded" not in page and "mean and worst query" not in page

    old = build_report(str(known_dump), sample=50, verify_json=_verify_json(overlap=0.85, worst_overlap=0.2))
    assert "No distribution was recorded" in old and 'id="verify-distribution"' not in old
    assert 'alt="verify search quality: mean and worst query"' in old
    assert "<th>median</th>" not in old and "<td>0.8500</td><td>0.2000</td></tr>" in old


def _write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def test_escapes_user_data_and_loads_nothing(known_dump):
    page = build_report(str(known_dump), sample=200)
    assert "<script" not in page.lower()
    assert html.escape(HOSTILE_NS) in page and HOSTILE_NS not in page
    assert html.escape(HOSTILE_KEY) in page and "<img src=x" not in page
    assert html.escape("<b>x</b>-3, <b>x</b>-7") in page and "<b>" not in page
    assert not re.search(r"""(src|href)\s*=\s*["']?\s*(https?:)?//""", page, re.IGNORECASE), "an external URL"
    assert re.findall(r'<img [^>]*src="([a-z]+):', page) == ["data"] * 3  # two norm histograms and the map
    assert "default-src 'none'" in page


# --- the command ---------------------------------------------------------------------------------


def test_bad_input_is_one_clear_line_and_exit_2(known_dump, tmp_path):
    out = str(tmp_path / "r.html")
    for args, needle in (
        ((str(tmp_path / "nowhere"), "-o", out), "does not exist"),
        ((str(known_dump), "--verify-json", str(tmp_path / "none.json"), "-o", out), "none.json"),
        ((str(known_dump), "--verify-json", str(_write(tmp_path / "i.json", '{"uri": 1}')), "-o", out),
         "not the output of `vecfmt verify --json`"),
        ((str(known_dump), "--verify-json", str(_write(tmp_path / "b.json", "{nope")), "-o", out), "is not JSON"),
    ):
        run = vecfmt_cli("report", *args)
        assert_one_clear_error(run, needle)
        assert run.code == 2, run
    broken = tmp_path / "broken"
    shutil.copytree(known_dump, broken)
    (broken / "manifest.json").write_text("{ not json")
    run = vecfmt_cli("report", str(broken), "-o", out)
    assert_one_clear_error(run, "manifest.json is not valid JSON")
    assert run.code == 2
    flipped = tmp_path / "flipped"
    shutil.copytree(known_dump, flipped)
    part = flipped / "__default__" / "part-00001.parquet"
    data = bytearray(part.read_bytes())
    data[len(data) // 2] ^= 0x10
    part.write_bytes(bytes(data))
    run = vecfmt_cli("report", str(flipped), "-o", out)
    assert_one_clear_error(run, "part-00001.parquet is corrupt", "SHA-256")
    assert run.code == 2 and not Path(out).exists()


# --- the page in a real browser ------------------------------------------------------------------


@dataclass
class Visit:
    """What the browser saw while loading a page."""

    errors: list[str] = field(default_factory=list)  # console errors, uncaught exceptions, failed loads
    requests: list[str] = field(default_factory=list)  # every URL the page asked for, the page's own first
    values: dict[str, Any] = field(default_factory=dict)  # the expressions evaluated once it had loaded


class Chromium:
    """Headless Chromium driven over the DevTools protocol through ``--remote-debugging-pipe`` (fd 3 in,
    fd 4 out, messages separated by NUL), so no WebSocket client or browser driver package is needed."""

    def __init__(self, binary: str, profile: Path) -> None:
        self.binary, self.profile = binary, profile

    def visit(self, url: str, expressions: dict[str, str], screenshot: Path | None = None,
              timeout: float = 60) -> Visit:
        chrome_reads, we_write = os.pipe()  # os.pipe(): (read end, write end)
        we_read, chrome_writes = os.pipe()
        # copies above any fd the child's 3 and 4 could be, so that placing one cannot overwrite the other
        high_in, high_out = (fcntl.fcntl(fd, fcntl.F_DUPFD_CLOEXEC, 100) for fd in (chrome_reads, chrome_writes))

        def pipes_as_3_and_4() -> None:
            os.dup2(high_in, 3)
            os.dup2(high_out, 4)

        process = subprocess.Popen(
            [self.binary, "--headless=new", "--no-sandbox", "--disable-gpu", "--no-first-run",
             "--disable-extensions", "--remote-debugging-pipe", "--window-size=1200,900",
             f"--user-data-dir={self.profile}", "about:blank"],
            pass_fds=(3, 4), preexec_fn=pipes_as_3_and_4, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL, start_new_session=True)  # its own group: its helpers are ended with it
        for fd in (chrome_reads, chrome_writes, high_in, high_out):
            os.close(fd)
        self._write, self._read, self._buffer, self._next = we_write, we_read, b"", 0
        self._events: list[dict[str, Any]] = []
        self._deadline = time.monotonic() + timeout
        try:
            return self._visit(url, expressions, screenshot)
        finally:
            os.close(we_write)
            os.close(we_read)
            os.killpg(process.pid, signal.SIGKILL)  # the browser and the helper processes it started
            process.wait(10)

    def _visit(self, url: str, expressions: dict[str, str], screenshot: Path | None) -> Visit:
        page = next(t for t in self._call("Target.getTargets")["targetInfos"] if t["type"] == "page")
        session = self._call("Target.attachToTarget", {"targetId": page["targetId"], "flatten": True})["sessionId"]
        for domain in ("Runtime", "Log", "Page", "Network"):
            self._call(f"{domain}.enable", session=session)
        self._call("Page.navigate", {"url": url}, session)
        while not any(e.get("method") == "Page.loadEventFired" for e in self._events):
            self._events.append(self._receive())
        visit = Visit()
        for name, expression in expressions.items():
            result = self._call("Runtime.evaluate", {"expression": expression, "returnByValue": True}, session)
            visit.values[name] = result["result"].get("value")
        if screenshot is not None:
            shot = self._call("Page.captureScreenshot", {"format": "png", "captureBeyondViewport": True}, session)
            screenshot.write_bytes(base64.b64decode(shot["data"]))
        for event in self._events:  # the ones that arrived up to the last answer
            method, params = event.get("method"), event.get("params", {})
            if method == "Runtime.exceptionThrown":
                details = params["exceptionDetails"]
                visit.errors.append(f"uncaught: {details.get('exception', {}).get('description') or details['text']}")
            elif method == "Runtime.consoleAPICalled" and params["type"] in ("error", "assert"):
                visit.errors.append("console: " + " ".join(str(a.get("value", a.get("description")))
                                                           for a in params["args"]))
            elif method == "Log.entryAdded" and params["entry"]["level"] == "error":
                visit.errors.append(f"log: {params['entry']['text']} {params['entry'].get('url', '')}")
            elif method == "Network.requestWillBeSent":
                visit.requests.append(params["request"]["url"])
        return visit

    def _call(self, method: str, params: dict[str, Any] | None = None, session: str | None = None) -> dict[str, Any]:
        self._next += 1
        message: dict[str, Any] = {"id": self._next, "method": method, "params": params or {}}
        if session:
            message["sessionId"] = session
        os.write(self._write, json.dumps(message).encode() + b"\0")
        while True:
            answer = self._receive()
            if answer.get("id") == self._next:
                if "error" in answer:
                    raise RuntimeError(f"{method}: {answer['error']}")
                return answer["result"]
            self._events.append(answer)

    def _receive(self) -> dict[str, Any]:
        while b"\0" not in self._buffer:
            left = self._deadline - time.monotonic()
            if left <= 0 or not select.select([self._read], [], [], left)[0]:
                raise TimeoutError("Chromium did not answer in time")
            chunk = os.read(self._read, 1 << 20)
            if not chunk:
                raise EOFError("Chromium closed its DevTools pipe")
            self._buffer += chunk
        message, _, self._buffer = self._buffer.partition(b"\0")
        return json.loads(message)


@pytest.fixture
def chromium(tmp_path) -> Chromium:
    binary = shutil.which("chromium") or shutil.which("chromium-browser")
    if binary is None:
        unavailable("Chromium is not installed (Debian: apt-get install chromium; scripts/setup-chromium.sh)")
    return Chromium(binary, tmp_path / "chromium-profile")


def test_the_browser_check_catches_errors(chromium, tmp_path):
    """A check that cannot fail is no check: a page with an uncaught exception, a console error and an
    image from the network is reported on all three counts."""
    page = tmp_path / "bad.html"
    page.write_text('<!DOCTYPE html><html><body><p>hello</p><img src="http://127.0.0.1:9/x.png">'
                    '<script>console.error("deliberate console error"); throw new Error("deliberate throw");'
                    "</script></body></html>")
    visit = chromium.visit(page.as_uri(), {"text": "document.body.innerText"})
    assert visit.values["text"] == "hello"
    assert any("uncaught" in e and "deliberate throw" in e for e in visit.errors), visit.errors
    assert any(e == "console: deliberate console error" for e in visit.errors), visit.errors
    assert "http://127.0.0.1:9/x.png" in visit.requests, visit.requests
    assert any(e.startswith("log:") and "127.0.0.1:9" in e for e in visit.errors), visit.errors
    clean = tmp_path / "clean.html"
    clean.write_text("<!DOCTYPE html><html><body><p>fine</p></body></html>")
    assert chromium.visit(clean.as_uri(), {}).errors == []


def test_report_in_a_real_browser(chromium, known_dump, tmp_path):
    """The whole flow as a user runs it: verify a migration (here dump to dump), then the report with
    verify's JSON; the page opens without a console error, loads nothing from anywhere, and shows the
    figures and numbers. The screenshot stays in the test's temporary folder."""
    copy = tmp_path / "copy"
    write_namespaced(str(copy), known_tables(), metric="euclidean")
    check = vecfmt_cli("verify", str(known_dump), str(copy), "--json", "--queries", "20")
    assert check.code == 0, check
    (tmp_path / "verify.json").write_text(check.stdout)
    out = tmp_path / "report.html"
    run = vecfmt_cli("report", str(known_dump), "--verify-json", str(tmp_path / "verify.json"), "-o", str(out))
    assert run.code == 0, run
    assert run.stdout.startswith(f"wrote {out} (420 rows"), run.stdout
    quiet = vecfmt_cli("report", str(known_dump), "-o", str(tmp_path / "q.html"), "--quiet")
    assert quiet.code == 0 and quiet.stdout == "" and quiet.stderr == "", quiet

    screenshot = tmp_path / "report.png"
    visit = chromium.visit(out.as_uri(), {
        "text": "document.body.innerText",
        "images": "Array.from(document.images).map(i => [i.alt, i.complete, i.naturalWidth, i.naturalHeight])",
        "scripts": "document.scripts.length",
        "title": "document.title",
        "histogram": "document.querySelector('#verify-distribution img')?.naturalWidth ?? 0",
    }, screenshot=screenshot)
    assert visit.errors == [], visit.errors
    assert visit.requests and all(u == out.as_uri() or u.startswith("data:") for u in visit.requests), visit.requests
    assert visit.values["scripts"] == 0
    assert visit.values["title"] == f"vecfmt report: {Dump.open(str(known_dump)).uri}"
    images = visit.values["images"]
    assert [alt for alt, *_ in images] == [
        "histogram of the norms of values", "histogram of the norms of values_img", "PCA map of a sample",
        "verify search quality: distribution over the queries"]
    assert all(complete and width > 300 and height > 200 for _, complete, width, height in images), images
    assert visit.values["histogram"] > 300
    text = visit.values["text"]
    manifest = Dump.open(str(known_dump)).manifest
    for needle in (
        "420 in 2 namespaces", HOSTILE_NS, HOSTILE_KEY, "<b>x</b>-3, <b>x</b>-7",  # user data shown as text, not markup
        "4 rows repeat an earlier row's vector exactly (2 distinct vectors occur more than once)",
        "3 near-zero vectors (norm below 1e-06), 2 of them all zeros",
        "id-5, id-10, id-150, id-250", "id-40, id-41",
        "vecfmt verify passed", "overlap@10", "1.0000", "10th percentile", "queries at 1.0", "20 (100.0%)",
        *(f.sha256 for f in manifest.files), *(f.path for f in manifest.files),
    ):
        assert needle in text, needle
    assert screenshot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and screenshot.stat().st_size > 50_000


def test_report_of_an_older_verify_json_in_a_real_browser(chromium, known_dump, tmp_path):
    """verify's JSON from before the per-query figures: the page still opens without an error, shows the
    aggregates as bars and says that no distribution was recorded."""
    copy = tmp_path / "copy"
    write_namespaced(str(copy), known_tables(), metric="euclidean")
    verified = verify(str(known_dump), str(copy), queries=20, progress=False).to_dict()
    for key in ("overlap_per_query", "recall_target_per_query"):
        del verified["search"][key]
    (tmp_path / "old.json").write_text(json.dumps(verified))
    out = tmp_path / "report.html"
    run = vecfmt_cli("report", str(known_dump), "--verify-json", str(tmp_path / "old.json"), "-o", str(out))
    assert run.code == 0, run
    visit = chromium.visit(out.as_uri(), {
        "text": "document.body.innerText",
        "images": "Array.from(document.images).map(i => [i.alt, i.complete, i.naturalWidth])",
        "histogram": "document.getElementById('verify-distribution') === null",
    }, screenshot=tmp_path / "report.png")
    assert visit.errors == [], visit.errors
    assert visit.values["histogram"] is True
    assert visit.values["images"][-1][:2] == ["verify search quality: mean and worst query", True]
    assert visit.values["images"][-1][2] > 300
    for needle in ("No distribution was recorded", "overlap@10", "1.0000", "20 queries, k = 10"):
        assert needle in visit.values["text"], needle
