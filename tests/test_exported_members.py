import subprocess
import sys
import types

import recbot


def test_all_matches_public_names() -> None:
    public = {
        name
        for name in dir(recbot)
        if not name.startswith("_") and not isinstance(getattr(recbot, name), types.ModuleType)
    }
    assert set(recbot.__all__) - {"__version__"} == public


def test_import_is_light() -> None:
    code = (
        "import sys, recbot, recbot.cli; print(sorted(m for m in "
        "('torch', 'transformers', 'chromadb', 'gradio', 'langchain_core') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
