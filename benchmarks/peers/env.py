"""The environment in which the peers' published code runs (standard library only).

Each peer is a public repository pinned to one commit (``PEERS``). ``ensure(peer)`` makes a checkout of it under
``.bench/peers/<peer>``: by ``git clone`` of its GitHub address, or, when ``mirror`` or the environment variable
``MASQUERADE_PEER_MIRROR`` names a folder of bare git snapshots laid out as ``<owner>+<name>/repo`` (a bare
directory or one holding ``.git``), from there. ``python_for(peer)`` returns the interpreter of that peer's own venv,
``.bench/peer-venv/<peer>``, made as follows:

* ``<base python> -m venv --without-pip``, where the base is the interpreter behind the project's venv;
* a ``.pth`` file in it naming the project venv's site-packages, so torch, numpy, scipy... are shared read-only and
  nothing is installed twice. Only the directory is added: the ``.pth`` files *inside* it (the editable install of
  masquerade among them) are not run, so the package itself is not importable there;
* the few packages a peer needs beyond that (``PEERS[peer]["extra"]``) are installed into the peer venv alone with
  the project venv's pip (``pip --python PEER install --ignore-installed --no-deps``: nothing of the project venv is
  ever touched). Because the peer venv's own site-packages come before the shared folder, such a package also
  shadows the shared one: ShuffleBits gets ``numpy<2`` this way, which is why every peer has its own venv.

The peers are never a dependency of the package. Everything is cached under ``.bench/``: a second call does nothing
but check a marker file. Failures are returned as one-line reason strings, never raised, so that the benchmark
table can print them.

``measure(peer, case, ...)`` puts the three together: one fresh process per measurement, the adapter's JSON back.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO_ROOT = HERE.parents[1]

PEERS: dict[str, dict] = {
    "instahide": {
        "url": "https://github.com/Hazelsuko07/InstaHide",
        "commit": "adc1b45f24b6f5017020686e23e64560b904fa2c",
        "extra": [],
    },
    "shufflebits": {
        "url": "https://github.com/nixingyang/ShuffleBits",
        "commit": "79570be5c2d4b696a56ea2f7f6ab8921e09a6325",
        # their numpy path relies on numpy 1.x wrapping out-of-range Python ints into int32 (they pin numpy 1.18,
        # which has no wheel for this Python; 1.26 is the last 1.x)
        "extra": ["numpy>=1.26,<2"],
    },
    "disguisednets": {
        # the authors' own demo (Gu, Sharma, Chen, "Demo: Image Disguising for Scalable GPU-accelerated
        # Confidential Deep Learning", CCS 2023): RMT and AES disguising in cryp.py
        "url": "https://github.com/RhincodonE/Demo-Image-Disguising-for-Scalable-GPU-accelerated-Confidential-Deep-Learning",
        "commit": "de497768342fdb54898939dbdf76cd0da09901ea",
        "extra": ["pycryptodome"],
    },
    "invertinggradients": {
        "url": "https://github.com/JonasGeiping/invertinggradients",
        "commit": "1157b61c6704df42c497ab9eb074c75da5204334",
        "extra": [],
    },
}

CASES: dict[str, tuple[str, ...]] = {
    "instahide": ("encode",),
    "shufflebits": ("encode",),
    "disguisednets": ("aes", "rmt"),
    "invertinggradients": ("ig1", "ig8"),
}

BENCH = REPO_ROOT / ".bench"


def _run(cmd: list[str], **kw) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, capture_output=True, text=True, **kw)


def _last_line(p: subprocess.CompletedProcess) -> str:
    lines = [ln.strip() for ln in (p.stderr or p.stdout or "").splitlines() if ln.strip()]
    return lines[-1] if lines else f"exit status {p.returncode}"


def _mirror_source(mirror: Path, url: str) -> Path | None:
    owner, name = url.rstrip("/").split("/")[-2:]
    base = mirror / f"{owner}+{name}"
    for cand in (base / "repo" / ".git", base / "repo", base / ".git", base):
        if (cand / "HEAD").is_file() and (cand / "objects").is_dir():
            return cand
    return None


def ensure(peer: str, *, root: Path | str = BENCH / "peers", mirror: Path | str | None = None) -> Path | str:
    """The checkout of ``peer`` at its pinned commit, made on first use; a one-line reason string on failure."""
    if peer not in PEERS:
        return f"unknown peer {peer!r} (known: {', '.join(PEERS)})"
    url, commit = PEERS[peer]["url"], PEERS[peer]["commit"]
    dest = Path(root) / peer
    marker = dest / ".masquerade-pinned"
    if marker.is_file() and marker.read_text().strip() == commit:
        return dest
    if shutil.which("git") is None:
        return "git is not installed"
    mirror = mirror if mirror is not None else os.environ.get("MASQUERADE_PEER_MIRROR")
    if mirror:
        src = _mirror_source(Path(mirror), url)
        if src is None:
            return f"no snapshot of {url} under {mirror} (expected <owner>+<name>/repo)"
        source = str(src)
    else:
        source = url
    Path(root).mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{peer}-", dir=root))
    try:
        env = dict(os.environ, GIT_TERMINAL_PROMPT="0")
        p = _run(["git", "clone", "--quiet", "--no-checkout", source, str(tmp / "co")], env=env, timeout=600)
        if p.returncode != 0:
            if mirror:
                return f"could not clone the snapshot {source}: {_last_line(p)}"
            return f"no network to clone {url} ({_last_line(p)}); set MASQUERADE_PEER_MIRROR"
        p = _run(["git", "-C", str(tmp / "co"), "-c", "advice.detachedHead=false", "checkout", "--quiet", commit])
        if p.returncode != 0:
            return f"{source} lacks the pinned commit {commit[:12]}: {_last_line(p)}"
        (tmp / "co" / ".masquerade-pinned").write_text(commit + "\n")
        if dest.exists():
            shutil.rmtree(dest)
        (tmp / "co").rename(dest)
        return dest
    except (OSError, subprocess.SubprocessError) as e:
        return f"could not make the checkout of {peer}: {type(e).__name__}: {e}"
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _project_python() -> Path:
    venv = REPO_ROOT / ".venv" / "bin" / "python"
    return venv if venv.exists() else Path(sys.executable)


def python_for(peer: str, *, root: Path | str = BENCH / "peer-venv") -> list[str]:
    """The interpreter command for ``peer``: its own venv sharing the project venv's packages (made on first use).

    Raises RuntimeError with a one-line reason when the venv cannot be made (``measure`` turns it into a skip)."""
    if peer not in PEERS:
        raise RuntimeError(f"unknown peer {peer!r}")
    extra = list(PEERS[peer]["extra"])
    vdir = Path(root) / peer
    py = vdir / "bin" / "python"
    marker = vdir / ".masquerade-ready"
    want = json.dumps({"extra": extra})
    if marker.is_file() and marker.read_text() == want and py.exists():
        return [str(py)]
    proj = _project_python()
    p = _run(
        [
            str(proj),
            "-c",
            "import json, sys, sysconfig; p = sysconfig.get_paths(); "
            "print(json.dumps([sys._base_executable, p['purelib'], p['platlib']]))",
        ]
    )
    if p.returncode != 0:
        raise RuntimeError(f"cannot query the project interpreter {proj}: {_last_line(p)}")
    base, purelib, platlib = json.loads(p.stdout)
    if vdir.exists():
        shutil.rmtree(vdir)
    p = _run([base, "-m", "venv", "--without-pip", str(vdir)])
    if p.returncode != 0:
        raise RuntimeError(f"cannot make the venv {vdir}: {_last_line(p)}")
    q = _run([str(py), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"])
    if q.returncode != 0:
        raise RuntimeError(f"the new venv {vdir} does not run: {_last_line(q)}")
    site = Path(q.stdout.strip())
    shared = dict.fromkeys([purelib, platlib])  # ordered, without duplicates
    (site / "_masquerade_shared.pth").write_text("".join(f"{d}\n" for d in shared))
    if extra:
        p = _run(
            [
                str(proj),
                "-m",
                "pip",
                "--python",
                str(py),
                "install",
                "--quiet",
                "--disable-pip-version-check",
                "--ignore-installed",
                "--no-deps",
                *extra,
            ],
            timeout=900,
        )
        if p.returncode != 0:
            raise RuntimeError(f"pip could not install {' '.join(extra)} for {peer}: {_last_line(p)}")
    marker.write_text(want)
    return [str(py)]


def measure(
    peer: str,
    case: str,
    *,
    n: int,
    repeat: int = 3,
    timeout: float = 900,
    mirror: Path | str | None = None,
    extra_args: list[str] | None = None,
) -> dict:
    """Run one adapter measurement in a fresh process; the adapter's JSON, or ``{"skip": reason}``."""
    skip = {"peer": peer, "case": case}
    co = ensure(peer, mirror=mirror)
    if isinstance(co, str):
        return {**skip, "skip": co}
    try:
        py = python_for(peer)
    except RuntimeError as e:
        return {**skip, "skip": str(e)}
    except (OSError, subprocess.SubprocessError) as e:
        return {**skip, "skip": f"cannot make the peer venv: {type(e).__name__}: {e}"}
    BENCH.mkdir(exist_ok=True)
    fd, out = tempfile.mkstemp(prefix=f"{peer}-{case}-", suffix=".json", dir=BENCH)
    os.close(fd)
    try:
        cmd = [
            *py,
            str(HERE / f"{peer}_adapter.py"),
            "--repo",
            str(co),
            "--case",
            case,
            "--n",
            str(n),
            "--repeat",
            str(repeat),
            "--json",
            out,
            *(extra_args or []),
        ]
        try:
            p = _run(cmd, timeout=timeout, cwd=REPO_ROOT)
        except subprocess.TimeoutExpired:
            return {**skip, "skip": f"did not finish within {timeout:.0f}s (n={n})"}
        try:
            return json.loads(Path(out).read_text())
        except (OSError, ValueError):
            return {**skip, "skip": f"the adapter failed: {_last_line(p)}"}
    finally:
        Path(out).unlink(missing_ok=True)


def main() -> None:
    import argparse

    ap = argparse.ArgumentParser(description="Measure the peers' published code; prints one JSON line each.")
    ap.add_argument("--peers", default=",".join(PEERS))
    ap.add_argument("--n", type=int, default=None, help="size for every case (default: each adapter's default)")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--mirror", default=None)
    args = ap.parse_args()
    # ShuffleBits converts ~65k numbers/s: 5000 vectors take minutes a call, 100 take seconds (the rate is linear)
    defaults = {"instahide": 20000, "shufflebits": 100, "disguisednets": 1000, "invertinggradients": 20}
    for peer in args.peers.split(","):
        for case in CASES[peer]:
            n = args.n or defaults[peer]
            print(json.dumps(measure(peer, case, n=n, repeat=args.repeat, mirror=args.mirror)), flush=True)


if __name__ == "__main__":
    main()
