"""The blitting canvas every explorer draws on: a matplotlib figure rendered to PNG for an ``ipywidgets.Image``.

The figure is drawn once with matplotlib's Agg canvas; the artists that move are marked animated and
the rest is cached as a background. A redraw restores that background, draws only the moving artists
(text layout is what makes a full draw slow) and encodes the pixels as PNG with Pillow, so a widget
redraws in well under 100 ms on a CPU and works the same in JupyterLab, a static viewer and a test.
"""

from __future__ import annotations

import io


class BlitFigure:
    """A ``matplotlib.figure.Figure`` (``self.fig``) on an Agg canvas, with blitted redraws.

    Subclasses build their axes and artists on ``self.fig``, lay it out, then call :meth:`freeze` with
    the artists that move; :meth:`png` renders the current state.
    """

    def __init__(self, *, figsize, dpi: int = 80):
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure

        self.fig = Figure(figsize=figsize, dpi=dpi)
        FigureCanvasAgg(self.fig)
        self._moving: list = []
        self._background = None

    def freeze(self, moving) -> None:
        """Mark ``moving`` animated, draw everything else once and cache it as the background."""
        self._moving = list(moving)
        for artist in self._moving:
            artist.set_animated(True)
        self.fig.canvas.draw()
        self._background = self.fig.canvas.copy_from_bbox(self.fig.bbox)

    def png(self) -> bytes:
        """Blit the moving artists over the cached background and encode the canvas as PNG."""
        from PIL import Image

        canvas = self.fig.canvas
        canvas.restore_region(self._background)
        for artist in self._moving:
            self.fig.draw_artist(artist)
        width, height = canvas.get_width_height()
        image = Image.frombuffer("RGBA", (width, height), canvas.buffer_rgba(), "raw", "RGBA", 0, 1).convert("RGB")
        buffer = io.BytesIO()
        image.save(buffer, format="png", compress_level=1)  # RGB and light compression: the fast path
        return buffer.getvalue()

    def static(self):
        """The figure with every artist drawn normally (for ``savefig`` or ``plt.show``); returns ``self.fig``."""
        for artist in self._moving:
            artist.set_animated(False)
        return self.fig
