"""Helpers shared by the serving tests."""

from __future__ import annotations

import base64
import io


def png_data_uri(color=(200, 30, 30), size=(40, 30)) -> str:
    from PIL import Image

    buf = io.BytesIO()
    Image.new("RGB", size, color).save(buf, "PNG")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()
