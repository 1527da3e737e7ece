"""image_url -> a decoded image, without ever touching the network.

Accepted: `data:image/<type>;base64,...` URIs, and local files under the configured
directory (`serve.image_dir`), named by a `file://` URL or a plain path (relative paths
are relative to that directory). The path is resolved (symbolic links and `..`
followed) before the check, so nothing outside the directory can be named. Anything
else — http(s), other schemes, other data types, local paths when no directory is
configured — is refused. Decoding takes only the formats of
`image_processor.IMAGE_FORMATS`, and an image over `max_pixels` (read from its header)
is refused before it is decoded.
"""

from __future__ import annotations

import base64
import binascii
import pathlib
import urllib.parse

from PIL import Image

from dsvl_jax.processor.image_processor import load_image
from dsvl_jax.serve.protocol import RequestError


class ImageResolver:
  """Callable (url, param) -> PIL image; raises RequestError naming the part."""

  def __init__(self, image_dir: str = "", max_bytes: int = 20 << 20, max_pixels: int = 50_000_000):
    self.root = pathlib.Path(image_dir).resolve() if image_dir else None
    self.max_bytes, self.max_pixels = max_bytes, max_pixels

  def __call__(self, url: str, param: str) -> Image.Image:
    if url.startswith("data:"):
      data = self._data_uri(url, param)
      return self.decode(data, param, "the data URI's image")
    scheme = urllib.parse.urlsplit(url).scheme.lower()
    if scheme in ("http", "https", "ftp", "ws", "wss"):
      raise RequestError(
          f"{param}: remote image URLs are not fetched by this server; "
          f"send the image as a data: URI",
          param=param,
          code="image_url_not_allowed",
      )
    if scheme == "file":
      path = urllib.parse.unquote(urllib.parse.urlsplit(url).path)
    elif scheme and len(scheme) > 1:  # (one letter is a Windows drive)
      raise RequestError(
          f"{param}: unsupported image URL scheme {scheme!r}",
          param=param,
          code="image_url_not_allowed",
      )
    else:
      path = url
    return self._local(path, param)

  def _data_uri(self, url: str, param: str) -> bytes:
    head, sep, payload = url.partition(",")
    if not sep or not head.endswith(";base64") or not head.lower().startswith("data:image/"):
      raise RequestError(
          f"{param}: a data URI must be 'data:image/<type>;base64,<data>'",
          param=param,
          code="invalid_image",
      )
    if len(payload) * 3 // 4 > self.max_bytes:
      raise RequestError(
          f"{param}: the image is larger than {self.max_bytes} bytes (serve.max_image_bytes)",
          param=param,
          code="invalid_image",
      )
    try:
      return base64.b64decode(payload, validate=True)
    except (binascii.Error, ValueError) as e:
      raise RequestError(
          f"{param}: the data URI is not valid base64: {e}", param=param, code="invalid_image"
      ) from e

  def _local(self, path: str, param: str) -> Image.Image:
    if self.root is None:
      raise RequestError(
          f"{param}: local image paths are not allowed (no serve.image_dir "
          f"is configured); send the image as a data: URI",
          param=param,
          code="image_url_not_allowed",
      )
    shown = path if len(path) <= 80 else path[:77] + "..."
    if "\x00" in path:
      raise RequestError(
          f"{param}: an image path must not hold a NUL byte", param=param, code="invalid_image"
      )
    # Resolving and reading can fail on whatever a client names: a symbolic-link loop
    # (RuntimeError before Python 3.13), a name longer than the file system takes, a
    # directory, a file that vanished, characters the file system cannot encode.
    try:
      target = (self.root / path).resolve()
      if not target.is_relative_to(self.root):
        raise RequestError(
            f"{param}: {shown!r} is outside the allowed image directory",
            param=param,
            code="image_url_not_allowed",
        )
      if not target.is_file():
        raise RequestError(
            f"{param}: no image file {shown!r} in the image directory",
            param=param,
            code="invalid_image",
        )
      if target.stat().st_size > self.max_bytes:
        raise RequestError(
            f"{param}: the image is larger than {self.max_bytes} bytes (serve.max_image_bytes)",
            param=param,
            code="invalid_image",
        )
      data = target.read_bytes()
    except (OSError, RuntimeError, ValueError) as e:
      raise RequestError(
          f"{param}: the image path {shown!r} cannot be read: {type(e).__name__}",
          param=param,
          code="invalid_image",
      ) from e
    return self.decode(data, param, repr(shown))

  def decode(self, data: bytes, param: str | None, name: str) -> Image.Image:
    """Encoded bytes -> a decoded image within the caps (RequestError otherwise)."""
    try:
      return load_image(data, max_pixels=self.max_pixels)
    except OSError as e:
      raise RequestError(
          f"{param or 'image'}: {name} cannot be decoded as an image: {e}",
          param=param,
          code="invalid_image",
      ) from e

  def open_upload(self, path: str) -> Image.Image:
    """A file the web page received (a path gradio chose): size and pixel caps apply."""
    try:
      with open(path, "rb") as f:
        data = f.read(self.max_bytes + 1)
    except OSError as e:
      raise RequestError(f"the uploaded image cannot be read: {type(e).__name__}") from e
    if len(data) > self.max_bytes:
      raise RequestError(
          f"the uploaded image is larger than {self.max_bytes} bytes (serve.max_image_bytes)",
          code="invalid_image",
      )
    return self.decode(data, None, "the uploaded file")
