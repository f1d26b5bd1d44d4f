"""Chroma as a real server (`chroma run`), through HttpClient: same results as embedded."""

import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def chroma_server(tmp_path: Path):
    exe = shutil.which("chroma", path=str(Path(sys.executable).parent))
    if exe is None:
        pytest.fail("the chroma CLI ships with chromadb and must be installed")
    port = _free_port()
    proc = subprocess.Popen(
        [exe, "run", "--path", str(tmp_path / "server"), "--host", "127.0.0.1", "--port", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
                break
            except OSError:
                time.sleep(0.2)
        else:
            pytest.fail("chroma run did not start within 60 s")
        yield port
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def test_server_mode_matches_embedded(tmp_path: Path, chroma_server: int, toy_files, make_recommender) -> None:
    embedded = make_recommender(tmp_path / "embedded")
    served = make_recommender(tmp_path / "served", chroma_host="127.0.0.1", chroma_port=chroma_server)
    for rec in (embedded, served):
        report = rec.ingest(toy_files[0], interactions=toy_files[1])
        assert report.added == 10
    assert served.store.client.get_settings().chroma_api_impl.endswith("FastAPI")
    assert embedded.store.client.get_settings().chroma_api_impl.endswith("RustBindingsAPI")
    for user, query in [("spacefan", None), ("baker", "film"), ("nobody", "tent")]:
        a = embedded.recommend(user, query=query, k=4)
        b = served.recommend(user, query=query, k=4)
        assert [(r.item.id, round(r.score, 5), r.because) for r in a] == [
            (r.item.id, round(r.score, 5), r.because) for r in b
        ]
    # the ANN path of the server agrees too
    served.store.exact_max_items = 0
    ann = served.recommend("spacefan", k=3)
    assert [r.item.id for r in ann] == [r.item.id for r in embedded.recommend("spacefan", k=3)]


def test_two_recbot_processes_serve_the_same_answers_from_one_chroma_server(
    tmp_path: Path, chroma_server: int, toy_files, tiny_bert: Path
) -> None:
    """Scale-out as the README describes it: one `chroma run` server, one data dir (its
    SQLite), and separate recbot processes: six processes asking at once (none of them
    the one that ingested) answer alike."""
    import json

    recbot = str(Path(sys.executable).parent / "recbot")
    base = [recbot, "--data-dir", str(tmp_path / "d"), "--encoder", str(tiny_bert)]
    base += ["--chroma-host", "127.0.0.1", "--chroma-port", str(chroma_server)]

    def run(*args: str) -> str:
        return subprocess.run([*base, *args], capture_output=True, text=True, timeout=300, check=True).stdout

    run("ingest", str(toy_files[0]), "--interactions", str(toy_files[1]))
    asks = [("spacefan", []), ("baker", ["--query", "film"]), ("nobody", ["--query", "tent"])]
    ask = [*base, "recommend", "-k", "4", "--no-blurbs", "--json", "--user"]
    procs = [subprocess.Popen([*ask, u, *q], stdout=subprocess.PIPE) for _ in range(2) for u, q in asks]
    answers = [json.loads(p.communicate(timeout=300)[0]) for p in procs]
    first, second = answers[: len(asks)], answers[len(asks) :]
    assert first == second and all(a["recommendations"] for a in first)
