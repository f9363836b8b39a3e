"""The training-speed report: one table per results folder (date and device), rows in variant-table order, repeats
after each other, and each variant's fixed-batch check against its family's reference; the RESULTS.md section.

    python -m benchmarks.bench_train report [--write benchmarks/RESULTS.md]
"""

from __future__ import annotations

import json
from pathlib import Path

from benchmarks.common import write_block
from benchmarks.variants import (
    CHECK_EXAMPLES,
    CURVE_RTOL,
    LEAK_FRACTION,
    LEARNABLE_TRAIN_ROWS,
    LOSS_RTOL,
    REFERENCES,
    VARIANTS,
    result_path,
)


def load_folder(folder: Path) -> dict:
    """{variant name: [result of run 1, run 2, ...]} for the variants of the table that have results in `folder`."""
    found = {}
    for path in sorted(Path(folder).glob("*.json")):
        r = json.loads(path.read_text())
        if r.get("name") in VARIANTS:
            found.setdefault(r["name"], []).append(r)
    return {name: sorted(found[name], key=lambda r: r.get("repeat", 1)) for name in VARIANTS if name in found}


def _setup(result: dict) -> str:
    """What a row measured, in the variant table's words (the table defines each name; a recipe's defaults may move)."""
    return VARIANTS[result["name"]].label if result["name"] in VARIANTS else result["label"]


def load_all(root: Path) -> dict:
    """{folder name ('2026-12-01_h200'): load_folder(...)}, oldest first."""
    return {p.name: load_folder(p) for p in sorted(Path(root).iterdir()) if p.is_dir() and any(p.glob("*.json"))}


def compare(result: dict, reference: dict | None) -> dict | None:
    """The fixed-batch check of `result` against `reference` (same batch, same model weights)."""
    mine, ref = result.get("check"), (reference or {}).get("check")
    if not mine or not ref:
        return None
    same_labels = (
        mine["label_count"] == ref["label_count"]
        and mine["label_checksum"] == ref["label_checksum"]
        and mine["trained_tokens"] == ref["trained_tokens"]
    )
    rel = abs(mine["loss"] - ref["loss"]) / abs(ref["loss"])
    diffs = [abs(a - b) for a, b in zip(mine["log_probs"], ref["log_probs"], strict=True)] if same_labels else []
    out = {
        "pass": same_labels and rel <= LOSS_RTOL,
        "loss": mine["loss"],
        "ref_loss": ref["loss"],
        "rel_loss_diff": rel,
        "trained_tokens": mine["trained_tokens"],
        "ref_trained_tokens": ref["trained_tokens"],
        "mean_abs_logprob_diff": sum(diffs) / len(diffs) if diffs else None,
        "max_abs_logprob_diff": max(diffs) if diffs else None,
    }
    leak = None
    if "leak_control_loss" in mine:
        out["leak_rel_loss_diff"] = abs(mine["leak_control_loss"] - mine["loss"]) / abs(mine["loss"])
        out["leak_mean_abs_logprob_diff"] = leak = mine["leak_control_mean_abs_logprob_diff"]
        # Per-token agreement must also stay well inside what a mask error would do.
        if diffs and leak > 0:
            out["pass"] = out["pass"] and out["mean_abs_logprob_diff"] <= LEAK_FRACTION * leak
    probe, ref_probe = mine.get("adapter_probe"), ref.get("adapter_probe")
    if probe and ref_probe and same_labels:  # results from before the probe existed are compared without it
        probe_diffs = [abs(a - b) for a, b in zip(probe["log_probs"], ref_probe["log_probs"], strict=True)]
        out["probe_rel_loss_diff"] = abs(probe["loss"] - ref_probe["loss"]) / abs(ref_probe["loss"])
        out["probe_mean_abs_logprob_diff"] = sum(probe_diffs) / len(probe_diffs)
        out["pass"] = out["pass"] and out["probe_rel_loss_diff"] <= LOSS_RTOL
        if leak:
            out["pass"] = out["pass"] and out["probe_mean_abs_logprob_diff"] <= LEAK_FRACTION * leak
    return out


def loss_curve_diff(result: dict, reference: dict | None) -> tuple[float, int] | None:
    """(largest relative difference of the training loss at a step both logged, number of such steps), or None."""
    curve = curve_check(result, reference)
    return (curve["max_rel_diff"], curve["steps"]) if curve else None


def _losses(result: dict | None) -> dict:
    return {step: loss for step, loss, *_ in (result or {}).get("train_log") or ()}


def curve_check(result: dict, reference: dict | None) -> dict | None:
    """The training losses of `result` against `reference` at the steps both logged, or None where they share none.
    It passes when both logged the same steps and every loss is within CURVE_RTOL of the reference's."""
    mine, ref = _losses(result), _losses(reference)
    common = sorted(set(mine) & set(ref))
    if not common:
        return None
    rel = {s: abs(mine[s] - ref[s]) / abs(ref[s]) for s in common}
    worst = max(common, key=rel.get)
    return {
        "pass": set(mine) == set(ref) and rel[worst] <= CURVE_RTOL,
        "max_rel_diff": rel[worst],
        "at_step": worst,
        "steps": len(common),
        "ref_steps": len(ref),
        "first": (mine[common[0]], ref[common[0]]),
        "last": (mine[common[-1]], ref[common[-1]]),
    }


def curve_pairs(results: dict) -> list[tuple[dict, str, dict]]:
    """(result, reference name, its check) for every loss-curve variant (data: learnable) with a reference run."""
    pairs = []
    for name, runs in results.items():
        if name not in VARIANTS or VARIANTS[name].data == "speed":
            continue
        ref_name = reference_for(results, runs[0])
        for r in runs:
            if r.get("status") != "ok" or ref_name is None or r is results[ref_name][0]:
                continue
            curve = curve_check(r, results[ref_name][0])
            if curve is not None:
                pairs.append((r, ref_name, curve))
    return pairs


def curve_plot_name(r: dict) -> str:
    """The plot's file name beside the result's (`<variant>[.runN].curve.png`, as the profile's)."""
    return result_path(Path(), r["name"], r.get("repeat", 1)).with_suffix(".curve.png").name


def write_curve_plots(folder: Path, results: dict) -> list[Path]:
    """One PNG per loss-curve pair in `folder`: both curves, and their relative difference against CURVE_RTOL."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    written = []
    for r, ref_name, curve in curve_pairs(results):
        mine, ref = _losses(r), _losses(results[ref_name][0])
        steps = sorted(set(mine) & set(ref))
        fig, (top, bottom) = plt.subplots(2, 1, figsize=(7, 5.5), sharex=True, height_ratios=(3, 2))
        top.plot(steps, [ref[s] for s in steps], label=ref_name, linewidth=1)
        top.plot(steps, [mine[s] for s in steps], label=r["name"], linewidth=1)
        top.set_ylabel("training loss")
        top.legend()
        top.set_title(f"{r['name']} against {ref_name}: {'PASS' if curve['pass'] else 'FAIL'}")
        bottom.plot(steps, [100 * abs(mine[s] - ref[s]) / abs(ref[s]) for s in steps], linewidth=1, color="C2")
        bottom.axhline(100 * CURVE_RTOL, color="C3", linestyle="--", linewidth=1, label=f"{CURVE_RTOL:.0%} limit")
        bottom.set_ylabel("|Δloss| / loss, %")
        bottom.set_xlabel("optimizer step")
        bottom.legend()
        fig.tight_layout()
        path = Path(folder) / curve_plot_name(r)
        fig.savefig(path, dpi=90)
        plt.close(fig)
        written.append(path)
    return written


def reference_for(results: dict, r: dict) -> str | None:
    """The variant `r` is checked against: the first of its family's references with a good result in the folder."""
    for name in REFERENCES.get(r.get("family"), ()):
        runs = results.get(name, [])
        if runs and runs[0].get("status") == "ok":
            return name
    return None


def check_against_reference(results: dict, r: dict) -> tuple[str, dict] | None:
    """(reference name, :func:`compare` of `r` with run 1 of it); None for the reference itself or nothing to check."""
    ref_name = reference_for(results, r)
    if r.get("status") != "ok" or ref_name is None:
        return None
    ref = results[ref_name][0]
    if ref is r:
        return None
    c = compare(r, ref)
    return (ref_name, c) if c is not None else None


def _f(x, fmt):
    return "–" if x is None else format(x, fmt)


def _row_name(r: dict) -> str:
    return f"`{r['name']}`" + (f" run {r['repeat']}" if r.get("repeat", 1) > 1 else "")


def _clocks(r: dict) -> tuple[str, str]:
    timed = (r.get("gpu_clocks") or {}).get("timed_steps") or {}
    sm = f"{timed['sm_mhz_median']:.0f} ({timed['sm_mhz_min']:.0f})" if timed.get("sm_mhz_median") is not None else "–"
    return sm, _f(timed.get("power_w_mean"), ".0f")


def report_table(results: dict) -> str:
    lines = [
        (
            "| variant | setup | tokens/s (non-pad) | trained tokens/s | s/step | tokens/step | peak alloc GiB "
            "| peak reserved GiB | 100K×2 epochs (h) | SM MHz median (min) | power W | check |"
        ),
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    for runs in results.values():
        for r in runs:
            if r["status"] != "ok":
                error = r["error"].replace("|", "\\|")  # a message's own bars would split the table's cells
                lines.append(f"| {_row_name(r)} | {_setup(r)} | {error} | | | | | | | | | |")
                continue
            if reference_for(results, r) == r["name"] and r is results[r["name"]][0]:
                check = "reference"
            elif (checked := check_against_reference(results, r)) is None:
                check = "–"
            else:
                ref_name, c = checked
                check = (
                    f"{'PASS' if c['pass'] else 'FAIL'} vs `{ref_name}` (Δloss {c['rel_loss_diff']:.1e} rel, "
                    f"{c['trained_tokens']}/{c['ref_trained_tokens']} tokens)"
                )
            sm, power = _clocks(r)
            lines.append(
                f"| {_row_name(r)} | {_setup(r)} | {r['tokens_per_s']:,.0f} | {r['label_tokens_per_s']:,.0f} "
                f"| {r['s_per_step']:.2f} | {r['tokens_per_step']:,.0f} | {_f(r['peak_allocated_gib'], '.1f')} "
                f"| {_f(r['peak_reserved_gib'], '.1f')} | {r['workload_hours']:.1f} | {sm} | {power} | {check} |"
            )
    return "\n".join(lines)


def check_table(results: dict) -> str:
    lines = [
        (
            "| variant | reference | loss | reference loss | rel. diff | trained tokens (variant / reference) "
            "| mean abs Δ log-prob | max abs Δ log-prob | leak control: rel. loss diff / mean abs Δ log-prob "
            "| adapter probe: rel. loss diff / mean abs Δ log-prob | training loss: max rel. diff (steps) | result |"
        ),
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    for runs in results.values():
        for r in runs:
            checked = check_against_reference(results, r)
            if checked is None:
                continue
            ref_name, c = checked
            leak = (
                f"{c['leak_rel_loss_diff']:.1e} / {c['leak_mean_abs_logprob_diff']:.3f}"
                if "leak_rel_loss_diff" in c
                else "–"
            )
            probe = (
                f"{c['probe_rel_loss_diff']:.1e} / {c['probe_mean_abs_logprob_diff']:.4f}"
                if "probe_rel_loss_diff" in c
                else "–"
            )
            curve = loss_curve_diff(r, results[ref_name][0])
            curve_text = f"{curve[0]:.1e} ({curve[1]})" if curve else "–"
            lines.append(
                f"| {_row_name(r)} | `{ref_name}` | {c['loss']:.4f} | {c['ref_loss']:.4f} | {c['rel_loss_diff']:.1e} "
                f"| {c['trained_tokens']} / {c['ref_trained_tokens']} | {_f(c['mean_abs_logprob_diff'], '.4f')} "
                f"| {_f(c['max_abs_logprob_diff'], '.3f')} | {leak} | {probe} | {curve_text} "
                f"| {'PASS' if c['pass'] else 'FAIL'} |"
            )
    return "\n".join(lines)


SECTION_HEADING = "## Training speed (`benchmarks/bench_train.py`)"
BEGIN, END = "<!-- bench_train tables: begin -->", "<!-- bench_train tables: end -->"
VERSION_KEYS = ("torch", "transformers", "trl", "peft", "accelerate", "bitsandbytes", "liger-kernel", "torchao")


def curve_table(folder: str, results: dict) -> str:
    """The loss-curve checks of one folder, each with its plot (written by `report --write`)."""
    lines = [
        "| variant | reference | steps | first loss (variant / reference) | last loss (variant / reference) "
        f"| max rel. diff (step) | result (≤ {CURVE_RTOL:.0%} at every step) | plot |",
        "|---|---|---:|---:|---:|---:|---|---|",
    ]
    pairs = curve_pairs(results)
    if not pairs:
        return ""
    plots = [f"results/train_speed/{folder}/{curve_plot_name(r)}" for r, _, _ in pairs]
    for (r, ref_name, c), plot in zip(pairs, plots, strict=True):
        lines.append(
            f"| {_row_name(r)} | `{ref_name}` | {c['steps']} / {c['ref_steps']} "
            f"| {c['first'][0]:.3f} / {c['first'][1]:.3f} | {c['last'][0]:.3f} / {c['last'][1]:.3f} "
            f"| {c['max_rel_diff']:.2%} ({c['at_step']}) | {'PASS' if c['pass'] else 'FAIL'} | [plot]({plot}) |"
        )
    images = [f"![{r['name']} against {ref}]({plot})" for (r, ref, _), plot in zip(pairs, plots, strict=True)]
    return "\n".join(lines + [""] + images)


def folder_block(folder: str, results: dict) -> str:
    """Heading, device, versions and both tables for one results folder."""
    oks = [r for runs in results.values() for r in runs if r.get("status") == "ok"]
    env = oks[0].get("env", {}) if oks else {}
    versions = ", ".join(f"{k} {env[k]}" for k in VERSION_KEYS if env.get(k))
    date = folder.split("_", 1)[0]
    clocks = [r for r in oks if (r.get("gpu_clocks") or {}).get("timed_steps")]
    lines = [
        f"### {date}, 1× {env.get('device', '?')} (`benchmarks/results/train_speed/{folder}/`)",
        "",
        f"- Device: 1× {env.get('device', '?')} ({env.get('device_memory_gib', '?')} GiB), CUDA {env.get('cuda', '?')}",
        f"- Versions: Python {env.get('python', '?')}, {versions}",
        "- GPU clocks: "
        + (
            "SM clock and board power sampled every 0.5 s by `nvidia-smi` over each row's timed steps "
            "(readings before and after in the result files)."
            if clocks
            else "not recorded."
        ),
        "",
        report_table(results),
        "",
        check_table(results),
    ]
    curves = curve_table(folder, results)
    if curves:
        lines += ["", "Loss curves (variants trained on learnable synthetic data, `data: learnable`):", "", curves]
    return "\n".join(lines)


def generated_block(all_results: dict) -> str:
    """The part of RESULTS.md that `report --write` rewrites: the shared method, then one block per folder."""
    first = next((r for f in all_results.values() for runs in f.values() for r in runs if r.get("status") == "ok"), {})
    mean, trained = first.get("data_mean_tokens"), first.get("data_mean_trained_tokens")
    checked = next(
        (
            r["check"]["trained_tokens"]
            for f in all_results.values()
            for runs in f.values()
            for r in runs
            if r.get("check")
        ),
        "?",
    )
    parts = [
        BEGIN,
        (
            "- Model: random bf16 weights with EEVE-Korean-Instruct-10.8B's shapes (48 layers, hidden 4096, MLP 14336, "
            "32/8 heads, vocab 40960, untied embeddings), loaded through `from_pretrained` as `scripts/sft.py` does "
            "(QLoRA: NF4, double quantization, bf16 compute); LoRA r 64, α 128, dropout 0.05 on the 7 projections "
            "unless a row says otherwise."
        ),
        (
            f"- Data: 3,000 synthetic single-turn conversations; templated length log-normal (median 350 tokens, σ 0.7, "
            f"clipped to [32, 2048]), mean {mean:.0f} tokens of which {trained:.0f} trained (assistant answer + eos), "
            "max_length 2048."
        )
        if mean
        else "- Data: synthetic conversations",
        (
            "- Method: each variant (`benchmarks/train_variants.yaml`) is a recipe plus overrides, trained by TRL's "
            "`SFTTrainer` in its own process for a fixed number of optimizer steps; the first 2 (padded) or 3 (packed) "
            "steps are warm-up and not timed; the GPU is synchronized at every step end. Tokens are counted from the "
            "batches: non-padding tokens and next-token targets (labels ≠ -100). Peak memory is "
            "`torch.cuda.max_memory_allocated/reserved` over the training loop. The 100K×2-epoch column is 200,000 "
            "conversations × the mean length above ÷ tokens/s. `run N` rows are repeats of the same variant on the same "
            "date and device."
        ),
        (
            f"- Check: before its first step every variant scores the same {CHECK_EXAMPLES} conversations ({checked} "
            "trained tokens) through its own collator, attention and kernels, dropout off, and is compared with its "
            "family's reference in the same folder (the padded original where it was run, else the shipped recipe); it "
            f"passes when its trained tokens and labels equal the reference's, its loss is within {LOSS_RTOL:g} "
            f"(relative) and its mean per-token log-prob difference is under {LEAK_FRACTION:g}× that of a leak control "
            "(the same packed batch with documents allowed to attend to each other). LoRA B starts at zero, so the "
            "variant also scores the batch with every LoRA B set to the same seeded random values (the adapter "
            "probe; results recorded before it existed are compared without it) and must agree with the reference "
            "there by the same limits. The training-loss column compares the losses both logged at the same steps "
            "(informational: dropout draws differ between implementations)."
        ),
        (
            f"- Loss curves: a variant with `data: learnable` trains on {LEARNABLE_TRAIN_ROWS:,} conversations of the "
            "same length distribution whose words mostly follow a fixed successor table (`synthetic.py --learnable`; "
            "the uniform random words of the speed data leave nothing to learn, so any two curves on them agree), and "
            f"passes when its training loss at every logged step is within {CURVE_RTOL:.0%} of its reference's "
            "(same seed, same batches in the same order)."
        ),
    ]
    for folder, results in all_results.items():
        parts += ["", folder_block(folder, results)]
    parts.append(END)
    return "\n".join(parts)


def write_results_md(path: Path, block: str) -> None:
    """Replace this benchmark's generated block in RESULTS.md (or add the section); other sections are kept as is."""
    text = path.read_text(encoding="utf-8") if path.is_file() else ""
    write_block(block if BEGIN in text else f"{SECTION_HEADING}\n\n{block}", BEGIN, END, path=path)
