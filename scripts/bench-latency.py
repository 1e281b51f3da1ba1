#!/usr/bin/env python3
"""Latency of what a person waits for, for a before/after comparison of one checkout or
several (docs/performance.md, "Elsewhere"): the server's single predict and PGD-20
attack (HTTP round trip on loopback, one request at a time) and the browser's in-page
predict and FGSM on the WebAssembly CPU backend (headless Chromium, the times the
playground itself shows).

    scripts/bench-latency.py --bin BIN --root CHECKOUT [--bin BIN2 --root CHECKOUT2 …] \
        [--reps 15] [--json out.json]

Each ROOT needs its `public/models` and its built `dist/` (scripts/build-ui.sh). The
checkouts are measured in turn, ROUNDS times interleaved, and each figure is the median
over every rep of every round, so a change in the machine's load spreads over all of
them (the fastest run is printed too: the browser's times jump between two levels as
the machine's state changes, and the fastest shows the code's own cost). Standard
library only; Chromium and chromedriver from Debian (scripts/test.sh).
"""
import argparse
import json
import os
import re
import socket
import statistics
import subprocess
import tempfile
import time
import urllib.request
import uuid


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def request(url, method="GET", body=None, headers=None, timeout=300):
    req = urllib.request.Request(url, data=body, method=method, headers=headers or {})
    with urllib.request.urlopen(req, timeout=timeout) as r:
        return json.loads(r.read() or b"null")


def multipart(fields):
    boundary = uuid.uuid4().hex
    body = b"".join(f'--{boundary}\r\nContent-Disposition: form-data; name="{k}"\r\n\r\n{v}\r\n'.encode()
                    for k, v in fields.items()) + f"--{boundary}--\r\n".encode()
    return body, {"Content-Type": f"multipart/form-data; boundary={boundary}"}


class Server:
    """`BIN serve` over ROOT's models and dist, on a free loopback port."""

    def __init__(self, bin_path, root):
        self.data = tempfile.TemporaryDirectory()
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.proc = subprocess.Popen(
            [bin_path, "serve", "--addr", f"127.0.0.1:{self.port}", "--models", f"{root}/public/models",
             "--dist", f"{root}/dist", "--data-dir", self.data.name],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.time() + 120
        while True:
            try:
                request(f"{self.base}/api/health", timeout=2)
                return
            except OSError:
                if time.time() > deadline or self.proc.poll() is not None:
                    raise SystemExit(f"{bin_path} serve did not start")
                time.sleep(0.3)

    def timed_post(self, path, fields):
        body, headers = multipart(fields)
        t0 = time.perf_counter()
        request(f"{self.base}{path}", "POST", body, headers)
        return 1000 * (time.perf_counter() - t0)

    def close(self):
        self.proc.terminate()
        self.proc.wait()
        self.data.cleanup()


class Browser:
    """One headless Chromium session through chromedriver's HTTP protocol."""

    def __init__(self):
        self.profile = tempfile.TemporaryDirectory()
        self.port = free_port()
        self.driver = subprocess.Popen(["/usr/bin/chromedriver", f"--port={self.port}"],
                                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        self.url = f"http://127.0.0.1:{self.port}"
        for _ in range(100):
            try:
                request(f"{self.url}/status", timeout=2)
                break
            except OSError:
                time.sleep(0.2)
        args = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                "--no-first-run", "--window-size=1280,900", f"--user-data-dir={self.profile.name}"]
        caps = {"capabilities": {"alwaysMatch": {"browserName": "chrome", "goog:chromeOptions": {
            "binary": "/usr/bin/chromium", "args": args}}}}
        self.session = self.call("POST", "/session", caps)["sessionId"]

    def call(self, method, path, payload=None):
        body = json.dumps(payload).encode() if payload is not None else None
        return request(f"{self.url}{path}", method, body, {"Content-Type": "application/json"})["value"]

    def goto(self, url):
        self.call("POST", f"/session/{self.session}/url", {"url": url})

    def js(self, script):
        return self.call("POST", f"/session/{self.session}/execute/sync", {"script": script, "args": []})

    def wait(self, what, script, secs=300):
        deadline = time.time() + secs
        while time.time() < deadline:
            v = self.js(script)
            if v:
                return v
            time.sleep(0.05)
        raise SystemExit(f"browser: timed out waiting for {what}")

    def close(self):
        try:
            self.call("DELETE", f"/session/{self.session}")
        finally:
            self.driver.terminate()
            self.profile.cleanup()


def rerun(b, button, result, what):
    """Clears the results, clicks `button` and returns the ms the new `result` card
    reports (the first "… in N ms" of its text: the computation, not the weights' load).
    The playground clears its results when the attack changes; changing it away and back
    does that without changing what runs (Leptos updates a card in place otherwise, so a
    repeat with the same text would not show)."""
    b.js("const s = document.querySelector('#attack-select'); const keep = s.value; "
         "for (const v of [keep === 'fgsm' ? 'pgd' : 'fgsm', keep]) { s.value = v; "
         "s.dispatchEvent(new Event('change', {bubbles: true})); }")
    b.wait("the results to clear", f"return document.querySelector('{result}') === null")
    b.js(f"document.querySelector('{button}').click();")
    text = b.wait(what, f"const e = document.querySelector('{result}'); "
                        "return e && / in [0-9.]+ ms/.test(e.textContent) && e.textContent;")
    return float(re.search(r" in ([0-9.]+) ms", text).group(1))


def server_round(s, reps, sample):
    predict = {"sample": sample, "dataset": "fashion-mnist"}
    pgd = dict(predict, attack="pgd", steps="20")
    for _ in range(2):  # warm-up: the test set's first load, allocator pools
        s.timed_post("/api/predict", predict)
        s.timed_post("/api/attack", pgd)
    return {"server predict": [s.timed_post("/api/predict", predict) for _ in range(reps)],
            "server PGD-20 attack": [s.timed_post("/api/attack", pgd) for _ in range(reps)]}


def browser_round(s, reps, warmup):
    b = Browser()
    try:
        b.goto(f"{s.base}/#/playground")
        b.wait("the lesson image", "const e = document.querySelector('#picked-desc'); return e && e.dataset.sample")
        b.js("const c = document.querySelector('#in-browser'); if (!c.checked) c.click();")
        # The first runs load the weights and run while V8 still has the module in its
        # baseline tier (Liftoff): they take up to twice as long until the hot functions
        # are re-compiled optimised, so they are not measured.
        for _ in range(warmup):
            rerun(b, "#predict-btn", "#predict-result #predict-where", "a warm-up prediction")
        predict = [rerun(b, "#predict-btn", "#predict-result #predict-where", "an in-browser prediction")
                   for _ in range(reps)]
        b.js("const s = document.querySelector('#attack-select'); s.value = 'fgsm'; "
             "s.dispatchEvent(new Event('change', {bubbles: true}));")
        for _ in range(warmup):
            rerun(b, "#attack-btn", "#attack-result .meta", "a warm-up FGSM")
        fgsm = [rerun(b, "#attack-btn", "#attack-result .meta", "an in-browser FGSM") for _ in range(reps)]
        return {"browser predict (wasm CPU)": predict, "browser FGSM (wasm CPU)": fgsm}
    finally:
        b.close()


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--bin", action="append", required=True, help="a `hyperat` binary (repeat per checkout)")
    ap.add_argument("--root", action="append", required=True, help="its checkout (public/models, dist/)")
    ap.add_argument("--label", action="append", help="a name per checkout (default: the root's folder)")
    ap.add_argument("--reps", type=int, default=15)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--warmup", type=int, default=25, help="unmeasured in-browser runs first (wasm tier-up)")
    ap.add_argument("--sample", default="0", help="the test image measured")
    ap.add_argument("--json", help="write the medians and every sample here")
    a = ap.parse_args()
    if len(a.bin) != len(a.root):
        ap.error("give one --root per --bin")
    labels = a.label or [os.path.basename(os.path.abspath(r)) for r in a.root]
    samples = {l: {} for l in labels}
    for r in range(a.rounds):
        for label, bin_path, root in zip(labels, a.bin, a.root):
            print(f"round {r + 1} of {a.rounds}: {label}", flush=True)
            s = Server(os.path.abspath(bin_path), os.path.abspath(root))
            try:
                for k, v in {**server_round(s, a.reps, a.sample), **browser_round(s, a.reps, a.warmup)}.items():
                    samples[label].setdefault(k, []).extend(v)
            finally:
                s.close()
    medians = {l: {k: statistics.median(v) for k, v in m.items()} for l, m in samples.items()}
    fastest = {l: {k: min(v) for k, v in m.items()} for l, m in samples.items()}
    keys = list(next(iter(medians.values())))
    two = len(labels) == 2
    print("\n| workload, ms: median (fastest) | " + " | ".join(labels) + (" | ratio of medians (fastest) |" if two else " |"))
    print("|---|" + "---|" * (len(labels) + two))
    for k in keys:
        cells = [f"{medians[l][k]:.1f} ({fastest[l][k]:.1f})" for l in labels]
        if two:
            first, second = labels
            cells.append(f"{medians[second][k] / medians[first][k]:.2f}× "
                         f"({fastest[second][k] / fastest[first][k]:.2f}×)")
        print(f"| {k} | " + " | ".join(cells) + " |")
    if a.json:
        with open(a.json, "w") as f:
            json.dump({"medians": medians, "fastest": fastest, "samples": samples, "reps": a.reps, "rounds": a.rounds}, f, indent=1)


if __name__ == "__main__":
    main()
