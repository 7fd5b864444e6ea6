"""JupyterLab as the user meets it: ``make lab`` starts (also as root), offers the ``her2lib`` kernel, runs a cell.

The test runs the Makefile's own ``lab`` target (so it covers what a user types), pointed at this interpreter's
environment (``VENV=sys.prefix``), with a temporary Jupyter home (runtime, config, data, IPython, JupyterLab
settings and workspaces folders, HOME) so that it leaves nothing behind, on 127.0.0.1 with a random free port
and a random token. It then talks to the server the way JupyterLab's front end does: the REST API
(``/api/status``, ``/api/kernelspecs``, ``/api/kernels``, ``/api/shutdown``) and the kernel's websocket channel.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
import uuid
from pathlib import Path

import pytest
import websocket

import her2lib

REPO = Path(__file__).resolve().parents[1]
NOTEBOOK = REPO / "notebooks" / "01_cohort_tables.ipynb"
ROOT_NOTICE = "make lab: running as root (container?): passing --allow-root"
START_TIMEOUT_S = 60
NO_PROXY = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # the server is on 127.0.0.1


def _jupyter_home(tmp: Path) -> dict[str, str]:
    """Environment of a Jupyter server whose every user-level folder is under ``tmp``."""
    folders = {
        "HOME": "home",
        "JUPYTER_RUNTIME_DIR": "runtime",
        "JUPYTER_CONFIG_DIR": "config",
        "JUPYTER_DATA_DIR": "data",
        "IPYTHONDIR": "ipython",
        "JUPYTERLAB_SETTINGS_DIR": "lab-settings",
        "JUPYTERLAB_WORKSPACES_DIR": "lab-workspaces",
        "MPLCONFIGDIR": "matplotlib",
    }
    env = dict(os.environ)
    for var, name in folders.items():
        (tmp / name).mkdir()
        env[var] = str(tmp / name)
    env["JUPYTER_TOKEN"] = secrets.token_hex(24)
    # Kernels inherit the server's environment: import the her2lib of this checkout, as the test process does.
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO), os.environ.get("PYTHONPATH")) if p)
    return env


class Lab:
    """A ``make lab`` process and the means to talk to its server."""

    def __init__(self, tmp: Path):
        make = shutil.which("make")
        assert make, "GNU make is needed: `make lab` is the command under test (apt-get install make)"
        self.env = _jupyter_home(tmp)
        self.runtime = Path(self.env["JUPYTER_RUNTIME_DIR"])
        self.token = self.env["JUPYTER_TOKEN"]
        venv = sys.prefix
        cmd = [
            make,
            "--no-print-directory",
            "-C",
            str(REPO),
            # the environment is this interpreter's and already installed: do not (re)install it here
            "-o",
            f"{venv}/.her2lib-installed",
            "lab",
            f"VENV={venv}",
            "LAB_ARGS=--no-browser --ip=127.0.0.1 --port=0 --port-retries=0",
        ]
        self.proc = subprocess.Popen(
            cmd,
            env=self.env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            start_new_session=True,
        )
        self.lines: list[str] = []
        self._reader = threading.Thread(target=lambda: self.lines.extend(self.proc.stdout), daemon=True)
        self._reader.start()
        self.base = ""

    @property
    def log(self) -> str:
        return "".join(self.lines)

    def wait_ready(self) -> dict:
        """The server's info file (``jpserver-<pid>.json``) once the server answers, or fail with its log."""
        deadline = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline:
            assert self.proc.poll() is None, f"make lab exited with {self.proc.returncode}:\n{self.log}"
            infos = sorted(self.runtime.glob("jpserver-*.json"))
            if infos:
                info = json.loads(infos[0].read_text())
                self.base = f"http://127.0.0.1:{info['port']}"
                return info
            time.sleep(0.2)
        pytest.fail(f"make lab did not start a server within {START_TIMEOUT_S} s:\n{self.log}")

    def api(self, method: str, path: str, body: dict | None = None, *, token: bool = True) -> tuple[int, object]:
        """HTTP status and decoded JSON body (None when empty) of one REST call."""
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(self.base + path, data=data, method=method)
        if token:
            req.add_header("Authorization", f"token {self.token}")
        try:
            with NO_PROXY.open(req, timeout=30) as resp:
                raw = resp.read()
                return resp.status, json.loads(raw) if raw else None
        except urllib.error.HTTPError as err:
            return err.code, None

    def stop(self) -> None:
        """Kill what is left of the process group (only after a failure: a passing test shut it down)."""
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=10)
        self._reader.join(timeout=5)


def _execute(ws: websocket.WebSocket, code: str) -> str:
    """Run ``code`` in the kernel behind ``ws`` (Jupyter messaging protocol 5.3 over the server's JSON channel);
    return its stdout; fail with the traceback if it raises."""
    msg_id = uuid.uuid4().hex
    header = {"msg_id": msg_id, "msg_type": "execute_request", "username": "test", "session": "test", "version": "5.3"}
    content = {"code": code, "silent": False, "store_history": True, "user_expressions": {}, "allow_stdin": False}
    ws.send(json.dumps({"header": header, "parent_header": {}, "metadata": {}, "content": content, "channel": "shell"}))
    stdout, replied, idle = [], None, False
    while replied is None or not idle:
        msg = json.loads(ws.recv())
        if msg.get("parent_header", {}).get("msg_id") != msg_id:
            continue
        kind, body = msg["msg_type"], msg["content"]
        if kind == "stream" and body["name"] == "stdout":
            stdout.append(body["text"])
        elif kind == "error":
            pytest.fail(f"cell raised {body['ename']}: {body['evalue']}\n" + "\n".join(body["traceback"]))
        elif kind == "execute_reply":
            replied = body["status"]
        elif kind == "status" and body["execution_state"] == "idle":
            idle = True
    assert replied == "ok", f"execute_reply status {replied!r} for:\n{code}"
    return "".join(stdout)


def _notebook_cells(path: Path) -> tuple[str, str]:
    """Sources of the notebook's ``parameters`` cell and of the code cell after it (its imports and setup)."""
    code = [c for c in json.loads(path.read_text(encoding="utf-8"))["cells"] if c["cell_type"] == "code"]
    src = ["".join(c["source"]) for c in code]
    assert "parameters" in code[0]["metadata"].get("tags", []), f"{path.name}: first code cell is not 'parameters'"
    return src[0], src[1]


def _check_kernelspecs(lab: Lab) -> None:
    """The server offers the project's kernel as its default, and that kernel is this environment's python."""
    status, specs = lab.api("GET", "/api/kernelspecs")
    assert status == 200
    assert specs["default"] == "her2lib", f"default kernel {specs['default']!r}, expected 'her2lib'"
    spec = specs["kernelspecs"]["her2lib"]["spec"]
    assert spec["display_name"] == "Python 3 (her2lib)"
    assert os.path.samefile(Path(spec["argv"][0]).parent, Path(sys.prefix) / "bin"), spec["argv"]


def _run_notebook_cells(lab: Lab, kernel_id: str, out_dir: Path) -> str:
    """Run notebook 01's parameters cell (out_dir redirected to ``out_dir``), its set-up cell and a check."""
    parameters, setup = _notebook_cells(NOTEBOOK)
    url = f"ws://127.0.0.1:{lab.base.rsplit(':', 1)[1]}/api/kernels/{kernel_id}/channels?session_id={uuid.uuid4().hex}"
    ws = websocket.create_connection(url, header=[f"Authorization: token {lab.token}"], timeout=60)
    try:
        _execute(ws, parameters)
        _execute(ws, f"out_dir = {str(out_dir)!r}")
        _execute(ws, setup)
        return _execute(ws, "import her2lib, sys\nprint(her2lib.__file__)\nprint(sys.executable)")
    finally:
        ws.close()


@pytest.mark.timeout(180)
def test_make_lab_runs_a_notebook_cell_in_the_her2lib_kernel(tmp_path, monkeypatch):
    """Reference: JupyterLab's own REST and websocket API (jupyter_server 2), the notebook 01 set-up cell's
    contract (it writes ``out_dir/params/01_cohort_tables.json``), and this checkout's ``her2lib`` package."""
    monkeypatch.setenv("no_proxy", "127.0.0.1")  # websocket-client would send even 127.0.0.1 through $http_proxy
    lab = Lab(tmp_path)
    try:
        info = lab.wait_ready()
        assert info["token"] == lab.token and info["root_dir"] == str(REPO / "notebooks")
        assert lab.api("GET", "/api/status", token=False)[0] == 403, "the server answers without its token"
        status, server = lab.api("GET", "/api/status")
        assert status == 200 and server["kernels"] == 0, server
        _check_kernelspecs(lab)

        status, kernel = lab.api("POST", "/api/kernels", {"name": "her2lib"})
        assert status == 201 and kernel["name"] == "her2lib", kernel
        out = _run_notebook_cells(lab, kernel["id"], tmp_path / "out")
        module_file, executable = out.split()
        assert Path(module_file) == REPO / "her2lib" / "__init__.py" == Path(her2lib.__file__), out
        assert os.path.samefile(Path(executable).parent, Path(sys.prefix) / "bin"), out
        params = json.loads((tmp_path / "out" / "params" / "01_cohort_tables.json").read_text())
        assert params["out_dir"] == str(tmp_path / "out") and params["profile"] == "default", params

        assert lab.api("DELETE", f"/api/kernels/{kernel['id']}")[0] == 204
        assert lab.api("GET", "/api/kernels") == (200, [])
        assert lab.api("POST", "/api/shutdown")[0] == 200
        assert lab.proc.wait(timeout=30) == 0, lab.log
    finally:
        lab.stop()
    assert not list(lab.runtime.glob("jpserver-*")), "the server left its runtime files behind"
    assert (ROOT_NOTICE in lab.log) == (os.geteuid() == 0), lab.log


def test_notebooks_name_the_kernel_that_make_registers():
    """Reference: the Makefile's ``ipykernel install`` line; every committed notebook's kernelspec must name that
    kernel, so JupyterLab (and papermill run by hand) opens each notebook in the project's environment."""
    makefile = (REPO / "Makefile").read_text(encoding="utf-8")
    assert '-m ipykernel install --sys-prefix --name her2lib --display-name "Python 3 (her2lib)"' in makefile
    notebooks = sorted((REPO / "notebooks").glob("[0-9][0-9]_*.ipynb"))
    assert notebooks, "no numbered notebooks found"
    for path in notebooks:
        spec = json.loads(path.read_text(encoding="utf-8"))["metadata"].get("kernelspec", {})
        assert spec.get("name") == "her2lib" and spec.get("display_name") == "Python 3 (her2lib)", (
            f"{path.name}: kernelspec {spec}; choose the 'Python 3 (her2lib)' kernel in JupyterLab and save"
        )
