"""What every explorer shares: a blitting figure rendered to PNG (well under 100 ms a redraw on a CPU, the same in
JupyterLab, a static viewer and a test), the slider wiring, and a text table.
"""

from __future__ import annotations

import html
import io
import time


class BlitFigure:
    """A ``matplotlib.figure.Figure`` (``self.fig``) on an Agg canvas: subclasses build their artists, then call
    :meth:`freeze` with those that move; :meth:`png` renders the current state."""

    def __init__(self, *, figsize, dpi: int = 80):
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure

        self.fig = Figure(figsize=figsize, dpi=dpi, layout="constrained")
        FigureCanvasAgg(self.fig)
        self._moving: list = []

    def freeze(self, moving=None) -> None:
        """Mark ``moving`` animated, draw everything else once and cache it as the background."""
        self._moving = list(self._moving if moving is None else moving)
        for artist in self._moving:
            artist.set_animated(True)
        self.fig.canvas.draw()
        self.fig.set_layout_engine("none")  # the layout is fixed from now on: blits stay aligned
        self._background = self.fig.canvas.copy_from_bbox(self.fig.bbox)

    def png(self) -> bytes:
        """Blit the moving artists over the cached background and encode the canvas as PNG."""
        from PIL import Image

        canvas = self.fig.canvas
        canvas.restore_region(self._background)
        for artist in self._moving:
            self.fig.draw_artist(artist)
        size = canvas.get_width_height()
        image = Image.frombuffer("RGBA", size, canvas.buffer_rgba(), "raw", "RGBA", 0, 1).convert("RGB")
        buffer = io.BytesIO()
        image.save(buffer, format="png", compress_level=1)  # RGB and light compression: the fast path
        return buffer.getvalue()

    def fit_ylim(self, ax, reach: float) -> None:
        """Symmetric y limits at the next 1, 2 or 5 times a power of ten above ``1.1 * reach``; a change redraws
        the background once (a blit cannot move the axes)."""
        limit = next(m * 10.0**e for e in range(-3, 6) for m in (1, 2, 5) if m * 10.0**e >= 1.1 * reach)
        if ax.get_ylim() != (-limit, limit):
            ax.set_ylim(-limit, limit)
            self.freeze()

    def static(self):
        """The figure with every artist drawn normally (for ``savefig`` or ``display``); returns ``self.fig``."""
        for artist in self._moving:
            artist.set_animated(False)
        return self.fig


def slider(kind: str, description: str, value, **options):
    """An ipywidgets slider (``kind``: "FloatSlider", "IntSlider", "FloatLogSlider", ...) with a readable label."""
    import ipywidgets as widgets

    style = {"description_width": "110px"}
    return getattr(widgets, kind)(value=value, description=description, style=style, **options)


def sliders(kind: str, name: str, values, **options) -> list:
    """One slider per value, described ``name`` with ``{i}`` replaced by 1, 2, ..."""
    return [slider(kind, name.format(i=i + 1), value, **options) for i, value in enumerate(values)]


def explorer(rows: list, controls: list, compute, figure: BlitFigure, readout_text, **attributes):
    """An ``ipywidgets.VBox``: ``rows`` of controls, the figure's PNG and ``readout_text(state)``, redrawn whenever
    a control changes from ``state = compute()``. The box keeps ``attributes``, ``state``, ``image``, ``readout``,
    ``figure`` and ``redraw_ms`` (the latest redraw)."""
    import ipywidgets as widgets

    image, readout = widgets.Image(format="png"), widgets.HTML()
    box = widgets.VBox([*rows, image, readout])
    for name, value in dict(attributes, image=image, readout=readout, figure=figure).items():
        setattr(box, name, value)

    def redraw(_change=None) -> None:
        start = time.perf_counter()
        box.state = compute()
        readout.value = f"<pre>{html.escape(readout_text(box.state))}</pre>"
        figure.update(box.state)
        image.value = figure.png()
        box.redraw_ms = 1000.0 * (time.perf_counter() - start)

    for control in controls:
        control.observe(redraw, names="value")
    redraw()
    return box


def text_table(header: list[str], rows: list[list]) -> str:
    """Rows as plain text in right-aligned columns (the first left-aligned)."""
    cells = [[str(c) for c in row] for row in [header, *rows]]
    widths = [max(len(row[i]) for row in cells) for i in range(len(header))]
    return "\n".join(
        "  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(row, widths))).rstrip()
        for row in cells
    )
