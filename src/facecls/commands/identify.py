"""`facecls identify gallery=FILE input=FILE_OR_DIR [far=… | threshold=…]`: the enrolled person in
each photo, or `unknown` — identify.csv, identify.json and a contact sheet."""
from __future__ import annotations

from omegaconf import DictConfig

from facecls.config.task import reports_user_errors


@reports_user_errors
def main(cfg: DictConfig) -> dict:
    from facecls.faces.recognise import run_identify

    s = run_identify(cfg)
    rates = s["rates"]
    measured = ""
    if rates:
        parts = []
        if rates["enrolled_recognised"] is not None:
            parts.append(f"enrolled recognised {rates['enrolled_recognised']:.3f} of {rates['enrolled_probes']}")
        if rates["not_enrolled_unknown"] is not None:
            parts.append(f"not enrolled → unknown {rates['not_enrolled_unknown']:.3f} "
                         f"of {rates['not_enrolled_probes']}")
        measured = " (" + ", ".join(parts) + ")" if parts else ""
    print(f"{s['images']} photo(s) identified, {s['unknown']} unknown at threshold {s['threshold']:.4f} "
          f"[{s['threshold_rule']}]{measured} → {s['out']}/identify.csv")
    return s
