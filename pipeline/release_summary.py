"""The console summary of a release, built from its manifest (what was selected, the threshold
of each stratum, what was tokenized, where the shards are)."""
from __future__ import annotations


def format_release(m: dict, prefix: str, already_released: bool = False) -> str:
    sel, view = m["selection"], m["dataset_view"]
    lines = [f"release {m['release_id']}" + (" (exists; releases are immutable, nothing written)"
                                             if already_released else "")]
    if m["codec"].get("untrained"):
        lines.append(f"  !! {m['codec']['warning']}")
    lines += [
        f"  dataset view      {view['segments']} segments of {view['recordings']} live "
        f"recordings (ledger v{view.get('ledger_version', '-')}), latest annotations from "
        f"{len(m['runs'])} of {view.get('committed_runs', len(m['runs']))} committed run(s); "
        f"{view.get('takedown_recordings', 0)} more in the takedown list left out",
        f"  eligible          {sel['eligible']} ({sel['duplicates']} exact duplicates left out)",
    ]
    for gate, n in sel["not_eligible_by_gate"].items():
        lines.append(f"    not eligible  {gate:<30} {n}")
    lines.append(f"  selected          {sel['selected']} segments, {sel['selected_hours'] * 60:.2f} "
                 f"min: top {sel['fraction']:g} of {sel['unit']} per "
                 f"{'/'.join(sel['stratify_by'])}")
    for name, st in sel["strata"].items():
        thr = "-" if st["threshold_score"] is None else f"{st['threshold_score']:.4f}"
        lines.append(f"    {name:<22} {st['selected']:>5} of {st['eligible']:<5} "
                     f"score >= {thr}  ({st['selected_hours'] * 60:.2f} of "
                     f"{st['eligible_hours'] * 60:.2f} min)")
    tok = m["tokenized"]
    lines.append(f"  codes             {tok['new']} tokenized now, {tok['from_cache']} from the "
                 f"cache ({m['codec']['version']}, {m['codec']['frame_rate']:g} frames/s, "
                 f"{m['codec']['num_codebooks']} codebooks)")
    if m["excluded"]:
        lines.append(f"  left out          {len(m['excluded'])} selected segment(s) could not be "
                     f"tokenized (manifest.json `excluded`)")
    lines.append(f"  shards            {prefix}")
    for split, info in m["splits"].items():
        lines.append(f"    {split:<11} {info['rows']:>5} rows  {info['hours'] * 60:8.2f} min  "
                     f"{len(info['shards'])} shard(s)")
    lines.append(f"    selection/ ({len(m['selection_files'])} files), manifest.json")
    return "\n".join(lines)
