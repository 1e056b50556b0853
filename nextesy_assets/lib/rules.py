"""The rules batches are held to: each judged from measurements into a plain outcome (no Dagster here)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from .expectations import ExpectationReport
from .ingest import BatchManifest
from .quality import BatchProfile, Drift
from .thresholds import Thresholds


@dataclass(frozen=True)
class Rule:
    name: str
    blocking: bool
    description: str


@dataclass
class Outcome:
    rule: str
    passed: bool
    description: str
    metadata: dict[str, Any] = field(default_factory=dict)
    warn_only: bool = False


RAW_RULES = (
    Rule("recognised_format", True, "The landing file's type is one Nextesy reads."),
    Rule("readable", False, "The whole file decodes (a damaged compressed tail is quarantined as unreadable_file)."),
    Rule("within_limits", True, "File size and record count within NEXTESY_MAX_FILE_BYTES / NEXTESY_MAX_RECORDS."),
)

BATCH_RULES = (
    Rule("schema", True, "Written Parquet has exactly the table's schema."),
    Rule("vector_dims", True, "Every vector has NEXTESY_DIMS components."),
    Rule("finite_values", True, "No NaN or infinite component reached the written files."),
    Rule("no_zero_vectors", True, "No all-zero vector (it has no direction: cosine similarity is undefined)."),
    Rule("norm_band", True, "Every L2 norm within [NEXTESY_NORM_MIN, NEXTESY_NORM_MAX]."),
    Rule("reject_ratio", True, "Quarantined share of the batch at most NEXTESY_MAX_REJECT_RATIO."),
    Rule("duplicate_vectors", False, "Exact and near-duplicate vectors at most NEXTESY_MAX_DUPLICATE_RATIO."),
    Rule("drift", False, "Centroid shift and norm PSI against recent batches within the drift thresholds."),
    Rule("expectations", False, "great-expectations suite on id, ts, norm and row count."),
)


def _held(manifest: BatchManifest) -> str:
    files = ", ".join(f.uri for f in manifest.data_files) or "no data files"
    return f"batch {manifest.batch_id} is held, nothing committed; its rows are in {files} and {manifest.source_uri}"


def judge_raw(
    fmt_ok: bool, fmt_detail: str, size: int, records: int, damaged: str | None, t: Thresholds
) -> list[Outcome]:
    within = size <= t.max_file_bytes and records <= t.max_records
    return [
        Outcome("recognised_format", fmt_ok, fmt_detail, {"format": fmt_detail}),
        Outcome(
            "readable",
            damaged is None,
            damaged or "the whole file decodes",
            {"damaged": damaged is not None},
            warn_only=True,
        ),
        Outcome(
            "within_limits",
            within,
            f"{size} bytes (limit {t.max_file_bytes}), {records} records (limit {t.max_records})",
            {"bytes": size, "records": records, "max_bytes": t.max_file_bytes, "max_records": t.max_records},
        ),
    ]


def judge_batch(
    manifest: BatchManifest,
    profile: BatchProfile,
    dims: int,
    t: Thresholds,
    drifts: list[Drift],
    expectations: ExpectationReport | None,
) -> list[Outcome]:
    rows = profile.rows
    held = _held(manifest)

    def count_rule(name: str, bad: int, what: str, extra: dict[str, Any] | None = None) -> Outcome:
        text = f"no {what}" if not bad else f"{bad} of {rows} rows: {what}; {held}"
        return Outcome(name, bad == 0, text, {"failing_rows": bad, "rows": rows, **(extra or {})})

    wrong_dims = sum(n for length, n in profile.lengths.items() if length != dims)
    ratio = manifest.rows_rejected / manifest.rows_in if manifest.rows_in else 0.0
    dup_ratio = profile.near_duplicates / rows if rows else 0.0
    worst_shift = max((d.centroid_shift for d in drifts), default=0.0)
    worst_psi = max((d.norm_psi for d in drifts), default=0.0)
    drifted = [d for d in drifts if d.centroid_shift > t.max_centroid_shift or d.norm_psi > t.max_norm_psi]
    outcomes = [
        Outcome(
            "schema",
            not profile.schema_problems,
            "; ".join(profile.schema_problems) or "schema matches the table",
            {"files": len(manifest.data_files), "mismatched_files": len(profile.schema_problems)},
        ),
        count_rule("vector_dims", wrong_dims, f"vectors without {dims} components", {"dims": dims}),
        count_rule("finite_values", profile.non_finite, "vectors with NaN or infinite values"),
        count_rule("no_zero_vectors", profile.zero_vectors, "all-zero vectors"),
        count_rule(
            "norm_band",
            profile.outside_band,
            f"L2 norm outside [{t.norm_min}, {t.norm_max}] (min {profile.norm_min:.4g}, max {profile.norm_max:.4g})",
            {
                "norm_min": profile.norm_min,
                "norm_max": profile.norm_max,
                "norm_mean": profile.norm_mean,
                "band_min": t.norm_min,
                "band_max": t.norm_max,
            },
        ),
        Outcome(
            "reject_ratio",
            ratio <= t.max_reject_ratio,
            f"{manifest.rows_rejected} of {manifest.rows_in} records quarantined ({ratio:.1%}, limit "
            f"{t.max_reject_ratio:.0%})" + ("" if ratio <= t.max_reject_ratio else f"; {held}"),
            {
                "rows_in": manifest.rows_in,
                "rows_quarantined": manifest.rows_rejected,
                "ratio": round(ratio, 6),
                "max_ratio": t.max_reject_ratio,
            },
        ),
        Outcome(
            "duplicate_vectors",
            dup_ratio <= t.max_duplicate_ratio,
            f"{profile.exact_duplicates} exact and {profile.near_duplicates} near duplicates (incl. exact) in {rows} "
            f"rows ({dup_ratio:.2%}, limit {t.max_duplicate_ratio:.2%})",
            {
                "exact_duplicates": profile.exact_duplicates,
                "near_duplicates": profile.near_duplicates,
                "ratio": round(dup_ratio, 6),
                "max_ratio": t.max_duplicate_ratio,
            },
            warn_only=True,
        ),
        Outcome(
            "drift",
            not drifted,
            "no earlier batches to compare with"
            if not drifts
            else "; ".join(
                f"{d.model}: centroid shift {d.centroid_shift:.4f} (limit {t.max_centroid_shift}), "
                f"norm PSI {d.norm_psi:.4f} (limit {t.max_norm_psi}) over {d.reference_rows} reference rows"
                for d in drifts
            ),
            {
                "max_centroid_shift": worst_shift,
                "max_norm_psi": worst_psi,
                "models": len(drifts),
                "drifted_models": len(drifted),
                "shift_limit": t.max_centroid_shift,
                "psi_limit": t.max_norm_psi,
            },
            warn_only=True,
        ),
    ]
    if expectations is None:
        outcomes.append(Outcome("expectations", True, "no rows to validate", {"evaluated": 0}, warn_only=True))
    else:
        failed = expectations.failed
        meta: dict[str, Any] = {"evaluated": len(expectations.results), "failed": len(failed)}
        for result in expectations.results:
            key = result["expectation"].removeprefix("expect_") + (f"[{result['column']}]" if result["column"] else "")
            if result["unexpected_count"] is not None:
                meta[f"{key}.unexpected_count"] = result["unexpected_count"]
                meta[f"{key}.unexpected_percent"] = round(float(result["unexpected_percent"] or 0.0), 4)
            else:
                meta[f"{key}.observed"] = str(result["observed_value"])
        text = (
            "all expectations met"
            if expectations.success
            else "; ".join(
                f"{r['expectation']}({r['column'] or 'table'}): {r['unexpected_count']} unexpected" for r in failed
            )
        )
        outcomes.append(Outcome("expectations", expectations.success, text, meta, warn_only=True))
    return outcomes
