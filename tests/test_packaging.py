"""A non-editable install must find its configs: they ship inside the wheel."""
from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def test_wheel_ships_the_configs_and_uses_them(tmp_path):
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
                    "-w", str(tmp_path / "dist"), str(REPO)], check=True, capture_output=True, text=True)
    (wheel,) = (tmp_path / "dist").glob("facecls-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    shipped = {n.removeprefix("facecls/conf/") for n in names if n.startswith("facecls/conf/")}
    in_repo = {p.relative_to(REPO / "conf").as_posix() for p in (REPO / "conf").rglob("*.yaml")}
    assert in_repo and in_repo <= shipped

    # Installed from the wheel alone (no checkout around it), facecls reads its packaged configs.
    subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "-q", "--target", str(tmp_path / "site"),
                    str(wheel)], check=True, capture_output=True, text=True)
    probe = ("import facecls.cli as c, pathlib; d = pathlib.Path(c.config_dir()); "
             "print(d); assert (d / 'train.yaml').is_file()")
    out = subprocess.run([sys.executable, "-I", "-c", f"import sys; sys.path.insert(0, {str(tmp_path / 'site')!r}); "
                          + probe], check=True, capture_output=True, text=True, cwd=tmp_path).stdout
    assert Path(out.strip()) == tmp_path / "site" / "facecls" / "conf"
