"""`facecls enroll ckpt=PATH gallery=DIR out=FILE`: enrol one folder of photos per person into a
gallery file (embeddings and file names only, owner-only permissions); only new or changed
photos are embedded again."""
from __future__ import annotations

from omegaconf import DictConfig

from facecls.config.task import reports_user_errors


@reports_user_errors
def main(cfg: DictConfig) -> dict:
    from facecls.faces.recognise import run_enroll

    s = run_enroll(cfg)
    skipped = f", {len(s['skipped'])} unreadable skipped" if s["skipped"] else ""
    print(f"{s['people']} people, {s['photos']} photos enrolled ({s['embedded']} embedded, {s['reused']} unchanged"
          f"{skipped}) → {s['out']}")
    return s
