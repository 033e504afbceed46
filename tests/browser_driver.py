"""Drive the chapter's notebooks the way a learner does: a real JupyterLab server, a real headless Chromium.

Used by ``tests/test_browser.py``. Two pieces:

- :class:`JupyterLabServer`: starts ``jupyter lab`` from this virtual environment on a free loopback port
  with a random token and an isolated settings/workspace folder, waits until it answers, and stops it,
  its kernels included, whatever happens (context manager; ``stop`` is idempotent).
- :class:`LabPage`: a Playwright page on that server: open a notebook, run all cells, wait until every
  code cell has run, list error and stderr outputs (read from the notebook *model*, so cells outside the
  viewport count too), find an ipywidgets slider by its description, press its arrow keys, and read what
  the widget shows.

Chromium is Debian's (``apt-get install chromium``): Playwright's own browser download cannot work on
these machines, so it is launched with ``executable_path``.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import secrets
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
JUPYTER = Path(sys.executable).with_name("jupyter")


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _die_with_parent() -> None:
    """In the child, before exec: on Linux, ask for SIGTERM when the parent (pytest) dies, even by SIGKILL,
    so that no server outlives a killed test run. (Kernels exit by themselves when their server goes.)"""
    if sys.platform.startswith("linux"):
        import ctypes

        PR_SET_PDEATHSIG = 1
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)


class JupyterLabServer:
    """``jupyter lab`` on 127.0.0.1:PORT with a random token, serving ``root_dir``.

    ``state_dir`` holds the server's settings, workspaces, runtime files and log (``jupyter.log``), so
    nothing of the user's own JupyterLab setup leaks in and nothing is left in ``~/.jupyter``. Kernels get
    ``extra_env`` (e.g. ``OMP_NUM_THREADS=1``).
    """

    def __init__(
        self, root_dir: Path, state_dir: Path, *, extra_env: dict[str, str] | None = None, start_timeout: float = 90.0
    ):
        self.root_dir, self.state_dir = Path(root_dir), Path(state_dir)
        self.extra_env = dict(extra_env or {})
        self.start_timeout = start_timeout
        self.port = free_port()
        self.token = secrets.token_hex(16)
        self.process: subprocess.Popen | None = None
        self.log_path = self.state_dir / "jupyter.log"

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def url(self, path: str) -> str:
        """``base_url + path`` with the token as a query parameter."""
        sep = "&" if "?" in path else "?"
        return f"{self.base_url}{path}{sep}token={self.token}"

    def start(self) -> JupyterLabServer:
        settings = self.state_dir / "settings"
        for sub in ("settings", "workspaces", "runtime", "config", "data"):
            (self.state_dir / sub).mkdir(parents=True, exist_ok=True)
        # contentVisibility (the default) keeps every cell in the DOM; say it explicitly
        tracker = settings / "@jupyterlab" / "notebook-extension" / "tracker.jupyterlab-settings"
        tracker.parent.mkdir(parents=True, exist_ok=True)
        tracker.write_text(json.dumps({"windowingMode": "contentVisibility"}))
        # no "Would you like to get notified about official Jupyter news?" toast over the widgets
        notification = settings / "@jupyterlab" / "apputils-extension" / "notification.jupyterlab-settings"
        notification.parent.mkdir(parents=True, exist_ok=True)
        notification.write_text(json.dumps({"fetchNews": "false", "checkForUpdates": False}))
        env = {
            **os.environ,
            **self.extra_env,
            "JUPYTER_RUNTIME_DIR": str(self.state_dir / "runtime"),
            "JUPYTER_CONFIG_DIR": str(self.state_dir / "config"),
        }
        command = [
            str(JUPYTER),
            "lab",
            "--no-browser",
            "--ServerApp.ip=127.0.0.1",
            f"--ServerApp.port={self.port}",
            "--ServerApp.port_retries=0",
            f"--IdentityProvider.token={self.token}",
            f"--ServerApp.root_dir={self.root_dir}",
            "--LabApp.expose_app_in_browser=True",
            f"--LabApp.user_settings_dir={settings}",
            f"--LabApp.workspaces_dir={self.state_dir / 'workspaces'}",
            "--LabApp.news_url=None",
            "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate",
        ]
        if hasattr(os, "geteuid") and os.geteuid() == 0:
            command.append("--allow-root")
        self._log = open(self.log_path, "wb")  # noqa: SIM115 (closed in stop())
        self.process = subprocess.Popen(
            command,
            cwd=self.root_dir,
            env=env,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its own process group: stop() kills it whole
            preexec_fn=_die_with_parent,
        )
        deadline = time.monotonic() + self.start_timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"jupyter lab exited with code {self.process.returncode}:\n{self.log_tail()}")
            try:
                with urllib.request.urlopen(self.url("/api/status"), timeout=2) as response:
                    if response.status == 200:
                        return self
            except (urllib.error.URLError, ConnectionError, TimeoutError, OSError):
                pass
            time.sleep(0.3)
        self.stop()
        raise TimeoutError(f"jupyter lab did not answer within {self.start_timeout:.0f} s:\n{self.log_tail()}")

    def log_tail(self, n: int = 40) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-n:])
        except OSError:
            return ""

    def stop(self) -> None:
        """SIGTERM the server's process group and every descendant (kernels run in their own sessions),
        wait up to 10 s, then SIGKILL whatever is left. Safe to call twice."""
        if self.process is None:
            return
        import psutil

        try:
            descendants = psutil.Process(self.process.pid).children(recursive=True)
        except psutil.NoSuchProcess:
            descendants = []
        for sig in (signal.SIGTERM, signal.SIGKILL):
            try:
                os.killpg(self.process.pid, sig)
            except (ProcessLookupError, PermissionError):
                pass
            for child in descendants:
                try:
                    child.send_signal(sig)
                except psutil.NoSuchProcess:
                    pass
            _, alive = psutil.wait_procs(descendants, timeout=10 if sig == signal.SIGTERM else 5)
            try:
                self.process.wait(timeout=10 if sig == signal.SIGTERM else 5)
            except subprocess.TimeoutExpired:
                continue
            if not alive:
                break
        self.process = None
        self._log.close()

    def __enter__(self) -> JupyterLabServer:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


# ----------------------------------------------------------------------------- the page
_NOTEBOOK_STATE_JS = """
() => {
  const panel = window.jupyterapp.shell.currentWidget;
  if (!panel || !panel.content || !panel.sessionContext) return null;
  const session = panel.sessionContext.session;
  const cells = panel.content.widgets.filter(c => c.model.type === 'code').map((c, i) => {
    const outputs = c.model.outputs.toJSON();
    return {
      index: i,
      count: c.model.executionCount,
      source: c.model.sharedModel.getSource().slice(0, 80),
      errors: outputs.filter(o => o.output_type === 'error').map(o => `${o.ename}: ${o.evalue}`),
      stderr: outputs.filter(o => o.output_type === 'stream' && o.name === 'stderr')
                     .map(o => Array.isArray(o.text) ? o.text.join('') : o.text),
    };
  });
  return {path: panel.context.path, kernel: session && session.kernel ? session.kernel.status : null, cells: cells};
}
"""


class LabPage:
    """A Playwright page on a :class:`JupyterLabServer`."""

    def __init__(self, page, server: JupyterLabServer):
        self.page, self.server = page, server

    def open_notebook(self, path: str, timeout: float = 90.0) -> None:
        """Open ``/lab/tree/<path>`` and wait until its kernel is ready."""
        self.page.goto(self.server.url(f"/lab/tree/{path}"), wait_until="domcontentloaded")
        self.page.wait_for_function(
            "() => window.jupyterapp !== undefined && window.jupyterapp.shell !== undefined", timeout=timeout * 1000
        )
        self.page.wait_for_function(
            """(path) => { const w = window.jupyterapp.shell.currentWidget;
                          return !!(w && w.context && w.context.path === path && w.sessionContext); }""",
            arg=path,
            timeout=timeout * 1000,
        )
        dialog = self.page.locator(".jp-Dialog .jp-mod-accept")  # e.g. "Select Kernel" for a notebook without one
        if dialog.count():
            dialog.first.click()
        self.page.evaluate("async () => { await window.jupyterapp.shell.currentWidget.sessionContext.ready; }")
        self.page.wait_for_function(
            """() => { const s = window.jupyterapp.shell.currentWidget.sessionContext.session;
                       return !!(s && s.kernel && s.kernel.status === 'idle'); }""",
            timeout=timeout * 1000,
        )

    def notebook_state(self) -> dict:
        return self.page.evaluate(_NOTEBOOK_STATE_JS)

    def run_all_cells(self, timeout: float) -> dict:
        """Run every cell, wait until each code cell has an execution count and the kernel is idle."""
        self.page.evaluate("() => { window.jupyterapp.commands.execute('notebook:run-all-cells'); }")
        deadline = time.monotonic() + timeout
        state = None
        while time.monotonic() < deadline:
            time.sleep(1.0)
            state = self.notebook_state()
            if state is None:
                continue
            if any(c["errors"] for c in state["cells"]):
                return state  # the kernel aborts the cells queued after an error: nothing more will run
            if state["kernel"] == "idle" and all(c["count"] is not None for c in state["cells"]):
                time.sleep(1.0)  # let the last widget views render
                return self.notebook_state()
        raise TimeoutError(
            f"cells still running after {timeout:.0f} s: "
            f"{[c['source'] for c in (state or {}).get('cells', []) if c['count'] is None][:3]}"
        )

    def slider(self, description: str, nth: int = 0):
        """The ``nth`` ipywidgets slider whose description label reads exactly ``description``."""
        label = self.page.locator(".widget-label", has_text=re.compile(rf"^\s*{re.escape(description)}\s*$"))
        slider = self.page.locator(".widget-slider").filter(has=label).nth(nth)
        slider.wait_for(state="attached", timeout=30_000)
        return slider

    @staticmethod
    def widget_output(slider):
        """The output area (the whole displayed widget) that holds ``slider``."""
        return slider.locator(
            "xpath=ancestor::div[contains(concat(' ', normalize-space(@class), ' '), ' jp-OutputArea-output ')][1]"
        )

    def image_digest(self, image) -> str:
        """sha256 of the bytes the widget image currently shows (fetched from its blob/data URL)."""
        data = image.evaluate(
            """async (img) => { const r = await fetch(img.src); const b = new Uint8Array(await r.arrayBuffer());
                               let s = ''; for (const x of b) s += String.fromCharCode(x); return btoa(s); }"""
        )
        return hashlib.sha256(data.encode()).hexdigest()

    def press_arrow(self, slider, key: str = "ArrowRight", times: int = 3) -> None:
        handle = slider.locator(".noUi-handle")
        handle.scroll_into_view_if_needed()
        handle.focus()
        for _ in range(times):
            handle.press(key)
            time.sleep(0.1)
