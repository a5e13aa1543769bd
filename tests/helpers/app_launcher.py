"""Starting `app.py` in a subprocess on a free port and waiting until it serves: for the tests and the
startup-time and memory measurements."""

import os
import socket
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

from helpers.paths import REPO, TEST_OUTPUT


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def rss_bytes(pid: int) -> int:
    """Resident memory of a process (Linux /proc), 0 where unavailable."""
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


@dataclass
class AppProcess:
    process: subprocess.Popen
    url: str
    startup_seconds: float
    log_path: Path
    peak_rss: int = field(default=0)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def rss(self) -> int:
        return rss_bytes(self.process.pid)

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


def start_app(args=("--tiny",), env: dict | None = None, log_path: str | os.PathLike | None = None,
              timeout: float = 180.0, python: str = sys.executable, launcher: list[str] | None = None) -> AppProcess:
    """Runs `python app.py *args` with GRADIO_SERVER_PORT set to a free port; returns once the page answers.

    `launcher`: the command that runs the script instead of `python` (e.g. torchrun and its options).
    Raises RuntimeError with the app's log when it exits or does not answer within `timeout` seconds.
    """
    port = free_port()
    environment = {**os.environ, "GRADIO_SERVER_NAME": "127.0.0.1", "GRADIO_SERVER_PORT": str(port),
                   "GRADIO_ANALYTICS_ENABLED": "False", "PYTHONUNBUFFERED": "1", **(env or {})}
    log_path = Path(log_path) if log_path else Path(os.environ.get("TMPDIR", "/tmp")) / f"steadydancer-app-{port}.log"
    log = open(log_path, "w")
    start = time.perf_counter()
    process = subprocess.Popen([*(launcher or [python]), str(REPO / "app.py"), *args], cwd=REPO, env=environment, stdout=log,
                               stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}/"
    app = AppProcess(process, url, 0.0, log_path)
    while True:
        if process.poll() is not None:
            log.close()
            raise RuntimeError(f"app.py exited with code {process.returncode}:\n{app.log()}")
        if time.perf_counter() - start > timeout:
            app.stop()
            log.close()
            raise RuntimeError(f"app.py did not answer on {url} within {timeout:.0f} s:\n{app.log()}")
        try:
            with urllib.request.urlopen(url + "config", timeout=2) as response:
                if response.status == 200:
                    break
        except OSError:
            time.sleep(0.25)
    app.startup_seconds = time.perf_counter() - start
    app.peak_rss = app.rss()
    return app


def launch_tiny_app(tmp_path_factory, name: str, env: dict | None = None, launcher: list[str] | None = None):
    """Starts `python app.py --tiny` on a free port with its own caches and temp dir (`process.tmp / "tmp"`);
    yields the process and stops it after. `env` adds environment variables; the log is test-output/<name>.log."""
    tmp = tmp_path_factory.mktemp(name)
    (tmp / "tmp").mkdir()
    TEST_OUTPUT.mkdir(parents=True, exist_ok=True)
    # Gradio serves only files under the working directory or the temp dir, so its caches live in the temp dir.
    env = {**(env or {}), "GRADIO_EXAMPLES_CACHE": str(tmp / "tmp" / "examples-cache"),
           "GRADIO_TEMP_DIR": str(tmp / "tmp" / "gradio"), "TMPDIR": str(tmp / "tmp")}
    process = start_app(["--tiny"], env=env, log_path=TEST_OUTPUT / f"{name}.log", launcher=launcher)
    process.name, process.tmp, process.env = name, tmp, env
    try:
        yield process
    finally:
        process.stop()
