"""`facecls verify ckpt=PATH pairs=auto|FILE`: the face-verification protocol — verify.json
(k-fold accuracy ± standard error and std, ROC AUC, EER, TAR@FAR), roc.png, similarities.png."""
from __future__ import annotations

from omegaconf import DictConfig

from facecls.config.task import reports_user_errors


@reports_user_errors
def main(cfg: DictConfig) -> dict:
    from facecls.faces.verify import run_verify

    s = run_verify(cfg)
    tars = "".join(f", TAR@FAR={far} {v['tar']:.4f}" for far, v in s["tar_at_far"].items())
    if s["accuracy_mean"] is None:
        accuracy = "no accuracy (one fold: give verify.threshold_pairs=pairsDevTrain.txt to fit a threshold)"
    elif s["accuracy_stderr"] is None:
        accuracy = f"accuracy {s['accuracy_mean']:.4f} (threshold fitted on {cfg.verify.threshold_pairs})"
    else:
        accuracy = (f"accuracy {s['accuracy_mean']:.4f} ± {s['accuracy_stderr']:.4f} (standard error; std "
                    f"{s['accuracy_std']:.4f})")
    gain = s["flip"].get("accuracy_gain")
    flip = f" (flip: {gain:+.4f})" if gain is not None else ""
    print(f"{s['n_pairs']} pairs over {s['images']} images in {s['n_folds']} fold(s): {accuracy}{flip}, ROC AUC "
          f"{s['roc_auc']:.4f}, EER {s['eer']:.4f}{tars} → {s['out']}/verify.json")
    return s
