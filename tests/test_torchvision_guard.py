"""onnx2torch must import, and onnxprune must work, beside a torchvision that cannot import."""

from __future__ import annotations

import subprocess
import sys
import textwrap


def test_import_survives_a_broken_torchvision(tmp_path, fixture_model):
    broken = tmp_path / "torchvision"
    broken.mkdir()
    (broken / "__init__.py").write_text("raise RuntimeError('operator torchvision::nms does not exist')\n")
    script = textwrap.dedent(
        f"""
        import sys
        sys.path.insert(0, {str(tmp_path)!r})
        import onnxprune
        result = onnxprune.prune(onnxprune.load({str(fixture_model("matlab_alexnet_opset8"))!r}), 0.5)
        onnxprune.save(result, {str(tmp_path / "out.onnx")!r})
        assert "torchvision" not in sys.modules, "the stand-in must not outlive the onnx2torch import"
        print("ok")
        """
    )
    completed = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert completed.returncode == 0, completed.stderr
    assert completed.stdout.strip() == "ok"
