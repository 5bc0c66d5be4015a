"""`facecls report`: run every experiment of the course report and write DIR/report.md
(facecls.report: each section runs the same commands a user would type)."""
from __future__ import annotations

from omegaconf import DictConfig

from facecls.config.task import reports_user_errors


def _data_overrides() -> list[str]:
    """The user's data/paths choices, passed on to every command."""
    from hydra.core.hydra_config import HydraConfig

    hc = HydraConfig.get()
    given = [o for o in hc.overrides.task if o.split("=")[0].lstrip("+~").startswith(("data", "paths"))]
    choice = hc.runtime.choices.get("data")
    return [f"data={choice}"] + [o for o in given if not o.startswith("data=")]


@reports_user_errors
def main(cfg: DictConfig) -> None:
    from facecls.report.build import build_report

    build_report(cfg, _data_overrides())
