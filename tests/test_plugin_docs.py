"""docs/plugins.md: its reference is what the code says, and its tutorial's extension works as written."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np

from webui.outputs.infotext import parse_infotext
from webui.service.factory import create_service
from webui.settings import Settings
from webui.types import GenerationRequest

ROOT = Path(__file__).resolve().parent.parent
DOC = ROOT / "docs" / "plugins.md"


def test_the_reference_is_generated_from_the_hookspecs() -> None:
    done = subprocess.run(
        [sys.executable, "tools/gen_plugin_docs.py", "--check"], cwd=ROOT, capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr
    text = DOC.read_text(encoding="utf-8")
    from webui.plugins import hookspecs

    for name in [n for n in dir(hookspecs.EaselHooks) if n.startswith("easel_")]:
        assert f"### `{name}`" in text


def test_the_tutorials_extension_runs_as_written(tmp_path: Path, tiny_sd1_ckpt: Path) -> None:
    text = DOC.read_text(encoding="utf-8")
    tutorial = text.split("## Tutorial", 1)[1].split("## The contract", 1)[0]
    (manifest,) = re.findall(r"```toml\n(.*?)```", tutorial, re.S)
    python = [block for block in re.findall(r"```python\n(.*?)```", tutorial, re.S) if "@easel.hookimpl" in block]
    folder = tmp_path / "extensions" / "grain"
    folder.mkdir(parents=True)
    (folder / "extension.toml").write_text(manifest, encoding="utf-8")
    (folder / "extension.py").write_text("\n\n".join(python), encoding="utf-8")
    (tmp_path / "models" / "Stable-diffusion").mkdir(parents=True)
    shutil.copy(tiny_sd1_ckpt, tmp_path / "models" / "Stable-diffusion" / "tiny.safetensors")
    settings = Settings(
        models_dir=tmp_path / "models",
        outputs_dir=tmp_path / "out",
        demo_model=False,
        extensions_dir=tmp_path / "extensions",
    )
    service = create_service(settings)
    try:
        assert [(e.name, e.status) for e in service.plugins.extensions] == [("grain", "enabled")]
        base = {"prompt": "a red circle", "steps": 2, "width": 64, "height": 64, "seed": 3}
        plain = service.generate(GenerationRequest.build(**base), timeout=120).images[0]
        grainy = service.generate(
            GenerationRequest.build(**base, extension_args={"grain": {"amount": 0.5}}), timeout=120
        ).images[0]
        difference = np.abs(np.asarray(grainy.image, dtype=np.int16) - np.asarray(plain.image, dtype=np.int16))
        assert difference.mean() > 5
        info = parse_infotext(grainy.infotext)
        assert info["Grain"] == 0.5 and "Grain" not in parse_infotext(plain.infotext)
        assert service.plugins.infotext_read(info) == {"grain": {"amount": 0.5}}
        assert service.plugins.settings_of("grain") == {"colour": False}
    finally:
        service.stop()
