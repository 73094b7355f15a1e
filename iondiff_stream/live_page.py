"""A live HTML page of a running simulation, for a browser or a notebook.

``iondiff-stream monitor STORE --html PAGE`` rewrites ``PAGE`` at every refresh from the dictionary of
:func:`iondiff_stream.monitor.status`: frames, speed, hops over time, ions in transit, the running D
(with its interval when the status has one), the sites found and the self-checks. The page is one
self-contained file (inline style and SVG charts, no scripts, no network) that reloads itself, so it
can be opened from a shared file system; ``--serve PORT`` also serves it on ``127.0.0.1``.

In a notebook, :func:`live_view` returns an object whose ``_repr_html_`` is the same view.

Functions
---------
render
    The page from a status and the history of earlier ones (pure).
snapshot
    The few numbers of a status kept in the history.
write_atomic
    Replace a file in one step (readers see the old page or the new one, never half of one).
"""

from __future__ import annotations

import html
import logging
import os
import tempfile
import threading
import time
from collections.abc import Sequence
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from iondiff_stream.core.display import fmt
from iondiff_stream.outputs.report import check_verdict

logger = logging.getLogger(__name__)

__all__ = ["render", "render_body", "snapshot", "write_atomic", "LivePage", "MonitorPage", "PageServer", "LiveView",
           "live_view"]

#: keys of the status shown in their own place on the page (the rest go to "Other")
_SHOWN = {"store", "frames", "frames_total", "last_step", "n_ions", "segments", "simulated_time_ps", "speed_ns_per_day",
          "msd_A2", "D_running_cm2_s", "D_running_ci95_cm2_s", "hops", "ions_in_transit", "hop_rate_per_ion_per_ps",
          "centres_per_ion", "online_frames", "n_sites", "site_check", "site_check_reasons", "live_final", "waiting",
          "skipped_duplicate_frames", "step_gaps", "ring_dropped_frames", "unclean_writer_exits", "model_deviation"}

_CSS = """
.idl{font-family:system-ui,-apple-system,'Segoe UI',sans-serif;color:#222;max-width:1100px}
.idl h1{font-size:150%;margin:4px 0} .idl h2{font-size:115%;margin:18px 0 6px} .idl .sub{color:#555;margin:0}
.idl .cards{display:flex;flex-wrap:wrap;gap:10px;margin:12px 0}
.idl .card{border:1px solid #ccd;border-radius:8px;padding:8px 14px;min-width:140px;background:#f7f8fc}
.idl .label{font-size:80%;color:#555} .idl .value{font-size:130%;font-weight:600} .idl .note{font-size:75%;color:#555}
.idl table{border-collapse:collapse} .idl td,.idl th{padding:3px 8px;text-align:left;vertical-align:top}
.idl tr:nth-child(even){background:#f1f2f6}
.idl .badge{display:inline-block;min-width:92px;text-align:center;border-radius:4px;padding:1px 6px;font-weight:600;
font-size:85%;color:#fff}
.idl .pass{background:#2e7d32} .idl .warn{background:#ef8f00} .idl .fail{background:#c62828} .idl .na{background:#8a8f98}
.idl .charts{display:flex;flex-wrap:wrap;gap:14px} .idl .wait{background:#fff3cd;padding:8px;border-radius:6px}
"""


def snapshot(status: dict[str, Any], wall: float | None = None) -> dict[str, Any]:
    """The numbers of one status that the page plots over time.

    Parameters
    ----------
    status : dict
        A dictionary of :func:`iondiff_stream.monitor.status`.
    wall : float, optional
        Wall-clock time of the status (default: now).

    Returns
    -------
    dict
        ``wall``, ``frames``, ``simulated_time_ps``, ``hops``, ``ions_in_transit`` and ``D`` (running D per
        species, cm²/s); absent numbers are None.
    """
    return {"wall": time.time() if wall is None else float(wall), "frames": status.get("frames"),
            "simulated_time_ps": status.get("simulated_time_ps"), "hops": status.get("hops"),
            "ions_in_transit": status.get("ions_in_transit"), "D": dict(status.get("D_running_cm2_s") or {}),
            "max_devi_f": (status.get("model_deviation") or {}).get("current_max_devi_f_eV_A")}


def _esc(value: Any) -> str:
    return html.escape(value if isinstance(value, str) else fmt(value))


def _svg_chart(points: Sequence[tuple[float, float]], title: str, xlabel: str, unit: str = "",
               width: int = 340, height: int = 150) -> str:
    """A small line chart (inline SVG) with its range written on the axes."""
    pts = [(float(x), float(y)) for x, y in points if x is not None and y is not None]
    head = f"<div><div class='label'>{html.escape(title)}</div>"
    if len(pts) < 2:
        return head + f"<svg width='{width}' height='{height}' role='img'><rect width='100%' height='100%' " \
                      "fill='#f7f8fc' stroke='#ccd'/><text x='50%' y='50%' text-anchor='middle' fill='#777' " \
                      "font-size='12'>waiting for a second refresh</text></svg></div>"
    x0, x1 = min(p[0] for p in pts), max(p[0] for p in pts)
    y0, y1 = min(0.0, min(p[1] for p in pts)), max(p[1] for p in pts)
    if x1 <= x0:
        x1 = x0 + 1.0
    if y1 <= y0:
        y1 = y0 + 1.0
    left, right, top, bottom = 54, 8, 8, 30
    w, h = width - left - right, height - top - bottom
    coords = " ".join(f"{left + (x - x0) / (x1 - x0) * w:.1f},{top + h - (y - y0) / (y1 - y0) * h:.1f}"
                      for x, y in pts)
    u = f" {unit}" if unit else ""
    return head + (
        f"<svg width='{width}' height='{height}' role='img' font-size='10' font-family='sans-serif'>"
        f"<rect x='{left}' y='{top}' width='{w}' height='{h}' fill='#f7f8fc' stroke='#ccd'/>"
        f"<polyline points='{coords}' fill='none' stroke='#1f77b4' stroke-width='2'/>"
        f"<text x='{left - 4}' y='{top + 9}' text-anchor='end'>{html.escape(fmt(y1, digits=3))}</text>"
        f"<text x='{left - 4}' y='{top + h}' text-anchor='end'>{html.escape(fmt(y0, digits=3))}</text>"
        f"<text x='{left}' y='{height - 14}'>{html.escape(fmt(x0, digits=3))}</text>"
        f"<text x='{left + w}' y='{height - 14}' text-anchor='end'>{html.escape(fmt(x1, digits=3))}</text>"
        f"<text x='{left + w / 2}' y='{height - 2}' text-anchor='middle'>{html.escape(xlabel)}</text>"
        f"<text x='4' y='{top + h / 2}' fill='#555'>{html.escape(u.strip())}</text></svg></div>")


def _checks(st: dict[str, Any]) -> list[tuple[str, str, str]]:
    """Self-checks of the live store and of the live hop estimator, as (name, verdict, reason)."""
    out: list[tuple[str, str, str]] = []
    sc = st.get("site_check")
    reasons = st.get("site_check_reasons") or []
    if sc is None:
        out.append(("Site model", "n/a", "not available yet"))
    else:
        out.append(("Site model", check_verdict(sc), "; ".join(map(str, reasons)) or str(sc)))
    gaps, dup = st.get("step_gaps"), st.get("skipped_duplicate_frames")
    if gaps is None:
        out.append(("Frame steps", "n/a", "not available yet"))
    elif gaps:
        out.append(("Frame steps", "warn", f"{fmt(gaps)} gaps in the step sequence (frames missing)"))
    else:
        out.append(("Frame steps", "pass", "no gaps" + (f"; {fmt(dup)} repeated frames skipped" if dup else "")))
    dropped = st.get("ring_dropped_frames")
    if dropped:
        out.append(("Ring buffer", "warn", f"the ring dropped {fmt(dropped)} earlier frames: they are not in the "
                                           "store for the offline analysis"))
    elif dropped is not None:
        out.append(("Ring buffer", "pass", "every frame kept"))
    md = st.get("model_deviation")
    if md and md.get("rows"):
        state = md.get("current_state")
        verdict = "fail" if state == "untrusted" else "warn" if md.get("warning") or state == "candidate" else "pass"
        out.append(("Model trust", verdict, md.get("warning") or
                    f"max force deviation {fmt(md.get('current_max_devi_f_eV_A'), 'eV/Å', digits=3)} ({state}; trust "
                    f"levels {fmt(md.get('trust_lo_eV_A'))} / {fmt(md.get('trust_hi_eV_A'))} eV/Å)"))
    if st.get("unclean_writer_exits"):
        out.append(("Writer", "warn", f"{fmt(st['unclean_writer_exits'])} unclean writer exits (a crash or a kill); "
                                      "the frames before each are kept"))
    return out


def _count(value: Any) -> str:
    """A count in full, with thousands separators (12,345 frames)."""
    return f"{int(value):,}" if isinstance(value, (int, float)) and not isinstance(value, bool) else fmt(value)


def _status_cards(st: dict[str, Any]) -> list[tuple[str, str, str]]:
    cards: list[tuple[str, str, str]] = []
    total = st.get("frames_total")
    note = f"{_count(total)} written in all" if total is not None and total != st.get("frames") else ""
    cards.append(("frames", _count(st.get("frames")), note))
    t = st.get("simulated_time_ps")
    cards.append(("simulated time", fmt(t, "ps") if t is not None else "not yet", ""))
    sp = st.get("speed_ns_per_day")
    cards.append(("speed", fmt(sp, "ns/day", digits=3) if sp is not None else "not yet", ""))
    hops = st.get("hops")
    rate = st.get("hop_rate_per_ion_per_ps")
    cards.append(("hops", _count(hops) if hops is not None else "not yet",
                  f"ν = {fmt(rate, digits=3)} per ion per ps" if rate is not None else ""))
    tr = st.get("ions_in_transit")
    cards.append(("ions in transit", fmt(tr) if tr is not None else "not yet",
                  f"of {fmt(st.get('n_ions'))}" if st.get("n_ions") is not None else ""))
    ci = st.get("D_running_ci95_cm2_s") or {}
    for species, d in (st.get("D_running_cm2_s") or {}).items():
        iv = ci.get(species) if isinstance(ci, dict) else None
        note = f"95 % interval {fmt(iv[0], digits=3)} – {fmt(iv[1], digits=3)}" if iv and len(iv) == 2 else \
            "from the first frame to the last"
        cards.append((f"running D ({species})", fmt(d, "cm²/s", digits=3) if d is not None else "not yet", note))
    n_sites = st.get("n_sites")
    cards.append(("sites found", fmt(n_sites) if n_sites is not None else "not yet", ""))
    md = st.get("model_deviation")
    if md and md.get("rows"):
        cards.append(("model deviation now", fmt(md.get("current_max_devi_f_eV_A"), "eV/Å", digits=3),
                      f"{md.get('current_state')} (max force deviation, step {_count(md.get('last_step'))})"))
        cards.append(("model deviation max", fmt(md.get("max_max_devi_f_eV_A"), "eV/Å", digits=3),
                      f"mean {fmt(md.get('mean_max_devi_f_eV_A'), digits=3)} eV/Å"))
        above = md.get("frames_above_trust_hi")
        cards.append((f"frames above {fmt(md.get('trust_hi_eV_A'))} eV/Å", _count(above) if above is not None else "—",
                      f"of {_count(md.get('frames_with_devi'))}; above {fmt(md.get('trust_lo_eV_A'))}: "
                      f"{_count(md.get('frames_above_trust_lo'))}"))
    if st.get("live_final") is not None:
        cards.append(("final", fmt(st["live_final"]), "the writer finished the run"))
    return cards


def _html_num(text: str) -> str:
    import re

    return re.sub(r"(\d(?:\.\d+)?)e([+-])0*(\d+)",
                  lambda m: f"{m.group(1)}&thinsp;×&thinsp;10<sup>{'−' if m.group(2) == '-' else ''}{m.group(3)}</sup>",
                  html.escape(text))


def _other_rows(st: dict[str, Any]) -> list[tuple[str, str]]:
    rows = []
    for k, v in st.items():
        if k in _SHOWN or isinstance(v, list):
            continue
        if isinstance(v, dict):
            v = ", ".join(f"{a}: {fmt(b)}" for a, b in v.items() if not isinstance(b, (dict, list)))
        rows.append((k.replace("_", " "), fmt(v)))
    return rows


def render_body(status: dict[str, Any], history: Sequence[dict[str, Any]] = ()) -> str:
    """The live view as an HTML fragment (one ``<div>``, its own scoped style); see :func:`render`."""
    st = status
    parts = [f"<div class='idl'><style>{_CSS}</style>",
             f"<h1>iondiff-stream live</h1><p class='sub'>{html.escape(str(st.get('store', '')))}</p>"]
    if history:
        last = history[-1].get("wall")
        if last is not None:
            parts.append(f"<p class='sub'>updated {time.strftime('%Y-%m-%d %H:%M:%S', time.localtime(last))}</p>")
    if st.get("waiting"):
        parts.append(f"<p class='wait'>waiting for the store: {html.escape(str(st['waiting']))}</p>")
    parts.append("<div class='cards'>" + "".join(
        f"<div class='card'><div class='label'>{html.escape(lbl)}</div>"
        f"<div class='value' data-key='{html.escape(lbl)}'>{_html_num(v)}</div>"
        + (f"<div class='note'>{_html_num(n)}</div>" if n else "") + "</div>" for lbl, v, n in _status_cards(st))
        + "</div>")
    hist = list(history)
    xs = [h.get("simulated_time_ps") for h in hist]
    charts = [_svg_chart(list(zip(xs, [h.get("hops") for h in hist])), "hops", "simulated time (ps)"),
              _svg_chart(list(zip(xs, [h.get("ions_in_transit") for h in hist])), "ions in transit",
                         "simulated time (ps)")]
    for species in (st.get("D_running_cm2_s") or {}):
        charts.append(_svg_chart(list(zip(xs, [(h.get("D") or {}).get(species) for h in hist])),
                                 f"running D ({species}), cm²/s", "simulated time (ps)"))
    if any(h.get("max_devi_f") is not None for h in hist):
        charts.append(_svg_chart(list(zip(xs, [h.get("max_devi_f") for h in hist])), "max force deviation, eV/Å",
                                 "simulated time (ps)"))
    walls = [h.get("wall") for h in hist]
    w0 = walls[0] if walls and walls[0] is not None else 0.0
    charts.append(_svg_chart(list(zip([None if w is None else (w - w0) / 60.0 for w in walls],
                                      [h.get("frames") for h in hist])), "frames", "wall time (min)"))
    parts.append("<h2>Over time</h2><div class='charts'>" + "".join(charts) + "</div>")
    parts.append("<h2>Self-checks</h2><table>" + "".join(
        f"<tr><td><span class='badge {'na' if v == 'n/a' else v}'>{'not available' if v == 'n/a' else v}</span></td>"
        f"<th>{html.escape(n)}</th><td>{_html_num(r)}</td></tr>" for n, v, r in _checks(st)) + "</table>")
    segs = st.get("segments") or []
    if segs:
        parts.append("<h2>Segments (one per LAMMPS run)</h2><table><tr><th>segment</th><th>steps</th><th>frames</th>"
                     "<th>started by</th><th>restarts</th></tr>" + "".join(
                         f"<tr><td>{_esc(g.get('index'))}</td><td>{_count(g.get('first_step'))} – "
                         f"{_count(g.get('last_step'))}</td><td>{_count(g.get('n_frames'))}</td>"
                         f"<td>{_esc(g.get('started_by'))}</td><td>{_esc(g.get('restarts') or 0)}</td></tr>"
                         for g in segs if isinstance(g, dict)) + "</table>")
    other = _other_rows(st)
    if other:
        parts.append("<h2>Other</h2><table>" + "".join(f"<tr><th>{html.escape(k)}</th><td>{_html_num(v)}</td></tr>"
                                                      for k, v in other) + "</table>")
    parts.append("</div>")
    return "".join(parts)


def render(status: dict[str, Any], history: Sequence[dict[str, Any]] = (), refresh_s: float | None = 5.0) -> str:
    """The live page (a whole HTML document) of one status of a store being written.

    Parameters
    ----------
    status : dict
        A dictionary of :func:`iondiff_stream.monitor.status` (keys absent from it show "not yet" or
        "not available"; keys the page does not know are listed under "Other"), or
        ``{"store": ..., "waiting": reason}`` while the store cannot be read.
    history : sequence of dict
        Earlier :func:`snapshot` s, oldest first (the last one is this status): the charts over time.
    refresh_s : float or None
        The browser reloads the page every this many seconds (None: never).

    Returns
    -------
    str
        A self-contained HTML document: no scripts, no external resources.
    """
    meta = f"<meta http-equiv='refresh' content='{max(1, round(refresh_s))}'>" if refresh_s else ""
    return ("<!doctype html><html lang='en'><head><meta charset='utf-8'>" + meta
            + f"<title>iondiff-stream live: {html.escape(os.path.basename(str(status.get('store', ''))))}</title>"
            "</head><body>" + render_body(status, history) + "</body></html>")


def write_atomic(path: str, text: str) -> None:
    """Write ``text`` to ``path`` through a temporary file in the same directory and a rename.

    A reader (a browser, a web server, another machine on a shared file system) sees the old page
    or the new one, never a partial one.
    """
    d = os.path.dirname(os.path.abspath(path)) or "."
    fd, tmp = tempfile.mkstemp(prefix=f".{os.path.basename(path)}.", suffix=".tmp", dir=d)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise


class LivePage:
    """Keeps one HTML page up to date from successive statuses.

    Parameters
    ----------
    path : str
        The page (e.g. on a file system the browser's machine shares).
    refresh_s : float
        Reload interval written into the page, s.
    max_history : int
        Snapshots kept for the charts (older ones are thinned out, every other one dropped).
    """

    def __init__(self, path: str, refresh_s: float = 5.0, max_history: int = 2000) -> None:
        self.path = os.fspath(path)
        self.refresh_s = refresh_s
        self.max_history = max(4, int(max_history))
        self.history: list[dict[str, Any]] = []

    def update(self, status: dict[str, Any], wall: float | None = None) -> None:
        """Add ``status`` to the history and rewrite the page; a failed render or write is logged, not raised."""
        if not status.get("waiting"):
            self.history.append(snapshot(status, wall))
        if len(self.history) > self.max_history:
            self.history = self.history[:-1:2] + self.history[-1:]
        try:
            text = render(status, self.history, self.refresh_s)
        except Exception:  # noqa: BLE001 - a status the page cannot show must not stop the monitor
            logger.exception("could not render the live page from this status; the page keeps the last one")
            return
        try:
            write_atomic(self.path, text)
        except OSError as exc:
            logger.warning("could not write the live page %s: %s", self.path, exc)

    __call__ = update


class PageServer:
    """Serve one page on ``host:port`` from a background thread (``http.server``).

    ``/`` and the page's file name answer with the page as it is on disk at that moment; any other
    path is 404. Use as a context manager, or :meth:`start` and :meth:`stop`.

    Parameters
    ----------
    page : str
        The page file.
    port : int
        TCP port; 0 picks a free one (see :attr:`port`).
    host : str
        Address to listen on; the default serves this machine only (reach it through an SSH tunnel).
    """

    def __init__(self, page: str, port: int = 8000, host: str = "127.0.0.1") -> None:
        page_path = os.path.abspath(page)
        name = "/" + os.path.basename(page_path)

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 - http.server's name
                if self.path.split("?")[0] not in ("/", "/index.html", name):
                    self.send_error(404)
                    return
                try:
                    with open(page_path, "rb") as fh:
                        body = fh.read()
                except OSError:
                    body = b"<!doctype html><meta http-equiv='refresh' content='2'><p>no page yet</p>"
                self.send_response(200)
                self.send_header("Content-Type", "text/html; charset=utf-8")
                self.send_header("Content-Length", str(len(body)))
                self.send_header("Cache-Control", "no-store")
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - http.server's signature
                logger.debug("live page server: " + format, *args)

        self._server = ThreadingHTTPServer((host, int(port)), Handler)
        self._server.daemon_threads = True
        self._thread: threading.Thread | None = None

    @property
    def port(self) -> int:
        """The port listened on."""
        return int(self._server.server_address[1])

    @property
    def url(self) -> str:
        """``http://host:port/``."""
        return f"http://{self._server.server_address[0]}:{self.port}/"

    def start(self) -> PageServer:
        """Start serving in a daemon thread."""
        self._thread = threading.Thread(target=self._server.serve_forever, name="iondiff-live-page", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving and close the socket."""
        if self._thread is not None:
            self._server.shutdown()
            self._thread.join(timeout=10)
            self._thread = None
        self._server.server_close()

    def __enter__(self) -> PageServer:
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()


class MonitorPage(LivePage):
    """The page of ``iondiff-stream monitor --html PAGE [--serve PORT]``: a :class:`LivePage` with its server.

    Parameters
    ----------
    path : str or None
        The page; None writes it into a temporary directory removed by :meth:`stop` (``--serve`` alone).
    refresh_s : float
        Reload interval written into the page, s.
    announce : callable, optional
        Called with one line saying where the page is (the command prints it on stderr).
    """

    def __init__(self, path: str | None, refresh_s: float = 5.0, announce: Any = None) -> None:
        self._tmpdir = tempfile.TemporaryDirectory(prefix="iondiff-live-") if path is None else None
        super().__init__(path if path is not None else os.path.join(self._tmpdir.name, "live.html"), refresh_s)
        self._announce = announce or (lambda msg: logger.info("%s", msg))
        self.server: PageServer | None = None

    def start(self, store: str, port: int | None = None) -> None:
        """Write a first page (waiting for the first status) and serve it on ``port`` when given."""
        self.update({"store": store, "waiting": "first refresh"})
        if port is not None:
            self.server = PageServer(self.path, port).start()
            self._announce(f"live page: {self.server.url}")
        else:
            self._announce(f"live page: {self.path}")

    def stop(self) -> None:
        """Stop the server and remove a temporary page."""
        if self.server is not None:
            self.server.stop()
            self.server = None
        if self._tmpdir is not None:
            self._tmpdir.cleanup()
            self._tmpdir = None


class LiveView:
    """The live page in a notebook: each display reads the store again (``_repr_html_``).

    Parameters
    ----------
    store : str
        The store being written.
    """

    def __init__(self, store: str) -> None:
        self.store = os.fspath(store)
        self.history: list[dict[str, Any]] = []
        self.last: dict[str, Any] = {}

    def refresh(self) -> dict[str, Any]:
        """Read a new status (kept in :attr:`last` and the history) and return it."""
        from iondiff_stream.monitor import status

        try:
            st = status(self.store)
        except Exception as exc:  # noqa: BLE001 - a store not created yet or between writes: say so
            st = {"store": self.store, "waiting": str(exc)}
        if not st.get("waiting"):
            self.history.append(snapshot(st))
        self.last = st
        return st

    def _repr_html_(self) -> str:
        return render_body(self.refresh(), self.history)

    def __repr__(self) -> str:
        st = self.last or {"store": self.store}
        return f"LiveView({self.store!r}: {fmt(st.get('frames'))} frames, {fmt(st.get('hops'))} hops)"


def live_view(store: str) -> LiveView:
    """The live view of a store for a notebook: display the returned object (again) to refresh it.

    Parameters
    ----------
    store : str
        A store being written by ``iondiff-stream run`` or the LAMMPS hook.

    Returns
    -------
    LiveView
    """
    return LiveView(store)
