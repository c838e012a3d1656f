"""The explorer's web API, through Starlette's test client and through a real server process:
each view's answer, refusals of malformed requests (4xx, one line), files kept inside the run folder."""

from __future__ import annotations

import base64
import io
import json
import os
import re
import signal
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("starlette", reason="the serve extra (pip install -e '.[serve]') is not installed")
from starlette.testclient import TestClient  # noqa: E402

from vaekit.config import DataConfig, ModelConfig, RunConfig, TrainConfig  # noqa: E402
from vaekit.explore import Explorer, RequestError  # noqa: E402
from vaekit.server import MAX_BODY, create_app  # noqa: E402
from vaekit.train import fit  # noqa: E402

QUIET = dict(progress=False, log=lambda s: None)


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """An image VAE (digits), a vector VAE (blobs), a 2-d AE, a 1-d VAE and a two-layer hierarchy."""
    root = tmp_path_factory.mktemp("serve")
    made = {}
    for name, data, model in [
        ("digits", DataConfig(dataset="digits", test_fraction=0.2), ModelConfig(hidden=[32], latent_dim=4)),
        ("blobs", DataConfig(dataset="blobs"), ModelConfig(hidden=[16], latent_dim=3, likelihood="gaussian")),
        ("ae2", DataConfig(dataset="digits", test_fraction=0.2), ModelConfig(kind="ae", hidden=[32], latent_dim=2)),
        ("z1", DataConfig(dataset="digits", test_fraction=0.2), ModelConfig(hidden=[32], latent_dim=1)),
        ("hvae", DataConfig(dataset="digits", test_fraction=0.2),
         ModelConfig(kind="hvae", hidden=[32, 16], latent_dims=[6, 3], block_width=16)),
    ]:
        cfg = RunConfig(seed=1, data=data, model=model, train=TrainConfig(epochs=2, batch_size=64, lr=3e-3))
        made[name] = fit(cfg, root / name, **QUIET).path
    return made


@pytest.fixture(scope="module")
def client(runs):
    return TestClient(create_app([Explorer(runs["digits"]), Explorer(runs["blobs"])]))


def _png(payload: dict) -> np.ndarray:
    from PIL import Image

    head, data = payload["png"].split(",", 1)
    assert head == "data:image/png;base64"
    return np.asarray(Image.open(io.BytesIO(base64.b64decode(data))))


def test_every_view_answers(client):
    info = client.get("/api/runs").json()
    assert [i["kind"] for i in info] == ["image", "vector"]
    assert info[0]["latent_dim"] == 4 and sorted(info[0]["dims_by_kl"]) == [0, 1, 2, 3]
    assert info[0]["kl"] == sorted(info[0]["kl"], reverse=True)  # sliders ordered by KL
    m = client.get("/api/0/map").json()
    assert len(m["xy"]) == info[0]["examples"] == len(m["labels"]) and "principal" in m["axes"]
    a = client.post("/api/0/decode_map", json={"u": 0.0, "v": 0.0}).json()
    b = client.post("/api/0/decode_map", json={"u": 3.0, "v": -2.0}).json()
    assert _png(a).shape == (8, 8) and not np.array_equal(_png(a), _png(b))  # another point, another image
    ex = client.post("/api/0/example", json={"index": 5}).json()
    assert len(ex["code"]) == 4 and _png(ex["input"]).shape == (8, 8)
    same = client.post("/api/0/decode", json={"code": ex["code"]}).json()
    assert same["png"] == ex["decoded"]["png"]
    path = client.post("/api/0/interpolate", json={"a": 0, "b": 7, "steps": 5, "mode": "slerp"}).json()["steps"]
    assert len(path) == 5 and path[0]["png"] == client.post("/api/0/example", json={"index": 0}).json()["decoded"]["png"]
    s1 = client.post("/api/0/samples", json={"n": 4, "seed": 1}).json()["samples"]
    s2 = client.post("/api/0/samples", json={"n": 4, "seed": 2}).json()["samples"]
    assert len(s1) == 4 and s1 != s2 and s1 == client.post("/api/0/samples", json={"n": 4, "seed": 1}).json()["samples"]
    curves = client.get("/api/0/curves").json()
    assert [r["epoch"] for r in curves["history"]] == [1, 2]
    vec = client.post("/api/1/decode", json={"code": [0.1, 0.2, 0.3]}).json()
    assert len(vec["values"]) == info[1]["data_shape"][0] and all(np.isfinite(vec["values"]))  # a line plot
    page = client.get("/")
    assert page.status_code == 200 and "explorer.js" in page.text and "http" not in page.text.split("<body>")[1]


def test_a_two_dimensional_latent_is_its_own_map(runs):
    e = Explorer(runs["ae2"])
    assert e.info()["map_axes"] == "latent dimensions 1 and 2" and e.info()["kl"] is None
    z = e.decode_map(0.5, -1.0)["code"]
    assert z == pytest.approx([0.5, -1.0])


def test_a_one_dimensional_latent_lies_across_the_map(runs):
    """--latent-dim 1: the map failed (an IndexError for its missing second axis)."""
    client = TestClient(create_app([Explorer(runs["z1"])]))
    m = client.get("/api/0/map").json()
    assert "latent dimension 1" in m["axes"] and all(y == 0 for _, y in m["xy"]) and len(m["bounds"]) == 4
    assert client.post("/api/0/decode_map", json={"u": 0.5, "v": -1.0}).json()["code"] == pytest.approx([0.5])
    ex = client.post("/api/0/example", json={"index": 3}).json()
    assert len(ex["code"]) == 1 and m["xy"][3][0] == pytest.approx(ex["code"][0])


def test_a_damaged_history_leaves_the_curves_empty_with_its_reason(runs, tmp_path):
    """A history line with a string for a loss was a 500; the other views work on."""
    import shutil

    copy = tmp_path / "run"
    shutil.copytree(runs["digits"], copy)
    (copy / "history.jsonl").write_text('{"epoch": 1, "test_loss": "x"}\n')
    client = TestClient(create_app([Explorer(copy)]))
    curves = client.get("/api/0/curves").json()
    assert curves["history"] == [] and 'line 1: "test_loss": "x" is not a number' in curves["problem"]
    assert client.get("/api/0/map").status_code == 200


def test_the_explorer_in_python_takes_numpy_and_torch_values(runs):
    """Explorer(...) without the web: a code as a tuple, numpy array or tensor, numpy numbers for
    indices and counts (json.dumps of the value in the refusal made each a TypeError); a refused value
    is a RequestError naming the field, a map of no points is refused when the explorer is made."""
    import torch

    from vaekit.errors import VaekitError

    e = Explorer(runs["digits"], map_points=np.int64(50))
    want = e.decode([0.1, -0.2, 0.3, 0.0])
    for code in ((0.1, -0.2, 0.3, 0.0), np.array([0.1, -0.2, 0.3, 0.0]), torch.tensor([0.1, -0.2, 0.3, 0.0]),
                 [np.float32(0.1), np.float64(-0.2), 0.3, np.int64(0)]):
        assert e.decode(code)["png"] == want["png"]
    assert e.example(np.int64(3))["index"] == 3 and len(e.samples(np.int32(4), seed=np.int64(1))["samples"]) == 4
    assert len(e.interpolate(np.int64(1), 2, steps=np.int16(4))["steps"]) == 4
    assert len(e.map_points()["xy"]) == 50
    for call, says in ((lambda: e.decode(object()), "code: expected a list of 4 numbers"),
                       (lambda: e.decode(np.zeros((2, 2))), "code: expected a list of 4 numbers"),
                       (lambda: e.decode([0, 0, 0, np.nan]), "code[3]: nan is not a finite number"),
                       (lambda: e.example(np.float64(1.0)), "index: expected an integer"),
                       (lambda: e.interpolate(0, 1, mode=object()), "mode: expected 'linear' or 'slerp', got <object")):
        with pytest.raises(RequestError, match=re.escape(says)):
            call()
    with pytest.raises(VaekitError, match="map_points 0: give a whole number, at least 1"):
        Explorer(runs["digits"], map_points=0)


def test_a_hierarchy_is_explored_through_its_top_layer(runs):
    e = Explorer(runs["hvae"])
    assert e.info()["latent_dim"] == 3 and e.info()["layers"] == [6, 3]
    assert len(e.example(0)["code"]) == 3
    assert len(e.samples(3, 0)["samples"]) == 3


def test_samples_from_the_fitted_mixture_beside_the_prior(runs, tmp_path):
    import shutil

    ae = shutil.copytree(runs["ae2"], tmp_path / "ae2")
    plain = Explorer(ae)
    assert plain.info()["samplers"] == ["prior"] and plain.info()["gmm_components"] is None
    with pytest.raises(RequestError, match="no fitted mixture: start `vaekit serve --sampler gmm`"):
        plain.samples(4, 0, sampler="gmm")
    lines = []
    e = Explorer(ae, sampler="gmm", components=3, log=lines.append)
    assert (ae / "sampler_gmm.safetensors").is_file() and "3-component" in lines[0]
    assert e.info()["samplers"] == ["prior", "gmm"] and e.info()["gmm_components"] == 3
    mixture = e.samples(4, 7, sampler="gmm")
    assert mixture["sampler"] == "gmm" and len(mixture["samples"]) == 4
    assert mixture == e.samples(4, 7, sampler="gmm") and mixture["samples"] != e.samples(4, 7)["samples"]
    again = Explorer(ae)  # a saved mixture is offered without fitting
    assert again.info()["samplers"] == ["prior", "gmm"] and again.samples(4, 7, sampler="gmm") == mixture
    with pytest.raises(RequestError, match="sampler"):
        e.samples(4, 0, sampler="flow")


BAD = [
    ("/api/0/decode", {"code": [0, 0]}, "a list of 4 numbers"),
    ("/api/0/decode", {"code": [0, 0, 0, "x"]}, "code[3]"),
    ("/api/0/decode", {"code": [0, 0, 0, 1e9]}, "within"),
    ("/api/0/decode", {}, "code: missing"),
    ("/api/0/decode_map", {"u": True, "v": 0}, "u: expected a number"),
    ("/api/0/example", {"index": 10**6}, "outside"),
    ("/api/0/example", {"index": -1}, "outside"),
    ("/api/0/example", {"index": 1.5}, "integer"),
    ("/api/0/interpolate", {"a": 0, "b": 1, "steps": 1000}, "steps"),
    ("/api/0/interpolate", {"a": 0, "b": 1, "mode": "cubic"}, "mode"),
    ("/api/0/samples", {"n": 0}, "n: 0 is outside"),
    ("/api/0/samples", {"seed": -5}, "seed"),
    ("/api/0/samples", {"sampler": ["gmm"]}, "sampler"),
    ("/api/7/decode", {"code": [0]}, "runs 0..1"),
]


@pytest.mark.parametrize("url,body,says", BAD)
def test_malformed_requests_get_a_400_naming_the_field(client, url, body, says):
    r = client.post(url, json=body)
    assert r.status_code == 400 and says in r.json()["error"] and "\n" not in r.json()["error"]


def test_bodies_that_are_not_small_json_objects_are_refused(client):
    for raw in [b"{not json", b"[1, 2]", b"\xff\xfe", b'{"code": [NaN, 0, 0, 0]}', b'{"code": [0, 0, 0, "\\udfff"]}']:
        r = client.post("/api/0/decode", content=raw)
        assert r.status_code == 400, raw
    r = client.post("/api/0/decode", content=b'{"code": [' + b"0," * 40000 + b"0]}")
    assert r.status_code == 400 and "bytes" in r.json()["error"]
    for url, field in [("example", "index"), ("samples", "n"), ("samples", "seed"), ("interpolate", "a")]:
        r = client.post(f"/api/0/{url}", content=b'{"%s": "\\ud800x\\udc80", "b": 0}' % field.encode())  # JSON may
        assert r.status_code == 400 and r.json()["error"].isprintable(), (url, field, r.text)  # spell lone surrogates
    assert client.get("/api/0/decode").status_code == 405
    assert client.get("/nowhere/at/all").status_code == 404


def test_requests_naming_another_host_are_refused(client):
    """A page elsewhere cannot reach the explorer by rebinding its DNS name to 127.0.0.1."""
    assert client.get("/api/runs", headers={"Host": "evil.example:8000"}).status_code == 400
    assert client.get("/api/runs", headers={"Host": "127.0.0.1:8000"}).status_code == 200


def test_only_regular_files_inside_the_run_folder_are_served(client, runs, tmp_path):
    run = runs["digits"]
    assert client.get("/runs/0/samples.png").headers["content-type"] == "image/png"
    assert client.get("/runs/0/history.jsonl").status_code == 200
    secret = run.parent / "secret.json"
    secret.write_text('{"TOPSECRET": 1}')
    (run / "link.json").symlink_to(secret)
    os.mkfifo(run / "pipe.json")
    try:
        for path in ["../secret.json", "..%2Fsecret.json", "link.json", "pipe.json", "model.safetensors",
                     ".lock", "%2Fetc%2Fpasswd", "plots/../../secret.json", "missing.png"]:
            r = client.get(f"/runs/0/{path}")
            assert r.status_code == 404, path
            assert "TOPSECRET" not in r.text
    finally:
        (run / "link.json").unlink()
        (run / "pipe.json").unlink()


def test_a_run_whose_data_are_gone_is_explored_from_prior_draws(tmp_path):
    vectors = tmp_path / "emb.npy"
    np.save(vectors, np.random.default_rng(0).normal(size=(300, 6)).astype(np.float32))
    cfg = RunConfig(seed=1, data=DataConfig(dataset=f"vectors:{vectors}"),
                    model=ModelConfig(hidden=[16], latent_dim=2, likelihood="gaussian"),
                    train=TrainConfig(epochs=1, batch_size=50))
    run = fit(cfg, tmp_path / "run", **QUIET).path
    vectors.unlink()
    e = Explorer(run)
    assert "prior" in e.info()["note"] and e.info()["examples"] > 0
    assert len(e.example(0)["input"]["values"]) == 6
    with pytest.raises(RequestError, match="index"):
        e.example(e.info()["examples"])


def _serve(*args: str) -> tuple[subprocess.Popen, str]:
    proc = subprocess.Popen([sys.executable, "-m", "vaekit", "serve", *args, "--port", "0"], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    line = proc.stdout.readline()
    while line.startswith("note:"):
        line = proc.stdout.readline()
    if "http://" not in line:
        proc.kill()
        raise AssertionError(f"serve did not start: {line} {proc.stderr.read()}")
    return proc, line.split()[2]


def _post(url: str, body: dict) -> dict:
    req = urllib.request.Request(url, data=json.dumps(body).encode(), headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=30) as r:
        return json.loads(r.read())


def test_the_server_process_answers_and_stops_on_sigint(runs):
    proc, url = _serve(str(runs["digits"]), str(runs["ae2"]))
    try:
        assert url.startswith("http://127.0.0.1:")
        assert len(json.loads(urllib.request.urlopen(url + "api/runs", timeout=30).read())) == 2
        assert "png" in _post(url + "api/1/decode", {"code": [0.0, 0.0]})
        with pytest.raises(urllib.error.HTTPError) as bad:
            _post(url + "api/1/decode", {"code": [0.0]})
        assert bad.value.code == 400
    finally:
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=30)
    assert proc.returncode == 0 and "Traceback" not in err


def test_listening_on_every_address_gives_a_url_other_machines_can_open(runs):
    """--host 0.0.0.0 printed http://0.0.0.0:PORT/, which a browser on another machine cannot open."""
    import socket

    proc, url = _serve(str(runs["blobs"]), "--host", "0.0.0.0")
    try:
        assert url.startswith(f"http://{socket.gethostname()}:"), url
        port = url.rsplit(":", 1)[1].strip("/")
        assert len(json.loads(urllib.request.urlopen(f"http://127.0.0.1:{port}/api/runs", timeout=30).read())) == 1
    finally:
        proc.send_signal(signal.SIGINT)
        proc.communicate(timeout=30)
    assert proc.returncode == 0


def _peak_rss_mb(pid: int) -> float:
    with open(f"/proc/{pid}/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("VmHWM:")) / 1024


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="reads the server's peak memory from /proc")
def test_a_request_body_streamed_without_end_is_cut_off_not_held_in_memory(runs):
    """A client that streams 256 MB of chunked body (no Content-Length) is answered 400 once it passes
    the limit; the server never holds the stream (its peak memory grows by far less than was sent)."""
    import http.client

    proc, url = _serve(str(runs["digits"]))
    try:
        port = int(url.rstrip("/").rsplit(":", 1)[1])
        _post(url + "api/0/decode", {"code": [0.0] * 4})  # warm: the model has decoded once
        before = _peak_rss_mb(proc.pid)
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
        conn.putrequest("POST", "/api/0/decode")
        conn.putheader("Transfer-Encoding", "chunked")
        conn.putheader("Content-Type", "application/json")
        conn.endheaders()
        chunk = b" " * (1 << 20)
        try:
            for _ in range(256):
                conn.send(b"%x\r\n%s\r\n" % (len(chunk), chunk))
        except (BrokenPipeError, ConnectionResetError):
            pass  # the server answered and closed: what it should do
        reply = conn.getresponse()
        assert reply.status == 400 and b"bytes allowed" in reply.read()
        assert _peak_rss_mb(proc.pid) - before < 64
        with pytest.raises(urllib.error.HTTPError) as declared:  # a declared size over the limit: refused unread
            urllib.request.urlopen(urllib.request.Request(url + "api/0/decode", data=b" " * (MAX_BODY + 1)), timeout=30)
        assert declared.value.code == 400
    finally:
        proc.send_signal(signal.SIGINT)
        proc.communicate(timeout=30)


def test_a_taken_port_and_a_missing_run_are_one_line_errors(runs, tmp_path):
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen(1)
        port = s.getsockname()[1]
        r = subprocess.run([sys.executable, "-m", "vaekit", "serve", str(runs["digits"]), "--port", str(port)],
                           capture_output=True, text=True, timeout=60)
    assert r.returncode == 2 and f"--port {port}" in r.stderr and len(r.stderr.strip().splitlines()) == 1
    r = subprocess.run([sys.executable, "-m", "vaekit", "serve", str(tmp_path / "nothing"), "--port", "0"],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 2 and "nothing" in r.stderr and len(r.stderr.strip().splitlines()) == 1
