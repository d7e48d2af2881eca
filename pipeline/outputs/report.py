"""The mixture's report: ``report.md`` and its plots, written beside ``manifest.json``.

    write_report("out/stage1", cache_root="out/cache")   # reads out/stage1/manifest.json
    mixprep report out/stage1 [--cache out/cache]          # the same, from the command line

Every number comes from the manifest except the document-length distributions, which come from the
log2 histograms in the sources' token caches (``CACHE/<source>/<fingerprint[:16]>/cache.json``),
used only when their fingerprint is the manifest's. The plots (``report/*.png``: requested vs
achieved shares, length distributions with the length buckets, epochs per bucket) need matplotlib,
an optional extra (``pip install 'mixprep[report]'``); without it ``report.md`` is still written and
says the plots were skipped.
"""

from __future__ import annotations

import logging
import math
from typing import Sequence

from .. import storage
from ..errors import FormatError
from ..layout import PLOT_FILES, REPORT_DIR, REPORT_FILE, cache_dir, cache_manifest, manifest_path
from ..storage import atomic_writer, read_json

__all__ = ["write_report", "render_markdown", "load_histograms", "make_plots", "plot_names", "render_plots"]

log = logging.getLogger("mixprep")


def write_report(out: str, manifest: dict | None = None, cache_root: str | None = None, plotter=None) -> str:
    """Write ``out/report.md`` and ``out/report/*.png``; returns the path of report.md.

    Args:
      out: the mixture folder.
      manifest: the manifest (read from ``out/manifest.json`` when None).
      cache_root: where the sources' token caches live (their histograms); None skips them.
      plotter: an ``outputs.plotter.Plotter`` that draws the plots (see ``make_plots``), or None.
    """
    if manifest is None:
        path = manifest_path(out)
        if not storage.exists(path):
            raise FormatError(f"{out}: no manifest.json: not a finished mixture folder (run `mixprep run` first, "
                              "or point at the folder it wrote).")
        manifest = read_json(path)
    manifest = _in_config_order(manifest)
    histograms, notes = load_histograms(manifest, cache_root)
    plots, plot_note = {}, ""
    try:
        plots = make_plots(manifest, histograms, storage.join(out, REPORT_DIR), plotter)
    except ImportError:
        plot_note = ("Plots skipped: matplotlib is not installed. Install the report extra "
                     "(`pip install 'mixprep[report]'`) and run `mixprep report OUT` to add them.")
    except Exception as e:  # a plotting fault must not cost a finished mixture its report
        log.warning("report plots failed: %r", e)
        plot_note = f"Plots skipped: plotting failed ({e!r})."
    text = render_markdown(manifest, histograms, {k: f"{REPORT_DIR}/{v}" for k, v in plots.items()},
                           plot_note, notes)
    path = storage.join(out, REPORT_FILE)
    with atomic_writer(path, "w") as f:
        f.write(text)
    return path


# --- inputs ----------------------------------------------------------------------------------


def load_histograms(manifest: dict, cache_root: str | None) -> tuple[dict[str, dict], list[str]]:
    """Each source's cache stats (``histogram``, ``subsets``) when its cache is found; plus notes on misses."""
    found, missing = {}, []
    for name, s in manifest["sources"].items():
        if cache_root is None:
            missing.append(name)
            continue
        path = cache_manifest(cache_dir(cache_root, name, s["cache_fingerprint"]))
        if storage.exists(path):
            cache = read_json(path)
            if cache.get("fingerprint") == s["cache_fingerprint"]:
                found[name] = cache["stats"]
                continue
        missing.append(name)
    notes = []
    if missing:
        where = f"under {cache_root}" if cache_root else "(no cache folder given)"
        notes.append(f"Length distributions of {', '.join(missing)} skipped: their token caches were not found "
                     f"{where}. Pass the cache folder the mixture was built from (`mixprep report OUT --cache DIR`).")
    return found, notes


def _in_config_order(manifest: dict) -> dict:
    """The manifest with its sources in the config's order (manifest.json stores keys sorted)."""
    order = {s["name"]: i for i, s in enumerate(manifest["config"]["sources"])}
    sources = dict(sorted(manifest["sources"].items(), key=lambda kv: order.get(kv[0], len(order))))
    return {**manifest, "sources": sources}


def _pct(x: float) -> str:
    return f"{100 * x:.2f}%"


def _bin_label(k: int) -> str:
    return f"[{_tokens(2 ** k)}, {_tokens(2 ** (k + 1))})"


def _tokens(n: float) -> str:
    """Short token counts for axes and bins.

    >>> [_tokens(n) for n in (1, 512, 2048, 16384, 3 * 2**20)]
    ['1', '512', '2k', '16k', '3M']
    """
    for unit, size in (("G", 2**30), ("M", 2**20), ("k", 2**10)):
        if n >= size and n % size == 0:
            return f"{n // size}{unit}"
    return f"{n:g}"


def median_bin(counts: Sequence[int]) -> int | None:
    """The log2 bin holding the middle of ``counts`` (documents or tokens).

    >>> median_bin([0, 1, 5, 1])
    2
    """
    total = sum(counts)
    if not total:
        return None
    running = 0
    for k, c in enumerate(counts):
        running += c
        if 2 * running >= total:
            return k
    return len(counts) - 1


def _long_threshold(manifest: dict) -> int | None:
    policy = manifest["config"].get("long_documents")
    return policy["threshold"] if policy else None


# --- markdown --------------------------------------------------------------------------------


def _table(header: Sequence[str], rows: Sequence[Sequence], align: str) -> list[str]:
    out = ["| " + " | ".join(header) + " |",
           "|" + "|".join(":---" if a == "l" else "---:" for a in align) + "|"]
    out += ["| " + " | ".join(str(c) for c in r) + " |" for r in rows]
    return out


def render_markdown(manifest: dict, histograms: dict[str, dict], plots: dict[str, str], plot_note: str = "",
                    notes: Sequence[str] = ()) -> str:
    """report.md's text: shares, buckets and epochs, length distributions, accounting, shards, plots."""
    m, t = manifest, manifest["totals"]
    cfg = m["config"]
    lines = [
        f"# Mixture report: {m['name']}",
        "",
        f"{cfg.get('description') or ''}".strip(),
        "",
        f"- **{t['samples']:,} samples** of {m['sample_tokens']:,} tokens (seq_len {m['seq_len']:,}) in "
        f"{len(m['shards'])} shards; {t['written_tokens']:,} tokens written.",
        f"- Requested {t['requested_tokens']:,} tokens, selected {t['selected_tokens']:,} "
        f"({t['selected_tokens'] - t['requested_tokens']:+,}); {t['tail_tokens']:,} left in shard tails.",
        f"- Tokenizer `{m['tokenizer']['name']}` (sha256 `{m['tokenizer']['sha256'][:16]}…`, vocabulary "
        f"{m['tokenizer']['vocab_size']:,}, EOS id {m['tokenizer']['eos_id']}, {m['dtype']}); seed {m['seed']}.",
        f"- Config hash `{m['config_hash'][:16]}…`, plan hash `{m['plan_hash'][:16]}…`, "
        f"mixprep {m['mixprep_version']}.",
        "",
    ]
    if plot_note:
        lines += [f"> {plot_note}", ""]

    lines += ["## Shares of tokens", "",
              "Requested: the config's weights. Achieved: the selected documents' tokens (repeats counted). "
              "Written: what the samples hold (the shard tails, charged to each shard's last documents, are not "
              "written). Each column is a share of its own total.", ""]
    rows = [(f"`{n}`", s["category"], _pct(s["requested_share"]), _pct(s["achieved_share"]), _pct(s["written_share"]),
             f"{s['achieved_tokens']:,}", f"{s['documents']:,}", f"{s['copies']:,}", f"{s['epochs']:.3f}")
            for n, s in m["sources"].items()]
    lines += _table(("source", "category", "requested", "achieved", "written", "tokens", "documents", "copies",
                     "epochs"), rows, "llrrrrrrr")
    lines += [""]
    rows = [(c, _pct(v["requested_share"]), _pct(v["achieved_share"]), _pct(v["written_share"]) if "written_share" in v
             else "-", f"{v['achieved_tokens']:,}") for c, v in m["categories"].items()]
    lines += _table(("category", "requested", "achieved", "written", "tokens"), rows, "lrrrr")
    if "shares" in plots:
        lines += ["", f"![Requested vs achieved shares]({plots['shares']})"]
    lines += [""]
    lines += _subsets_section(m)
    lines += _dedup_section(m)

    lines += ["## Length buckets and repetition", "",
              "Per source and document-length bucket (tokens per document, EOS included): what the source has, "
              "what the plan asked for, what was selected, and the epochs that takes (selected / available)."]
    threshold = _long_threshold(m)
    if threshold:
        lines += [f"Documents of at least {threshold:,} tokens are long and upweighted inside each source "
                  f"(factor {cfg['long_documents']['factor']:g}, cap {cfg['long_documents']['cap']:g})."]
    lines += [""]
    rows = []
    for n, s in m["sources"].items():
        max_rep = _max_repetition(m, n)
        for b in s["buckets"]:
            avail_share = b["available_tokens"] / s["available_tokens"] if s["available_tokens"] else 0.0
            got_share = b["achieved_tokens"] / s["achieved_tokens"] if s["achieved_tokens"] else 0.0
            rows.append((f"`{n}`", b["bucket"], f"{b['available_documents']:,}", f"{b['available_tokens']:,}",
                         _pct(avail_share), f"{b['requested_tokens']:,}", f"{b['achieved_tokens']:,}", _pct(got_share),
                         f"{b['epochs']:.3f}" + (" ⚠" if max_rep and b["epochs"] > max_rep else "")))
    lines += _table(("source", "bucket", "documents", "available", "of source", "requested", "achieved",
                     "of selection", "epochs"), rows, "llrrrrrrr")
    if "epochs" in plots:
        lines += ["", f"![Epochs per source and bucket]({plots['epochs']})"]
    lines += [""]

    lines += ["## Document lengths", ""]
    if histograms:
        lines += ["From the token caches' log2 histograms (bin k: documents of [2^k, 2^(k+1)) tokens): the bin "
                  "holding the median document, and the bin holding the median token (half of the tokens are in "
                  "longer documents).", ""]
        rows = []
        for n, st in histograms.items():
            h = st["histogram"]
            md, mt = median_bin(h["documents"]), median_bin(h["tokens"])
            mean = st["tokens"] / st["documents"] if st["documents"] else 0
            rows.append((f"`{n}`", f"{st['documents']:,}", f"{st['tokens']:,}", f"{mean:,.0f}",
                         _bin_label(md) if md is not None else "-", _bin_label(mt) if mt is not None else "-",
                         _bin_label(max(k for k, c in enumerate(h["documents"]) if c)) if st["documents"] else "-"))
        lines += _table(("source", "documents", "tokens", "mean", "median document", "median token", "longest"),
                        rows, "lrrrrrr")
        if "lengths" in plots:
            lines += ["", f"![Document-length distributions]({plots['lengths']})"]
        lines += [""]
    for note in notes:
        lines += [f"> {note}", ""]

    lines += ["## Accounting", "", "Every file the source's patterns match, read or refused (`files_refused` in the "
              "manifest says why); every document read, per source: forwarded to the cache, rejected (by reason), "
              "excluded by subset; and of the forwarded, how many the mixture holds.", ""]
    rows = []
    for n, s in m["sources"].items():
        a = s["accounting"]
        reasons = ", ".join(f"{k} {v:,}" for k, v in a.get("rejected_by_reason", {}).items()) or "-"
        corrupt = len(a.get("corrupt_files", []))
        rows.append((f"`{n}`", f"{a.get('files_read', 0):,}", f"{len(a.get('files_refused', [])):,}",
                     f"{a['read']:,}", f"{a['forwarded']:,}", f"{a['rejected']:,}", reasons,
                     f"{a['excluded_subset']:,}", f"{corrupt:,}", f"{s['documents']:,}"))
    lines += _table(("source", "files read", "files refused", "read", "forwarded", "rejected", "by reason",
                     "excluded", "corrupt files", "in mixture"), rows, "lrrrrrlrrr")
    lines += [""]

    lines += ["## Shards", ""]
    rows = [(f"`{s['prefix']}`", f"{s['sequences']:,}", f"{s['tokens']:,}", f"{s['tail_tokens']:,}",
             f"`{s['bin_sha256'][:12]}…`") for s in m["shards"]]
    lines += _table(("shard", "samples", "tokens", "tail", "bin sha256"), rows, "lrrrl")
    lines += ["", "Which documents each sample holds: `mixprep inspect OUT --sample N`; where a document landed: "
              "`mixprep inspect OUT --doc SOURCE:DOC_ID`.", ""]
    return "\n".join(lines)


def _dedup_section(m: dict) -> list[str]:
    """What exact dedup removed before planning, per source and per source pair (manifest ``dedup``)."""
    d = m.get("dedup")
    if not d:
        return []
    kinds = ["exact"] + (["near"] if d.get("near") else [])
    rows = [(f"`{n}`", f"{s['documents_before']:,}", f"{s['tokens_before']:,}",
             *(f"{s[k]['documents']:,} / {s[k]['tokens']:,}" for k in kinds), _pct(s["share_before"]),
             _pct(s["share_after"])) for n, s in d["sources"].items()]
    near = d.get("near")
    near_note = (f" Near duplicates: MinHash of token {near['ngram']}-grams, {near['bands']} bands x {near['rows']} "
                 f"rows, pairs verified at an estimated Jaccard of {near['threshold']:g}; a cluster is a connected "
                 "component of exact and near pairs.") if near else ""
    pairs = [(f"`{p['kept']}`", f"`{p['removed']}`", p["kind"], f"{p['documents']:,}", f"{p['tokens']:,}")
             for p in d["pairs"]] or [("-", "-", "-", "0", "0")]
    return ["### Duplicates removed", "",
            f"Duplicates across sources (content key, normalization `{d['normalization']}`), removed before "
            f"the plan: {d['documents_removed']:,} documents, {d['tokens_removed']:,} tokens. The copy kept is the "
            f"first source's in the priority list ({', '.join(f'`{p}`' for p in d['priority']) or 'none'}; "
            "unlisted sources after), then the stable doc hash. Shares are of all candidates' tokens; the shares "
            f"above are over what remains.{near_note}", "",
            *_table(("source", "documents", "tokens", *(f"{k} removed (documents / tokens)" for k in kinds),
                     "share before", "share after"), rows, "lrr" + "r" * len(kinds) + "rr"), "",
            *_table(("kept in", "removed from", "kind", "documents", "tokens"), pairs, "lllrr"), ""]


def _subsets_section(m: dict) -> list[str]:
    """What each source's selection holds per subset (Pile sets, RedPajama subsets, StarCoder languages)."""
    rows = [(f"`{n}`", f"`{name}`" if name else "(none)", f"{v['documents']:,}", f"{v['copies']:,}", f"{v['tokens']:,}",
             _pct(v["share_of_source"])) for n, s in m["sources"].items() for name, v in s.get("subsets", {}).items()]
    if not rows:
        return []
    return ["### Subsets", "", "Per source, the selected documents by subset: distinct documents, copies (repeats "
            "counted), their tokens and the share of the source's achieved tokens.", "",
            *_table(("source", "subset", "documents", "copies", "tokens", "of source"), rows, "llrrrr"), ""]


def _max_repetition(manifest: dict, source: str) -> float | None:
    for s in manifest["config"]["sources"]:
        if s["name"] == source:
            return s.get("max_repetition")
    return None


# --- plots -----------------------------------------------------------------------------------

_COLORS = {"requested": "#9aa5b1", "achieved": "#1f77b4", "written": "#2ca02c"}


def make_plots(manifest: dict, histograms: dict[str, dict], folder: str, plotter=None) -> dict[str, str]:
    """Draw the report's PNGs into ``folder``; returns {plot: file name}. ImportError without matplotlib.

    ``plotter``: an ``outputs.plotter.Plotter`` started earlier (matplotlib already imported there),
    which draws the plots two at a time; without one, or when it cannot, they are drawn here.
    """
    names = plot_names(histograms)
    pngs = plotter.render(manifest, histograms, names) if plotter is not None else None
    if pngs is None:
        pngs = render_plots(manifest, histograms, names, stop_at_error=True)
    made = {}
    for name in names:  # in order, up to the first plot that failed (as when drawn one after another)
        png = pngs.get(name)
        if isinstance(png, BaseException):
            raise png
        if png is None:
            break
        if not made:
            storage.make_dirs(folder)
        with atomic_writer(storage.join(folder, PLOT_FILES[name]), "wb") as f:
            f.write(png)
        made[name] = PLOT_FILES[name]
    return made


def plot_names(histograms: dict[str, dict]) -> list[str]:
    """The report's plots, in order: the length distributions only when some cache's histogram is known."""
    return [name for name in _PLOTS if name != "lengths" or histograms]


def render_plots(manifest: dict, histograms: dict[str, dict], names: Sequence[str],
                 stop_at_error: bool = False) -> dict[str, bytes | BaseException]:
    """Each named plot as PNG bytes (or the exception drawing it raised). ImportError without matplotlib."""
    import matplotlib

    matplotlib.use("Agg", force=True)
    import io

    import matplotlib.pyplot as plt

    out: dict[str, bytes | BaseException] = {}
    with plt.rc_context({"font.size": 9, "axes.spines.top": False, "axes.spines.right": False}):
        for name in names:
            try:
                fig = _PLOTS[name](plt, manifest, histograms)
                buf = io.BytesIO()
                # zlib level 1: a fifth of the report's time saved, files ~7% larger
                fig.savefig(buf, format="png", dpi=110, pil_kwargs={"compress_level": 1})
                plt.close(fig)
                out[name] = buf.getvalue()
            except Exception as e:  # noqa: BLE001 - the caller raises it in the plots' order
                out[name] = e
                if stop_at_error:
                    break
    return out


def _hbars(ax, labels, series: dict[str, list[float]], title: str):
    """Grouped horizontal bars of percentages, one group per label, values written at the bar ends."""
    n, k = len(labels), len(series)
    height = 0.8 / k
    top = max((v for vals in series.values() for v in vals), default=0)
    for j, (name, vals) in enumerate(series.items()):
        ys = [i + (j - (k - 1) / 2) * height for i in range(n)]
        ax.barh(ys, [100 * v for v in vals], height=height, color=_COLORS[name], label=name)
        for y, v in zip(ys, vals):
            ax.text(100 * v + 0.01 * 100 * top, y, f"{100 * v:.2f}%", va="center", fontsize=7)
    ax.set_yticks(range(n), labels)
    ax.invert_yaxis()
    ax.set_xlim(0, 100 * top * 1.25 if top else 1)
    ax.set_xlabel("share of tokens (%)")
    ax.set_title(title)


def _plot_shares(plt, m, _histograms):
    sources, cats = m["sources"], m["categories"]
    rows = max(len(sources), len(cats))
    fig, (a, b) = plt.subplots(1, 2, figsize=(12, 1.2 + 0.75 * rows), constrained_layout=True)
    _hbars(a, list(sources), {
        "requested": [s["requested_share"] for s in sources.values()],
        "achieved": [s["achieved_share"] for s in sources.values()],
        "written": [s["written_share"] for s in sources.values()],
    }, "per source")
    written = sum(c["written_tokens"] for c in cats.values()) or 1
    _hbars(b, list(cats), {
        "requested": [c["requested_share"] for c in cats.values()],
        "achieved": [c["achieved_share"] for c in cats.values()],
        "written": [c["written_tokens"] / written for c in cats.values()],
    }, "per category")
    handles, labels = a.get_legend_handles_labels()
    fig.legend(handles, labels, loc="outside lower center", ncol=3, frameon=False)
    fig.suptitle(f"{m['name']}: requested vs achieved token shares ({m['totals']['selected_tokens']:,} tokens)")
    return fig


def _bucket_colors(n: int) -> list:
    import matplotlib

    cmap = matplotlib.colormaps["viridis"]
    return [cmap(0.15 + 0.7 * i / max(n - 1, 1)) for i in range(n)]


def _plot_epochs(plt, m, _histograms):
    sources = m["sources"]
    labels = [b["bucket"] for b in next(iter(sources.values()))["buckets"]]
    colors = _bucket_colors(len(labels))
    fig, ax = plt.subplots(figsize=(max(7, 1.6 * len(sources) + 2), 4.2), constrained_layout=True)
    k = len(labels)
    width = 0.8 / k
    top = 0.0
    for j, label in enumerate(labels):
        xs = [i + (j - (k - 1) / 2) * width for i in range(len(sources))]
        vals = [s["buckets"][j]["epochs"] for s in sources.values()]
        top = max(top, *vals)
        ax.bar(xs, vals, width=width, color=colors[j], label=f"{label} tokens")
        for x, v in zip(xs, vals):
            if v:
                ax.text(x, v, f"{v:.2f}", ha="center", va="bottom", fontsize=6.5, rotation=90, zorder=4,
                        bbox={"facecolor": "white", "edgecolor": "none", "pad": 0.5, "alpha": 0.8})
    for i, name in enumerate(sources):
        rep = _max_repetition(m, name)
        if rep is not None:
            top = max(top, rep)
            ax.hlines(rep, i - 0.45, i + 0.45, colors="#d62728", linestyles="--", linewidth=1.2,
                      label="max_repetition" if i == 0 else None)
    ax.axhline(1.0, color="#555555", linewidth=0.8, linestyle=":")
    ax.set_xticks(range(len(sources)), list(sources))
    ax.set_ylabel("epochs (selected / available tokens)")
    ax.set_ylim(0, top * 1.25 + 0.05)
    ax.set_title(f"{m['name']}: repetition per source and length bucket")
    ax.legend(loc="upper left", bbox_to_anchor=(1.0, 1.0), frameon=False, title="length bucket")
    return fig


def _plot_lengths(plt, m, histograms):
    names = [n for n in m["sources"] if n in histograms]
    ks = [k for n in names for k, c in enumerate(histograms[n]["histogram"]["documents"]) if c]
    lo, hi = min(ks), max(ks)
    bounds = m["length_bounds"]
    bucket_labels = [b["bucket"] for b in m["sources"][names[0]]["buckets"]]
    colors = _bucket_colors(len(bucket_labels))
    cols = 2 if len(names) > 1 else 1
    rows = math.ceil(len(names) / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(6.2 * cols, 2.6 * rows + 0.9), squeeze=False,
                             constrained_layout=True)
    from matplotlib.patches import Patch

    bins = list(range(lo, hi + 1))
    for ax, name in zip(axes.flat, names):
        st = histograms[name]
        h = st["histogram"]
        tok_total, doc_total = max(st["tokens"], 1), max(st["documents"], 1)
        tok = [100 * h["tokens"][k] / tok_total for k in bins]
        doc = [100 * h["documents"][k] / doc_total for k in bins]
        bucket = [sum(1 for b in bounds if b <= 2 ** k) for k in bins]
        ax.bar(bins, tok, width=0.85, color=[colors[b] for b in bucket])
        ax.step(bins, doc, where="mid", color="#d62728", linewidth=1.3)
        for b in bounds:
            ax.axvline(math.log2(b) - 0.5, color="#444444", linestyle="--", linewidth=0.8)
        ax.set_title(f"{name}: {st['documents']:,} documents, {st['tokens']:,} tokens")
        ax.set_xticks(bins[:: max(1, len(bins) // 8)], [_tokens(2 ** k) for k in bins[:: max(1, len(bins) // 8)]])
        ax.set_xlim(lo - 0.6, hi + 0.6)
        ax.set_ylabel("% of source")
    for ax in list(axes.flat)[len(names):]:
        ax.set_visible(False)
    for ax in axes[-1]:
        ax.set_xlabel("document length, tokens (log2 bins)")
    handles = [Patch(color=c, label=f"tokens in {label}") for c, label in zip(colors, bucket_labels)]
    from matplotlib.lines import Line2D

    handles.append(Line2D([], [], color="#d62728", label="documents"))
    handles.append(Line2D([], [], color="#444444", linestyle="--", label="bucket bounds"))
    fig.legend(handles=handles, loc="outside lower center", ncol=min(len(handles), 6), frameon=False)
    fig.suptitle(f"{m['name']}: document-length distributions (share of each source's tokens and documents)")
    return fig


_PLOTS = {"shares": _plot_shares, "epochs": _plot_epochs, "lengths": _plot_lengths}
