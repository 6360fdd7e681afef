"""Renderers: labels → images. Faces live in `models.render.faces`, digits in `models.render.digits`."""

from models.render.faces import FaceRenderer, RenderOutput

__all__ = ["FaceRenderer", "RenderOutput"]
